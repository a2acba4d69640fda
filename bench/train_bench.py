"""Benchmark of the GAN training step (DESIGN.md §7; issue 8).

    python bench/train_bench.py [--quick | --gpu-quick] [--steps N] [--results-dir DIR]

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model on the CPU in seconds")
    parser.add_argument("--models", nargs="*", default=None, help=f"subset of {sorted(MODELS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    add_gpu_quick(parser)
    args = parser.parse_args(argv)
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
