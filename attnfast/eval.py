"""``python -m attnfast.eval``: evaluation metrics, one flag per metric (more are added as flags).

Examples:
    python -m attnfast.eval --checkpoint runs/shapes/gan.pt     # attribute accuracy, pointing game, R-precision
    python -m attnfast.eval --r-precision --random-init --num-images 200       # smoke run
    python -m attnfast.eval --r-precision --checkpoint runs/shapes/damsm.pt
    python -m attnfast.eval --r-precision --checkpoint runs/shapes/gan.pt --images generated

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch


@dataclass(frozen=True)
class Metric:
    """One metric of the CLI: its flag, the arguments it adds, the function that runs it."""
    flag: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, "Context"], dict]


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
    from attnfast.trainer.common import build_image_encoder, build_text_encoder, pick_device
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
                            words_num=data["words_num"], split="test")
    return dataset, collate_shapes([dataset[i] for i in range(len(dataset))])


def _generated_images(args, ctx: Context, dataset) -> torch.Tensor:
    if ctx.state is None or "netG_ema" not in ctx.state:
        raise ValueError("--images generated needs a GAN checkpoint (with netG_ema)")
    from attnfast.metrics.shapes_eval import generate_for_dataset
    from attnfast.trainer.gan import build_generator
    net_g = build_generator(ctx.config)
    net_g.load_state_dict(ctx.state["netG_ema"])
    net_g.to(ctx.device).eval()
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
                         candidates=args.candidates, runs=args.runs, seed=args.seed,
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
                               batch=args.batch_size, seed=args.seed, r_runs=args.runs)


METRICS: dict[str, Metric] = {
    "r_precision": Metric("--r-precision", "R-precision of the DAMSM encoders (AttnGAN protocol)",
                          _add_r_precision_arguments, run_r_precision),
    "shapes": Metric("--shapes", "text-image faithfulness of a GAN checkpoint on shapes: attribute "
                     "accuracy, attention pointing game, R-precision of generated images "
                     "(the default for a GAN checkpoint)", lambda parser: None, run_shapes),
}


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
    try:
        ctx = load_context(args)
        if not chosen:  # a GAN checkpoint gets the full shapes evaluation, encoders R-precision
            chosen = ["shapes"] if ctx.state is not None and "netG_ema" in ctx.state else ["r_precision"]
        results = {name: METRICS[name].run(args, ctx) for name in chosen}
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attnfast.eval: error: {exc}", file=sys.stderr)
        return 2
    results["source"] = "random-init" if args.random_init else str(args.checkpoint)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
