"""AttnGAN training (the original ``trainer.py``): conditioning augmentation + KL, a multi-stage
generator with word attention, one discriminator per stage with unconditional, sentence-conditional
and mismatched-caption terms, and the DAMSM loss from frozen encoders.

Faithful: Adam(0.5, 0.999) for G and every D, D steps then a G step per iteration, the G loss
sum_i (uncond + cond) + LAMBDA * (DAMSM word + sentence losses on the last stage) + KL, the
moving average of G's parameters (decay 0.999) used for samples. Discriminator outputs are taken
as logits with BCE-with-logits (same value as the original sigmoid + BCELoss, stable under AMP).
"""
import copy
from pathlib import Path

import torch

from attnfast import ops
from attnfast.engine import checkpoint as ckpt
from attnfast.reference import discriminator_loss_from_logits, generator_adv_loss_from_logits, kl_loss
from . import common
from .batches import step_batches


class ParameterEMA:
    """Exponential moving average of a model's parameters (buffers copied as they are).

    The decay warms up as min(decay, (1 + t) / (10 + t)) over the t updates so far, so that a short
    run's average is not dominated by the initial weights; after a few thousand steps it is the
    original's constant 0.999.
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)


def load_damsm_encoders(path, config: dict, device: torch.device):
    """The frozen text and image encoders (eval mode, no grad) and vocabulary of a DAMSM checkpoint."""
    from attnfast.data import Vocabulary
    state = ckpt.load(path, map_location=device, kind="damsm")
    vocab = Vocabulary.from_dict(state["vocab"])
    text_encoder = common.build_text_encoder(state["config"], len(vocab))
    image_encoder = common.build_image_encoder(state["config"])
    text_encoder.load_state_dict(state["text_encoder"])
    image_encoder.load_state_dict(state["image_encoder"])
    for model in (text_encoder, image_encoder):
        model.to(device).eval().requires_grad_(False)
    if state["config"]["model"]["embedding_dim"] != config["model"]["embedding_dim"]:
        raise ValueError(f"{path}: the DAMSM encoders have embedding_dim "
                         f"{state['config']['model']['embedding_dim']}, the config asks for "
                         f"{config['model']['embedding_dim']}")
    return text_encoder, image_encoder, vocab


def build_generator(config: dict):
    from attnfast.models import G_NET
    model = config["model"]
    return G_NET(ngf=model["gf_dim"], nef=model["embedding_dim"], ncf=model["condition_dim"],
                 z_dim=model["z_dim"], branch_num=model["branch_num"], r_num=model["r_num"],
                 mask_mode=model["mask_mode"])


def build_discriminators(config: dict) -> list:
    from attnfast.models import D_NET
    model = config["model"]
    return [D_NET(res, ndf=model["df_dim"], nef=model["embedding_dim"], b_jcu=model["b_jcu"])
            for res in common.stage_resolutions(config)]


class GANTrainer(common.StepLoop):
    kind = "gan"

    def __init__(self, config: dict, out_dir: str | Path, device: torch.device, damsm_path,
                 amp: str = "off"):
        from attnfast.models import weights_init
        self.config, self.out_dir, self.device, self.amp = config, Path(out_dir), device, amp
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.damsm_path = str(damsm_path)
        self.text_encoder, self.image_encoder, self.vocab = load_damsm_encoders(damsm_path, config, device)
        self.netG = build_generator(config)
        self.netG.apply(weights_init)
        self.netG.to(device)
        self.netsD = [d.apply(weights_init).to(device) for d in build_discriminators(config)]
        gan = config["gan"]
        betas = tuple(gan["betas"])
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=gan["g_lr"], betas=betas)
        self.optimizersD = [torch.optim.Adam(d.parameters(), lr=gan["d_lr"], betas=betas) for d in self.netsD]
        self.ema = ParameterEMA(self.netG, gan["ema"])
        self.scaler, self.autocast = common.make_scaler_and_autocast(amp, device)
        self.step = 0
        self.resolutions = common.stage_resolutions(config)
        self.dataset = common.build_dataset(config, "train", self.resolutions)
        self._fixed = None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"netG": self.netG.state_dict(), "netG_ema": self.ema.model.state_dict(),
                "ema_updates": self.ema.updates,
                "netsD": [d.state_dict() for d in self.netsD],
                "optimizerG": self.optimizerG.state_dict(),
                "optimizersD": [o.state_dict() for o in self.optimizersD],
                "scaler": self.scaler.state_dict(), "vocab": self.vocab.to_dict(),
                "text_encoder": self.text_encoder.state_dict(),
                "image_encoder": self.image_encoder.state_dict(),
                "damsm_checkpoint": self.damsm_path, "amp": self.amp}

    def load_state_dict(self, state: dict) -> None:
        self.netG.load_state_dict(state["netG"])
        self.ema.model.load_state_dict(state["netG_ema"])
        self.ema.updates = int(state["ema_updates"])
        for d, s in zip(self.netsD, state["netsD"], strict=True):
            d.load_state_dict(s)
        self.optimizerG.load_state_dict(state["optimizerG"])
        for o, s in zip(self.optimizersD, state["optimizersD"], strict=True):
            o.load_state_dict(s)
        self.scaler.load_state_dict(state["scaler"])
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.image_encoder.load_state_dict(state["image_encoder"])
        self.step = int(state["step"])
        ckpt.set_rng_state(state["rng"])

    # ------------------------------------------------------------------ one step
    def _text(self, captions, cap_lens):
        with torch.no_grad():
            words, sentence = common.encode_text(self.text_encoder, captions, cap_lens,
                                                 self.config["dataset"]["words_num"])
        return words.float(), sentence.float(), captions == 0

    def _d_logits(self, netD, features, sentence):
        cond = netD.COND_DNET(features, sentence, logits=True)
        uncond = netD.UNCOND_DNET(features, logits=True) if netD.UNCOND_DNET is not None else None
        return cond, uncond

    def train_step(self, batch: dict) -> dict:
        gan, damsm = self.config["gan"], self.config["damsm"]
        captions = batch["captions"].to(self.device)
        cap_lens = batch["cap_lens"]
        class_ids = batch["class_ids"]
        reals = [img.to(self.device, non_blocking=True) for img in batch["images"]]
        size = captions.shape[0]
        words, sentence, mask = self._text(captions, cap_lens)
        noise = torch.randn(size, self.config["model"]["z_dim"], device=self.device)
        self.netG.train()
        with self.autocast():
            fakes, _, mu, logvar = self.netG(noise, sentence, words, mask)

        losses = {}
        for i, (netD, optD) in enumerate(zip(self.netsD, self.optimizersD)):
            netD.requires_grad_(True)
            with self.autocast():
                real_features = netD(reals[i])
                fake_features = netD(fakes[i].detach())
                real_cond, real_uncond = self._d_logits(netD, real_features, sentence)
                fake_cond, fake_uncond = self._d_logits(netD, fake_features, sentence)
                wrong_cond = netD.COND_DNET(real_features[:size - 1], sentence[1:size], logits=True)
            errD = discriminator_loss_from_logits(real_cond, fake_cond, wrong_cond, real_uncond, fake_uncond)
            losses[f"errD{i}"] = errD
            common.check_finite({f"errD{i}": errD}, self.step + 1)
            optD.zero_grad(set_to_none=True)
            self.scaler.scale(errD).backward()
            self.scaler.step(optD)

        for netD in self.netsD:
            netD.requires_grad_(False)
        labels = torch.arange(size, device=self.device)
        errG = 0.0
        with self.autocast():
            for i, netD in enumerate(self.netsD):
                cond, uncond = self._d_logits(netD, netD(fakes[i]), sentence)
                adv = generator_adv_loss_from_logits(cond, uncond)
                losses[f"g_adv{i}"] = adv
                errG = errG + adv
            regions, image_code = self.image_encoder(fakes[-1])
        regions, image_code = regions.float(), image_code.float()
        w0, w1, _ = ops.words_loss(regions, words, labels, cap_lens, class_ids, size,
                                   damsm["gamma1"], damsm["gamma2"], damsm["gamma3"])
        s0, s1 = ops.sent_loss(image_code, sentence, labels, class_ids, size, gamma3=damsm["gamma3"])
        kl = kl_loss(mu.float(), logvar.float())
        losses.update({"w_loss": (w0 + w1) * gan["lambda"], "s_loss": (s0 + s1) * gan["lambda"], "kl": kl})
        errG = errG + losses["w_loss"] + losses["s_loss"] + kl
        losses["errG"] = errG
        common.check_finite({"errG": errG, "kl": kl}, self.step + 1)
        self.optimizerG.zero_grad(set_to_none=True)
        self.scaler.scale(errG).backward()
        self.scaler.step(self.optimizerG)
        self.scaler.update()
        self.ema.update(self.netG)
        return {k: v.detach() for k, v in losses.items()}

    # ------------------------------------------------------------------ samples
    def fixed_inputs(self):
        """Fixed captions (the first test scenes) and noise for the progress grids."""
        if self._fixed is None:
            from attnfast.data import collate_shapes
            count = self.config["train"]["grid_size"]
            test = common.build_dataset(self.config, "test", (self.resolutions[0],))
            batch = collate_shapes([test[i] for i in range(count)])
            generator = torch.Generator().manual_seed(self.config["train"]["seed"] + 12345)
            noise = torch.randn(count, self.config["model"]["z_dim"], generator=generator)
            texts = [test[i]["caption_text"] for i in range(count)]
            self._fixed = (batch["captions"], batch["cap_lens"], noise, texts)
        return self._fixed

    @torch.no_grad()
    def on_sample(self, step: int) -> None:
        from attnfast.data.grid import save_image_grid
        captions, cap_lens, noise, texts = self.fixed_inputs()
        words, sentence, mask = self._text(captions.to(self.device), cap_lens)
        devices_rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with devices_rng:  # sampling must not shift the training RNG (exact resume)
            torch.manual_seed(0)
            fakes, _, _, _ = self.ema.model(noise.to(self.device), sentence, words, mask)
        save_image_grid(fakes[-1].float().cpu(), self.out_dir / "samples" / f"step_{step:07d}.png",
                        ncol=4, captions=texts)

    def batches(self):
        from attnfast.data import collate_shapes
        return step_batches(self.dataset, self.config["gan"]["batch_size"], self.config["train"]["seed"],
                            self.step, collate_shapes, self.config["dataset"]["num_workers"])


def train_gan(config: dict, out_dir, device, damsm_path, amp="off", resume=None, steps=None,
              progress=True) -> dict:
    """Run (or resume) AttnGAN training to ``steps`` (default gan.steps); returns a summary."""
    torch.manual_seed(config["train"]["seed"])
    if resume is not None:
        state = ckpt.load(resume, map_location=device, kind="gan")
        damsm_path = damsm_path or state["damsm_checkpoint"]
    if damsm_path is None:
        raise ValueError("GAN training needs the DAMSM encoders: pass --damsm CKPT (from --stage damsm)")
    trainer = GANTrainer(config, out_dir, device, damsm_path, amp)
    if resume is not None:
        trainer.load_state_dict(state)
    total = int(steps if steps is not None else config["gan"]["steps"])
    summary = trainer.run(trainer.batches(), total, progress=progress)
    summary["checkpoint"] = str(trainer.checkpoint_path())
    return summary
