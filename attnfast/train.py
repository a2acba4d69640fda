"""``python -m attnfast.train``: DAMSM pretraining (``--stage damsm``) and AttnGAN training
(``--stage gan``) on the built-in shapes dataset or a configured one.

Examples:
    python -m attnfast.train --stage damsm --out runs/shapes
    python -m attnfast.train --stage gan --damsm runs/shapes/damsm.pt --out runs/shapes --amp
    python -m attnfast.train --stage gan --resume runs/shapes/gan.pt --steps 10000
"""
import argparse
import json
import logging
import sys

from attnfast.config import ConfigError, load_config
from attnfast.engine.amp import AMP_MODES
from attnfast.trainer.common import NonFiniteLoss, pick_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attnfast.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (default: built-in shapes defaults)")
    parser.add_argument("--stage", choices=("damsm", "gan"), default="gan")
    parser.add_argument("--amp", nargs="?", const="bf16", default="off", choices=AMP_MODES,
                        help="mixed precision: bf16 autocast (default when given), fp16 with a GradScaler")
    parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    parser.add_argument("--damsm", default=None, help="DAMSM checkpoint with the frozen encoders (gan stage)")
    parser.add_argument("--out", default="runs/shapes", help="output directory")
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--steps", type=int, default=None, help="train until this global step")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(args.config, args.set)
        device = pick_device(args.device)
        if args.stage == "damsm":
            from attnfast.trainer.damsm import train_damsm
            summary = train_damsm(config, args.out, device, args.amp, args.resume, args.steps,
                                  progress=not args.no_progress)
        else:
            from attnfast.trainer.gan import train_gan
            summary = train_gan(config, args.out, device, args.damsm, args.amp, args.resume,
                                args.steps, progress=not args.no_progress)
    except (ConfigError, FileNotFoundError, ValueError, NonFiniteLoss, RuntimeError) as exc:
        print(f"attnfast.train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
