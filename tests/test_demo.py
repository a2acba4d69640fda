"""``make demo``'s inputs: its config loads and its end-of-run captions fit that config's data."""
from pathlib import Path

import pytest

from attnfast.config import load_config
from attnfast.data import grid_positions, parse_caption, shapes_vocabulary, tokenize
from attnfast.demo import DEMO_CAPTIONS

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "training/configs/shapes_demo.yaml"


@pytest.mark.parametrize("grid", sorted(DEMO_CAPTIONS))
def test_demo_captions_use_their_grid(grid):
    vocab = shapes_vocabulary()
    for caption in DEMO_CAPTIONS[grid]:
        assert all(w in vocab for w in tokenize(caption)), caption
        objects = parse_caption(caption)
        assert objects and all(o["position"] in grid_positions(grid) for o in objects), caption


def test_demo_config_has_captions():
    config = load_config(str(DEMO_CONFIG))
    assert config["dataset"]["grid"] in DEMO_CAPTIONS
    assert config["dataset"]["max_objects"] <= config["dataset"]["grid"] ** 2


@pytest.mark.parametrize("argv,expected", [([], "auto"), (["--amp"], "auto"), (["--amp", "off"], "off"),
                                           (["--amp", "bf16"], "bf16")])
def test_demo_and_train_default_to_the_devices_native_mixed_precision(monkeypatch, argv, expected, caplog):
    """Issue 27: ``make demo`` and ``python -m attnfast.train`` pick bf16 where it is native (auto,
    logged); ``--amp off`` keeps fp32."""
    import logging

    import torch

    from attnfast import demo, pipeline, train
    from attnfast.engine import amp as amp_lib
    assert train.build_parser().parse_args(argv).amp == expected
    seen = {}

    def fake_pipeline(config, out, device, amp, **kwargs):
        seen["amp"] = amp
        raise ValueError("stop here")
    monkeypatch.setattr(pipeline, "run_pipeline", fake_pipeline)
    monkeypatch.setattr(amp_lib, "cpu_has_native_bf16", lambda: True)
    with caplog.at_level(logging.INFO, logger="attnfast"):
        assert demo.main(argv + ["--device", "cpu", "--out", "unused"]) == 2
    assert seen["amp"] == ("bf16" if expected == "auto" else expected)
    if expected == "auto":
        assert "bf16 autocast" in caplog.text
    monkeypatch.setattr(amp_lib, "cpu_has_native_bf16", lambda: False)
    assert amp_lib.resolve(train.build_parser().parse_args(argv).amp, torch.device("cpu")) == (
        "off" if expected == "auto" else expected)
