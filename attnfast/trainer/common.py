"""Pieces shared by the DAMSM and GAN trainers: builders from the config, the step loop with
logging, finite-loss checks and checkpoints."""
import json
import time
from pathlib import Path

import torch

from attnfast.engine import amp as amp_lib
from attnfast.engine import checkpoint as ckpt
from attnfast.engine.progress import progress_bar


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or inf; the run stops before the weights are touched."""


def pick_device(name: str | None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but CUDA is not available")
    return device


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


DATASETS = ("shapes", "birds", "coco", "folder")


def build_dataset(config: dict, split: str, resolutions: tuple[int, ...], vocab=None):
    """The ``split`` of ``dataset.name``; ``vocab`` (e.g. a DAMSM checkpoint's) encodes the
    captions of birds/coco/folder (default: the data set's own; shapes' vocabulary is fixed)."""
    from attnfast.data import ShapesDataset
    data = config["dataset"]
    if data["name"] in ("birds", "coco"):
        from attnfast.data.attngan_layout import AttnGANDataset
        return AttnGANDataset(data["data_dir"], data["name"], split, multi_res=resolutions,
                              words_num=data["words_num"], captions_per_image=data["captions_per_image"],
                              vocab=vocab, strict=data["strict"], seed=data["seed"])
    if data["name"] == "folder":
        from attnfast.data.caption_folder import CaptionFolderDataset
        return CaptionFolderDataset(data["data_dir"], split, multi_res=resolutions,
                                    words_num=data["words_num"], vocab=vocab, strict=data["strict"],
                                    seed=data["seed"])
    if data["name"] != "shapes":
        raise ValueError(f"dataset.name must be one of {DATASETS}, got {data['name']!r}")
    size = data["train_size"] if split == "train" else data["test_size"]
    return ShapesDataset(size, resolution=max(resolutions), seed=data["seed"],
                         captions_per_image=data["captions_per_image"], words_num=data["words_num"],
                         split=split, multi_res=resolutions, max_objects=data["max_objects"],
                         grid=data["grid"])


def build_vocabulary(config: dict):
    """The vocabulary of ``dataset.name`` (birds/coco: captions.pickle's, built and saved when
    absent; folder: built from the training captions)."""
    from attnfast.data import shapes_vocabulary
    data = config["dataset"]
    if data["name"] in ("birds", "coco"):
        from attnfast.data.attngan_layout import attngan_vocabulary
        return attngan_vocabulary(data["data_dir"], data["name"], data["captions_per_image"], data["strict"])
    if data["name"] == "folder":
        from attnfast.data.caption_folder import folder_vocabulary
        return folder_vocabulary(data["data_dir"], data["strict"])
    return shapes_vocabulary()


def build_text_encoder(config: dict, vocab_size: int):
    from attnfast.models import RNN_ENCODER
    model = config["model"]
    return RNN_ENCODER(vocab_size, ninput=model["word_dim"], drop_prob=model["rnn_dropout"],
                       nhidden=model["embedding_dim"], rnn_type=model["rnn_type"],
                       n_steps=config["dataset"]["words_num"])


def build_image_encoder(config: dict):
    from attnfast.models import image_encoder
    model = config["model"]
    kind = model["image_encoder"]
    if kind == "inception":
        return image_encoder(kind, nef=model["embedding_dim"], weights_path=model["inception_weights"])
    return image_encoder(kind, nef=model["embedding_dim"], ndf=model["small_encoder_width"],
                         regions=model["small_encoder_regions"])


def encode_text(text_encoder, captions: torch.Tensor, cap_lens: torch.Tensor, words_num: int,
                packed: bool = True):
    """words (B, E, words_num) padded to the fixed length, sentence (B, E). ``packed=False`` runs
    the RNN unpacked over the padded batch (static shapes, no host sync; CUDA-graph capturable)."""
    hidden = text_encoder.init_hidden(captions.shape[0])
    return text_encoder(captions, cap_lens, hidden, total_length=words_num, packed=packed)


def check_finite(losses: dict, step: int) -> None:
    """Raise :class:`NonFiniteLoss` naming the first non-finite loss (one host sync per call)."""
    values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
    if bool(torch.isfinite(values).all()):
        return
    for name, value in losses.items():
        if not torch.isfinite(value.detach()).all():
            raise NonFiniteLoss(f"loss {name!r} is {float(value.detach())} at step {step}; stopping. The last "
                                f"good checkpoint is kept.")


class JsonLog:
    """Losses and metrics as JSON lines, appended (a resumed run continues the same file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as stream:
            stream.write(json.dumps(record) + "\n")


class StepLoop:
    """The loop both trainers share: batches by step, finite checks, logs, checkpoints, samples.

    A trainer provides ``kind``, ``config``, ``out_dir``, ``step``, ``train_step(batch) -> dict of
    loss tensors`` (checked before its optimiser steps), ``state_dict()`` and ``on_sample(step)``.
    A trainer may set ``is_main`` False (a data-parallel rank other than 0: it writes no checkpoint,
    log or sample) and override ``flush_checks()`` (called before every log and checkpoint: a step
    that defers its finite checks, the CUDA-graph path, raises there).
    """

    kind = "base"
    is_main = True

    def flush_checks(self) -> None:
        pass

    def checkpoint_path(self) -> Path:
        return self.out_dir / f"{self.kind}.pt"

    def save(self) -> Path:
        self.flush_checks()
        if not self.is_main:
            return self.checkpoint_path()
        state = self.state_dict()
        state.update({"format": "attnfast", "kind": self.kind, "step": self.step,
                      "config": self.config, "rng": ckpt.rng_state()})
        return ckpt.save_atomic(state, self.checkpoint_path())

    def run(self, batches, total_steps: int, progress: bool = True) -> dict:
        train = self.config["train"]
        log = JsonLog(self.out_dir / f"{self.kind}_log.jsonl")
        last: dict = {}
        started, first_step = time.perf_counter(), self.step
        bar = progress_bar(total=total_steps, initial=self.step, desc=self.kind,
                           disable=not (progress and self.is_main), dynamic_ncols=True)
        while self.step < total_steps:
            batch = next(batches)
            losses = self.train_step(batch)
            self.step += 1
            bar.update(1)
            if self.step % train["log_every"] == 0 or self.step == total_steps:
                self.flush_checks()
                last = {k: float(v) for k, v in losses.items()}
                rate = (self.step - first_step) / max(time.perf_counter() - started, 1e-9)
                if self.is_main:
                    log.write({"step": self.step, **last, "steps_per_s": rate, "time": time.time()})
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(last.items())[:4]})
            if self.step % train["checkpoint_every"] == 0 or self.step == total_steps:
                self.save()
            if self.is_main and (self.step % train["sample_every"] == 0 or self.step == total_steps):
                self.on_sample(self.step)
        bar.close()
        elapsed = time.perf_counter() - started
        return {"steps": self.step - first_step, "seconds": elapsed,
                "steps_per_s": (self.step - first_step) / max(elapsed, 1e-9), "last_losses": last}

    def on_sample(self, step: int) -> None:
        pass


def make_scaler_and_autocast(amp_mode: str, device: torch.device):
    amp_lib.amp_dtype(amp_mode)
    return amp_lib.grad_scaler(amp_mode, device), (lambda: amp_lib.autocast(amp_mode, device))
