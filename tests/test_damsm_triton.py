"""The Triton DAMSM scores (kernels/damsm.py) against the float64 reference: values, attention and
gradients to both inputs, the word loss against the original per-sentence loop, the custom op
under torch.compile. Without CUDA the kernels run in the Triton interpreter (small shapes)."""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton code is imported
pytest.importorskip("triton")

from tolerances import DTYPES, assert_close, rel_error

from attnfast import ops, reference  # noqa: E402
from attnfast.reference import damsm as ref_damsm  # noqa: E402

kernels = pytest.importorskip("attnfast.kernels.damsm")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
G1, G2, G3 = reference.GAMMA1, reference.GAMMA2, reference.GAMMA3

# (B_img, B_sent, D, R, T): B_img != B_sent, odd R and D, T = 1, several region blocks.
SMALL = [(3, 5, 32, 17, 9), (4, 2, 24, 25, 1), (2, 3, 16, 40, 7)]
REAL = [(48, 48, 256, 289, 18), (48, 40, 256, 289, 18)]


def _lens(batch: int, num_words: int) -> torch.Tensor:
    """Random lengths in [1, T] that include 1 and T."""
    lens = torch.randint(1, num_words + 1, (batch,))
    lens[0] = num_words
    if batch > 1:
        lens[-1] = 1
    return lens.to(DEVICE)


def _inputs(n_img, n_sent, dim, n_reg, n_words, dtype):
    """Inputs in ``dtype`` and their exact float64 copies (the oracle sees the same values)."""
    regions = torch.randn(n_img, dim, n_reg, device=DEVICE).to(dtype)
    words = torch.randn(n_sent, dim, n_words, device=DEVICE).to(dtype)
    return regions, words, _lens(n_sent, n_words)


def _leaf(t: torch.Tensor, dtype=None) -> torch.Tensor:
    return t.detach().to(dtype or t.dtype).clone().requires_grad_(True)


def _scores_and_grads(fn, regions, words, weights):
    """fn's scores and the gradients of sum(weights * scores) to both inputs."""
    regions, words = _leaf(regions), _leaf(words)
    scores = fn(regions, words)
    (scores.to(weights.dtype) * weights).sum().backward()
    return scores.detach(), regions.grad, words.grad


def _plain(dtype, lens, num_words):
    """Plain PyTorch in ``dtype`` (no upcast): the baseline of the tolerance rule."""
    pad = reference.word_padding_mask(lens, num_words)
    if dtype == torch.float32:
        return lambda r, w: reference.damsm_scores(r, w, lens, G1, G2)
    return lambda r, w: ref_damsm._pair_block(r, w, pad, G1, G2, False)[0]


@pytest.fixture
def nan_outputs(monkeypatch):
    """Kernel outputs start as NaN, so an element the kernel never writes fails the test."""
    monkeypatch.setattr(kernels, "_alloc", 
                        lambda shape, device, dtype: torch.full(shape, float("nan"), device=device,
                                                                dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SMALL, ids=lambda s: "x".join(map(str, s)))
def test_scores_and_gradients(shape, dtype, nan_outputs):
    regions, words, lens = _inputs(*shape, dtype)
    weights = torch.randn(shape[0], shape[1], device=DEVICE, dtype=torch.float64)
    expect = _scores_and_grads(lambda r, w: reference.damsm_scores(r, w, lens, G1, G2),
                               regions.double(), words.double(), weights)
    plain = _scores_and_grads(_plain(dtype, lens, shape[4]), regions, words, weights.to(dtype))
    got = _scores_and_grads(lambda r, w: ops.damsm_scores(r, w, lens, backend="triton"),
                            regions, words, weights)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == dtype
    for name, g, e, p in zip(("scores", "d_regions", "d_words"), got, expect, plain, strict=True):
        assert_close(g, e, dtype=dtype, baseline=p, name=name)
    pad = reference.word_padding_mask(lens, shape[4])
    assert (got[2].permute(0, 2, 1)[pad] == 0).all(), "padded words must get zero gradient"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_maps(dtype, nan_outputs):
    regions, words, lens = _inputs(3, 4, 32, 25, 6, dtype)
    scores, attn = ops.damsm_scores(regions, words, lens, return_attn=True, backend="triton")
    ref_scores, ref_attn = reference.damsm_scores(regions.double(), words.double(), lens,
                                                  return_attn=True)
    plain = reference.damsm_scores(regions, words, lens, return_attn=True)  # fp32 math, dtype out
    assert attn.dtype == dtype and attn.shape == (3, 4, 6, 25)
    assert_close(scores, ref_scores, dtype=dtype, baseline=plain[0], name="scores")
    assert_close(attn, ref_attn, dtype=dtype, baseline=plain[1], name="attn")
    pad = reference.word_padding_mask(lens, 6)
    assert (attn[:, pad] == 0).all()
    valid_sums = attn.float().sum(-1)[:, ~pad]
    assert torch.allclose(valid_sums, torch.ones_like(valid_sums), atol=2e-2)


def test_attention_with_gradients_and_non_contiguous_inputs():
    regions = torch.randn(3, 17, 32, device=DEVICE).transpose(1, 2)  # (B, D, R) non-contiguous
    words = torch.randn(4, 9, 32, device=DEVICE).transpose(1, 2)
    lens = _lens(4, 9)
    r, w = _leaf(regions), _leaf(words)
    scores, attn = ops.damsm_scores(r, w, lens, return_attn=True, backend="triton")
    assert not attn.requires_grad
    scores.sum().backward()
    r64, w64 = _leaf(regions, torch.float64), _leaf(words, torch.float64)
    ref_scores, ref_attn = reference.damsm_scores(r64, w64, lens, return_attn=True)
    ref_scores.sum().backward()
    for name, g, e in (("scores", scores, ref_scores), ("attn", attn, ref_attn),
                       ("d_regions", r.grad, r64.grad), ("d_words", w.grad, w64.grad)):
        assert_close(g, e, dtype=torch.float32, name=name)


def test_damsm_size_regions_fp32():
    """R = 289 (19 region blocks in the interpreter), D = 64, T = 18."""
    regions, words, lens = _inputs(2, 3, 64, 289, 18, torch.float32)
    weights = torch.randn(2, 3, device=DEVICE, dtype=torch.float64)
    expect = _scores_and_grads(lambda r, w: reference.damsm_scores(r, w, lens), regions.double(),
                               words.double(), weights)
    got = _scores_and_grads(lambda r, w: ops.damsm_scores(r, w, lens, backend="triton"),
                            regions, words, weights)
    for name, g, e in zip(("scores", "d_regions", "d_words"), got, expect, strict=True):
        assert_close(g, e, dtype=torch.float32, name=name)


def _words_loss_case(batch, dim, h, w, num_words, dtype):
    img = torch.randn(batch, dim, h, w, device=DEVICE).to(dtype)
    words = torch.randn(batch, dim, num_words, device=DEVICE).to(dtype)
    lens = _lens(batch, num_words)
    class_ids = torch.randint(0, max(2, batch // 2), (batch,)).tolist()  # repeats: masking
    return img, words, lens, torch.arange(batch, device=DEVICE), class_ids


def _loss_and_grads(fn, img, words, *args):
    img, words = _leaf(img), _leaf(words)
    loss0, loss1, att_maps = fn(img, words, *args)
    (loss0 + 0.5 * loss1).backward()
    return (img.grad, words.grad), att_maps


def _losses(fn, cases, dtype):
    """(loss0, loss1) of every case, stacked: (2 * len(cases),)."""
    with torch.no_grad():
        return torch.cat([torch.stack(fn(img.to(dtype), words.to(dtype), labels, lens, ids,
                                         img.shape[0])[:2]).reshape(2)
                          for img, words, lens, labels, ids in cases])


def _triton_words_loss(*args):
    return ops.words_loss(*args, backend="triton")


def _check_words_loss(dtype, batches, batch, dim, h, w, num_words):
    """ops.words_loss(backend="triton") against the original loop in float64: gradients (and the
    attention maps) of one batch, loss values of ``batches`` batches; a single (loss0, loss1) pair is
    too few numbers for the 2x-plain-PyTorch rule to be more than noise."""
    cases = [_words_loss_case(batch, dim, h, w, num_words, dtype) for _ in range(batches)]
    img, words, lens, labels, class_ids = cases[0]
    args = (labels, lens, class_ids, batch)
    expect, expect_maps = _loss_and_grads(reference.words_loss_original, img.double(),
                                          words.double(), *args)
    plain, _ = _loss_and_grads(reference.words_loss_original, img, words, *args)
    got, maps = _loss_and_grads(_triton_words_loss, img, words, *args)
    for name, g, e, p in zip(("d_img_features", "d_words_emb"), got, expect, plain, strict=True):
        assert_close(g, e, dtype=dtype, baseline=p, name=name)
    assert [m.shape for m in maps] == [m.shape for m in expect_maps]
    map_bound = 1e-5 if dtype == torch.float32 else 1e-2
    for got_map, ref_map in zip(maps, expect_maps, strict=True):
        assert rel_error(got_map, ref_map) <= map_bound
    assert_close(_losses(_triton_words_loss, cases, dtype),
                 _losses(reference.words_loss_original, cases, torch.float64), dtype=dtype,
                 baseline=_losses(reference.words_loss_original, cases, dtype), name="losses")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_words_loss_matches_original_loop(dtype):
    _check_words_loss(dtype, 6, 5, 32, 4, 5, 7)


def test_words_loss_class_masking():
    """Same-class pairs are excluded as in the original, and the exclusion changes the loss."""
    img, words, lens, labels, _ = _words_loss_case(4, 16, 3, 3, 5, torch.float32)
    # caption 1 = caption 0, so the masked pair (image 0, caption 1) scores as high as the true pair
    # and excluding it must change the loss (with random captions its score can be negligible)
    words[1] = words[0]
    lens = lens.clone() if torch.is_tensor(lens) else list(lens)
    lens[1] = lens[0]
    class_ids = [7, 7, 8, 9]
    loss0, _, _ = ops.words_loss(img, words, labels, lens, class_ids, 4, backend="triton")
    ref0, _, _ = reference.words_loss_original(img.double(), words.double(), labels, lens, class_ids, 4)
    assert_close(loss0.reshape(1), ref0.reshape(1), dtype=torch.float32, name="loss0")
    no_mask, _, _ = ops.words_loss(img, words, labels, lens, None, 4, backend="triton")
    assert not torch.allclose(loss0, no_mask)


def test_custom_op_registration_and_compile():
    custom = pytest.importorskip("attnfast.ops._damsm_custom_op")
    regions, words, lens = _inputs(2, 3, 16, 17, 5, torch.float32)
    torch.library.opcheck(torch.ops.attnfast.damsm_scores_triton.default, (regions, words, lens, G1, G2),
                          test_utils=("test_schema", "test_faketensor"))

    def loss(r, w):
        return custom.damsm_scores_custom(r, w, lens, G1, G2).logsumexp(1).sum()

    eager = _scores_and_grads(lambda r, w: loss(r, w).reshape(1), regions, words,
                              torch.ones(1, device=DEVICE))
    compiled_fn = torch.compile(loss, backend="aot_eager", fullgraph=True)
    compiled = _scores_and_grads(lambda r, w: compiled_fn(r, w).reshape(1), regions, words,
                                 torch.ones(1, device=DEVICE))
    for name, c, e in zip(("loss", "d_regions", "d_words"), compiled, eager, strict=True):
        torch.testing.assert_close(c, e, msg=name)


def test_rejects_float64_and_bad_shapes():
    regions, words, lens = _inputs(2, 2, 16, 9, 4, torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        ops.damsm_scores(regions, words, lens, backend="triton")
    with pytest.raises(ValueError, match="cap_lens"):
        ops.damsm_scores(regions.float(), words.float(), lens * 0, backend="triton")


# ------------------------------------------------------------------ real size, GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", REAL, ids=lambda s: "x".join(map(str, s)))
def test_real_size_gpu(shape, dtype, nan_outputs):
    test_scores_and_gradients(shape, dtype, None)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_words_loss_real_size_gpu(dtype):
    _check_words_loss(dtype, 4, 48, 256, 17, 17, 18)


@pytest.mark.gpu
def test_cuda_graph_and_inductor_gpu():
    custom = pytest.importorskip("attnfast.ops._damsm_custom_op")
    regions, words, lens = _inputs(48, 48, 256, 289, 18, torch.bfloat16)
    r, w = _leaf(regions), _leaf(words)
    expect = custom.damsm_scores_custom(r, w, lens, G1, G2)
    expect.sum().backward()
    grads = (r.grad.clone(), w.grad.clone())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up outside capture
        custom.damsm_scores_custom(r, w, lens, G1, G2).sum().backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    r.grad, w.grad = None, None
    with torch.cuda.graph(graph):
        out = custom.damsm_scores_custom(r, w, lens, G1, G2)
        out.sum().backward()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, expect)
    for g, e in zip((r.grad, w.grad), grads, strict=True):
        assert rel_error(g, e) < 1e-2  # atomics: summation order differs
    compiled = torch.compile(lambda a, b: custom.damsm_scores_custom(a, b, lens, G1, G2),
                             fullgraph=True)
    torch.testing.assert_close(compiled(regions, words), expect.detach())


def test_bench_quick(tmp_path):
    """bench/damsm_bench.py --quick runs in seconds and writes its JSON (device, versions, rows)."""
    import importlib.util
    import json
    path = os.path.join(os.path.dirname(__file__), os.pardir, "bench", "damsm_bench.py")
    spec = importlib.util.spec_from_file_location("damsm_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--quick", "--results-dir", str(tmp_path)])
    kind = "cpu" if DEVICE.type == "cpu" else None
    files = list(tmp_path.glob("damsm_quick_*.json"))
    assert len(files) == 1 and (kind is None or files[0].name == f"damsm_quick_{kind}.json")
    data = json.loads(files[0].read_text())
    assert {"device", "torch", "triton", "date", "git_commit", "matmul_flop_per_s"} <= set(data["meta"])
    backends = {r["backend"] for r in rows}
    assert {"original", "vectorised"} <= backends
    assert all(r["ms"] > 0 and r["rel_err"] < 1e-3 for r in rows if r["dtype"] == "float32")
