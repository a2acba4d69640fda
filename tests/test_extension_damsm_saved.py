"""The C++ DAMSM backend's two backward paths (issue 11): the forward's intermediates kept for the
backward (within ``ATTNFAST_DAMSM_SAVE_MB``) and the recompute fallback (budget 0 or too small),
both against the float64 reference; the saved buffer's checks, its reuse between steps, and the
custom op under opcheck."""
import pytest
import torch
from tolerances import assert_close

from attnfast import ops
from attnfast import reference as R

_C = pytest.importorskip("attnfast._C", reason="attnfast._C is not built")
from attnfast.ops import _extension  # noqa: E402  (needs attnfast._C)

BUDGET = _extension.SAVE_BUDGET_ENV


class SpyBackward:
    """Wraps _C.damsm_backward and records whether each call got the forward's saved tensor."""

    def __init__(self, monkeypatch):
        self.saved = []
        self._real = _C.damsm_backward
        monkeypatch.setattr(_extension._C, "damsm_backward", self)

    def __call__(self, *args):
        self.saved.append(args[-1] is not None)
        return self._real(*args)


def _inputs(n_img=5, n_sent=4, dim=12, regions=10, num_words=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    img = torch.randn(n_img, dim, regions, generator=gen)
    words = torch.randn(n_sent, dim, num_words, generator=gen)
    lens = torch.randint(1, num_words + 1, (n_sent,), generator=gen)
    lens[0], lens[-1] = 1, num_words
    return img, words, lens


def _grads(fn, img, words, lens, dscores, **kw):
    a, b = img.clone().requires_grad_(), words.clone().requires_grad_()
    scores = fn(a, b, lens, 4.0, 5.0, **kw)
    (scores * dscores.to(scores.dtype)).sum().backward()
    return scores.detach(), a.grad, b.grad


@pytest.mark.parametrize("budget_mb, expect_saved", [(None, True), ("0", False), ("0.001", False)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_saved_and_recomputed_backward_match_reference(monkeypatch, budget_mb, expect_saved, dtype):
    """Default budget: the backward reads the forward's buffer; 0 or a budget below the buffer
    (0.001 MB = 1 KB here): it recomputes. Gradients agree with float64 either way."""
    if budget_mb is None:
        monkeypatch.delenv(BUDGET, raising=False)
    else:
        monkeypatch.setenv(BUDGET, budget_mb)
    spy = SpyBackward(monkeypatch)
    img, words, lens = _inputs()
    dscores = torch.randn(img.shape[0], words.shape[0])
    got = _grads(lambda *a, **k: ops.damsm_scores(*a, backend="cpu", **k),
                 img.to(dtype), words.to(dtype), lens, dscores)
    assert spy.saved == [expect_saved]
    ref = _grads(R.damsm_scores, img.double(), words.double(), lens, dscores)
    base = _grads(R.damsm_scores, img.to(dtype), words.to(dtype), lens, dscores)
    for name, g, r, b in zip(("scores", "dregions", "dwords"), got, ref, base, strict=True):
        assert g.dtype == dtype, name
        assert_close(g, r, dtype=dtype, baseline=b, name=name)


def test_no_buffer_without_gradients(monkeypatch):
    """No grad mode or no input requiring grad: nothing is kept."""
    img, words, _lens = _inputs()
    assert not _extension._keep_intermediates(img, words)
    with torch.no_grad():
        assert not _extension._keep_intermediates(img.requires_grad_(), words)
    assert _extension._keep_intermediates(img, words)  # img now requires grad
    monkeypatch.setenv(BUDGET, "0")
    assert not _extension._keep_intermediates(img, words)


def test_retain_graph_backward_twice_gives_the_same_gradients():
    """The backward writes dX into scratch memory, never into the saved P1."""
    img, words, lens = _inputs(seed=1)
    a, b = img.clone().requires_grad_(), words.clone().requires_grad_()
    scores = ops.damsm_scores(a, b, lens, backend="cpu")
    first = torch.autograd.grad(scores.square().sum(), (a, b), retain_graph=True)
    second = torch.autograd.grad(scores.square().sum(), (a, b))
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("padded", [False, True])
def test_saved_buffer_matches_recompute_in_both_layouts(padded):
    """_C directly, both word layouts (CUDA's padded one included): saved == recomputed results."""
    img, words, lens = _inputs(n_img=9, seed=2)
    dscores = torch.randn(9, 4)
    scores, attn, saved = _C.damsm_forward(img, words, lens, 4.0, 5.0, True, padded, True)
    assert saved.shape == _extension._saved_shape(img, words) and saved.dtype == torch.float32
    plain, plain_attn, none = _C.damsm_forward(img, words, lens, 4.0, 5.0, True, padded, False)
    assert none is None and torch.equal(scores, plain) and torch.equal(attn, plain_attn)
    got = _C.damsm_backward(img, words, lens, 4.0, 5.0, dscores, padded, saved)
    again = _C.damsm_backward(img, words, lens, 4.0, 5.0, dscores, padded, None)
    for x, y in zip(got, again, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_saved_buffer_checks_name_it():
    img, words, lens = _inputs()
    dscores = torch.randn(5, 4)
    saved = _C.damsm_forward(img, words, lens, 4.0, 5.0, False, None, True)[2]
    with pytest.raises(RuntimeError, match=r"saved must be the contiguous float32 \("):
        _C.damsm_backward(img, words, lens, 4.0, 5.0, dscores, None, saved[:-1])
    with pytest.raises(RuntimeError, match="saved must be the contiguous float32"):
        _C.damsm_backward(img, words, lens, 4.0, 5.0, dscores, None, saved.double())
    other = lens.clone()
    other[0] = 2  # one more word column than the forward's
    with pytest.raises(RuntimeError, match="saved was made for .* word columns, these inputs have"):
        _C.damsm_backward(img, words, other, 4.0, 5.0, dscores, None, saved)


def test_bad_budget_names_the_variable(monkeypatch):
    monkeypatch.setenv(BUDGET, "lots")
    with pytest.raises(ValueError, match=f"{BUDGET} must be a number of MiB >= 0, got 'lots'"):
        _extension.damsm_save_budget_bytes()
    monkeypatch.setenv(BUDGET, "-1")
    with pytest.raises(ValueError, match=BUDGET):
        _extension.damsm_save_budget_bytes()
    monkeypatch.setenv(BUDGET, "1.5")
    assert _extension.damsm_save_budget_bytes() == 3 << 19
    monkeypatch.delenv(BUDGET)
    assert _extension.damsm_save_budget_bytes() == _extension.DEFAULT_SAVE_MB << 20


def test_buffer_memory_is_reused_only_once_freed():
    """The spare block goes to the next forward once the previous buffer is freed, never while
    it is alive (two graphs alive at once each keep their own)."""
    img, words, lens = _inputs(seed=3)
    first = _C.damsm_forward(img, words, lens, 4.0, 5.0, False, None, True)[2]
    second = _C.damsm_forward(img, words, lens, 4.0, 5.0, False, None, True)[2]
    assert first.data_ptr() != second.data_ptr()
    reference = second.clone()
    address = first.data_ptr()
    del first
    third = _C.damsm_forward(img, words, lens, 4.0, 5.0, False, None, True)[2]
    assert third.data_ptr() == address
    assert torch.equal(second, reference)  # untouched by the third forward
    torch.testing.assert_close(third, reference)


@pytest.mark.parametrize("save", [False, True])
def test_custom_op_opcheck(save):
    img, words, lens = _inputs(n_img=3, n_sent=2, dim=6, regions=5, num_words=4)
    torch.library.opcheck(_extension._damsm, (img.requires_grad_(), words, lens, 4.0, 5.0, True, save))
    saved = _extension._damsm(img.detach(), words, lens, 4.0, 5.0, False, save)[2]
    torch.library.opcheck(_extension._damsm_backward,
                          (img.detach(), words, lens, 4.0, 5.0, torch.randn(3, 2), saved))


def test_torch_compile_fullgraph_keeps_the_saved_path(monkeypatch):
    monkeypatch.delenv(BUDGET, raising=False)
    spy = SpyBackward(monkeypatch)
    img, words, lens = _inputs(seed=4)
    dscores = torch.randn(img.shape[0], words.shape[0])

    def loss(a, b):
        return (ops.damsm_scores(a, b, lens, backend="cpu") * dscores).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    a, b = img.clone().requires_grad_(), words.clone().requires_grad_()
    got = torch.autograd.grad(compiled(a, b), (a, b))
    assert spy.saved == [True]
    want = _grads(R.damsm_scores, img.double(), words.double(), lens, dscores)[1:]
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, dtype=torch.float32)
