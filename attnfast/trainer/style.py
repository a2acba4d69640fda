"""Style-encoder training (GAN-INT-CLS, Sec. 4.4): S learns to invert a trained, frozen generator,
L_style = E_{t, z ~ N(0, I)} ||z - S(G(z, phi(t)))||_2^2 (mean over the batch, summed over z's
dimensions divided by z_dim, i.e. ``F.mse_loss``), on the training captions.

``python -m attnfast.train --stage style --gan runs/shapes/gan.pt --out runs/shapes`` writes
``style.pt`` (kind "style"), which ``python -m attnfast.sample --style-from IMAGE`` reads.
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from attnfast.data import collate_shapes
from attnfast.engine import checkpoint as ckpt
from attnfast.models.build import build_style_encoder, load_generator
from attnfast.models.text_encoding import generate
from . import common
from .batches import step_batches
from .stages import run_dependent_stage


class StyleTrainer(common.StepLoop):
    kind = "style"

    def __init__(self, config: dict, out_dir, device: torch.device, gan_path, amp: str = "off"):
        self.out_dir, self.device, self.amp = Path(out_dir), device, amp
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.gan_path = str(gan_path)
        self.netG, self.text_encoder, self.vocab, gan_config = load_generator(gan_path, device)
        self.netG.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        # the generator's own model/dataset settings; the style section from the given config
        self.config = {**gan_config, "style": config["style"], "train": config["train"]}
        self.encoder = build_style_encoder(self.config).to(device)
        style = config["style"]
        self.optimizer = torch.optim.Adam(self.encoder.parameters(), lr=style["lr"], betas=tuple(style["betas"]))
        self.scaler, self.autocast = common.make_scaler_and_autocast(amp, device)
        self.step = 0
        self.dataset = common.build_dataset(self.config, "train", (64,))

    def state_dict(self) -> dict:
        return {"style_encoder": self.encoder.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "gan_checkpoint": self.gan_path, "amp": self.amp}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["style_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])

    @torch.no_grad()
    def generated(self, batch: dict):
        """(B, z_dim) noise and G's last-stage images (B, 3, S, S) for the batch's captions."""
        captions = batch["captions"]
        noise = torch.randn(captions.shape[0], self.config["model"]["z_dim"], device=self.device)
        fakes, _ = generate(self.netG, self.text_encoder, captions, batch["cap_lens"], noise,
                            self.config["dataset"]["words_num"], self.amp)
        return noise, fakes[-1]

    def train_step(self, batch: dict) -> dict:
        noise, images = self.generated(batch)
        self.encoder.train()
        with self.autocast():
            predicted = self.encoder(images)
        loss = F.mse_loss(predicted.float(), noise)
        common.check_finite({"style_loss": loss}, self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"style_loss": loss.detach()}

    def batches(self):
        return step_batches(self.dataset, self.config["style"]["batch_size"], self.config["train"]["seed"],
                            self.step, collate_shapes, self.config["dataset"]["num_workers"])


def train_style(config: dict, out_dir, device, gan_path, amp="off", resume=None, steps=None,
                progress=True) -> dict:
    """Run (or resume) style-encoder training to ``steps`` (default style.steps); returns a summary."""
    return run_dependent_stage(StyleTrainer, config, out_dir, device, gan_path, source_key="gan_checkpoint",
                               missing="style training inverts a trained generator: pass --gan CKPT "
                                       "(from --stage gan)",
                               amp=amp, resume=resume, steps=steps, progress=progress)
