"""Time-to-quality ablation of the GAN training options (issue 20).

Every row trains the demo's GAN (training/configs/shapes_demo.yaml unless --config) from one shared
DAMSM checkpoint for the same wall-clock budget (``--budget-s`` seconds of GAN training; a row that
costs more per step gets fewer steps), then runs the shapes evaluation (colour, size, shape, object,
pointing game, R-precision, diversity). Rows run as separate processes, ``--jobs`` at a time, each on
``--threads`` threads (default: 2 jobs of 1 thread on a 2-core machine, so that rows never share a
core and one row's OpenMP barriers do not stall on another's). The JSON keeps, per row and seed, the
steps reached, the overrides and the command that repeats the row with that step count exactly.

    .venv/bin/python bench/ablation.py --damsm runs/demo/damsm.pt --budget-s 300 \\
        --rows baseline,diffaugment,hinge --seeds 0 --out bench/results/ablation_cpu.json

Worker (one row, used by the orchestrator): ``--worker NAME --seed S --work DIR``.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

# Each option alone, added to the demo recipe; the sources are in attnfast/trainer/gan_options.py.
ROWS = {
    "baseline": ["gan.projection=false"],     # the demo recipe before this ablation
    "diffaugment": ["gan.diffaugment=color,translation,cutout"],
    "hinge": ["gan.loss=hinge"],
    "magp": ["gan.gp=magp"],
    "r1": ["gan.gp=r1", "gan.gp_weight=10"],
    "spectral_norm": ["gan.spectral_norm=true"],
    "ttur": ["gan.g_lr=0.0002", "gan.d_lr=0.0004", "gan.g_betas=[0.0,0.9]", "gan.d_betas=[0.0,0.9]"],
    "mode_seeking": ["gan.mode_seeking=1.0"],
    "projection": ["gan.projection=true"],
    # issue 29: G's word attention pulled towards the DAMSM's region attention without Eq. 8
    "attention_grounding": ["gan.attention_grounding=1.0"],
    "attention_grounding_4": ["gan.attention_grounding=4.0"],
    # issue 29: G's word attention pulled onto the caption's ground-truth layout (supervised)
    "attention_layout": ["gan.attention_layout=50"],
    "attention_layout_20": ["gan.attention_layout=20"],
}


def parse_rows(names: str, custom: list[str]) -> dict:
    rows = {}
    for text in custom:
        if "=" not in text:
            raise SystemExit(f"--row must look like NAME=override;override, got {text!r}")
        name, overrides = text.split("=", 1)
        rows[name.strip()] = [o for o in overrides.split(";") if o.strip()]
    for name in [n for n in names.split(",") if n]:
        if name not in ROWS:
            raise SystemExit(f"unknown row {name!r} (known: {', '.join(ROWS)}; or --row NAME=overrides)")
        rows[name] = ROWS[name]
    return rows


def run_worker(args) -> None:
    """Train one row for the budget (in chunks of 25 steps) and evaluate it; writes result.json."""
    import torch

    from attnfast.config import load_config
    from attnfast.metrics.shapes_eval import evaluate_checkpoint
    from attnfast.trainer.gan import GANTrainer
    torch.set_num_threads(args.threads)
    overrides = json.loads(args.overrides) + [f"train.seed={args.seed}", "train.sample_every=100000",
                                              "train.checkpoint_every=100000", "train.log_every=25"]
    config = load_config(args.config, overrides)
    work = Path(args.work)
    device = torch.device("cpu")
    torch.manual_seed(config["train"]["seed"])
    trainer = GANTrainer(config, work, device, args.damsm)
    batches = trainer.batches()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    started = clock()
    while True:
        if args.steps is not None:
            target = args.steps
        elif clock() - started >= args.budget_s:
            break
        else:
            target = trainer.step + 25
        trainer.run(batches, target, progress=False)
        if args.steps is not None:
            break
    seconds = clock() - started
    trainer.save()
    report = evaluate_checkpoint(trainer.checkpoint_path(), work / "eval.json", device=device)
    (work / "result.json").write_text(json.dumps({"steps": trainer.step, "train_seconds": seconds,
                                                  "eval": report}, indent=1))


def summary_of(report: dict) -> dict:
    """The headline numbers of a shapes evaluation report (attnfast/metrics/shapes_eval.py)."""
    acc = report["attribute_accuracy"]
    out = {k: acc.get(k) for k in ("colour", "size", "shape", "object")}
    out["pointing_game"] = (report.get("pointing_game") or {}).get("pointing_accuracy")
    out["r_precision"] = (report.get("r_precision") or {}).get("mean")
    out["diversity"] = (report.get("diversity") or {}).get("ratio")
    stages = (report.get("grounding") or {}).get("generator") or {}
    last = stages[max(stages, key=lambda name: int(name.split("_")[-1]))] if stages else {}
    for word_class in ("colour", "shape"):
        out[f"g_pointing_{word_class}"] = (last.get(word_class) or {}).get("pointing_accuracy")
    return out


METRICS = ("colour", "size", "shape", "object", "pointing_game", "r_precision", "diversity",
           "g_pointing_colour", "g_pointing_shape")


def markdown_table(rows: list[dict]) -> str:
    """One line per row name (in first-seen order): steps and each metric as the mean over its seeds
    (percentages; diversity as a ratio), with the seeds listed."""
    by_name: dict = {}
    for row in rows:
        by_name.setdefault(row["row"], []).append(row)
    lines = [("| row | overrides | seeds | GAN steps | colour | size | shape | object | pointing | R-prec | diversity "
              "| G ptg colour | G ptg shape |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, group in by_name.items():
        def mean(key, group=group):  # bound: a closure over the loop variable
            values = [r[key] for r in group if r.get(key) is not None]
            return sum(values) / len(values) if values else None
        cells = []
        for key in METRICS:
            value = mean(key)
            cells.append("–" if value is None else (f"{value:.2f}" if key == "diversity" else f"{100 * value:.1f}"))
        steps = "/".join(str(r["steps"]) for r in group)
        overrides = "<br>".join(f"`{o}`" for o in group[0]["overrides"]) or "(demo recipe)"
        seeds = ",".join(str(r["seed"]) for r in group)
        lines.append(f"| {name} | {overrides} | {seeds} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "training/configs/shapes_demo.yaml"))
    parser.add_argument("--damsm", default=None, help="DAMSM checkpoint shared by every row (required to train)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="GAN training seconds per row")
    parser.add_argument("--steps", type=int, default=None, help="train exactly this many steps instead")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="what --budget-s counts: wall-clock seconds, or the row's own CPU seconds "
                             "(process time: independent of other jobs on the machine)")
    parser.add_argument("--rows", default="", help=f"comma-separated, of {', '.join(ROWS)}")
    parser.add_argument("--row", action="append", default=[], help="NAME=override;override (a custom row)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=str(ROOT / "runs/ablation"))
    parser.add_argument("--out", default=str(ROOT / "bench/results/ablation_cpu.json"))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="[]", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--table", default=None, metavar="JSON", help="print the rows of a results JSON as a "
                        "markdown table (mean over seeds, and each seed) and exit")
    args = parser.parse_args(argv)
    if args.table:
        results = json.loads(Path(args.table).read_text())
        parts = {"": results} if "rows" in results else {k: v for k, v in results.items()
                                                         if isinstance(v, dict) and "rows" in v}
        for name, part in parts.items():
            if name:
                print(f"\n{name} ({part.get('budget_s', '?')} s per row):")
            print(markdown_table(part["rows"]))
        return 0
    if args.worker:
        run_worker(args)
        return 0

    if not args.damsm or not Path(args.damsm).is_file():
        raise SystemExit(f"--damsm: a DAMSM checkpoint is required (got {args.damsm!r}); e.g. runs/demo/damsm.pt "
                         "from make demo, or python -m attnfast.train --stage damsm --config ...")
    rows = parse_rows(args.rows, args.row)
    if not rows:
        raise SystemExit("no rows: pass --rows and/or --row")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(name, seed) for seed in seeds for name in rows]
    pending, running, done = list(jobs), [], {}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    while pending or running:
        while pending and len(running) < args.jobs:
            name, seed = pending.pop(0)
            work = Path(args.work) / f"{name}_s{seed}"
            work.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed), "--work", str(work),
                   "--config", args.config, "--damsm", args.damsm, "--budget-s", str(args.budget_s),
                   "--threads", str(args.threads), "--clock", args.clock, "--overrides", json.dumps(rows[name])]
            if args.steps is not None:
                cmd += ["--steps", str(args.steps)]
            log = open(work / "log.txt", "w")  # noqa: SIM115 - the worker subprocess writes it while it runs
            running.append((name, seed, work, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
            print(f"started {name} seed {seed}", flush=True)
        time.sleep(2)
        for item in list(running):
            name, seed, work, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                print(f"{name} seed {seed}: failed (rc {proc.returncode}), see {work / 'log.txt'}", flush=True)
                continue
            result = json.loads((work / "result.json").read_text())
            row = {"row": name, "seed": seed, "overrides": rows[name], "steps": result["steps"],
                   "train_seconds": round(result["train_seconds"], 1), **summary_of(result["eval"]),
                   "repeat": (f".venv/bin/python bench/ablation.py --config {args.config} --damsm {args.damsm} "
                              f"--steps {result['steps']} "
                              f"--row '{name}={';'.join(rows[name])}' --seeds {seed} --threads {args.threads}")}
            done[(name, seed)] = row
            print(json.dumps(row), flush=True)
    import torch
    from _common import device_info
    results = {"meta": {**device_info(torch.device("cpu")), "config": args.config, "damsm": args.damsm,
                        "budget_s": args.budget_s, "clock": args.clock, "steps": args.steps, "threads_per_row": args.threads,
                        "parallel_rows": args.jobs},
               "rows": [done[j] for j in jobs if j in done]}
    out = Path(args.out)
    if out.is_file():  # keep earlier rows of other names/seeds (a screen, then confirmations)
        old = json.loads(out.read_text())
        keep = [r for r in old.get("rows", []) if (r["row"], r["seed"]) not in done]
        results["rows"] = keep + results["rows"]
        results["meta"]["runs"] = old.get("meta", {}).get("runs", []) + [results["meta"].copy()]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
