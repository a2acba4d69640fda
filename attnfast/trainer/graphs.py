"""``--graphs``: the GAN step as two CUDA graphs (issue 8).

After ``warmup`` eager steps (on a side stream, as CUDA-graph capture needs) the step is captured
once and replayed for every later batch of the same shapes:

- graph 1, "D step": noise drawn inside the graph into a static buffer, the text encoder run
  unpacked on the padded captions (``RNN_ENCODER(packed=False)``: static shapes, no host read of the
  lengths) unless the text cache supplies the features, G's forward, and every D's update;
- graph 2, "G step": G's losses against the updated Ds, DAMSM and KL terms, G's backward and update,
  the EMA of G's parameters (its decay is a device scalar filled on the host before each replay).

Both graphs share one memory pool, so graph 2's backward reads the activations graph 1 saved, as
``torch.cuda.make_graphed_callables`` does. Inputs are copied into static buffers (fixed batch,
captions padded to WORDS_NUM with the padding mask ``captions == 0``). The optimisers are
``torch.optim.Adam(capturable=True, fused=True)`` (see :mod:`attnfast.trainer.speed`). Nothing in
the step reads a device value on the host: each loss's "was non-finite" flag is OR-ed on the device
and read back by :meth:`GraphedGANStep.flush_checks`, which the step loop calls before every log
line and checkpoint (every ``train.log_every`` steps), so a NaN stops the run before it is saved.

Fallbacks, each logged once and never a wrong result: no CUDA device, ``--amp fp16`` (its
GradScaler reads found-inf on the host), several ranks (the all-reduce is not captured), optional
generator terms (``gan.int_weight`` etc.), the training options DiffAugment, gradient penalty and
mode seeking (``gan.diffaugment``, ``gan.gp``, ``gan.mode_seeking``; hinge loss, spectral norm and
TTUR betas are captured), or a failing capture run the ordinary eager step; a batch
whose shapes differ from the captured ones (a smaller last batch) runs eagerly and the graphs stay
for the next batch of the captured shapes.
"""
import logging

import torch

from . import common

LOG = logging.getLogger("attnfast")


def run_blockers(trainer) -> list[str]:
    """Why this run's step cannot be captured at all ([] when it can)."""
    reasons = []
    if trainer.device.type != "cuda":
        reasons.append(f"CUDA graphs need a CUDA device, this run is on {trainer.device}")
    if trainer.amp == "fp16":
        reasons.append("--amp fp16's GradScaler reads found-inf on the host every step (use --amp bf16)")
    if trainer.dist.enabled:
        reasons.append(f"the gradient all-reduce of {trainer.dist.world} ranks is not captured")
    extras = trainer.extras
    if any(getattr(extras, name, 0) for name in ("int_weight", "colour", "grounding", "layout", "lambda_vlm", "lambda_vvm")):
        reasons.append("the optional generator terms (gan.int_weight, gan.colour_consistency, "
                       "gan.attention_grounding, gan.attention_layout, vlm.*) "
                       "are not captured")
    uncaptured = trainer.options.uncapturable
    if uncaptured:
        reasons.append(f"the training options {', '.join(uncaptured)} are not captured")
    return reasons


def batch_shapes(batch: dict) -> tuple:
    """The shapes a captured step is specialised to: captions (B, T) and every image (B, 3, r, r)."""
    return (tuple(batch["captions"].shape),) + tuple(tuple(img.shape) for img in batch["images"])


class GraphedGANStep:
    """The GAN trainer's step on static buffers, captured as two CUDA graphs after warm-up.

    Args:
        trainer: a :class:`attnfast.trainer.gan.GANTrainer` (its ``eager_step`` is the fallback).
        warmup: eager static-buffer steps before the capture (>= 1: the optimisers' state must exist).
        capture: False runs the static-buffer step eagerly forever (what the CPU tests check against
            the ordinary step; the captured graphs replay exactly these kernels).
    Calling it with a collated batch runs one training step and returns the losses as 0-d float32
    views of a static device buffer (valid until the next step).
    """

    def __init__(self, trainer, warmup: int = 3, capture: bool = True):
        if warmup < 1:
            raise ValueError(f"graph warm-up must be >= 1 step (the optimisers' state is created there), got {warmup}")
        self.trainer, self.warmup, self.capture = trainer, int(warmup), capture
        self.blockers = run_blockers(trainer) if capture else []
        self.static: dict | None = None
        self.shapes: tuple | None = None
        self.graphs = None
        self.static_steps = 0
        self.use_cache = False
        self._held = None
        self._pending: list[int] = []
        self._logged: set[str] = set()

    # ------------------------------------------------------------------ public
    def __call__(self, batch: dict) -> dict:
        if self.capture and self.blockers:
            self._log_once("run", f"attnfast: --graphs falls back to eager: {self.blockers[0]}")
            return self.trainer.eager_step(batch)
        if self.static is None:
            self._allocate(batch)
        if batch_shapes(batch) != self.shapes:
            self._log_once("shape", f"attnfast: --graphs: a batch of shapes {batch_shapes(batch)} differs from "
                                    f"the captured {self.shapes}; such batches run eagerly")
            self.flush_checks()
            return self.trainer.eager_step(batch)
        self._fill(batch)
        if not self.capture:
            self._run_eager()
        elif self.graphs is None and self.static_steps < self.warmup:
            self._run_side_stream()
        elif self.graphs is None and not self._capture():
            return self.trainer.eager_step(batch)
        else:
            self._replay()
        self.static_steps += 1
        self._pending.append(self.trainer.step + 1)
        self.trainer.ema.updates += 1
        return self.static["loss_views"]

    def flush_checks(self) -> None:
        """Read the non-finite flags of the steps since the last check (one host sync)."""
        if not self._pending or self.static is None:
            return
        first, last = self._pending[0], self._pending[-1]
        self._pending = []
        bad = self.static["bad"].cpu()
        if bool(bad.any()):
            names = [n for n, b in zip(self.static["names"], bad.tolist(), strict=True) if b]
            self.static["bad"].zero_()
            raise common.NonFiniteLoss(
                f"loss {names[0]!r} became non-finite between steps {first} and {last} (with --graphs the "
                f"losses are checked every train.log_every steps; non-finite: {', '.join(names)}); stopping. "
                f"The last good checkpoint is kept.")

    # ------------------------------------------------------------------ buffers
    def _allocate(self, batch: dict) -> None:
        trainer, device = self.trainer, self.trainer.device
        size = batch["captions"].shape[0]
        st = {
            "captions": torch.zeros_like(batch["captions"], device=device),
            "cap_lens": torch.ones(size, dtype=torch.long, device=device),
            "class_ids": torch.zeros(size, dtype=torch.long, device=device),
            "reals": [torch.zeros_like(img, device=device) for img in batch["images"]],
            "noise": torch.zeros(size * trainer.dist.world, trainer.config["model"]["z_dim"], device=device),
            "ema_weight": torch.zeros((), device=device),
        }
        if trainer.speed.channels_last_on(device):
            st["reals"] = [r.contiguous(memory_format=torch.channels_last) for r in st["reals"]]
        # the cache needs the dataset's keys in the batch (collate_shapes gives them)
        self.use_cache = (trainer.text_cache is not None and "indices" in batch and "caption_indices" in batch)
        if self.use_cache:
            width = trainer.text_cache.entry_bytes // 4 // (trainer.text_cache.words_num + 1)
            st["words"] = torch.zeros(size, width, batch["captions"].shape[1], device=device)
            st["sentence"] = torch.zeros(size, width, device=device)
        self.static, self.shapes = st, batch_shapes(batch)

    def _fill(self, batch: dict) -> None:
        st, trainer = self.static, self.trainer
        if self.use_cache:
            words, sentence = trainer.text_cache.lookup(batch["captions"], batch["cap_lens"], batch["indices"],
                                                        batch["caption_indices"])
            st["words"].copy_(words)
            st["sentence"].copy_(sentence)
        else:  # checked here on the host copy: inside the graph the encoder cannot read values back
            trainer.text_encoder._validate(batch["captions"].cpu(), batch["cap_lens"].cpu(),
                                           trainer.config["dataset"]["words_num"])
        st["captions"].copy_(batch["captions"], non_blocking=True)
        st["cap_lens"].copy_(batch["cap_lens"], non_blocking=True)
        st["class_ids"].copy_(batch["class_ids"], non_blocking=True)
        for static, image in zip(st["reals"], batch["images"], strict=True):
            static.copy_(image, non_blocking=True)
        ema = trainer.ema
        st["ema_weight"].fill_(1.0 - min(ema.decay, (1.0 + ema.updates) / (10.0 + ema.updates)))

    # ------------------------------------------------------------------ the two halves
    def _d_half(self) -> None:
        trainer, st = self.trainer, self.static
        noise = trainer.draw_noise(st["captions"].shape[0], out=st["noise"])
        if self.use_cache:
            text = (st["words"], st["sentence"], st["captions"] == 0)
        else:
            text = trainer._text(st["captions"], st["cap_lens"], packed=False)
        inputs = {"captions": st["captions"], "cap_lens": st["cap_lens"], "class_ids": st["class_ids"],
                  "reals": st["reals"], "text": text}
        fakes, _, mu, logvar, losses = trainer.d_step(inputs, noise, check=False)
        self._held = (inputs, noise, fakes, mu, logvar, losses)

    def _g_half(self) -> None:
        trainer, st = self.trainer, self.static
        inputs, noise, fakes, mu, logvar, losses = self._held
        losses = trainer.g_step(inputs, noise, fakes, mu, logvar, losses, check=False)
        with torch.no_grad():
            for ema_p, p in zip(trainer.ema.model.parameters(), trainer.netG.parameters(), strict=True):
                ema_p.lerp_(p, st["ema_weight"])
            for ema_b, b in zip(trainer.ema.model.buffers(), trainer.netG.buffers(), strict=True):
                ema_b.copy_(b)
            values = torch.stack([v.detach().float().reshape(()) for v in losses.values()])
            if "losses" not in st:  # first static step: the loss buffers and their names
                st["names"] = list(losses)
                st["losses"] = torch.zeros_like(values)
                st["bad"] = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
                st["loss_views"] = {n: st["losses"][i] for i, n in enumerate(st["names"])}
            st["losses"].copy_(values)
            st["bad"].logical_or_(~torch.isfinite(values))

    # ------------------------------------------------------------------ running
    def _run_eager(self) -> None:
        self._d_half()
        self._g_half()
        self._held = None

    def _run_side_stream(self) -> None:
        stream = torch.cuda.Stream(self.trainer.device)
        stream.wait_stream(torch.cuda.current_stream(self.trainer.device))
        with torch.cuda.stream(stream):
            self._run_eager()
        torch.cuda.current_stream(self.trainer.device).wait_stream(stream)

    def _capture(self) -> bool:
        """Capture both halves (nothing runs); on failure drop the graphs and return False (the
        reason becomes a blocker, logged once by the next call)."""
        trainer = self.trainer
        torch.cuda.synchronize(trainer.device)
        for optimizer in [trainer.optimizerG, *trainer.optimizersD]:
            optimizer.zero_grad(set_to_none=True)
        pool = torch.cuda.graph_pool_handle()
        graph_d, graph_g = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        LOG.info("attnfast: --graphs: capturing the D step and the G step (batch shapes %s)", self.shapes)
        try:
            with torch.cuda.graph(graph_d, pool=pool):
                self._d_half()
            with torch.cuda.graph(graph_g, pool=pool):
                self._g_half()
        except Exception as exc:  # noqa: BLE001 - a non-capturable op: eager from now on
            self._held = None
            torch.cuda.synchronize(trainer.device)
            self.blockers.append(f"the capture failed ({type(exc).__name__}: {exc})")
            return False
        self.graphs = (graph_d, graph_g)
        return True                      # the caller replays: capturing runs nothing

    def _replay(self) -> None:
        graph_d, graph_g = self.graphs
        graph_d.replay()
        graph_g.replay()

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged:
            self._logged.add(key)
            LOG.warning(message)
