"""Benchmark of the word–region attention (DESIGN.md §3.1, §7; issue 5).

    python bench/attention_bench.py [--quick | --gpu-quick] [--full] [--no-compile] [--results-dir DIR]

Backends, each forward and forward+backward, on one device in one run:
  original     the original AttnGAN formulation (reference.global_attention_general_original), eager;
               fp32 is the baseline of the "x eager" column; bf16 too
  compiled     torch.compile of attnfast.reference.word_region_attention
  sdpa         F.scaled_dot_product_attention with the word mask (what a user would try instead)
  triton       the fused kernels (CUDA only: on CPU Triton runs only in its slow interpreter)
  cpu / cuda   the C++/CUDA extension, where attnfast._C is built
Per row: median time, GB/s against the byte floor (read h + words, write out; forward+backward also
reads h, words and d out again and writes dh, dwords), the fraction of the device's copy bandwidth
measured in this run, the speed-up over eager fp32, peak memory (CUDA), and the relative error of the
output against the fp32 reference (a wrong kernel is never reported as fast without it showing).
Sizes: B in {20, 64, 256}, C in {32, 64}, 64x64 and 128x128 regions, T = 18 on CUDA (``--full``);
on CPU only B = 20 unless ``--full``; ``--quick`` runs one tiny size in a few seconds; ``--gpu-quick``
the headline sizes (birds stages 2 and 3, B = 20) with short timing and torch.compile in bf16 only.
On CPU it also prints the predicted GPU lower bounds of the headline sizes (``_gpus``: a model).
Results: a table on stdout and JSON in bench/results/attention_<device kind>.json.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

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

NUM_WORDS = 18
SIZES_FULL = [(b, c, r, NUM_WORDS) for b in (20, 64, 256) for c in (32, 64) for r in (64, 128)]
SIZES_CPU = [(20, c, r, NUM_WORDS) for c in (32, 64) for r in (64, 128)]
SIZES_QUICK = [(2, 32, 16, NUM_WORDS)]
SIZES_HEADLINE = [(20, 32, 64, NUM_WORDS), (20, 32, 128, NUM_WORDS)]   # birds stages 2 and 3
PASSES = ("fwd", "fwd+bwd")


def make_inputs(size, dtype, device):
    """h (B, C, R, R), words (B, C, T) in ``dtype``; a (B, T) mask of random caption lengths >= 1."""
    batch, channels, res, num_words = size
    h = torch.randn(batch, channels, res, res, device=device).to(dtype)
    words = torch.randn(batch, channels, num_words, device=device).to(dtype)
    lens = torch.randint(1, num_words + 1, (batch,), device=device)
    mask = torch.arange(num_words, device=device)[None, :] >= lens[:, None]
    return h, words, mask


def floor_bytes(size, dtype, pass_name) -> int:
    """Bytes a perfect kernel must move: fwd reads h, words, mask and writes out; fwd+bwd adds
    reading h, words, mask and d out and writing dh and dwords."""
    batch, channels, res, num_words = size
    es = torch.finfo(dtype).bits // 8
    feats = batch * channels * res * res * es
    word_bytes, mask_bytes = batch * channels * num_words * es, batch * num_words
    fwd = 2 * feats + word_bytes + mask_bytes
    return fwd if pass_name == "fwd" else fwd + 3 * feats + 2 * word_bytes + mask_bytes


def predicted_cases() -> list[dict]:
    """The headline sizes for the GPU lower-bound model: their byte floors (memory-bound: the FLOPs,
    4 * B * N * C * T forward and twice that again backward, are far below any GPU's rate)."""
    cases = []
    for size in SIZES_HEADLINE:
        batch, channels, res, words = size
        for dtype in (torch.bfloat16, torch.float32):
            for pass_name in PASSES:
                flops = 4 * batch * res * res * channels * words * (1 if pass_name == "fwd" else 3)
                cases.append({"case": f"attention B{batch} C{channels} {res}x{res} T{words} {pass_name}",
                              "dtype": str(dtype).split(".")[-1], "bytes": floor_bytes(size, dtype, pass_name),
                              "flops": flops})
    return cases


def _original(h, words, mask):
    return reference.global_attention_general_original(h, words, mask)[0]


def _sdpa(h, words, mask):
    batch, channels, height, width = h.shape
    query = h.flatten(2).transpose(1, 2).unsqueeze(1)                    # (B, 1, N, C)
    kv = words.transpose(1, 2).unsqueeze(1)                              # (B, 1, T, C)
    out = F.scaled_dot_product_attention(query, kv, kv, attn_mask=~mask[:, None, None, :], scale=1.0)
    return out.squeeze(1).transpose(1, 2).reshape(batch, channels, height, width)


class _Compiled:
    """torch.compile of the reference, recompiled fresh for every size and dtype: dynamo's cache
    limit would otherwise fall back to eager after a few shapes, and time eager as "compiled"."""

    def __init__(self):
        self.key, self.fn = None, None

    def __call__(self, h, words, mask):
        key = (tuple(h.shape), h.dtype, h.requires_grad)
        if key != self.key:
            torch._dynamo.reset()
            self.key, self.fn = key, torch.compile(reference.word_region_attention, dynamic=False)
        return self.fn(h, words, mask)


_compiled = _Compiled()


def _op(backend):
    return lambda h, words, mask: ops.word_region_attention(h, words, mask, backend=backend)


def backends(device, dtypes, use_compile, compile_dtypes=None):
    """[(name, dtype, fn)] for ``device``, and lines saying what is skipped and why."""
    notes, table = [], []
    for dtype in dtypes:
        table.append(("original", dtype, _original))
    if device.type == "cpu":
        dtypes = dtypes[:1]                # the rest in fp32 only on CPU (bf16 CPU paths are slow)
    if use_compile:
        table += [("compiled", dtype, _compiled) for dtype in compile_dtypes or dtypes]
    else:
        notes.append("torch.compile: skipped (--no-compile or --quick)")
    table += [("sdpa", dtype, _sdpa) for dtype in dtypes]
    ok, why = triton_usable(device)
    if device.type == "cuda" and ok:
        table += [("triton", dtype, _op("triton")) for dtype in dtypes]
    else:
        notes.append("triton: skipped (" + (why or "CPU tensors run Triton only in its interpreter") + ")")
    for ext in ("cpu", "cuda"):
        if ext != device.type:
            continue
        ok, why = extension_usable(device)
        if ok:
            table += [(ext, dtype, _op(ext)) for dtype in dtypes]
        else:
            notes.append(f"{ext} extension: skipped ({why})")
    return table, notes


def bench_one(fn, size, dtype, device, args):
    """{pass: (seconds, peak bytes)} and the output's relative error against the fp32 reference."""
    h, words, mask = make_inputs(size, dtype, device)
    with torch.no_grad():
        out = fn(h, words, mask)
        # The original pairs regions with mask[(b*N + n) mod B]: judge it by what it computes.
        mode = "attngan" if fn is _original else "correct"
        expected = reference.word_region_attention(h.float(), words.float(), mask, mask_mode=mode)
        err = ((out.float() - expected).norm() / expected.norm()).item()
    grad = torch.randn_like(out)
    hg, wg = h.clone().requires_grad_(True), words.clone().requires_grad_(True)

    def forward():
        with torch.no_grad():
            return fn(h, words, mask)

    def forward_backward():
        return torch.autograd.grad(fn(hg, wg, mask), (hg, wg), grad)

    result = {}
    for pass_name, run in zip(PASSES, (forward, forward_backward), strict=True):
        seconds = time_fn(run, device, warmup=args.warmup, reps=args.reps)
        result[pass_name] = (seconds, peak_memory(run, device))
    return result, err


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one tiny size, few repetitions (seconds)")
    parser.add_argument("--full", action="store_true", help="every size, also on CPU")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile backend")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions on CPU")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    add_gpu_quick(parser)
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    args.warmup = 0 if args.smoke else 2
    if args.gpu_quick:
        gpu_quick_timing()
    args.reps = args.reps or (1 if args.smoke else 10 if args.quick else 7)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meta = device_info(device)
    if args.quick:
        sizes = SIZES_QUICK
    elif args.gpu_quick:
        sizes = SIZES_HEADLINE
    elif device.type == "cuda" or args.full:
        sizes = SIZES_FULL
    else:
        sizes = SIZES_CPU
    print(f"attention bench on {meta['device']} (torch {meta['torch']}, triton {meta['triton']}, "
          f"commit {meta['git_commit']}, {meta['date']})")
    if device.type != "cuda":
        print("No CUDA device: running the CPU backends only; these are CPU numbers."
              + ("" if args.full or args.quick else " Sizes limited to B = 20 (--full for all)."))
    copy_bw = copy_bandwidth(device, 64 << 20 if args.quick else None)
    mm_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    mm_rate = matmul_rate(device, mm_dtype, 512 if args.quick else None)
    print(f"measured now: copy bandwidth {copy_bw / 1e9:.1f} GB/s (read + write), "
          f"{str(mm_dtype).split('.')[-1]} matmul {mm_rate / 1e12:.3f} TFLOP/s")

    dtypes = (torch.float32,) if args.smoke else (torch.float32, torch.bfloat16)
    table, notes = backends(device, dtypes, use_compile=not (args.no_compile or args.quick),
                            compile_dtypes=(torch.bfloat16,) if args.gpu_quick else None)
    for note in notes:
        print("  " + note)
    rows = []
    for size in sizes:
        label = f"B{size[0]} C{size[1]} {size[2]}x{size[2]} T{size[3]}"
        base = {}
        for name, dtype, fn in table:
            dname = str(dtype).split(".")[-1]
            try:
                timings, err = bench_one(fn, size, dtype, device, args)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run this size is reported, not fatal
                print(f"  {label} {name} {dname}: failed ({exc.__class__.__name__}: {str(exc)[:200]})")
                continue
            for pass_name, (seconds, peak) in timings.items():
                if (name, dtype) == ("original", torch.float32):
                    base[pass_name] = seconds
                floor = floor_bytes(size, dtype, pass_name)
                rows.append({
                    "size": label, "backend": name, "dtype": dname, "pass": pass_name,
                    "ms": seconds * 1e3, "floor_gbps": floor / seconds / 1e9,
                    "frac_copy": floor / seconds / copy_bw,
                    "x_eager_fp32": base[pass_name] / seconds if pass_name in base else None,
                    "peak_mb": None if peak is None else peak / 2**20, "rel_err": err,
                    "floor_bytes": floor,
                })
    print_table(rows, [("size", "size", ""), ("backend", "backend", ""), ("dtype", "dtype", ""),
                       ("pass", "pass", ""), ("ms", "ms", ".3f"), ("floor_gbps", "GB/s floor", ".1f"),
                       ("frac_copy", "of copy", ".1%"), ("x_eager_fp32", "x eager32", ".2f"),
                       ("peak_mb", "peak MB", ".1f"), ("rel_err", "rel err", ".1e")])
    predicted = predicted_lower_bounds(predicted_cases(), device)
    meta.update({"copy_bandwidth_bytes_per_s": copy_bw, "matmul_flop_per_s": mm_rate,
                 "matmul_dtype": str(mm_dtype), "quick": args.quick, "gpu_quick": args.gpu_quick,
                 "notes": notes, "predicted_gpu_lower_bounds": predicted,
                 "timing": "triton.testing.do_bench median" if device.type == "cuda"
                 else f"median of {args.reps} perf_counter repetitions after {args.warmup} warm-up"})
    path = write_results("attention" + ("_quick" if args.quick else ""), rows, meta, args.results_dir)
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
