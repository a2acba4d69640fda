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
