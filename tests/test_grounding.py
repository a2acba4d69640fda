"""Grounding per word class: which object each caption word names, the pointing game per class on
maps whose answer is known, the DAMSM's word->region attention as words_loss computes it, and the
grounding figure."""
import numpy as np
import pytest
import torch

from attnfast.data import WORD_CLASSES, ShapesDataset, caption_word_objects, tokenize
from attnfast.data.shapes import scene_for_caption
from attnfast.metrics import grounding
from attnfast.reference.damsm import words_loss_original


def _scene(text, grid=3):
    return scene_for_caption(text, np.random.default_rng(0), grid=grid)


def test_word_objects_of_a_two_object_caption():
    text = "a small blue square in the top left and a large yellow triangle at the bottom right"
    scene = _scene(text)
    tokens = tokenize(text)
    got = {tokens[t]: (cls, objs) for t, cls, objs in caption_word_objects(tokens, scene)}
    square = next(k for k, o in enumerate(scene.objects) if o.shape == "square")
    triangle = 1 - square
    assert got == {"small": ("size", (square,)), "blue": ("colour", (square,)),
                   "square": ("shape", (square,)), "top": ("position", (square,)),
                   "left": ("position", (square,)), "large": ("size", (triangle,)),
                   "yellow": ("colour", (triangle,)), "triangle": ("shape", (triangle,)),
                   "bottom": ("position", (triangle,)), "right": ("position", (triangle,))}


def test_word_objects_leave_out_the_background_and_function_words():
    text = "a large green star in the center on a beige background"
    tokens = tokenize(text)
    aligned = caption_word_objects(tokens, _scene(text, grid=1))
    assert sorted(tokens[t] for t, _, _ in aligned) == ["center", "green", "large", "star"]


@pytest.mark.parametrize("grid", [1, 2, 3])
def test_every_object_gets_each_word_class(grid):
    data = ShapesDataset(60, seed=3, split="test", grid=grid, max_objects=min(3, grid * grid))
    for i in range(len(data)):
        scene = data.get_scene(i)
        for text in scene.captions:
            aligned = caption_word_objects(tokenize(text), scene)
            for k, obj in enumerate(scene.objects):
                classes = [c for _, c, objs in aligned if k in objs]
                for word_class in ("colour", "shape", "size"):
                    assert classes.count(word_class) == 1, (text, word_class)
                assert classes.count("position") == len(obj.position.split()), text


def test_truncated_caption_is_aligned_without_error():
    text = "a small blue square in the top left and a large yellow triangle at the bottom right"
    tokens = tokenize(text)[:11]                                  # cut inside the second object
    aligned = caption_word_objects(tokens, _scene(text))
    assert [tokens[t] for t, _, _ in aligned] == ["small", "blue", "square", "top", "left", "large"]


def _maps(scenes, words, side, on_object: bool):
    maps = []
    for scene, tokens in zip(scenes, words, strict=True):
        attn = torch.rand(len(tokens), side, side) * 0.1
        for t, _, objs in caption_word_objects(tokens, scene):
            mask = grounding.region_mask(scene, objs, side, side)
            if not mask.any():
                continue                                          # skipped by the metric too
            ys, xs = np.nonzero(mask if on_object else ~mask)
            attn[t, ys[len(ys) // 2], xs[len(xs) // 2]] = 1.0
        maps.append(attn)
    return maps


@pytest.mark.parametrize("side", [8, 16, 64])
def test_pointing_by_class_on_known_maps(side):
    data = ShapesDataset(30, seed=1, split="test", grid=2, max_objects=2)
    scenes = [data.get_scene(i) for i in range(30)]
    words = [tokenize(s.captions[0]) for s in scenes]
    hit = grounding.pointing_by_class(_maps(scenes, words, side, True), words, scenes)
    miss = grounding.pointing_by_class(_maps(scenes, words, side, False), words, scenes)
    for word_class in WORD_CLASSES + ("all",):
        assert hit[word_class]["pointing_accuracy"] == 1.0 and hit[word_class]["trials"] >= 30
        assert miss[word_class]["pointing_accuracy"] == 0.0
        assert hit[word_class]["peak_on_edge"] == hit[word_class]["peak_off_object"] == 0.0
        assert miss[word_class]["peak_on_edge"] + miss[word_class]["peak_off_object"] == 1.0
        assert 0.0 < hit[word_class]["chance"] < 0.5
    assert hit["all"]["trials"] == sum(hit[c]["trials"] for c in WORD_CLASSES)
    stacked = torch.zeros(30, max(len(w) for w in words), side, side)
    for i, m in enumerate(_maps(scenes, words, side, True)):
        stacked[i, :m.shape[0]] = m
    assert grounding.pointing_by_class(stacked, words, scenes)["all"] == hit["all"]


def test_region_mask_coverage():
    scene = _scene("a large red square in the center", grid=1)
    fine = grounding.region_mask(scene, (0,), 64, 64)
    assert np.array_equal(fine, scene.objects[0].mask)
    coarse = grounding.region_mask(scene, (0,), 4, 4)
    full = grounding.region_mask(scene, (0,), 4, 4, coverage=1.0)
    assert coarse.sum() >= full.sum()
    with pytest.raises(ValueError, match="coverage"):
        grounding.region_mask(scene, (0,), 4, 4, coverage=0.0)


def test_small_object_on_a_coarse_map_is_skipped():
    text = "a small red circle in the top left"
    scene = _scene(text)
    tokens = tokenize(text)
    result = grounding.pointing_by_class([torch.rand(len(tokens), 2, 2)], [tokens], [scene])
    assert result["skipped"] > 0 and result["all"]["trials"] == 0
    assert np.isnan(result["all"]["pointing_accuracy"])


def test_damsm_word_attention_is_words_loss_attention():
    torch.manual_seed(0)
    regions, words = torch.randn(4, 16, 5, 5), torch.randn(4, 16, 7)
    lens = torch.tensor([7, 3, 1, 5])
    maps = grounding.damsm_word_attention(regions, words, lens, gamma1=4.0)
    _, _, expected = words_loss_original(regions, words, None, lens, None, 4, gamma1=4.0)
    for got, want, n in zip(maps, expected, lens.tolist(), strict=True):
        assert got.shape == (n, 5, 5)
        torch.testing.assert_close(got, want[0])
        torch.testing.assert_close(got.sum(dim=(1, 2)), torch.ones(n))
    plain = grounding.damsm_word_attention(regions, words, lens, gamma1=4.0, word_softmax=False)
    for got, n, b in zip(plain, lens.tolist(), range(4), strict=True):
        torch.testing.assert_close(got, torch.softmax(4.0 * words[b, :, :n].t() @ regions[b].flatten(1), -1)
                                   .view(n, 5, 5))
    with pytest.raises(ValueError, match="same batch size"):
        grounding.damsm_word_attention(regions, words[:3], lens, gamma1=4.0)


# ------------------------------------------------------------------ in the evaluation and the figure
@pytest.fixture(scope="module")
def gan_file(tmp_path_factory):
    """An untrained tiny 2-stage GAN checkpoint (one attentional stage)."""
    from test_train import tiny_config

    from attnfast.engine import checkpoint as ckpt
    from attnfast.models.build import build_generator, build_image_encoder, build_text_encoder
    from attnfast.trainer.common import build_vocabulary
    config = tiny_config("model.base_size=32", "damsm.image_size=32", "model.small_encoder_width=8",
                         "dataset.grid=1", "dataset.max_objects=1")
    vocab = build_vocabulary(config)
    path = tmp_path_factory.mktemp("gan") / "gan.pt"
    ckpt.save_atomic({"format": "attnfast", "kind": "gan", "step": 0, "config": config, "vocab": vocab.to_dict(),
                      "text_encoder": build_text_encoder(config, len(vocab)).state_dict(),
                      "image_encoder": build_image_encoder(config).state_dict(),
                      "netG_ema": build_generator(config).state_dict()}, path)
    return path


def test_evaluation_reports_grounding_per_class(gan_file, tmp_path, monkeypatch):
    from attnfast.metrics import shapes_accuracy
    from attnfast.metrics.shapes_eval import evaluate_checkpoint
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(shapes_accuracy, "train_classifier", lambda: shapes_accuracy.CellClassifier().eval())
    report = evaluate_checkpoint(gan_file, None, torch.device("cpu"), num_images=100, batch=50, r_runs=1,
                                 diversity_captions=0)["grounding"]
    assert set(report) == {"damsm_real", "damsm_real_without_eq8", "damsm_generated", "generator"}
    assert list(report["generator"]) == ["stage_32"]            # the one attentional stage, its map side
    for part in (report["damsm_real"], report["damsm_real_without_eq8"], report["damsm_generated"],
                 report["generator"]["stage_32"]):
        for word_class in WORD_CLASSES:
            assert part[word_class]["trials"] > 0
            assert 0.0 <= part[word_class]["pointing_accuracy"] <= 1.0
    print(grounding.format_table(report))
    table = grounding.format_table(report).splitlines()
    assert table[0].split()[-4:] == list(WORD_CLASSES) and len(table) == 5
    assert table[4].startswith("G attention 32px")


def test_grounding_figure(gan_file, tmp_path):
    from PIL import Image

    from attnfast.metrics.grounding_figure import save_grounding_figures
    paths = save_grounding_figures(gan_file, ["a large red circle in the center"], tmp_path)
    image = Image.open(paths[0])
    assert image.width > 7 * 64 and image.height > 2 * 64                # 2 rows, image + 7 words
    with pytest.raises(ValueError, match="grid"):
        save_grounding_figures(gan_file, ["a large red circle in the top left"], tmp_path)


def test_small_encoder_regions_key():
    from test_train import tiny_config

    from attnfast.models.build import build_image_encoder
    for side in (8, 4):
        encoder = build_image_encoder(tiny_config(f"model.small_encoder_regions={side}"))
        regions, code = encoder(torch.zeros(2, 3, 64, 64))
        assert regions.shape[-2:] == (side, side) and code.shape[0] == 2
    with pytest.raises(ValueError, match="power of two"):
        build_image_encoder(tiny_config("model.small_encoder_regions=5"))
