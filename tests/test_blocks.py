"""Fast generator blocks (issue 7): sub-pixel upBlock and fused BatchNorm + GLU / + residual.

Every fast backend of ``upBlock`` / ``ResBlock`` ("cpu": sub-pixel in PyTorch; "triton": sub-pixel +
fused Triton BN, interpreted on CPU) against the literal original in float64: the output, the
gradients to the input, to the 3x3 conv weights and to the BatchNorm affine parameters, the running
statistics and num_batches_tracked; odd H/W and channel counts, fp32/bf16/fp16 (tolerances.py: within
2x plain PyTorch's error in the same dtype). The kernels alone: NCHW, channels_last and strided
inputs, eval mode, every output element written (NaN-filled buffers), GPU tile shapes (their compile
for sm_80/sm_90: tests/test_kernel_resources.py). The custom ops under opcheck and torch.compile(fullgraph=True). GPU tests run the same
at the model's sizes under the gpu mark. The bench's --quick run.
"""
import collections
import copy
import os
import sys

import pytest
import torch
from torch import nn

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton code is imported

from tolerances import DTYPES, assert_close  # noqa: E402

from attnfast import ops, reference  # noqa: E402
from attnfast.ops import blocks as op_blocks  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
needs_triton = pytest.mark.skipif(
    not (INTERPRETED or torch.cuda.is_available()) or
    not op_blocks.triton_usable(torch.device("cuda" if torch.cuda.is_available() else "cpu"))[0],
    reason="Triton needs CUDA or TRITON_INTERPRET=1")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FAST = ["cpu", pytest.param("triton", marks=needs_triton)]
CROSSOVER = op_blocks.CPU_SUBPIXEL_MIN_POSITIONS


@pytest.fixture(autouse=True)
def subpixel_at_every_size(monkeypatch):
    """The "cpu" upBlock takes the sub-pixel path at every size here (below the crossover it is
    the reference itself), so the small shapes test the sub-pixel code (also the "cuda" one)."""
    monkeypatch.setattr(op_blocks, "CPU_SUBPIXEL_MIN_POSITIONS", 0)

# upBlock (B, Cin, Cout, H, W): odd everything; B*H*W below and above the CPU sub-pixel threshold;
# 1x1 input; B = 1.
UP_SHAPES = [(3, 5, 3, 3, 5), (4, 3, 5, 9, 11), (2, 4, 6, 1, 1), (1, 6, 2, 4, 7)]
RES_SHAPES = [(3, 5, 3, 5), (2, 4, 6, 7), (1, 3, 2, 2)]


def _randomize_bn(module: nn.Module) -> nn.Module:
    """BN affine parameters and running statistics away from their identity defaults."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                if m.weight is not None:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0, 0.3)
                if m.running_mean is not None:
                    m.running_mean.normal_(0, 0.3)
                    m.running_var.uniform_(0.5, 1.5)
    return module


def _set_backend(module: nn.Module, backend: str) -> nn.Module:
    for m in module.modules():
        if hasattr(m, "backend"):
            m.backend = backend
    return module


def _bns(module: nn.Module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _run(module: nn.Module, x: torch.Tensor, dtype: torch.dtype, grad: torch.Tensor | None = None):
    """Output, gradients (input, then every parameter) and the upstream gradient (float64, drawn
    here when not given) of one forward + backward in ``dtype``."""
    x = x.to(dtype).requires_grad_(True)
    out = module(x)
    if grad is None:
        grad = torch.randn(out.shape, dtype=torch.float64, device=out.device)
    grads = torch.autograd.grad(out, [x] + list(module.parameters()), grad.to(out.dtype))
    return out, list(grads), grad


def check_against_original(make, x: torch.Tensor, backend: str, dtype: torch.dtype, train: bool = True,
                           draws: int = 1):
    """Run ``make()`` with ``backend`` in ``dtype``, the original in float64 (same parameter
    values) and in ``dtype`` (the baseline); compare outputs, gradients and the BN buffers after
    the step. With ``draws`` > 1, fresh modules and inputs are drawn and each quantity is judged on
    the draws together (pooled relative error: a short vector such as a BN's dgamma has a heavy-
    tailed error ratio on a single draw)."""
    pooled = collections.defaultdict(lambda: ([], [], []))          # name -> (got, expected, base)

    def record(name, got, expected, base):
        for bucket, t in zip(pooled[name], (got, expected, base), strict=True):
            bucket.append(t.detach().double().flatten())

    for draw in range(draws):
        low = _randomize_bn(make()).to(DEVICE).to(dtype).train(train)   # parameters as seen in dtype
        exact = _set_backend(copy.deepcopy(low).double(), "reference")
        baseline = _set_backend(copy.deepcopy(low), "reference")
        fast = _set_backend(copy.deepcopy(low), backend)
        inputs = (x if draw == 0 else torch.randn_like(x)).to(DEVICE).to(dtype)
        expected, expected_grads, grad = _run(exact, inputs, torch.float64)
        base, base_grads, _ = _run(baseline, inputs, dtype, grad)
        got, got_grads, _ = _run(fast, inputs, dtype, grad)
        assert got.dtype == dtype
        record("output", got, expected, base)
        names = ["d input"] + [f"d {n}" for n, _ in fast.named_parameters()]
        for name, g, e, b in zip(names, got_grads, expected_grads, base_grads, strict=True):
            record(name, g, e, b)
        for i, (got_bn, exp_bn, base_bn) in enumerate(zip(_bns(fast), _bns(exact), _bns(baseline), strict=True)):
            if exp_bn.running_mean is None:
                assert got_bn.running_mean is None
                continue
            assert int(got_bn.num_batches_tracked) == int(exp_bn.num_batches_tracked)
            record(f"bn{i}.running_mean", got_bn.running_mean, exp_bn.running_mean, base_bn.running_mean)
            record(f"bn{i}.running_var", got_bn.running_var, exp_bn.running_var, base_bn.running_var)
    for name, (got, expected, base) in pooled.items():
        assert_close(torch.cat(got), torch.cat(expected), dtype=dtype, baseline=torch.cat(base), name=name)


# --------------------------------------------------------------------------------------------
# Drop-ins against the original
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 4, 1, 1), (3, 2, 4, 3)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_conv_equals_upsample_then_conv(shape, channels_last):
    x = torch.randn(*shape, dtype=torch.float64)
    weight = torch.randn(7, shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    expected = reference.up_conv_subpixel(x, weight)
    got = op_blocks.up_conv_subpixel(x, weight)
    assert_close(got, expected)
    upstream = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(expected, (x, weight), upstream),
                    torch.autograd.grad(got, (x, weight), upstream), strict=True):
        assert_close(b, a)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", UP_SHAPES)
def test_up_block_fp32_matches_original(backend, shape):
    batch, cin, cout, height, width = shape
    check_against_original(lambda: ops.upBlock(cin, cout), torch.randn(batch, cin, height, width),
                           backend, torch.float32)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_up_block_low_precision_matches_original(backend, dtype):
    check_against_original(lambda: ops.upBlock(6, 12), torch.randn(4, 6, 9, 10), backend, dtype, draws=3)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", RES_SHAPES)
def test_res_block_fp32_matches_original(backend, shape):
    batch, channels, height, width = shape
    check_against_original(lambda: ops.ResBlock(channels), torch.randn(batch, channels, height, width),
                           backend, torch.float32)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_res_block_low_precision_matches_original(backend, dtype):
    # 24 and 12 BN channels, 3 draws: enough values for a stable error ratio in low precision
    check_against_original(lambda: ops.ResBlock(12), torch.randn(3, 12, 6, 7), backend, dtype, draws=3)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", ["up", "res"])
def test_eval_mode_matches_original(backend, kind):
    make = (lambda: ops.upBlock(5, 3)) if kind == "up" else (lambda: ops.ResBlock(3))
    x = torch.randn(3, 5 if kind == "up" else 3, 4, 7)
    check_against_original(make, x, backend, torch.float32, train=False)


@pytest.mark.parametrize("backend", FAST)
def test_batch_norm_variants(backend):
    """momentum=None (cumulative average), no affine parameters, no running statistics."""
    def make():
        block = ops.upBlock(4, 3)
        block[2] = nn.BatchNorm2d(6, momentum=None, affine=False)
        res = ops.ResBlock(3)
        res.block[1] = nn.BatchNorm2d(6, track_running_stats=False)
        return nn.Sequential(block, res)
    model = make()
    x = torch.randn(3, 4, 5, 5)
    for _ in range(2):                                      # num_batches_tracked 1 -> 2
        check_against_original(lambda: copy.deepcopy(model), x, backend, torch.float32)
        model(x)


@pytest.mark.parametrize("backend", FAST)
def test_autocast_matches_original(backend):
    block = _randomize_bn(nn.Sequential(ops.upBlock(6, 4), ops.ResBlock(4)))
    x = torch.randn(3, 6, 5, 4)
    exact = _set_backend(copy.deepcopy(block).double(), "reference")(x.double())
    results = {}
    for name in ("reference", backend):
        model = _set_backend(copy.deepcopy(block), name)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            results[name] = model(x)
    assert results[backend].dtype == results["reference"].dtype
    assert_close(results[backend].float(), exact, dtype=torch.bfloat16,
                 baseline=results["reference"].float(), name="autocast output")


def test_cpu_backend_uses_the_original_below_the_crossover(monkeypatch):
    monkeypatch.setattr(op_blocks, "CPU_SUBPIXEL_MIN_POSITIONS", CROSSOVER)
    assert CROSSOVER == 320
    calls = []
    monkeypatch.setattr(op_blocks, "up_block_subpixel", lambda *a: calls.append("sub") or reference.up_block(*a))
    block = ops.upBlock(3, 2, backend="cpu")
    block(torch.randn(2, 3, 4, 4))                          # 32 positions: original
    assert calls == []
    block(torch.randn(5, 3, 8, 8))                          # 320 positions: sub-pixel
    assert calls == ["sub"]


def test_state_dict_keys_are_the_originals():
    up = ops.upBlock(6, 4)
    assert list(up.state_dict()) == ["1.weight", "2.weight", "2.bias", "2.running_mean",
                                     "2.running_var", "2.num_batches_tracked"]
    assert up[1].weight.shape == (8, 6, 3, 3)
    original = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                             nn.Conv2d(6, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.GLU(1))
    up.load_state_dict(original.state_dict())
    res = ops.ResBlock(5)
    prefixes = ["block.0.weight", "block.1.", "block.3.weight", "block.4."]
    assert all(any(k.startswith(p) for p in prefixes) for k in res.state_dict())
    assert res.block[0].weight.shape == (10, 5, 3, 3) and res.block[3].weight.shape == (5, 5, 3, 3)


# --------------------------------------------------------------------------------------------
# The kernels alone
# --------------------------------------------------------------------------------------------
def _kernels():
    return pytest.importorskip("attnfast.kernels.bn_glu")


def _expected(y, weight, bias, running_mean, running_var, training, glu, subpixel, residual):
    """The same computation in float64 PyTorch: (out, batch mean, unbiased batch var)."""
    x = op_blocks.subpixel_interleave(y.double()) if subpixel else y.double()
    bn = reference.BatchNormParams(weight.double(), bias.double(), running_mean.double().clone(),
                                   running_var.double().clone(), training)
    out = reference.batch_norm(x, bn)
    if glu:
        out = reference.glu(out)
    if residual is not None:
        out = out + residual.double()
    dims = (0, 2, 3)
    return out, x.mean(dims), x.var(dims, unbiased=True)


LAYOUTS = ["nchw", "channels_last", "strided"]
CASES = [("glu+subpixel", True, True, False), ("glu", True, False, False),
         ("residual", False, False, True), ("subpixel+residual", True, True, True)]


def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":                                 # a non-contiguous view of a wider tensor
        wide = torch.randn(*t.shape[:3], t.shape[3] + 3, dtype=t.dtype, device=t.device)
        wide[..., 2:2 + t.shape[3]] = t
        return wide[..., 2:2 + t.shape[3]]
    return t.contiguous()


# every layout x case x mode with the interpreter's tiles; the GPU's tile shapes (smaller, other
# channel blocking) on the two main layouts in training mode
KERNEL_RUNS = ([(layout, case, training, False) for layout in LAYOUTS for case in CASES
                for training in (True, False)]
               + [(layout, case, True, True) for layout in LAYOUTS[:2] for case in CASES])


@needs_triton
@pytest.mark.parametrize("layout, case, training, gpu_tiles", KERNEL_RUNS,
                         ids=[f"{r[0]}-{r[1][0]}-{'train' if r[2] else 'eval'}{'-gpu_tiles' if r[3] else ''}"
                              for r in KERNEL_RUNS])
def test_bn_act_kernels(layout, case, training, gpu_tiles, monkeypatch):
    """Forward and backward kernels vs float64 PyTorch; NaN-filled buffers must be fully written."""
    kernels = _kernels()
    monkeypatch.setattr(kernels, "_empty", lambda shape, dtype, like: torch.full(
        shape, float("nan"), dtype=dtype, device=like.device).contiguous(
        memory_format=torch.channels_last if kernels._channels_last(like) else torch.contiguous_format))
    if gpu_tiles:
        monkeypatch.setattr(kernels, "_interpret", lambda: False)
    _, glu, subpixel, has_residual = case
    channels = 6 if glu else 5
    batch, height, width = 3, 5, 7
    y = _layout(torch.randn(batch, channels * (4 if subpixel else 1), height + subpixel,
                            width + subpixel, device=DEVICE) * 2 + 0.7, layout)
    weight = torch.rand(channels, device=DEVICE) + 0.5
    bias = torch.randn(channels, device=DEVICE)
    running_mean, running_var = torch.randn(channels, device=DEVICE), torch.rand(channels, device=DEVICE) + 0.5
    out_channels = channels // 2 if glu else channels
    out_hw = (2 * height, 2 * width) if subpixel else (height, width)
    residual = (_layout(torch.randn(batch, out_channels, *out_hw, device=DEVICE), layout)
                if has_residual else None)
    out, mean, invstd, var = kernels.bn_act_forward(y, weight, bias, residual, running_mean,
                                                    running_var, training, 1e-5, glu, subpixel)
    expected, batch_mean, batch_var = _expected(y, weight, bias, running_mean, running_var, training,
                                                glu, subpixel, residual)
    assert_close(out, expected, name="out")
    if training:
        assert_close(mean, batch_mean, name="mean")
        assert_close(var, batch_var, name="unbiased var")
    # backward against autograd of the float64 computation
    y64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (y, weight, bias))
    exp64, _, _ = _expected(y64, w64, b64, running_mean, running_var, training, glu, subpixel, residual)
    grad = _layout(torch.randn_like(expected).float(), layout)
    dy, dweight, dbias = kernels.bn_act_backward(grad, y, weight, bias, mean, invstd, training, glu,
                                                 subpixel)
    edy, edw, edb = torch.autograd.grad(exp64, (y64, w64, b64), grad.double())
    assert_close(dy, edy, name="dy")
    assert_close(dweight, edw, name="dweight")
    assert_close(dbias, edb, name="dbias")
    assert dy.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


@needs_triton
def test_bn_act_handles_expanded_gradients_and_one_channel_blocks():
    """A stride-0 grad_out (what .sum() sends back) and a channel count above one tile."""
    kernels = _kernels()
    y = torch.randn(2, 4 * 70, 3, 4, device=DEVICE)
    weight, bias = torch.rand(70, device=DEVICE) + 0.5, torch.randn(70, device=DEVICE)
    zeros, ones = torch.zeros(70, device=DEVICE), torch.ones(70, device=DEVICE)
    out, mean, invstd, _ = kernels.bn_act_forward(y, weight, bias, None, zeros, ones, True, 1e-5,
                                                  True, True)
    grad = torch.ones(1, device=DEVICE).expand(out.shape)
    dy, dweight, dbias = kernels.bn_act_backward(grad, y, weight, bias, mean, invstd, True, True, True)
    y64, w64, b64 = (t.detach().double().requires_grad_(True) for t in (y, weight, bias))
    exp, _, _ = _expected(y64, w64, b64, zeros, ones, True, True, True, None)
    for got, want in zip((dy, dweight, dbias), torch.autograd.grad(exp.sum(), (y64, w64, b64)), strict=True):
        assert_close(got, want)


@needs_triton
def test_kernels_reject_bad_inputs():
    kernels = _kernels()
    y = torch.randn(2, 8, 3, 3, device=DEVICE)
    w = torch.ones(8, device=DEVICE)
    with pytest.raises(ValueError, match="subpixel"):
        kernels.check_inputs(torch.randn(2, 6, 3, 3, device=DEVICE), w, w, None, True, True, True)
    with pytest.raises(ValueError, match="weight"):
        kernels.check_inputs(y, torch.ones(5, device=DEVICE), w, None, True, False, True)
    with pytest.raises(ValueError, match="more than 1 value"):
        kernels.check_inputs(torch.randn(1, 8, 1, 1, device=DEVICE), w, w, None, True, False, True)
    with pytest.raises(ValueError, match="residual"):
        kernels.check_inputs(y, w, w, torch.randn(2, 8, 3, 3, device=DEVICE), True, False, True)
    with pytest.raises(ValueError, match="even"):
        kernels.check_inputs(torch.randn(2, 7, 3, 3, device=DEVICE), torch.ones(7, device=DEVICE),
                             torch.ones(7, device=DEVICE), None, True, False, True)


# --------------------------------------------------------------------------------------------
# Custom ops: opcheck and torch.compile
# --------------------------------------------------------------------------------------------
@needs_triton
def test_custom_ops_opcheck():
    pytest.importorskip("attnfast.kernels.blocks")
    y = torch.randn(2, 24, 4, 6, device=DEVICE, requires_grad=True)
    w = (torch.rand(6, device=DEVICE) + 0.5).requires_grad_(True)
    b = torch.randn(6, device=DEVICE, requires_grad=True)
    stats = (torch.zeros(6, device=DEVICE), torch.ones(6, device=DEVICE))
    torch.library.opcheck(torch.ops.attnfast.bn_act.default,
                          (y, w, b, None, *stats, True, 1e-5, True, True))
    x = torch.randn(2, 3, 4, 5, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.attnfast.bn_act.default,
                          (x, w[:3].detach().requires_grad_(True), b[:3].detach(), torch.randn_like(x),
                           stats[0][:3], stats[1][:3], False, 1e-5, False, False))
    torch.library.opcheck(torch.ops.attnfast.affine_act.default,
                          (y.detach(), torch.ones(6, device=DEVICE), b.detach(), None, True, True))


@needs_triton
def test_triton_blocks_under_torch_compile_fullgraph():
    model = _randomize_bn(nn.Sequential(ops.upBlock(4, 3, backend="triton"),
                                        ops.ResBlock(3, backend="triton"))).to(DEVICE)
    eager = copy.deepcopy(model)
    # On CPU, aot_eager: dynamo + AOT autograd through the custom ops' fake kernels, without
    # inductor's C++ build (tens of seconds on a small machine); CUDA runs inductor.
    compiled = torch.compile(model, fullgraph=True,
                             backend="inductor" if DEVICE.type == "cuda" else "aot_eager")
    x = torch.randn(2, 4, 3, 5, device=DEVICE, requires_grad=True)
    out = compiled(x)
    grad = torch.randn_like(out)
    (dx,) = torch.autograd.grad(out, x, grad)
    ref_out = eager(x)
    (ref_dx,) = torch.autograd.grad(ref_out, x, grad)
    assert_close(out, ref_out.double())
    assert_close(dx, ref_dx.double())
    for a, b in zip(_bns(model), _bns(eager), strict=True):
        assert_close(a.running_var, b.running_var.double())
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 1


# --------------------------------------------------------------------------------------------
# GPU: the model's sizes
# --------------------------------------------------------------------------------------------
REAL = [("up", 20, 512, 256, 4), ("up", 20, 64, 32, 32), ("up", 20, 64, 32, 64), ("res", 20, 64, 64, 64),
        ("res", 8, 64, 64, 128)]


@pytest.mark.gpu
@pytest.mark.parametrize("size", REAL, ids=[f"{s[0]}-B{s[1]}-{s[2]}-{s[4]}" for s in REAL])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_gpu_blocks_at_model_sizes(size, dtype, backend, channels_last):
    kind, batch, cin, cout, res = size
    if kind == "res" and backend == "cuda":
        pytest.skip("ResBlock's cuda backend is the reference")
    make = (lambda: ops.upBlock(cin, cout)) if kind == "up" else (lambda: ops.ResBlock(cin))
    x = torch.randn(batch, cin, res, res)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    check_against_original(make, x, backend, dtype)


@pytest.mark.gpu
def test_gpu_training_step_captures_in_a_cuda_graph():
    """Fused blocks (forward + backward, running statistics) inside torch.cuda.graph."""
    model = _randomize_bn(nn.Sequential(ops.upBlock(64, 32, backend="triton"),
                                        ops.ResBlock(32, backend="triton"))).cuda()
    eager = copy.deepcopy(model)
    x = torch.randn(20, 64, 32, 32, device="cuda", requires_grad=True)
    grad = torch.randn(20, 32, 64, 64, device="cuda")
    params = list(model.parameters())
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):                           # warm-up (compiles the kernels)
        for _ in range(2):
            torch.autograd.grad(model(x), [x] + params, grad)
    torch.cuda.current_stream().wait_stream(side)
    for a, b in zip(_bns(model), _bns(eager), strict=True):              # same starting statistics as eager
        a.running_mean.copy_(b.running_mean)
        a.running_var.copy_(b.running_var)
        a.num_batches_tracked.copy_(b.num_batches_tracked)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
        grads = torch.autograd.grad(out, [x] + params, grad)
    graph.replay()
    torch.cuda.synchronize()
    ref_out = eager(x)
    ref_grads = torch.autograd.grad(ref_out, [x] + list(eager.parameters()), grad)
    assert_close(out, ref_out.double())
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r.double())
    for a, b in zip(_bns(model), _bns(eager), strict=True):
        assert_close(a.running_var, b.running_var.double())
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked)


# --------------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------------
def test_blocks_bench_quick(tmp_path, capsys):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    try:
        import blocks_bench
    finally:
        sys.path.pop(0)
    rows = blocks_bench.main(["--quick", "--results-dir", str(tmp_path)])
    kind = "cpu" if not torch.cuda.is_available() else None
    files = list(tmp_path.glob("blocks_quick_*.json"))
    assert len(files) == 1 and (kind is None or files[0].name == "blocks_quick_cpu.json")
    variants = {(r["variant"], r["pass"]) for r in rows}
    assert {("original", "fwd"), ("original", "fwd+bwd"), ("fast", "fwd+bwd"), ("fused", "infer")} <= variants
    assert all(r["rel_err"] < 5e-2 for r in rows), [r for r in rows if r["rel_err"] >= 5e-2]
    assert "TFLOP/s" in capsys.readouterr().out
