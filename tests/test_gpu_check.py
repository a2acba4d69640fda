"""make gpu-check's plumbing, proven on the CPU before a GPU is lent (issue 18): the dry run end to end
(every part run with its limit, the benches' --quick JSON gathered into one results.json, the summary
written, at most 8 files in OUT), a part past its time limit killed and reported while the next part
runs, and the summary's targets read from GPU-shaped bench results."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import gpu_check  # noqa: E402


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path):
    """The real script on the CPU (install and pytest parts left out: make test is already running
    in the venv they would set up)."""
    out = tmp_path / "out"
    results_dir = os.path.join(ROOT, "bench", "results")
    def bench_files():                  # (not the kernel report's JSON: make kernel-report may run meanwhile)
        return {f: os.path.getmtime(os.path.join(results_dir, f)) for f in os.listdir(results_dir)
                if f != "kernel_resources.json"}

    before = bench_files()
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--dry-run",
                           "--out", str(out), "--skip", "install", "pytest"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    files = sorted(os.listdir(out))
    assert len(files) <= 8 and {"gpu_check.log", "device.txt", "results.json", "summary.txt",
                                   "summary.json"} <= set(files)
    summary = json.loads((out / "summary.json").read_text())
    statuses = {p["part"]: p["status"] for p in summary["parts"]}
    for bench in ("attention", "damsm", "blocks", "train", "sample", "extension"):
        assert statuses[bench] == "ok", statuses
    results = json.loads((out / "results.json").read_text())
    assert {"attention", "damsm", "blocks", "train", "sample", "extension"} <= set(results)
    for name, data in results.items():
        assert data["meta"]["device_kind"] == "cpu" and data["rows"], name
    assert summary["targets"] and all(t["met"] is None or isinstance(t["met"], bool) for t in summary["targets"])
    assert "targets" in (out / "summary.txt").read_text()
    # the dry run leaves bench/results alone
    assert bench_files() == before


def test_part_past_its_limit_is_killed_and_the_next_part_runs(tmp_path):
    log = gpu_check.Log(str(tmp_path / "log.txt"))
    slow = gpu_check.run_part(log, "slow", [sys.executable, "-c", ("import time; print('started', flush=True); "
                                                               "time.sleep(60)")], timeout=2)
    failing = gpu_check.run_part(log, "failing", [sys.executable, "-c", "raise SystemExit(3)"], timeout=30)
    fine = gpu_check.run_part(log, "fine", [sys.executable, "-c", "print('hello')"], timeout=30)
    assert slow["status"] == "timed out" and slow["seconds"] < 30
    assert failing["status"] == "failed (exit 3)"
    assert fine["status"] == "ok"
    text = (tmp_path / "log.txt").read_text()
    assert "started" in text and "hello" in text


def _gpu_results() -> dict:
    """Bench results as --gpu-quick writes them on a GPU (only the fields the summary reads)."""
    size = "B20 C32 64x64 T18"
    att = [{"size": size, "backend": b, "dtype": "bfloat16", "pass": p, "ms": ms, "frac_copy": frac}
           for b, p, ms, frac in (("triton", "fwd", 0.010, 0.85), ("triton", "fwd+bwd", 0.030, 0.60),
                                  ("compiled", "fwd", 0.025, 0.3))]
    dam = [{"size": "B48 D256 R289 T18", "backend": "triton", "dtype": d, "pass": "fwd+bwd",
            "x_original": xo, "x_vectorised": xv} for d, xo, xv in (("float32", 40.0, 4.0), ("bfloat16", 80.0, 6.0))]
    blk = [{"size": "up 64->32 64x64 B20", "variant": "fast", "dtype": "bfloat16", "pass": "fwd+bwd",
            "x_orig_same": 2.0}]
    trn = [{"model": "birds", "variant": "original", "x_original": 1.0, "mfu": 0.01},
           {"model": "birds", "variant": "all", "x_original": 3.5, "mfu": 0.05}]
    smp = [{"resolution": 64, "batch": 256, "variant": v, "images_per_s": ips, "x_original": x}
           for v, ips, x in (("original", 2000.0, 1.0), ("graphs", 12000.0, 6.0))]
    ext = [{"op": "attention fwd", "shape": "birds", "dtype": "bfloat16", "cuda_over_triton": 1.5}]
    return {name: {"rows": rows} for name, rows in (("attention", att), ("damsm", dam), ("blocks", blk),
                                                     ("train", trn), ("sample", smp), ("extension", ext))}


def test_summary_reads_every_target():
    got = {t["target"]: (t["measured"], t["met"]) for t in gpu_check.targets(_gpu_results())}

    def find(words):
        return next(v for k, v in got.items() if all(w in k for w in words))

    assert find(["attention fwd triton", "byte floor"]) == (0.85, True)
    assert find(["attention fwd+bwd", "byte floor"]) == (0.60, False)
    assert find(["torch.compile"]) == (pytest.approx(2.5), True)
    assert find(["DAMSM", "original"]) == (80.0, True)
    assert find(["DAMSM", "vectorised"]) == (6.0, True)
    assert find(["upBlock"]) == (2.0, True)
    assert find(["train step"]) == (3.5, False)
    assert find(["sampling vs"]) == (6.0, True)
    assert find(["images/s"]) == (12000.0, True)
    assert find(["CUDA C++"]) == (1.5, False)
    empty = gpu_check.targets({})
    assert empty and all(t["measured"] is None and t["met"] is None for t in empty)
