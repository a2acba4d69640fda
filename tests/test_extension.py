"""The C++/CUDA extension attnfast._C (csrc/): the ``cpu`` and ``cuda`` backends against the float64
reference over a shape/dtype matrix, gradients included; the library without the extension; the
CUDA glue compiled where nvcc exists, so that it cannot rot on CPU-only CI (the .cu files themselves:
tests/test_kernel_resources.py compiles them for sm_80 and sm_90 and checks their resources)."""
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tolerances import assert_close

from attnfast import ops
from attnfast import reference as R

try:
    from attnfast import _C
except ImportError as exc:  # a build-less install: only the fallback and compile tests run
    _C, _WHY = None, f"attnfast._C is not built ({exc})"
else:
    _WHY = ""

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
needs_ext = pytest.mark.skipif(_C is None, reason=_WHY)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _backend(device: str) -> str:
    if _C is None:
        pytest.skip(_WHY)
    if device == "cuda" and not _C.WITH_CUDA:
        pytest.skip("attnfast._C was built without CUDA")
    return device


def _rand(*shape, dtype, device, strided=False):
    """Random values rounded to ``dtype``; ``strided`` gives a non-contiguous tensor of that shape
    (the last two dims stored transposed)."""
    if not strided:
        return torch.randn(*shape, device=device).to(dtype)
    base = torch.randn(*shape[:-2], shape[-1], shape[-2], device=device).to(dtype)
    return base.transpose(-1, -2)


def _leaf(t):
    return t.detach().requires_grad_()


def _check(got, ref64, ref_dtype, dtype, name):
    assert got.dtype == dtype, f"{name}: dtype {got.dtype} != {dtype}"
    assert_close(got, ref64, dtype=dtype, baseline=ref_dtype, name=name)


# ---------------------------------------------------------------- word–region attention
ATTN_SHAPES = [  # (B, C, H, W, T)
    (1, 4, 1, 1, 1),
    (3, 8, 5, 7, 18),    # odd N = 35 < one tile
    (2, 16, 9, 29, 33),  # N = 261: several tiles and a ragged tail
    (4, 6, 3, 11, 18),
]


def _word_mask(kind, batch, num_words, device):
    if kind == "none":
        return None
    lengths = torch.randint(1, num_words + 1, (batch,))
    if kind == "padded_row":
        lengths[batch // 2] = 0  # a caption with no word: its regions give zeros
    return (torch.arange(num_words)[None, :] >= lengths[:, None]).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=str)
@pytest.mark.parametrize("mask_kind, mask_mode, strided", [
    ("none", "correct", False), ("lengths", "correct", True), ("padded_row", "correct", False),
    ("lengths", "attngan", False), ("padded_row", "attngan", True),
])
def test_attention_matches_reference(device, dtype, shape, mask_kind, mask_mode, strided):
    backend = _backend(device)
    batch, channels, height, width, num_words = shape
    h = _rand(batch, channels, height, width, dtype=dtype, device=device, strided=strided)
    words = _rand(batch, channels, num_words, dtype=dtype, device=device, strided=strided)
    mask = _word_mask(mask_kind, batch, num_words, device)
    dout = _rand(batch, channels, height, width, dtype=dtype, device=device)
    dattn = _rand(batch, num_words, height, width, dtype=dtype, device=device)

    def run(fn, a, b):
        a, b = _leaf(a), _leaf(b)
        out, attn = fn(a, b, mask, mask_mode=mask_mode, return_attn=True)
        ((out * dout.to(out.dtype)).sum() + (attn * dattn.to(attn.dtype)).sum()).backward()
        return out, attn, a.grad, b.grad

    def kernel(a, b, m, **kw):
        return ops.word_region_attention(a, b, m, backend=backend, **kw)

    got = run(kernel, h, words)
    ref64 = run(R.word_region_attention, h.double(), words.double())
    base = run(R.word_region_attention, h, words)
    for name, g, r, b in zip(("out", "attn", "dh", "dwords"), got, ref64, base, strict=True):
        _check(g, r, b, dtype, name)
    if mask_kind == "padded_row" and mask_mode == "correct":
        assert torch.all(got[0][batch // 2] == 0) and torch.all(got[1][batch // 2] == 0)


@pytest.mark.parametrize("device", DEVICES)
def test_attention_without_attn_output_and_gradient_of_out_only(device):
    backend = _backend(device)
    h = _leaf(torch.randn(2, 5, 4, 3, device=device))
    words = _leaf(torch.randn(2, 5, 7, device=device))
    out = ops.word_region_attention(h, words, backend=backend)
    out.square().sum().backward()
    h64, w64 = _leaf(h.double()), _leaf(words.double())
    R.word_region_attention(h64, w64).square().sum().backward()
    assert_close(out, R.word_region_attention(h64, w64).detach())
    assert_close(h.grad, h64.grad), assert_close(words.grad, w64.grad)


# ---------------------------------------------------------------- DAMSM all-pair scores
DAMSM_SHAPES = [  # (B_img, B_sent, D, H, W, T)
    (3, 5, 16, 3, 3, 1),
    (4, 4, 32, 17, 17, 18),
    (2, 6, 8, 5, 3, 33),
    (5, 3, 24, 7, 9, 18),
]


def _cap_lens(batch, num_words):
    lens = torch.randint(1, num_words + 1, (batch,))
    lens[0], lens[-1] = 1, num_words  # both ends of [1, T] every time
    return lens


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", DAMSM_SHAPES, ids=str)
@pytest.mark.parametrize("strided", [False, True])
def test_damsm_scores_match_reference(device, dtype, shape, strided):
    backend = _backend(device)
    n_img, n_sent, dim, height, width, num_words = shape
    regions = _rand(n_img, dim, height * width, dtype=dtype, device=device, strided=strided)
    words = _rand(n_sent, dim, num_words, dtype=dtype, device=device, strided=strided)
    lens = _cap_lens(n_sent, num_words).to(device)
    dscores = _rand(n_img, n_sent, dtype=dtype, device=device)

    def run(fn, a, b):
        a, b = _leaf(a), _leaf(b)
        scores, attn = fn(a, b, lens, 4.0, 5.0, return_attn=True)
        (scores * dscores.to(scores.dtype)).sum().backward()
        return scores, attn, a.grad, b.grad

    def kernel(a, b, *args, **kw):
        return ops.damsm_scores(a, b, *args, backend=backend, **kw)

    got = run(kernel, regions, words)
    ref64 = run(R.damsm_scores, regions.double(), words.double())
    base = run(R.damsm_scores, regions, words)
    for name, g, r, b in zip(("scores", "attn", "dregions", "dwords"), got, ref64, base, strict=True):
        _check(g, r, b, dtype, name)
    assert not got[1].requires_grad


@needs_ext
@pytest.mark.parametrize("padded", [False, True])
def test_damsm_word_layouts_agree(padded):
    """The CPU runs the compact word layout, CUDA the padded one: both on the CPU here, so the
    padded layout's handling of dead columns is tested without a GPU."""
    regions, words = torch.randn(4, 16, 20), torch.randn(5, 16, 9)
    lens = _cap_lens(5, 9)
    scores, attn, _ = _C.damsm_forward(regions, words, lens, 4.0, 5.0, True, padded)
    dscores = torch.randn_like(scores)
    dregions, dwords = _C.damsm_backward(regions, words, lens, 4.0, 5.0, dscores, padded)
    r64, w64 = _leaf(regions.double()), _leaf(words.double())
    ref_scores, ref_attn = R.damsm_scores(r64, w64, lens, 4.0, 5.0, return_attn=True)
    (ref_scores * dscores.double()).sum().backward()
    for got, ref in ((scores, ref_scores), (attn, ref_attn), (dregions, r64.grad), (dwords, w64.grad)):
        assert_close(got, ref.detach())
    padding = torch.arange(9)[None, :] >= lens[:, None]
    assert torch.all(dwords.permute(0, 2, 1)[padding] == 0)


@needs_ext
def test_words_loss_matches_original_loop():
    batch, dim, num_words = 6, 32, 18
    img = torch.randn(batch, dim, 17, 17)
    words = torch.randn(batch, dim, num_words)
    lens, labels = _cap_lens(batch, num_words), torch.arange(batch)
    class_ids = [1, 2, 1, 3, 4, 5]

    def run(fn, **kw):
        a, b = _leaf(img), _leaf(words)
        loss0, loss1, maps = fn(a, b, labels, lens, class_ids, batch, **kw)
        (loss0 + loss1).backward()
        return loss0, loss1, a.grad, b.grad, maps

    got = run(ops.words_loss, backend="cpu")
    ref = run(R.words_loss_original)
    for name, g, r in zip(("loss0", "loss1", "dimg", "dwords"), got[:4], ref[:4], strict=True):
        assert_close(g, r, name=name)
    assert [m.shape for m in got[4]] == [m.shape for m in ref[4]]


# ---------------------------------------------------------------- dispatch and errors
@needs_ext
def test_auto_picks_the_extension_for_cpu_tensors():
    from attnfast.ops import attention, damsm
    assert attention.BACKENDS.pick("auto", torch.device("cpu"))[0] == "cpu"
    assert damsm.BACKENDS.pick("auto", torch.device("cpu"))[0] == "cpu"


@needs_ext
def test_float64_runs_the_reference_math():
    h, words = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    assert torch.equal(ops.word_region_attention(h, words, backend="cpu"),
                       R.word_region_attention(h, words))


@needs_ext
def test_extension_argument_errors_name_the_argument():
    h, words = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5)
    with pytest.raises(RuntimeError, match="h must be float32, bfloat16 or float16"):
        _C.attention_forward(h.double(), words.double(), None, False, False)
    with pytest.raises(RuntimeError, match=r"mask must have shape \(B, T\) = \(2, 5\)"):
        _C.attention_forward(h, words, torch.zeros(2, 4, dtype=torch.bool), False, False)
    with pytest.raises(RuntimeError, match=r"cap_lens must lie in \[1, T=5\]"):
        _C.damsm_forward(h.flatten(2), words, torch.tensor([0, 5]), 4.0, 5.0, False, None)


HIDE_EXTENSION = textwrap.dedent("""
    import importlib.abc, logging, sys

    class HideExtension(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "attnfast._C":
                raise ImportError("hidden by the test")
            return None

    sys.meta_path.insert(0, HideExtension())
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("attnfast").addHandler(handler)

    import torch
    import attnfast, attnfast.ops as ops
    from attnfast import reference as R
    h, words = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 5)
    for _ in range(3):
        out = ops.word_region_attention(h, words)
        scores = ops.damsm_scores(h.flatten(2), words, torch.tensor([5, 2]))
    assert torch.equal(out, R.word_region_attention(h, words))
    assert torch.equal(scores, R.damsm_scores(h.flatten(2), words, torch.tensor([5, 2])))
    lines = [r.getMessage() for r in records]
    assert len(lines) == 2 and all("reference backend" in m and "attnfast._C" in m for m in lines), lines
    try:
        ops.word_region_attention(h, words, backend="cpu")
    except RuntimeError as exc:
        assert "backend 'cpu' cannot run here" in str(exc) and "not built" in str(exc), exc
    else:
        raise AssertionError("backend='cpu' ran without the extension")
    assert "attnfast._C" not in sys.modules
    print("fallback ok")
""")


def test_library_works_with_the_extension_hidden():
    env = {k: v for k, v in os.environ.items() if k != "ATTNFAST_BACKEND"}
    result = subprocess.run([sys.executable, "-c", HIDE_EXTENSION], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120, check=False)
    assert result.returncode == 0 and "fallback ok" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------- the CUDA sources compile
def _nvcc():
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    return nvcc


# The glue's ATTNFAST_WITH_CUDA branches use torch's c10/cuda headers, which a CPU build of torch
# ships without the generated cuda_cmake_macros.h: a one-line stand-in lets the compiler check them.
CUDA_GLUE = ["attention.cpp", "damsm.cpp"]


def _cuda_includes(nvcc: str) -> list[str]:
    """The include directories nvcc itself uses (it says so in a dry run)."""
    dry = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True, timeout=60, check=False)
    found = []
    for line in (dry.stdout + dry.stderr).splitlines():
        if "INCLUDES=" in line:
            found += re.findall(r'"?-I"?\s*"?([^"\s]+)', line.split("=", 1)[1])
            found += re.findall(r'-isystem"?\s+"([^"]+)"', line)
    return [d for d in found if os.path.isdir(d)]


@pytest.mark.parametrize("source", CUDA_GLUE)
def test_cuda_glue_compiles(source, tmp_path):
    cuda_includes = _cuda_includes(_nvcc())
    if not any(os.path.exists(os.path.join(d, "cuda_runtime.h")) for d in cuda_includes):
        pytest.skip(f"no cuda_runtime.h in nvcc's include directories {cuda_includes}")
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        pytest.skip("no C++ compiler")
    from torch.utils.cpp_extension import include_paths
    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    command = [compiler, "-std=c++20", "-fsyntax-only", "-w", "-DATTNFAST_WITH_CUDA",
               f"-I{tmp_path}", *(f"-I{p}" for p in include_paths()), *(f"-I{d}" for d in cuda_includes),
               f"-I{CSRC}", str(CSRC / source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-4000:]}"
