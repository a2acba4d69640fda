"""Training configuration: nested dicts with defaults, loaded from YAML, unknown keys refused.

The defaults are the built-in shapes setup; ``training/configs/*.yaml`` override them. Every module
receives plain sizes from here (no global config object inside models).
"""
import copy
from pathlib import Path

import yaml

from attnfast.config_errors import ConfigError
from attnfast.config_original import convert_original_config, is_original_config

__all__ = ["DEFAULTS", "ConfigError", "fill_defaults", "load_config", "merge_config", "parse_override"]

DEFAULTS: dict = {
    "name": "shapes",
    "dataset": {
        "name": "shapes",          # shapes (built in) | birds | coco (AttnGAN's layout) | folder
        "data_dir": None,          # birds/coco/folder: the data directory (e.g. data/birds)
        "strict": False,           # birds/coco/folder: a missing/corrupt file is fatal (else skipped)
        "train_size": 20000,
        "test_size": 1000,
        "captions_per_image": 5,
        "max_objects": 3,          # shapes: objects per scene drawn from 1..max_objects
        "grid": 3,                 # shapes: cell grid side, 3 (9 positions), 2 (4 corners) or 1 (centred)
        "words_num": 18,           # cfg.TEXT.WORDS_NUM
        "seed": 0,
        "num_workers": 0,
    },
    "model": {
        "word_dim": 300,           # embedding size fed to the LSTM
        "embedding_dim": 256,      # cfg.TEXT.EMBEDDING_DIM
        "rnn_type": "LSTM",
        "rnn_dropout": 0.5,
        "gf_dim": 32,              # cfg.GAN.GF_DIM
        "df_dim": 64,              # cfg.GAN.DF_DIM
        "z_dim": 100,              # cfg.GAN.Z_DIM
        "condition_dim": 100,      # cfg.GAN.CONDITION_DIM
        "r_num": 2,                # cfg.GAN.R_NUM
        "branch_num": 2,           # cfg.TREE.BRANCH_NUM (stages: 64, 128, 256)
        "base_size": 64,           # cfg.TREE.BASE_SIZE of the first stage: 64 (original) or 32 (small CPU runs)
        "b_jcu": True,             # unconditional D heads as well (cfg.GAN.B_DCGAN false)
        "image_encoder": "small",  # small | inception
        "small_encoder_width": 64, # base width (ndf) of the small image encoder
        "small_encoder_regions": 8,  # side of the small image encoder's region grid (DAMSM's words attend over it)
        "inception_weights": None, # local path to torchvision's inception_v3 ImageNet weights
        "mask_mode": "correct",    # correct | attngan
    },
    "damsm": {
        "batch_size": 48,
        "lr": 0.002,               # cfg.TRAIN.ENCODER_LR
        "lr_decay": 0.98,          # per epoch while lr > lr / 10, as pretrain_DAMSM.py
        "betas": [0.5, 0.999],
        "rnn_grad_clip": 0.25,     # cfg.TRAIN.RNN_GRAD_CLIP
        "gamma1": 4.0, "gamma2": 5.0, "gamma3": 10.0,
        "steps": 2000,
        "image_size": 64,          # the resolution the image encoder is trained on
    },
    "gan": {
        "batch_size": 20,
        "g_lr": 0.0002,
        "d_lr": 0.0002,
        "betas": [0.5, 0.999],
        "lambda": 5.0,             # cfg.TRAIN.SMOOTH.LAMBDA (weight of the DAMSM loss in G)
        "ema": 0.999,              # moving average of G's parameters (the original's avg_param_G)
        "steps": 5000,
        "int_weight": 0.0,         # GAN-INT: weight of G's adversarial term on interpolated captions (0 = off)
        "int_beta": 0.5,           # GAN-INT: mixing weight of the second caption
        "colour_consistency": 0.0, # StackGAN++ colour-consistency weight alpha in G (0 = off; paper: 50)
        "colour_lambdas": [1.0, 5.0],  # its lambda1 (means) and lambda2 (covariances)
        # Successors' options (attnfast/trainer/gan_options.py), all off = the paper's AttnGAN:
        "diffaugment": "",         # DiffAugment policy before every D, e.g. "color,translation,cutout"
        "loss": "bce",             # bce (AttnGAN) | hinge (SAGAN / DF-GAN)
        "gp": "none",              # none | magp (DF-GAN's matching-aware GP) | r1
        "gp_weight": 2.0,          # MA-GP's k (DF-GAN: 2) or R1's gamma
        "gp_power": 6.0,           # MA-GP's p (DF-GAN: 6)
        "spectral_norm": False,    # spectral normalisation of every D convolution
        "projection": False,       # projection discriminator term in every D's conditional head
        "g_betas": None,           # Adam betas of G (TTUR); null = gan.betas
        "d_betas": None,           # Adam betas of every D; null = gan.betas
        "mode_seeking": 0.0,       # MSGAN's mode-seeking weight on G (0 = off)
        # attnfast's option (issue 29): weight of KL(DAMSM word->region attention on the fake || G's
        # word attention) at every attentional stage (0 = off; attnfast/reference/attention_grounding.py)
        "attention_grounding": 0.0,
        # attnfast's option (issue 29): weight of KL(the caption's ground-truth layout of each object word
        # || G's word attention) at every attentional stage, shapes data only (0 = off; supervised)
        "attention_layout": 0.0,
    },
    "style": {                     # style encoder S inverting G (GAN-INT-CLS), --stage style
        "batch_size": 32,
        "lr": 0.0002,
        "betas": [0.5, 0.999],
        "ndf": 32,
        "input_size": 64,
        "steps": 2000,
    },
    "vlm": {                       # VLMGAN matching-score block (--stage vlm) and G's VLM/VVM losses
        "checkpoint": None,        # vlm.pt from --stage vlm; needed when a lambda below is > 0
        "lambda_vlm": 0.0,         # text-visual matching loss weight in G (0 = off)
        "lambda_vvm": 0.0,         # visual-visual matching loss weight in G (0 = off)
        "dim": 128, "heads": 4, "layers": 2, "ffn": 256,
        "batch_size": 32,
        "lr": 0.0002,
        "betas": [0.9, 0.999],
        "steps": 1000,
    },
    "train": {
        "seed": 0,
        "log_every": 20,
        "checkpoint_every": 500,
        "sample_every": 500,       # sample grid with fixed noise and captions
        "grid_size": 16,
    },
}


def _merge(base: dict, override: dict, where: str) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{where}.{key}" if where else key
        if key not in base:
            raise ConfigError(f"unknown config key {path!r} (known: {sorted(base)})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} must be a mapping, got {value!r}")
            merged[key] = _merge(base[key], value, path)
        else:
            merged[key] = value
    return merged


def fill_defaults(config: dict, defaults: dict | None = None) -> dict:
    """A copy of ``config`` with every key it lacks taken from :data:`DEFAULTS` (recursively).

    Checkpoints written before a key existed (e.g. ``dataset.max_objects``) then load with that
    key's default, which is the behaviour they were trained with. Keys unknown to DEFAULTS are kept.
    """
    defaults = DEFAULTS if defaults is None else defaults
    filled = copy.deepcopy(config)
    for key, value in defaults.items():
        if key not in filled:
            filled[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(filled[key], dict):
            filled[key] = fill_defaults(filled[key], value)
    return filled


def merge_config(base: dict, override: dict) -> dict:
    """``base`` updated by the nested ``override`` (unknown keys raise :class:`ConfigError`)."""
    return _merge(base, override, "")


def parse_override(text: str) -> dict:
    """``section.key=value`` (value parsed as YAML) -> nested dict."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw)
    node: dict = {}
    root = node
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return root


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults <- YAML file <- ``section.key=value`` overrides. Unknown keys raise ConfigError."""
    config = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path) as handle:
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping")
        if is_original_config(loaded):  # the original AttnGAN's cfg/*.yml
            loaded = convert_original_config(loaded, source=str(path))
        config = _merge(config, loaded, "")
    for text in overrides:
        config = _merge(config, parse_override(text), "")
    return config
