"""Every kernel of attnfast compiled for real GPUs without one (issue 18): the kernel resource report
(bench/kernel_resources.py) compiles every Triton kernel at every launch configuration of
bench/_kernel_cases.py, and the CUDA C++ kernels of csrc/, for sm_80 and sm_90, and this test fails on
a compile error, shared memory over a block's limit, no resident block, or spills at the model's
shapes beyond the documented exceptions. The Triton interpreter checks the kernels' math; this checks
what only a compiler for the real GPU sees. The report runs once per session in a subprocess
(Triton must not be in interpreter mode there), compiling in a process pool.
Also the occupancy model against hand-worked cases.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
sys.path.insert(0, BENCH)
import _gpus  # noqa: E402
import kernel_resources  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report's section for this machine's triton: {"rows", "kernels", "problems", ...}."""
    pytest.importorskip("triton")
    path = tmp_path_factory.mktemp("kernel_resources") / "kernel_resources.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    done = subprocess.run([sys.executable, os.path.join(BENCH, "kernel_resources.py"), "--quiet",
                           "--json", str(path)], env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    if done.stdout.startswith("SKIP"):
        pytest.skip(done.stdout.strip())
    with open(path) as f:
        sections = json.load(f)["by_triton_version"]
    assert len(sections) == 1
    return next(iter(sections.values()))


def test_every_kernel_compiled_for_sm80_and_sm90(report):
    triton_rows = [r for r in report["rows"] if r["source"] == "triton"]
    assert report["kernels"], "no Triton kernel found in kernels/"
    for kernel in report["kernels"]:
        archs = {r["arch"] for r in triton_rows if r["kernel"] == kernel}
        assert archs == {80, 90}, f"{kernel} compiled for {sorted(archs)}"
    for r in triton_rows:
        if "error" not in r:
            assert r["registers"] > 0 and r["threads"] >= 32 and r["blocks_per_sm"] >= 0


def test_cuda_kernels_compiled_for_sm80_and_sm90(report):
    if report["nvcc"] != "ok":
        pytest.skip(f"CUDA C++ kernels not compiled: {report['nvcc']}")
    rows = [r for r in report["rows"] if r["source"] == "nvcc"]
    assert {r["arch"] for r in rows} == {80, 90}
    names = {r["kernel"] for r in rows}
    assert {"attention_forward_kernel", "attention_backward_kernel", "softmax_kernel"} <= names, names
    assert all("threads" in r for r in rows if "error" not in r), "occupancy needs attnfast._C.cuda_launch_config"


def test_no_resource_problems(report):
    """No compile error, shared memory within a block's limit, at least one resident block, no spills
    at the model's shapes beyond kernel_resources.SPILL_EXCEPTIONS."""
    assert report["problems"] == [], "\n".join(report["problems"])


def test_spill_exceptions_still_apply(report):
    """Each documented exception names a model-shape binary that spills, under this machine's triton
    or under another version recorded in bench/results/kernel_resources.json (make
    kernel-report-triton36): an exception that no version needs any more is removed from the list."""
    sections = [report]
    if os.path.exists(kernel_resources.DEFAULT_JSON):
        with open(kernel_resources.DEFAULT_JSON) as f:
            recorded = json.load(f)["by_triton_version"]
        sections += [s for v, s in recorded.items() if v != report["versions"]["triton"]]
    for (kernel, arch, label), limit in kernel_resources.SPILL_EXCEPTIONS.items():
        spilling = [r for section in sections for r in section["rows"]
                    if r["kernel"] == kernel and r["arch"] == arch and r.get("spill_bytes")
                    and any(label in c for c in r.get("model_cases", []))]
        assert spilling, f"exception {(kernel, arch, label)} matches no spilling binary: remove it"
        here = [r["spill_bytes"] for r in report["rows"] if r in spilling]
        assert max(here, default=0) <= limit


# --------------------------------------------------------------------------------------------
# The occupancy model (hand-worked with the CUDA occupancy calculator's rules)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, threads, regs, smem, blocks, limit", [
    (90, 256, 32, 0, 8, "threads"),          # 2048 threads / 256
    (90, 256, 64, 0, 4, "registers"),        # 64 x 32 = 2048 regs per warp; 8 warps per sub-partition
    (90, 256, 255, 0, 1, "registers"),       # 8160 -> 8192 per warp: 2 warps per sub-partition
    (80, 128, 168, 40960, 3, "registers"),   # 5376 per warp: 3 warps per sub-partition = 12 warps
    (80, 32, 16, 0, 32, "blocks"),
    (80, 128, 32, 163 * 1024, 1, "shared"),
    (80, 128, 32, 163 * 1024 + 1, 0, "shared"),
    (90, 1024, 128, 0, 0, "registers"),      # 128 x 1024 = 128K registers > 64K per block
])
def test_occupancy_model(arch, threads, regs, smem, blocks, limit):
    got = _gpus.occupancy(_gpus.ARCHS[arch], threads, regs, smem)
    assert (got["blocks"], got["limited_by"]) == (blocks, limit), got
    assert got["warps"] == blocks * threads // 32


def test_lower_bound_model():
    h100 = next(g for g in _gpus.GPUS if g.name == "H100")
    assert _gpus.lower_bound_seconds(h100, 3e9, 0, "bfloat16") == pytest.approx(1e-3)
    assert _gpus.lower_bound_seconds(h100, 0, 67e9, "float32") == pytest.approx(1e-3)
    assert _gpus.lower_bound_seconds(h100, 0, 800e9, "bfloat16") == pytest.approx(1e-3)
    rows = _gpus.predicted_rows([{"case": "x", "dtype": "bfloat16", "bytes": 3e9, "flops": 8e9,
                                  "per_call_items": 10}])
    assert rows[0]["H100_us"] == pytest.approx(1000) and rows[0]["H100_bound"] == "bytes"
    assert rows[0]["H200_us"] < rows[0]["H100_us"] < rows[0]["A100_us"]
    assert rows[0]["H100_items_per_s"] == pytest.approx(1e4)
