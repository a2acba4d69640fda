"""Shapes metrics: the attribute classifier reads real images (>= 98 %), caches itself; the
pointing game scores synthetic attention maps whose answer is known."""
import pytest
import torch

from attnfast.data import ShapesDataset, tokenize
from attnfast.metrics import grounding, shapes_accuracy


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    model = shapes_accuracy.cached_classifier(cache)
    assert len(list(cache.glob("shapes_classifier_*.pt"))) == 1
    again = shapes_accuracy.cached_classifier(cache)  # from the cache, same weights
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    return model


@pytest.mark.parametrize("resolution", [64, 128])
@pytest.mark.parametrize("grid", [3, 2, 1])
def test_classifier_reads_real_images(classifier, resolution, grid):
    data = ShapesDataset(300 if grid == 3 else 120, resolution=resolution, seed=4242, split="test",
                         grid=grid, max_objects=min(3, grid * grid))
    images = torch.stack([data[i]["images"][0] for i in range(len(data))])
    scores = shapes_accuracy.attribute_accuracy(classifier, images, [data.get_scene(i) for i in range(len(data))])
    assert scores["object"] >= 0.98, scores
    if grid == 1:
        assert scores["empty"] is None  # the one cell always holds the object
    else:
        assert scores["empty"] >= 0.98, scores


def test_classifier_needs_one_grid_per_call(classifier):
    scenes = [ShapesDataset(1, grid=g, seed=1).get_scene(0) for g in (3, 2)]
    with pytest.raises(ValueError, match="share a grid"):
        shapes_accuracy.attribute_accuracy(classifier, torch.zeros(2, 3, 64, 64), scenes)
    with pytest.raises(ValueError, match="grid must be one of"):
        shapes_accuracy.cell_crops(torch.zeros(1, 3, 64, 64), grid=4)


def test_classifier_sees_wrong_images(classifier):
    data = ShapesDataset(100, resolution=64, seed=5, split="test")
    images = torch.stack([data[i]["images"][0] for i in range(len(data))])
    shuffled = [data.get_scene((i + 1) % len(data)) for i in range(len(data))]
    assert shapes_accuracy.attribute_accuracy(classifier, images, shuffled)["scene"] < 0.2


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(shapes_accuracy, "train_classifier", lambda: shapes_accuracy.CellClassifier())
    model = shapes_accuracy.cached_classifier(tmp_path)
    path = next(tmp_path.glob("shapes_classifier_*.pt"))
    path.write_bytes(b"garbage")
    shapes_accuracy.cached_classifier(tmp_path)
    assert torch.load(path, weights_only=True).keys() == model.state_dict().keys()


def test_pointing_game_on_known_maps():
    data = ShapesDataset(20, resolution=64, seed=1, split="test")
    scenes = [data.get_scene(i) for i in range(20)]
    words = [tokenize(s.captions[0]) for s in scenes]
    num_words = max(len(w) for w in words)
    good = torch.zeros(20, num_words, 64, 64)
    bad = torch.zeros(20, num_words, 64, 64)
    for i, (scene, tokens) in enumerate(zip(scenes, words, strict=True)):
        occupied = {o.cell for o in scene.objects}
        empty = next((r, c) for r in range(3) for c in range(3) if (r, c) not in occupied)
        for t, word in enumerate(tokens):
            target = next((o for o in scene.objects if word in (o.shape, o.colour)), None)
            if target is not None:
                ys, xs = target.mask.nonzero()
                good[i, t, ys[len(ys) // 2], xs[len(xs) // 2]] = 1.0
            bad[i, t, empty[0] * 21 + 10, empty[1] * 21 + 10] = 1.0
    hit = grounding.pointing_game(good, words, scenes)
    miss = grounding.pointing_game(bad, words, scenes)
    assert hit["pointing_accuracy"] == 1.0 and hit["trials"] > 20
    assert miss["pointing_accuracy"] == 0.0
    assert 0 < hit["chance"] < 0.3
