"""The original AttnGAN's ``cfg/*.yml`` files (``bird_attn2.yml``, ``coco_attn2.yml``,
``DAMSM/bird.yml``, ...) mapped onto attnfast's config keys.

An original file is recognised by its upper-case top-level keys (``CONFIG_NAME``, ``TREE``, ...).
It is read as the original reads it: merged into the original's defaults (``miscc/config.py``),
unknown keys refused (all their dotted names in one :class:`ConfigError`), then mapped:

===============================  ==============================================================
original                         attnfast
===============================  ==============================================================
CONFIG_NAME                      name
DATASET_NAME, DATA_DIR           dataset.name (birds | coco), dataset.data_dir ('' -> unset;
                                 relative paths stay relative to the working directory, as in
                                 the original, which runs from ``code/``)
WORKERS                          dataset.num_workers
RNN_TYPE                         model.rnn_type
TREE.BRANCH_NUM                  model.branch_num (GAN file); DAMSM file: damsm.image_size =
TREE.BASE_SIZE                   BASE_SIZE * 2 ** (BRANCH_NUM - 1) (299)
TRAIN.BATCH_SIZE                 gan.batch_size (GAN file) or damsm.batch_size (DAMSM file)
TRAIN.MAX_EPOCH                  gan.steps / damsm.steps = MAX_EPOCH * (train images // batch)
TRAIN.SNAPSHOT_INTERVAL          train.checkpoint_every = interval (epochs) * steps per epoch
TRAIN.GENERATOR_LR, ..._LR       gan.g_lr, gan.d_lr; TRAIN.ENCODER_LR -> damsm.lr
TRAIN.RNN_GRAD_CLIP              damsm.rnn_grad_clip
TRAIN.SMOOTH.GAMMA1/2/3, LAMBDA  damsm.gamma1/2/3, gan.lambda
GAN.DF_DIM, GF_DIM, Z_DIM,       model.df_dim, gf_dim, z_dim, condition_dim, r_num
CONDITION_DIM, R_NUM
TEXT.EMBEDDING_DIM,              model.embedding_dim, dataset.captions_per_image,
CAPTIONS_PER_IMAGE, WORDS_NUM    dataset.words_num
===============================  ==============================================================

Always set: ``model.image_encoder = "inception"`` (the original's CNN_ENCODER) and
``model.mask_mode = "attngan"`` (the original's attention masking, so results match it).

A file is a DAMSM file (``pretrain_DAMSM.py``) when its CONFIG_NAME is ``DAMSM`` or its
TREE.BASE_SIZE is not 64; otherwise a GAN file (``main.py``). Keys specific to the other script
are mapped only when the file sets them; the file's own script's keys take the original's defaults
when absent. Epochs become steps with the train split sizes of the original's data (birds 8,855
images, COCO 82,783).

Accepted with no effect (attnfast takes them from the command line): ``GPU_ID``, ``CUDA``
(``--device``), ``TRAIN.FLAG`` (``--stage`` / ``python -m attnfast.sample``), ``TRAIN.NET_G``
(``--resume`` or the sampler's checkpoint), ``TRAIN.NET_E`` (``--damsm``), ``TRAIN.B_NET_D``,
``B_VALIDATION`` (evaluation is ``python -m attnfast.eval``). Refused by value: ``GAN.B_DCGAN: True``
(the original's G_DCGAN is not implemented) and ``GAN.B_ATTENTION: False``.
"""
from __future__ import annotations

import copy
import logging

from attnfast.config_errors import ConfigError

__all__ = [
    "NO_EFFECT_KEYS",
    "ORIGINAL_DEFAULTS",
    "TRAIN_IMAGES",
    "convert_original_config",
    "is_original_config",
]

# The original's miscc/config.py defaults.
ORIGINAL_DEFAULTS: dict = {
    "DATASET_NAME": "birds", "CONFIG_NAME": "", "DATA_DIR": "", "GPU_ID": 0, "CUDA": True,
    "WORKERS": 6, "RNN_TYPE": "LSTM", "B_VALIDATION": False,
    "TREE": {"BRANCH_NUM": 3, "BASE_SIZE": 64},
    "TRAIN": {"BATCH_SIZE": 64, "MAX_EPOCH": 600, "SNAPSHOT_INTERVAL": 2000,
              "DISCRIMINATOR_LR": 2e-4, "GENERATOR_LR": 2e-4, "ENCODER_LR": 2e-4,
              "RNN_GRAD_CLIP": 0.25, "FLAG": True, "NET_E": "", "NET_G": "", "B_NET_D": True,
              "SMOOTH": {"GAMMA1": 5.0, "GAMMA3": 10.0, "GAMMA2": 5.0, "LAMBDA": 1.0}},
    "GAN": {"DF_DIM": 64, "GF_DIM": 128, "Z_DIM": 100, "CONDITION_DIM": 100, "R_NUM": 2,
            "B_ATTENTION": True, "B_DCGAN": False},
    "TEXT": {"CAPTIONS_PER_IMAGE": 10, "EMBEDDING_DIM": 256, "WORDS_NUM": 18},
}

# Images in the train split of the original's metadata (filenames.pickle).
TRAIN_IMAGES = {"birds": 8855, "coco": 82783}

# Accepted, no effect: what to use instead.
NO_EFFECT_KEYS = {"GPU_ID": "--device", "CUDA": "--device", "B_VALIDATION": "python -m attnfast.eval",
                  "TRAIN.FLAG": "--stage / python -m attnfast.sample",
                  "TRAIN.NET_G": "--resume or the sampler's checkpoint", "TRAIN.NET_E": "--damsm",
                  "TRAIN.B_NET_D": "--stage"}
log = logging.getLogger("attnfast.config")

BOTH, GAN, DAMSM = ("gan", "damsm"), ("gan",), ("damsm",)
# (original dotted key, attnfast dotted key, the scripts it applies to)
_DIRECT = (
    ("CONFIG_NAME", "name", BOTH),
    ("DATASET_NAME", "dataset.name", BOTH),
    ("WORKERS", "dataset.num_workers", BOTH),
    ("RNN_TYPE", "model.rnn_type", BOTH),
    ("TEXT.EMBEDDING_DIM", "model.embedding_dim", BOTH),
    ("TEXT.CAPTIONS_PER_IMAGE", "dataset.captions_per_image", BOTH),
    ("TEXT.WORDS_NUM", "dataset.words_num", BOTH),
    ("TRAIN.SMOOTH.GAMMA1", "damsm.gamma1", BOTH),
    ("TRAIN.SMOOTH.GAMMA2", "damsm.gamma2", BOTH),
    ("TRAIN.SMOOTH.GAMMA3", "damsm.gamma3", BOTH),
    ("TRAIN.ENCODER_LR", "damsm.lr", DAMSM),
    ("TRAIN.RNN_GRAD_CLIP", "damsm.rnn_grad_clip", DAMSM),
    ("TRAIN.GENERATOR_LR", "gan.g_lr", GAN),
    ("TRAIN.DISCRIMINATOR_LR", "gan.d_lr", GAN),
    ("TRAIN.SMOOTH.LAMBDA", "gan.lambda", GAN),
    ("GAN.DF_DIM", "model.df_dim", GAN),
    ("GAN.GF_DIM", "model.gf_dim", GAN),
    ("GAN.Z_DIM", "model.z_dim", GAN),
    ("GAN.CONDITION_DIM", "model.condition_dim", GAN),
    ("GAN.R_NUM", "model.r_num", GAN),
)


def is_original_config(loaded) -> bool:
    """Whether a loaded YAML mapping is an original AttnGAN config (upper-case top-level keys)."""
    return (isinstance(loaded, dict) and bool(loaded)
            and all(isinstance(k, str) and k.isupper() for k in loaded))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _check_value(path: str, default, value, source: str) -> None:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (isinstance(value, int) or isinstance(default, float))
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{source}: {path} must be a {type(default).__name__}, got {value!r}")


def _set(out: dict, dotted: str, value) -> None:
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def convert_original_config(loaded: dict, source: str = "<config>") -> dict:
    """An attnfast override mapping (for :func:`attnfast.config.merge_config`) from an original
    AttnGAN config mapping; see the module docstring for the mapping. Raises
    :class:`ConfigError` naming every unknown key, or a value attnfast cannot honour."""
    defaults = _flatten(ORIGINAL_DEFAULTS)
    given = _flatten(loaded)
    sections = {k.rsplit(".", 1)[0] for k in defaults if "." in k}
    unknown = [k for k in given if k not in defaults]
    shadowed = [k for k in given if k in sections]  # a section given as a scalar
    if unknown or shadowed:
        raise ConfigError(f"{source}: unknown keys in an original AttnGAN config: "
                          f"{sorted(unknown + shadowed)}")
    for key, value in given.items():
        _check_value(key, defaults[key], value, source)
    cfg = {**defaults, **given}
    ignored = [f"{k} ({NO_EFFECT_KEYS[k]})" for k in NO_EFFECT_KEYS if cfg[k] != defaults[k]]
    if ignored:
        log.warning("%s: keys without effect in attnfast (use instead): %s", source, ", ".join(ignored))

    dataset = cfg["DATASET_NAME"]
    if dataset not in TRAIN_IMAGES:
        raise ConfigError(f"{source}: DATASET_NAME {dataset!r} is not supported (birds or coco)")
    if not cfg["GAN.B_ATTENTION"]:
        raise ConfigError(f"{source}: GAN.B_ATTENTION: False (a generator without attention) is "
                          f"not supported by attnfast")
    if cfg["GAN.B_DCGAN"]:
        raise ConfigError(f"{source}: GAN.B_DCGAN: True (the original's G_DCGAN) is not implemented")
    kind = "damsm" if (str(cfg["CONFIG_NAME"]).upper() == "DAMSM"
                       or cfg["TREE.BASE_SIZE"] != 64) else "gan"

    out: dict = {"model": {"image_encoder": "inception", "mask_mode": "attngan"}}
    for original, ours, kinds in _DIRECT:
        if kind in kinds or original in given:
            _set(out, ours, cfg[original])
    if not cfg["CONFIG_NAME"]:
        _set(out, "name", f"{dataset}_{kind}")
    if cfg["DATA_DIR"]:
        _set(out, "dataset.data_dir", cfg["DATA_DIR"])

    batch = int(cfg["TRAIN.BATCH_SIZE"])
    if batch < 1:
        raise ConfigError(f"{source}: TRAIN.BATCH_SIZE must be >= 1, got {batch}")
    per_epoch = max(1, TRAIN_IMAGES[dataset] // batch)
    _set(out, f"{kind}.batch_size", batch)
    _set(out, f"{kind}.steps", int(cfg["TRAIN.MAX_EPOCH"]) * per_epoch)
    _set(out, "train.checkpoint_every", max(1, int(cfg["TRAIN.SNAPSHOT_INTERVAL"]) * per_epoch))
    if kind == "damsm":
        _set(out, "damsm.image_size", int(cfg["TREE.BASE_SIZE"]) * 2 ** (int(cfg["TREE.BRANCH_NUM"]) - 1))
    else:
        _set(out, "model.branch_num", cfg["TREE.BRANCH_NUM"])
    return copy.deepcopy(out)
