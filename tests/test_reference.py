"""The reference math: gradchecks in float64, the vectorised DAMSM against the original loop, the
mask modes against the original formulation, the sub-pixel identity."""
import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close
from torch.autograd import gradcheck

from attnfast import reference as R

f64 = {"dtype": torch.float64}


def _mask(lengths, num_words):
    return torch.arange(num_words)[None, :] >= torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------- word–region attention
@pytest.mark.parametrize("mask_mode", ["correct", "attngan"])
def test_attention_gradcheck(mask_mode):
    h = torch.randn(3, 4, 3, 5, **f64, requires_grad=True)
    words = torch.randn(3, 4, 6, **f64, requires_grad=True)
    mask = _mask([6, 2, 0], 6)  # a fully padded caption too
    gradcheck(lambda a, b: R.word_region_attention(a, b, mask, mask_mode=mask_mode, return_attn=True),
              (h, words))


def test_attention_matches_original_formulation_without_mask():
    h, words = torch.randn(2, 8, 4, 4, **f64), torch.randn(2, 8, 5, **f64)
    out, attn = R.word_region_attention(h, words, return_attn=True)
    ref_out, ref_attn = R.global_attention_general_original(h, words, None)
    assert_close(out, ref_out), assert_close(attn, ref_attn)


def test_attngan_mode_equals_original_and_correct_mode_differs_only_where_lengths_differ():
    batch, channels, side, num_words = 3, 6, 3, 7
    h, words = torch.randn(batch, channels, side, side, **f64), torch.randn(batch, channels, num_words, **f64)
    mask = _mask([7, 4, 5], num_words)
    out, attn = R.word_region_attention(h, words, mask, mask_mode="attngan", return_attn=True)
    ref_out, ref_attn = R.global_attention_general_original(h, words, mask)
    assert_close(out, ref_out), assert_close(attn, ref_attn)

    correct = R.word_region_attention(h, words, mask, mask_mode="correct")
    # rows whose misaligned mask equals their own caption's mask agree; the others differ
    rows = R.expand_word_mask(mask, side * side, "attngan")
    own = R.expand_word_mask(mask, side * side, "correct")
    same_mask = (rows == own).all(-1).view(batch, side, side)              # (B, H, W)
    diff = (correct - out).abs().amax(1)                                    # (B, H, W)
    assert torch.all(diff[same_mask] < 1e-12)
    assert torch.all(diff[~same_mask] > 1e-9)
    assert (~same_mask).any()

    equal_lengths = _mask([4, 4, 4], num_words)
    assert torch.equal(R.word_region_attention(h, words, equal_lengths, mask_mode="attngan"),
                       R.word_region_attention(h, words, equal_lengths, mask_mode="correct"))


def test_fully_masked_row_gives_zeros_not_nan():
    h, words = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 3)
    mask = _mask([3, 0], 3)
    out, attn = R.word_region_attention(h, words, mask, return_attn=True)
    assert torch.all(out[1] == 0) and torch.all(attn[1] == 0)
    assert torch.isfinite(out).all()


def test_attention_low_precision_computes_in_fp32():
    h, words = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 18)
    mask = _mask([18, 9], 18)
    exact = R.word_region_attention(h.double(), words.double(), mask)
    for dtype in (torch.bfloat16, torch.float16):
        out = R.word_region_attention(h.to(dtype), words.to(dtype), mask)
        assert out.dtype == dtype
        assert_close(out, exact, dtype=dtype)


# ---------------------------------------------------------------- DAMSM
def _damsm_inputs(batch=5, dim=12, side=3, num_words=7, dtype=torch.float64, lengths=None):
    img = torch.randn(batch, dim, side, side, dtype=dtype, requires_grad=True)
    words = torch.randn(batch, dim, num_words, dtype=dtype, requires_grad=True)
    lens = torch.tensor(lengths or torch.randint(1, num_words + 1, (batch,)).tolist())
    lens[0] = num_words
    return img, words, lens


@pytest.mark.parametrize("class_ids", [None, [1, 2, 1, 3, 2]])
def test_vectorised_words_loss_equals_original_loop(class_ids):
    img, words, lens = _damsm_inputs()
    labels = torch.arange(5)
    loop = R.words_loss_original(img, words, labels, lens, class_ids, 5)
    vec = R.words_loss(img, words, labels, lens, class_ids, 5)
    for a, b in zip(loop[:2], vec[:2], strict=True):
        assert_close(b, a)
    for a, b in zip(loop[2], vec[2], strict=True):
        assert a.shape == b.shape
        assert_close(b, a)
    grads_loop = torch.autograd.grad(loop[0] + 2 * loop[1], (img, words))
    grads_vec = torch.autograd.grad(vec[0] + 2 * vec[1], (img, words))
    for a, b in zip(grads_loop, grads_vec, strict=True):
        assert_close(b, a)


def test_damsm_scores_rectangular_and_padding_ignored():
    img = torch.randn(4, 8, 5, **f64)
    words = torch.randn(3, 8, 6, **f64)
    lens = torch.tensor([6, 1, 3])
    scores = R.damsm_scores(img, words, lens)
    assert scores.shape == (4, 3)
    garbage = words.clone()
    garbage[1, :, 1:] = 1e3
    garbage[2, :, 3:] = -7.0
    assert_close(R.damsm_scores(img, garbage, lens), scores)
    # score of one pair by hand: the original func_attention on the sliced sentence
    j, i = 2, 2
    ctx, _ = R.func_attention(words[i:i + 1, :, :3], img[j:j + 1].view(1, 8, 5, 1), R.GAMMA1)
    cos = R.cosine_similarity(words[i, :, :3].t(), ctx[0].t())
    assert_close(scores[j, i], torch.log(torch.exp(R.GAMMA2 * cos).sum()))


def test_damsm_scores_gradcheck():
    img = torch.randn(3, 5, 4, **f64, requires_grad=True)
    words = torch.randn(2, 5, 4, **f64, requires_grad=True)
    lens = torch.tensor([4, 2])
    gradcheck(lambda a, b: R.damsm_scores(a, b, lens, 4.0, 5.0, return_attn=True), (img, words))


def test_damsm_chunking_is_exact(monkeypatch):
    img, words, lens = _damsm_inputs(batch=6)
    whole = R.damsm_scores(img.flatten(2), words, lens)
    monkeypatch.setattr(R.damsm, "_PAIR_BLOCK_ELEMENTS", 1)
    assert_close(R.damsm_scores(img.flatten(2), words, lens), whole)


@pytest.mark.parametrize("class_ids", [None, torch.tensor([0, 0, 1, 1])])
def test_sent_loss_matches_formula_and_gradcheck(class_ids):
    cnn = torch.randn(4, 6, **f64, requires_grad=True)
    rnn = torch.randn(4, 6, **f64, requires_grad=True)
    labels = torch.arange(4)
    loss0, loss1 = R.sent_loss(cnn, rnn, labels, class_ids, 4)
    scores = F.normalize(cnn, dim=1) @ F.normalize(rnn, dim=1).t() * R.GAMMA3
    if class_ids is not None:
        scores = scores.masked_fill(R.class_mask(class_ids, 4), float("-inf"))
    assert_close(loss0, F.cross_entropy(scores, labels))
    assert_close(loss1, F.cross_entropy(scores.t(), labels))
    gradcheck(lambda a, b: R.sent_loss(a, b, labels, class_ids, 4), (cnn, rnn))


def test_words_loss_gradcheck_with_class_mask():
    img, words, lens = _damsm_inputs(batch=3, dim=4, side=2, num_words=3)
    labels = torch.arange(3)
    gradcheck(lambda a, b: R.words_loss(a, b, labels, lens, [5, 6, 5], 3)[:2], (img, words))


def test_class_mask_matches_original_definition():
    ids = [3, 1, 3, 3, 2]
    mask = R.class_mask(ids, 5)
    for i in range(5):
        for j in range(5):
            assert bool(mask[i, j]) == (i != j and ids[i] == ids[j])


# ---------------------------------------------------------------- blocks
def _bn(channels, training=True, dtype=torch.float64):
    return R.BatchNormParams(torch.rand(channels, dtype=dtype, requires_grad=True) + 0.5,
                             torch.randn(channels, dtype=dtype, requires_grad=True),
                             torch.zeros(channels, dtype=dtype), torch.ones(channels, dtype=dtype),
                             training)


def test_glu_and_bn_glu_gradcheck():
    x = torch.randn(3, 6, 2, 3, **f64, requires_grad=True)
    gradcheck(R.glu, (x,))
    bn = _bn(6)
    gradcheck(lambda a, w, b: R.bn_glu(a, R.BatchNormParams(w, b, None, None, True)), (x, bn.weight, bn.bias))
    with pytest.raises(ValueError, match="even"):
        R.glu(torch.randn(2, 3, 4))


def test_up_block_and_res_block_gradcheck():
    x = torch.randn(2, 3, 3, 2, **f64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, **f64, requires_grad=True)
    bn = _bn(4)
    gradcheck(lambda a, w: R.up_block(a, w, R.BatchNormParams(bn.weight, bn.bias, None, None, True)),
              (x, weight))
    w1 = torch.randn(6, 3, 3, 3, **f64, requires_grad=True)
    w2 = torch.randn(3, 3, 3, 3, **f64, requires_grad=True)
    gradcheck(lambda a, p, q: R.res_block(a, p, R.BatchNormParams(None, None, None, None, True),
                                          q, R.BatchNormParams(None, None, None, None, True)),
              (x, w1, w2))


def test_up_block_matches_the_original_module_and_updates_running_stats():
    x = torch.randn(4, 5, 3, 7)
    original = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="nearest"),
                                   torch.nn.Conv2d(5, 8, 3, 1, 1, bias=False),
                                   torch.nn.BatchNorm2d(8))
    expected = R.glu(original(x))
    bn = torch.nn.BatchNorm2d(8)
    out = R.up_block(x, original[1].weight, R.BatchNormParams.of(bn))
    assert_close(out, expected)
    assert torch.allclose(bn.running_mean, original[2].running_mean)
    assert torch.allclose(bn.running_var, original[2].running_var)
    assert int(bn.num_batches_tracked) == 1


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 4, 1, 1), (3, 2, 4, 3)])
def test_subpixel_equals_nearest_upsample_then_conv(shape):
    x = torch.randn(*shape, **f64, requires_grad=True)
    weight = torch.randn(7, shape[1], 3, 3, **f64, requires_grad=True)
    expected = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
    got = R.up_conv_subpixel(x, weight)
    assert_close(got, expected)
    upstream = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad(expected, (x, weight), upstream),
                    torch.autograd.grad(got, (x, weight), upstream), strict=True):
        assert_close(b, a)


# ---------------------------------------------------------------- CA, KL, GAN losses
def test_conditioning_augmentation_and_kl():
    sent = torch.randn(3, 8, **f64, requires_grad=True)
    weight = torch.randn(4 * 2, 8, **f64, requires_grad=True)
    bias = torch.randn(4 * 2, **f64, requires_grad=True)
    eps = torch.randn(3, 2, **f64)

    def sample(s, w, b):
        mu, logvar = R.ca_encode(s, w, b)
        return R.reparametrize(mu, logvar, eps), R.kl_loss(mu, logvar)

    gradcheck(sample, (sent, weight, bias))
    mu, logvar = R.ca_encode(sent, weight, bias)
    # the original's in-place formulation
    element = mu.pow(2).add(logvar.exp()).mul(-1).add(1).add(logvar)
    assert_close(R.kl_loss(mu, logvar), torch.mean(element).mul(-0.5))
    assert R.kl_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0


def test_gan_losses_equal_sigmoid_bce_of_the_original():
    logits = {k: torch.randn(6, **f64, requires_grad=True) for k in ("rc", "fc", "ru", "fu")}
    wrong = torch.randn(5, **f64, requires_grad=True)
    bce = torch.nn.BCELoss()
    ones, zeros = torch.ones(6, **f64), torch.zeros(6, **f64)
    s = {k: torch.sigmoid(v) for k, v in logits.items()}
    expected = ((bce(s["ru"], ones) + bce(s["rc"], ones)) / 2
                + (bce(s["fu"], zeros) + bce(s["fc"], zeros) + bce(torch.sigmoid(wrong), zeros[1:])) / 3)
    got = R.discriminator_loss_from_logits(logits["rc"], logits["fc"], wrong, logits["ru"], logits["fu"])
    assert_close(got, expected)
    cond_only = bce(s["rc"], ones) + (bce(s["fc"], zeros) + bce(torch.sigmoid(wrong), zeros[1:])) / 2
    assert_close(R.discriminator_loss_from_logits(logits["rc"], logits["fc"], wrong), cond_only)
    assert_close(R.generator_adv_loss_from_logits(logits["fc"], logits["fu"]),
                 bce(s["fc"], ones) + bce(s["fu"], ones))
    gradcheck(lambda a, b, c: R.discriminator_loss_from_logits(a, b, c), (logits["rc"], logits["fc"], wrong))
    gradcheck(lambda a, b: R.generator_adv_loss_from_logits(a, b), (logits["fc"], logits["fu"]))
