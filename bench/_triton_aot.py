"""Ahead-of-time compilation of Triton kernel launches for GPUs that are not on this machine.

    with capture(module, ...) as launches:      # every @triton.jit function of the modules recorded
        some_launcher(meta_tensors, ...)         # the launcher runs its own config logic
    spec = specialize(launches[0], 90)           # what the JIT would compile for that launch on sm_90
    resources = compile_spec(spec)               # cubin compiled, its registers / shared / spills read

``capture`` swaps each kernel of the given modules for a recorder, so that a launcher called with
meta tensors (no data, no device) goes through all of its own choices (tile sizes, warps, stages,
constexpr flags, strides) and records ``kernel[grid](*args, **kwargs)`` instead of launching.
``specialize`` then asks Triton's own JIT binder what it would compile for those arguments (pointer
dtypes, 16-divisible integers and pointers, integers specialised as constants, launch options), the
same code path as a real launch, and ``compile_spec`` runs ``triton.compile`` for
``GPUTarget("cuda", arch, 32)`` and reads the cubin's resource usage with the ``cuobjdump`` that
ships with Triton.

Works with triton 3.6 (the GPU machines) and 3.9 (this machine): both build the JIT's binder with
``runtime.jit.create_function_from_signature`` and pack arguments with ``JITFunction._pack_args``;
:func:`aot_unavailable` says why not where a Triton lacks them or ships no ptxas/cuobjdump.
"""
import contextlib
import importlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from unittest import mock


@dataclass
class Launch:
    """One recorded ``kernel[grid](*args, **kwargs)``."""
    kernel: object                 # the triton JITFunction
    grid: tuple
    args: tuple
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    @property
    def module(self) -> str:
        return self.kernel.fn.__module__


class _Recorder:
    def __init__(self, kernel, launches: list):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append(Launch(self.kernel, tuple(grid), args, kwargs))
        return record


def jit_functions(module) -> dict:
    """{name: JITFunction} of a module's @triton.jit functions (kernels and device helpers)."""
    from triton.runtime.jit import JITFunction
    return {name: value for name, value in vars(module).items() if isinstance(value, JITFunction)}


@contextlib.contextmanager
def capture(*modules):
    """Within the block, launches of the modules' kernels are recorded (yielded list), not run."""
    launches: list[Launch] = []
    with contextlib.ExitStack() as stack:
        for module in modules:
            for name, kernel in jit_functions(module).items():
                stack.enter_context(mock.patch.object(module, name, _Recorder(kernel, launches)))
        yield launches


def aot_unavailable() -> str | None:
    """Why ahead-of-time compilation cannot run here (None when it can)."""
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource, make_backend  # noqa: F401
        from triton.runtime.jit import JITFunction, create_function_from_signature  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - an old or broken Triton
        return f"the Triton compiler API is missing ({exc.__class__.__name__}: {exc})"
    if not hasattr(JITFunction, "_pack_args"):
        return f"triton {triton.__version__} has no JITFunction._pack_args (the JIT's argument packing)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1: kernels are interpreted, not compiled (unset it)"
    for tool in ("ptxas", "cuobjdump"):
        if tool_path(tool) is None:
            return f"no {tool} (Triton's nvidia backend ships one; none found)"
    return None


def tool_path(name: str) -> str | None:
    """Triton's bundled CUDA tool ``name`` (ptxas, cuobjdump), else one on PATH."""
    try:
        import triton
        bundled = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    return shutil.which(name)


_BINDERS: dict = {}


def specialize(launch: Launch, arch: int) -> dict:
    """What Triton's JIT would compile for ``launch`` on ``sm_<arch>``: a picklable spec
    {module, name, arch, signature, constexprs, attrs, options} and its ``key`` (equal keys compile
    to the same binary)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    if (id(kernel), arch) not in _BINDERS:
        backend = make_backend(GPUTarget("cuda", arch, 32))
        _BINDERS[(id(kernel), arch)] = (backend, create_function_from_signature(kernel.signature,
                                                                               kernel.params, backend))
    backend, binder = _BINDERS[(id(kernel), arch)]
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, launch.kwargs, bound,
                                                              specialization, options)
    options = dict(options.__dict__)
    spec = {"module": launch.module, "name": launch.name, "arch": arch, "signature": signature,
            "constexprs": constexprs, "attrs": attrs, "options": options}
    spec["key"] = repr((launch.module, launch.name, arch, sorted(signature.items()),
                        sorted(constexprs.items()), sorted(attrs.items()), sorted(options.items())))
    return spec


def constexpr_values(spec: dict) -> dict:
    """{argument name: value} of the spec's constexpr arguments (tile sizes, flags, specialised
    integers), for reports."""
    names = list(spec["signature"])
    return {names[path[0]]: value for path, value in spec["constexprs"].items() if len(path) == 1}


_RES_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def res_usage(binary: bytes, suffix: str = ".cubin", cuobjdump: str | None = None) -> dict:
    """{function name: {registers, stack, static_shared, local}} of a cubin or object file, from
    ``cuobjdump -res-usage``."""
    cuobjdump = cuobjdump or tool_path("cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel" + suffix)
        with open(path, "wb") as f:
            f.write(binary)
        done = subprocess.run([cuobjdump, "-res-usage", path], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"cuobjdump -res-usage failed: {done.stderr.strip()[-500:]}")
    found, current, arch = {}, None, None
    for line in done.stdout.splitlines():
        if line.strip().startswith("arch = "):
            arch = line.split("=", 1)[1].strip()
        if "Function " in line:
            current = line.split("Function ", 1)[1].rstrip(":").strip()
        match = _RES_USAGE.search(line)
        if match and current:
            reg, stack, shared, local = map(int, match.groups())
            found[(current, arch)] = {"registers": reg, "stack": stack, "static_shared": shared, "local": local}
            current = None
    return found


def compile_spec(spec: dict) -> dict:
    """Compile ``spec`` (from :func:`specialize`) for its arch; returns {registers, spill_bytes
    (stack frame + local memory per thread: registers ptxas spilled; what Triton's own
    ``n_spills`` counts), shared (static + dynamic bytes per block), threads, num_stages, compile_s,
    compile_cpu_s} or {error} when it does not compile."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = getattr(importlib.import_module(spec["module"]), spec["name"])
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    try:
        compiled = triton.compile(ASTSource(kernel, spec["signature"], spec["constexprs"], spec["attrs"]),
                                  target=GPUTarget("cuda", spec["arch"], 32), options=spec["options"])
    except Exception as exc:  # noqa: BLE001 - a compile error is a result of the report, not its failure
        return {"error": f"{exc.__class__.__name__}: {str(exc)[-1500:]}"}
    seconds = time.perf_counter() - start
    usage = next(iter(res_usage(compiled.asm["cubin"]).values()))
    metadata = compiled.metadata
    return {"registers": usage["registers"], "spill_bytes": usage["stack"] + usage["local"],
            "shared": usage["static_shared"] + metadata.shared,
            "threads": metadata.num_warps * 32,
            "num_stages": getattr(metadata, "num_stages", None), "compile_s": round(seconds, 2),
            "compile_cpu_s": round(_cpu_seconds() - cpu_start, 2)}


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (ptxas, cuobjdump)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
