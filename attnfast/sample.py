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
import sys
from pathlib import Path

from attnfast.extras import run_cli

# The generation core is the library; these names stay importable from here for existing callers.
from attnfast.generation import (  # noqa: F401
    GenerationError,
    encode_captions,
    fixed_noise,
    generate,
    load_generator,
    load_released,
)
from attnfast.generation import sample_to_files as sample
from attnfast.generation.loading import add_model_arguments, models_from_args

SampleError = GenerationError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attnfast.sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
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
    parser.add_argument("--seed", type=int, default=0, help="image j of the run is drawn with seed + j "
                        "(z and the CA noise): the same image serve gives for that caption and seed")
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
    from attnfast.engine.devices import pick_device
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.netG is not None and (args.interpolate or args.style_from):
            raise SampleError("--interpolate and --style-from need a --checkpoint, not --netG")
        if args.interpolate:
            from attnfast.generation import interpolation_strip
            summary = interpolation_strip(args.checkpoint, *args.interpolate, Path(args.out) / "interpolation.png",
                                          args.steps, args.seed, pick_device(args.device), args.amp)
        elif args.style_from:
            from attnfast.generation import style_transfer
            style = args.style or Path(args.checkpoint).parent / "style.pt"
            summary = style_transfer(args.checkpoint, style, args.style_from, read_captions(args),
                                     Path(args.out) / "style_transfer.png", args.seed,
                                     pick_device(args.device), args.amp)
        else:
            models = None if args.netG is None else models_from_args(args, pick_device(args.device))
            summary = sample(args.checkpoint, read_captions(args), args.out, args.n, args.batch, args.seed,
                             args.attention, pick_device(args.device), args.amp, not args.no_progress,
                             models, fmt=args.format, fuse=not args.no_fuse, graphs=args.graphs)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attnfast.sample: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("attnfast.sample", main))
