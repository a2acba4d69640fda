"""``python -m attnfast.train``: the whole pipeline by default (DAMSM pretraining -> DIR/damsm.pt,
AttnGAN training from it -> DIR/gan.pt, then the shapes evaluation -> DIR/eval.json; run again on
the same --out to continue), or one stage: DAMSM pretraining (``--stage damsm``), AttnGAN training
(``--stage gan``), the style encoder (``--stage style``), the VLMGAN matching block (``--stage vlm``);
on the built-in shapes dataset or a configured one.

Examples:
    python -m attnfast.train --out runs/shapes                        # DAMSM, GAN, evaluation
    python -m attnfast.train --amp off --out runs/fp32                # the same in fp32
    python -m attnfast.train --set damsm.steps=20 --set gan.steps=20 --out runs/x
    python -m attnfast.train --stage damsm --out runs/shapes
    python -m attnfast.train --stage gan --damsm runs/shapes/damsm.pt --out runs/shapes --amp
    python -m attnfast.train --stage gan --resume runs/shapes/gan.pt --steps 10000
    python -m attnfast.train --stage gan --damsm runs/shapes/damsm.pt --amp --graphs --compile
    torchrun --nproc_per_node 4 -m attnfast.train --stage gan --damsm runs/shapes/damsm.pt --amp
    python -m attnfast.train --stage style --gan runs/shapes/gan.pt --out runs/shapes
    python -m attnfast.train --stage vlm --damsm runs/shapes/damsm.pt --out runs/shapes
"""
import argparse
import json
import logging
import sys

from attnfast.config import ConfigError, load_config
from attnfast.engine.amp import AMP_MODES
from attnfast.engine.amp import resolve as resolve_amp
from attnfast.engine.devices import pick_device
from attnfast.extras import run_cli
from attnfast.trainer import distributed
from attnfast.trainer.common import NonFiniteLoss
from attnfast.trainer.speed import AUTO_STORE_MB

DATASET_ON_DEVICE_MB = 8192.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attnfast.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML config (default: built-in shapes defaults)")
    parser.add_argument("--stage", choices=("damsm", "gan", "style", "vlm"), default=None,
                        help="damsm | gan | style (encoder inverting G, needs --gan) | vlm (VLMGAN "
                             "matching block, needs --damsm); default: the whole pipeline, or gan "
                             "when --damsm or --resume is given")
    parser.add_argument("--amp", nargs="?", const="auto", default="auto", choices=AMP_MODES + ("auto",),
                        help="mixed precision (default auto, logged: bf16 autocast where the device "
                             "computes bf16 natively, fp16 with a GradScaler on older GPUs, fp32 "
                             "elsewhere); --amp off trains in fp32 (bit-identical to the paper path)")
    parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    parser.add_argument("--damsm", default=None, help="DAMSM checkpoint with the frozen encoders (gan stage)")
    parser.add_argument("--gan", default=None, help="GAN checkpoint whose generator to invert (style stage)")
    parser.add_argument("--out", default="runs/shapes", help="output directory")
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--steps", type=int, default=None, help="train until this global step")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    speed = parser.add_argument_group("speed (gan stage)")
    speed.add_argument("--graphs", action="store_true",
                       help="capture the D and G steps as CUDA graphs after warm-up (eager fallback, logged)")
    speed.add_argument("--compile", nargs="?", const="inductor", default=None,
                       choices=("inductor", "aot_eager", "eager"), help="torch.compile G, D and the image encoder")
    speed.add_argument("--text-cache-mb", type=float, default=1024.0,
                       help="memory bound of the per-caption text feature cache (0 = off; default 1024)")
    speed.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC weights and images (default: on for bf16 on the CPU, where it is faster; "
                       "else off)")
    speed.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across torchrun ranks (CUDA)")
    speed.add_argument("--dataset-on-device", nargs="?", type=float, const=DATASET_ON_DEVICE_MB, default=None,
                       metavar="MB", help="render the training images once and keep them on the device when "
                       f"they fit MB (without MB: {DATASET_ON_DEVICE_MB:g}) and half the free GPU memory (shapes "
                       "dataset; damsm and gan stages). Default: on for the shapes data when it fits "
                       f"{AUTO_STORE_MB:g} MB, else off; 0 = off")
    speed.add_argument("--dataset-dtype", choices=("uint8", "float32"), default="uint8",
                       help="storage of --dataset-on-device (uint8: 1/4 of the memory, decoded exactly)")
    speed.add_argument("--no-batched-d", dest="batched_d", action="store_false",
                       help="each D's update as the original's five calls (trunk on real, on fake; head on real, "
                       "fake, mismatched) instead of two batched ones, BatchNorm per part (default: batched; "
                       "the same logits up to the rounding of the batched convolutions)")
    return parser


def speed_options(args):
    from attnfast.trainer.speed import SpeedOptions
    return SpeedOptions(graphs=args.graphs, compile=args.compile is not None,
                        compile_backend=args.compile or "inductor", text_cache_mb=args.text_cache_mb,
                        channels_last=args.channels_last, sync_bn=args.sync_bn,
                        dataset_on_device_mb=args.dataset_on_device, dataset_dtype=args.dataset_dtype,
                        batched_d=args.batched_d)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(args.config, args.set)
        device = pick_device(args.device)
        args.amp = resolve_amp(args.amp, device)
        dist, device = distributed.init_from_env(device)
        if args.stage is None and (args.damsm or args.resume):
            args.stage = "gan"  # what a bare --damsm / --resume always meant
        if args.stage is None and args.gan:
            raise ValueError("--gan (the generator to invert) goes with --stage style")
        if dist.enabled and args.stage != "gan":
            raise ValueError("torchrun with several processes is supported for --stage gan, not "
                             f"{args.stage or 'the whole pipeline'}")
        if args.stage is None:
            if args.steps is not None:
                raise ValueError("--steps sets one stage's length; for the whole pipeline use "
                                 "--set damsm.steps=N --set gan.steps=M")
            from attnfast.pipeline import run_pipeline
            summary = run_pipeline(config, args.out, device, args.amp, progress=not args.no_progress,
                                   speed=speed_options(args))
        elif args.stage == "damsm":
            from attnfast.trainer.damsm import train_damsm
            summary = train_damsm(config, args.out, device, args.amp, args.resume, args.steps,
                                  progress=not args.no_progress, speed=speed_options(args))
        elif args.stage == "style":
            from attnfast.trainer.style import train_style
            summary = train_style(config, args.out, device, args.gan, args.amp, args.resume, args.steps,
                                  progress=not args.no_progress)
        elif args.stage == "vlm":
            from attnfast.trainer.vlm import train_vlm
            summary = train_vlm(config, args.out, device, args.damsm, args.amp, args.resume, args.steps,
                                progress=not args.no_progress)
        else:
            from attnfast.trainer.gan import train_gan
            summary = train_gan(config, args.out, device, args.damsm, args.amp, args.resume,
                                args.steps, progress=not args.no_progress, speed=speed_options(args),
                                dist=dist)
            if not dist.is_main:
                return 0
    except (ConfigError, FileNotFoundError, ValueError, NonFiniteLoss, RuntimeError) as exc:
        print(f"attnfast.train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("attnfast.train", main))
