"""Benchmark of the DAMSM word loss (DESIGN.md §3.2, §7; issue 6).

    python bench/damsm_bench.py [--quick | --gpu-quick] [--full] [--no-compile] [--reps N] [--results-dir DIR]

The full word loss ``words_loss(img_features, words_emb, labels, cap_lens, class_ids, B)`` -> loss0,
loss1 (and the matched attention maps), forward and forward+backward (loss0 + loss1 to both
inputs), on one device in one run:
  original     the original per-sentence Python loop (reference.words_loss_original), fp32: the
               baseline of "x orig"
  vectorised   the all-pairs reference (ops.words_loss backend="reference"), eager: "x vec"
  compiled     torch.compile of reference.words_loss (reported as failed where inductor cannot
               build, e.g. no C++ compiler)
  triton       the fused Triton kernels (CUDA only: on CPU Triton runs only in its interpreter)
  cpu / cuda   the C++/CUDA extension, where attnfast._C is built
fp32 everywhere; on CUDA also bf16 for the vectorised, triton and cuda backends.

FLOP count (algorithmic, no recomputation): per (image, sentence) pair the forward makes two
R x T x D products (scores V^T E and context V A^T): 4 * R * T * D, so 4 * B^2 * R * T * D in all
(T = the padded 18 words, whatever the caption lengths). The backward adds four (dA = V^T dC,
dV += dC A^T, dV += E dS^T, dE += V dS): forward+backward = 12 * B^2 * R * T * D. Softmax, cosine
and the cross-entropies are O(B^2 * R * T) and not counted. "TFLOP/s" divides that count by the
time, "of mm" by the matmul rate measured in the same run (bf16 on CUDA, fp32 sgemm on CPU).
Also reported: peak memory (CUDA) and the relative error of loss0 + loss1 against float64 on the
same draws (bf16 rows include the rounding of the inputs to bf16).
Sizes: D = 256, R = 289 (17 x 17), T = 18 with random caption lengths in [1, 18], B in
{48, 64, 256} on CUDA; B = 48 on CPU (--full adds 64); --quick runs a tiny size in seconds;
--gpu-quick the headline size B = 48 with short timing. On CPU it also prints the predicted GPU
lower bound of the headline size (``_gpus``: a model, FLOPs at the peak rate or bytes at the copy
bandwidth, whichever is longer).
Results: a table on stdout and JSON in bench/results/damsm_<device kind>.json.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    add_gpu_quick,
    copy_bandwidth,
    device_info,
    gpu_quick_timing,
    matmul_rate,
    peak_memory,
    predicted_lower_bounds,
    print_table,
    time_fn,
    write_results,
)

from attnfast import ops, reference  # noqa: E402
from attnfast.ops._dispatch import extension_usable, triton_usable  # noqa: E402

DIM, SIDE, NUM_WORDS = 256, 17, 18
SIZES_GPU = [(b, DIM, SIDE, NUM_WORDS) for b in (48, 64, 256)]
SIZES_CPU = [(48, DIM, SIDE, NUM_WORDS)]
SIZES_CPU_FULL = [(b, DIM, SIDE, NUM_WORDS) for b in (48, 64)]
SIZES_QUICK = [(4, 32, 5, 6)]
PASSES = ("fwd", "fwd+bwd")


def make_inputs(size, dtype, device):
    """img_features (B, D, H, W), words_emb (B, D, T) in ``dtype``, labels, cap_lens in [1, T]
    (with 1 and T present), class_ids with repeats (some pairs masked), B."""
    batch, dim, side, num_words = size
    img = torch.randn(batch, dim, side, side, device=device).to(dtype)
    words = torch.randn(batch, dim, num_words, device=device).to(dtype)
    lens = torch.randint(1, num_words + 1, (batch,), device=device)
    lens[0], lens[-1] = num_words, 1
    class_ids = torch.randint(0, max(2, batch // 2), (batch,)).tolist()
    return img, words, torch.arange(batch, device=device), lens, class_ids, batch


def flops(size, pass_name) -> int:
    batch, dim, side, num_words = size
    per_product = 2 * side * side * num_words * dim * batch * batch
    return (2 if pass_name == "fwd" else 6) * per_product


def _op(backend):
    return lambda *args: ops.words_loss(*args, backend=backend)


def predicted_cases() -> list[dict]:
    """The headline size (B = 48) for the GPU lower-bound model: its FLOP count and the bytes a
    perfect fused kernel moves (read regions and words, write the (B, B) scores; backward adds
    reading them again and writing both gradients)."""
    batch, dim, side, num_words = SIZES_GPU[0]
    cases = []
    for dtype in (torch.bfloat16, torch.float32):
        es = torch.finfo(dtype).bits // 8
        inputs = batch * dim * (side * side + num_words) * es
        for pass_name in PASSES:
            nbytes = inputs + batch * batch * 4 if pass_name == "fwd" else 3 * inputs + 2 * batch * batch * 4
            cases.append({"case": f"DAMSM words_loss B{batch} D{dim} R{side * side} T{num_words} {pass_name}",
                          "dtype": str(dtype).split(".")[-1], "bytes": nbytes, "flops": flops(SIZES_GPU[0], pass_name)})
    return cases


def backends(device, use_compile):
    """[(name, dtype, fn)] for ``device``, and lines saying what is skipped and why."""
    dtypes = (torch.float32, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    notes = [] if device.type == "cuda" else ["bf16: skipped on CPU (slow CPU bf16 paths)"]
    table = [("original", torch.float32, reference.words_loss_original)]
    table += [("vectorised", dtype, _op("reference")) for dtype in dtypes]
    if use_compile:
        compiled = torch.compile(reference.words_loss, dynamic=False)
        table.append(("compiled", torch.float32, compiled))
    else:
        notes.append("torch.compile: skipped (--no-compile or --quick)")
    ok, why = triton_usable(device)
    if device.type == "cuda" and ok:
        table += [("triton", dtype, _op("triton")) for dtype in dtypes]
    else:
        notes.append("triton: skipped (" + (why or "CPU tensors run Triton only in its interpreter") + ")")
    ok, why = extension_usable(device)
    if ok:
        table += [(device.type, dtype, _op(device.type)) for dtype in dtypes]
    else:
        notes.append(f"{device.type} extension: skipped ({why})")
    return table, notes


def bench_one(fn, size, dtype, device, args, expected):
    """{pass: (seconds, peak bytes)} and the relative error of loss0 + loss1 against ``expected``."""
    img, words, labels, lens, class_ids, batch = make_inputs(size, dtype, device)

    def forward():
        with torch.no_grad():
            return fn(img, words, labels, lens, class_ids, batch)[:2]

    img_g, words_g = img.clone().requires_grad_(True), words.clone().requires_grad_(True)

    def forward_backward():
        loss0, loss1, _ = fn(img_g, words_g, labels, lens, class_ids, batch)
        return torch.autograd.grad(loss0 + loss1, (img_g, words_g))

    loss = sum(forward()).double()
    err = ((loss - expected).abs() / expected.abs()).item()
    result = {}
    for pass_name, run in zip(PASSES, (forward, forward_backward), strict=True):
        seconds = time_fn(run, device, warmup=args.warmup, reps=args.reps)
        result[pass_name] = (seconds, peak_memory(run, device))
    return result, err


def reference_loss(size, device) -> torch.Tensor:
    """loss0 + loss1 in float64 on the same (seeded) inputs the backends see."""
    torch.manual_seed(size[0])
    img, words, labels, lens, class_ids, batch = make_inputs(size, torch.float32, device)
    loss0, loss1, _ = reference.words_loss(img.double(), words.double(), labels, lens, class_ids, batch)
    return (loss0 + loss1).detach()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny size, few repetitions (seconds)")
    parser.add_argument("--full", action="store_true", help="also B = 64 on CPU")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile backend")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions on CPU")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    add_gpu_quick(parser)
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    args.warmup = 0 if args.smoke else 1 if args.quick else 2
    if args.gpu_quick:
        gpu_quick_timing()
    args.reps = args.reps or (1 if args.smoke else 3 if args.quick else 7)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meta = device_info(device)
    if args.quick:
        sizes = SIZES_QUICK
    elif args.gpu_quick:
        sizes = SIZES_GPU[:1]
    elif device.type == "cuda":
        sizes = SIZES_GPU
    else:
        sizes = SIZES_CPU_FULL if args.full else SIZES_CPU
    print(f"damsm bench on {meta['device']} (torch {meta['torch']}, triton {meta['triton']}, "
          f"commit {meta['git_commit']}, {meta['date']})")
    if device.type != "cuda":
        print("No CUDA device: running the CPU backends only; these are CPU numbers.")
    copy_bw = copy_bandwidth(device, 64 << 20 if args.quick else None)
    mm_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    mm_rate = matmul_rate(device, mm_dtype, 512 if args.quick else None)
    print(f"measured now: copy bandwidth {copy_bw / 1e9:.1f} GB/s (read + write), "
          f"{str(mm_dtype).split('.')[-1]} matmul {mm_rate / 1e12:.3f} TFLOP/s")

    table, notes = backends(device, use_compile=not (args.no_compile or args.quick))
    for note in notes:
        print("  " + note)
    rows = []
    for size in sizes:
        label = f"B{size[0]} D{size[1]} R{size[2] ** 2} T{size[3]}"
        expected = reference_loss(size, device)
        base = {}
        for name, dtype, fn in table:
            dname = str(dtype).split(".")[-1]
            torch.manual_seed(size[0])  # every backend sees the inputs of reference_loss
            try:
                timings, err = bench_one(fn, size, dtype, device, args, expected)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run here is reported, not fatal
                print(f"  {label} {name} {dname}: failed ({exc.__class__.__name__}: "
                      f"{str(exc).splitlines()[0][:200] if str(exc) else ''})")
                continue
            for pass_name, (seconds, peak) in timings.items():
                if dtype == torch.float32 and name in ("original", "vectorised"):
                    base[(name, pass_name)] = seconds
                work = flops(size, pass_name)
                orig, vec = base.get(("original", pass_name)), base.get(("vectorised", pass_name))
                rows.append({
                    "size": label, "backend": name, "dtype": dname, "pass": pass_name,
                    "ms": seconds * 1e3, "tflops": work / seconds / 1e12,
                    "frac_matmul": work / seconds / mm_rate,
                    "x_original": orig / seconds if orig else None,
                    "x_vectorised": vec / seconds if vec else None,
                    "peak_mb": None if peak is None else peak / 2**20, "rel_err": err,
                    "flops": work,
                })
    print_table(rows, [("size", "size", ""), ("backend", "backend", ""), ("dtype", "dtype", ""),
                       ("pass", "pass", ""), ("ms", "ms", ".3f"), ("tflops", "TFLOP/s", ".3f"),
                       ("frac_matmul", "of mm", ".1%"), ("x_original", "x orig", ".2f"),
                       ("x_vectorised", "x vec", ".2f"), ("peak_mb", "peak MB", ".1f"),
                       ("rel_err", "loss err", ".1e")])
    predicted = predicted_lower_bounds(predicted_cases(), device)
    meta.update({"copy_bandwidth_bytes_per_s": copy_bw, "matmul_flop_per_s": mm_rate,
                 "matmul_dtype": str(mm_dtype), "quick": args.quick, "gpu_quick": args.gpu_quick,
                 "notes": notes, "predicted_gpu_lower_bounds": predicted,
                 "flop_count": "fwd 4*B^2*R*T*D, fwd+bwd 12*B^2*R*T*D (T padded, no recompute)",
                 "timing": "triton.testing.do_bench median" if device.type == "cuda"
                 else f"median of {args.reps} perf_counter repetitions after {args.warmup} warm-up"})
    path = write_results("damsm" + ("_quick" if args.quick else ""), rows, meta, args.results_dir)
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
