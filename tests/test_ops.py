"""The public ops: validation errors name the argument, backend dispatch, drop-ins against the
original formulation."""
import numpy as np
import pytest
import torch
from tolerances import assert_close

from attnfast import ops
from attnfast import reference as R
from attnfast.ops import _dispatch


# ---------------------------------------------------------------- validation
def _attn_args():
    return torch.randn(2, 8, 4, 4), torch.randn(2, 8, 5), torch.zeros(2, 5, dtype=torch.bool)


@pytest.mark.parametrize("change, error, pattern", [
    (lambda h, w, m: (h[0], w, m), ValueError, r"h must have shape \(B, C, H, W\)"),
    (lambda h, w, m: (h, w[0], m), ValueError, r"words must have shape \(B, C, T\)"),
    (lambda h, w, m: (h, w[:1], m), ValueError, r"words .*\(B of h\)"),
    (lambda h, w, m: (h, w[:, :4], m), ValueError, r"words .*\(C of h\)"),
    (lambda h, w, m: (h, w.double(), m), TypeError, r"words has dtype torch.float64 but h"),
    (lambda h, w, m: (h.long(), w, m), TypeError, r"h must have dtype"),
    (lambda h, w, m: (h, w, m.float()), TypeError, r"mask must be bool"),
    (lambda h, w, m: (h, w, m[:, :3]), ValueError, r"mask must have shape \(B, T\) = \(2, 5\)"),
    (lambda h, w, m: (h, w, m.tolist()), TypeError, r"mask must be a \(B, T\)"),
    (lambda h, w, m: ("h", w, m), TypeError, r"h must be a torch.Tensor"),
    (lambda h, w, m: (h[:, :, :0], w, m), ValueError, r"h must not be empty"),
    (lambda h, w, m: (h.to("meta"), w, m), ValueError, r"words is on cpu but h is on meta"),
])
def test_attention_validation_errors(change, error, pattern):
    h, words, mask = change(*_attn_args())
    with pytest.raises(error, match=pattern):
        ops.word_region_attention(h, words, mask)


def test_attention_mask_mode_and_backend_errors():
    h, words, mask = _attn_args()
    with pytest.raises(ValueError, match="mask_mode"):
        ops.word_region_attention(h, words, mask, mask_mode="wrong")
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.word_region_attention(h, words, mask, backend="fastest")
    with pytest.raises(RuntimeError, match="cuda backend needs CUDA tensors"):
        ops.word_region_attention(h, words, mask, backend="cuda")


def test_legacy_uint8_mask_is_accepted():
    h, words, _ = _attn_args()
    mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.uint8)
    assert torch.equal(ops.word_region_attention(h, words, mask),
                       ops.word_region_attention(h, words, mask.bool()))


def _damsm_args():
    return torch.randn(3, 16, 17, 17), torch.randn(3, 16, 6), torch.tensor([6, 2, 4])


@pytest.mark.parametrize("change, error, pattern", [
    (lambda i, w, l: (i[0, 0], w, l), ValueError, r"img_regions must have shape"),
    (lambda i, w, l: (i, w[:, :8], l), ValueError, r"words .*\(D of img_regions\)"),
    (lambda i, w, l: (i, w, l[:2]), ValueError, r"cap_lens must have shape \(B,\) = \(3,\)"),
    (lambda i, w, l: (i, w, l.float()), TypeError, r"cap_lens must be an integer tensor"),
    (lambda i, w, l: (i, w, torch.tensor([6, 0, 4])), ValueError, r"cap_lens must lie in \[1, T=6\]"),
    (lambda i, w, l: (i, w, torch.tensor([7, 1, 4])), ValueError, r"cap_lens must lie in \[1, T=6\]"),
    (lambda i, w, l: (i, w.half(), l), TypeError, r"words has dtype torch.float16"),
])
def test_damsm_validation_errors(change, error, pattern):
    img, words, lens = change(*_damsm_args())
    with pytest.raises(error, match=pattern):
        ops.damsm_scores(img, words, lens)


def test_loss_validation_errors():
    img, words, lens = _damsm_args()
    with pytest.raises(ValueError, match="batch_size=4 must lie in"):
        ops.words_loss(img, words, torch.arange(3), lens, None, 4)
    with pytest.raises(ValueError, match="labels must be a"):
        ops.words_loss(img, words, torch.arange(2), lens, None, 3)
    with pytest.raises(ValueError, match="class_ids must be"):
        ops.words_loss(img, words, torch.arange(3), lens, [1, 2], 3)
    with pytest.raises(ValueError, match=r"rnn_code must have shape \(B, D\)"):
        ops.sent_loss(torch.randn(3, 8), torch.randn(3, 7), torch.arange(3), None, 3)
    with pytest.raises(ValueError, match=r"context must have shape \(B, D, H, W\) .*\(D of query\)"):
        ops.func_attention(torch.randn(2, 4, 3), torch.randn(2, 5, 3, 3), 4.0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4, H, W\)"):
        ops.upBlock(4, 2)(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 6, H, W\)"):
        ops.ResBlock(6)(torch.randn(1, 6, 2))


# ---------------------------------------------------------------- dispatch
def test_env_default_backend(monkeypatch):
    monkeypatch.setenv("ATTNFAST_BACKEND", "reference")
    assert _dispatch.default_backend() == "reference"
    h, words, mask = _attn_args()
    ops.word_region_attention(h, words, mask)
    monkeypatch.setenv("ATTNFAST_BACKEND", "bogus")
    with pytest.raises(ValueError, match="ATTNFAST_BACKEND='bogus'"):
        ops.word_region_attention(h, words, mask)


def test_auto_never_fails_on_cpu_and_explicit_unavailable_backend_raises(monkeypatch):
    table = _dispatch.OpBackends("demo")
    table.register("reference", lambda: (lambda x: x + 1))
    table.register("cpu", lambda: (lambda x: x + 2), lambda d: (False, "not built"))
    name, fn = table.pick("auto", torch.device("cpu"))
    assert name == "reference" and fn(1) == 2
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot run here: not built"):
        table.pick("cpu", torch.device("cpu"))
    with pytest.raises(RuntimeError, match="no 'triton' implementation"):
        table.pick("triton", torch.device("cpu"))


# ---------------------------------------------------------------- drop-ins
@pytest.mark.parametrize("mask_mode", ["correct", "attngan"])
def test_global_attention_general_matches_original(mask_mode):
    module = ops.GlobalAttentionGeneral(6, 10, mask_mode=mask_mode).double()
    h, context = torch.randn(3, 6, 4, 5, dtype=torch.float64), torch.randn(3, 10, 7, dtype=torch.float64)
    mask = torch.arange(7)[None, :] >= torch.tensor([7, 7, 7])[:, None]
    module.applyMask(mask)
    out, attn = module(h, context)
    source = torch.nn.functional.conv2d(context.unsqueeze(3), module.conv_context.weight).squeeze(3)
    ref_out, ref_attn = R.global_attention_general_original(h, source, mask)
    assert_close(out, ref_out), assert_close(attn, ref_attn)
    assert list(module.state_dict()) == ["conv_context.weight"]


def test_words_and_sent_loss_ops_match_original():
    img = torch.randn(4, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    words = torch.randn(4, 8, 5, dtype=torch.float64, requires_grad=True)
    lens, labels, class_ids = torch.tensor([5, 3, 1, 4]), torch.arange(4), np.array([1, 1, 2, 3])
    got = ops.words_loss(img, words, labels, lens, class_ids, 4)
    ref = R.words_loss_original(img, words, labels, lens, class_ids, 4)
    assert_close(got[0], ref[0]), assert_close(got[1], ref[1])
    assert [m.shape for m in got[2]] == [m.shape for m in ref[2]]
    cnn, rnn = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    for a, b in zip(ops.sent_loss(cnn, rnn, labels, class_ids, 4),
                    R.sent_loss(cnn, rnn, labels, class_ids, 4), strict=True):
        assert_close(a, b)
    query, context = torch.randn(2, 8, 5), torch.randn(2, 8, 3, 3)
    for a, b in zip(ops.func_attention(query, context, 4.0), R.func_attention(query, context, 4.0), strict=True):
        assert torch.equal(a, b)


def test_block_drop_ins_match_original_modules():
    up = ops.upBlock(6, 4)
    original = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"),
                                   torch.nn.Conv2d(6, 8, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(8))
    original.load_state_dict({k: v for k, v in up.state_dict().items() if not k.startswith("3")})
    x = torch.randn(3, 6, 5, 3)
    assert_close(up(x), R.glu(original(x)))
    res = ops.ResBlock(5)
    y = torch.randn(2, 5, 4, 4)
    b = res.block
    manual = b[4](b[3](R.glu(b[1](b[0](y))))) + y
    res.train()
    got = ops.ResBlock(5)
    got.load_state_dict(res.state_dict())
    assert_close(got(y), manual)
    assert torch.equal(ops.GLU()(torch.arange(4.0).view(1, 4)), R.glu(torch.arange(4.0).view(1, 4)))


def test_auto_passes_over_a_backend_that_refuses_the_inputs():
    table = _dispatch.OpBackends("demo")
    table.register("reference", lambda: (lambda x: "reference"))
    table.register("cpu", lambda: (lambda x: "cpu"), accepts=lambda x: "too big" if x > 3 else None)
    assert table.pick("auto", torch.device("cpu"), (2,))[0] == "cpu"
    assert table.pick("auto", torch.device("cpu"), (5,))[0] == "reference"
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot run here: too big"):
        table.pick("cpu", torch.device("cpu"), (5,))
