"""Checkpoints: atomic writes (temp file + rename), loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so the restricted
unpickler of ``weights_only=True`` reads it): model and optimiser state dicts, the AMP scaler, RNG
states, the step, the config and the vocabulary.
"""
import random
from pathlib import Path

import numpy as np
import torch

from attnfast.config import fill_defaults
from .files import atomic_write


def save_atomic(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` so that a crash leaves either the old file or the new one."""
    return atomic_write(path, lambda stream: torch.save(state, stream))


def load(path: str | Path, map_location="cpu", kind: str | None = None) -> dict:
    """Load a checkpoint safely; ``kind`` ("damsm"/"gan") is checked against the file's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable attnfast checkpoint ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(state, dict) or "format" not in state or state.get("format") != "attnfast":
        raise ValueError(f"{path} is not an attnfast checkpoint (no 'format': 'attnfast' entry)")
    if kind is not None and state.get("kind") != kind:
        raise ValueError(f"{path} holds a {state.get('kind')!r} checkpoint, expected {kind!r}")
    if isinstance(state.get("config"), dict):
        state["config"] = fill_defaults(state["config"])  # keys added since the file was written
    return state


def rng_state() -> dict:
    """Every RNG the training loop draws from, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [list(v) if isinstance(v, tuple) else v for v in random.getstate()],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
