"""Hand-written backwards of the blocks' layout ops (issue 27): GLU and the sub-pixel shuffle
against autograd's own formulation of the same math -- values and gradients bit for bit (GLU: in
fp32 / fp64; in bf16 / fp16 it is ATen's fused glu, checked against the float64 reference), NCHW
and channels_last, double backward, and the blocks that use them equal to the literal original
(reference backend) bit for bit."""
import pytest
import torch

from attnfast import reference
from attnfast.ops import ResBlock, upBlock
from attnfast.ops import blocks as op_blocks
from attnfast.ops import fast_autograd as fa


def _autograd_interleave(phases):
    """The formulation before issue 27: one as_strided view and a copy, differentiated by autograd."""
    batch, channels4, hp, wp = phases.shape
    s_b, s_c, s_h, s_w = phases.stride()
    view = phases.as_strided((batch, channels4 // 4, hp - 1, 2, wp - 1, 2),
                             (s_b, 4 * s_c, s_h, 2 * s_c + s_h, s_w, s_c + s_w))
    return view.reshape(batch, channels4 // 4, 2 * (hp - 1), 2 * (wp - 1))


def _pair(x, fn_fast, fn_ref, grad):
    a = x.detach().clone().requires_grad_(True)
    b = x.detach().clone().requires_grad_(True)
    out_a, out_b = fn_fast(a), fn_ref(b)
    out_a.backward(grad)
    out_b.backward(grad)
    return out_a, out_b, a.grad, b.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 8, 5, 7), (2, 6, 4), (4, 2)])
def test_glu_equals_autograd_bit_for_bit(dtype, shape):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=dtype) * 3
    grad = torch.randn((shape[0], shape[1] // 2, *shape[2:]), dtype=dtype)
    out, ref, g, g_ref = _pair(x, fa.glu, reference.glu, grad)
    assert out.dtype == dtype and torch.equal(out, ref)
    assert torch.equal(g, g_ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(3, 8, 5, 7), (2, 6, 4), (4, 2), (16, 32, 9, 9)])
def test_glu_half_precision_is_the_fused_kernel_within_rounding(dtype, channels_last, shape):
    """bf16 / fp16 run ATen's fused glu (one rounding of a * sigmoid(b)): values within one rounding
    of the float64 reference, gradients as close to it as autograd's formulation in the same dtype
    (both lose the gate's 1 - s where s rounds to 1), and the same result as torch's glu."""
    torch.manual_seed(4)
    x = torch.randn(shape, dtype=dtype) * 3
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn((shape[0], shape[1] // 2, *shape[2:]), dtype=dtype)
    out, ref, g, g_ref = _pair(x, fa.glu, reference.glu, grad)
    exact, g_exact = _pair(x.double(), reference.glu, reference.glu, grad.double())[::2]
    assert out.dtype == dtype and g.dtype == dtype
    ulp = torch.finfo(dtype).eps
    spacing = torch.finfo(dtype).tiny * ulp                                  # subnormals: absolute
    assert ((out.double() - exact).abs() <= ulp * exact.abs() + spacing).all()   # one rounding (via float32)
    assert (out.double() - exact).abs().max() <= (ref.double() - exact).abs().max()
    g_err, g_ref_err = (g.double() - g_exact).abs().max(), (g_ref.double() - g_exact).abs().max()
    assert g_err <= 2 * max(g_ref_err, ulp * g_exact.abs().max())
    assert torch.equal(out, torch.nn.functional.glu(x, dim=1))


def test_glu_channels_last_no_grad_and_errors():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 4, 5, 5)
    out, ref, g, g_ref = _pair(x, fa.glu, reference.glu, grad)
    assert torch.equal(out, ref) and torch.equal(g, g_ref)
    with torch.no_grad():
        assert torch.equal(fa.glu(x), reference.glu(x))
    with pytest.raises(ValueError, match="even"):
        fa.glu(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="B, 2C"):
        fa.glu(torch.randn(4))


def test_glu_double_backward_matches_autograd():
    torch.manual_seed(2)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    torch.autograd.gradcheck(fa.glu, (x.clone().requires_grad_(),))
    torch.autograd.gradgradcheck(fa.glu, (x.clone().requires_grad_(),))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 5, 5), (3, 12, 4, 6), (1, 4, 2, 2)])
def test_subpixel_interleave_equals_autograd_bit_for_bit(dtype, channels_last, shape):
    torch.manual_seed(3)
    x = torch.randn(shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b, c4, hp, wp = shape
    grad = torch.randn(b, c4 // 4, 2 * (hp - 1), 2 * (wp - 1), dtype=dtype)
    out, ref, g, g_ref = _pair(x, fa.subpixel_interleave, _autograd_interleave, grad)
    assert torch.equal(out, ref) and out.is_contiguous(
        memory_format=torch.channels_last if channels_last and c4 // 4 > 1 else torch.contiguous_format)
    assert torch.equal(g, g_ref)


def test_subpixel_deinterleave_is_the_adjoint_and_double_backward_works():
    torch.manual_seed(4)
    phases = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    grid = torch.randn(2, 2, 6, 8, dtype=torch.float64)
    lhs = (fa.subpixel_interleave(phases) * grid).sum()
    rhs = (phases * fa.subpixel_deinterleave(grid)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(fa.subpixel_interleave, (phases.clone().requires_grad_(),))
    torch.autograd.gradgradcheck(fa.subpixel_interleave, (phases.clone().requires_grad_(),))
    torch.autograd.gradcheck(fa.subpixel_deinterleave, (grid.clone().requires_grad_(),))
    with pytest.raises(ValueError, match="4C"):
        fa.subpixel_interleave(torch.randn(1, 6, 3, 3))
    with pytest.raises(ValueError, match="2H, 2W"):
        fa.subpixel_deinterleave(torch.randn(1, 2, 3, 4))


@pytest.mark.parametrize("size", [4, 9])           # the upsample path below the crossover, sub-pixel above
def test_blocks_with_the_fast_backwards_equal_their_formulation_before(size, monkeypatch):
    """upBlock / ResBlock ("cpu" backend) against the same math with autograd's backwards (the code
    before issue 27): outputs, every gradient and the running statistics bit for bit."""
    torch.manual_seed(5)
    x = torch.randn(3, 6, size, size)
    for make in (lambda: upBlock(6, 4, backend="cpu"), lambda: ResBlock(6, backend="cpu")):
        torch.manual_seed(6)
        fast = make()
        slow = make()
        slow.load_state_dict(fast.state_dict())
        outs, grads = [], []
        for module, patched in ((fast, False), (slow, True)):
            with monkeypatch.context() as m:
                if patched:
                    m.setattr(fa, "glu", reference.glu)
                    m.setattr(fa, "subpixel_interleave", _autograd_interleave)
                xi = x.clone().requires_grad_(True)
                out = module(xi)
                out.backward(torch.ones_like(out) + out.detach())
            outs.append(out)
            grads.append([xi.grad] + [p.grad for p in module.parameters()] + list(module.buffers()))
        assert torch.equal(outs[0], outs[1])
        assert all(torch.equal(a, b) for a, b in zip(grads[0], grads[1], strict=True))


def test_res_block_cpu_backend_equals_reference_backend():
    torch.manual_seed(7)
    fast, ref = ResBlock(4, backend="cpu"), ResBlock(4, backend="reference")
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 4, 5, 5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    fast(xa).square().sum().backward()
    ref(xb).square().sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(fast.parameters(), ref.parameters(), strict=True))
    assert op_blocks.RES_BLOCK.pick("cpu", x.device)[1] is op_blocks.res_block_torch


@pytest.mark.skipif(not fa.nhwc_glu_kernel_available(), reason="attnfast._C is not built")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 8, 5, 7), (3, 32, 4, 4), (16, 32, 9, 9), (1, 2, 1, 3), (4, 130, 3, 2)])
def test_glu_nhwc_kernel_within_rounding_and_keeps_nhwc(dtype, shape):
    """channels_last bf16 / fp16 on the CPU: attnfast._C's row kernel (csrc/glu_cpu.cpp), its values and
    gradients within one rounding of the float64 reference (its sigmoid is float32 to ~2 ulp), as close as
    the NCHW fused kernel, and output and gradient NHWC (no format mixing downstream)."""
    torch.manual_seed(6)
    x = (torch.randn(shape) * 3).to(dtype).contiguous(memory_format=torch.channels_last)
    grad = torch.randn((shape[0], shape[1] // 2, *shape[2:])).to(dtype).contiguous(memory_format=torch.channels_last)
    out, nchw, g, g_nchw = _pair(x, fa.glu, lambda t: fa.glu(t.contiguous()), grad)
    exact, g_exact = _pair(x.double(), reference.glu, reference.glu, grad.double())[::2]
    cl = torch.channels_last
    assert out.dtype == g.dtype == dtype
    assert out.is_contiguous(memory_format=cl) and g.is_contiguous(memory_format=cl)
    ulp, spacing = torch.finfo(dtype).eps, torch.finfo(dtype).tiny * torch.finfo(dtype).eps
    assert ((out.double() - exact).abs() <= ulp * exact.abs() + spacing).all()
    torch.testing.assert_close(out.float(), nchw.float(), rtol=ulp, atol=spacing)     # <= one ulp apart
    assert (g.double() - g_exact).abs().max() <= 2 * max((g_nchw.double() - g_exact).abs().max(),
                                                        ulp * g_exact.abs().max())
    with torch.no_grad():
        assert torch.equal(fa.glu(x), out.detach())


@pytest.mark.skipif(not fa.nhwc_glu_kernel_available(), reason="attnfast._C is not built")
def test_glu_nhwc_kernel_double_backward_and_errors():
    torch.manual_seed(7)
    x = torch.randn(2, 6, 3, 3, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(fa.glu(x).float().sum(), x, create_graph=True)   # the differentiable path
    (gg,) = torch.autograd.grad(g.float().sum(), x)
    ref = x.detach().float().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(reference.glu(ref).sum(), ref, create_graph=True)
    (gg_ref,) = torch.autograd.grad(g_ref.sum(), ref)
    torch.testing.assert_close(gg.float(), gg_ref, rtol=0.05, atol=0.05)
    from attnfast import _C
    with pytest.raises(RuntimeError, match="even"):
        _C.glu_rows_forward(torch.randn(4, 3))
    with pytest.raises(RuntimeError, match="contiguous"):
        _C.glu_rows_forward(torch.randn(4, 6).t())
    with pytest.raises(RuntimeError, match="float32, bfloat16 or float16"):
        _C.glu_rows_forward(torch.zeros(4, 6, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="grad must be"):
        _C.glu_rows_backward(torch.randn(4, 2), torch.randn(4, 6))
