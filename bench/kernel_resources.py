"""Kernel resource report (issue 18): every kernel of attnfast compiled ahead of time for sm_80
(A100) and sm_90 (H100/H200), with no GPU, and what each binary needs of an SM.

    python bench/kernel_resources.py [--archs 80 90] [--jobs N] [--json PATH] [--check] [--no-nvcc]

Triton (kernels/): every launch of ``_kernel_cases.cases()`` (the launchers called on meta tensors
at the model's shapes and beyond, fp32/bf16/fp16, every flag) is specialised as Triton's JIT would
(``_triton_aot.specialize``), identical compile keys are compiled once, in a process pool, and each
cubin's registers per thread, shared memory per block (static + Triton's dynamic), and spills
(stack frame + local memory per thread, ``cuobjdump -res-usage``) are read.
CUDA C++ (csrc/*.cu): ``nvcc -c -Xptxas -v`` for sm_80 and sm_90; threads per block and dynamic
shared memory from ``attnfast._C.cuda_launch_config`` (csrc/launch_config.h, what the launchers use).
From those: the theoretical occupancy (blocks and warps per SM) on A100 and H100 (``_gpus``).

Problems (``--check`` exits 1 on any; tests/test_kernel_resources.py asserts there are none):
a compile error; shared memory over the per-block limit (A100 163 KB, H100 227 KB); zero resident
blocks; spills in a configuration of the model's own shapes (tier "model") beyond SPILL_EXCEPTIONS.

Writes the JSON (default bench/results/kernel_resources.json) under the key of the running triton
version, keeping the other versions' sections: ``make kernel-report`` runs it with this machine's
triton and ``make kernel-report-triton36`` with triton 3.6, the GPU machines' version.
"""
import argparse
import collections
import datetime
import glob
import json
import multiprocessing
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import print_table  # noqa: E402
from _gpus import ARCHS, occupancy  # noqa: E402

ROOT = os.path.dirname(HERE)
DEFAULT_JSON = os.path.join(HERE, "results", "kernel_resources.json")
NVCC_SOURCES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "csrc", "*.cu")))
OCCUPANCY_GPUS = {"A100": 80, "H100": 90}

# Spills tolerated at the model's shapes: (kernel, arch, a substring of a case label) -> the most
# spill bytes (stack frame) per thread allowed, the largest measured under triton 3.6 and 3.9 (the
# two versions' ptxas allocate differently). Each is a rare variant or has no spill-free
# configuration; bench/results/kernel_resources.json has the bytes per version.
SPILL_EXCEPTIONS: dict[tuple[str, int, str], int] = {
    # attention backward with a gradient for the attention maps (the generator never passes one:
    # its maps feed no loss) and the attngan mask on strided regions: 255 registers
    ("_bwd_kernel", 80, "fp32 bwd mask=attngan dattn strided"): 16,      # 3.6 and 3.9
    ("_bwd_kernel", 90, "fp32 bwd mask=attngan dattn strided"): 64,      # 3.9 (3.6: 8)
    ("_bwd_kernel", 90, "fp32 bwd mask=None dattn"): 24,                 # 3.9 (3.6: 0)
    ("_bwd_kernel", 80, "bf16 bwd mask=attngan dattn strided"): 24,      # 3.6 (3.9: 0)
    ("_bwd_kernel", 80, "fp16 bwd mask=attngan dattn strided"): 24,      # 3.6 (3.9: 0)
    # DAMSM backward in fp32 (pretraining without AMP): six (T x D) fp32 tiles per program; the
    # least-spilling configuration found (kernels/damsm.py _GPU_CONFIGS). bf16/fp16 do not spill.
    ("_damsm_bwd_kernel", 80, "fp32 bwd"): 832,                          # 3.6 (3.9: 792)
    ("_damsm_bwd_kernel", 90, "fp32 bwd"): 840,                          # 3.9 (3.6: 800)
}


# --------------------------------------------------------------------------------------------
# Triton
# --------------------------------------------------------------------------------------------
def _worker_init(paths: list[str]) -> None:
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


def _dtype_of(signature: dict) -> str:
    """The kernel's data dtype: the first pointer argument's element type."""
    return next((v[1:] for v in signature.values() if v.startswith("*")), "-")


def _config_text(spec: dict, kernel) -> str:
    """The launcher-chosen constexprs (declared tl.constexpr parameters) and options, compact."""
    from _triton_aot import constexpr_values
    declared = {p.name for p in kernel.params if p.is_constexpr}
    values = {k: v for k, v in constexpr_values(spec).items() if k in declared}
    flags = [k for k, v in values.items() if v is True]
    sizes = [f"{k}={v}" for k, v in values.items() if not isinstance(v, bool)]
    options = [f"w{spec['options']['num_warps']}", f"s{spec['options']['num_stages']}"]
    return " ".join(sizes + flags + options)


def triton_report(archs: list[int], jobs: int, progress=print) -> tuple[list[dict], list[str]]:
    """Rows (one per distinct compiled binary) and the names of every kernel in kernels/."""
    import _kernel_cases
    from _triton_aot import compile_spec, jit_functions, specialize
    from triton.compiler import ASTSource

    start = time.perf_counter()
    specs, uses = {}, collections.defaultdict(list)
    for case in _kernel_cases.cases():
        for launch in case.launches:
            for arch in archs:
                spec = specialize(launch, arch)
                # Triton's own cache key: source hash (kernel + callees), signature, constants, attrs
                source = ASTSource(launch.kernel, spec["signature"], spec["constexprs"], spec["attrs"])
                key = repr((source.hash(), arch, sorted(spec["options"].items())))
                specs.setdefault(key, (spec, launch.kernel))
                uses[key].append(case)
    progress(f"triton: {len(specs)} distinct binaries for sm_{'/sm_'.join(map(str, archs))} "
             f"({time.perf_counter() - start:.0f} s to enumerate), compiling with {jobs} processes")
    keys = sorted(specs, key=lambda k: -len(uses[k]))
    context = multiprocessing.get_context("spawn")      # no fork of a process holding torch threads
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(list(sys.path),)) as pool:
        results = list(pool.map(compile_spec, [specs[k][0] for k in keys], chunksize=1))
    progress(f"triton: compiled in {time.perf_counter() - start:.0f} s")
    rows = []
    for key, result in zip(keys, results, strict=True):
        spec, kernel = specs[key]
        cases = uses[key]
        row = {"source": "triton", "kernel": spec["name"], "module": spec["module"].split(".")[-1],
               "arch": spec["arch"], "dtype": _dtype_of(spec["signature"]),
               "config": _config_text(spec, kernel),
               "tier": "model" if any(c.tier == "model" for c in cases) else "range",
               "cases": len(cases), "example": cases[0].label,
               "model_cases": sorted({c.label for c in cases if c.tier == "model"})[:8], **result}
        rows.append(_with_occupancy(row))
    kernels = sorted(name for module in _kernel_cases.kernel_modules()
                     for name in jit_functions(module) if name.endswith("_kernel"))
    return rows, kernels


# --------------------------------------------------------------------------------------------
# CUDA C++
# --------------------------------------------------------------------------------------------
_PTXAS_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers.*?(?:(\d+) bytes smem)?")


_CUDA_DTYPES = {"float": "fp32", "__nv_bfloat16": "bf16", "bfloat16": "bf16", "__half": "fp16"}


def _dtype_name(name: str) -> str:
    """Triton's short dtype names (fp32, bf16, fp16) for a C++ template argument."""
    return _CUDA_DTYPES.get(name, name)


def _demangle(names: list[str]) -> dict:
    filt = shutil.which("c++filt")
    if not filt or not names:
        return {n: n for n in names}
    done = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, timeout=60, check=False)
    return dict(zip(names, done.stdout.splitlines(), strict=True)) if done.returncode == 0 else {n: n for n in names}


def _launch_config(function: str, words: int):
    """(threads, dynamic shared bytes) of a csrc kernel, from the extension (None if not built)."""
    try:
        from attnfast import _C
        return _C.cuda_launch_config(function, words)
    except (ImportError, AttributeError):
        return None


def nvcc_report(archs: list[int], words: int) -> tuple[list[dict], str | None]:
    """Rows for the CUDA C++ kernels, and why there are none (no nvcc) or None."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return [], "nvcc is not on PATH"
    rows = []
    for source in NVCC_SOURCES:
        with tempfile.TemporaryDirectory() as tmp:
            command = [nvcc, "-c", "-O3", "-std=c++17", f"-I{os.path.join(ROOT, 'csrc')}", "-Xptxas", "-v"]
            for arch in archs:
                command += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
            command += [os.path.join(ROOT, "csrc", source), "-o", os.path.join(tmp, "k.o")]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            rows.append({"source": "nvcc", "kernel": source, "arch": None, "tier": "model",
                         "error": done.stderr[-2000:]})
            continue
        entries, current = [], None
        for line in (done.stdout + done.stderr).splitlines():
            match = _PTXAS_ENTRY.search(line)
            if match:
                current = {"mangled": match.group(1), "arch": int(match.group(2)[3:]),
                           "spill_bytes": 0, "shared": 0}
                entries.append(current)
            elif current is not None and (match := _PTXAS_SPILLS.search(line)):
                current["spill_bytes"] = int(match.group(1))         # the stack frame, as for Triton
            elif current is not None and "Used" in line and (match := _PTXAS_USED.search(line)):
                current["registers"] = int(match.group(1))
                smem = re.search(r"(\d+) bytes smem", line)
                current["shared"] = int(smem.group(1)) if smem else 0
        names = _demangle([e["mangled"] for e in entries])
        for entry in entries:
            pretty = names[entry.pop("mangled")]
            # "void attnfast::cuda::(anonymous namespace)::attention_forward_kernel<float>(...)"
            match = re.search(r"(\w+)\s*(?:<([^<>]*)>)?\((?!anonymous)", pretty)
            function, template = (match.group(1), match.group(2)) if match else (pretty, None)
            config = _launch_config(function, words)
            row = {"source": "nvcc", "kernel": function, "module": source, "arch": entry["arch"],
                   "dtype": _dtype_name(template or "float"),
                   "config": f"T={words}", "tier": "model", "cases": 1, "example": pretty, **entry}
            if config is not None:
                threads, dynamic = config
                row.update(threads=threads, shared=row["shared"] + dynamic)
            rows.append(_with_occupancy(row))
    return rows, None


# --------------------------------------------------------------------------------------------
# Occupancy, problems, output
# --------------------------------------------------------------------------------------------
def _with_occupancy(row: dict) -> dict:
    if "error" in row or "threads" not in row:
        return row
    for gpu, arch in OCCUPANCY_GPUS.items():
        if arch == row["arch"]:
            occ = occupancy(ARCHS[arch], row["threads"], row["registers"], row["shared"])
            row.update({"blocks_per_sm": occ["blocks"], "warps_per_sm": occ["warps"],
                        "occupancy": occ["warps_fraction"], "limited_by": occ["limited_by"], "gpu": gpu})
    return row


def spill_allowance(row: dict) -> int:
    """Spill bytes allowed for the row (0 unless SPILL_EXCEPTIONS names one of its cases)."""
    allowed = 0
    for (kernel, arch, label), limit in SPILL_EXCEPTIONS.items():
        if kernel == row["kernel"] and arch == row["arch"] and any(label in c for c in row.get("model_cases", [])):
            allowed = max(allowed, limit)
    return allowed


def problems(rows: list[dict], kernels: list[str]) -> list[str]:
    """Everything the resource test fails on, one line each."""
    found = []
    seen = {r["kernel"] for r in rows if r["source"] == "triton"}
    found += [f"{name}: no launch of this kernel in _kernel_cases" for name in kernels if name not in seen]
    for r in rows:
        where = f"{r['kernel']} sm_{r['arch']} {r.get('dtype', '')} [{r.get('config', '')}] ({r.get('example', '')})"
        if "error" in r:
            found.append(f"{where}: does not compile: {r['error'][-600:]}")
            continue
        limit = ARCHS[r["arch"]].smem_per_block
        if r["shared"] > limit:
            found.append(f"{where}: {r['shared']} bytes of shared memory > {limit} per block")
        if "blocks_per_sm" in r and r["blocks_per_sm"] == 0:
            found.append(f"{where}: no block fits on an SM ({r['registers']} registers x {r['threads']} "
                         f"threads, {r['shared']} bytes shared)")
        if r["tier"] == "model" and r["spill_bytes"] > spill_allowance(r):
            found.append(f"{where}: spills {r['spill_bytes']} bytes per thread at the model's shapes "
                         f"(allowed {spill_allowance(r)}; e.g. {r.get('model_cases', [''])[0]})")
    return found


def print_report(rows: list[dict]) -> None:
    shown = sorted((r for r in rows if "error" not in r),
                   key=lambda r: (r["source"], r["module"], r["kernel"], r["arch"], r["tier"] != "model",
                                  r["dtype"], r["config"]))
    print_table(shown, [("kernel", "kernel", ""), ("arch", "sm", ""), ("dtype", "dtype", ""),
                        ("tier", "tier", ""), ("config", "config", ""), ("threads", "thr", ""),
                        ("registers", "regs", ""), ("shared", "smem B", ""), ("spill_bytes", "spill B", ""),
                        ("blocks_per_sm", "blk/SM", ""), ("warps_per_sm", "warps/SM", ""),
                        ("limited_by", "limit", ""), ("cases", "uses", ""), ("example", "e.g.", "")])
    for r in rows:
        if "error" in r:
            print(f"COMPILE ERROR {r['kernel']} sm_{r['arch']} ({r.get('example', '')}): {r['error'][-400:]}")


def markdown_summary(section: dict, arch: int = 90) -> str:
    """The table of docs/kernels.md: per kernel and dtype, over the binaries of the model's shapes on ``sm_<arch>``,
    the range of registers, the most shared memory and spill bytes, and the range of warps per SM."""
    groups = collections.defaultdict(list)
    for r in section["rows"]:
        if r.get("arch") == arch and r.get("tier") == "model" and "error" not in r:
            groups[(r["source"] != "triton", r["module"], r["kernel"], _dtype_name(r["dtype"]))].append(r)

    def span(values):
        low, high = min(values), max(values)
        return f"{low}" if low == high else f"{low}-{high}"

    lines = [(f"| kernel (sm_{arch}, model shapes) | dtype | binaries | registers | shared KB | spill B | "
             f"warps/SM ({'H100' if arch == 90 else 'A100'}) |"), "|---|---|---|---|---|---|---|"]
    for (cuda, module, kernel, dtype), rows in sorted(groups.items()):
        name = f"{'csrc/' if cuda else 'kernels/'}{module}{'' if cuda else '.py'} `{kernel}`"
        lines.append(f"| {name} | {dtype} | {len(rows)} | {span([r['registers'] for r in rows])} | "
                     f"{max(r['shared'] for r in rows) / 1024:.1f} | {max(r['spill_bytes'] for r in rows)} | "
                     f"{span([r.get('warps_per_sm', 0) for r in rows])} |")
    return "\n".join(lines)


def _versions() -> dict:
    import triton
    nvcc = shutil.which("nvcc")
    nvcc_version = None
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
        match = re.search(r"release ([\d.]+), V([\d.]+)", out)
        nvcc_version = match.group(2) if match else out.strip().splitlines()[-1]
    ptxas = None
    from _triton_aot import tool_path
    if tool_path("ptxas"):
        out = subprocess.run([tool_path("ptxas"), "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
        match = re.search(r"V([\d.]+)", out)
        ptxas = match.group(1) if match else None
    return {"triton": triton.__version__, "triton_ptxas": ptxas, "nvcc": nvcc_version,
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def write_json(path: str, section: dict) -> None:
    """Store ``section`` under its triton version in ``path``, keeping other versions' sections."""
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data.setdefault("about", "bench/kernel_resources.py: kernels compiled ahead of time for sm_80/sm_90; "
                             "registers per thread, shared bytes per block, spill bytes (stack frame) per thread, "
                             "theoretical blocks/warps per SM on A100 (sm_80) and H100 (sm_90)")
    data.setdefault("by_triton_version", {})[section["versions"]["triton"]] = section
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", type=int, nargs="+", default=[80, 90], choices=sorted(ARCHS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
    parser.add_argument("--json", default=DEFAULT_JSON, help="the JSON to update (its triton version's key)")
    parser.add_argument("--check", action="store_true", help="exit 1 when there is a problem")
    parser.add_argument("--no-nvcc", action="store_true", help="skip the CUDA C++ kernels")
    parser.add_argument("--quiet", action="store_true", help="no table, only problems and a summary")
    parser.add_argument("--markdown", action="store_true",
                        help="compile nothing: print the kernel resources table of docs/kernels.md from --json for each triton version")
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.json) as f:
            for version, section in json.load(f)["by_triton_version"].items():
                print(f"triton {version}:\n{markdown_summary(section)}\n")
        return 0

    from _triton_aot import aot_unavailable
    why = aot_unavailable()
    if why:
        print(f"SKIP: cannot compile Triton kernels ahead of time here: {why}")
        return 0
    import _kernel_cases
    start = time.perf_counter()
    rows, kernels = triton_report(args.archs, max(1, args.jobs))
    nvcc_note = "skipped (--no-nvcc)"
    if not args.no_nvcc:
        words = _kernel_cases.model_sizes()["birds"]["words"]
        cuda_rows, nvcc_note = nvcc_report(args.archs, words)
        rows += cuda_rows
    found = problems(rows, kernels)
    if not args.quiet:
        print_report(rows)
    section = {"versions": _versions(), "archs": args.archs, "kernels": kernels,
               "spill_exceptions": [{"kernel": k, "arch": a, "case": c, "bytes": b}
                                    for (k, a, c), b in SPILL_EXCEPTIONS.items()],
               "nvcc": nvcc_note or "ok", "seconds": round(time.perf_counter() - start, 1),
               "triton_compile_cpu_s": round(sum(r.get("compile_cpu_s", 0) for r in rows), 1),
               "problems": found, "rows": rows}
    write_json(args.json, section)
    print(f"{len(rows)} binaries ({sum(r['source'] == 'triton' for r in rows)} Triton, "
          f"{sum(r['source'] == 'nvcc' for r in rows)} CUDA C++) in {section['seconds']} s "
          f"(Triton compiles: {section['triton_compile_cpu_s']} CPU s); "
          f"{len(found)} problems; wrote {args.json} [triton {section['versions']['triton']}]")
    for line in found:
        print("PROBLEM: " + line)
    return 1 if (found and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
