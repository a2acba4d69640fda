"""Shared helpers of the benches (DESIGN.md §7): device description, timing, device limits, results.

API (everything a bench needs, nothing more):

    device_info(device) -> dict            device name and kind, torch/triton/python versions, date,
                                           git commit
    device_kind(device) -> str             "cpu" or "cuda", used in result file names (meta.device names
                                           the device)
    time_fn(fn, device, warmup=, reps=)    median seconds of one call of ``fn()`` over ``reps`` timed calls
    add_gpu_quick(parser)                  the benches' common ``--gpu-quick`` (headline shapes, short
                                           CUDA timing: ``make gpu-check``) and ``--smoke`` (the tiniest
                                           run, one repetition: ``make gpu-check-dry``) flags
    copy_bandwidth(device) -> bytes/s      a large same-device copy, counting read + write bytes
    matmul_rate(device, dtype) -> flop/s   a large square matmul (bf16 on CUDA, fp32 on CPU usually)
    peak_memory(fn, device) -> int | None  bytes allocated at the peak of ``fn()`` above what was live
                                           before (CUDA); None on CPU (not tracked by torch)
    write_results(name, rows, meta, results_dir=None) -> path   JSON to bench/results/<name>_<kind>.json
    print_table(rows, columns)             aligned text table on stdout
    backend_env(name)                      context: $ATTNFAST_BACKEND set to ``name`` inside
    predicted_lower_bounds(cases, device)  the GPU lower-bound model's rows for a bench's headline
                                           cases (``_gpus``), printed when ``device`` is no GPU

Timing: on CUDA ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repetition, median);
on CPU ``time.perf_counter`` around each call, median over the repetitions after warm-up.
"""
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _git_commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except Exception:  # noqa: BLE001 - no git: the commit is unknown
        return "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_name()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def device_kind(device: torch.device) -> str:
    """"cpu" or "cuda": a result counts as a GPU result when its meta.device_kind is "cuda" (and
    meta.device names the GPU, DESIGN.md §7)."""
    return "cuda" if device.type == "cuda" else "cpu"


def device_info(device: torch.device) -> dict:
    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # noqa: BLE001 - no usable triton: no version
        triton_version = None
    return {
        "device": device_name(device),
        "device_kind": device_kind(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
    }


# do_bench's warm-up and repetition budgets (ms) on CUDA; --gpu-quick shortens them (gpu_quick_timing).
CUDA_TIMING = {"warmup_ms": 25.0, "rep_ms": 200.0}


def add_gpu_quick(parser) -> None:
    """The ``--gpu-quick`` and ``--smoke`` flags every bench takes (bench/gpu_check.py runs them all
    with the first on a GPU, with the second in its dry run)."""
    parser.add_argument("--gpu-quick", action="store_true",
                        help="the headline shapes only with short CUDA timing (make gpu-check: every bench "
                             "in one short GPU call); written as <name>_cuda.json with meta.gpu_quick")
    parser.add_argument("--smoke", action="store_true",
                        help="the tiniest sizes and one repetition, seconds on a CPU: tests the plumbing "
                             "(make gpu-check-dry), measures nothing worth keeping")


def gpu_quick_timing() -> None:
    """Shorter do_bench budgets for --gpu-quick (medians of ~50 ms of repetitions)."""
    CUDA_TIMING.update(warmup_ms=10.0, rep_ms=50.0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], object], device: torch.device, *, warmup: int = 3, reps: int = 10) -> float:
    """Median seconds of one ``fn()``. CUDA: do_bench over CUDA_TIMING["rep_ms"] of repetitions."""
    if device.type == "cuda":
        from triton.testing import do_bench
        return do_bench(fn, warmup=CUDA_TIMING["warmup_ms"], rep=CUDA_TIMING["rep_ms"],
                        return_mode="median") * 1e-3
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth(device: torch.device, nbytes: int | None = None) -> float:
    """Bytes per second of ``dst.copy_(src)`` on ``device``, counting the read and the write."""
    nbytes = nbytes or (1 << 30 if device.type == "cuda" else 256 << 20)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = time_fn(lambda: dst.copy_(src), device, warmup=3, reps=10)
    return 2 * src.numel() * 4 / seconds


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int | None = None) -> float:
    """FLOP per second of a (size x size) @ (size x size) matmul in ``dtype``."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    seconds = time_fn(lambda: a @ b, device, warmup=2, reps=5)
    return 2 * size ** 3 / seconds


def peak_memory(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated by ``fn()`` above what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    _sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return peak


def write_results(name: str, rows: Sequence[dict], meta: dict, results_dir: str | None = None) -> str:
    """Write {"meta": meta, "rows": rows} to <results_dir>/<name>_<meta["device_kind"]>.json."""
    results_dir = results_dir or RESULTS_DIR
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{name}_{meta['device_kind']}.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"meta": meta, "rows": list(rows)}, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print ``rows`` as a table; columns are (key, header, format spec); missing values print "-"."""
    def cell(row, key, fmt):
        value = row.get(key)
        if value is None:
            return "-"
        return format(value, fmt) if fmt and not isinstance(value, str) else str(value)

    cells = [[cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


@contextlib.contextmanager
def backend_env(name: str):
    """Run the ops with backend ``name`` inside (``$ATTNFAST_BACKEND``, read by every op call)."""
    old = os.environ.get("ATTNFAST_BACKEND")
    os.environ["ATTNFAST_BACKEND"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ATTNFAST_BACKEND", None)
        else:
            os.environ["ATTNFAST_BACKEND"] = old


def predicted_lower_bounds(cases: Sequence[dict], device: torch.device) -> list[dict]:
    """Rows of ``_gpus.predicted_rows(cases)`` (each case's lower-bound time on A100/H100/H200, a
    model), printed as a table on a machine without a GPU: the yardstick a first GPU run is read
    against. The benches store the rows in their JSON's meta."""
    from _gpus import predicted_rows, print_predicted
    rows = predicted_rows(list(cases))
    if device.type != "cuda":
        print_predicted(rows, print_table)
    return rows
