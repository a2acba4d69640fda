"""The Triton word–region attention (kernels/attention.py, the ``triton`` backend) against the
float64 reference: out, attn and the gradients to h and words (from out and from attn), both mask
modes, fully masked rows, any strides, every output element written; the drop-in
``GlobalAttentionGeneral(backend="triton")`` against the original formulation; the custom op under
torch.compile(fullgraph=True) and opcheck. Without CUDA the kernels run in the Triton interpreter on
CPU tensors (small shapes); the same matrix runs on CUDA with the model's sizes under the gpu mark.

Tolerance rule (tests/tolerances.py): error against the float64 reference within 2x the error of
plain PyTorch in the same dtype; the baseline is the reference itself run on the low-precision
inputs (fp32 math rounded once), the strictest plain-PyTorch formulation.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton code is imported
pytest.importorskip("triton")

from tolerances import DTYPES, assert_close, nan_filled_like  # noqa: E402

from attnfast import ops, reference  # noqa: E402
from attnfast.ops import _dispatch  # noqa: E402

kernels = pytest.importorskip("attnfast.kernels.attention")
custom_op = pytest.importorskip("attnfast.ops._attention_custom_op")

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
CPU = pytest.param("cpu", marks=pytest.mark.skipif(
    not INTERPRETED, reason="Triton on CPU tensors needs TRITON_INTERPRET=1 (set when CUDA is absent)"))
CUDA = pytest.param("cuda", marks=pytest.mark.gpu)
DEVICES = [CPU, CUDA]
MODES = reference.MASK_MODES

# (B, C, H, W, T): odd N, T in {1, 18, 33}, C in {32, 48} and a C > 64 case (several channel
# chunks: the read-add-write partial of dwords); N = 221 spans several region tiles, and in the
# backward several tiles per program with the last program running past N.
SMALL = [(2, 32, 5, 7, 18), (3, 48, 3, 3, 1), (2, 48, 9, 9, 33), (3, 32, 1, 13, 18),
         (2, 100, 3, 5, 7), (4, 48, 13, 17, 18)]
REAL = [(20, 32, 64, 64, 18), (4, 64, 128, 128, 18), (8, 256, 16, 16, 64)]


def _case_ids():
    return [pytest.param(device.values[0], shape, id=f"{device.values[0]}-{'x'.join(map(str, shape))}",
                         marks=device.marks)
            for device in DEVICES for shape in (SMALL + REAL if device.values[0] == "cuda" else SMALL)]


def _mask(batch: int, num_words: int, device) -> torch.Tensor:
    """Random caption lengths in [1, T], one caption fully padded (all words masked)."""
    lens = torch.randint(1, num_words + 1, (batch,))
    mask = torch.arange(num_words)[None, :] >= lens[:, None]
    mask[torch.randint(batch, ())] = True
    return mask.to(device)


def _inputs(shape, dtype, device):
    batch, channels, height, width, num_words = shape
    h = torch.randn(batch, channels, height, width, device=device).to(dtype)
    words = torch.randn(batch, channels, num_words, device=device).to(dtype)
    return h, words, _mask(batch, num_words, device)


def _run(fn, h, words, mask, mode, grad_out, grad_attn):
    """out, attn and the gradients of <out, grad_out> + <attn, grad_attn> to h and words."""
    h = h.detach().clone().requires_grad_(True)
    words = words.detach().clone().requires_grad_(True)
    out, attn = fn(h, words, mask, mask_mode=mode, return_attn=True)
    ((out * grad_out).sum() + (attn * grad_attn).sum()).backward()
    return out.detach(), attn.detach(), h.grad, words.grad


def _triton(h, words, mask, **kw):
    return ops.word_region_attention(h, words, mask, backend="triton", **kw)


def _check_against_reference(h, words, mask, mode, dtype):
    grad_out = torch.randn(h.shape, device=h.device).to(dtype)
    grad_attn = torch.randn((h.shape[0], words.shape[2], *h.shape[2:]), device=h.device).to(dtype)
    got = _run(_triton, h, words, mask, mode, grad_out, grad_attn)
    base = _run(reference.word_region_attention, h, words, mask, mode, grad_out, grad_attn)
    exact = _run(reference.word_region_attention, h.double(), words.double(), mask, mode,
                 grad_out.double(), grad_attn.double())
    for name, g, b, e in zip(("out", "attn", "dh", "dwords"), got, base, exact, strict=True):
        assert g.dtype == dtype, f"{name} has dtype {g.dtype}, expected {dtype}"
        assert_close(g, e, dtype=dtype, baseline=b, name=name)
    return got


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("device, shape", _case_ids())
def test_forward_backward_match_reference(device, shape, dtype, mode):
    h, words, mask = _inputs(shape, dtype, device)
    _check_against_reference(h, words, mask, mode, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_fully_masked_rows_give_zeros(device, mode):
    h, words, _ = _inputs((3, 32, 5, 5, 6), torch.float32, device)
    mask = torch.zeros(3, 6, dtype=torch.bool, device=device)
    mask[1] = True
    out, attn, dh, dwords = _check_against_reference(h, words, mask, mode, torch.float32)
    rows = reference.expand_word_mask(mask, 25, mode).all(-1)           # (B, N) fully masked
    assert rows.any()
    assert torch.all(out.flatten(2).transpose(1, 2)[rows] == 0)
    assert torch.all(attn.flatten(2).transpose(1, 2)[rows] == 0)
    assert torch.all(dh.flatten(2).transpose(1, 2)[rows] == 0)
    if mode == "correct":
        assert torch.all(dwords[1] == 0), "a fully masked caption gets no gradient"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_no_mask_and_out_only(device, dtype):
    h, words, _ = _inputs((2, 48, 7, 3, 18), dtype, device)
    weights = torch.randn(h.shape, device=device).to(dtype)

    def grads(fn, h, words):
        h, words = h.detach().clone().requires_grad_(True), words.detach().clone().requires_grad_(True)
        out = fn(h, words, None)
        (out * weights.to(out.dtype)).sum().backward()
        return out.detach(), h.grad, words.grad

    got = grads(_triton, h, words)
    base = grads(reference.word_region_attention, h, words)
    exact = grads(reference.word_region_attention, h.double(), words.double())
    for name, g, b, e in zip(("out", "dh", "dwords"), got, base, exact, strict=True):
        assert_close(g, e, dtype=dtype, baseline=b, name=name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_contiguous_inputs(device, mode, dtype):
    """h channels-last and sliced (H and W strides not combinable), words transposed, mask strided."""
    batch, channels, num_words = 3, 32, 18
    h_cl = torch.randn(batch, 7, 5, channels, device=device).to(dtype).permute(0, 3, 1, 2)
    h_sliced = torch.randn(batch, channels, 9, 12, device=device).to(dtype)[:, :, 1::2, 2:9]
    words = torch.randn(batch, num_words, channels, device=device).to(dtype).transpose(1, 2)
    wide = torch.zeros(batch, 2 * num_words, dtype=torch.bool, device=device)
    wide[:, ::2] = _mask(batch, num_words, device)
    mask = wide[:, ::2]
    for h in (h_cl, h_sliced):
        assert not h.is_contiguous() and not words.is_contiguous() and not mask.is_contiguous()
        _check_against_reference(h, words, mask, mode, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_incoming_gradients(device):
    """grad_out and grad_attn as they may reach the backward: strided, broadcast (stride 0)."""
    h, words, mask = _inputs((2, 32, 6, 5, 9), torch.float32, device)
    grad_out = torch.randn(2, 32, 5, 6, device=device).transpose(2, 3)
    grad_attn = torch.randn(1, 9, 6, 1, device=device).expand(2, 9, 6, 5)
    dh, dwords = kernels.attention_backward(grad_out, grad_attn, h, words, mask, "correct")
    _, _, dh64, dw64 = _run(reference.word_region_attention, h.double(), words.double(), mask,
                            "correct", grad_out.double(), grad_attn.double())
    _, _, dh32, dw32 = _run(reference.word_region_attention, h, words, mask, "correct", grad_out, grad_attn)
    assert_close(dh, dh64, baseline=dh32, name="dh")
    assert_close(dwords, dw64, baseline=dw32, name="dwords")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 32, 5, 7, 18), (2, 100, 3, 5, 7)], ids=["C32", "C100"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_output_element_written(device, shape, dtype):
    """Outputs pre-filled with NaN: the kernels must write every element (out, attn, dh and the
    fp32 partials of dwords)."""
    h, words, mask = _inputs(shape, dtype, device)
    out = nan_filled_like(h)
    attn = nan_filled_like(h.new_empty((shape[0], shape[4], *shape[2:4])))
    kernels.attention_forward(h, words, mask, "attngan", True, out=out, attn=attn)
    ref_out, ref_attn = reference.word_region_attention(h, words, mask, mask_mode="attngan", return_attn=True)
    for name, got, expected in (("out", out, ref_out), ("attn", attn, ref_attn)):
        assert not torch.isnan(got).any(), f"{name}: {int(torch.isnan(got).sum())} elements not written"
        assert_close(got, expected.double(), dtype=dtype, baseline=expected, name=name)
    dh = nan_filled_like(h)
    partial = torch.full(kernels.partial_shape(h, words), float("nan"), device=device)
    grad_out, grad_attn = torch.randn_like(out), torch.randn_like(attn)
    kernels.attention_backward(grad_out, grad_attn, h, words, mask, "correct", dh=dh, partial=partial)
    assert not torch.isnan(dh).any(), f"dh: {int(torch.isnan(dh).sum())} elements not written"
    assert not torch.isnan(partial).any(), f"dwords partials: {int(torch.isnan(partial).sum())} not written"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dropin_matches_original(device, mode, dtype):
    """GlobalAttentionGeneral(backend="triton") against the original formulation; "correct" is
    the original run caption by caption (where its mask.repeat cannot misalign), "attngan" the
    original on the whole batch. Rows where the original gives NaN (all words masked) are left out."""
    batch, idf, cdf, height, width, num_words = 3, 32, 24, 5, 7, 18
    module = ops.GlobalAttentionGeneral(idf, cdf, mask_mode=mode, backend="triton").to(device)
    h = torch.randn(batch, idf, height, width, device=device).to(dtype)
    context = torch.randn(batch, cdf, num_words, device=device).to(dtype)
    mask = _mask(batch, num_words, device)
    module.applyMask(mask)
    out, attn = module(h, context)

    def original(h, source):
        if mode == "attngan":
            return reference.global_attention_general_original(h, source, mask)
        pieces = [reference.global_attention_general_original(h[b:b + 1], source[b:b + 1], mask[b:b + 1])
                  for b in range(batch)]
        return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])

    weight = module.conv_context.weight.detach().view(idf, cdf)
    exact = original(h.double(), weight.double() @ context.double())
    base = original(h, weight.to(dtype) @ context)
    valid = ~torch.isnan(exact[1]).any(1, keepdim=True)                 # (B, 1, H, W) regions
    assert valid.any()
    for name, got, b, e in (("weightedContext", out, base[0], exact[0]), ("attn", attn, base[1], exact[1])):
        keep = valid.expand_as(e)
        assert_close(got[keep], e[keep], dtype=dtype, baseline=b[keep], name=name)
        assert torch.all(got[~keep] == 0), f"{name}: fully masked regions must give zeros, not NaN"


@pytest.mark.parametrize("device", DEVICES)
def test_limits_and_dtypes_raise_before_launch(device):
    """An explicit backend="triton" refuses with the kernel's reason; "auto" falls back."""
    cases = [((1, 257, 2, 2, 4), torch.float32, r"C <= 256"), ((1, 16, 2, 2, 65), torch.float32, r"T <= 64"),
             ((1, 16, 2, 2, 4), torch.float64, r"float32, bfloat16 or float16")]
    for shape, dtype, pattern in cases:
        h, words, _ = _inputs(shape, dtype, device)
        with pytest.raises(RuntimeError, match=r"backend 'triton' cannot run here: .*" + pattern):
            _triton(h, words, None)
        expected = reference.word_region_attention(h, words)
        assert_close(ops.word_region_attention(h, words, backend="auto"), expected, name="auto fallback")


@pytest.mark.parametrize("device", DEVICES)
def test_custom_op_opcheck(device):
    """Schema, fake (meta) implementations and the autograd registration of both custom ops."""
    h, words, mask = _inputs((2, 32, 3, 5, 9), torch.float32, device)
    h.requires_grad_(True)
    words.requires_grad_(True)
    torch.library.opcheck(custom_op._forward, (h, words, mask, "attngan", True))
    torch.library.opcheck(custom_op._forward, (h, words, None, "correct", False))
    torch.library.opcheck(custom_op._backward_op, (torch.randn_like(h), None, h.detach(), words.detach(),
                                                   mask, "correct"))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    """The public op compiles without graph breaks (fullgraph=True) and gives eager's values and
    gradients. aot_eager on CPU (inductor compiles C++ for the surrounding ops, ~30 s here, and the
    custom op is opaque to it either way); inductor on CUDA."""
    h, words, mask = _inputs((2, 32, 5, 7, 18), torch.float32, device)

    def loss(h, words, mask):
        out, attn = ops.word_region_attention(h, words, mask, mask_mode="attngan", return_attn=True,
                                              backend="triton")
        return out.sin().sum() + attn.square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True, backend="inductor" if device == "cuda" else "aot_eager")
    results = []
    for fn in (compiled, loss):
        hh, ww = h.clone().requires_grad_(True), words.clone().requires_grad_(True)
        value = fn(hh, ww, mask)
        value.backward()
        results.append((value.detach(), hh.grad, ww.grad))
    for name, got, expected in zip(("loss", "dh", "dwords"), *results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


# ---------------------------------------------------------------- GPU only
@pytest.mark.gpu
def test_auto_picks_triton_for_cuda():
    name, _ = ops.attention.BACKENDS.pick("auto", torch.device("cuda"))
    assert name == "triton"
    assert _dispatch.AUTO_ORDER["cuda"][0] == "triton"


@pytest.mark.gpu
def test_backward_is_deterministic():
    h, words, mask = _inputs((20, 32, 64, 64, 18), torch.bfloat16, "cuda")
    grad_out = torch.randn_like(h)
    first = kernels.attention_backward(grad_out, None, h, words, mask, "correct")
    second = kernels.attention_backward(grad_out, None, h, words, mask, "correct")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cuda_graph_capture(dtype):
    """Forward and backward captured in one CUDA graph, replayed on new inputs."""
    shape = (20, 32, 64, 64, 18)
    h, words, mask = _inputs(shape, dtype, "cuda")
    h.requires_grad_(True)
    words.requires_grad_(True)
    grad_out = torch.randn_like(h)

    def step():
        h.grad = words.grad = None
        out, attn = _triton(h, words, mask, mask_mode="attngan", return_attn=True)
        (out * grad_out).sum().backward()
        return out, attn

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()                                      # compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    h.grad = words.grad = None
    with torch.cuda.graph(graph):
        out, attn = _triton(h, words, mask, mask_mode="attngan", return_attn=True)
        (out * grad_out).sum().backward()
    new_h, new_words, new_mask = _inputs(shape, dtype, "cuda")
    with torch.no_grad():
        h.copy_(new_h)
        words.copy_(new_words)
        mask.copy_(new_mask)
    graph.replay()
    torch.cuda.synchronize()
    ref_out, ref_attn = reference.word_region_attention(new_h, new_words, new_mask, mask_mode="attngan",
                                                        return_attn=True)
    exact = reference.word_region_attention(new_h.double(), new_words.double(), new_mask,
                                            mask_mode="attngan", return_attn=True)
    assert_close(out, exact[0], dtype=dtype, baseline=ref_out, name="out (graph replay)")
    assert_close(attn, exact[1], dtype=dtype, baseline=ref_attn, name="attn (graph replay)")
    assert h.grad is not None and not torch.isnan(h.grad).any()


# ---------------------------------------------------------------- bench
def test_bench_quick_runs(tmp_path):
    """bench/attention_bench.py --quick: a table on stdout, JSON with device, versions, date and the
    measured copy bandwidth; on a machine without CUDA it says it runs the CPU backends."""
    import json
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, os.path.join(root, "bench", "attention_bench.py"), "--quick",
                          "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env=env, cwd=root, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "GB/s floor" in run.stdout and "of copy" in run.stdout
    if not torch.cuda.is_available():
        assert "No CUDA device: running the CPU backends" in run.stdout
    (path,) = tmp_path.glob("attention_quick_*.json")
    result = json.loads(path.read_text())
    for key in ("device", "torch", "triton", "date", "git_commit", "copy_bandwidth_bytes_per_s"):
        assert result["meta"][key], key
    backends = {row["backend"] for row in result["rows"]}
    assert {"original", "sdpa"} <= backends
    assert all(row["ms"] > 0 and row["rel_err"] < 2e-2 for row in result["rows"])
