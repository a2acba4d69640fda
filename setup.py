"""Build script for attnfast.

The Python package installs everywhere. The C++/CUDA extension ``attnfast._C`` (sources in
``csrc/``) is built only where it can be: C++ sources need a C++17 compiler and torch's headers;
``.cu`` sources additionally need nvcc and a CUDA build of torch. When the extension cannot be
built, the install still succeeds (with a message saying why) and ``import attnfast`` falls back
to the reference/Triton backends (with one log line at dispatch time).

Environment:
  ATTNFAST_NO_EXT=1       skip the extension altogether
  ATTNFAST_REQUIRE_EXT=1  make a failed extension build fail the install (CI, packagers)
  MAX_JOBS=N              parallel compile jobs (torch's ninja build; default: all cores)
  TORCH_CUDA_ARCH_LIST    e.g. "9.0": build the CUDA kernels for these archs only (default sm_80, sm_90)

Always install with ``pip install --no-build-isolation -e .``: build isolation would download a
(CUDA) torch of several GB instead of using the one installed.
"""
import glob
import os
import re
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _say(message: str) -> None:
    print(f"attnfast: {message}", file=sys.stderr)


def _build_ext_class(base):
    """``base`` (torch's BuildExtension) that reports a failed extension build instead of failing
    the install, unless ATTNFAST_REQUIRE_EXT=1."""

    class BuildExtensionOrSkip(base):
        def run(self):
            try:
                super().run()
            except Exception as exc:  # compiler broken, headers missing, a compile error, ...
                if os.environ.get("ATTNFAST_REQUIRE_EXT") == "1":
                    raise
                _say(f"building the C++ extension attnfast._C failed ({exc.__class__.__name__}: "
                     f"{exc}); installing without it: the ops use the reference/Triton backends. "
                     "Set ATTNFAST_REQUIRE_EXT=1 to make this an error.")

    return BuildExtensionOrSkip


def _extension_modules():
    if os.environ.get("ATTNFAST_NO_EXT") == "1":
        _say("ATTNFAST_NO_EXT=1: skipping the C++ extension")
        return [], {}
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not cpp_sources:
        return [], {}
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler.split()[0]) is None:
        _say(f"skipping the C++ extension: no C++ compiler ({compiler!r} not found)")
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as exc:  # pragma: no cover - torch is a hard requirement of the package  # noqa: BLE001
        _say(f"skipping the C++ extension: torch is not importable ({exc})")
        return [], {}
    cu_sources = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    with_cuda = bool(cu_sources) and torch.version.cuda is not None and shutil.which("nvcc") is not None
    if cu_sources and not with_cuda:
        why = "torch is a CPU build" if torch.version.cuda is None else "nvcc is not on PATH"
        _say(f"building attnfast._C without its CUDA kernels ({why}): CPU kernels only")
    define_macros = [("ATTNFAST_WITH_CUDA", "1")] if with_cuda else []
    # No -std: torch adds the standard its headers need (C++20 for torch >= 2.10; our sources are
    # C++17 and build either way). -fno-trapping-math and -fno-math-errno let GCC vectorise the
    # clamps of csrc/simd.h's exp and sqrt; they change no result (only FP exceptions and errno).
    # -g0: no debug information (Python's default -g makes the build slower and the module 10x larger).
    extra = {"cxx": ["-O3", "-g0", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"]}
    if with_cuda:
        # sm_80 and sm_90, unless TORCH_CUDA_ARCH_LIST (torch's own variable) names the archs: make
        # gpu-check builds for the lent GPU's arch only (one device code per .cu file, not two).
        extra["nvcc"] = ["-O3"] + ([] if os.environ.get("TORCH_CUDA_ARCH_LIST") else
                                   ["-gencode=arch=compute_80,code=sm_80",
                                    "-gencode=arch=compute_90,code=sm_90"])
        ext_cls = cpp_extension.CUDAExtension
        sources = cpp_sources + cu_sources
    else:
        ext_cls = cpp_extension.CppExtension
        sources = cpp_sources
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    ext = ext_cls(
        name="attnfast._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        # rpath to torch's libraries, so that `import attnfast._C` works before `import torch`.
        extra_link_args=["-fopenmp", f"-Wl,-rpath,{torch_lib}"],
    )
    base = cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)
    return [ext], {"build_ext": _build_ext_class(base)}


def _version() -> str:
    """attnfast.__version__, the one place the version is written."""
    with open(os.path.join(ROOT, "attnfast", "__init__.py")) as handle:
        return re.search(r'^__version__ = "([^"]+)"', handle.read(), re.MULTILINE).group(1)


ext_modules, cmdclass = _extension_modules()

setup(
    name="attnfast",
    version=_version(),
    description="AttnGAN and DAMSM as a performance engine: fused attention/DAMSM/block kernels, "
                "training and sampling stack, built-in shapes dataset",
    python_requires=">=3.11",
    packages=[
        "attnfast", "attnfast.ops", "attnfast.reference", "attnfast.models", "attnfast.data",
        "attnfast.metrics", "attnfast.engine", "attnfast.kernels", "attnfast.trainer", "attnfast.generation",
        "attnfast.serving",
    ],
    package_dir={"attnfast.kernels": "kernels"},
    package_data={"attnfast.serving": ["static/*.html", "static/*.js", "static/*.css"]},
    entry_points={"console_scripts": ["attnfast = attnfast.cli:main"]},
    install_requires=["torch>=2.1", "numpy", "pillow", "pyyaml", "tqdm"],
    extras_require={"triton": ["triton>=3.0"], "metrics": ["torchmetrics", "torch-fidelity"],
                    "serve": ["fastapi", "uvicorn", "prometheus_client"],
                    "test": ["pytest"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
