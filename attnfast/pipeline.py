"""The whole training pipeline into one folder: DAMSM pretraining -> ``DIR/damsm.pt``, AttnGAN
training from those encoders -> ``DIR/gan.pt``, then (shapes dataset) the shapes evaluation ->
``DIR/eval.json``.

Run again on the same folder, it continues where it stopped: a finished DAMSM (its checkpoint's
step has reached ``damsm.steps``) is reused, an unfinished one resumed, then the GAN resumed the
same way. Each stage resumes exactly (checkpoints hold every RNG state), so the result equals an
uninterrupted run's. A checkpoint in the folder that cannot be this config's stage (another
vocabulary, encoder size, learning rate, ...) is refused with the differing values, never silently
replaced or continued.
"""
import logging
from pathlib import Path

import torch

from attnfast.engine import checkpoint as ckpt
from attnfast.metrics.shapes_eval import evaluate_checkpoint
from attnfast.trainer import common
from attnfast.trainer.damsm import train_damsm
from attnfast.trainer.gan import train_gan

LOG = logging.getLogger("attnfast")

# Config entries (whole sections or section.key) that decide what each stage computes.
STAGE_KEYS = {
    "damsm": ("dataset", "model.word_dim", "model.embedding_dim", "model.rnn_type", "model.rnn_dropout",
              "model.image_encoder", "model.small_encoder_width", "damsm", "train.seed"),
    "gan": ("dataset", "model", "damsm", "gan", "vlm", "train.seed"),
}
# Entries that do not: the stages' lengths (a longer run continues a shorter one), bookkeeping,
# and the path of initial weights (a resumed encoder no longer depends on it).
NOT_COMPARED = frozenset({"damsm.steps", "gan.steps", "dataset.num_workers", "model.inception_weights",
                          "train.log_every", "train.checkpoint_every", "train.sample_every", "train.grid_size"})


def stage_values(config: dict, kind: str) -> dict:
    """The ``section.key -> value`` entries of ``config`` that decide stage ``kind``'s result."""
    values = {}
    for entry in STAGE_KEYS[kind]:
        section, _, key = entry.partition(".")
        items = config[section].items() if not key else [(key, config[section][key])]
        values.update({f"{section}.{k}": v for k, v in items if f"{section}.{k}" not in NOT_COMPARED})
    return values


def config_differences(state: dict, config: dict, path: Path) -> list[str]:
    """How the checkpoint ``state`` (read from ``path``) differs from ``config`` in what decides its
    stage, one line per entry naming both values (the vocabulary too, for DAMSM); [] when it fits."""
    kind = state["kind"]
    saved, wanted = stage_values(state["config"], kind), stage_values(config, kind)
    lines = [f"{key}: {path.name} has {saved.get(key)!r}, the config asks for {value!r}"
             for key, value in wanted.items() if saved.get(key) != value]
    if kind == "damsm":
        saved_words = state["vocab"]["ixtoword"]
        words = common.build_vocabulary(config).to_dict()["ixtoword"]
        if saved_words != words:
            first = next((i for i, (a, b) in enumerate(zip(saved_words, words, strict=False)) if a != b),
                         min(len(saved_words), len(words)))
            lines.append(f"vocabulary: {path.name} has {len(saved_words) - 1} words, the config's data set "
                         f"{len(words) - 1} (first difference at index {first}: "
                         f"{_word(saved_words, first)} vs {_word(words, first)})")
    return lines


def _word(words: list, index: int) -> str:
    return repr(words[index]) if index < len(words) else "none"


def load_matching(path: Path, kind: str, config: dict) -> dict | None:
    """The ``kind`` checkpoint at ``path`` (None when there is none), checked against ``config``:
    a ValueError names every differing value."""
    if not path.is_file():
        return None
    state = ckpt.load(path, map_location="cpu", kind=kind)
    differences = config_differences(state, config, path)
    if differences:
        raise ValueError(f"{path} was written by a run with another config, so it can be neither reused "
                         "nor continued:\n  " + "\n  ".join(differences)
                         + f"\nUse another --out, move {path} away, or run the stages one by one (--stage).")
    return state


def _same_encoders(gan_state: dict, damsm_state: dict) -> bool:
    return all(gan_state[name].keys() == damsm_state[name].keys()
               and all(torch.equal(gan_state[name][k], damsm_state[name][k]) for k in damsm_state[name])
               for name in ("text_encoder", "image_encoder"))


def plan(config: dict, out_dir) -> str:
    """What :func:`run_pipeline` will do, with each part's configured length (printed first)."""
    out = Path(out_dir)
    lines = [f"the whole pipeline into {out}:",
             f"  1. DAMSM pretraining, damsm.steps={config['damsm']['steps']} -> {out / 'damsm.pt'}",
             f"  2. GAN training from it, gan.steps={config['gan']['steps']} -> {out / 'gan.pt'}"]
    if config["dataset"]["name"] == "shapes":
        lines.append(f"  3. shapes evaluation -> {out / 'eval.json'}")
    lines.append("Run it again on the same folder to continue after an interruption; "
                 "--stage damsm|gan runs one stage.")
    return "\n".join(lines)


def run_pipeline(config: dict, out_dir, device: torch.device, amp: str = "off", progress: bool = True,
                 speed=None) -> dict:
    """Run (or continue) DAMSM -> GAN -> shapes evaluation in ``out_dir``; returns a summary with
    ``damsm``, ``gan`` (the trainers' summaries; a reused DAMSM has ``"reused": True``) and, for the
    shapes dataset, ``eval`` (the report also written to ``out_dir/eval.json``).

    ``speed``: :class:`attnfast.trainer.speed.SpeedOptions` for both trainers (default: theirs)."""
    out = Path(out_dir)
    damsm_path, gan_path = out / "damsm.pt", out / "gan.pt"
    damsm_total, gan_total = int(config["damsm"]["steps"]), int(config["gan"]["steps"])
    LOG.info(plan(config, out))
    damsm_state = load_matching(damsm_path, "damsm", config)
    gan_state = load_matching(gan_path, "gan", config)

    if damsm_state is not None and damsm_state["step"] >= damsm_total:
        LOG.info(f"DAMSM: {damsm_path} is at step {damsm_state['step']} (damsm.steps={damsm_total}): "
                 "finished, reused")
        damsm = {"steps": 0, "reused": True, "checkpoint": str(damsm_path)}
    else:
        if gan_state is not None:
            at = "absent" if damsm_state is None else f"at step {damsm_state['step']}"
            raise ValueError(f"{gan_path} exists but {damsm_path} is {at}, short of damsm.steps={damsm_total}: "
                             "that GAN was trained on other DAMSM encoders. Move one of them away, or use "
                             "--stage to run a stage on its own.")
        if damsm_state is not None:
            LOG.info(f"DAMSM: resuming {damsm_path} from step {damsm_state['step']} of {damsm_total}")
        damsm = train_damsm(config, out, device, amp, resume=damsm_path if damsm_state is not None else None,
                            progress=progress, speed=speed)
        damsm_state = ckpt.load(damsm_path, map_location="cpu", kind="damsm")

    if gan_state is not None:
        if not _same_encoders(gan_state, damsm_state):
            raise ValueError(f"{gan_path} was trained on other DAMSM encoders than those of {damsm_path} "
                             f"(its record: {gan_state['damsm_checkpoint']}). Move one of them away, or use "
                             "--stage gan --resume to continue that GAN on its own.")
        done = "finished" if gan_state["step"] >= gan_total else "resuming"
        LOG.info(f"GAN: {gan_path} is at step {gan_state['step']} (gan.steps={gan_total}): {done}")
    del damsm_state
    gan = train_gan(config, out, device, damsm_path, amp, resume=gan_path if gan_state is not None else None,
                    progress=progress, speed=speed)
    del gan_state
    summary = {"damsm": damsm, "gan": gan}
    if config["dataset"]["name"] == "shapes":
        LOG.info(f"shapes evaluation of {gan_path} -> {out / 'eval.json'}")
        summary["eval"] = evaluate_checkpoint(gan_path, out / "eval.json", device=device)
    return summary
