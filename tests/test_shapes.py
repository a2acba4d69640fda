"""The shapes dataset, its vocabulary and grids (CPU, a few seconds)."""
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from attnfast.data import (
    COLOURS,
    MAX_CAPTION_WORDS,
    NUM_CLASSES,
    Scene,
    ShapeObject,
    ShapesDataset,
    Vocabulary,
    collate_shapes,
    make_captions,
    object_mask_for_word,
    pad_captions,
    parse_background,
    parse_caption,
    render_scene,
    sample_scene,
    save_image_grid,
    shapes_vocabulary,
    tokenize,
)
from attnfast.data.shapes import _PREPS, _STYLES, BACKGROUNDS


def _key(objs):
    return sorted(objs, key=lambda o: o["position"])


# ---------------------------------------------------------------- vocabulary

def test_tokenize_matches_attngan():
    assert tokenize("A Small, RED circle -- top-left!") == ["a", "small", "red", "circle", "top", "left"]


def test_vocab_roundtrip_and_build():
    v = Vocabulary.build(["a red circle", "A blue circle.", "rare"], min_count=1)
    assert v.ixtoword[0] == "<end>" and v.wordtoix["<end>"] == 0
    assert v.ixtoword[1:] == ["a", "red", "circle", "blue", "rare"]
    assert len(Vocabulary.build(["a red circle", "a blue circle"], min_count=2)) == 3
    d = v.to_dict()
    json.dumps(d)  # plain types only
    assert Vocabulary.from_dict(d) == v
    ids = v.encode("a red circle")
    assert ids == [1, 2, 3] and v.decode(ids + [0, 0]) == "a red circle"
    assert v.encode("a red circle", max_len=2) == [1, 2]
    assert v.decode(torch.tensor(ids)) == "a red circle"


def test_vocab_survives_weights_only_load(tmp_path):
    v = shapes_vocabulary()
    torch.save({"vocab": v.to_dict(), "w": torch.zeros(2)}, tmp_path / "ck.pt")
    loaded = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert Vocabulary.from_dict(loaded["vocab"]) == v


def test_encode_unknown_word_is_named():
    v = Vocabulary(["red", "circle"])
    with pytest.raises(ValueError, match="'hexagon'.*'red hexagon'"):
        v.encode("red hexagon")
    assert v.encode("red hexagon circle", unknown="skip") == [1, 2]
    with pytest.raises(ValueError):
        Vocabulary(["red", "red"])


def test_pad_captions():
    caps, lens = pad_captions([[3, 4], [5, 6, 7, 8], [9]], max_len=3)
    assert caps.dtype == torch.long and lens.dtype == torch.long
    assert caps.tolist() == [[3, 4, 0], [5, 6, 7], [9, 0, 0]]
    assert lens.tolist() == [2, 3, 1]
    caps, lens, order = pad_captions([[3, 4], [5, 6, 7, 8], [9]], max_len=3, sort=True)
    assert order.tolist() == [1, 0, 2] and lens.tolist() == [3, 2, 1]
    rng = np.random.default_rng(0)
    long_cap = list(range(1, 31))
    caps, lens = pad_captions([long_cap], max_len=10, random_drop=rng)
    kept = caps[0].tolist()
    assert lens.item() == 10 and kept == sorted(kept) and set(kept) <= set(long_cap)
    with pytest.raises(ValueError, match="empty"):
        pad_captions([[1], []], max_len=4)
    with pytest.raises(ValueError, match="padding"):
        pad_captions([[1, 0, 2]], max_len=4)


# ---------------------------------------------------------------- captions and ground truth

def test_captions_agree_with_ground_truth_and_fit():
    vocab = shapes_vocabulary()
    rng = np.random.default_rng(1234)
    n_objects_seen = set()
    for _ in range(200):
        scene = sample_scene(rng)
        truth = _key([o.as_dict() for o in scene.objects])
        n_objects_seen.add(len(scene.objects))
        cells = [o.cell for o in scene.objects]
        assert len(set(cells)) == len(cells)
        for cap in make_captions(scene, rng, 5):
            assert len(tokenize(cap)) <= MAX_CAPTION_WORDS, cap
            assert 0 not in vocab.encode(cap)  # raises on any unknown word
            assert _key(parse_caption(cap)) == truth, cap
            bg = parse_background(cap)
            assert bg is None or bg == scene.background
    assert n_objects_seen == {1, 2, 3}


def test_every_style_parses():
    """Force each style (and both preposition choices) through the parser."""
    scene = Scene("gray", [ShapeObject("star", "orange", "large", (0, 0)),
                           ShapeObject("cross", "white", "small", (1, 2))])
    rng = np.random.default_rng(0)
    seen_styles = set()
    for _ in range(300):
        cap = make_captions(scene, rng, 1)[0]
        toks = tokenize(cap)
        seen_styles.add("front" if toks[0] in ("in", "at", "on") or toks[2] in ("in", "at", "on")
                        else "full" if "the" in toks else "compact")
        assert _key(parse_caption(cap)) == _key([o.as_dict() for o in scene.objects]), cap
    assert seen_styles == set(_STYLES)
    assert parse_caption("in the top left an orange large star") == [
        {"shape": "star", "colour": "orange", "size": "large", "position": "top left"}]
    for bad in ("a red circle", "a small red circle", "nothing here", "small red red circle top"):
        with pytest.raises(ValueError):
            parse_caption(bad)


def test_vocabulary_is_closed_and_built_from_word_lists():
    v = shapes_vocabulary()
    for w in list(COLOURS) + list(BACKGROUNDS) + ["circle", "cross", "small", "large", "center"]:
        assert w in v
    for ps in _PREPS.values():
        assert all(p in v for p in ps)
    assert len(v) < 60


# ---------------------------------------------------------------- dataset

def test_determinism_and_splits():
    a = ShapesDataset(8, seed=5)
    b = ShapesDataset(8, seed=5)
    for i in (7, 0, 3):  # order does not matter
        x, y = a[i], b[i]
        assert torch.equal(x["images"][0], y["images"][0])
        assert torch.equal(x["caption"], y["caption"]) and x["caption_text"] == y["caption_text"]
        assert a.all_captions(i) == b.all_captions(i)
    other_seed = ShapesDataset(8, seed=6)
    test_split = ShapesDataset(8, seed=5, split="test")
    differs = lambda d: any(not torch.equal(a[i]["images"][0], d[i]["images"][0]) for i in range(8))
    assert differs(other_seed) and differs(test_split)


def test_scene_without_captions_has_the_same_objects():
    data = ShapesDataset(12, seed=3, grid=3, max_objects=3)
    for i in range(12):
        full, bare = data.get_scene(i), data.get_scene(i, captions=False)
        assert full.captions and bare.captions == []
        assert (bare.background, bare.resolution, bare.grid) == (full.background, full.resolution, full.grid)
        assert [(o.shape, o.colour, o.size, o.cell) for o in bare.objects] == \
            [(o.shape, o.colour, o.size, o.cell) for o in full.objects]
        assert all(np.array_equal(a.mask, b.mask) for a, b in zip(bare.objects, full.objects, strict=True))


def test_caption_choice_by_epoch_and_split():
    tr = ShapesDataset(30, seed=0)
    e0 = [tr[i]["caption_index"] for i in range(30)]
    assert e0 == [tr[i]["caption_index"] for i in range(30)]
    tr.set_epoch(1)
    e1 = [tr[i]["caption_index"] for i in range(30)]
    assert e0 != e1 and len(set(e0)) > 1
    assert tr.all_captions(4) == ShapesDataset(30, seed=0).all_captions(4)  # texts fixed
    te = ShapesDataset(30, seed=0, split="test")
    assert all(te[i]["caption_index"] == 0 for i in range(10))
    fixed = ShapesDataset(30, seed=0, caption_index=3)
    item = fixed[2]
    assert item["caption_index"] == 3 and item["caption_text"] == fixed.all_captions(2)[3]


def test_item_contents():
    ds = ShapesDataset(4, seed=1, words_num=18)
    vocab = shapes_vocabulary()
    for i in range(4):
        it = ds[i]
        cap, n = it["caption"], it["cap_len"]
        assert cap.shape == (18,) and cap.dtype == torch.long
        assert 1 <= n <= 18 and (cap[:n] > 0).all() and (cap[n:] == 0).all()
        assert vocab.decode(cap) == " ".join(tokenize(it["caption_text"]))
        assert 0 <= it["class_id"] < NUM_CLASSES and it["index"] == i
    assert ds[-1]["index"] == 3
    with pytest.raises(IndexError):
        ds[4]
    short = ShapesDataset(4, seed=1, words_num=5)
    assert short[0]["caption"].shape == (5,) and short[0]["cap_len"] <= 5


def test_class_id():
    s1 = Scene("gray", [ShapeObject("star", "red", "large", (0, 0)),
                        ShapeObject("circle", "blue", "small", (1, 1))])
    s2 = Scene("navy", [ShapeObject("circle", "blue", "large", (2, 2)),
                        ShapeObject("star", "red", "small", (0, 1))])
    s3 = Scene("gray", [ShapeObject("star", "red", "large", (0, 0))])
    assert s1.class_id == s2.class_id != s3.class_id
    rng = np.random.default_rng(0)
    ids = {sample_scene(rng).class_id for _ in range(300)}
    assert all(0 <= c < NUM_CLASSES for c in ids) and len(ids) > 200


@pytest.mark.parametrize("res", [64, 128, 256, 50])
def test_resolutions_and_range(res):
    ds = ShapesDataset(2, resolution=res, seed=2)
    img = ds[0]["images"][0]
    assert img.shape == (3, res, res) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    scene = ds.get_scene(0)
    assert all(o.mask.shape == (res, res) for o in scene.objects)


def test_multi_res_downsamples_consistently():
    ds = ShapesDataset(2, multi_res=(64, 128, 256), seed=3)
    assert ds.resolution == 256
    imgs = ds[1]["images"]
    assert [tuple(x.shape) for x in imgs] == [(3, 64, 64), (3, 128, 128), (3, 256, 256)]
    pooled = torch.nn.functional.avg_pool2d(imgs[2][None], 4)[0]
    torch.testing.assert_close(imgs[0], pooled, atol=1e-5, rtol=0)
    odd = ShapesDataset(2, multi_res=(48, 64), seed=3)[0]["images"]
    assert [x.shape[-1] for x in odd] == [48, 64]
    with pytest.raises(ValueError):
        ShapesDataset(2, resolution=128, multi_res=(64, 256))


@pytest.mark.parametrize("res", [64, 256])
def test_masks_colours_and_no_overlap(res):
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(20):
        scene = sample_scene(rng, res)
        bg = np.array(BACKGROUNDS[scene.background], np.uint8)
        hard = render_scene(scene, antialias=False)
        soft = render_scene(scene, antialias=True)
        union = np.zeros((res, res), int)
        for o in scene.objects:
            colour = np.array(COLOURS[o.colour], np.uint8)
            assert np.linalg.norm(colour.astype(float) - bg) >= 80
            m = o.mask
            assert m.sum() > 0
            union += m
            assert (hard[m] == colour).all()
            # interior pixels (the whole 5x5 neighbourhood in the mask) stay pure colour with
            # anti-aliasing; everything else in the cell lies between background and colour
            interior = np.zeros_like(m)
            win = np.lib.stride_tricks.sliding_window_view(m, (5, 5))
            interior[2:-2, 2:-2] = win.all(axis=(2, 3))
            checked += int(interior.sum())
            assert (soft[interior] == colour).all()
            lo, hi = np.minimum(colour, bg), np.maximum(colour, bg)
            assert ((soft[m] >= lo) & (soft[m] <= hi)).all()
            x0, y0, x1, y1 = o.bbox
            assert m[y0:y1, x0:x1].sum() == m.sum()
        assert union.max() <= 1
        assert (hard[union == 0] == bg).all()
    assert checked > 100


def test_object_mask_for_word():
    scene = Scene("gray", [ShapeObject("star", "red", "large", (0, 0)),
                           ShapeObject("circle", "red", "small", (1, 1)),
                           ShapeObject("star", "blue", "small", (2, 2))])
    a, b, c = (o.mask for o in scene.objects)
    assert (object_mask_for_word(scene, "red") == (a | b)).all()
    assert (object_mask_for_word(scene, "Star") == (a | c)).all()
    assert not object_mask_for_word(scene, "the").any()
    assert object_mask_for_word(scene, "circle", resolution=128).shape == (128, 128)


def test_collate_and_dataloader():
    ds = ShapesDataset(6, multi_res=(64, 128), seed=0)
    batch = collate_shapes([ds[i] for i in range(6)])
    assert [tuple(x.shape) for x in batch["images"]] == [(6, 3, 64, 64), (6, 3, 128, 128)]
    assert batch["captions"].shape == (6, 18) and batch["captions"].dtype == torch.long
    for k in ("cap_lens", "class_ids", "indices", "caption_indices"):
        assert batch[k].shape == (6,) and batch[k].dtype == torch.long
    assert batch["indices"].tolist() == list(range(6)) and len(batch["keys"]) == 6
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_shapes)
    first = next(iter(loader))
    assert torch.equal(first["images"][1], batch["images"][1][:3])


def test_throughput_64():
    ds = ShapesDataset(100000, resolution=64, seed=0)
    ds[0]  # build the coverage tables
    n, t0 = 400, time.perf_counter()
    for i in range(n):
        ds[i]
    rate = n / (time.perf_counter() - t0)
    print(f"shapes 64x64: {rate:.0f} images/s (one process)")
    assert rate >= 500


def test_grid_png(tmp_path):
    ds = ShapesDataset(5, resolution=64, seed=0)
    batch = collate_shapes([ds[i] for i in range(5)])
    path = tmp_path / "sub" / "grid.png"
    save_image_grid(batch["images"][0], path, ncol=3, captions=batch["caption_texts"])
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        assert im.size[0] >= 3 * 64 and im.size[1] > 2 * 64
    save_image_grid(batch["images"][0], path, ncol=8)  # overwrite, no captions
    with Image.open(path) as im:
        assert im.size == (5 * 66 + 2, 66 + 2)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temp files left


@pytest.mark.parametrize("grid", [1, 2])
def test_easier_grids(grid):
    """grid 1 / 2: objects in the cells of a 1x1 / 2x2 layout, named by that layout's positions,
    as large relative to the image as the cell is; same vocabulary; captions parse back."""
    from attnfast.data import grid_positions
    data = ShapesDataset(40, resolution=96, seed=3, grid=grid, max_objects=min(3, grid * grid))
    vocab = shapes_vocabulary()
    side = 96 / grid
    for i in range(len(data)):
        scene = data.get_scene(i)
        assert scene.grid == grid and 1 <= len(scene.objects) <= grid * grid
        for o in scene.objects:
            assert o.position in grid_positions(grid)
            x0, y0, x1, y1 = o.bbox
            row, col = o.cell
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            # inside its cell, about centred (triangles and stars sit a little off the box centre)
            assert col * side <= x0 and x1 <= (col + 1) * side and row * side <= y0 and y1 <= (row + 1) * side
            assert abs(cx - (col + 0.5) * side) <= 0.1 * side and abs(cy - (row + 0.5) * side) <= 0.1 * side
            # sizes are fractions of the cell side: a large object spans ~0.84 of it
            if o.size == "large":
                assert max(x1 - x0, y1 - y0) >= 0.6 * side
        for caption in scene.captions:
            assert all(w in vocab for w in tokenize(caption))
            parsed = sorted(map(str, parse_caption(caption)))
            assert parsed == sorted(str(o.as_dict()) for o in scene.objects)
        image = data.get_image(i)
        assert image.shape == (96, 96, 3)


def test_grid_3_draws_the_scenes_it_always_drew():
    """The default grid keeps the data of the version before the grid option: captions of 50 items
    and images of 10 (digest recorded from that version)."""
    import hashlib
    data = ShapesDataset(50, resolution=64, seed=0)
    captions = "|".join(c for i in range(50) for c in data.all_captions(i))
    images = np.stack([data.get_image(i) for i in range(10)]).tobytes()
    digest = hashlib.sha1(captions.encode() + images).hexdigest()
    assert digest == "26aa689f0979ace4eba6b465917950c6da44ed48"


def test_grid_errors():
    with pytest.raises(ValueError, match="grid must be one of"):
        ShapesDataset(2, grid=4)
    with pytest.raises(ValueError, match=r"max_objects must be in \[1, 1\] for grid 1"):
        ShapesDataset(2, grid=1, max_objects=2)
    with pytest.raises(ValueError, match=r"max_objects must be in \[1, 3\] for grid 2"):
        sample_scene(np.random.default_rng(0), grid=2, max_objects=4)


@pytest.mark.parametrize("words_num", [18, 5])
def test_text_item_from_its_cache_equals_the_rendered_item(words_num):
    """text_item draws each index's captions once (issue 27): every later epoch's item is the same as
    the rendered one's, truncation to words_num included."""
    dataset = ShapesDataset(12, resolution=32, words_num=words_num)
    for epoch in (0, 1, 2):
        dataset.set_epoch(epoch)
        for i in range(12):
            text, full = dataset.text_item(i), dataset[i]
            assert text["images"] == []
            for key in ("caption_text", "caption_index", "cap_len", "class_id", "index", "key"):
                assert text[key] == full[key], key
            assert torch.equal(text["caption"], full["caption"])


def test_scene_of_is_the_items_scene_drawn_once():
    """scene_of (the layout term's ground truth, issue 27): the same objects, background and captions as
    get_scene, drawn once per index (rendering the item or asking for its text fills it), shared."""
    dataset = ShapesDataset(6, resolution=32, max_objects=3)
    rendered = dataset[2]                                    # rendering draws the scene: kept
    assert rendered["index"] == 2 and 2 in dataset._texts
    for i in (0, 2, 5, -1):
        scene, fresh = dataset.scene_of(i), dataset.get_scene(i)
        assert scene is dataset.scene_of(i)                  # drawn once, then looked up
        assert scene.background == fresh.background and scene.captions == fresh.captions
        assert [(o.shape, o.colour, o.size, o.cell) for o in scene.objects] == \
            [(o.shape, o.colour, o.size, o.cell) for o in fresh.objects]
        np.testing.assert_array_equal(scene.objects[0].mask, fresh.objects[0].mask)
    with pytest.raises(IndexError, match="out of range"):
        dataset.scene_of(6)
