"""The CPU targets of the C++ extension (issue 11), side by side in one run:

* word–region attention forward, ``cpu`` backend vs the eager reference (target: >= 2x), at the
  birds stage-2 and stage-3 sizes, with the byte floor and the fraction of the measured copy rate;
* DAMSM ``words_loss`` forward+backward at B=48, D=256, R=17x17, T=18, ``cpu`` backend vs the
  original per-sentence loop (target: >= 4x), with the fraction of the measured sgemm rate. The
  ``cpu`` row keeps the forward's intermediates for the backward (the default: the 132 MiB buffer
  fits ``ATTNFAST_DAMSM_SAVE_MB`` = 512); ``cpu recompute`` (budget 0) recomputes them.

The backends of one comparison are timed in alternation (one call each per round, median over the
rounds), so that the load of a shared machine falls on both sides of a ratio alike.
Writes bench/results/extension_cpu.json (``--quick``: fewer sizes and repetitions, written to
extension_quick_cpu.json so that it never replaces a full run).

On a CUDA device (``--gpu-quick``, as make gpu-check runs it) the target is the CUDA C++ kernels
within 1.3x of the Triton kernels' time: attention forward and forward+backward at birds stage 2 and
DAMSM words_loss forward+backward at B=48, fp32 and bf16, ``cuda`` vs ``triton`` backend (do_bench
medians); written to extension_cuda.json.

    python bench/extension_targets.py [--quick | --gpu-quick] [--results-dir DIR]
"""
import argparse
import contextlib
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    add_gpu_quick,
    copy_bandwidth,
    device_info,
    gpu_quick_timing,
    matmul_rate,
    print_table,
    time_fn,
    write_results,
)

from attnfast import ops
from attnfast import reference as R  # noqa: E402

CPU = torch.device("cpu")
ATTENTION_TARGET, DAMSM_TARGET = 2.0, 4.0
CUDA_VS_TRITON_TARGET = 1.3          # the CUDA C++ kernel's time at most 1.3x Triton's


def _interleaved(runs: dict, reps: int, warmup: int) -> dict:
    """Median seconds per backend, timing one call of each backend per round."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            times[name].append(time_fn(fn, CPU, warmup=0, reps=1))
    return {name: statistics.median(t) for name, t in times.items()}


def _lengths(kind: str, batch: int, num_words: int, generator) -> torch.Tensor:
    if kind == "full":
        return torch.full((batch,), num_words, dtype=torch.long)
    return torch.randint(1, num_words + 1, (batch,), generator=generator)


def attention_rows(quick: bool, reps: int, copy_rate: float, smoke: bool = False) -> list[dict]:
    shapes = [("smoke", 2, 8, 16, 6)] if smoke else [("birds stage 2", 20, 32, 64, 18)]
    if not quick:
        shapes.append(("birds stage 3", 20, 32, 128, 18))
    gen = torch.Generator().manual_seed(0)
    rows = []
    for name, batch, channels, side, num_words in shapes:
        h = torch.randn(batch, channels, side, side, generator=gen)
        words = torch.randn(batch, channels, num_words, generator=gen)
        lens = _lengths("random", batch, num_words, gen)
        mask = torch.arange(num_words)[None, :] >= lens[:, None]
        floor_bytes = 4 * (h.numel() * 2 + words.numel())  # read h and words, write out
        runs = {
            "cpu": lambda h=h, words=words, mask=mask: ops.word_region_attention(h, words, mask, backend="cpu"),
            "reference": lambda h=h, words=words, mask=mask: R.word_region_attention(h, words, mask),
            "original": lambda h=h, words=words, mask=mask: R.global_attention_general_original(h, words, mask),
        }
        with torch.no_grad():
            times = _interleaved(runs, reps, warmup=2)
        for backend, seconds in times.items():
            rows.append({
                "op": "attention fwd",
                "shape": f"{name} B={batch} C={channels} {side}x{side} T={num_words}",
                "backend": backend, "ms": seconds * 1e3,
                "speedup_vs_reference": times["reference"] / seconds,
                "GB_per_s": floor_bytes / seconds / 1e9,
                "fraction_of_copy": floor_bytes / seconds / copy_rate,
            })
    return rows


@contextlib.contextmanager
def _save_budget(megabytes: str | None):
    """ATTNFAST_DAMSM_SAVE_MB set to ``megabytes`` (None: unset, the default) within the block."""
    name = "ATTNFAST_DAMSM_SAVE_MB"
    before = os.environ.get(name)
    if megabytes is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = megabytes
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def damsm_rows(quick: bool, reps: int, sgemm_rate: float, smoke: bool = False) -> list[dict]:
    batch, dim, side, num_words = (4, 16, 5, 6) if smoke else (48, 256, 17, 18)
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(batch, dim, side, side, generator=gen)
    words = torch.randn(batch, dim, num_words, generator=gen)
    labels = torch.arange(batch)
    rows = []
    for kind in ["full"] + ([] if quick else ["random"]):
        lens = _lengths(kind, batch, num_words, gen)
        # GEMM work of forward + backward: 6 products of 2*R*D*sum(lens) per image (the cpu backend
        # runs these 6 when the forward keeps its intermediates, 8 when the backward recomputes).
        flops = 6 * 2 * side * side * dim * int(lens.sum()) * batch

        def step(loss_fn, budget=None, lens=lens, **kw):  # lens bound: the loop's variable
            a, b = img.clone().requires_grad_(), words.clone().requires_grad_()
            with _save_budget(budget):
                loss0, loss1, _ = loss_fn(a, b, labels, lens, None, batch, **kw)
                (loss0 + loss1).backward()

        runs = {
            "cpu": lambda: step(ops.words_loss, backend="cpu"),
            "cpu recompute": lambda: step(ops.words_loss, budget="0", backend="cpu"),
            "original loop": lambda: step(R.words_loss_original),
        }
        times = _interleaved(runs, reps, warmup=1)
        for backend, seconds in times.items():
            rows.append({
                "op": "words_loss fwd+bwd",
                "shape": f"B={batch} D={dim} R={side}x{side} T={num_words} lens={kind}",
                "backend": backend, "ms": seconds * 1e3,
                "speedup_vs_original": times["original loop"] / seconds,
                "GFLOP_per_s": flops / seconds / 1e9,
                "fraction_of_sgemm": flops / seconds / sgemm_rate,
            })
    return rows


def cuda_rows(device: torch.device) -> list[dict]:
    """CUDA C++ vs Triton on ``device`` at the headline sizes: one row per op, pass and dtype."""
    gen = torch.Generator(device=device).manual_seed(0)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        h = torch.randn(20, 32, 64, 64, generator=gen, device=device).to(dtype)
        words = torch.randn(20, 32, 18, generator=gen, device=device).to(dtype)
        mask = torch.arange(18, device=device)[None, :] >= torch.randint(1, 19, (20,), device=device)[:, None]
        hg, wg = h.clone().requires_grad_(), words.clone().requires_grad_()
        grad = torch.randn_like(h)

        def attention(backend, backward, h=h, words=words, mask=mask, hg=hg, wg=wg, grad=grad):
            if not backward:
                with torch.no_grad():
                    return ops.word_region_attention(h, words, mask, backend=backend)
            return torch.autograd.grad(ops.word_region_attention(hg, wg, mask, backend=backend), (hg, wg), grad)

        img = torch.randn(48, 256, 17, 17, generator=gen, device=device).to(dtype).requires_grad_()
        emb = torch.randn(48, 256, 18, generator=gen, device=device).to(dtype).requires_grad_()
        lens = torch.randint(1, 19, (48,), device=device)
        labels = torch.arange(48, device=device)

        def words_loss(backend, backward, img=img, emb=emb, lens=lens, labels=labels):
            loss0, loss1, _ = ops.words_loss(img, emb, labels, lens, None, 48, backend=backend)
            return torch.autograd.grad(loss0 + loss1, (img, emb))

        cases = [("attention fwd", "birds stage 2 B=20 C=32 64x64 T=18", attention, False),
                 ("attention fwd+bwd", "birds stage 2 B=20 C=32 64x64 T=18", attention, True),
                 ("words_loss fwd+bwd", "B=48 D=256 R=17x17 T=18", words_loss, True)]
        for op, shape, fn, backward in cases:
            times = {}
            for backend in ("cuda", "triton"):
                try:
                    times[backend] = time_fn(lambda fn=fn, backend=backend, backward=backward: fn(backend, backward), device)
                except Exception as exc:  # noqa: BLE001 - a backend that cannot run is reported, not fatal
                    print(f"  {op} {backend} {dtype}: failed ({exc.__class__.__name__}: {str(exc)[:200]})")
            rows.append({"op": op, "shape": shape, "dtype": str(dtype).split(".")[-1],
                         "cuda_ms": times["cuda"] * 1e3 if "cuda" in times else None,
                         "triton_ms": times["triton"] * 1e3 if "triton" in times else None,
                         "cuda_over_triton": times["cuda"] / times["triton"] if len(times) == 2 else None})
    return rows


def main_cuda(args) -> None:
    device = torch.device("cuda")
    gpu_quick_timing()
    meta = device_info(device)
    meta.update(gpu_quick=True, target=f"cuda time <= {CUDA_VS_TRITON_TARGET} x triton time")
    print(f"{meta['device']}; torch {meta['torch']}; triton {meta['triton']}")
    rows = cuda_rows(device)
    print_table(rows, [("op", "op", ""), ("shape", "shape", ""), ("dtype", "dtype", ""),
                       ("cuda_ms", "cuda ms", ".3f"), ("triton_ms", "triton ms", ".3f"),
                       ("cuda_over_triton", "cuda / triton", ".2f")])
    print(f"wrote {write_results('extension', rows, meta, args.results_dir)}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one size per op, fewer repetitions")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    add_gpu_quick(parser)
    args = parser.parse_args(argv)
    try:
        from attnfast import _C  # noqa: F401
    except ImportError as exc:
        sys.exit(f"attnfast._C is not built ({exc}): pip install --no-build-isolation -e .")
    if torch.cuda.is_available():
        return main_cuda(args)
    args.quick = args.quick or args.smoke
    reps = 1 if args.smoke else 3 if args.quick else 7
    meta = device_info(CPU)
    meta["torch_threads"] = torch.get_num_threads()
    meta["load_average_before"] = os.getloadavg()
    sgemm = matmul_rate(CPU, torch.float32, 512 if args.smoke else None)
    copy = copy_bandwidth(CPU, 16 << 20 if args.smoke else None)
    meta.update(sgemm_GFLOP_per_s=sgemm / 1e9, copy_GB_per_s=copy / 1e9, quick=args.quick, smoke=args.smoke)
    print(f"{meta['device']}; torch {meta['torch']}; sgemm {sgemm / 1e9:.0f} GFLOP/s, "
          f"copy {copy / 1e9:.0f} GB/s; load average {meta['load_average_before']}")

    attention = attention_rows(args.quick, reps, copy, args.smoke)
    print_table(attention, [("shape", "attention forward", ""), ("backend", "backend", ""),
                            ("ms", "ms", ".2f"), ("speedup_vs_reference", "x reference", ".2f"),
                            ("GB_per_s", "GB/s", ".1f"), ("fraction_of_copy", "of copy", ".2f")])
    damsm = damsm_rows(args.quick, reps, sgemm, args.smoke)
    print_table(damsm, [("shape", "DAMSM words_loss fwd+bwd", ""), ("backend", "backend", ""),
                        ("ms", "ms", ".1f"), ("speedup_vs_original", "x original", ".2f"),
                        ("GFLOP_per_s", "GFLOP/s", ".1f"), ("fraction_of_sgemm", "of sgemm", ".2f")])

    attention_speedup = min(r["speedup_vs_reference"] for r in attention if r["backend"] == "cpu")
    target_row = next(r for r in damsm if r["backend"] == "cpu")  # B=48, full lengths
    damsm_speedup = target_row["speedup_vs_original"]
    original_ms = next(r["ms"] for r in damsm if r["backend"] == "original loop")
    print(f"DAMSM words_loss fwd+bwd, {target_row['shape']}, {torch.get_num_threads()} threads: "
          f"cpu {target_row['ms']:.1f} ms vs original loop {original_ms:.1f} ms = "
          f"{damsm_speedup:.2f}x (target {DAMSM_TARGET:.0f}x); cpu at "
          f"{target_row['GFLOP_per_s']:.1f} GFLOP/s = {target_row['fraction_of_sgemm']:.0%} of the "
          f"measured sgemm rate ({sgemm / 1e9:.0f} GFLOP/s; 6 GEMMs counted)")
    meta["load_average_after"] = os.getloadavg()
    meta["targets"] = {
        "attention_fwd_vs_reference": {"target": ATTENTION_TARGET, "measured_min": attention_speedup,
                                       "met": attention_speedup >= ATTENTION_TARGET},
        "words_loss_fwd_bwd_vs_original_B48_full_lengths": {
            "target": DAMSM_TARGET, "measured": damsm_speedup, "met": damsm_speedup >= DAMSM_TARGET,
            "fraction_of_sgemm": target_row["fraction_of_sgemm"]},
    }
    for name, t in meta["targets"].items():
        got = t.get("measured_min", t.get("measured"))
        verdict = "met" if t["met"] else "NOT met"
        print(f"target {name}: >= {t['target']}x, measured {got:.2f}x -> {verdict}")
    path = write_results("extension_quick" if args.quick else "extension", attention + damsm, meta,
                         args.results_dir)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
