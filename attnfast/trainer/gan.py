"""AttnGAN training (the original ``trainer.py``): conditioning augmentation + KL, a multi-stage
generator with word attention, one discriminator per stage with unconditional, sentence-conditional
and mismatched-caption terms, and the DAMSM loss from frozen encoders.

Faithful: Adam(0.5, 0.999) for G and every D, D steps then a G step per iteration, the G loss
sum_i (uncond + cond) + LAMBDA * (DAMSM word + sentence losses on the last stage) + KL, the
moving average of G's parameters (decay 0.999) used for samples. Discriminator outputs are taken
as logits with BCE-with-logits (same value as the original sigmoid + BCELoss, stable under AMP).
"""
import copy
import logging
from pathlib import Path

import torch

from attnfast import ops
from attnfast.data import collate_shapes
from attnfast.data.grid import save_image_grid
from attnfast.data.shapes_layout import CaptionLayout
from attnfast.engine import checkpoint as ckpt
from attnfast.models import D_NET, weights_init
from attnfast.models.build import build_generator, load_damsm_encoders, stage_resolutions
from attnfast.models.segments import batch_segments
from attnfast.models.text_encoding import encode_text
from attnfast.reference import kl_loss, matching_losses
from attnfast.reference.gan_regularizers import mode_seeking_loss
from . import common, distributed
from .batches import step_batches
from .distributed import rank_slice
from .gan_options import GANOptions
from .generator_extras import GeneratorExtras
from .speed import SpeedOptions

LOG = logging.getLogger("attnfast")


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
        self._pairs = None      # (model, its parameters and buffers, the average's): see _tensors

    def _tensors(self, model: torch.nn.Module) -> tuple[list, list, list, list]:
        """The parameter and buffer lists of ``model`` and of the average, listed once per model
        (walking the module tree every step cost ~0.3 ms on the demo's G)."""
        if self._pairs is None or self._pairs[0] is not model:
            ema_buffers, buffers = list(self.model.buffers()), list(model.buffers())
            if len(ema_buffers) != len(buffers):
                raise ValueError(f"EMA: the model has {len(buffers)} buffers, its average {len(ema_buffers)}")
            self._pairs = (model, list(self.model.parameters()), list(model.parameters()), ema_buffers, buffers)
        return self._pairs[1:]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        self.updates += 1
        ema_params, params, ema_buffers, buffers = self._tensors(model)
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)


def build_discriminators(config: dict, options: GANOptions | None = None) -> list:
    """One D per stage, initialised as the original (``weights_init``), then spectrally normalised
    when ``gan.spectral_norm`` is on (after the init: the parametrised weight is computed, so an
    in-place init of it would be lost)."""
    model = config["model"]
    options = options or GANOptions.from_config(config)
    netsD = [D_NET(res, ndf=model["df_dim"], nef=model["embedding_dim"], b_jcu=model["b_jcu"],
                   projection=options.projection) for res in stage_resolutions(config)]
    return [options.apply_spectral_norm(d.apply(weights_init)) for d in netsD]


class GANTrainer(common.StepLoop):
    kind = "gan"

    def __init__(self, config: dict, out_dir: str | Path, device: torch.device, damsm_path,
                 amp: str = "off", speed=None, dist=None):
        self.config, self.out_dir, self.device, self.amp = config, Path(out_dir), device, amp
        self.speed = (speed or SpeedOptions()).resolved(device, amp)
        if self.speed.channels_last and (speed is None or speed.channels_last is None):
            LOG.info("channels_last: NHWC weights and images (the default for bf16 on the CPU; "
                     "--no-channels-last for NCHW)")
        self.dist = dist or distributed.DistContext()
        self.is_main = self.dist.is_main
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.damsm_path = str(damsm_path)
        self.options = GANOptions.from_config(config)
        if self.options.mode_seeking > 0 and config["gan"]["batch_size"] // self.dist.world < 2:
            raise ValueError(f"gan.mode_seeking > 0 needs >= 2 images per rank: gan.batch_size "
                             f"{config['gan']['batch_size']} over {self.dist.world} ranks")
        self.text_encoder, self.image_encoder, self.vocab = load_damsm_encoders(damsm_path, config, device)
        self.netG = build_generator(config)
        self.netG.apply(weights_init)
        self.netG.to(device)
        self.netsD = [d.to(device) for d in build_discriminators(config, self.options)]
        self.netG, self.netsD = self.speed.prepare_models(self.netG, self.netsD, self.image_encoder, device,
                                                          self.dist)
        gan = config["gan"]
        self.optimizerG = self.speed.adam(self.netG.parameters(), gan["g_lr"], self.options.g_betas, device, amp)
        self.optimizersD = [self.speed.adam(d.parameters(), gan["d_lr"], self.options.d_betas, device, amp)
                            for d in self.netsD]
        self.ema = ParameterEMA(self.netG, gan["ema"])
        self.speed.compile_models(self.netG, self.netsD, self.image_encoder,
                                  compile_discriminators=not self.options.needs_double_backward)
        self.scaler, self.autocast = common.make_scaler_and_autocast(amp, device)
        self.step = 0
        self.resolutions = stage_resolutions(config)
        self.dataset = common.build_dataset(config, "train", self.resolutions, vocab=self.vocab)
        self.image_store = self.speed.image_store(self.dataset, device, config["dataset"]["num_workers"],
                                                  progress=self.is_main)
        self._fixed = None
        self.extras = GeneratorExtras(config, device, self.text_encoder)  # seed-paper terms, off by default
        # fp32 keeps the per-caption encoding (bit-identical results); autocast batches the misses
        self.text_cache = self.speed.text_cache(self.text_encoder, config["dataset"]["words_num"],
                                                batched=amp != "off")
        self.graphed = self.speed.graphed_step(self)

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
    def _text(self, captions, cap_lens, packed: bool = True):
        with torch.no_grad():
            words, sentence = encode_text(self.text_encoder, captions, cap_lens,
                                                 self.config["dataset"]["words_num"], packed=packed)
        return words.float(), sentence.float(), captions == 0

    def _d_scores(self, netD, real, fake, real_sentence, sentence):
        """One D's logits in its update: real_cond, fake_cond, wrong_cond (real image, next caption;
        B-1 rows), real_uncond, fake_uncond (None without the unconditional head), from real and fake
        (B, 3, r, r) and the sentences (B, E) (``real_sentence`` is ``sentence``, or its leaf copy for
        a gradient penalty).

        The original's five calls (trunk on real, on fake; conditional head on real, fake, mismatched)
        as two: the trunk once on [real; fake] and the head once on [real; fake; mismatched], each
        BatchNorm normalising every part with its own statistics (:mod:`attnfast.models.segments`),
        so the logits are the separate calls' up to the rounding of the batched convolutions. The
        speed option ``batched_d`` False runs the five calls."""
        size = real.shape[0]
        if not self.speed.batched_d:
            real_features = netD(self.options.augment_images(real))
            fake_features = netD(self.options.augment_images(fake))
            real_cond, real_uncond = self._d_logits(netD, real_features, real_sentence)
            fake_cond, fake_uncond = self._d_logits(netD, fake_features, sentence)
            wrong_cond = netD.COND_DNET(real_features[:size - 1], sentence[1:size], logits=True)
            return real_cond, fake_cond, wrong_cond, real_uncond, fake_uncond
        images = torch.cat([self.options.augment_images(real), self.options.augment_images(fake)])
        with batch_segments(netD, (size, size)):
            features = netD(images)                                       # (2B, ndf*8, 4, 4)
        codes, sentences, parts = features, torch.cat([real_sentence, sentence]), (size, size)
        if size > 1:
            codes = torch.cat([features, features[:size - 1]])            # + real image, next caption
            sentences = torch.cat([sentences, sentence[1:size]])
            parts = (size, size, size - 1)
        with batch_segments(netD.COND_DNET, parts):
            cond = netD.COND_DNET(codes, sentences, logits=True)          # (3B-1,)
        uncond = netD.UNCOND_DNET(features, logits=True) if netD.UNCOND_DNET is not None else None
        real_uncond, fake_uncond = (uncond[:size], uncond[size:]) if uncond is not None else (None, None)
        return cond[:size], cond[size:2 * size], cond[2 * size:], real_uncond, fake_uncond

    def _d_logits(self, netD, features, sentence):
        cond = netD.COND_DNET(features, sentence, logits=True)
        uncond = netD.UNCOND_DNET(features, logits=True) if netD.UNCOND_DNET is not None else None
        return cond, uncond

    def step_inputs(self, batch: dict) -> dict:
        """A collated batch as the step's inputs: captions (B, T) on the device, cap_lens and
        class_ids (B,) as given, reals [(B, 3, r, r)] on the device, and ``text`` = words (B, E, T),
        sentence (B, E) float32 and mask (B, T) bool, from the text cache when it is on."""
        captions = batch["captions"].to(self.device)
        reals = [self.speed.images_to_device(img, self.device) for img in batch["images"]]
        if self.text_cache is not None and "indices" in batch and "caption_indices" in batch:
            words, sentence = self.text_cache.lookup(batch["captions"], batch["cap_lens"], batch["indices"],
                                                     batch["caption_indices"])
            text = (words, sentence, captions == 0)
        else:
            text = self._text(captions, batch["cap_lens"])
        inputs = {"captions": captions, "cap_lens": batch["cap_lens"], "class_ids": batch["class_ids"],
                  "reals": reals, "text": text}
        if self.extras.layout > 0:
            inputs["layout"] = self._layout(batch)
        return inputs

    def _layout(self, batch: dict) -> CaptionLayout:
        """The ground-truth word layout of the batch's captions (gan.attention_layout): each caption's
        words as the text encoder sees them, and its scene from the shapes dataset."""
        if "indices" not in batch:
            raise ValueError("gan.attention_layout needs the batch's dataset indices (the shapes data)")
        tokens = [self.vocab.decode(row[:n].tolist()).split()
                  for row, n in zip(batch["captions"], batch["cap_lens"].tolist(), strict=True)]
        scenes = [self.dataset.scene_of(index) for index in batch["indices"].tolist()]   # drawn once per index
        return CaptionLayout(tokens, scenes)

    def draw_noise(self, size: int, out: torch.Tensor | None = None, width: int | None = None) -> torch.Tensor:
        """(size, width) standard normal noise (width: z_dim by default). With several ranks every
        rank draws the global batch's noise and keeps its rows, so the ranks' RNG states stay equal
        and together they use exactly the noise of one process on the global batch. ``out``
        (size * world, width) is filled in place (the CUDA-graph path)."""
        world = self.dist.world
        shape = (size * world, width or self.config["model"]["z_dim"])
        noise = out.normal_() if out is not None else torch.randn(shape, device=self.device)
        return noise[rank_slice(size * world, self.dist)] if world > 1 else noise

    def train_step(self, batch: dict) -> dict:
        """One D + G iteration on a collated batch; returns the losses (0-d tensors)."""
        if self.graphed is not None:
            return self.graphed(batch)
        return self.eager_step(batch)

    def flush_checks(self) -> None:
        if self.graphed is not None:
            self.graphed.flush_checks()

    def eager_step(self, batch: dict) -> dict:
        """The step op by op, each loss checked before its optimiser step (the original's order)."""
        inputs = self.step_inputs(batch)
        noise = self.draw_noise(inputs["captions"].shape[0])
        fakes, att_maps, mu, logvar, losses = self.d_step(inputs, noise, check=True)
        losses = self.g_step(inputs, noise, fakes, mu, logvar, losses, check=True, att_maps=att_maps)
        self.ema.update(self.netG)
        return {k: v.detach() for k, v in losses.items()}

    def d_step(self, inputs: dict, noise: torch.Tensor, check: bool = True):
        """G's forward and one update of every D (on the detached fakes). ``check`` reads the
        losses back before each optimiser step (host sync); the CUDA-graph path passes False and
        checks flags every N steps instead. Returns fakes, G's word attention of each attentional
        stage, mu, logvar and the D losses."""
        reals, (words, sentence, mask) = inputs["reals"], inputs["text"]
        size = noise.shape[0]
        self.netG.train()
        # several ranks: CA's noise too is the global batch's, sliced (else every rank drew the same)
        eps = self.draw_noise(size, width=self.config["model"]["condition_dim"]) if self.dist.enabled else None
        with self.autocast():
            fakes, att_maps, mu, logvar = self.netG(noise, sentence, words, mask, eps=eps)

        losses = {}
        options = self.options
        penalty = options.needs_double_backward
        for i, (netD, optD) in enumerate(zip(self.netsD, self.optimizersD, strict=True)):
            netD.requires_grad_(True)
            real = reals[i].detach().requires_grad_(True) if penalty else reals[i]
            real_sentence = sentence.detach().requires_grad_(True) if penalty else sentence
            with self.autocast():
                real_cond, fake_cond, wrong_cond, real_uncond, fake_uncond = self._d_scores(
                    netD, real, fakes[i].detach(), real_sentence, sentence)
            errD = options.d_loss(real_cond, fake_cond, wrong_cond, real_uncond, fake_uncond,
                                  one_call=self.speed.batched_d)
            if penalty:
                gp = options.gradient_penalty(real, real_sentence, real_cond, real_uncond, self.scaler)
                losses[f"gp{i}"] = gp
                errD = errD + gp
            losses[f"errD{i}"] = errD
            if check:
                common.check_finite({f"errD{i}": errD}, self.step + 1)
            optD.zero_grad(set_to_none=True)
            self.scaler.scale(errD).backward()
            distributed.average_gradients(netD.parameters(), self.dist)
            self.scaler.step(optD)
        return fakes, att_maps, mu, logvar, losses

    def g_step(self, inputs: dict, noise, fakes, mu, logvar, losses: dict, check: bool = True,
               att_maps=None) -> dict:
        """G's update against the (updated) discriminators plus DAMSM and KL terms; returns ``losses``
        with the G terms added. The words loss is ops.damsm_scores + the matching cross-entropies
        (ops.words_loss without its attention maps, which training never reads)."""
        gan, damsm = self.config["gan"], self.config["damsm"]
        reals, (words, sentence, mask) = inputs["reals"], inputs["text"]
        cap_lens, class_ids = inputs["cap_lens"], inputs["class_ids"]
        size = noise.shape[0]
        for netD in self.netsD:
            netD.requires_grad_(False)
        labels = torch.arange(size, device=self.device)
        errG = 0.0
        with self.autocast():
            for i, netD in enumerate(self.netsD):
                cond, uncond = self._d_logits(netD, netD(self.options.augment_images(fakes[i])), sentence)
                adv = self.options.g_adv_loss(cond, uncond)
                losses[f"g_adv{i}"] = adv
                errG = errG + adv
            regions, image_code = self.image_encoder(fakes[-1])
        regions, image_code = regions.float(), image_code.float()
        scores = ops.damsm_scores(regions, words, cap_lens, damsm["gamma1"], damsm["gamma2"]) * damsm["gamma3"]
        w0, w1 = matching_losses(scores, labels, class_ids)
        s0, s1 = ops.sent_loss(image_code, sentence, labels, class_ids, size, gamma3=damsm["gamma3"])
        kl = kl_loss(mu.float(), logvar.float())
        losses.update({"w_loss": (w0 + w1) * gan["lambda"], "s_loss": (s0 + s1) * gan["lambda"], "kl": kl})
        errG = errG + losses["w_loss"] + losses["s_loss"] + kl
        if self.options.mode_seeking > 0:
            losses["mode_seeking"] = self.options.mode_seeking * self._mode_seeking(noise, fakes, inputs)
            errG = errG + losses["mode_seeking"]
        extra = self.extras.terms(self, noise, fakes, reals, words, sentence, mask, cap_lens, class_ids,
                                  regions, image_code, att_maps, inputs.get("layout"))
        for name, value in extra.items():
            losses[name] = value
            errG = errG + value
        losses["errG"] = errG
        if check:
            common.check_finite({"errG": errG, "kl": kl}, self.step + 1)
        self.optimizerG.zero_grad(set_to_none=True)
        self.scaler.scale(errG).backward()
        distributed.average_gradients(self.netG.parameters(), self.dist)
        self.scaler.step(self.optimizerG)
        self.scaler.update()
        if self.dist.enabled:  # BatchNorm statistics follow rank 0 (DDP's broadcast_buffers)
            for model in [self.netG, *self.netsD]:
                distributed.broadcast_module(model, self.dist, buffers_only=True)
        return losses

    def _mode_seeking(self, noise, fakes, inputs) -> torch.Tensor:
        """MSGAN's term: the first ceil(B/2) captions (at least 2: G's BatchNorm needs two) drawn
        again with fresh z (and CA noise) and compared with their images of this step (last stage)."""
        words, sentence, mask = inputs["text"]
        half = min(noise.shape[0], max(2, (noise.shape[0] + 1) // 2))
        fresh = self.draw_noise(half)
        eps = self.draw_noise(half, width=self.config["model"]["condition_dim"]) if self.dist.enabled else None
        with self.autocast():
            again, _, _, _ = self.netG(fresh, sentence[:half], words[:half], mask[:half], eps=eps)
        return mode_seeking_loss(fakes[-1][:half], again[-1], noise[:half], fresh)

    # ------------------------------------------------------------------ samples
    def fixed_inputs(self):
        """Fixed captions (the first test scenes) and noise for the progress grids."""
        if self._fixed is None:
            count = self.config["train"]["grid_size"]
            test = common.build_dataset(self.config, "test", (self.resolutions[0],), vocab=self.vocab)
            batch = collate_shapes([test[i] for i in range(count)])
            generator = torch.Generator().manual_seed(self.config["train"]["seed"] + 12345)
            noise = torch.randn(count, self.config["model"]["z_dim"], generator=generator)
            texts = [test[i]["caption_text"] for i in range(count)]
            self._fixed = (batch["captions"], batch["cap_lens"], noise, texts)
        return self._fixed

    @torch.no_grad()
    def on_sample(self, step: int) -> None:
        captions, cap_lens, noise, texts = self.fixed_inputs()
        words, sentence, mask = self._text(captions.to(self.device), cap_lens)
        devices_rng = torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])
        with devices_rng:  # sampling must not shift the training RNG (exact resume)
            torch.manual_seed(0)
            fakes, _, _, _ = self.ema.model(noise.to(self.device), sentence, words, mask)
        save_image_grid(fakes[-1].float().cpu(), self.out_dir / "samples" / f"step_{step:07d}.png",
                        ncol=4, captions=texts)

    def batches(self):
        return step_batches(self.dataset, self.config["gan"]["batch_size"], self.config["train"]["seed"],
                            self.step, collate_shapes, self.config["dataset"]["num_workers"], dist=self.dist,
                            pin_memory=self.device.type == "cuda", store=self.image_store)


def train_gan(config: dict, out_dir, device, damsm_path, amp="off", resume=None, steps=None,
              progress=True, speed=None, dist=None) -> dict:
    """Run (or resume) AttnGAN training to ``steps`` (default gan.steps); returns a summary.

    ``speed``: :class:`attnfast.trainer.speed.SpeedOptions` (graphs, compile, text cache, ...);
    ``dist``: the :class:`attnfast.trainer.distributed.DistContext` of a torchrun launch (every rank
    loads ``resume``; only rank 0 writes)."""
    torch.manual_seed(config["train"]["seed"])
    if resume is not None:
        state = ckpt.load(resume, map_location=device, kind="gan")
        damsm_path = damsm_path or state["damsm_checkpoint"]
    if damsm_path is None:
        raise ValueError("GAN training needs the DAMSM encoders: pass --damsm CKPT (from --stage damsm)")
    trainer = GANTrainer(config, out_dir, device, damsm_path, amp, speed=speed, dist=dist)
    if resume is not None:
        trainer.load_state_dict(state)
    total = int(steps if steps is not None else config["gan"]["steps"])
    summary = trainer.run(trainer.batches(), total, progress=progress)
    summary["checkpoint"] = str(trainer.checkpoint_path())
    return summary
