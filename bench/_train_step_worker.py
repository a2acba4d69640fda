"""One training step of ``python -m attnfast.train``'s defaults, timed on request: the worker process of
``bench/train_bench.py --config`` (issue 27's side-by-side of two source trees).

    python bench/_train_step_worker.py --stage gan|damsm --config YAML --out DIR [--damsm CKPT] [--set K=V ...]

It imports whichever ``attnfast`` comes first on ``PYTHONPATH`` (the tree under test) and builds the
trainer exactly as that tree's ``python -m attnfast.train --config YAML --stage STAGE`` would (its
CLI parser's defaults: amp, speed options), so each tree runs its own defaults. Then it answers one
JSON request per stdin line with one JSON line on stdout:

    {"cmd": "info"}             amp, batch size, torch threads, seconds to build the trainer (with its
                                pre-rendered image store where the tree's defaults build one)
    {"cmd": "time", "steps": K} seconds of K training steps, each ``next(batches)`` + ``train_step``
                                (the loop of StepLoop.run without its logging)
    {"cmd": "parts", "steps": K} milliseconds per step of each part (wall clock around the trainer's
                                modules, backward calls and optimiser steps; see ``_Parts``)
    {"cmd": "flops"}            model FLOPs of one step (FlopCounterMode: convolutions and matmuls,
                                forward and backward)
    {"cmd": "quit"}

Only APIs that exist in the trees compared are used (the trainers, ``attnfast.train``'s parser).
"""
import argparse
import json
import sys
import time
from collections import defaultdict

import torch


class _Parts:
    """Wall-clock milliseconds of a step's parts, by wrapping (CPU: ops run synchronously):

    gan: data (``next(batches)``), inputs (text encoder or cache, images to the device), G forward,
    D{i} forward in the D step and in G's step (trunk and heads), D{i} backward (its loss's
    backward), image encoder forward, G backward (errG's backward: through the Ds, the image
    encoder and G), optimisers (every ``step``), EMA, and "losses and rest" (the remainder).
    damsm: data, image encoder forward, text encoder forward, backward, optimiser (clip + step),
    and the remainder (losses).
    """

    def __init__(self, trainer, stage: str):
        self.trainer, self.stage = trainer, stage
        self.totals = defaultdict(float)
        self.phase = "d"
        self.backward_calls = 0
        self._restore = []

    def _wrap(self, owner, name, label_fn):
        original = getattr(owner, name)
        totals = self.totals

        def wrapped(*args, **kwargs):
            label = label_fn()
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start
        setattr(owner, name, wrapped)
        self._restore.append((owner, name, original))

    def __enter__(self):
        t = self.trainer
        if self.stage == "gan":
            self._wrap(t, "step_inputs", lambda: "inputs (text, images)")
            self._wrap(t.netG, "forward", lambda: "G forward")
            for i, d in enumerate(t.netsD):
                for module in (d, d.COND_DNET, d.UNCOND_DNET):
                    if module is not None:
                        self._wrap(module, "forward",
                                   lambda i=i: f"D{i} forward ({'D step' if self.phase == 'd' else 'G step'})")
            self._wrap(t.image_encoder, "forward", lambda: "image encoder forward")
            self._wrap(t.ema, "update", lambda: "EMA")
            for opt in [t.optimizerG, *t.optimizersD]:
                self._wrap(opt, "step", lambda: "optimisers")
            self._wrap(t, "d_step", lambda: "_d_step")
            self._wrap(t, "g_step", lambda: "_g_step")
            original_d, original_g = t.d_step, t.g_step

            def d_step(*a, **k):
                self.phase, self.backward_calls = "d", 0
                return original_d(*a, **k)

            def g_step(*a, **k):
                self.phase = "g"
                return original_g(*a, **k)
            t.d_step, t.g_step = d_step, g_step
        else:
            self._wrap(t.image_encoder, "forward", lambda: "image encoder forward")
            self._wrap(t.text_encoder, "forward", lambda: "text encoder forward")
            self._wrap(t.optimizer, "step", lambda: "optimiser (clip + step)")
            self._wrap(torch.nn.utils, "clip_grad_norm_", lambda: "optimiser (clip + step)")
        self._wrap(torch.Tensor, "backward", self._backward_label)
        return self

    def _backward_label(self):
        if self.stage != "gan":
            return "backward"
        if self.phase == "g":
            return "G backward (through Ds, image encoder, G)"
        label = f"D{self.backward_calls} backward"
        self.backward_calls += 1
        return label

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._restore):
            if isinstance(owner, type) or owner is torch.nn.utils:
                setattr(owner, name, original)
            else:
                delattr(owner, name) if name in vars(owner) else setattr(owner, name, original)
        t = self.trainer
        for name in ("d_step", "g_step"):
            if name in vars(t):
                delattr(t, name)


def known_keys_only(config_path: str, out: str) -> tuple[str, list[str]]:
    """The config file without the keys this tree's defaults lack (an option added after it: the tree
    ran without it), written next to ``out``; returns (path, dropped dotted keys)."""
    import os

    import yaml

    from attnfast.config import DEFAULTS
    with open(config_path) as f:
        raw = yaml.safe_load(f) or {}
    dropped = []

    def keep(node, defaults, path):
        if not isinstance(node, dict) or not isinstance(defaults, dict):
            return node
        kept = {}
        for key, value in node.items():
            if key not in defaults and path:        # unknown top-level keys (name, ...) are the loader's business
                dropped.append(".".join(path + [key]))
                continue
            kept[key] = keep(value, defaults.get(key), path + [key])
        return kept

    trimmed = keep(raw, DEFAULTS, [])
    if not dropped:
        return config_path, []
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "config_known_keys.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(trimmed, f)
    return path, dropped


def build(stage: str, config_path: str, out: str, damsm: str | None, sets: list[str]):
    from attnfast import train as train_cli
    from attnfast.config import load_config
    from attnfast.engine.amp import resolve as resolve_amp
    config_path, build.dropped = known_keys_only(config_path, out)
    argv = ["--config", config_path, "--stage", stage, "--out", out]
    for item in sets:
        argv += ["--set", item]
    args = train_cli.build_parser().parse_args(argv)
    config = load_config(args.config, args.set)
    device = torch.device("cpu")
    amp = resolve_amp(args.amp, device)
    speed = train_cli.speed_options(args)
    torch.manual_seed(config["train"]["seed"])
    if stage == "gan":
        from attnfast.trainer.gan import GANTrainer
        trainer = GANTrainer(config, out, device, damsm, amp, speed=speed)
    else:
        from attnfast.trainer.damsm import DAMSMTrainer
        trainer = DAMSMTrainer(config, out, device, amp, speed=speed)
    return trainer, amp, config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage", choices=("gan", "damsm"), required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--damsm", default=None)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    trainer, amp, config = build(args.stage, args.config, args.out, args.damsm, args.set)
    build_seconds = time.perf_counter() - started           # includes a pre-rendered image store
    batches = trainer.batches()

    def step():
        trainer.train_step(next(batches))
        trainer.step += 1                      # as StepLoop.run (the DAMSM lr schedule reads it)

    for _ in range(args.warmup):
        step()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request["cmd"]
        if cmd == "quit":
            break
        if cmd == "info":
            reply = {"amp": amp, "batch": config[args.stage]["batch_size"], "threads": torch.get_num_threads(),
                     "attnfast": __import__("attnfast").__file__, "build_seconds": build_seconds,
                     "image_store": getattr(trainer, "image_store", None) is not None,
                     "channels_last": bool(getattr(getattr(trainer, "speed", None), "channels_last", False)),
                     "config_keys_unknown_to_this_tree": build.dropped}
        elif cmd == "time":
            start = time.perf_counter()
            for _ in range(request["steps"]):
                step()
            reply = {"seconds": time.perf_counter() - start}
        elif cmd == "parts":
            steps = request["steps"]
            start = time.perf_counter()
            with _Parts(trainer, args.stage) as parts:
                data = 0.0
                for _ in range(steps):
                    t0 = time.perf_counter()
                    batch = next(batches)
                    data += time.perf_counter() - t0
                    trainer.train_step(batch)
                    trainer.step += 1
            total = time.perf_counter() - start
            ms = {k: v * 1e3 / steps for k, v in parts.totals.items() if not k.startswith("_")}
            ms["data (render + collate)"] = data * 1e3 / steps
            # the parts above are disjoint (none runs inside another): the remainder is the losses,
            # autocast's casts and the glue between the parts
            ms["losses and rest"] = total * 1e3 / steps - sum(ms.values())
            reply = {"parts_ms": ms, "total_ms": total * 1e3 / steps}
        elif cmd == "flops":
            from torch.utils.flop_counter import FlopCounterMode
            counter = FlopCounterMode(display=False)
            batch = next(batches)
            with counter:
                trainer.train_step(batch)
            trainer.step += 1
            reply = {"flops": counter.get_total_flops()}
        else:
            reply = {"error": f"unknown cmd {cmd!r}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
