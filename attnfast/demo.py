"""``make demo``: the main job end to end on the built-in shapes dataset, sized for a 2-core CPU.

Pretrains DAMSM briefly, trains the 2-stage AttnGAN briefly, samples a grid and attention figures,
runs the evaluation, and prints where every file is.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

# Captions sampled at the end, per dataset.grid (positions must be the grid's own).
DEMO_CAPTIONS = {
    3: ["a large red circle in the center",
        "a small blue square in the top left and a large yellow triangle at the bottom right",
        "a large green star on the left",
        "a small white diamond at the top and a large purple circle at the bottom"],
    2: ["a large red circle in the top left",
        "a large blue square in the top right and a large yellow triangle in the bottom left",
        "a large green star at the bottom right on a beige background",
        "a small white diamond in the top left and a large orange cross at the bottom right"],
    1: ["a large red circle in the center",
        "a large blue square in the center on a beige background",
        "a large yellow triangle in the center with a navy background",
        "a large green star in the center",
        "a large white diamond at the center on a teal background",
        "a large orange cross in the center"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnfast.demo", description=__doc__)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent.parent
                                                / "training/configs/shapes_demo.yaml"))
    parser.add_argument("--damsm-steps", type=int, default=None, help="default: the config's damsm.steps")
    parser.add_argument("--gan-steps", type=int, default=None, help="default: the config's gan.steps")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", nargs="?", const="bf16", default="off")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from attnfast.config import load_config
    from attnfast.generation import sample_to_files
    from attnfast.trainer.common import pick_device
    from attnfast.trainer.damsm import train_damsm
    from attnfast.trainer.gan import train_gan

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    device = pick_device(args.device)
    config = load_config(args.config if Path(args.config).is_file() else None)
    args.damsm_steps = args.damsm_steps or config["damsm"]["steps"]
    args.gan_steps = args.gan_steps or config["gan"]["steps"]
    started = time.perf_counter()
    print(f"== attnfast demo on {device}: DAMSM {args.damsm_steps} steps, GAN {args.gan_steps} steps ==")
    damsm = train_damsm(config, out, device, args.amp, steps=args.damsm_steps)
    print(f"DAMSM: {damsm['steps_per_s']:.2f} steps/s, last losses {damsm['last_losses']}")
    gan = train_gan(config, out, device, damsm["checkpoint"], args.amp, steps=args.gan_steps)
    print(f"GAN: {gan['steps_per_s']:.2f} steps/s, last losses {gan['last_losses']}")
    captions = DEMO_CAPTIONS[config["dataset"]["grid"]]
    samples = sample_to_files(gan["checkpoint"], captions, out / "samples_demo", n=4, batch=16,
                     attention=True, device=device)
    report = {"damsm": damsm, "gan": gan, "samples": samples}
    from attnfast.metrics.shapes_eval import evaluate_checkpoint
    report["eval"] = evaluate_checkpoint(gan["checkpoint"], out / "eval.json", device=device)
    print(json.dumps(report["eval"], indent=2))
    report["seconds"] = time.perf_counter() - started
    (out / "demo_report.json").write_text(json.dumps(report, indent=2))
    print("\n== files ==")
    print(f"checkpoints:      {out / 'damsm.pt'}, {out / 'gan.pt'}")
    print(f"training logs:    {out / 'damsm_log.jsonl'}, {out / 'gan_log.jsonl'}")
    print(f"progress grids:   {out / 'samples'}/step_*.png")
    print(f"samples:          {samples['out']}/*.png (attention figures: *_attention.png)")
    print(f"evaluation:       {out / 'eval.json'}")
    print(f"report:           {out / 'demo_report.json'}  ({report['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
