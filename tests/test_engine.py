"""Config loading, checkpoints (atomic, weights_only, RNG round trip), AMP helpers."""
import random

import numpy as np
import pytest
import torch

from attnfast.config import DEFAULTS, ConfigError, load_config
from attnfast.engine import amp
from attnfast.engine import checkpoint as ckpt


def test_config_defaults_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  gf_dim: 8\ngan:\n  steps: 3\n")
    config = load_config(path, ["damsm.lr=0.01", "model.mask_mode=attngan"])
    assert config["model"]["gf_dim"] == 8 and config["gan"]["steps"] == 3
    assert config["damsm"]["lr"] == 0.01 and config["model"]["mask_mode"] == "attngan"
    assert config["model"]["df_dim"] == DEFAULTS["model"]["df_dim"]


def test_shipped_shapes_config_loads():
    config = load_config("training/configs/shapes.yaml")
    assert config["model"]["branch_num"] >= 2  # at least one attentional stage


@pytest.mark.parametrize("text, pattern", [
    ("model:\n  gf_dimm: 8\n", "unknown config key 'model.gf_dimm'"),
    ("modell: {}\n", "unknown config key 'modell'"),
    ("model: 3\n", "must be a mapping"),
    ("- a\n- b\n", "must be a mapping"),
])
def test_config_errors(tmp_path, text, pattern):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_config_missing_file_and_bad_override(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["gan.steps"])


def test_checkpoint_roundtrip_and_rng(tmp_path):
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    state = {"format": "attnfast", "kind": "damsm", "w": torch.randn(3), "rng": ckpt.rng_state(),
             "config": load_config(), "nested": [1, 2.5, "x", None]}
    expected = (torch.rand(4), random.random(), np.random.rand())
    path = ckpt.save_atomic(state, tmp_path / "sub" / "c.pt")
    assert not list(path.parent.glob(".*.tmp"))
    loaded = ckpt.load(path, kind="damsm")
    assert torch.equal(loaded["w"], state["w"]) and loaded["config"] == state["config"]
    ckpt.set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(4), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt.load(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable attnfast checkpoint"):
        ckpt.load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not an attnfast checkpoint"):
        ckpt.load(foreign)
    ckpt.save_atomic({"format": "attnfast", "kind": "gan"}, tmp_path / "g.pt")
    with pytest.raises(ValueError, match="holds a 'gan' checkpoint, expected 'damsm'"):
        ckpt.load(tmp_path / "g.pt", kind="damsm")


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.pt"
    torch.save({"format": "attnfast", "x": Evil()}, path)
    with pytest.raises(ValueError, match="not a readable attnfast checkpoint"):
        ckpt.load(path)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = ckpt.save_atomic({"format": "attnfast", "v": 1}, tmp_path / "c.pt")

    def broken_save(obj, stream):
        stream.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_atomic({"format": "attnfast", "v": 2}, path)
    monkeypatch.undo()
    assert ckpt.load(path)["v"] == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_amp_helpers():
    cpu = torch.device("cpu")
    with amp.autocast("bf16", cpu):
        assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.bfloat16
    with amp.autocast("off", cpu):
        assert (torch.randn(4, 4) @ torch.randn(4, 4)).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        amp.autocast("fp16", cpu)
    with pytest.raises(ValueError, match="--amp must be one of"):
        amp.amp_dtype("fp8")
    assert not amp.grad_scaler("bf16", cpu).is_enabled()


def test_old_checkpoint_config_gets_the_keys_added_since(tmp_path):
    """A checkpoint written before dataset.max_objects / dataset.grid / model.base_size existed loads
    with their defaults."""
    import copy

    from attnfast.config import DEFAULTS
    from attnfast.engine import checkpoint as ckpt
    old = copy.deepcopy(DEFAULTS)
    del old["dataset"]["max_objects"], old["dataset"]["grid"], old["model"]["base_size"]
    old["model"]["gf_dim"] = 7
    ckpt.save_atomic({"format": "attnfast", "kind": "gan", "config": old}, tmp_path / "old.pt")
    config = ckpt.load(tmp_path / "old.pt", kind="gan")["config"]
    assert config["dataset"]["max_objects"] == 3 and config["model"]["base_size"] == 64
    assert config["dataset"]["grid"] == 3
    assert config["model"]["gf_dim"] == 7
