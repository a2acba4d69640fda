"""Benchmark of the generator blocks (DESIGN.md §3.3, §7; issue 7).

    python bench/blocks_bench.py [--quick | --gpu-quick] [--full] [--no-compile] [--reps N] [--threads N]
                                 [--results-dir DIR]

Blocks at the generator's sizes: stage 1 upBlocks 512->256 (4x4 in) ... 64->32 (32x32 in) and the
four chained (512 x 4 x 4 -> 32 x 64 x 64); stages 2-3: ResBlock(64) and upBlock(64, 32) at 64x64
and 128x128. Batch 20 and 256 on CUDA; on CPU batch 4 (``--full``: 20) -- these are CPU numbers.
``--gpu-quick``: the headline blocks (stage 2: upBlock(64, 32) and ResBlock(64) at 64x64, batch 20),
short timing, no torch.compile. On CPU the bench also prints the predicted GPU lower bounds of the
headline blocks (``_gpus``: a model from the FLOPs below and the bytes of input, output and weights).

Rows (training mode for fwd and fwd+bwd, eval for infer):
  original   the literal original (backend="reference": upsample -> conv3x3 -> BN -> GLU), eager,
             fp32 (the baseline of the "x orig32" column) and bf16 (module and input in bf16)
  compiled   torch.compile of the original module (``--no-compile`` skips it)
  fast       backend="auto": sub-pixel conv + fused Triton BN/GLU on CUDA, sub-pixel conv + PyTorch
             BN/GLU on CPU; on CUDA also "subpixel" (backend="cuda": sub-pixel, PyTorch BN/GLU)
  fused      fuse_for_inference (BN folded into the conv, sub-pixel; channels_last on CUDA, NCHW
             on CPU; "fused-nchw" / "fused-nhwc" the other layout), eval mode, infer only
Per row: median time, ratio to original fp32 and to original in the same dtype, TFLOP/s of the
original formulation's conv FLOPs (fwd+bwd counts 3x: input and weight gradients) and its
fraction of the large-matmul rate in the row's dtype measured in this run, peak memory (CUDA), and the output's
relative error against original fp32 (a wrong fast path never shows up as only fast).
Results: a table on stdout and JSON in bench/results/blocks_<device kind>.json.
"""
import argparse
import copy
import os
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import itertools

from _common import (
    add_gpu_quick,
    device_info,
    gpu_quick_timing,
    matmul_rate,
    peak_memory,
    predicted_lower_bounds,
    print_table,
    time_fn,
    write_results,
)

from attnfast import ops  # noqa: E402
from attnfast.models.inference import fuse_for_inference  # noqa: E402
from attnfast.ops._dispatch import triton_usable  # noqa: E402

STAGE1 = [("up", 512, 256, 4), ("up", 256, 128, 8), ("up", 128, 64, 16), ("up", 64, 32, 32)]
STAGE23 = [("res", 64, 64, 64), ("up", 64, 32, 64), ("res", 64, 64, 128), ("up", 64, 32, 128)]
CHAIN = ("chain", 512, 32, 4)
QUICK = [("up", 16, 8, 4), ("res", 8, 8, 8), ("chain", 16, 1, 2)]
HEADLINE, HEADLINE_BATCH = [("up", 64, 32, 64), ("res", 64, 64, 64)], 20
PASSES = ("fwd", "fwd+bwd")
INFER = ("infer",) + PASSES   # inference first: the training passes move the running statistics


def build(kind: str, cin: int, cout: int, backend: str) -> nn.Module:
    """The block (fresh random BN affine and running stats so nothing is at its identity)."""
    if kind == "up":
        module = ops.upBlock(cin, cout, backend=backend)
    elif kind == "res":
        module = ops.ResBlock(cin, backend=backend)
    else:
        chans = [cin >> i for i in range(5)]                             # 512, 256, 128, 64, 32
        module = nn.Sequential(*[ops.upBlock(a, b, backend=backend) for a, b in itertools.pairwise(chans)])
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return module


def conv_flops(kind: str, cin: int, cout: int, res: int, batch: int) -> int:
    """Multiply-adds x 2 of the original formulation's convolutions (one forward)."""
    if kind == "up":
        return 2 * batch * (2 * res) ** 2 * cin * 2 * cout * 9
    if kind == "res":
        return 2 * batch * res * res * 9 * (cin * 2 * cin + cin * cin)
    chans = [cin >> i for i in range(5)]
    return sum(conv_flops("up", a, b, res << i, batch) for i, (a, b) in enumerate(itertools.pairwise(chans)))


def predicted_cases() -> list[dict]:
    """The headline blocks for the GPU lower-bound model: the original formulation's conv FLOPs (a
    sub-pixel upBlock needs 2.25x fewer, so its bound is lower still) and the bytes of reading the
    input and the weights and writing the output (fwd+bwd: 3x the FLOPs, the bytes twice plus dx).
    fp32 convolutions run in TF32 on the tensor cores (cuDNN's default), so their rate is "tf32"."""
    cases = []
    for kind, cin, cout, res in HEADLINE:
        out_ch, out_res = (cout, 2 * res) if kind == "up" else (cin, res)
        weights = 2 * cout * cin * 9 if kind == "up" else 3 * cin * cin * 9
        for dtype in (torch.bfloat16, torch.float32):
            es = torch.finfo(dtype).bits // 8
            x = HEADLINE_BATCH * cin * res * res * es
            fwd = x + HEADLINE_BATCH * out_ch * out_res * out_res * es + weights * es
            for pass_name in PASSES:
                flops = conv_flops(kind, cin, cout, res, HEADLINE_BATCH) * (1 if pass_name == "fwd" else 3)
                cases.append({"case": f"{kind} {cin}->{cout if kind == 'up' else cin} {res}x{res} "
                                      f"B{HEADLINE_BATCH} {pass_name}",
                              "dtype": "tf32" if dtype == torch.float32 else "bfloat16",
                              "bytes": fwd if pass_name == "fwd" else 2 * fwd + x, "flops": flops})
    return cases


def _with_backend(module: nn.Module, backend: str) -> nn.Module:
    for m in module.modules():
        if hasattr(m, "backend"):
            m.backend = backend
    return module


def variants(device, use_compile):
    """[(name, dtype, make(module_fp32) -> module, passes)] and notes on what is skipped."""
    notes = []
    table = [("original", torch.float32, lambda m: m, INFER),
             ("original", torch.bfloat16, lambda m: m.to(torch.bfloat16), INFER)]
    if use_compile:
        table.append(("compiled", torch.float32, lambda m: torch.compile(m, dynamic=False), PASSES))
        if device.type == "cuda":
            table.append(("compiled", torch.bfloat16,
                          lambda m: torch.compile(m.to(torch.bfloat16), dynamic=False), PASSES))
    else:
        notes.append("torch.compile: skipped (--no-compile or --quick)")
    for dtype in (torch.float32, torch.bfloat16):
        table.append(("fast", dtype, lambda m, d=dtype: _with_backend(m, "auto").to(d), PASSES))
        if device.type == "cuda":
            table.append(("subpixel", dtype, lambda m, d=dtype: _with_backend(m, "cuda").to(d), PASSES))
        table.append(("fused", dtype, lambda m, d=dtype: fuse_for_inference(m.to(d)), ("infer",)))
    # fuse_for_inference picks channels_last on CUDA, NCHW on CPU: the other layout for comparison
    other = "nchw" if device.type == "cuda" else "nhwc"
    table.append((f"fused-{other}", torch.float32,
                  lambda m: fuse_for_inference(m, channels_last=other == "nhwc"), ("infer",)))
    ok, _why = triton_usable(device)
    notes.append("fast = " + ("sub-pixel conv + fused Triton BN/GLU" if device.type == "cuda" and ok
                              else "sub-pixel conv + PyTorch BN/GLU (CPU: no Triton outside its interpreter)"))
    return table, notes


def runners(make, base_module, x, expected, passes):
    """[(pass, run, rel_err)]: one module per pass (built by ``make`` from a copy of the
    original, its mode fixed), ``run`` one timed call, the output's error against ``expected``."""
    result = []
    for pass_name in passes:
        module = make(copy.deepcopy(base_module))
        module.train(pass_name != "infer")
        params = [p for p in module.parameters() if p.requires_grad]
        xg = x.detach().clone().requires_grad_(pass_name == "fwd+bwd")
        with torch.set_grad_enabled(pass_name == "fwd+bwd"):
            out = module(xg)
        ref = expected["infer" if pass_name == "infer" else "train"]
        err = ((out.detach().float() - ref).norm() / ref.norm()).item()
        if pass_name == "fwd+bwd":
            grad = torch.randn_like(out)

            def run(module=module, params=params, xg=xg, grad=grad):
                return torch.autograd.grad(module(xg), [xg] + params, grad)
        else:
            def run(module=module):
                with torch.no_grad():
                    return module(x)
        result.append((pass_name, run, err))
    return result


def time_all(runs, device, args) -> list[float]:
    """Median seconds of each run. CUDA: do_bench per run. CPU: the runs take turns, one call
    each per round (rotating the order), so that load from other processes hits all alike."""
    if device.type == "cuda":
        return [time_fn(run, device, warmup=args.warmup, reps=args.reps) for run in runs]
    for run in runs:
        for _ in range(args.warmup):
            run()
    samples = [[] for _ in runs]
    for rnd in range(args.reps):
        for i in [(rnd + j) % len(runs) for j in range(len(runs))]:
            samples[i].append(time_fn(runs[i], device, warmup=0, reps=1))
    return [statistics.median(t) for t in samples]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repetitions (seconds)")
    parser.add_argument("--full", action="store_true", help="batch 20 on CPU too")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions on CPU")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); 1 is steadier on a shared machine, "
                             "where an OpenMP barrier waits for a descheduled thread")
    add_gpu_quick(parser)
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    if args.gpu_quick:
        gpu_quick_timing()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.warmup = 0 if args.smoke else 1 if args.quick else 2
    args.reps = args.reps or (1 if args.smoke else 2 if args.quick else 5)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meta = device_info(device)
    if args.smoke:
        cases, batches = QUICK[:1], (2,)
    elif args.quick:
        cases, batches = QUICK, (2,)
    elif args.gpu_quick:
        cases, batches = HEADLINE, (HEADLINE_BATCH,)
    elif device.type == "cuda":
        cases, batches = STAGE1 + [CHAIN] + STAGE23, (20, 256)
    else:
        cases, batches = STAGE1 + [CHAIN] + STAGE23, ((20,) if args.full else (4,))
    print(f"blocks bench on {meta['device']} (torch {meta['torch']}, triton {meta['triton']}, "
          f"commit {meta['git_commit']}, {meta['date']})")
    if device.type != "cuda":
        print("No CUDA device: running the CPU paths only; these are CPU numbers.")
    # per dtype, best of two tries (a matmul slowed by other processes would flatter every fraction)
    mm_rates = {dtype: max(matmul_rate(device, dtype, 512 if args.quick else None) for _ in range(1 if args.smoke else 2))
                for dtype in (torch.float32, torch.bfloat16)}
    print("measured now: matmul " + ", ".join(f"{str(d).split('.')[-1]} {r / 1e12:.3f} TFLOP/s"
                                               for d, r in mm_rates.items()))
    if hasattr(torch._dynamo.config, "recompile_limit"):     # one compiled module per size and pass
        torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.cache_size_limit = 256
    table, notes = variants(device, use_compile=not (args.no_compile or args.quick or args.gpu_quick))
    for note in notes:
        print("  " + note)

    rows = []
    for batch in batches:
        for kind, cin, cout, res in cases:
            label = f"{kind} {cin}->{cout} {res}x{res} B{batch}"
            torch.manual_seed(0)
            base_module = build(kind, cin, cout, "reference").to(device)
            x = torch.randn(batch, cin, res, res, device=device)
            with torch.no_grad():
                expected = {"train": base_module.train()(x).float(),
                            "infer": base_module.eval()(x).float()}
            flops = conv_flops(kind, cin, cout, res, batch)
            prepared = []                                   # (variant, dtype, pass, run, err)
            for name, dtype, make, passes in table:
                dname = str(dtype).split(".")[-1]
                try:
                    for pass_name, run, err in runners(make, base_module, x.to(dtype), expected, passes):
                        prepared.append((name, dtype, pass_name, run, err))
                except Exception as exc:  # noqa: BLE001 - a variant that cannot run here is reported, not fatal
                    print(f"  {label} {name} {dname}: failed ({exc.__class__.__name__}: {str(exc)[:200]})")
            seconds = time_all([p[3] for p in prepared], device, args)
            peaks = [peak_memory(p[3], device) for p in prepared]
            base = {(p[2], p[1]): t for p, t in zip(prepared, seconds, strict=True) if p[0] == "original"}
            for (name, dtype, pass_name, _, err), sec, peak in zip(prepared, seconds, peaks, strict=True):
                pass_flops = flops * (3 if pass_name == "fwd+bwd" else 1)
                rows.append({
                    "size": label, "variant": name, "dtype": str(dtype).split(".")[-1],
                    "pass": pass_name, "ms": sec * 1e3,
                    "x_orig32": base[(pass_name, torch.float32)] / sec if (pass_name, torch.float32) in base else None,
                    "x_orig_same": base[(pass_name, dtype)] / sec if (pass_name, dtype) in base else None,
                    "tflops": pass_flops / sec / 1e12, "frac_matmul": pass_flops / sec / mm_rates[dtype],
                    "peak_mb": None if peak is None else peak / 2**20, "rel_err": err,
                    "flops": pass_flops,
                })
            del prepared
    print_table(rows, [("size", "size", ""), ("variant", "variant", ""), ("dtype", "dtype", ""),
                       ("pass", "pass", ""), ("ms", "ms", ".3f"), ("x_orig32", "x orig32", ".2f"),
                       ("x_orig_same", "x orig", ".2f"), ("tflops", "TFLOP/s", ".3f"),
                       ("frac_matmul", "of matmul", ".1%"), ("peak_mb", "peak MB", ".1f"),
                       ("rel_err", "rel err", ".1e")])
    predicted = predicted_lower_bounds(predicted_cases(), device)
    meta.update({"matmul_flop_per_s": {str(d): r for d, r in mm_rates.items()},
                 "torch_threads": torch.get_num_threads(), "quick": args.quick, "gpu_quick": args.gpu_quick,
                 "predicted_gpu_lower_bounds": predicted,
                 "batches": list(batches), "notes": notes,
                 "flops": "conv FLOPs of the original formulation; fwd+bwd = 3x fwd",
                 "timing": "triton.testing.do_bench median" if device.type == "cuda"
                 else f"median of {args.reps} rounds (every variant of a size once per round, "
                 f"rotating order) after {args.warmup} warm-up calls each"})
    path = write_results("blocks" + ("_quick" if args.quick else ""), rows, meta, args.results_dir)
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
