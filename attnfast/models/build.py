"""Networks from a config and the networks of a checkpoint: the one place that turns the ``model``
section of a config into modules (text and image encoders, generator, style encoder, VLMGAN's
matching block) and loads a DAMSM / GAN / style / vlm checkpoint's networks.

Training (attnfast.trainer), generation, metrics and serving all build their networks here, so the
inference path never imports the trainer. The discriminators are built by the trainer
(attnfast.trainer.gan.build_discriminators: they depend on its parsed GAN options and are never
used outside training).
"""
from typing import NamedTuple

import torch

from attnfast.config import DEFAULTS, merge_config
from attnfast.data import Vocabulary
from attnfast.engine import checkpoint as ckpt
from .generator import G_NET
from .image_encoder import image_encoder
from .style_encoder import StyleEncoder
from .text_encoder import RNN_ENCODER
from .vlmgan import build_matching_block


def stage_resolutions(config: dict) -> tuple[int, ...]:
    """Image sizes of the generator's stages: 64, 128, 256 for branch_num 1..3 (from 32 with
    model.base_size 32)."""
    branches = int(config["model"]["branch_num"])
    if not 1 <= branches <= 3:
        raise ValueError(f"model.branch_num must be 1, 2 or 3, got {branches}")
    base = int(config["model"].get("base_size", 64))
    if base not in (32, 64):
        raise ValueError(f"model.base_size must be 32 or 64, got {base}")
    return tuple(base * 2 ** i for i in range(branches))


def build_text_encoder(config: dict, vocab_size: int):
    """The DAMSM text encoder (RNN_ENCODER) of ``config['model']`` for ``vocab_size`` words."""
    model = config["model"]
    return RNN_ENCODER(vocab_size, ninput=model["word_dim"], drop_prob=model["rnn_dropout"],
                       nhidden=model["embedding_dim"], rnn_type=model["rnn_type"],
                       n_steps=config["dataset"]["words_num"])


def build_image_encoder(config: dict):
    """The DAMSM image encoder of ``model.image_encoder`` ("inception" or the small CNN)."""
    model = config["model"]
    kind = model["image_encoder"]
    if kind == "inception":
        return image_encoder(kind, nef=model["embedding_dim"], weights_path=model["inception_weights"])
    return image_encoder(kind, nef=model["embedding_dim"], ndf=model["small_encoder_width"],
                         regions=model["small_encoder_regions"])


def build_generator(config: dict):
    """The multi-stage generator G_NET of ``config['model']`` (not initialised: the trainer applies
    ``weights_init``, a loader its state dict)."""
    model = config["model"]
    return G_NET(ngf=model["gf_dim"], nef=model["embedding_dim"], ncf=model["condition_dim"],
                 z_dim=model["z_dim"], branch_num=model["branch_num"], r_num=model["r_num"],
                 mask_mode=model["mask_mode"], base_size=model.get("base_size", 64))


def build_style_encoder(config: dict):
    """GAN-INT-CLS's style encoder S: image -> z (``config['style']`` and ``model.z_dim``)."""
    style = config["style"]
    return StyleEncoder(config["model"]["z_dim"], ndf=style["ndf"], input_size=style["input_size"])


def load_damsm_encoders(path, config: dict, device: torch.device):
    """The frozen text and image encoders (eval mode, no grad) and vocabulary of a DAMSM checkpoint."""
    state = ckpt.load(path, map_location=device, kind="damsm")
    vocab = Vocabulary.from_dict(state["vocab"])
    text_encoder = build_text_encoder(state["config"], len(vocab))
    image_encoder = build_image_encoder(state["config"])
    text_encoder.load_state_dict(state["text_encoder"])
    image_encoder.load_state_dict(state["image_encoder"])
    for model in (text_encoder, image_encoder):
        model.to(device).eval().requires_grad_(False)
    if state["config"]["model"]["embedding_dim"] != config["model"]["embedding_dim"]:
        raise ValueError(f"{path}: the DAMSM encoders have embedding_dim "
                         f"{state['config']['model']['embedding_dim']}, the config asks for "
                         f"{config['model']['embedding_dim']}")
    return text_encoder, image_encoder, vocab


class GeneratorModels(NamedTuple):
    """What every way of drawing images needs: the generator (eval mode), the frozen text encoder
    (eval mode), the vocabulary and a config with at least ``dataset.words_num`` and
    ``model.{z_dim, condition_dim, branch_num}``."""
    netG: torch.nn.Module
    text_encoder: torch.nn.Module
    vocab: object
    config: dict


def load_generator(path, device: torch.device) -> GeneratorModels:
    """The EMA generator, the text encoder, the vocabulary and the config of a GAN checkpoint
    (loaded with ``weights_only=True``; a missing, foreign or non-GAN file raises naming it)."""
    state = ckpt.load(path, map_location=device, kind="gan")
    config = state["config"]
    vocab = Vocabulary.from_dict(state["vocab"])
    netG = build_generator(config)
    netG.load_state_dict(state["netG_ema"])
    text_encoder = build_text_encoder(config, len(vocab))
    text_encoder.load_state_dict(state["text_encoder"])
    return GeneratorModels(netG.to(device).eval(), text_encoder.to(device).eval(), vocab, config)


def load_style_encoder(path, device: torch.device):
    """The trained style encoder (eval mode) of a style checkpoint, and the checkpoint dict."""
    state = ckpt.load(path, map_location=device, kind="style")
    encoder = build_style_encoder(state["config"])
    encoder.load_state_dict(state["style_encoder"])
    return encoder.to(device).eval(), state


def load_matching_block(path, device: torch.device, text_encoder=None):
    """The pretrained matching-score block (eval mode, frozen) of a vlm checkpoint, and the
    checkpoint dict. With ``text_encoder``, checks that the block was trained on the same text
    encoder (a block is tied to the features it was trained on)."""
    state = ckpt.load(path, map_location=device, kind="vlm")
    msb = build_matching_block(merge_config(DEFAULTS, state["config"]))
    msb.load_state_dict(state["msb"])
    if text_encoder is not None:
        for name, value in text_encoder.state_dict().items():
            theirs = state["text_encoder"].get(name)
            if theirs is None or theirs.shape != value.shape or not torch.equal(theirs.to(value.device), value):
                raise ValueError(f"{path}: the matching block was trained on other DAMSM encoders "
                                 f"(text_encoder.{name} differs); retrain it with --stage vlm --damsm "
                                 f"on the encoders in use")
    return msb.to(device).eval().requires_grad_(False), state
