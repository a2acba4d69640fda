"""The original AttnGAN's released weights (taoxugit/AttnGAN) loaded into attnfast's modules.

Files (what ``torch.save(model.state_dict(), ...)`` wrote in the original code):
- ``netG_*.pth`` (e.g. ``bird_AttnGAN2.pth``, ``coco_AttnGAN2.pth``): a ``G_NET`` state dict,
  possibly with DataParallel's ``module.`` prefix on every key.
- ``text_encoder*.pth`` (e.g. ``DAMSMencoders/bird/text_encoder200.pth``): ``RNN_ENCODER``.
- ``image_encoder*.pth``: ``CNN_ENCODER`` (Inception-v3 backbone + ``emb_features`` /
  ``emb_cnn_code``).

Files are read with ``torch.load(weights_only=True)`` (no code runs from them; the torch 0.3/0.4
legacy format loads too). Sizes are inferred from the tensor shapes (GF_DIM, EMBEDDING_DIM,
CONDITION_DIM, Z_DIM, BRANCH_NUM, R_NUM; vocabulary size, word embedding size, RNN type, hidden
size and layers); a size passed explicitly wins, and a wrong one shows up as a shape mismatch.
Every key must match by name and shape except ``num_batches_tracked`` (absent from files
written before torch 0.4.1); a mismatch raises :class:`ReleasedWeightsError` naming the missing
and unexpected keys and the shape mismatches.

Generators load with ``mask_mode="attngan"`` by default (the original's misaligned word mask,
DESIGN.md §3.1): the released generators were trained with it and sample as they did only with
it. Image encoders load with ``align_corners=True``, the bilinear resize of the torch 0.3 the
original ran on (see :class:`~attnfast.models.CNN_ENCODER`).
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from .generator import G_NET
from .image_encoder import CNN_ENCODER
from .inception import _listing
from .inception import load_state_strict as _load_state_strict
from .text_encoder import RNN_ENCODER

__all__ = [
    "ReleasedWeightsError",
    "generator_sizes",
    "image_encoder_sizes",
    "load_released_generator",
    "load_released_image_encoder",
    "load_released_text_encoder",
    "load_state_strict",
    "read_state_dict",
    "text_encoder_sizes",
]

DATA_PARALLEL_PREFIX = "module."


class ReleasedWeightsError(ValueError):
    """A weights file that does not hold the expected module's state dict."""


def read_state_dict(path, what: str = "state dict") -> dict[str, torch.Tensor]:
    """{key: tensor} from ``path`` (``torch.load(weights_only=True)``, on the CPU).

    A ``{"state_dict": ...}`` wrapper is unwrapped and DataParallel's ``module.`` prefix is
    stripped when every key carries it. ``what`` names the expected content in errors.

    Raises:
        FileNotFoundError: no file at ``path``.
        ReleasedWeightsError: unreadable with weights_only, or not a mapping of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        raise ReleasedWeightsError(f"{path!r} could not be read as a {what} with "
                                   f"torch.load(weights_only=True): {exc}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise ReleasedWeightsError(f"{path!r} does not hold a {what} (got {type(state).__name__})")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ReleasedWeightsError(f"{path!r} is not a {what}: entries that are not tensors: {_listing(bad)}")
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def load_state_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """:func:`attnfast.models.inception.load_state_strict` raising :class:`ReleasedWeightsError`."""
    return _load_state_strict(model, state, source, ReleasedWeightsError)


def _need(state: Mapping, key: str, ndim: int, source: str, what: str) -> tuple[int, ...]:
    if key not in state:
        raise ReleasedWeightsError(f"{source} does not look like a {what} state dict: key {key!r} "
                                   f"is missing (keys start {_listing(list(state)[:5])})")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise ReleasedWeightsError(f"{source}: {key!r} has shape {shape}, expected {ndim} dimensions")
    return shape


def generator_sizes(state: Mapping[str, torch.Tensor], source: str = "state dict") -> dict:
    """G_NET's sizes from its state dict: ngf (GF_DIM), nef (EMBEDDING_DIM), ncf (CONDITION_DIM),
    z_dim (Z_DIM), branch_num (BRANCH_NUM), r_num (R_NUM)."""
    four_ncf, nef = _need(state, "ca_net.fc.weight", 2, source, "G_NET")          # (4*ncf, nef)
    ngf = _need(state, "img_net1.img.0.weight", 4, source, "G_NET")[1]            # (3, ngf, 3, 3)
    ncf = four_ncf // 4
    z_dim = _need(state, "h_net1.fc.0.weight", 2, source, "G_NET")[1] - ncf      # (., z_dim + ncf)
    branch_num = 1 + sum(f"img_net{s}.img.0.weight" in state for s in (2, 3))
    residual = {int(m.group(1)) for k in state if (m := re.match(r"h_net2\.residual\.(\d+)\.", k))}
    r_num = len(residual) if residual else 2
    return {"ngf": ngf, "nef": nef, "ncf": ncf, "z_dim": z_dim, "branch_num": branch_num,
            "r_num": r_num}


def text_encoder_sizes(state: Mapping[str, torch.Tensor], source: str = "state dict") -> dict:
    """RNN_ENCODER's sizes from its state dict: ntoken, ninput, nhidden (both directions),
    nlayers, bidirectional, rnn_type ("LSTM": 4 gates, "GRU": 3)."""
    ntoken, ninput = _need(state, "encoder.weight", 2, source, "RNN_ENCODER")
    gates_h, hidden = _need(state, "rnn.weight_hh_l0", 2, source, "RNN_ENCODER")  # (gates*h, h)
    gates = gates_h // hidden
    if gates not in (3, 4) or gates * hidden != gates_h:
        raise ReleasedWeightsError(f"{source}: rnn.weight_hh_l0 has shape {(gates_h, hidden)}, "
                                   f"neither an LSTM (4h, h) nor a GRU (3h, h)")
    bidirectional = "rnn.weight_hh_l0_reverse" in state
    nlayers = len({k for k in state if re.fullmatch(r"rnn\.weight_hh_l\d+", k)})
    return {"ntoken": ntoken, "ninput": ninput, "nhidden": hidden * (2 if bidirectional else 1),
            "nlayers": nlayers, "bidirectional": bidirectional,
            "rnn_type": "LSTM" if gates == 4 else "GRU"}


def image_encoder_sizes(state: Mapping[str, torch.Tensor], source: str = "state dict") -> dict:
    """CNN_ENCODER's size from its state dict: nef (the DAMSM embedding size)."""
    return {"nef": _need(state, "emb_cnn_code.weight", 2, source, "CNN_ENCODER")[0]}


def load_released_generator(path, *, mask_mode: str = "attngan", **sizes) -> G_NET:
    """A ``G_NET`` with the weights of ``path`` (a released ``netG_*.pth``), in eval mode.

    ``sizes`` (ngf, nef, ncf, z_dim, branch_num, r_num) override the inferred ones. The word
    mask follows ``mask_mode`` ("attngan" by default: how the released generators were trained).
    """
    source = f"generator weights {os.fspath(path)!r}"
    state = read_state_dict(path, "G_NET (netG) state dict")
    net = G_NET(**{**generator_sizes(state, source), **sizes}, mask_mode=mask_mode)
    return load_state_strict(net, state, source).eval()


def load_released_text_encoder(path, *, words_num: int = 18, **sizes) -> RNN_ENCODER:
    """An ``RNN_ENCODER`` with the weights of ``path`` (a released ``text_encoder*.pth``), in
    eval mode. ``sizes`` (ntoken, ninput, nhidden, nlayers, bidirectional, rnn_type) override the
    inferred ones; ``words_num`` is WORDS_NUM, kept as the ``n_steps`` attribute (the original's
    training configs: 18; its eval_bird.yml / eval_coco.yml: 25 / 20)."""
    source = f"text encoder weights {os.fspath(path)!r}"
    state = read_state_dict(path, "RNN_ENCODER (text_encoder) state dict")
    net = RNN_ENCODER(**{**text_encoder_sizes(state, source), **sizes}, n_steps=words_num)
    return load_state_strict(net, state, source).eval()


def load_released_image_encoder(path, *, nef: int | None = None,
                                align_corners: bool = True) -> CNN_ENCODER:
    """A ``CNN_ENCODER`` with the weights of ``path`` (a released ``image_encoder*.pth``: the
    Inception-v3 backbone is in the file, no ImageNet weights are needed), in eval mode."""
    source = f"image encoder weights {os.fspath(path)!r}"
    state = read_state_dict(path, "CNN_ENCODER (image_encoder) state dict")
    nef = image_encoder_sizes(state, source)["nef"] if nef is None else nef
    with warnings.catch_warnings():  # the backbone's random init is overwritten just below
        warnings.filterwarnings("ignore", message="Inception-v3 has random weights")
        net = CNN_ENCODER(nef, weights_path=None, align_corners=align_corners)
    return load_state_strict(net, state, source).eval()
