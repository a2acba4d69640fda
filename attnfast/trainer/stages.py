"""Launching a training stage that builds on an earlier stage's checkpoint (the style encoder on a
GAN, the VLMGAN matching block on the DAMSM encoders): seed, resume, run, summary."""
import torch

from attnfast.engine import checkpoint as ckpt


def run_dependent_stage(trainer_cls, config: dict, out_dir, device, source, *, source_key: str,
                        missing: str, amp="off", resume=None, steps=None, progress=True) -> dict:
    """Train ``trainer_cls(config, out_dir, device, source, amp)`` (a common.StepLoop) to ``steps``
    (default config[kind]["steps"]); on resume, ``source`` defaults to the checkpoint's
    ``source_key`` entry. ``missing`` is the error when no source is given. Returns the summary."""
    kind = trainer_cls.kind
    torch.manual_seed(config["train"]["seed"])
    state = None
    if resume is not None:
        state = ckpt.load(resume, map_location=device, kind=kind)
        source = source or state[source_key]
    if source is None:
        raise ValueError(missing)
    trainer = trainer_cls(config, out_dir, device, source, amp)
    if state is not None:
        trainer.load_state_dict(state)
    total = int(steps if steps is not None else config[kind]["steps"])
    summary = trainer.run(trainer.batches(), total, progress=progress)
    summary["checkpoint"] = str(trainer.checkpoint_path())
    return summary
