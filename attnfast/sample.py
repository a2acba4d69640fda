"""``python -m attnfast.sample``: images from captions with a trained AttnGAN checkpoint.

    python -m attnfast.sample --checkpoint runs/shapes/gan.pt --caption "a large red circle in the center" --n 4 --attention
    python -m attnfast.sample --checkpoint runs/shapes/gan.pt --captions captions.txt --batch 64
    python -m attnfast.sample --checkpoint runs/shapes/gan.pt --interpolate "caption A" "caption B" --steps 8
    python -m attnfast.sample --checkpoint runs/shapes/gan.pt --style runs/shapes/style.pt \
        --style-from image.png --caption "a small blue square in the top left"

PNGs are written by a worker thread while the next batch is generated. With ``--attention`` each
caption also gets the paper's figure: per attentional stage, the image and each word's attention.
"""
import argparse
import json
import logging
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

LOG = logging.getLogger("attnfast")


class SampleError(ValueError):
    pass


def read_captions(args) -> list[str]:
    captions = list(args.caption or [])
    if args.captions:
        path = Path(args.captions)
        if not path.is_file():
            raise FileNotFoundError(f"captions file not found: {path}")
        captions += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not captions:
        raise SampleError("no captions: pass --caption TEXT (repeatable) or --captions FILE")
    return captions


def encode_captions(captions: list[str], vocab, words_num: int) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
    """(N, words_num) ids padded with 0, (N,) lengths and the kept words of each caption.

    Unknown words become ``<unk>`` when the vocabulary has it, else they are dropped (the original
    AttnGAN drops them); either way one warning lists them. An empty caption is an error.
    """
    from attnfast.data import pad_captions, tokenize
    unknown: set[str] = set()
    ids, kept = [], []
    for text in captions:
        tokens = tokenize(text)
        if not tokens:
            raise SampleError(f"caption {text!r} has no words")
        row, words = [], []
        for token in tokens:
            if token in vocab and vocab.wordtoix[token] != 0:
                row.append(vocab.wordtoix[token])
                words.append(token)
            elif "<unk>" in vocab:
                unknown.add(token)
                row.append(vocab.wordtoix["<unk>"])
                words.append("<unk>")
            else:
                unknown.add(token)
        if not row:
            raise SampleError(f"caption {text!r} has no word the model knows")
        if len(row) > words_num:
            LOG.warning("attnfast.sample: caption %r has %d known words; keeping the first %d",
                        text, len(row), words_num)
            row, words = row[:words_num], words[:words_num]
        ids.append(row)
        kept.append(words)
    if unknown:
        action = "mapped to <unk>" if "<unk>" in vocab else "dropped"
        LOG.warning("attnfast.sample: words not in the vocabulary %s: %s", action, ", ".join(sorted(unknown)))
    padded, lens = pad_captions(ids, words_num)
    return padded, lens, kept


def load_generator(path, device: torch.device):
    """The EMA generator (eval mode), the frozen text encoder, the vocabulary and the config."""
    from attnfast.data import Vocabulary
    from attnfast.engine import checkpoint as ckpt
    from attnfast.trainer.common import build_text_encoder
    from attnfast.trainer.gan import build_generator
    state = ckpt.load(path, map_location=device, kind="gan")
    config = state["config"]
    vocab = Vocabulary.from_dict(state["vocab"])
    netG = build_generator(config)
    netG.load_state_dict(state["netG_ema"])
    text_encoder = build_text_encoder(config, len(vocab))
    text_encoder.load_state_dict(state["text_encoder"])
    return netG.to(device).eval(), text_encoder.to(device).eval(), vocab, config


def load_released(netG_path, text_encoder_path, vocab_path, device: torch.device, words_num: int = 25,
                  mask_mode: str = "attngan"):
    """The original AttnGAN's released weights as :func:`load_generator` returns a checkpoint: the
    generator (``netG_*.pth``), the DAMSM text encoder (``text_encoder*.pth``), the vocabulary of
    the data set's ``captions.pickle`` and a config with words_num / z_dim / branch_num."""
    from attnfast.data.attngan_text import load_captions_pickle
    from attnfast.models.released import load_released_generator, load_released_text_encoder
    if not text_encoder_path or not vocab_path:
        raise SampleError("--netG needs --text-encoder PATH and --vocab captions.pickle")
    netG = load_released_generator(netG_path, mask_mode=mask_mode)
    text_encoder = load_released_text_encoder(text_encoder_path, words_num=words_num)
    vocab = load_captions_pickle(vocab_path)[2]
    if len(vocab) != text_encoder.ntoken:
        raise SampleError(f"{vocab_path} has {len(vocab)} words but {text_encoder_path} was trained "
                          f"with {text_encoder.ntoken}: not the data set of these weights")
    config = {"dataset": {"words_num": words_num},
              "model": {"z_dim": netG.z_dim, "condition_dim": netG.ncf, "branch_num": netG.branch_num}}
    return netG.to(device), text_encoder.to(device), vocab, config


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60] or "caption"


@torch.no_grad()
def generate(netG, text_encoder, captions, cap_lens, noise, words_num: int, amp: str = "off", eps=None,
             packed: bool = True):
    """Images of every stage and attention maps for a batch (see G_NET.forward); ``eps`` (B, ncf)
    fixes the CA noise (drawn from the global RNG when None); ``packed=False`` runs the text
    encoder unpacked (no host sync: CUDA-graph capturable)."""
    from attnfast.engine.amp import autocast
    from attnfast.trainer.common import encode_text
    device = noise.device
    words, sentence = encode_text(text_encoder, captions.to(device), cap_lens, words_num, packed=packed)
    with autocast(amp, device):
        fakes, att_maps, _, _ = netG(noise, sentence.float(), words.float(), captions.to(device) == 0, eps=eps)
    return [f.float() for f in fakes], [a.float() for a in att_maps]


def fixed_noise(config: dict, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise z (count, z_dim) and CA noise eps (count, condition_dim) from a seeded CPU generator."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, config["model"]["z_dim"], generator=generator)
    return noise, torch.randn(count, config["model"]["condition_dim"], generator=generator)


def sample(checkpoint, captions: list[str], out_dir, n: int = 1, batch: int = 16, seed: int = 0,
           attention: bool = False, device: torch.device | None = None, amp: str = "off",
           progress: bool = True, models=None, fmt: str = "png", fuse: bool = True,
           graphs: bool = False) -> dict:
    """Images for ``captions`` (``n`` each) in batches of ``batch``. ``fmt`` "png" writes one PNG per
    image, "npz" one ``images.npz`` (images uint8 (N, H, W, 3), caption_ids, sample_ids, captions);
    writing happens on worker threads. ``fuse`` folds G's BatchNorms (fuse_for_inference);
    ``graphs`` captures G as a CUDA graph on the GPU (attnfast.engine.graphed_generator)."""
    from functools import partial

    from attnfast.data import to_uint8_images
    from attnfast.engine.graphed_generator import GraphedGenerator
    from attnfast.viz import attention_figure, save_png
    device = device or torch.device("cpu")
    if n < 1 or batch < 1:
        raise SampleError(f"--n and --batch must be >= 1, got {n} and {batch}")
    if fmt not in ("png", "npz"):
        raise SampleError(f"--format must be png or npz, got {fmt!r}")
    # ``models``: (netG, text_encoder, vocab, config) loaded beforehand, e.g. by load_released.
    netG, text_encoder, vocab, config = models or load_generator(checkpoint, device)
    if fuse:
        from attnfast.models.inference import fuse_for_inference
        netG = fuse_for_inference(netG)
    words_num = config["dataset"]["words_num"]
    run = GraphedGenerator(partial(generate, netG, text_encoder, words_num=words_num, amp=amp, packed=not graphs),
                           min(batch, len(captions) * n), device, graphs,
                           validate=lambda c, lens: text_encoder._validate(c, lens, words_num))
    ids, lens, kept = encode_captions(captions, vocab, words_num)
    jobs = [(c, k) for c in range(len(captions)) for k in range(n)]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(jobs), config["model"]["z_dim"], generator=generator)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, futures = [], []
    pages = _NpzPages(len(jobs))
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as writer:
        bar = tqdm(total=len(jobs), desc="sample", unit="img", disable=not progress)
        for start in range(0, len(jobs), batch):
            chunk = jobs[start:start + batch]
            rows = torch.tensor([c for c, _ in chunk])
            fakes, att_maps = run(ids[rows], lens[rows], noise[start:start + len(chunk)])
            pixels = to_uint8_images(fakes[-1].cpu())
            if fmt == "npz":
                pages.allocate(pixels.shape[1:])
                futures.append(writer.submit(pages.put, start, pixels))
            for (c, k), image in zip(chunk, pixels):
                if fmt == "png":
                    path = out_dir / f"{c:04d}_{_slug(captions[c])}_{k}.png"
                    futures.append(writer.submit(save_png, image, path))
                    written.append(str(path))
                if attention and k == 0 and att_maps:
                    j = chunk.index((c, k))
                    count = len(kept[c])
                    figure = attention_figure([f[j].cpu() for f in fakes[1:]],
                                              [a[j, :count].cpu() for a in att_maps], kept[c])
                    path = out_dir / f"{c:04d}_{_slug(captions[c])}_attention.png"
                    futures.append(writer.submit(save_png, figure, path))
                    written.append(str(path))
            bar.update(len(chunk))
        bar.close()
        for future in futures:
            future.result()
        if fmt == "npz":
            path = out_dir / "images.npz"
            writer.submit(pages.save, path, [captions[c] for c, _ in jobs], [c for c, _ in jobs],
                          [k for _, k in jobs]).result()
            written.append(str(path))
    elapsed = time.perf_counter() - started
    if attention and config["model"]["branch_num"] < 2:
        LOG.warning("attnfast.sample: a 1-stage generator has no word attention to draw")
    return {"images": len(jobs), "files": len(written), "out": str(out_dir), "seconds": elapsed,
            "images_per_s": len(jobs) / max(elapsed, 1e-9)}


class _NpzPages:
    """The images of an npz output: batches put by worker threads into one (N, H, W, 3) uint8 array."""

    def __init__(self, count: int):
        self.count, self.images = count, None

    def allocate(self, shape: tuple) -> None:
        """Called on the main thread before the first put: (count,) + shape uint8."""
        import numpy as np
        if self.images is None:
            self.images = np.zeros((self.count,) + tuple(shape), dtype=np.uint8)

    def put(self, start: int, pixels) -> None:
        self.images[start:start + len(pixels)] = pixels

    def save(self, path: Path, texts: list, caption_ids: list, sample_ids: list) -> None:
        import numpy as np
        from attnfast.engine.files import atomic_write
        atomic_write(path, lambda stream: np.savez(stream, images=self.images, captions=np.array(texts),
                                                    caption_ids=np.array(caption_ids),
                                                    sample_ids=np.array(sample_ids)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attnfast.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a GAN checkpoint (gan.pt)")
    source.add_argument("--netG", metavar="PATH", help="the original AttnGAN's released generator "
                        "(netG_*.pth; with --text-encoder and --vocab)")
    parser.add_argument("--text-encoder", metavar="PATH", help="released text_encoder*.pth (--netG)")
    parser.add_argument("--vocab", metavar="PICKLE", help="the data set's captions.pickle (--netG)")
    parser.add_argument("--words-num", type=int, default=25, help="WORDS_NUM for --netG (25: the "
                        "original's eval_bird.yml; eval_coco.yml: 20)")
    parser.add_argument("--mask-mode", choices=("attngan", "correct"), default="attngan",
                        help="word mask of released generators (attngan: as they were trained)")
    parser.add_argument("--interpolate", nargs=2, metavar=("CAPTION_A", "CAPTION_B"),
                        help="draw the path from caption A to B with fixed noise as a strip PNG (GAN-INT)")
    parser.add_argument("--steps", type=int, default=8, help="images along the --interpolate path")
    parser.add_argument("--style-from", action="append", metavar="IMAGE",
                        help="style transfer: z = S(IMAGE), drawn with each --caption (repeatable)")
    parser.add_argument("--style", metavar="CKPT", help="style encoder checkpoint (default: style.pt "
                        "next to --checkpoint; from --stage style)")
    parser.add_argument("--caption", action="append", help="a caption (repeatable)")
    parser.add_argument("--captions", help="a text file with one caption per line")
    parser.add_argument("--n", type=int, default=1, help="images per caption")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/samples")
    parser.add_argument("--attention", action="store_true", help="also draw the attention figures")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", nargs="?", const="bf16", default="off", choices=("off", "bf16", "fp16"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--format", choices=("png", "npz"), default="png",
                        help="one PNG per image, or one images.npz (uint8 N x H x W x 3) for metrics")
    parser.add_argument("--graphs", action="store_true", help="capture the generator as a CUDA graph (GPU)")
    parser.add_argument("--no-fuse", action="store_true", help="keep G's BatchNorms (no folding)")
    return parser


def main(argv=None) -> int:
    from attnfast.trainer.common import pick_device
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.netG is not None and (args.interpolate or args.style_from):
            raise SampleError("--interpolate and --style-from need a --checkpoint, not --netG")
        if args.interpolate:
            from attnfast.interpolate import interpolation_strip
            summary = interpolation_strip(args.checkpoint, *args.interpolate, Path(args.out) / "interpolation.png",
                                          args.steps, args.seed, pick_device(args.device), args.amp)
        elif args.style_from:
            from attnfast.style_transfer import style_transfer
            style = args.style or Path(args.checkpoint).parent / "style.pt"
            summary = style_transfer(args.checkpoint, style, args.style_from, read_captions(args),
                                     Path(args.out) / "style_transfer.png", args.seed,
                                     pick_device(args.device), args.amp)
        else:
            models = None if args.netG is None else load_released(
                args.netG, args.text_encoder, args.vocab, pick_device(args.device), args.words_num,
                args.mask_mode)
            summary = sample(args.checkpoint, read_captions(args), args.out, args.n, args.batch, args.seed,
                             args.attention, pick_device(args.device), args.amp, not args.no_progress,
                             models, fmt=args.format, fuse=not args.no_fuse, graphs=args.graphs)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attnfast.sample: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
