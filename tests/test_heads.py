"""The discriminator heads' cheaper forms (issue 27, attnfast.ops.heads) against the convolutions
they replace: float64 values and gradients to 1e-12, bf16 under autocast within bf16 rounding, and
the discriminator using them under autocast only (fp32 keeps the original convolutions)."""
import pytest
import torch
import torch.nn.functional as F

from attnfast.models import D_NET
from attnfast.ops import heads


def _joint_reference(h, sentence, weight):
    spread = sentence[:, :, None, None].expand(-1, -1, *h.shape[2:])
    return F.conv2d(torch.cat((h, spread), 1), weight, padding=1)


@pytest.mark.parametrize("size", [(4, 4), (3, 5), (1, 1), (2, 6)])
def test_joint_conv3x3_equals_the_conv_of_the_concatenation(size):
    torch.manual_seed(0)
    h = torch.randn(3, 5, *size, dtype=torch.float64, requires_grad=True)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 9, 3, 3, dtype=torch.float64, requires_grad=True)
    out, ref = heads.joint_conv3x3(h, s, w), _joint_reference(h, s, w)
    assert out.shape == ref.shape == (3, 6, *size)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (h, s, w), grad)
    want = torch.autograd.grad(ref, (h, s, w), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(heads.joint_conv3x3, (h[:1, :, :2, :2].detach().requires_grad_(), s[:1], w))


def test_logits_full_kernel_equals_the_strided_conv():
    torch.manual_seed(1)
    h = torch.randn(4, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    out, ref = heads.logits_full_kernel(h, w, b), F.conv2d(h, w, b, stride=4)
    assert out.shape == ref.shape == (4, 1, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(out)
    for a, c in zip(torch.autograd.grad(out, (h, w, b), grad), torch.autograd.grad(ref, (h, w, b), grad),
                    strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-12)
    cl = h.detach().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(heads.logits_full_kernel(cl, w, b), ref, rtol=1e-12, atol=1e-12)


def test_heads_refuse_bad_shapes():
    with pytest.raises(ValueError, match="input channels"):
        heads.joint_conv3x3(torch.randn(2, 5, 4, 4), torch.randn(2, 3), torch.randn(6, 9, 3, 3))
    with pytest.raises(ValueError, match="joint_conv3x3 expects"):
        heads.joint_conv3x3(torch.randn(2, 5, 4, 4), torch.randn(2, 4), torch.randn(6, 9, 4, 4))
    with pytest.raises(ValueError, match="same"):
        heads.logits_full_kernel(torch.randn(2, 8, 8, 8), torch.randn(1, 8, 4, 4), None)


@pytest.mark.parametrize("projection", [False, True])
def test_discriminator_heads_use_the_cheap_forms_under_autocast_only(projection, monkeypatch):
    torch.manual_seed(2)
    netD = D_NET(32, ndf=4, nef=8, projection=projection).eval()
    x = torch.randn(5, 3, 32, 32)
    sentence = torch.randn(5, 8)
    calls = []
    for name in ("joint_conv3x3", "logits_full_kernel"):
        real = getattr(heads, name)
        monkeypatch.setattr(heads, name, lambda *a, real=real, name=name: calls.append(name) or real(*a))
    code = netD(x)
    fp32 = netD.COND_DNET(code, sentence, logits=True), netD.UNCOND_DNET(code, logits=True)
    assert calls == []                                                    # fp32: the original convs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = netD.COND_DNET(code, sentence, logits=True), netD.UNCOND_DNET(code, logits=True)
    assert calls == ["joint_conv3x3", "logits_full_kernel", "logits_full_kernel"]
    monkeypatch.undo()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        monkeypatch.setattr(torch, "is_autocast_enabled", lambda *a: False)   # the original under autocast
        slow = netD.COND_DNET(code, sentence, logits=True), netD.UNCOND_DNET(code, logits=True)
    for f, s, ref in zip(fast, slow, fp32, strict=True):
        assert f.shape == ref.shape == (5,)
        # both bf16 results are within bf16's rounding of the fp32 one, and of each other
        torch.testing.assert_close(f.float(), ref, rtol=0.05, atol=0.05)
        torch.testing.assert_close(f.float(), s.float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("with_grad", [True, False])
def test_joint_weight_split_is_the_slices_bit_for_bit_under_autocast(with_grad):
    """The joint conv's weight cast once and split (one cat for its gradient) equals the two autocast
    slices it replaced, values and every gradient bit for bit (bf16 products, float32 weight)."""
    torch.manual_seed(5)
    h = torch.randn(7, 16, 4, 4, dtype=torch.bfloat16, requires_grad=with_grad)
    s = torch.randn(7, 8, requires_grad=with_grad)
    w = torch.randn(12, 24, 3, 3, requires_grad=with_grad)

    def sliced(h, s, w):                       # the form before: autocast casts each slice
        out = F.conv2d(h, w[:, :16], padding=1)
        taps = torch.matmul(s, w[:, 16:].transpose(0, 1).reshape(8, -1))
        positions = heads._tap_positions(4, 4, taps.dtype, h.device)
        return out + torch.matmul(taps.view(-1, 9), positions).view(out.shape)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, slow = heads.joint_conv3x3(h, s, w), sliced(h, s, w)
    assert fast.dtype == torch.bfloat16 and torch.equal(fast, slow)
    if with_grad:
        grad = torch.randn_like(fast)
        for a, b in zip(torch.autograd.grad(fast, (h, s, w), grad), torch.autograd.grad(slow, (h, s, w), grad),
                        strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)
