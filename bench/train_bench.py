"""Benchmark of the GAN training step (DESIGN.md §7; issue 8).

    python bench/train_bench.py [--quick | --gpu-quick] [--steps N] [--results-dir DIR]
    python bench/train_bench.py --config training/configs/shapes_demo.yaml [--baseline REV] [--rounds N]
                                [--steps K] [--threads T] [--max-minutes M] [--name NAME]

Images per second of one AttnGAN iteration (G forward, every D's update, G's update, EMA) for:
  original   fp32, eager, the ops' pure-PyTorch reference backend, text re-encoded every step (the
             baseline of the "x orig" column)
  amp        + bf16 autocast
  graphs     + the D and G steps captured as CUDA graphs (CUDA only)
  compile    + torch.compile of G, D and the image encoder (inductor)
  fused      + the fused ops (backend auto: Triton / the C++/CUDA extension)
  cache      + the per-caption text feature cache
  channels_last  + NHWC weights and images (the flag is off by default: this row decides)
  all        everything together (+ channels_last on CUDA)
Models: "birds" (the original's CUB setup: 3 stages to 256x256, gf 32, df 64, E 256, batch 20; the
small image encoder stands in for Inception) and "shapes128" (2 stages to 128x128, batch 20);
``--quick`` runs a tiny 2-stage model at batch 4 in seconds (the CPU run committed); ``--gpu-quick``
the birds model only, 5 steps x 3 runs, without the torch.compile variants (inductor would compile
the GAN for minutes: "all" is then everything but compile). Per row:
images/s, ms per step, the speed-up over "original", model FLOPs per step (FlopCounterMode, one
eager fp32 step) and MFU against the bf16 matmul rate measured in the same run (fp32 on the CPU),
peak memory (CUDA). The step runs on one fixed batch (no data loading: the trainer's step only).
``--config YAML`` (issue 27) is another mode: that config's GAN and DAMSM steps as ``python -m
attnfast.train --config YAML`` runs them by default (data loading included), this tree against the
code of git revision ``--baseline`` (default: the commit before issue 27), side by side; see
:func:`side_by_side`. Results: bench/results/train_demo_<device kind>.json.

Timing: ``--steps`` steps after warm-up (which includes compilation / capture), synchronised, median
of 5 such runs (on the CPU the variants' runs interleaved round by round). Results: a table and bench/results/train_<device kind>.json (``meta.quick`` says
which mode wrote it).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_gpu_quick, backend_env, device_info, matmul_rate, peak_memory, print_table, write_results

from attnfast.config import load_config  # noqa: E402
from attnfast.trainer.damsm import train_damsm  # noqa: E402
from attnfast.trainer.gan import GANTrainer  # noqa: E402
from attnfast.trainer.speed import SpeedOptions  # noqa: E402

MODELS = {
    "birds": ["model.branch_num=3", "model.gf_dim=32", "model.df_dim=64", "model.embedding_dim=256",
              "model.word_dim=300", "model.z_dim=100", "model.condition_dim=100", "model.r_num=2",
              "gan.batch_size=20", "dataset.train_size=40"],
    "shapes128": ["model.branch_num=2", "gan.batch_size=20", "dataset.train_size=40"],
    "quick": ["model.branch_num=2", "model.gf_dim=4", "model.df_dim=4", "model.embedding_dim=32",
              "model.word_dim=16", "model.z_dim=8", "model.condition_dim=8", "model.r_num=1",
              "model.small_encoder_width=8", "gan.batch_size=4", "dataset.train_size=8"],
}
COMMON = ["dataset.test_size=8", "damsm.batch_size=4", "train.log_every=1000000",
          "train.checkpoint_every=1000000", "train.sample_every=1000000"]


def variants(device: torch.device, quick: bool, gpu_quick: bool = False):
    """[(name, amp, backend, SpeedOptions)] and notes on what is skipped."""
    cuda = device.type == "cuda"
    compile_ok = (cuda or not quick) and not gpu_quick
    amp = "bf16"
    rows = [("original", "off", "reference", SpeedOptions(text_cache_mb=0)),
            ("amp", amp, "reference", SpeedOptions(text_cache_mb=0))]
    notes = []
    if cuda:
        rows.append(("graphs", "off", "reference", SpeedOptions(text_cache_mb=0, graphs=True)))
    else:
        notes.append("graphs: skipped (CUDA graphs need a CUDA device)")
    if compile_ok:
        rows.append(("compile", "off", "reference", SpeedOptions(text_cache_mb=0, compile=True)))
    else:
        notes.append("compile: skipped in --quick / --gpu-quick (inductor compiles the GAN for minutes)")
    rows += [("fused", "off", "auto", SpeedOptions(text_cache_mb=0)),
             ("cache", "off", "reference", SpeedOptions()),
             ("channels_last", "off", "reference", SpeedOptions(text_cache_mb=0, channels_last=True))]
    all_opts = SpeedOptions(graphs=cuda, compile=compile_ok, channels_last=cuda or None)
    rows.append(("all", amp, "auto", all_opts))
    return rows, notes


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_run(trainer, batch, device, steps: int) -> float:
    """Seconds per step of ``steps`` synchronised steps."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batch)
    _sync(device)
    return (time.perf_counter() - start) / steps


def step_flops(trainer, batch) -> int:
    """Model FLOPs of one eager step (matmuls and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.eager_step(batch)
    return counter.get_total_flops()


def bench_model(name, device, args, mm_rate, damsm_dir):
    """Rows of one model. On CUDA the variants run one after the other (one trainer in memory at a
    time); on the CPU, whose cores the benches share with other work, all trainers are built first
    and timed in interleaved rounds, so that a slow spell of the machine hits every variant alike."""
    config = load_config(None, MODELS[name] + COMMON)
    damsm = os.path.join(damsm_dir, name)
    train_damsm(config, damsm, device, steps=1, progress=False)
    damsm_path = os.path.join(damsm, "damsm.pt")
    table, notes = variants(device, args.quick, args.gpu_quick)
    if args.smoke:                    # the baseline and everything at once: enough to test the plumbing
        table = [row for row in table if row[0] in ("original", "all")]
    interleave = device.type != "cuda"
    torch._dynamo.reset()
    live, batch, flops = [], None, None
    for variant, amp, backend, speed in table:
        with backend_env(backend):
            torch.manual_seed(0)
            out = tempfile.mkdtemp(prefix=f"train_bench_{name}_{variant}_")
            try:
                trainer = GANTrainer(config, out, device, damsm_path, amp, speed=speed)
                if batch is None:
                    batch = next(trainer.batches())
                    flops = step_flops(trainer, batch)
                for _ in range(args.warmup):       # includes compilation / graph capture
                    trainer.train_step(batch)
                entry = {"variant": variant, "amp": amp, "backend": backend, "trainer": trainer, "runs": []}
                if not interleave:
                    entry["runs"] = [time_run(trainer, batch, device, args.steps) for _ in range(args.runs)]
                    entry["peak"] = peak_memory(partial(trainer.train_step, batch), device)
                    entry["trainer"] = _summary(trainer)
                    del trainer
            except Exception as exc:  # noqa: BLE001 - a variant that cannot run here is reported, not fatal
                print(f"  {name} {variant}: failed ({exc.__class__.__name__}: {str(exc)[:300]})")
                continue
        live.append(entry)
    for _ in range(args.runs if interleave else 0):
        for entry in live:
            with backend_env(entry["backend"]):
                entry["runs"].append(time_run(entry["trainer"], batch, device, args.steps))
    rows, base = [], None
    size = batch["captions"].shape[0]
    for entry in live:
        seconds = statistics.median(entry["runs"])
        summary = entry["trainer"] if isinstance(entry["trainer"], dict) else _summary(entry["trainer"])
        if entry["variant"] == "original":
            base = seconds
        rows.append({"model": name, "variant": entry["variant"], "amp": entry["amp"], "backend": entry["backend"],
                     "batch": size, "resolution": max(img.shape[-1] for img in batch["images"]),
                     "images_per_s": size / seconds, "ms_per_step": seconds * 1e3,
                     "x_original": base / seconds if base else None,
                     "gflop_per_step": flops / 1e9, "mfu": flops / seconds / mm_rate,
                     "peak_mb": None if entry.get("peak") is None else entry["peak"] / 2**20, **summary})
    return rows, notes


def _summary(trainer) -> dict:
    trainer.flush_checks()
    return {"graphs_captured": bool(getattr(trainer.graphed, "graphs", None)),
            "text_cache": trainer.text_cache is not None}


BASELINE_REV = "0aa2913"          # main before issue 27: fp32 by default, the code before its changes


# csrc files where later entry points may be added (their declarations and bindings); every other
# file the baseline has must be unchanged, so the baseline's kernels are exactly its own.
_ADDITIVE_FILES = ("csrc/ops.h", "csrc/bindings.cpp")


def _extension_superset(root: str, rev: str) -> str:
    """'' when this tree's csrc/ is the baseline's plus new files and added lines in the entry-point
    files only (every baseline kernel byte for byte the same), else why not."""
    import subprocess
    stat = subprocess.run(["git", "-C", root, "diff", "--numstat", "--diff-filter=AMDR", rev, "--", "csrc"],
                          capture_output=True, text=True, check=True).stdout
    status = dict(line.split("\t")[::-1] for line in subprocess.run(
        ["git", "-C", root, "diff", "--name-status", rev, "--", "csrc"],
        capture_output=True, text=True, check=True).stdout.splitlines())
    for line in stat.splitlines():
        added, deleted, path = line.split("\t")
        if status.get(path) == "A":
            continue
        if path not in _ADDITIVE_FILES or deleted != "0":
            return f"{path}: {added} lines added, {deleted} removed"
    return ""


def _extract_tree(rev: str, dest: str) -> str:
    """The ``attnfast`` package of git revision ``rev`` under ``dest`` (plus this tree's built C++
    extension, which stands in for the baseline's: see :func:`_extension_superset`); returns ``dest``
    for PYTHONPATH."""
    import glob
    import shutil
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    why = _extension_superset(root, rev)
    if why:
        raise RuntimeError(f"csrc/ differs from {rev}: this tree's built extension cannot stand in for its ({why})")
    archive = subprocess.run(["git", "-C", root, "archive", rev, "attnfast"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive.stdout, check=True)
    for lib in glob.glob(os.path.join(root, "attnfast", "_C*.so")):
        shutil.copy(lib, os.path.join(dest, "attnfast"))
    return dest


class _Worker:
    """A :mod:`_train_step_worker` process of one tree and stage, answering JSON requests."""

    def __init__(self, tree: str, stage: str, config: str, out: str, damsm: str | None, sets: list[str],
                 warmup: int, threads: int | None = None):
        import subprocess
        env = {**os.environ, "PYTHONPATH": tree}
        cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "_train_step_worker.py"),
               "--stage", stage, "--config", config, "--out", out, "--warmup", str(warmup)]
        cmd += ["--damsm", damsm] if damsm else []
        cmd += ["--threads", str(threads)] if threads else []
        for item in sets:
            cmd += ["--set", item]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=tree)
        self._read()                                                      # {"ready": true}

    def _read(self) -> dict:
        import json
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.args} ended (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, **request) -> dict:
        import json
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.ask(cmd="quit")
        except (RuntimeError, BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=60)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def side_by_side(args) -> tuple[list[dict], dict]:
    """The config's GAN and DAMSM steps, this tree ("new") against ``args.baseline`` ("before"),
    each with its own ``python -m attnfast.train`` defaults (the baseline: fp32; this tree: bf16
    autocast where native, ...), in persistent worker processes (same environment, same threads).

    Rounds: every (stage, batch, tree) worker times ``args.steps`` steps in turn, one worker at a
    time, the trees' order alternating from round to round, so that the load of a shared machine
    falls on both alike; per worker the median over rounds. Also: ms per part of a step (one
    ``parts`` run per worker after the timed rounds), GFLOP per step, MFU against fp32 and bf16
    matmul rates measured in this run (before and after), and the fixed per-step cost from the GAN
    step at two batch sizes (t = fixed + per_image * B).
    """
    import tempfile
    device = torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)        # the matmul rates at the workers' thread count
    config_path = os.path.abspath(args.config)
    rates = {"fp32": [matmul_rate(device, torch.float32)], "bf16": [matmul_rate(device, torch.bfloat16)]}
    load = [_load_average()]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="train_demo_bench_") as tmp:
        trees = {"before": args.baseline_tree or _extract_tree(args.baseline, tempfile.mkdtemp(dir=tmp)),
                 "new": root}
        config = load_config(config_path, [])
        # the frozen encoders of the GAN step: a DAMSM checkpoint of this config (quality is irrelevant
        # to speed), written by this tree (the checkpoint format is the same in both)
        damsm_dir = os.path.join(tmp, "damsm")
        train_damsm(load_config(config_path, ["damsm.steps=1"]), damsm_dir, device, steps=1, progress=False)
        damsm = os.path.join(damsm_dir, "damsm.pt")
        gan_batch = int(config["gan"]["batch_size"])
        small = max(2, gan_batch // 2)
        specs = [("gan", gan_batch), ("damsm", int(config["damsm"]["batch_size"]))]
        if not args.smoke:
            specs.append(("gan", small))
        workers = {}
        for stage, batch in specs:
            for tree in ("before", "new"):
                sets = [f"{stage}.batch_size={batch}"]
                out = os.path.join(tmp, f"{stage}{batch}_{tree}")
                workers[(stage, batch, tree)] = _Worker(trees[tree], stage, config_path, out,
                                                        damsm if stage == "gan" else None, sets, args.warmup,
                                                        args.threads)
        info = {key: w.ask(cmd="info") for key, w in workers.items()}
        times = {key: [] for key in workers}
        started = time.perf_counter()
        for r in range(args.runs):
            if args.max_minutes and r >= 2 and time.perf_counter() - started > 60 * args.max_minutes:
                print(f"  --max-minutes {args.max_minutes}: stopping after {r} rounds", flush=True)
                break
            order = ("before", "new") if r % 2 == 0 else ("new", "before")
            for stage, batch in specs:
                for tree in order:
                    key = (stage, batch, tree)
                    times[key].append(workers[key].ask(cmd="time", steps=args.steps)["seconds"] / args.steps)
            load.append(_load_average())
            print(f"  round {r + 1}/{args.runs}: " + ", ".join(
                f"{s}{b} {t} {times[(s, b, t)][-1] * 1e3:.0f} ms" for s, b in specs for t in ("before", "new"))
                + f" (load {load[-1]})", flush=True)
        default_batch = {"gan": gan_batch, "damsm": int(config["damsm"]["batch_size"])}
        parts = {key: w.ask(cmd="parts", steps=args.steps) for key, w in workers.items()
                 if key[1] == default_batch[key[0]]}
        flops = {key: w.ask(cmd="flops")["flops"] for key, w in workers.items()}
        for w in workers.values():
            w.close()
    rates["fp32"].append(matmul_rate(device, torch.float32))
    rates["bf16"].append(matmul_rate(device, torch.bfloat16))
    rate = {k: statistics.median(v) for k, v in rates.items()}
    rows = []
    for (stage, batch, tree), runs in times.items():
        seconds = statistics.median(runs)
        other = statistics.median(times[(stage, batch, "before")])
        rows.append({"stage": stage, "tree": tree, "amp": info[(stage, batch, tree)]["amp"], "batch": batch,
                     "ms_per_step": seconds * 1e3, "steps_per_s": 1.0 / seconds,
                     "ms_per_step_runs": [t * 1e3 for t in runs],
                     "x_before": other / seconds, "gflop_per_step": flops[(stage, batch, tree)] / 1e9,
                     "mfu_fp32_rate": flops[(stage, batch, tree)] / seconds / rate["fp32"],
                     "mfu_bf16_rate": flops[(stage, batch, tree)] / seconds / rate["bf16"],
                     "parts_ms": parts.get((stage, batch, tree), {}).get("parts_ms")})
    # the same ratio from each round's pair (robust to a slow spell spanning a whole round)
    for row in rows:
        key = (row["stage"], row["batch"])
        pairs = [b / n for b, n in zip(times[(*key, "before")], times[(*key, "new")], strict=True)]
        row["x_before_median_of_round_ratios"] = statistics.median(pairs) if row["tree"] == "new" else 1.0
    fixed = {}
    if not args.smoke:
        for tree in ("before", "new"):
            big = statistics.median(times[("gan", gan_batch, tree)])
            little = statistics.median(times[("gan", small, tree)])
            per_image = (big - little) / (gan_batch - small)
            fixed[tree] = {"fixed_ms_per_step": (big - per_image * gan_batch) * 1e3, "ms_per_image": per_image * 1e3,
                           "batches": [small, gan_batch]}
    meta = {"config": os.path.relpath(config_path, root), "baseline": args.baseline_tree or args.baseline,
            "trees": {"before": args.baseline_tree or f"git {args.baseline} (attnfast/ extracted)", "new": "this tree"},
            "workers": {f"{s}{b}_{t}": v for (s, b, t), v in info.items()},
            "matmul_flop_per_s": {k: v for k, v in rates.items()}, "matmul_flop_per_s_median": rate,
            "fixed_cost_gan": fixed, "load_average_by_round": load, "timed_steps": args.steps,
            "rounds": len(next(iter(times.values()))), "warmup_steps": args.warmup, "threads": torch.get_num_threads(),
            "timing": "each worker process (one per stage, batch size and tree; torch's default threads) "
                      "times `timed_steps` steps of next(batches) + train_step per round, one worker at a "
                      "time, the trees' order alternating by round; ms_per_step is the median over rounds, "
                      "x_before the ratio of the medians (before / new)"}
    return rows, meta


def main_side_by_side(args) -> list[dict]:
    device = torch.device("cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = device_info(device)
    print(f"train bench, side by side on {meta['device']} (torch {meta['torch']}, commit {meta['git_commit']}, "
          f"{meta['date']}): {args.config}, this tree vs {args.baseline_tree or args.baseline}")
    rows, extra = side_by_side(args)
    meta.update(extra)
    meta["load_note"] = args.load_note or (
        "the machine's cores were shared with other jobs during the run (load_average_by_round: "
        "1/5/15-minute load averages after each round); both trees saw the same load, interleaved")
    print_table(rows, [("stage", "stage", ""), ("tree", "tree", ""), ("amp", "amp", ""), ("batch", "B", ""),
                       ("ms_per_step", "ms/step", ".1f"), ("steps_per_s", "steps/s", ".2f"),
                       ("x_before", "x before", ".2f"), ("gflop_per_step", "GFLOP/step", ".2f"),
                       ("mfu_fp32_rate", "MFU fp32", ".1%"), ("mfu_bf16_rate", "MFU bf16", ".1%")])
    for tree, cost in extra["fixed_cost_gan"].items():
        print(f"  fixed GAN cost per step ({tree}): {cost['fixed_ms_per_step']:.1f} ms + "
              f"{cost['ms_per_image']:.1f} ms per image")
    path = write_results(args.name, rows, meta, args.results_dir)
    print(f"results: {path}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model on the CPU in seconds")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {sorted(MODELS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    parser.add_argument("--config", default=None,
                        help="side by side: this config's default GAN and DAMSM steps, this tree vs --baseline")
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision of the --config comparison")
    parser.add_argument("--baseline-tree", default=None,
                        help="a directory holding the baseline's attnfast/ package (instead of --baseline)")
    parser.add_argument("--rounds", type=int, default=None, help="--config: interleaved rounds (default 10)")
    parser.add_argument("--load-note", default=None, help="--config: the machine's load, said in the JSON")
    parser.add_argument("--threads", type=int, default=None,
                        help="--config: torch threads of the workers (default: torch's, as the trainers)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="--config: start no round after this many minutes (at least 2 rounds)")
    parser.add_argument("--name", default="train_demo", help="--config: results file <name>_<device>.json")
    add_gpu_quick(parser)
    args = parser.parse_args(argv)
    if args.config:
        args.steps = args.steps or (1 if args.smoke else 5)
        args.runs = args.rounds or (1 if args.smoke else 10)
        args.warmup = 1 if args.smoke else 3
        return main_side_by_side(args)
    args.quick = args.quick or args.smoke
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.steps = args.steps or (1 if args.smoke else 3 if args.quick else 5 if args.gpu_quick else 10)
    args.runs = 1 if args.smoke else 3 if args.gpu_quick else 5
    args.warmup = 5 if device.type == "cuda" else 1          # graphs: 3 warm-up steps, capture, replay
    models = args.models or (["quick"] if args.quick else ["birds"] if args.gpu_quick else ["birds", "shapes128"])
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {sorted(MODELS)}")
    meta = device_info(device)
    print(f"train bench on {meta['device']} (torch {meta['torch']}, commit {meta['git_commit']}, {meta['date']})")
    if device.type != "cuda":
        print("No CUDA device: CPU numbers; the GPU-only variants are skipped.")
    mm_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    mm_rate = matmul_rate(device, mm_dtype, 512 if args.quick else None)
    print(f"measured now: {str(mm_dtype).split('.')[-1]} matmul {mm_rate / 1e12:.3f} TFLOP/s")
    rows, notes = [], []
    with tempfile.TemporaryDirectory() as damsm_dir:
        for name in models:
            model_rows, notes = bench_model(name, device, args, mm_rate, damsm_dir)
            rows += model_rows
    for note in notes:
        print("  " + note)
    print_table(rows, [("model", "model", ""), ("variant", "variant", ""), ("batch", "B", ""),
                       ("resolution", "res", ""), ("images_per_s", "img/s", ".1f"),
                       ("ms_per_step", "ms/step", ".1f"), ("x_original", "x orig", ".2f"),
                       ("gflop_per_step", "GFLOP/step", ".2f"), ("mfu", "MFU", ".1%"),
                       ("peak_mb", "peak MB", ".0f")])
    meta.update({"matmul_flop_per_s": mm_rate, "matmul_dtype": str(mm_dtype), "quick": args.quick,
                 "gpu_quick": args.gpu_quick, "smoke": args.smoke,
                 "notes": notes, "timed_steps": args.steps, "warmup_steps": args.warmup, "runs": args.runs,
                 "timing": "median of `runs` runs of timed_steps synchronised steps (perf_counter), one fixed "
                           "batch; CPU: the variants' runs interleaved round by round"})
    path = write_results("train", rows, meta, args.results_dir)
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
