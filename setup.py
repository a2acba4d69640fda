"""Build script for attnfast.

The Python package installs everywhere. The C++/CUDA extension ``attnfast._C`` (sources in
``csrc/``) is built only where it can be: C++ sources need a compiler and torch's headers; ``.cu``
sources additionally need nvcc and a CUDA build of torch. Set ``ATTNFAST_NO_EXT=1`` to skip it.
When the extension cannot be built the install still succeeds and ``import attnfast`` falls back to
the reference/Triton backends (with one log line at dispatch time).
"""
import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _extension_modules():
    if os.environ.get("ATTNFAST_NO_EXT") == "1":
        return [], {}
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not cpp_sources:
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as exc:  # pragma: no cover - torch is a hard requirement of the package
        print(f"attnfast: skipping the C++ extension ({exc})", file=sys.stderr)
        return [], {}
    cu_sources = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    with_cuda = bool(cu_sources) and torch.version.cuda is not None and shutil.which("nvcc") is not None
    define_macros = [("ATTNFAST_WITH_CUDA", "1")] if with_cuda else []
    extra = {"cxx": ["-O3", "-std=c++17", "-fopenmp"]}
    if with_cuda:
        extra["nvcc"] = ["-O3", "-std=c++17", "--use_fast_math",
                         "-gencode=arch=compute_80,code=sm_80",
                         "-gencode=arch=compute_90,code=sm_90"]
        ext_cls = cpp_extension.CUDAExtension
        sources = cpp_sources + cu_sources
    else:
        ext_cls = cpp_extension.CppExtension
        sources = cpp_sources
    ext = ext_cls(
        name="attnfast._C",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _extension_modules()

setup(
    name="attnfast",
    version="0.1.0",
    description="AttnGAN and DAMSM as a performance engine: fused attention/DAMSM/block kernels, "
                "training and sampling stack, built-in shapes dataset",
    python_requires=">=3.11",
    packages=[
        "attnfast", "attnfast.ops", "attnfast.reference", "attnfast.models", "attnfast.data",
        "attnfast.metrics", "attnfast.engine", "attnfast.kernels",
    ],
    package_dir={"attnfast.kernels": "kernels"},
    install_requires=["torch>=2.1", "numpy", "pillow", "pyyaml", "tqdm"],
    extras_require={"triton": ["triton>=3.0"], "metrics": ["torchmetrics", "torch-fidelity"],
                    "test": ["pytest"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
