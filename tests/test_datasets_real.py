"""Real-data formats (issue 12 A): the restricted unpickler, AttnGAN's CUB/COCO layout, caption
folders, and short DAMSM/GAN runs on them. Every tree and pickle is made here, tiny."""
import io
import json
import logging
import os
import pickle
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnfast.config import load_config
from attnfast.data import ShapesDataset, Vocabulary, collate_shapes
from attnfast.data.attngan_images import bbox_crop_box, load_rgb, read_bounding_boxes, stage_images
from attnfast.data.attngan_layout import AttnGANDataset, attngan_vocabulary
from attnfast.data.attngan_skips import BadDataError
from attnfast.data.attngan_text import caption_tensor, caption_tokens, read_caption_file
from attnfast.data.caption_folder import CaptionFolderDataset, folder_vocabulary
from attnfast.data.safe_pickle import UnsafePickleError, load_pickle
from attnfast.trainer import common
from attnfast.trainer.damsm import train_damsm
from attnfast.trainer.gan import train_gan

# ------------------------------------------------------------------------------------------------
# A Python 2 pickler (protocol 2 opcodes as Python 2 writes them): bytes -> py2 str, str -> unicode

def py2_dumps(obj) -> bytes:
    out = io.BytesIO()
    out.write(b"\x80\x02")

    def put(x):
        if isinstance(x, bool):
            out.write(b"\x88" if x else b"\x89")
        elif isinstance(x, int):
            out.write(b"J" + struct.pack("<i", x))
        elif isinstance(x, float):
            out.write(b"G" + struct.pack(">d", x))
        elif isinstance(x, bytes):  # Python 2 str
            out.write((b"U" + bytes([len(x)])) if len(x) < 256 else (b"T" + struct.pack("<i", len(x))))
            out.write(x)
        elif isinstance(x, str):  # Python 2 unicode
            data = x.encode("utf-8")
            out.write(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(x, list):
            out.write(b"](")
            for item in x:
                put(item)
            out.write(b"e")
        elif isinstance(x, dict):
            out.write(b"}(")
            for k, v in x.items():
                put(k)
                put(v)
            out.write(b"u")
        else:
            raise TypeError(type(x))

    put(obj)
    out.write(b".")
    return out.getvalue()


def write_py2_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(py2_dumps(obj))


# ------------------------------------------------------------------------------------------------
# Fake data trees

WORDS = ["a", "the", "small", "large", "bird", "red", "blue", "yellow", "wings", "beak", "has", "with", "black", "white", "short", "long"]


def make_image(path: Path, size=(80, 60), colour=None, seed=0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if colour is None:
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    else:
        pixels = np.full((size[1], size[0], 3), colour, dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def caption_lines(seed: int, count: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(3, 25)))).capitalize() + "."
            for _ in range(count)]


def make_cub(root: Path, n_train=6, n_test=3, captions=10, with_class_info=True) -> dict:
    """A CUB tree in AttnGAN's layout; returns {split: keys}."""
    cub = root / "CUB_200_2011"
    keys = {"train": [], "test": []}
    images_txt, boxes_txt = [], []
    image_id = 0
    classes = {"train": ("001.Red_Bird", "003.Green_Bird"), "test": ("002.Blue_Bird",)}
    for split, count in (("train", n_train), ("test", n_test)):
        for k in range(count):
            image_id += 1
            cls = classes[split][k % len(classes[split])]
            key = f"{cls}/{cls.split('.')[1]}_{k:04d}_{image_id}"
            keys[split].append(key)
            w, h = 90 + 7 * k, 70 + 5 * k
            make_image(cub / "images" / f"{key}.jpg", (w, h), seed=image_id)
            images_txt.append(f"{image_id} {key}.jpg")
            boxes_txt.append(f"{image_id} {5.0 + k} {4.0} {w / 2:.1f} {h / 2:.1f}")
            text = root / "text" / f"{key}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            # an empty line and a line without tokens are skipped, as in the original
            lines = caption_lines(image_id, captions)
            text.write_text("\n".join(lines[:2] + ["", "!!"] + lines[2:]) + "\n", encoding="utf-8")
    (cub / "images.txt").write_text("\n".join(images_txt) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes_txt) + "\n")
    for split, split_keys in keys.items():
        write_py2_pickle(root / split / "filenames.pickle", [k.encode("latin1") for k in split_keys])
        if with_class_info:
            write_py2_pickle(root / split / "class_info.pickle", [int(k[:3]) for k in split_keys])
    return keys


@pytest.fixture
def cub(tmp_path):
    root = tmp_path / "birds"
    keys = make_cub(root)
    return root, keys


def make_coco(root: Path, n_train=5, n_test=2) -> dict:
    keys = {"train": [f"COCO_train2014_{k:012d}" for k in range(1, n_train + 1)],
            "test": [f"COCO_val2014_{k:012d}" for k in range(1, n_test + 1)]}
    for split, folder in (("train", "train2014"), ("test", "val2014")):
        for k, key in enumerate(keys[split]):
            make_image(root / folder / f"{key}.jpg", (64 + 8 * k, 48), seed=k)
            text = root / "text" / f"{key}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text("\n".join(caption_lines(100 + k, 7)) + "\n")  # 7 lines, 5 used
        write_py2_pickle(root / split / "filenames.pickle", [k.encode() for k in keys[split]])
    return keys


# ------------------------------------------------------------------------------------------------
# The restricted unpickler

def test_python2_pickle_loads_as_str(tmp_path):
    path = tmp_path / "p2.pickle"
    write_py2_pickle(path, [b"001.Black_footed/Albatross_0046", b"caf\xe9", "unicode word",
                            {b"key": 3, 4: [1, 2.5, True]}])
    data = load_pickle(path)
    assert data == ["001.Black_footed/Albatross_0046", "caf\u00e9", "unicode word",
                    {"key": 3, 4: [1, 2.5, True]}]
    with pytest.raises(UnicodeDecodeError):  # what the original's users hit with plain pickle
        pickle.loads(path.read_bytes())


def test_bytes_keys_and_values_are_decoded(tmp_path):
    path = tmp_path / "p3.pickle"
    obj = {b"word": [b"a", b"b"], "x": (b"t",), "d": defaultdict(list, {b"k": [1]})}
    path.write_bytes(pickle.dumps(obj, protocol=4))
    data = load_pickle(path)
    assert data == {"word": ["a", "b"], "x": ("t",), "d": {"k": [1]}}
    assert isinstance(data["d"], defaultdict) and data["d"].default_factory is list


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_naming_file_and_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "train" / "filenames.pickle"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(["ok", _Evil(marker)], protocol=2))
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    assert str(path) in str(info.value) and ".system" in str(info.value)
    assert not marker.exists()


def test_objects_and_numpy_need_permission(tmp_path):
    path = tmp_path / "obj.pickle"
    path.write_bytes(pickle.dumps(Path("x"), protocol=2))
    with pytest.raises(UnsafePickleError, match="pathlib"):
        load_pickle(path)
    arr = tmp_path / "arr.pickle"
    arr.write_bytes(pickle.dumps(np.arange(4, dtype=np.int64), protocol=2))
    with pytest.raises(UnsafePickleError, match="numpy"):
        load_pickle(arr)
    assert load_pickle(arr, allow_numpy=True).tolist() == [0, 1, 2, 3]


def test_corrupt_and_missing_pickles_are_named(tmp_path):
    path = tmp_path / "bad.pickle"
    path.write_bytes(pickle.dumps(list(range(100)), protocol=2)[:40])
    with pytest.raises(pickle.UnpicklingError, match="bad.pickle"):
        load_pickle(path)
    with pytest.raises(FileNotFoundError, match="nope.pickle"):
        load_pickle(tmp_path / "nope.pickle")


# ------------------------------------------------------------------------------------------------
# Captions and images

def test_caption_tokens_follow_the_original():
    assert caption_tokens("This bird has RED wings, and a short-beak!") == \
        ["this", "bird", "has", "red", "wings", "and", "a", "short", "beak"]
    assert caption_tokens("caf\u00e9 na\u00efve \u00e9") == ["caf", "nave"]
    assert caption_tokens("a\ufffd\ufffdbird") == ["a", "bird"]


def test_caption_file_with_too_few_lines_is_named(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("one bird\n\n...\ntwo birds\n")
    assert read_caption_file(path, 2) == [["one", "bird"], ["two", "birds"]]
    with pytest.raises(BadDataError, match=r"2 captions, 3 needed: .*x\.txt"):
        read_caption_file(path, 3)
    with pytest.raises(BadDataError, match="missing.*y.txt"):
        read_caption_file(tmp_path / "y.txt", 1)


def test_caption_tensor_drops_random_words_in_order():
    ids = list(range(1, 31))
    cap, n = caption_tensor(ids, 18, np.random.default_rng(0))
    kept = cap[:n].tolist()
    assert n == 18 and kept == sorted(kept) and set(kept) <= set(ids)
    cap, n = caption_tensor([5, 6], 18, np.random.default_rng(0))
    assert n == 2 and cap.tolist() == [5, 6] + [0] * 16


def test_bbox_crop_is_the_originals():
    # r = int(max(40, 20) * 0.75) = 30; centre (30, 20) -> (0, 0, 60, 50) clipped to the image
    assert bbox_crop_box((10, 10, 40, 20), 100, 100) == (0, 0, 60, 50)
    assert bbox_crop_box((50, 50, 100, 100), 200, 200) == (25, 25, 175, 175)
    assert bbox_crop_box((150, 150, 60, 60), 200, 200) == (135, 135, 200, 200)


def test_stage_images_resize_crop_flip(tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 120, 3), dtype=np.uint8))
    out = stage_images(img, (16, 32), np.random.default_rng(3))
    assert [tuple(t.shape) for t in out] == [(3, 16, 16), (3, 32, 32)]
    assert all(t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1 for t in out)
    again = stage_images(img, (16, 32), np.random.default_rng(3))
    assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True))
    # no rng: the centre crop of the short side resized to int(32 * 76 / 64) = 38
    centre = stage_images(img, (32,), None)[0]
    resized = img.resize((int(38 * 120 / 50), 38), Image.BILINEAR)
    left, top = round((resized.width - 32) / 2), round((38 - 32) / 2)
    expect = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32)
    assert torch.allclose(centre, torch.from_numpy(expect.transpose(2, 0, 1) / 127.5 - 1), atol=1e-6)
    # random: crop offsets in [0, 38 - 32] x [0, 91 - 32], then a flip with probability 1/2
    flips = set()
    for seed in range(8):
        got = stage_images(img, (32,), np.random.default_rng(seed))[0]
        draw = np.random.default_rng(seed)
        top, left = int(draw.integers(0, 38 - 32 + 1)), int(draw.integers(0, resized.width - 32 + 1))
        flip = bool(draw.random() < 0.5)
        crop = np.asarray(resized.crop((left, top, left + 32, top + 32)), dtype=np.float32)
        crop = crop[:, ::-1] if flip else crop
        assert torch.allclose(got, torch.from_numpy(crop.transpose(2, 0, 1) / 127.5 - 1), atol=1e-6)
        flips.add(flip)
    assert flips == {True, False}


def test_truncated_jpeg_is_reported_by_name(tmp_path):
    path = tmp_path / "cut.jpg"
    make_image(path, (64, 64), seed=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadDataError, match="corrupt: .*cut.jpg"):
        load_rgb(path)
    with pytest.raises(BadDataError, match="missing: .*none.jpg"):
        load_rgb(tmp_path / "none.jpg")


# ------------------------------------------------------------------------------------------------
# The AttnGAN layout

def test_cub_builds_vocabulary_saves_captions_pickle_and_items_collate(cub):
    root, keys = cub
    data = AttnGANDataset(root, "birds", "train", multi_res=(32, 64), words_num=12,
                          captions_per_image=10, seed=1)
    assert len(data) == len(keys["train"]) and (root / "captions.pickle").is_file()
    # vocabulary: every word of train + test captions in first-seen order (build_dictionary)
    tokens = [t for split in ("train", "test") for key in keys[split]
              for cap in read_caption_file(root / "text" / f"{key}.txt", 10) for t in cap]
    assert data.vocab.ixtoword == ["<end>"] + list(dict.fromkeys(tokens))
    item = data[0]
    assert set(item) == set(ShapesDataset(4)[0])
    assert [tuple(t.shape) for t in item["images"]] == [(3, 32, 32), (3, 64, 64)]
    assert item["key"] == keys["train"][0] and item["class_id"] == 1
    assert 1 <= item["cap_len"] <= 12 and item["caption"][item["cap_len"]:].eq(0).all()
    words = item["caption_text"].split()  # its words, in order, from one of the item's captions
    full = data.all_captions(0)[item["caption_index"]].split()
    remaining = iter(full)
    assert len(words) == min(len(full), 12) and all(w in remaining for w in words)
    batch = collate_shapes([data[i] for i in range(3)])
    assert batch["captions"].shape == (3, 12) and batch["images"][1].shape == (3, 3, 64, 64)
    # the saved pickle is read back (restricted) and gives the same data
    again = AttnGANDataset(root, "birds", "train", multi_res=(32, 64), words_num=12,
                           captions_per_image=10, seed=1)
    assert again.vocab == data.vocab
    assert all(torch.equal(a, b) for a, b in zip(again[2]["images"], data[2]["images"], strict=True))
    assert torch.equal(again[2]["caption"], data[2]["caption"])
    data.set_epoch(1)
    changed = [not torch.equal(data[i]["images"][1], again[i]["images"][1]) for i in range(len(data))]
    assert any(changed)  # new crops/flips in a new epoch


def test_cub_bbox_crop_is_applied(tmp_path):
    root = tmp_path / "birds"
    make_cub(root, n_train=1, n_test=1)
    key = load_pickle(root / "train" / "filenames.pickle")[0]
    # black 200x200 image with a red box (50, 50, 100, 100): the 1.5x crop is 44% red, the whole 25%
    img = np.zeros((200, 200, 3), dtype=np.uint8)
    img[50:150, 50:150] = (255, 0, 0)
    Image.fromarray(img).save(root / "CUB_200_2011" / "images" / f"{key}.jpg", quality=95)
    boxes = (root / "CUB_200_2011" / "bounding_boxes.txt").read_text().splitlines()
    boxes[0] = "1 50.0 50.0 100.0 100.0"
    (root / "CUB_200_2011" / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    assert read_bounding_boxes(root / "CUB_200_2011")[key] == (50, 50, 100, 100)
    data = AttnGANDataset(root, "birds", "train", multi_res=(64,), captions_per_image=10,
                          augment=False)
    red = (data[0]["images"][0][0] > 0.5).float().mean().item()
    assert red > 0.55  # centre 64/76 of the 150-px crop: (100 / 150 * 76 / 64) ** 2 = 0.63


def test_released_style_python2_captions_pickle_is_used(cub):
    root, keys = cub
    words = ["<end>", "this", "bird", "is", "red", "blue"]
    ixtoword = {i: w for i, w in enumerate(words)}
    wordtoix = {w: i for i, w in enumerate(words)}
    train = [[1, 2, 3, 4]] * (10 * len(keys["train"]))
    test = [[1, 2, 3, 5]] * (10 * len(keys["test"]))
    write_py2_pickle(root / "captions.pickle", [train, test, ixtoword, wordtoix])
    assert attngan_vocabulary(root, "birds", 10).ixtoword == words
    data = AttnGANDataset(root, "birds", "test", multi_res=(64,), captions_per_image=10)
    assert data[0]["caption_text"] == "this bird is blue" and data[0]["class_id"] == 2
    # a vocabulary from elsewhere (a DAMSM checkpoint) re-encodes, dropping words it lacks
    other = Vocabulary(["bird", "this", "is"])
    remapped = AttnGANDataset(root, "birds", "test", multi_res=(64,), captions_per_image=10, vocab=other)
    assert remapped[0]["caption_text"] == "this bird is"
    with pytest.raises(ValueError, match="captions_per_image"):
        AttnGANDataset(root, "birds", "test", multi_res=(64,), captions_per_image=5)
    # a caption with an id outside the vocabulary (image 1) or empty (image 2): skipped or fatal
    train[10 + 3], train[20 + 9] = [1, 99], []
    write_py2_pickle(root / "captions.pickle", [train, test, ixtoword, wordtoix])
    data = AttnGANDataset(root, "birds", "train", multi_res=(64,), captions_per_image=10, vocab=other)
    assert [r.key for r in data.records] == [k for i, k in enumerate(keys["train"]) if i not in (1, 2)]
    with pytest.raises(BadDataError, match=f"caption 3 of {keys['train'][1]}"):
        AttnGANDataset(root, "birds", "train", multi_res=(64,), captions_per_image=10, strict=True)


def test_bad_files_are_skipped_with_a_count_or_fatal_when_strict(cub, caplog):
    root, keys = cub
    short = root / "text" / f"{keys['train'][1]}.txt"
    short.write_text("only one caption here\n")
    (root / "CUB_200_2011" / "images" / f"{keys['train'][2]}.jpg").unlink()
    cut = root / "CUB_200_2011" / "images" / f"{keys['train'][3]}.jpg"
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(BadDataError, match=r"1 captions, 10 needed: .*\.txt"):
        AttnGANDataset(root, "birds", "train", captions_per_image=10, strict=True)
    with caplog.at_level(logging.WARNING, logger="attnfast.data"):
        data = AttnGANDataset(root, "birds", "train", captions_per_image=10)
    assert len(data) == len(keys["train"]) - 2
    text = caplog.text
    assert "skipped 2 images" in text and short.name in text and "image missing" in text
    assert not (root / "captions.pickle").exists()  # not written with a bad caption file
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnfast.data"):
        position = [r.key for r in data.records].index(keys["train"][3])
        item = data[position]  # the truncated JPEG: reported, replaced by the next good item
    assert item["key"] != keys["train"][3] and cut.name in caplog.text
    strict = AttnGANDataset(root, "birds", "train", captions_per_image=10, strict=False)
    strict.skips.strict = True
    with pytest.raises(BadDataError, match="corrupt: .*" + cut.name):
        strict[position]


def test_coco_layout(tmp_path):
    root = tmp_path / "coco"
    keys = make_coco(root)
    data = AttnGANDataset(root, "coco", "train", multi_res=(64,), captions_per_image=5, words_num=10)
    assert len(data) == len(keys["train"])
    assert [data[i]["class_id"] for i in range(len(data))] == list(range(len(data)))
    assert all(len(r.captions) == 5 and r.bbox is None for r in data.records)
    test = AttnGANDataset(root, "coco", "test", multi_res=(64,), captions_per_image=5, vocab=data.vocab)
    assert test.records[0].path.parent.name == "val2014" and test[0]["caption_index"] == 0


# ------------------------------------------------------------------------------------------------
# Caption folders

def make_folder(root: Path, jsonl: bool) -> None:
    for k in range(6):
        make_image(root / "imgs" / f"im{k}.png", (40 + 4 * k, 48), seed=k)
    if jsonl:
        lines = [json.dumps({"image": f"imgs/im{k}.png", "caption": f"a red bird number {k}"})
                 for k in range(6)]
        lines.append(json.dumps({"image": "imgs/im0.png", "captions": ["a tiny blue bird"]}))
        lines.append("{not json")
        lines.append(json.dumps({"image": "imgs/gone.png", "caption": "missing image"}))
        (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    else:
        for k in range(6):
            (root / "imgs" / f"im{k}.txt").write_text(f"A green bird {k}\n\nperched on a branch\n")


def test_caption_folder_jsonl(tmp_path, caplog):
    root = tmp_path / "folder"
    make_folder(root, jsonl=True)
    with caplog.at_level(logging.WARNING, logger="attnfast.data"):
        data = CaptionFolderDataset(root, "train", multi_res=(32,), words_num=8)
    assert len(data) == 6 and "skipped 2 images" in caplog.text and "captions.jsonl:8" in caplog.text
    assert data.all_captions(0) == ["a red bird number 0", "a tiny blue bird"]
    assert set(data[3]) == set(ShapesDataset(4)[0]) and data[3]["key"] == "imgs/im3.png"
    assert folder_vocabulary(root) == data.vocab
    with pytest.raises(BadDataError, match="not JSON"):
        CaptionFolderDataset(root, "train", strict=True)


def test_caption_folder_txt_with_splits(tmp_path):
    make_folder(tmp_path / "ds" / "train", jsonl=False)
    make_folder(tmp_path / "ds" / "test", jsonl=False)
    (tmp_path / "ds" / "test" / "imgs" / "im0.txt").write_text("an unseen zebra\nA green bird\n")
    (tmp_path / "ds" / "test" / "imgs" / "im5.txt").unlink()
    vocab = folder_vocabulary(tmp_path / "ds")
    assert "zebra" not in vocab and "perched" in vocab
    test = CaptionFolderDataset(tmp_path / "ds", "test", multi_res=(32,), vocab=vocab)
    # "an unseen zebra" has no word of the training vocabulary: dropped
    assert len(test) == 5 and test.all_captions(0) == ["a green bird"]
    batch = collate_shapes([test[i] for i in range(4)])
    assert batch["images"][0].shape == (4, 3, 32, 32)


# ------------------------------------------------------------------------------------------------
# Training on them

TINY = ["model.word_dim=16", "model.embedding_dim=32", "model.gf_dim=4", "model.df_dim=4",
        "model.z_dim=8", "model.condition_dim=8", "model.r_num=1", "model.branch_num=2",
        "damsm.batch_size=4", "damsm.image_size=64", "gan.batch_size=2", "train.log_every=1",
        "train.checkpoint_every=1000", "train.sample_every=1000", "train.grid_size=2",
        "dataset.words_num=12"]


def test_damsm_and_gan_steps_on_a_fake_cub_tree(tmp_path):
    root = tmp_path / "birds"
    make_cub(root)
    config = load_config(None, TINY + ["dataset.name=birds", f"dataset.data_dir={root}",
                                       "dataset.captions_per_image=10"])
    assert len(common.build_vocabulary(config)) > 5
    cpu = torch.device("cpu")
    summary = train_damsm(config, tmp_path / "run", cpu, steps=2, progress=False)
    losses = summary["last_losses"]
    assert summary["steps"] == 2 and all(np.isfinite(v) and v > 0 for v in losses.values()), losses
    summary = train_gan(config, tmp_path / "run", cpu, tmp_path / "run" / "damsm.pt", steps=1,
                        progress=False)
    assert summary["steps"] == 1 and (tmp_path / "run" / "samples").is_dir()


def test_damsm_steps_on_a_caption_folder(tmp_path):
    root = tmp_path / "folder"
    make_folder(root, jsonl=True)
    config = load_config(None, TINY + ["dataset.name=folder", f"dataset.data_dir={root}"])
    summary = train_damsm(config, tmp_path / "run", torch.device("cpu"), steps=2, progress=False)
    assert summary["steps"] == 2
    state = torch.load(tmp_path / "run" / "damsm.pt", weights_only=True)
    assert Vocabulary.from_dict(state["vocab"]) == folder_vocabulary(root)


def test_unknown_dataset_name_and_missing_dir_are_named(tmp_path):
    with pytest.raises(ValueError, match="dataset.name must be one of"):
        common.build_dataset(load_config(None, ["dataset.name=flowers"]), "train", (64,))
    with pytest.raises(FileNotFoundError, match="dataset.data_dir not found"):
        common.build_dataset(load_config(None, ["dataset.name=birds", f"dataset.data_dir={tmp_path}/x"]),
                             "train", (64,))
    with pytest.raises(ValueError, match="data_dir must be set"):
        common.build_vocabulary(load_config(None, ["dataset.name=folder"]))
