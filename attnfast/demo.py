"""``make demo``: the main job end to end on the built-in shapes dataset, sized for a 2-core CPU.

The training pipeline of ``python -m attnfast.train`` (DAMSM briefly, the 2-stage AttnGAN briefly,
the evaluation; run again, it continues) on the demo config, then a grid of samples and attention
figures, and where every file is.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from attnfast.engine.amp import AMP_MODES
from attnfast.extras import run_cli

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
    parser.add_argument("--amp", nargs="?", const="auto", default="auto", choices=AMP_MODES + ("auto",),
                        help="mixed precision (default auto, logged: bf16 where the device computes it "
                             "natively, else fp32 on a CPU); --amp off trains in fp32")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from attnfast.config import load_config
    from attnfast.engine.amp import resolve as resolve_amp
    from attnfast.engine.devices import pick_device
    from attnfast.generation import sample_to_files
    from attnfast.pipeline import run_pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    device = pick_device(args.device)
    amp = resolve_amp(args.amp, device)
    config = load_config(args.config if Path(args.config).is_file() else None)
    for stage, steps in (("damsm", args.damsm_steps), ("gan", args.gan_steps)):
        config[stage]["steps"] = steps or config[stage]["steps"]
    started = time.perf_counter()
    print(f"== attnfast demo on {device} ({'fp32' if amp == 'off' else amp + ' autocast'}): "
          f"DAMSM {config['damsm']['steps']} steps, GAN {config['gan']['steps']} steps ==")
    try:
        report = run_pipeline(config, out, device, amp)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"attnfast.demo: error: {exc}", file=sys.stderr)
        return 2
    for name in ("damsm", "gan"):
        part = report[name]
        print(f"{name.upper()}: " + ("reused" if part.get("reused") else
                                     f"{part['steps']} steps at {part['steps_per_s']:.2f} steps/s, "
                                     f"last losses {part['last_losses']}"))
    captions = DEMO_CAPTIONS[config["dataset"]["grid"]]
    samples = sample_to_files(report["gan"]["checkpoint"], captions, out / "samples_demo", n=4, batch=16,
                     attention=True, device=device)
    report["samples"] = samples
    from attnfast.metrics.grounding import format_table
    from attnfast.metrics.grounding_figure import save_grounding_figures
    report["grounding_figures"] = save_grounding_figures(report["gan"]["checkpoint"], captions, out / "grounding",
                                                         device=device)
    print(json.dumps(report["eval"], indent=2))
    if "grounding" in report["eval"]:
        print("\n== attention grounding: the pointing game per word class ==")
        print(format_table(report["eval"]["grounding"]))
    report["seconds"] = time.perf_counter() - started
    (out / "demo_report.json").write_text(json.dumps(report, indent=2))
    print("\n== files ==")
    print(f"checkpoints:      {out / 'damsm.pt'}, {out / 'gan.pt'}")
    print(f"training logs:    {out / 'damsm_log.jsonl'}, {out / 'gan_log.jsonl'}")
    print(f"progress grids:   {out / 'samples'}/step_*.png")
    print(f"samples:          {samples['out']}/*.png (attention figures: *_attention.png)")
    print(f"grounding:        {out / 'grounding'}/*_grounding.png (DAMSM's map on a real image over G's)")
    print(f"evaluation:       {out / 'eval.json'}")
    print(f"report:           {out / 'demo_report.json'}  ({report['seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli("attnfast.demo", main))
