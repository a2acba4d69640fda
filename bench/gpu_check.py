"""make gpu-check OUT=dir: every GPU number of attnfast in one device call (issue 18).

    python3 bench/gpu_check.py --out DIR [--dry-run] [--budget-s SECONDS] [--skip PART ...]

Written for a bare, lent H100/H200 with the GPU image's torch (CUDA) and triton installed
system-wide and no network: from a fresh clone to results in one command, under 8 minutes (a budget
of 465 s shared by the parts). Parts, in order, each with its own time limit; a part that fails or
runs out of time is reported and the next one runs:

  install    the project's venv (--system-site-packages: the image's torch and triton), the
             requirements pip can satisfy offline, and the C++/CUDA extension built for this GPU's
             arch only (TORCH_CUDA_ARCH_LIST from torch.cuda.get_device_capability) with ninja on
             every core
  device     nvidia-smi, torch / triton / CUDA / driver versions
  pytest     ``pytest -m gpu`` (JUnit XML to OUT; failures do not stop the run)
  benches    attention, damsm, blocks, train, sample, extension_targets with ``--gpu-quick`` (the
             headline shapes, short timing) and serve_bench (``--gpu``, short runs, the demo
             config's model after one training step when runs/demo/gan.pt is absent); each writes
             bench/results/<name>_cuda.json (meta.device_kind "cuda", meta.device the GPU's name)
  summary    each measured ratio against its target (issues 5-11, collected in issue 21)

OUT receives six files (at most 8 may come back from a lent machine): gpu_check.log (every part's
output), device.txt, pytest_gpu.xml, results.json (all the benches' JSON in one), summary.txt and
summary.json.

``--dry-run`` runs the same parts on the CPU with the benches' tiny ``--smoke`` sizes (results in a
temporary directory, never bench/results), so that the plumbing is tested before a GPU is lent
(tests/test_gpu_check.py). Only the Python standard library is used here: the script runs before
the venv exists.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")

# (name, script, time limit in seconds on the GPU, its flags on the GPU, in a dry run); a dry run
# doubles the limits. The benches of this repository share --gpu-quick / --smoke (bench/_common.py);
# serve_bench (issue 19) has its own --gpu.
QUICK = (["--gpu-quick"], ["--smoke"])
# a bare machine has no runs/demo/gan.pt: serve the demo config's model after one training step
SERVE_MODEL = ["--untrained", "training/configs/shapes_demo.yaml"]
BENCHES = [
    ("attention", "attention_bench.py", 60, *QUICK),
    ("damsm", "damsm_bench.py", 30, *QUICK),
    ("blocks", "blocks_bench.py", 40, *QUICK),
    ("train", "train_bench.py", 60, *QUICK),
    ("sample", "sample_bench.py", 30, *QUICK),
    ("extension", "extension_targets.py", 25, *QUICK),
    ("serve", "serve_bench.py", 60, ["--gpu", "--seconds", "4", "--repeats", "1", "--warmup-seconds", "1", *SERVE_MODEL],
     ["--seconds", "1", "--repeats", "1", "--warmup-seconds", "0.5", *SERVE_MODEL]),
]
INSTALL_TIMEOUT, DEVICE_TIMEOUT, PYTEST_TIMEOUT = 150, 20, 75
# The whole run on a GPU stays under 8 minutes: a part gets at most what is left of this budget
# (the limits above add up to a little more, and most parts should end well before their limit).
GPU_BUDGET_S = 465


class Log:
    """Every part's output, in OUT/gpu_check.log and on stdout."""

    def __init__(self, path: str):
        self.file = open(path, "a")  # noqa: SIM115 - open for the whole check, like stdout

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.file.write(text)
        self.file.flush()


def run_part(log: Log, name: str, command: list[str], timeout: float, env: dict | None = None,
             cwd: str = ROOT, save_to: str | None = None) -> dict:
    """Run one part with a time limit; its output goes to the log (and to ``save_to``).
    Returns {part, rc, seconds, status}."""
    log.write(f"\n===== {name}: {' '.join(command)} (limit {timeout:.0f} s)\n")
    start = time.monotonic()
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    except OSError as exc:
        log.write(f"----- {name}: could not start ({exc})\n")
        return {"part": name, "rc": None, "seconds": 0.0, "status": f"not started: {exc}"}
    # a thread streams the output, so that a part that hangs still shows how far it got
    saved = open(save_to, "w") if save_to else None  # noqa: SIM115 - the reader thread writes it; closed below

    def stream():
        for line in proc.stdout:
            log.write(line)
            if saved:
                saved.write(line)

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    status = None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)    # the part and whatever it started
        proc.wait()
        status = "timed out"
    reader.join(timeout=10)
    if saved:
        saved.close()
    seconds = time.monotonic() - start
    status = status or ("ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})")
    log.write(f"----- {name}: {status} in {seconds:.1f} s\n")
    return {"part": name, "rc": proc.returncode, "seconds": round(seconds, 1), "status": status}


def _venv_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    env.update(extra or {})
    return env


def install_command(dry_run: bool) -> tuple[list[str], dict]:
    """The install part: venv, offline requirements, extension for this GPU's arch only."""
    script = r"""
set -u
cd "$1"
PY=${PY:-python3}
arch=$($PY -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}.{c[1]}')" 2>/dev/null)
if [ -n "$arch" ]; then export TORCH_CUDA_ARCH_LIST="$arch"; echo "building for sm_$arch only"; fi
export MAX_JOBS=$(nproc)
[ -x .venv/bin/python ] || $PY -m venv --system-site-packages .venv || exit 1
export PATH="$PWD/.venv/bin:$PATH"      # torch's extension build looks for ninja on PATH
command -v ninja >/dev/null || echo "gpu-check: no ninja: the extension builds one file at a time (slow)"
.venv/bin/python -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
# offline machine: what pip cannot fetch is reported and the run goes on (parts that need it fail)
.venv/bin/python -m pip install --quiet --retries 0 --timeout 5 -r requirements.txt \
    || echo "gpu-check: some requirements could not be installed (offline?); continuing"
start=$(date +%s)
if [ "${DRY_RUN:-0}" = 1 ] && .venv/bin/python -c "import attnfast._C" 2>/dev/null; then
    echo "dry run: the extension is already built"
else
    ATTNFAST_REQUIRE_EXT=1 .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . || exit 1
fi
echo "extension build: $(( $(date +%s) - start )) s"
.venv/bin/python -c "from attnfast import _C; print('attnfast._C WITH_CUDA =', _C.WITH_CUDA)"
"""
    return ["bash", "-c", script, "install", ROOT], _venv_env({"DRY_RUN": "1" if dry_run else "0"})


DEVICE_REPORT = r"""
import platform, subprocess, shutil, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton; print("triton", triton.__version__)
except Exception as exc:
    print("triton: not importable", exc)
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, "cc", f"{p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "memory GiB", round(p.total_memory / 2**30, 1))
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi"], capture_output=True, text=True).stdout)
else:
    print("nvidia-smi: not on PATH")
"""


def bench_command(script: str, flags: list[str], results_dir: str) -> list[str] | None:
    """The bench's command line, or None where the bench does not exist (yet)."""
    path = os.path.join(ROOT, "bench", script)
    if not os.path.exists(path):
        return None
    return [VENV_PY, path, *flags, "--results-dir", results_dir]


# --------------------------------------------------------------------------------------------
# Summary: each target of issues 5-11 (listed in issue 21) against what the benches measured
# --------------------------------------------------------------------------------------------
def _rows(results: dict, name: str) -> list[dict]:
    return results.get(name, {}).get("rows", [])


def _pick(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _ratio(fast: dict | None, slow: dict | None, key: str) -> float | None:
    if fast is None or slow is None or not fast.get(key) or not slow.get(key):
        return None
    return slow[key] / fast[key]


def targets(results: dict) -> list[dict]:
    """[{target, wanted, measured, met}] from the benches' JSON (None where not measured)."""
    att, dam, blk = _rows(results, "attention"), _rows(results, "damsm"), _rows(results, "blocks")
    trn, smp, ext = _rows(results, "train"), _rows(results, "sample"), _rows(results, "extension")
    head = next((r["size"] for r in att), None)           # the first (headline) attention size
    out = []

    def add(name, wanted, measured, detail=""):
        out.append({"target": name, "wanted": wanted, "measured": measured, "detail": detail,
                    "met": None if measured is None else measured >= wanted})

    for pass_name, floor in (("fwd", 0.8), ("fwd+bwd", 0.65)):
        row = _pick(att, size=head, backend="triton", dtype="bfloat16", **{"pass": pass_name})
        add(f"attention {pass_name} triton bf16: fraction of the byte floor at copy bandwidth", floor,
            row and row.get("frac_copy"), head or "")
    add("attention fwd triton vs torch.compile(reference), bf16", 2.0,
        _ratio(_pick(att, size=head, backend="triton", dtype="bfloat16", **{"pass": "fwd"}),
               _pick(att, size=head, backend="compiled", dtype="bfloat16", **{"pass": "fwd"}), "ms"), head or "")
    dsize = next((r["size"] for r in dam), None)
    for base, wanted in (("original", 50.0), ("vectorised", 5.0)):
        fast = [r for r in dam if r["backend"] == "triton" and r["pass"] == "fwd+bwd" and r["size"] == dsize]
        key = "x_original" if base == "original" else "x_vectorised"
        add(f"DAMSM words_loss fwd+bwd triton vs {base} (fp32 eager)", wanted,
            max((r.get(key) or 0 for r in fast), default=None) or None, dsize or "")
    ups = [r for r in blk if r["size"].startswith("up ") and r["variant"] == "fast" and r["pass"] == "fwd+bwd"]
    add("upBlock fwd+bwd fast vs eager original (same dtype)", 1.8,
        max((r.get("x_orig_same") or 0 for r in ups), default=None) or None,
        ups[0]["size"] if ups else "")
    best = max((r for r in trn if r.get("x_original")), key=lambda r: r["x_original"], default=None)
    add("train step vs fp32 eager original", 4.0, best and best["x_original"],
        best and f"{best['model']} {best['variant']} MFU {best.get('mfu', 0):.1%}")
    s64 = [r for r in smp if r.get("resolution") == 64]
    fastest = max(s64, key=lambda r: r.get("images_per_s") or 0, default=None)
    add("sampling vs eager fp32", 5.0, max((r.get("x_original") or 0 for r in s64), default=None) or None)
    add("sampling images/s at 64x64", 10000.0, fastest and fastest.get("images_per_s"),
        fastest and f"{fastest['variant']} B{fastest['batch']}")
    for row in ext:
        if row.get("cuda_over_triton") is not None:
            out.append({"target": f"CUDA C++ within 1.3x of Triton: {row['op']} {row['shape']}",
                        "wanted": "<= 1.3", "measured": row["cuda_over_triton"], "detail": "",
                        "met": row["cuda_over_triton"] <= 1.3})
    return out


def write_summary(out_dir: str, parts: list[dict], results: dict, meta: dict) -> str:
    rows = targets(results)
    lines = [(f"gpu-check {'DRY RUN (CPU, tiny shapes)' if meta['dry_run'] else ''} "
             f"{meta['device']} {meta['date']}"), "", "parts:"]
    lines += [f"  {p['part']:<12} {p['status']:<22} {p['seconds']:>7.1f} s" for p in parts]
    lines += ["", "targets (measured vs wanted; '-' = not measured in this run):"]
    for t in rows:
        measured = "-" if t["measured"] is None else f"{t['measured']:.3g}"
        verdict = {None: "n/a", True: "met", False: "MISSED"}[t["met"]]
        lines.append(f"  {verdict:<7} {measured:>9} (want {t['wanted']})  {t['target']}  {t['detail'] or ''}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump({"meta": meta, "parts": parts, "targets": rows}, f, indent=1, default=str)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for the (at most 8) result files")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: test the plumbing")
    parser.add_argument("--skip", nargs="*", default=[], help="parts to leave out (install, device, pytest, "
                        "or a bench name)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"seconds for the whole run (default {GPU_BUDGET_S} on a GPU, none in a dry run)")
    args = parser.parse_args(argv)
    if args.budget_s is None and not args.dry_run:
        args.budget_s = GPU_BUDGET_S
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    log = Log(os.path.join(out_dir, "gpu_check.log"))
    started, wall_start = time.monotonic(), time.time()
    scale = 2.0 if args.dry_run else 1.0
    parts = []
    results_dir = tempfile.mkdtemp(prefix="gpu_check_results_") if args.dry_run else os.path.join(ROOT, "bench", "results")

    deadline = started + (args.budget_s or float("inf"))

    def part(name, command, limit, env, **kw):
        """Run a part within its limit and what is left of the budget (skipped when nothing is)."""
        left = deadline - time.monotonic()
        if left < 5:
            log.write(f"\n===== {name}: skipped, the {args.budget_s:.0f} s budget is spent\n")
            parts.append({"part": name, "rc": None, "seconds": 0.0, "status": "skipped (budget)"})
        else:
            parts.append(run_part(log, name, command, min(limit * scale, left), env, **kw))

    if "install" not in args.skip:
        command, env = install_command(args.dry_run)
        part("install", command, INSTALL_TIMEOUT, env)
    if "device" not in args.skip:
        part("device", [VENV_PY, "-c", DEVICE_REPORT], DEVICE_TIMEOUT, _venv_env(),
             save_to=os.path.join(out_dir, "device.txt"))
    if "pytest" not in args.skip:
        command = [VENV_PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                   f"--junitxml={os.path.join(out_dir, 'pytest_gpu.xml')}"]
        if args.dry_run:                        # collecting every test module takes a while on 2 cores
            command.append(os.path.join(ROOT, "tests", "test_device_store.py"))
        part("pytest", command, PYTEST_TIMEOUT, _venv_env())
    for name, script, limit, gpu_flags, dry_flags in BENCHES:
        if name in args.skip:
            continue
        command = bench_command(script, dry_flags if args.dry_run else gpu_flags, results_dir)
        if command is None:
            log.write(f"\n===== {name}: bench/{script} does not exist here: skipped\n")
            parts.append({"part": name, "rc": None, "seconds": 0.0, "status": "absent"})
            continue
        part(name, command, limit, _venv_env())

    results = {}                               # the JSON the benches wrote during this run
    kind = "cpu" if args.dry_run else "cuda"
    for fname in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        path = os.path.join(results_dir, fname)
        if fname.endswith(f"_{kind}.json") and os.path.getmtime(path) >= wall_start:
            with open(path) as f:
                results[fname[: -len(f"_{kind}.json")].replace("_quick", "")] = json.load(f)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    device = next((d["meta"].get("device") for d in results.values() if d.get("meta")), "unknown device")
    meta = {"dry_run": args.dry_run, "device": device, "seconds": round(time.monotonic() - started, 1),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log.write("\n" + write_summary(out_dir, parts, results, meta))
    log.write(f"gpu-check: {meta['seconds']} s in all; files in {out_dir}: {sorted(os.listdir(out_dir))}\n")
    if args.dry_run:
        shutil.rmtree(results_dir, ignore_errors=True)
    return 0 if all(p["status"] in ("ok", "absent") for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
