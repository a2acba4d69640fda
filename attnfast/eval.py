"""``python -m attnfast.eval``: evaluation metrics, one flag per metric (more are added as flags).

Examples:
    python -m attnfast.eval --checkpoint runs/shapes/gan.pt     # the shapes metrics (--shapes)
    python -m attnfast.eval --diversity --checkpoint runs/shapes/gan.pt --diversity-n 16
    python -m attnfast.eval --grounding --checkpoint runs/shapes/damsm.pt     # or gan.pt
    python -m attnfast.eval --r-precision --random-init --num-images 200       # smoke run
    python -m attnfast.eval --r-precision --checkpoint runs/shapes/damsm.pt
    python -m attnfast.eval --r-precision --checkpoint runs/shapes/gan.pt --images generated --folds 10
    python -m attnfast.eval --vlms --checkpoint runs/shapes/gan.pt --vlm runs/shapes/vlm.pt --vlms-images generated
    python -m attnfast.eval --is --samples samples/ --inception-weights pt_inception-2015-12-05-6726825d.pth
    python -m attnfast.eval --is --fid --samples samples/ --real real/ --inception-weights PATH
    python -m attnfast.eval --is --fid --checkpoint runs/shapes/gan.pt --inception-weights PATH
    python -m attnfast.eval --netG bird_AttnGAN2.pth --text-encoder text_encoder200.pth \
        --image-encoder image_encoder200.pth --data-dir data/birds --inception-weights PATH

Checkpoint layout (``--checkpoint``), read with ``torch.load(weights_only=True)``: a dict with
    "text_encoder":  state dict of attnfast.models.RNN_ENCODER
    "image_encoder": state dict of the image encoder named by config["model"]["image_encoder"]
                     ("small" -> SmallImageEncoder, "inception" -> CNN_ENCODER)
    "config":        the training config (attnfast.config layout; missing keys take the defaults)
    "vocab":         attnfast.data.Vocabulary.to_dict()
    "netG_ema":      generator state dict (GAN checkpoints only; needed for --images generated)
which is what ``python -m attnfast.train`` writes (damsm.pt, gan.pt). ``--random-init`` builds the
encoders of the default shapes config with random weights instead (R-precision near chance).

Data: the built-in shapes dataset, test split, caption 0 of each of ``--num-images`` scenes.
Results are printed as JSON (and written to ``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from attnfast.extras import require_extra, run_cli


@dataclass(frozen=True)
class Metric:
    """One metric of the CLI: its flag, the arguments it adds, the function that runs it."""
    flag: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Context], dict]


@dataclass
class Context:
    """What every metric shares: device, config, vocabulary, encoders, checkpoint state."""
    device: torch.device
    config: dict
    vocab: object
    text_encoder: torch.nn.Module
    image_encoder: torch.nn.Module
    state: dict | None


# ------------------------------------------------------------------ loading
def load_context(args: argparse.Namespace) -> Context:
    from attnfast.config import DEFAULTS, merge_config
    from attnfast.data import Vocabulary, shapes_vocabulary
    from attnfast.engine.devices import pick_device
    from attnfast.models.build import build_image_encoder, build_text_encoder
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    if args.random_init:
        state, config, vocab = None, DEFAULTS, shapes_vocabulary()
    else:
        path = Path(args.checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        state = torch.load(path, map_location=device, weights_only=True)
        missing = [k for k in ("text_encoder", "image_encoder", "config", "vocab")
                   if not isinstance(state, dict) or k not in state]
        if missing:
            raise ValueError(f"{path}: missing {missing}; expected the layout of attnfast.eval's docstring")
        config, vocab = merge_config(DEFAULTS, state["config"]), Vocabulary.from_dict(state["vocab"])
    text_encoder = build_text_encoder(config, len(vocab))
    image_encoder = build_image_encoder(config)
    if state is not None:
        text_encoder.load_state_dict(state["text_encoder"])
        image_encoder.load_state_dict(state["image_encoder"])
    for model in (text_encoder, image_encoder):
        model.to(device).eval().requires_grad_(False)
    return Context(device, config, vocab, text_encoder, image_encoder, state)


# ------------------------------------------------------------------ R-precision
def _add_r_precision_arguments(parser: argparse.ArgumentParser) -> None:
    from attnfast.metrics.r_precision import SCORES
    group = parser.add_argument_group("R-precision")
    group.add_argument("--score", choices=SCORES, default="word",
                       help="ranking score: fused DAMSM word score (default), global sentence "
                            "cosine (the original evaluation code), or their sum")
    group.add_argument("--candidates", type=int, default=100, help="captions ranked per image")
    group.add_argument("--runs", type=int, default=10, help="independent draws (mean and std)")
    group.add_argument("--folds", type=int, default=None,
                       help="the DM-GAN protocol instead of --runs: one draw of candidates per "
                            "image, mean and std over FOLDS folds of the images (10 folds of "
                            "3,000 for 30,000 generated images)")
    group.add_argument("--top-r", type=int, default=1, help="a hit is the true caption in the top r")
    group.add_argument("--mismatch", choices=("class", "caption"), default="class",
                       help="draw mismatching captions from other classes (the DM-GAN script) or "
                            "from any other caption")
    group.add_argument("--images", choices=("real", "generated"), default="real",
                       help="rank real test images, or images generated from the captions "
                            "(needs a GAN checkpoint with netG_ema)")


def _shapes_test_set(args, config):
    from attnfast.data import ShapesDataset, collate_shapes
    data = config["dataset"]
    dataset = ShapesDataset(args.num_images, resolution=config["damsm"]["image_size"],
                            seed=data["seed"], captions_per_image=data["captions_per_image"],
                            words_num=data["words_num"], split="test",
                            max_objects=data["max_objects"], grid=data["grid"])
    return dataset, collate_shapes([dataset[i] for i in range(len(dataset))])


def _generator(ctx: Context, what: str) -> torch.nn.Module:
    """The checkpoint's EMA generator (eval mode, on the device); ``what`` names the option needing it."""
    if ctx.state is None or "netG_ema" not in ctx.state:
        raise ValueError(f"{what} needs a GAN checkpoint (with netG_ema)")
    from attnfast.models.build import build_generator
    net_g = build_generator(ctx.config)
    net_g.load_state_dict(ctx.state["netG_ema"])
    return net_g.to(ctx.device).eval()


def _generated_images(args, ctx: Context, dataset) -> torch.Tensor:
    from attnfast.metrics.shapes_eval import generate_for_dataset
    net_g = _generator(ctx, "--images generated")
    images = generate_for_dataset(net_g, ctx.text_encoder, dataset, ctx.config["dataset"]["words_num"],
                                  ctx.config["model"]["z_dim"], args.batch_size, args.seed, ctx.device)[0]
    return images


def run_r_precision(args: argparse.Namespace, ctx: Context) -> dict:
    from attnfast.metrics.r_precision import r_precision
    dataset, batch = _shapes_test_set(args, ctx.config)
    images = batch["images"][0] if args.images == "real" else _generated_images(args, ctx, dataset)
    damsm = ctx.config["damsm"]
    result = r_precision(ctx.image_encoder, ctx.text_encoder, images, batch["captions"],
                         batch["cap_lens"], batch_size=args.batch_size, device=ctx.device,
                         candidates=args.candidates, runs=1 if args.folds else args.runs,
                         folds=args.folds, seed=args.seed,
                         score=args.score, top_r=args.top_r, gamma1=damsm["gamma1"],
                         gamma2=damsm["gamma2"], backend=args.backend,
                         caption_classes=batch["class_ids"] if args.mismatch == "class" else None)
    return {**result, "images_kind": args.images, "mismatch": args.mismatch}


def run_shapes(args: argparse.Namespace, ctx: Context) -> dict:
    """Attribute accuracy, pointing game and R-precision of a GAN checkpoint's generated images."""
    if ctx.state is None or "netG_ema" not in ctx.state:
        raise ValueError("--shapes needs a GAN checkpoint (gan.pt from --stage gan)")
    from attnfast.metrics.shapes_eval import evaluate_checkpoint
    return evaluate_checkpoint(args.checkpoint, None, ctx.device, num_images=args.num_images,
                               batch=args.batch_size, seed=args.seed, r_runs=args.runs,
                               diversity_captions=args.diversity_captions, diversity_n=args.diversity_n)


def run_grounding(args: argparse.Namespace, ctx: Context) -> dict:
    """The pointing game per word class: the DAMSM's word->region attention on real test images (any
    checkpoint with encoders), and for a GAN checkpoint also on its generated images and the
    generator's word attention at every attentional stage."""
    from attnfast.metrics import grounding
    from attnfast.metrics.shapes_eval import damsm_pointing, generate_for_dataset, grounding_report
    dataset, batch = _shapes_test_set(args, ctx.config)
    scenes = [dataset.get_scene(i) for i in range(len(dataset))]
    if ctx.state is not None and "netG_ema" in ctx.state:
        stages, attention, captions, lens = generate_for_dataset(
            _generator(ctx, "--grounding"), ctx.text_encoder, dataset, ctx.config["dataset"]["words_num"],
            ctx.config["model"]["z_dim"], args.batch_size, args.seed, ctx.device, all_stages=True)
        report = grounding_report(ctx.image_encoder, ctx.text_encoder, stages[-1], attention, captions, lens,
                                  ctx.vocab, ctx.config, dataset, scenes, ctx.device, args.batch_size)
        print(grounding.format_table(report), file=sys.stderr)
        return report
    tokens = [ctx.vocab.decode(row[:n]).split() for row, n in zip(batch["captions"], batch["cap_lens"].tolist(),
                                                                          strict=True)]
    return damsm_pointing(ctx.image_encoder, ctx.text_encoder, batch["images"][-1], batch["captions"],
                          batch["cap_lens"], tokens, scenes, ctx.config, ctx.device, args.batch_size,
                          {"damsm_real": True, "damsm_real_without_eq8": False})


# ------------------------------------------------------------------ diversity
def _add_diversity_arguments(parser: argparse.ArgumentParser) -> None:
    from attnfast.metrics.diversity import DEFAULT_CAPTIONS, DEFAULT_N
    group = parser.add_argument_group("diversity (also part of --shapes; 0 captions leaves it out there)")
    group.add_argument("--diversity-captions", type=int, default=DEFAULT_CAPTIONS, metavar="K",
                       help="shapes test captions (caption 0 of the first K test scenes)")
    group.add_argument("--diversity-n", type=int, default=DEFAULT_N, metavar="N",
                       help="samples and real renderings per caption (>= 2)")


def run_diversity(args: argparse.Namespace, ctx: Context) -> dict:
    """Mean pairwise distance of N samples per caption over that of N real renderings (see
    attnfast/metrics/diversity.py)."""
    from attnfast.metrics import diversity, shapes_accuracy
    diversity.check_sets(args.diversity_captions, args.diversity_n)
    net_g = _generator(ctx, "--diversity")
    captions = diversity.shapes_test_captions(ctx.config, args.diversity_captions)
    return diversity.evaluate_diversity((net_g, ctx.text_encoder, ctx.vocab, ctx.config),
                                        shapes_accuracy.cached_classifier(), captions, args.diversity_n,
                                        args.seed, args.batch_size, ctx.device)


# ------------------------------------------------------------------ VLMS (VLMGAN)
def _add_vlms_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("VLMS")
    group.add_argument("--vlm", default=None, metavar="CKPT",
                       help="VLMGAN matching block (vlm.pt from --stage vlm; default: --checkpoint "
                            "when it is a vlm checkpoint)")
    group.add_argument("--vlms-images", choices=("real", "generated"), default="real",
                       help="score real test images, or images generated from the captions "
                            "(needs a GAN checkpoint with netG_ema)")


def run_vlms(args: argparse.Namespace, ctx: Context) -> dict:
    """VLMS of the test pairs (and of shuffled pairs, the chance reference); see metrics/vlms.py."""
    from attnfast.metrics.vlms import vlms
    from attnfast.models.build import load_matching_block
    path = args.vlm or (args.checkpoint if isinstance(ctx.state, dict) and "msb" in ctx.state else None)
    if path is None:
        raise ValueError("--vlms needs the matching block: pass --vlm vlm.pt (from --stage vlm)")
    msb, _ = load_matching_block(path, ctx.device, ctx.text_encoder)
    dataset, batch = _shapes_test_set(args, ctx.config)
    images = batch["images"][0] if args.vlms_images == "real" else _generated_images(args, ctx, dataset)
    damsm = ctx.config["damsm"]
    result = vlms(msb, ctx.image_encoder, ctx.text_encoder, images, batch["captions"], batch["cap_lens"],
                  batch["class_ids"], ctx.config["dataset"]["words_num"], args.batch_size, ctx.device,
                  damsm["gamma1"], damsm["gamma2"], args.seed)
    return {**result, "images_kind": args.vlms_images, "vlm_checkpoint": str(path)}


# ------------------------------------------------------------------ IS / FID
def _add_inception_arguments(parser: argparse.ArgumentParser) -> None:
    from attnfast.metrics.inception_metrics import FID_WEIGHTS, TORCHVISION_WEIGHTS
    group = parser.add_argument_group("IS / FID (images from --samples DIR, or generated from the "
                                      "shapes test captions by a GAN --checkpoint)")
    group.add_argument("--real", metavar="DIR", default=None,
                       help="real reference images for --fid (default with --checkpoint: the "
                            "shapes test images); with --paper, 'test-set' takes the data set's "
                            "test images (cropped as the data pipeline does, at the generator's size)")
    group.add_argument("--inception-weights", metavar="PATH", default=None,
                       help=f"local Inception-v3 weights: {FID_WEIGHTS} (pytorch-fid's; "
                            f"paper-comparable) or {TORCHVISION_WEIGHTS} (torchvision's)")
    group.add_argument("--inception-variant", choices=("auto", "fid", "torchvision"), default="auto",
                       help="network of the weights (auto: by the fc size, 1008 = fid)")
    group.add_argument("--is-splits", type=int, default=10, help="Inception Score splits")


def _checkpoint_images(args, ctx: Context, real: bool):
    """(batch, value_range) pairs of the shapes test set: real images, or generated ones."""
    dataset, batch = _shapes_test_set(args, ctx.config)
    images = batch["images"][-1] if real else _generated_images(args, ctx, dataset)
    return ((chunk, (-1.0, 1.0)) for chunk in images.split(args.batch_size))


def _directory_images(directory, batch_size: int):
    from attnfast.metrics.image_dir import image_files, iter_image_batches
    return ((chunk, None) for chunk in iter_image_batches(image_files(directory), batch_size))


def _dataset_images(dataset, batch_size: int):
    """(batch, value_range) pairs of a dataset's last-stage images (items' "images"[-1])."""
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i]["images"][-1] for i in range(start, min(start + batch_size, len(dataset)))]
        yield torch.stack(items), (-1.0, 1.0)


def _inception_results(args: argparse.Namespace, ctx: Context | None) -> dict:
    """IS and FID asked for, from one pass of the Inception network over the images (cached on
    ``args``: --is and --fid share it)."""
    if getattr(args, "_inception_results", None) is not None:
        return args._inception_results
    from attnfast.engine.devices import pick_device
    from attnfast.metrics.inception_metrics import InceptionMetrics, load_inception_features
    if args.samples is None and (ctx is None or ctx.state is None or "netG_ema" not in ctx.state):
        raise ValueError("--is/--fid need images: --samples DIR, or a GAN --checkpoint (with netG_ema)")
    if args.fid and args.real is None and args.samples is not None:
        raise ValueError("--fid over --samples needs the real reference images: --real DIR")
    extractor = load_inception_features(args.inception_weights, args.inception_variant,
                                        ctx.device if ctx is not None else pick_device(args.device))
    metrics = InceptionMetrics(extractor, inception_score=args.inception_score, fid=args.fid,
                               splits=args.is_splits)
    fakes = (_directory_images(args.samples, args.batch_size) if args.samples is not None
             else _checkpoint_images(args, ctx, real=False))
    for images, value_range in fakes:
        metrics.update(images, value_range=value_range)
    if args.fid:
        reals = (_directory_images(args.real, args.batch_size) if args.real is not None
                 else _checkpoint_images(args, ctx, real=True))
        for images, value_range in reals:
            metrics.update(images, real=True, value_range=value_range)
    info = {"inception_weights": str(args.inception_weights), "variant": extractor.variant,
            "generated": str(args.samples) if args.samples is not None else "checkpoint"}
    args._inception_results = {name: {**value, **info} for name, value in metrics.compute(args.seed).items()}
    if args.fid:
        args._inception_results["fid"]["real"] = str(args.real) if args.real else "shapes test set"
    return args._inception_results


# ------------------------------------------------------------------ the paper's table
def _add_paper_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("paper table (--netG: the original AttnGAN's released weights "
                                      "on a test set in AttnGAN's layout)")
    group.add_argument("--text-encoder", metavar="PATH", help="released DAMSM text_encoder*.pth")
    group.add_argument("--image-encoder", metavar="PATH", help="released DAMSM image_encoder*.pth")
    group.add_argument("--data-dir", metavar="DIR", help="data/birds or data/coco (test split)")
    group.add_argument("--dataset", choices=("birds", "coco"), default="birds")
    group.add_argument("--num-generated", type=int, default=30000, help="images generated (DM-GAN: 30000)")
    group.add_argument("--words-num", type=int, default=None,
                       help="WORDS_NUM (default: 25 birds, 20 COCO, as the original's "
                            "eval_bird.yml / eval_coco.yml)")
    group.add_argument("--save-samples", metavar="DIR", default=None, help="also write the images as PNGs")


def run_paper(args: argparse.Namespace, ctx: Context | None) -> dict:
    """R-precision (DM-GAN protocol, sentence cosine, --folds default 10), IS (with
    --inception-weights) and FID (with --real too) of released weights in one pass."""
    from attnfast.data.attngan_layout import AttnGANDataset
    from attnfast.engine.devices import pick_device
    from attnfast.metrics.inception_metrics import InceptionMetrics, load_inception_features
    from attnfast.metrics.paper_eval import evaluate_generator
    from attnfast.models import released
    needed = {"--netG": args.netG, "--text-encoder": args.text_encoder,
              "--image-encoder": args.image_encoder, "--data-dir": args.data_dir}
    if any(v is None for v in needed.values()):
        raise ValueError(f"--paper needs {', '.join(k for k, v in needed.items() if v is None)}")
    device = pick_device(args.device)
    words_num = args.words_num or (25 if args.dataset == "birds" else 20)
    text_encoder = released.load_released_text_encoder(args.text_encoder, words_num=words_num).to(device)
    image_encoder = released.load_released_image_encoder(args.image_encoder).to(device)
    net_g = released.load_released_generator(args.netG).to(device)
    dataset = AttnGANDataset(args.data_dir, args.dataset, "test", words_num=words_num,
                             captions_per_image=10 if args.dataset == "birds" else 5,
                             multi_res=(64 * 2 ** (net_g.branch_num - 1),))
    if len(dataset.vocab) != text_encoder.ntoken:
        raise ValueError(f"{args.data_dir}: vocabulary of {len(dataset.vocab)} words, but "
                         f"{args.text_encoder} was trained with {text_encoder.ntoken}")
    inception = None
    if args.inception_weights is not None:
        inception = InceptionMetrics(load_inception_features(args.inception_weights,
                                                             args.inception_variant, device),
                                     fid=args.real is not None, splits=args.is_splits)
        reals = (() if args.real is None else _dataset_images(dataset, args.batch_size)
                 if args.real == "test-set" else _directory_images(args.real, args.batch_size))
        for images, value_range in reals:
            inception.update(images, real=True, value_range=value_range)
    records = dataset.records
    classes = [r.class_id for r in records] if args.mismatch == "class" else list(range(len(records)))
    result = evaluate_generator(net_g, text_encoder, image_encoder, [r.captions for r in records],
                                classes, n_images=args.num_generated, words_num=words_num,
                                batch_size=args.batch_size, device=device, seed=args.seed,
                                inception=inception, candidates=args.candidates,
                                folds=args.folds or 10, backend=args.backend,
                                save_dir=args.save_samples)
    return {**result, "test_items": len(records), "words_num": words_num,
            "inception_weights": args.inception_weights, "real": args.real}


# metrics computed with torchmetrics (the ``metrics`` extra); --netG's default "paper" too
NEEDS_TORCHMETRICS = ("inception_score", "fid", "paper")

METRICS: dict[str, Metric] = {
    "r_precision": Metric("--r-precision", "R-precision of the DAMSM encoders (AttnGAN protocol)",
                          _add_r_precision_arguments, run_r_precision),
    "shapes": Metric("--shapes", "text-image faithfulness of a GAN checkpoint on shapes: attribute "
                     "accuracy, attention pointing game, R-precision of generated images, diversity "
                     "(the default for a GAN checkpoint)", lambda parser: None, run_shapes),
    "grounding": Metric("--grounding", "attention grounding on shapes: the pointing game per word class "
                        "(colour, shape, size, position) of the DAMSM's word->region attention on real "
                        "images and, for a GAN checkpoint, on generated images and of the generator's "
                        "attention at every stage", lambda parser: None, run_grounding),
    "diversity": Metric("--diversity", "diversity of a GAN checkpoint on shapes: mean pairwise distance "
                        "(attribute classifier features) of N samples per caption over that of N real "
                        "renderings; 1.0 as varied as the data, 0 one image per caption",
                        _add_diversity_arguments, run_diversity),
    "vlms": Metric("--vlms", "VLMGAN's vision-language matching score (local + global + general "
                   "matching, mean) of true and shuffled test pairs", _add_vlms_arguments, run_vlms),
    "inception_score": Metric("--is", "Inception Score of the generated images (torchmetrics, "
                              "local Inception weights)", _add_inception_arguments,
                              lambda args, ctx: _inception_results(args, ctx)["inception_score"]),
    "fid": Metric("--fid", "FID between the generated and the real images (torchmetrics, local "
                  "Inception weights)", lambda parser: None,
                  lambda args, ctx: _inception_results(args, ctx)["fid"]),
    "paper": Metric("--paper", "the AttnGAN paper's table for released weights (--netG): IS, "
                    "R-precision (DM-GAN protocol), FID with --real", _add_paper_arguments, run_paper),
}
# Metrics that run without an attnfast checkpoint: over --samples DIR, or on released --netG weights.
IMAGE_METRICS = ("inception_score", "fid")
RELEASED_METRICS = ("paper",)


# ------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attnfast.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, metric in METRICS.items():
        parser.add_argument(metric.flag, dest=name, action="store_true", help=metric.help)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint with the encoders (see the layout above)")
    source.add_argument("--random-init", action="store_true",
                        help="randomly initialised encoders of the default shapes config (smoke run)")
    source.add_argument("--samples", metavar="DIR", default=None,
                        help="a directory of generated images (PNG/JPEG, searched recursively) for "
                             "--is / --fid")
    source.add_argument("--netG", metavar="PATH", default=None,
                        help="the original AttnGAN's released generator (netG_*.pth) for --paper")
    parser.add_argument("--num-images", type=int, default=1000, help="shapes test scenes to evaluate")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--backend", default=None,
                        choices=("auto", "reference", "triton", "cuda", "cpu"),
                        help="backend of the fused ops (default: $ATTNFAST_BACKEND or auto)")
    parser.add_argument("--out", default=None, help="also write the JSON results here")
    for metric in METRICS.values():
        metric.add_arguments(parser)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    chosen = [name for name in METRICS if getattr(args, name)]
    if any(name in NEEDS_TORCHMETRICS for name in chosen) or (args.netG is not None and not chosen):
        require_extra("metrics")  # IS / FID: one line naming torchmetrics and exit 2 when missing
    try:
        standalone = {"--samples": (args.samples, IMAGE_METRICS), "--netG": (args.netG, RELEASED_METRICS)}
        for flag, (value, allowed) in standalone.items():
            others = [METRICS[n].flag for n in chosen if n not in allowed]
            if value is not None and (others or not chosen and flag == "--samples"):
                raise ValueError(f"{flag} is evaluated by {' / '.join(METRICS[n].flag for n in allowed)} "
                                 f"only{' (not ' + ', '.join(others) + ')' if others else ''}")
        chosen = chosen or (["paper"] if args.netG is not None else [])
        ctx = None if args.samples is not None or args.netG is not None else load_context(args)
        if not chosen:  # a GAN checkpoint gets the full shapes evaluation, encoders R-precision
            chosen = ["shapes"] if ctx.state is not None and "netG_ema" in ctx.state else ["r_precision"]
        results = {name: METRICS[name].run(args, ctx) for name in chosen}
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attnfast.eval: error: {exc}", file=sys.stderr)
        return 2
    results["source"] = ("random-init" if args.random_init else
                         str(args.samples) if args.samples is not None else
                         str(args.netG) if args.netG is not None else str(args.checkpoint))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("attnfast.eval", main))
