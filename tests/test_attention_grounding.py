"""The attention-grounding term (gan.attention_grounding): KL(DAMSM attention || G's attention per
word) against a per-word loop, at zero when the two agree, padding ignored, gradcheck, bad inputs."""
import pytest
import torch
import torch.nn.functional as F

from attnfast.reference import attention_grounding_loss, matched_attention, region_attention
from attnfast.reference.damsm import func_attention


def _g_attention(size, words, side, lens, dtype=torch.float64):
    """Like GlobalAttentionGeneral's: a softmax over the real words at each region, 0 on padding."""
    logits = torch.randn(size, words, side, side, dtype=dtype)
    pad = torch.arange(words)[None, :, None, None] >= lens[:, None, None, None]
    return torch.softmax(logits.masked_fill(pad, -float("inf")), dim=1)


def _teacher(size, words, side, dtype=torch.float64):
    return torch.softmax(torch.randn(size, words, side * side, dtype=dtype), -1).view(size, words, side, side)


def _loop(g_attn, teacher, lens):
    total, count = 0.0, 0
    for b, n in enumerate(lens.tolist()):
        for t in range(n):
            q = F.interpolate(teacher[b:b + 1, t:t + 1], size=g_attn.shape[-2:], mode="bilinear",
                              align_corners=False).flatten()
            q = q / q.sum()
            g = g_attn[b, t].flatten() / g_attn[b, t].sum()
            total = total + F.kl_div(g.log(), q, reduction="sum")
            count += 1
    return total / count


@pytest.mark.parametrize("side, teacher_side", [(8, 8), (16, 4), (5, 3), (1, 1)])
def test_matches_a_loop_over_words(side, teacher_side):
    lens = torch.tensor([3, 1, 5])
    g_attn, teacher = _g_attention(3, 6, side, lens), _teacher(3, 5, teacher_side)
    torch.testing.assert_close(attention_grounding_loss(g_attn, teacher, lens), _loop(g_attn, teacher, lens))


def test_zero_when_g_follows_the_teacher_and_padding_is_ignored():
    lens = torch.tensor([2, 4])
    teacher = _teacher(2, 4, 6)
    g_attn = teacher * 0.3                                        # any per-word scale: normalised away
    g_attn[0, 2:] = torch.rand(2, 6, 6, dtype=torch.float64)     # padding rows of caption 0
    assert float(attention_grounding_loss(g_attn, teacher, lens)) == pytest.approx(0.0, abs=1e-12)
    other = _g_attention(2, 4, 6, lens)
    assert float(attention_grounding_loss(other, teacher, lens)) > 0.0


def test_gradcheck_and_no_gradient_into_the_teacher():
    lens = torch.tensor([2, 3])
    g_attn = _g_attention(2, 3, 4, lens).requires_grad_(True)
    teacher = _teacher(2, 3, 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda g: attention_grounding_loss(g, teacher, lens), (g_attn,))
    attention_grounding_loss(g_attn, teacher, lens).backward()
    assert teacher.grad is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_float32(dtype):
    lens = torch.tensor([4, 2])
    g_attn, teacher = _g_attention(2, 4, 8, lens, torch.float32), _teacher(2, 4, 8, torch.float32)
    exact = attention_grounding_loss(g_attn, teacher, lens)
    half = attention_grounding_loss(g_attn.to(dtype), teacher.to(dtype), lens)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, exact, rtol=0.05, atol=0.02)


def test_teacher_from_the_damsm_is_words_loss_attention():
    torch.manual_seed(1)
    regions, words, lens = torch.randn(3, 8, 4, 4), torch.randn(3, 8, 5), torch.tensor([5, 2, 3])
    teacher = matched_attention(regions.flatten(2), words, lens, 4.0).view(3, 5, 4, 4)
    for b, n in enumerate(lens.tolist()):
        _, attn = func_attention(words[b:b + 1, :, :n], regions[b:b + 1], 4.0)
        torch.testing.assert_close(teacher[b, :n], attn[0])


def test_region_attention_is_eq9_without_eq8():
    torch.manual_seed(2)
    regions, words, lens = torch.randn(3, 8, 6), torch.randn(3, 8, 5), torch.tensor([5, 1, 3])
    attn = region_attention(regions, words, lens, gamma1=4.0)
    assert attn.shape == (3, 5, 6)
    for b, n in enumerate(lens.tolist()):
        expected = torch.softmax(4.0 * words[b, :, :n].t() @ regions[b], dim=-1)
        torch.testing.assert_close(attn[b, :n], expected)
        assert torch.all(attn[b, n:] == 0)
    # Eq. 8 is what differs: over one word it is 1 everywhere, so words_loss's map is flat, this one not
    one = torch.ones(3, dtype=torch.long)
    torch.testing.assert_close(matched_attention(regions, words[:, :, :1], one, 4.0), torch.full((3, 1, 6), 1 / 6))
    assert float(region_attention(regions, words[:, :, :1], one, 4.0).std()) > 0.01


def test_bad_inputs():
    lens = torch.tensor([2, 2])
    g_attn, teacher = _g_attention(2, 3, 4, lens), _teacher(2, 3, 4)
    with pytest.raises(ValueError, match="share B"):
        attention_grounding_loss(g_attn, teacher[:1], lens)
    with pytest.raises(ValueError, match="teacher has 3 words"):
        attention_grounding_loss(g_attn[:, :2], teacher, lens)
    with pytest.raises(ValueError, match="cap_lens"):
        attention_grounding_loss(g_attn, teacher, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="cap_lens"):
        attention_grounding_loss(g_attn, teacher, torch.tensor([2, 4]))
