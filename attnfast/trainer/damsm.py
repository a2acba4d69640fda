"""DAMSM pretraining (the original ``pretrain_DAMSM.py``): a text encoder and an image encoder
trained with the word-level and sentence-level matching losses.

Faithful: Adam(lr, betas (0.5, 0.999)), gradient clipping of the RNN at ``rnn_grad_clip``,
lr *= 0.98 per epoch while lr > lr0 / 10, same-class pairs excluded from the negatives. One
deviation: the original builds a new Adam every epoch (resetting its moments); here one optimiser
lives through the run and only its learning rate follows the schedule.
"""
from pathlib import Path

import torch

from attnfast import ops
from attnfast.data import collate_shapes
from attnfast.engine import checkpoint as ckpt
from attnfast.models.build import build_image_encoder, build_text_encoder
from attnfast.models.text_encoding import encode_text
from . import common
from .batches import step_batches, steps_per_epoch
from .speed import SpeedOptions


def damsm_lr(config: dict, epoch: int) -> float:
    damsm = config["damsm"]
    lr = damsm["lr"]
    for _ in range(epoch):
        if lr <= damsm["lr"] / 10.0:
            break
        lr *= damsm["lr_decay"]
    return lr


class DAMSMTrainer(common.StepLoop):
    kind = "damsm"

    def __init__(self, config: dict, out_dir: str | Path, device: torch.device, amp: str = "off", speed=None):
        """``speed``: :class:`attnfast.trainer.speed.SpeedOptions`; only its dataset-on-device fields
        apply here (the training images on the device, see :mod:`attnfast.data.device_store`)."""
        self.config, self.out_dir, self.device, self.amp = config, Path(out_dir), device, amp
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.vocab = common.build_vocabulary(config)
        self.text_encoder = build_text_encoder(config, len(self.vocab)).to(device)
        self.image_encoder = build_image_encoder(config).to(device)
        params = [p for m in (self.text_encoder, self.image_encoder) for p in m.parameters()
                  if p.requires_grad]
        damsm = config["damsm"]
        # issue 27: fused under autocast (rounds differently: ~3e-8), else foreach (bit-identical)
        fast = {"fused": True} if amp != "off" else {"foreach": True}
        self.optimizer = torch.optim.Adam(params, lr=damsm["lr"], betas=tuple(damsm["betas"]), **fast)
        self.scaler, self.autocast = common.make_scaler_and_autocast(amp, device)
        self.step = 0
        self.dataset = common.build_dataset(config, "train", (damsm["image_size"],), vocab=self.vocab)
        self.per_epoch = steps_per_epoch(len(self.dataset), damsm["batch_size"])
        self.image_store = (speed or SpeedOptions()).image_store(self.dataset, device,
                                                                  config["dataset"]["num_workers"])

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"text_encoder": self.text_encoder.state_dict(),
                "image_encoder": self.image_encoder.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "vocab": self.vocab.to_dict(), "amp": self.amp}

    def load_state_dict(self, state: dict) -> None:
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.image_encoder.load_state_dict(state["image_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict) -> dict:
        damsm = self.config["damsm"]
        epoch = self.step // self.per_epoch
        for group in self.optimizer.param_groups:
            group["lr"] = damsm_lr(self.config, epoch)
        self.text_encoder.train()
        self.image_encoder.train()
        images = batch["images"][-1].to(self.device, non_blocking=True)
        captions = batch["captions"].to(self.device)
        cap_lens = batch["cap_lens"]
        class_ids = batch["class_ids"]
        size = captions.shape[0]
        labels = torch.arange(size, device=self.device)
        with self.autocast():
            regions, image_code = self.image_encoder(images)          # (B, E, h, w), (B, E)
            words, sentence = encode_text(self.text_encoder, captions, cap_lens,
                                                 self.config["dataset"]["words_num"])
        regions, image_code, words, sentence = (t.float() for t in (regions, image_code, words, sentence))
        w0, w1, _ = ops.words_loss(regions, words, labels, cap_lens, class_ids, size,
                                   damsm["gamma1"], damsm["gamma2"], damsm["gamma3"])
        s0, s1 = ops.sent_loss(image_code, sentence, labels, class_ids, size, gamma3=damsm["gamma3"])
        losses = {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1}
        common.check_finite(losses, self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(w0 + w1 + s0 + s1).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.text_encoder.parameters(), damsm["rnn_grad_clip"], foreach=True)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {k: v.detach() for k, v in losses.items()}

    def batches(self):
        return step_batches(self.dataset, self.config["damsm"]["batch_size"],
                            self.config["train"]["seed"], self.step, _collate(),
                            self.config["dataset"]["num_workers"], store=self.image_store)


def _collate():
    return collate_shapes


def train_damsm(config: dict, out_dir, device, amp="off", resume=None, steps=None,
                progress=True, speed=None) -> dict:
    """Run (or resume) DAMSM pretraining to ``steps`` (default damsm.steps); returns a summary.
    ``speed``: see :class:`DAMSMTrainer`."""
    torch.manual_seed(config["train"]["seed"])
    trainer = DAMSMTrainer(config, out_dir, device, amp, speed=speed)
    if resume is not None:
        trainer.load_state_dict(ckpt.load(resume, map_location=device, kind="damsm"))
    total = int(steps if steps is not None else config["damsm"]["steps"])
    summary = trainer.run(trainer.batches(), total, progress=progress)
    summary["checkpoint"] = str(trainer.checkpoint_path())
    return summary
