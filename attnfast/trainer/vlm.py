"""Pretraining of VLMGAN's matching-score block (``python -m attnfast.train --stage vlm --damsm
runs/shapes/damsm.pt``): the block learns S_general on real pairs with the DAMSM encoders frozen.

Each step: the batch's real images (damsm.image_size) and captions through the frozen encoders;
positives (image b, caption b), negatives (image b, caption pi(b)) for a random permutation pi of
the batch that moves every caption to an image of another class (same-class pairs are not
negatives, as DAMSM excludes them). Loss: BCE-with-logits, mean over the positives plus mean over
the negatives. The checkpoint ``vlm.pt`` (kind "vlm") also holds the encoders, vocabulary and
config, so ``python -m attnfast.eval --checkpoint vlm.pt --vlms`` reads it directly.
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from attnfast.data import collate_shapes
from attnfast.engine import checkpoint as ckpt
from attnfast.models.build import load_damsm_encoders
from attnfast.models.text_encoding import encode_text
from attnfast.models.vlmgan import build_matching_block, mismatched_order
from . import common
from .batches import step_batches
from .stages import run_dependent_stage


class VLMTrainer(common.StepLoop):
    kind = "vlm"

    def __init__(self, config: dict, out_dir, device: torch.device, damsm_path, amp: str = "off"):
        self.config, self.out_dir, self.device, self.amp = config, Path(out_dir), device, amp
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.damsm_path = str(damsm_path)
        self.text_encoder, self.image_encoder, self.vocab = load_damsm_encoders(damsm_path, config, device)
        self.msb = build_matching_block(config).to(device)
        vlm = config["vlm"]
        self.optimizer = torch.optim.Adam(self.msb.parameters(), lr=vlm["lr"], betas=tuple(vlm["betas"]))
        self.scaler, self.autocast = common.make_scaler_and_autocast(amp, device)
        self.step = 0
        self.dataset = common.build_dataset(config, "train", (config["damsm"]["image_size"],))

    def state_dict(self) -> dict:
        return {"msb": self.msb.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "vocab": self.vocab.to_dict(),
                "text_encoder": self.text_encoder.state_dict(),
                "image_encoder": self.image_encoder.state_dict(),
                "damsm_checkpoint": self.damsm_path, "amp": self.amp}

    def load_state_dict(self, state: dict) -> None:
        self.msb.load_state_dict(state["msb"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])

    @torch.no_grad()
    def features(self, images, captions, cap_lens):
        """Frozen-encoder features: regions (B, E, h, w), code (B, E), words (B, E, T),
        sentence (B, E) as float32, and the word mask (B, T) bool."""
        regions, code = self.image_encoder(images.to(self.device))
        captions = captions.to(self.device)
        words, sentence = encode_text(self.text_encoder, captions, cap_lens,
                                             self.config["dataset"]["words_num"])
        return regions.float(), code.float(), words.float(), sentence.float(), captions == 0

    def train_step(self, batch: dict) -> dict:
        regions, code, words, sentence, mask = self.features(batch["images"][-1], batch["captions"],
                                                             batch["cap_lens"])
        order, usable = mismatched_order(batch["class_ids"])
        self.msb.train()
        with self.autocast():
            positive = self.msb(regions, code, words, sentence, mask).float()
            negative = self.msb(regions, code, words[order], sentence[order], mask[order]).float()
        loss_pos = F.binary_cross_entropy_with_logits(positive, torch.ones_like(positive))
        usable = usable.to(self.device)
        neg_terms = F.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative), reduction="none")
        loss_neg = (neg_terms * usable).sum() / usable.sum().clamp(min=1)
        loss = loss_pos + loss_neg
        common.check_finite({"vlm_loss": loss}, self.step + 1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            accuracy = ((positive > 0).float().mean() + ((negative < 0).float() * usable).sum()
                        / usable.sum().clamp(min=1)) / 2
        return {"vlm_loss": loss.detach(), "pos_loss": loss_pos.detach(), "neg_loss": loss_neg.detach(),
                "pair_accuracy": accuracy}

    def batches(self):
        return step_batches(self.dataset, self.config["vlm"]["batch_size"], self.config["train"]["seed"],
                            self.step, collate_shapes, self.config["dataset"]["num_workers"])


def train_vlm(config: dict, out_dir, device, damsm_path, amp="off", resume=None, steps=None,
              progress=True) -> dict:
    """Run (or resume) matching-block pretraining to ``steps`` (default vlm.steps); returns a summary."""
    return run_dependent_stage(VLMTrainer, config, out_dir, device, damsm_path, source_key="damsm_checkpoint",
                               missing="the matching block is trained on the DAMSM encoders: pass "
                                       "--damsm CKPT",
                               amp=amp, resume=resume, steps=steps, progress=progress)
