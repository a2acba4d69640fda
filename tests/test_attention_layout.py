"""The supervised grounding term (gan.attention_layout): the word layout of a shapes caption, the loss
against a per-word loop, at zero when G's map is the layout, unnamed words ignored, gradcheck, bad
inputs, and its place in training (in the loss, the layout of the batch's own scenes, the errors)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import damsm_checkpoint, tiny_config  # noqa: F401 - fixtures

from attnfast.data import ShapesDataset, caption_word_objects
from attnfast.data.shapes_layout import CaptionLayout, region_coverage, word_layout
from attnfast.reference import layout_attention_loss
from attnfast.trainer.gan import GANTrainer
from attnfast.trainer.generator_extras import GeneratorExtras

CPU = torch.device("cpu")


def _g_attention(size, words, side, dtype=torch.float64):
    return torch.softmax(torch.randn(size, words, side, side, dtype=dtype), dim=1)


def _layout(size, words, side, named, dtype=torch.float64):
    """Random non-negative rows, zero where named[b, t] is False."""
    layout = torch.rand(size, words, side, side, dtype=dtype)
    return layout * named[:, :, None, None]


def _loop(g_attn, layout):
    total, count = 0.0, 0
    for b in range(layout.shape[0]):
        for t in range(layout.shape[1]):
            q = layout[b, t].flatten()
            if float(q.sum()) == 0:
                continue
            g = g_attn[b, t].flatten() / g_attn[b, t].sum()
            total = total + F.kl_div(g.log(), q / q.sum(), reduction="sum")
            count += 1
    return total / count


@pytest.mark.parametrize("side", [1, 5, 8])
def test_matches_a_loop_over_the_named_words(side):
    torch.manual_seed(side)
    named = torch.tensor([[True, False, True, False], [False, False, False, True], [True, True, True, True]])
    g_attn, layout = _g_attention(3, 6, side), _layout(3, 4, side, named)
    torch.testing.assert_close(layout_attention_loss(g_attn, layout), _loop(g_attn, layout))


def test_zero_at_the_layout_and_gradcheck():
    torch.manual_seed(3)
    named = torch.tensor([[True, True, False], [False, True, True]])
    layout = _layout(2, 3, 4, named)
    g_attn = layout + (~named)[:, :, None, None] * 0.5           # G's map of every named word is its layout
    assert float(layout_attention_loss(g_attn, layout)) == pytest.approx(0.0, abs=1e-12)
    g_attn = _g_attention(2, 3, 4).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda g: layout_attention_loss(g, layout), (g_attn,))
    layout_attention_loss(g_attn, layout).backward()
    assert torch.all(g_attn.grad[0, 2] == 0) and torch.all(g_attn.grad[1, 0] == 0)   # unnamed words untouched


def test_no_named_word_gives_a_connected_zero():
    g_attn = _g_attention(2, 3, 4).requires_grad_(True)
    loss = layout_attention_loss(g_attn, torch.zeros(2, 3, 4, 4, dtype=torch.float64))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(g_attn.grad == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_attention_accumulates_in_float32(dtype):
    torch.manual_seed(4)
    named = torch.tensor([[True, False, True], [True, True, False]])
    g_attn, layout = _g_attention(2, 3, 8, torch.float32), _layout(2, 3, 8, named, torch.float32)
    half = layout_attention_loss(g_attn.to(dtype), layout)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, layout_attention_loss(g_attn, layout), rtol=0.05, atol=0.02)


def test_bad_inputs():
    g_attn = _g_attention(2, 3, 4)
    for layout in (torch.zeros(1, 3, 4, 4), torch.zeros(2, 4, 4, 4), torch.zeros(2, 3, 5, 4), torch.zeros(2, 3, 16)):
        with pytest.raises(ValueError, match="must match"):
            layout_attention_loss(g_attn, layout)


# ------------------------------------------------------------------ the word layout of a caption
def test_word_layout_is_the_coverage_of_each_words_object():
    dataset = ShapesDataset(50, resolution=64, grid=3)
    checked = 0
    for index in range(50):
        scene = dataset.get_scene(index)
        tokens = dataset.vocab.decode(dataset.vocab.encode(scene.captions[1])).split()
        layout = word_layout(tokens, scene, 8, 8)
        assert layout.shape == (len(tokens), 8, 8) and layout.dtype == np.float32
        named = {t: objects for t, _, objects in caption_word_objects(tokens, scene)}
        for t in range(len(tokens)):
            if t in named:
                np.testing.assert_array_equal(layout[t], region_coverage(scene, named[t], 8, 8))
                assert layout[t].max() > 0
                checked += 1
            else:
                assert not layout[t].any()
    assert checked > 100


def test_caption_layout_pads_and_caches_per_grid():
    dataset = ShapesDataset(4, resolution=64, grid=1, max_objects=1)
    scenes = [dataset.get_scene(i) for i in range(4)]
    tokens = [s.captions[0].lower().replace(".", "").split() for s in scenes]
    batch = CaptionLayout(tokens, scenes)
    grid = batch.targets(20, 16, 16)
    assert grid.shape == (4, 20, 16, 16) and grid.dtype == torch.float32
    for i, words in enumerate(tokens):
        torch.testing.assert_close(grid[i, :len(words)], torch.from_numpy(word_layout(words, scenes[i], 16, 16)))
        assert not grid[i, len(words):].any()
    assert batch.targets(20, 16, 16) is grid
    assert batch.targets(3, 4, 4).shape == (4, 3, 4, 4)
    with pytest.raises(ValueError, match="3 captions but 4 scenes"):
        CaptionLayout(tokens[:3], scenes)


# ------------------------------------------------------------------ in training
def test_layout_term_enters_the_generator_loss_on_the_batchs_scenes(tmp_path, damsm_checkpoint):
    trainer = GANTrainer(tiny_config("gan.attention_layout=2.0"), tmp_path, CPU, damsm_checkpoint)
    batch = next(trainer.batches())
    inputs = trainer.step_inputs(batch)
    layout = inputs["layout"]
    for i, index in enumerate(batch["indices"].tolist()):
        scene = trainer.dataset.get_scene(index)
        assert scene.captions[batch["caption_indices"][i]] == batch["caption_texts"][i]
        assert layout.tokens[i] == trainer.vocab.decode(batch["captions"][i]).split()
    losses = trainer.train_step(batch)
    assert "layout" in losses and torch.isfinite(losses["layout"]) and float(losses["layout"]) > 0
    parts = sum(float(v) for k, v in losses.items() if k.startswith("g_adv")) + float(losses["layout"])
    parts += float(losses["w_loss"] + losses["s_loss"] + losses["kl"])
    assert float(losses["errG"]) == pytest.approx(parts, rel=1e-5)


def test_layout_term_needs_the_shapes_data_and_an_attentional_stage(tmp_path, damsm_checkpoint):
    with pytest.raises(ValueError, match="gan.attention_layout must be >= 0"):
        GANTrainer(tiny_config("gan.attention_layout=-1"), tmp_path / "a", CPU, damsm_checkpoint)
    with pytest.raises(ValueError, match="branch_num >= 2"):
        GANTrainer(tiny_config("gan.attention_layout=1", "model.branch_num=1"), tmp_path / "b", CPU,
                   damsm_checkpoint)
    config = tiny_config("gan.attention_layout=1")
    config["dataset"]["name"] = "birds"
    with pytest.raises(ValueError, match="dataset.name: shapes"):
        GeneratorExtras(config, CPU, None)
