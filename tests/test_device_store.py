"""Issue 8, item 4: the training images resident on the device (:mod:`attnfast.data.device_store`).

Everything runs with the CPU as "the device": the store's images equal the dataset's bit for bit
(uint8 and float32 layouts), batches from the store equal the normal batches over an epoch
boundary and on resume, GAN and DAMSM runs with the store equal runs without it, an over-budget
store falls back with one message, data sets that augment per draw are refused, the flags parse.
"""
import logging

import pytest
import torch
from test_train import tiny_config

from attnfast import train as train_cli
from attnfast.data import ShapesDataset, collate_shapes
from attnfast.data.device_store import DeviceImageStore, TextItems, decode_uint8
from attnfast.data.shapes import _downsample, to_tensor
from attnfast.engine import checkpoint as ckpt
from attnfast.trainer.batches import step_batches
from attnfast.trainer.damsm import train_damsm
from attnfast.trainer.gan import train_gan
from attnfast.trainer.speed import SpeedOptions

CPU = torch.device("cpu")
# 64 is the largest side, 16 and 32 divide it (pooled from the uint8 64px pixels), 48 does not
# (rendered natively and stored as uint8).
SIDES = (16, 32, 48, 64)


def _dataset(num=10, multi_res=SIDES):
    return ShapesDataset(num, seed=3, multi_res=multi_res, captions_per_image=5, words_num=18)


def _assert_same_batch(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key, value in a.items():
        if key == "images":
            assert len(value) == len(b[key])
            for x, y in zip(value, b[key], strict=True):
                assert x.dtype == y.dtype and torch.equal(x, y)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_store_gives_the_dataset_images_bit_for_bit(dtype):
    data = _dataset()
    store = DeviceImageStore.build(data, CPU, budget_mb=16, dtype=dtype, progress=False)
    assert len(store) == len(data)
    order = torch.tensor([7, 0, 9, 3, 3])
    want = collate_shapes([data[int(i)] for i in order])["images"]
    got = store.images(order)
    for x, y in zip(got, want, strict=True):
        assert x.dtype == torch.float32 and x.shape == y.shape and torch.equal(x, y)
    per_item = 3 * (64 * 64 + 48 * 48) if dtype == "uint8" else 3 * 4 * sum(r * r for r in SIDES)
    assert store.nbytes == len(data) * per_item
    text = data.text_item(4)
    assert text["images"] == [] and text["key"] == data[4]["key"]
    assert torch.equal(text["caption"], data[4]["caption"])


def test_uint8_layout_plan():
    layout, stored = DeviceImageStore.plan(SIDES, "uint8")
    assert stored == [48, 64]
    assert layout == [("pooled", 4), ("pooled", 2), ("uint8", 0), ("uint8", 1)]
    assert DeviceImageStore.plan((64,), "float32") == ([("float32", 0)], [64])
    with pytest.raises(ValueError, match="dtype must be one of"):
        DeviceImageStore.plan((64,), "float16")


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_store_batches_equal_the_normal_batches_over_an_epoch_boundary_and_on_resume(dtype):
    data = _dataset(num=10, multi_res=(32, 64))          # 2 steps per epoch of 4 (drop_last)
    store = DeviceImageStore.build(data, CPU, budget_mb=16, dtype=dtype, progress=False)
    normal = step_batches(data, 4, seed=5, start_step=0, collate=collate_shapes)
    stored = step_batches(data, 4, seed=5, start_step=0, collate=collate_shapes, store=store)
    seen = []
    for _ in range(5):
        a, b = next(normal), next(stored)
        _assert_same_batch(a, b)
        seen.append(b)
    assert seen[0]["caption_indices"].tolist() != [] and len({tuple(s["indices"].tolist()) for s in seen}) > 2
    resumed = step_batches(data, 4, seed=5, start_step=3, collate=collate_shapes, store=store)
    for k in range(3, 5):
        _assert_same_batch(next(resumed), seen[k])


def test_text_items_forward_set_epoch():
    data = _dataset(num=6, multi_res=(32,))
    view = TextItems(data)
    view.set_epoch(4)
    assert data.epoch == 4 and len(view) == 6 and view[2]["caption_index"] == data[2]["caption_index"]


def test_over_budget_falls_back_with_one_message(caplog, monkeypatch):
    data = _dataset(num=10, multi_res=(32, 64))
    with caplog.at_level(logging.INFO, logger="attnfast"):
        assert SpeedOptions(dataset_on_device_mb=0.01).image_store(data, CPU, progress=False) is None
    messages = [r.getMessage() for r in caplog.records if "--dataset-on-device" in r.getMessage()]
    assert len(messages) == 1 and "budget of 0.01 MB" in messages[0]
    assert SpeedOptions(dataset_on_device_mb=0).image_store(data, CPU) is None      # off, no message
    # CUDA: more than half of the free device memory falls back before allocating anything
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100_000, 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="attnfast"):
        assert DeviceImageStore.build(data, torch.device("cuda"), 1024, progress=False) is None
    assert "half of the 0 MB free on cuda" in caplog.text


def test_datasets_that_augment_per_draw_are_refused():
    class Augmented(torch.utils.data.Dataset):       # as the AttnGAN-layout data sets: no text_item
        multi_res = (64,)

        def __len__(self):
            return 4

    with pytest.raises(ValueError, match="Augmented cannot be stored.*random crop and flip"):
        DeviceImageStore.build(Augmented(), CPU, 64)
    with pytest.raises(ValueError, match="must be > 0 MB"):
        DeviceImageStore.build(_dataset(), CPU, 0)


@pytest.fixture(scope="module")
def damsm_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("damsm_store")
    train_damsm(tiny_config(), out, CPU, steps=1, progress=False)
    return out / "damsm.pt"


def _weights(path, kind, keys):
    state = ckpt.load(path, map_location=CPU, kind=kind)
    out = {}
    for key in keys:
        items = state[key] if isinstance(state[key], list) else [state[key]]
        for i, sd in enumerate(items):
            out.update({f"{key}{i}.{k}": v for k, v in sd.items()})
    return out


def _assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def test_gan_run_with_the_store_equals_the_run_without(tmp_path, damsm_ckpt, caplog):
    config = tiny_config("dataset.train_size=8")         # 2 steps per epoch: 3 steps cross an epoch
    plain = train_gan(config, tmp_path / "plain", CPU, damsm_ckpt, steps=3, progress=False,
                      speed=SpeedOptions(dataset_on_device_mb=0))
    with caplog.at_level(logging.INFO, logger="attnfast"):
        stored = train_gan(config, tmp_path / "stored", CPU, damsm_ckpt, steps=3, progress=False,
                           speed=SpeedOptions(dataset_on_device_mb=64))
    assert "--dataset-on-device: 8 training images on cpu" in caplog.text
    assert plain["steps"] == stored["steps"] == 3
    keys = ("netG", "netG_ema", "netsD")
    want = _weights(plain["checkpoint"], "gan", keys)
    _assert_same_weights(want, _weights(stored["checkpoint"], "gan", keys))
    # exact resume with the store: 1 step, then resumed to 3 (across the epoch boundary)
    first = train_gan(config, tmp_path / "resumed", CPU, damsm_ckpt, steps=1, progress=False,
                      speed=SpeedOptions(dataset_on_device_mb=64))
    resumed = train_gan(config, tmp_path / "resumed", CPU, None, resume=first["checkpoint"], steps=3,
                        progress=False, speed=SpeedOptions(dataset_on_device_mb=64))
    _assert_same_weights(want, _weights(resumed["checkpoint"], "gan", keys))


def test_damsm_run_with_the_store_equals_the_run_without(tmp_path):
    config = tiny_config("dataset.train_size=16")        # 2 steps per epoch of 8
    plain = train_damsm(config, tmp_path / "plain", CPU, steps=3, progress=False,
                        speed=SpeedOptions(dataset_on_device_mb=0))
    stored = train_damsm(config, tmp_path / "stored", CPU, steps=3, progress=False,
                         speed=SpeedOptions(dataset_on_device_mb=64, dataset_dtype="float32"))
    keys = ("text_encoder", "image_encoder")
    _assert_same_weights(_weights(plain["checkpoint"], "damsm", keys),
                         _weights(stored["checkpoint"], "damsm", keys))


def test_the_store_is_on_by_default_where_it_keeps_the_batches(tmp_path, damsm_ckpt, caplog):
    """Issue 27: the shapes data is stored by default (each image rendered once: the same batches, as
    the tests above show); 0 turns it off; data drawn per item (random crops) are never stored."""
    config = tiny_config("dataset.train_size=8")
    with caplog.at_level(logging.INFO, logger="attnfast"):
        train_gan(config, tmp_path / "default", CPU, damsm_ckpt, steps=1, progress=False)
    assert "--dataset-on-device: 8 training images on cpu" in caplog.text
    shapes = ShapesDataset(8, resolution=64)
    assert SpeedOptions().image_store(shapes, CPU, progress=False) is not None
    assert SpeedOptions(dataset_on_device_mb=0).image_store(shapes, CPU, progress=False) is None

    class PerDraw(torch.utils.data.Dataset):        # no render-free text_item: images drawn per item
        def __len__(self):
            return 8

    assert SpeedOptions().image_store(PerDraw(), CPU, progress=False) is None


def test_flags_parse_and_validate():
    parser = train_cli.build_parser()
    default = train_cli.speed_options(parser.parse_args([]))
    assert default.dataset_on_device_mb is None and default.dataset_dtype == "uint8"     # auto
    off = train_cli.speed_options(parser.parse_args(["--dataset-on-device", "0"]))
    assert off.dataset_on_device_mb == 0
    bare = train_cli.speed_options(parser.parse_args(["--dataset-on-device"]))
    assert bare.dataset_on_device_mb == train_cli.DATASET_ON_DEVICE_MB
    args = parser.parse_args(["--dataset-on-device", "256", "--dataset-dtype", "float32"])
    sized = train_cli.speed_options(args)
    assert sized.dataset_on_device_mb == 256 and sized.dataset_dtype == "float32"
    with pytest.raises(ValueError, match="--dataset-on-device must be >= 0"):
        SpeedOptions(dataset_on_device_mb=-1)
    with pytest.raises(ValueError, match="--dataset-dtype must be one of"):
        SpeedOptions(dataset_dtype="float16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_cuda_store_equals_the_normal_batches(dtype):
    """On the GPU: the decode runs in CUDA kernels; the batches must still equal the CPU-rendered ones."""
    data = _dataset(num=10)
    store = DeviceImageStore.build(data, torch.device("cuda"), budget_mb=64, dtype=dtype, progress=False)
    assert store is not None and store.tensors[0].is_cuda
    normal = step_batches(data, 4, seed=5, start_step=1, collate=collate_shapes)
    stored = step_batches(data, 4, seed=5, start_step=1, collate=collate_shapes, store=store)
    for _ in range(3):
        a, b = next(normal), next(stored)
        assert all(img.is_cuda for img in b["images"])
        b["images"] = [img.cpu() for img in b["images"]]
        _assert_same_batch(a, b)


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_decode_uint8_is_the_datasets_area_average_bit_for_bit(factor):
    """The store's decode (sum pooling, one true division) equals the dataset's float32 area average
    then to_tensor, on every pixel value (random and the extremes 0 / 255)."""
    torch.manual_seed(factor)
    side = 12 * factor
    pixels = torch.randint(0, 256, (3, 3, side, side), dtype=torch.uint8)
    pixels[1] = 255
    pixels[2, :, :factor] = 0
    got = decode_uint8(pixels, factor)
    for image, decoded in zip(pixels, got, strict=True):
        array = image.permute(1, 2, 0).numpy()
        want = to_tensor(_downsample(array, factor) if factor > 1 else array)
        assert decoded.dtype == torch.float32 and torch.equal(decoded, want)
