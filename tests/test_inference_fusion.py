"""fuse_for_inference (issue 7): BatchNorms folded into the convs/linears before them, upBlocks in
sub-pixel form, channels_last; the fused copy gives the eval-mode model's outputs (float64 original
as the reference, plain PyTorch eval in the same dtype as the baseline of the 2x rule), and the
input model is left untouched. On a hand-built generator-like stack (every backend; Triton
interpreted on CPU), on original-style modules (plain Sequential upBlock, a ResBlock class with
``block``, Block3x3, Linear + BatchNorm1d), and on attnfast.models.G_NET."""
import copy
import os

import pytest
import torch
from torch import nn

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton code is imported

from tolerances import assert_close  # noqa: E402

from attnfast import ops  # noqa: E402
from attnfast.models.inference import fuse_for_inference  # noqa: E402
from attnfast.ops.blocks import FoldedResBlock, FoldedUpBlock, fold_batch_norm, triton_usable  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
needs_triton = pytest.mark.skipif(not triton_usable(DEVICE)[0], reason="Triton needs CUDA or TRITON_INTERPRET=1")
BACKENDS = ["reference", "cpu" if DEVICE.type == "cpu" else "cuda", pytest.param("triton", marks=needs_triton)]


def _randomize_bn(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.3)
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return module


def _mini_generator() -> nn.Sequential:
    """INIT_STAGE_G-like: Linear + BN1d + GLU -> 4x4 -> upBlocks (odd channels) -> ResBlocks ->
    upBlock -> conv3x3 + tanh image head; (B, 10) -> (B, 3, 32, 32)."""
    return nn.Sequential(
        nn.Linear(10, 8 * 4 * 4 * 2, bias=False), nn.BatchNorm1d(8 * 4 * 4 * 2), ops.GLU(),
        nn.Unflatten(1, (8, 4, 4)),
        ops.upBlock(8, 6), ops.upBlock(6, 5), ops.ResBlock(5), ops.ResBlock(5), ops.upBlock(5, 3),
        nn.Sequential(ops.conv3x3(3, 3), nn.Tanh()))


def _check_fused(model: nn.Module, inputs, dtype=torch.float32, backend=None, **fuse_kwargs):
    """Fuse a copy of ``model`` (eval) and compare with the eval original; returns the fused model."""
    model = model.to(DEVICE).to(dtype).eval()
    snapshot = copy.deepcopy(model.state_dict())
    fused = fuse_for_inference(model, backend=backend, **fuse_kwargs)
    exact = copy.deepcopy(model).double()
    for m in exact.modules():
        if hasattr(m, "backend"):
            m.backend = "reference"
    with torch.no_grad():
        got = fused(*[t.to(DEVICE).to(dtype) for t in inputs])
        expected = exact(*[t.to(DEVICE).double() for t in inputs])
        base = model(*[t.to(DEVICE).to(dtype) for t in inputs])
    assert_close(got, expected, dtype=dtype, baseline=base, name="fused output")
    for key, value in model.state_dict().items():                      # the input is untouched
        assert torch.equal(value, snapshot[key]), key
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    return fused


def test_fold_batch_norm_matches_eval_batch_norm():
    for layer, bn, x in [(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), torch.randn(2, 3, 5, 5)),
                         (nn.Conv2d(3, 4, 1, bias=True), nn.BatchNorm2d(4, affine=False), torch.randn(2, 3, 4, 3)),
                         (nn.Linear(6, 5), nn.BatchNorm1d(5), torch.randn(7, 6))]:
        layer, bn = layer.double(), _randomize_bn(bn).double().eval()
        x = x.double()
        weight, bias = fold_batch_norm(layer.weight, layer.bias, bn)
        folded = copy.deepcopy(layer)
        folded.weight, folded.bias = nn.Parameter(weight), nn.Parameter(bias)
        assert_close(folded(x), bn(layer(x)))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batch_norm(torch.ones(2, 2), None, nn.BatchNorm1d(2, track_running_stats=False))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_fused_generator_stack_matches_eval(backend, channels_last):
    model = _randomize_bn(_mini_generator())
    with torch.no_grad():
        for _ in range(2):                                                 # move the running stats
            model(torch.randn(4, 10))
    fused = _check_fused(model, [torch.randn(3, 10)], backend=backend, channels_last=channels_last)
    kinds = [type(m) for m in fused.modules()]
    assert kinds.count(FoldedUpBlock) == 3 and kinds.count(FoldedResBlock) == 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    weights = [m.weight for m in fused.modules() if isinstance(m, FoldedUpBlock)]
    assert all(w.is_contiguous(memory_format=torch.channels_last) == channels_last for w in weights)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_generator_stack_low_precision(dtype):
    """Pooled over three draws (one draw's error ratio is heavy-tailed on small outputs)."""
    got, expected, base = [], [], []
    for _ in range(3):
        model = _randomize_bn(_mini_generator()).to(DEVICE).to(dtype).eval()
        fused = fuse_for_inference(model)
        exact = copy.deepcopy(model).double()
        x = torch.randn(3, 10, device=DEVICE)
        with torch.no_grad():
            got.append(fused(x.to(dtype)).double().flatten())
            expected.append(exact(x.double()).flatten())
            base.append(model(x.to(dtype)).double().flatten())
    assert_close(torch.cat(got), torch.cat(expected), dtype=dtype, baseline=torch.cat(base), name="fused")


class GLU(nn.Module):  # the original code's own GLU class (recognised by name)
    def forward(self, x):
        nc = x.size(1) // 2
        return x[:, :nc] * torch.sigmoid(x[:, nc:])


class _OriginalResBlock(nn.Module):
    """The original code's ResBlock: a ``block`` Sequential, forward block(x) + x."""

    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * c),
                                   GLU(), nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return self.block(x) + x


def test_original_style_modules_are_fused():
    up = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(4, 6, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(6), GLU())
    block3x3 = nn.Sequential(nn.Conv2d(3, 6, 3, 1, 1, bias=False), nn.BatchNorm2d(6), GLU())
    model = _randomize_bn(nn.Sequential(up, _OriginalResBlock(3), block3x3))
    fused = _check_fused(model, [torch.randn(2, 4, 3, 5)])
    assert isinstance(fused[0], FoldedUpBlock)
    assert isinstance(fused[1], _OriginalResBlock)
    assert [type(m) for m in fused[1].block] == [nn.Conv2d, nn.Identity, GLU, nn.Conv2d, nn.Identity]
    assert fused[1].block[0].bias is not None and isinstance(fused[2][1], nn.Identity)


def test_unfoldable_batch_norms_are_left_alone():
    """A BN without running statistics, and one not preceded by a conv, stay (in eval mode)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False),
                          nn.ReLU(), nn.BatchNorm2d(4))
    _randomize_bn(model[3])
    fused = fuse_for_inference(model)
    assert model.training and not fused.training                       # the input keeps its mode
    assert isinstance(fused[1], nn.BatchNorm2d) and isinstance(fused[3], nn.BatchNorm2d)
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert_close(fused(x), model.eval()(x).double())


def _g_net_inputs(batch=2, nef=16, z_dim=10, words=5):
    z = torch.randn(batch, z_dim)
    sent = torch.randn(batch, nef)
    word_embs = torch.randn(batch, nef, words)
    mask = torch.zeros(batch, words, dtype=torch.bool)
    mask[0, 3:] = True
    return z, sent, word_embs, mask


def test_g_net_fused_gives_the_same_images():
    models = pytest.importorskip("attnfast.models")
    g_net = models.G_NET(ngf=4, nef=16, ncf=8, z_dim=10, branch_num=2, r_num=1).to(DEVICE)
    _randomize_bn(g_net)
    z, sent, word_embs, mask = (t.to(DEVICE) for t in _g_net_inputs())
    eps = torch.randn(z.shape[0], 8, device=DEVICE)
    with torch.no_grad():
        for _ in range(2):                                                 # move the running stats
            g_net(*(t.to(DEVICE) for t in _g_net_inputs()))
    g_net.eval()
    snapshot = copy.deepcopy(g_net.state_dict())
    fused = fuse_for_inference(g_net)
    exact = copy.deepcopy(g_net).double()
    with torch.no_grad():
        imgs, atts, mu, _logvar = fused(z, sent, word_embs, mask, eps=eps)
        base = g_net(z, sent, word_embs, mask, eps=eps)
        ref = exact(z.double(), sent.double(), word_embs.double(), mask, eps=eps.double())
    assert [i.shape for i in imgs] == [(2, 3, 64, 64), (2, 3, 128, 128)]
    for got, want, baseline in zip(imgs + atts + [mu], ref[0] + ref[1] + [ref[2]], base[0] + base[1] + [base[2]], strict=True):
        assert_close(got, want, baseline=baseline)
    for key, value in g_net.state_dict().items():
        assert torch.equal(value, snapshot[key]), key
    kinds = [type(m) for m in fused.modules()]
    assert kinds.count(FoldedUpBlock) == 5 and kinds.count(FoldedResBlock) == 1
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_g_net_fused_at_model_size(dtype):
    models = pytest.importorskip("attnfast.models")
    g_net = _randomize_bn(models.G_NET(ngf=32, nef=256, ncf=100, z_dim=100, branch_num=3, r_num=2)).cuda()
    inputs = [t.cuda() for t in _g_net_inputs(batch=8, nef=256, z_dim=100, words=18)]
    eps = torch.randn(8, 100, device="cuda")
    with torch.no_grad():
        g_net(*inputs)
    g_net = g_net.to(dtype).eval()
    fused = fuse_for_inference(g_net)
    exact = copy.deepcopy(g_net).double()
    with torch.no_grad():
        imgs = fused(*[t.to(dtype) if t.is_floating_point() else t for t in inputs], eps=eps.to(dtype))[0]
        base = g_net(*[t.to(dtype) if t.is_floating_point() else t for t in inputs], eps=eps.to(dtype))[0]
        ref = exact(*[t.double() if t.is_floating_point() else t for t in inputs], eps=eps.double())[0]
    for got, want, baseline in zip(imgs, ref, base, strict=True):
        assert_close(got, want, dtype=dtype, baseline=baseline)
