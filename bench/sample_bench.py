"""Benchmark of batch sampling (DESIGN.md §7; issue 8).

    python bench/sample_bench.py [--quick | --gpu-quick] [--results-dir DIR]

Images per second of ``attnfast.generation.generate`` (text encoder + generator, no file writing) for:
  original   fp32, eager, BatchNorms as trained, the ops' reference backend (the "x orig" baseline)
  fused      BatchNorms folded (fuse_for_inference) and the fused ops (backend auto)
  bf16       fused + bf16 autocast
  graphs     fused + bf16 + the generator captured as a CUDA graph (CUDA only; attnfast.engine.
             graphed_generator), the text encoder run unpacked inside it
Generators of the original's size (gf 32, E 256, z 100, T 18) with random weights, at 64x64 (one
stage) and 256x256 (three stages), batch 1, 64 and 256. ``--quick`` (the CPU run committed): a
small generator (gf 8, E 32) at 64x64 and 128x128, batch 1 and 16. ``--gpu-quick``: the original's
size at 64x64 with batch 256 (the >= 10,000 images/s target) and at 256x256 with batch 64, short
timing. Timing: ``_common.time_fn``
(CUDA: do_bench median; CPU: median of perf_counter repetitions). Also the relative error of the
final images against the original variant, and peak memory (CUDA). On CPU also the predicted GPU
lower bound of the headline (``_gpus``: a model). Results: a table and
bench/results/sample_<device kind>.json.
"""
import argparse
import os
import sys
from functools import partial

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    add_gpu_quick,
    backend_env,
    device_info,
    gpu_quick_timing,
    peak_memory,
    predicted_lower_bounds,
    print_table,
    time_fn,
    write_results,
)

from attnfast.engine.graphed_generator import GraphedGenerator  # noqa: E402
from attnfast.generation import generate  # noqa: E402
from attnfast.models import G_NET, RNN_ENCODER  # noqa: E402
from attnfast.models.inference import fuse_for_inference  # noqa: E402

FULL = {"width": {"ngf": 32, "nef": 256, "ncf": 100, "z_dim": 100, "r_num": 2}, "word_dim": 300,
        "resolutions": {64: 1, 256: 3}, "batches": (1, 64, 256)}
QUICK = {"width": {"ngf": 8, "nef": 32, "ncf": 8, "z_dim": 8, "r_num": 1}, "word_dim": 16,
         "resolutions": {64: 1, 128: 2}, "batches": (1, 16)}
GPU_QUICK = dict(FULL, resolutions={64: 1, 256: 3}, batches=(256,), batches_at={256: (64,)})
SMOKE = dict(QUICK, resolutions={64: 1}, batches=(2,))
WORDS_NUM, VOCAB = 18, 60


def build(spec: dict, branches: int, device: torch.device):
    """A generator in eval mode (BN statistics made non-trivial) and a text encoder, random weights."""
    from attnfast.models import weights_init
    torch.manual_seed(0)
    netG = G_NET(branch_num=branches, **spec["width"]).apply(weights_init)
    for module in netG.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    text = RNN_ENCODER(VOCAB, ninput=spec["word_dim"], nhidden=spec["width"]["nef"], n_steps=WORDS_NUM)
    return netG.to(device).eval(), text.to(device).eval()


def inputs(batch: int, z_dim: int, ncf: int):
    lens = torch.randint(3, WORDS_NUM + 1, (batch,))
    captions = torch.randint(1, VOCAB, (batch, WORDS_NUM))
    captions[torch.arange(WORDS_NUM)[None, :] >= lens[:, None]] = 0
    return captions, lens, torch.randn(batch, z_dim), torch.randn(batch, ncf)


def predicted_cases() -> list[dict]:
    """The headline (the original's generator at 64x64, batch 256: the >= 10,000 images/s target)
    for the GPU lower-bound model: the FLOPs of one generate() call (text encoder + generator,
    FlopCounterMode: matmuls and convolutions) counted on the CPU at batch 1, times the batch, in
    bf16; the bytes of reading the generator's weights once and writing the images."""
    from torch.utils.flop_counter import FlopCounterMode
    netG, text = build(FULL, 1, torch.device("cpu"))
    captions, lens, noise, eps = inputs(1, FULL["width"]["z_dim"], FULL["width"]["ncf"])
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        generate(netG, text, captions, lens, noise, words_num=WORDS_NUM, eps=eps)
    weights = sum(p.numel() for p in netG.parameters()) * 2
    batch = 256
    return [{"case": f"generate 64x64 B{batch} (gf 32)", "dtype": "bfloat16", "per_call_items": batch,
             "bytes": weights + batch * 3 * 64 * 64 * 2, "flops": counter.get_total_flops() * batch}]


def variants(device):
    rows = [("original", "reference", False, "off", False), ("fused", "auto", True, "off", False),
            ("bf16", "auto", True, "bf16", False)]
    notes = []
    if device.type == "cuda":
        rows.append(("graphs", "auto", True, "bf16", True))
    else:
        notes.append("graphs: skipped (CUDA graphs need a CUDA device)")
    return rows, notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small generator, small batches (CPU)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions on CPU")
    parser.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    add_gpu_quick(parser)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = SMOKE if args.smoke else QUICK if args.quick else GPU_QUICK if args.gpu_quick else FULL
    if args.gpu_quick:
        gpu_quick_timing()
    reps = args.reps or (1 if args.smoke else 3 if args.quick else 5)
    meta = device_info(device)
    print(f"sample bench on {meta['device']} (torch {meta['torch']}, commit {meta['git_commit']}, {meta['date']})")
    table, notes = variants(device)
    for note in notes:
        print("  " + note)
    rows = []
    for resolution, branches in spec["resolutions"].items():
        netG, text = build(spec, branches, device)
        fused = fuse_for_inference(netG)
        for batch in spec.get("batches_at", {}).get(resolution, spec["batches"]):
            captions, lens, noise, eps = inputs(batch, spec["width"]["z_dim"], spec["width"]["ncf"])
            eps = eps.to(device)
            base = reference = None
            for name, backend, fuse, amp, graphs in table:
                model = fused if fuse else netG
                fn = partial(generate, model, text, words_num=WORDS_NUM, amp=amp, packed=not graphs, eps=eps)
                run = GraphedGenerator(fn, batch, device, graphs,
                                       validate=lambda c, n, text=text: text._validate(c, n, WORDS_NUM))
                with backend_env(backend):
                    try:
                        images = run(captions, lens, noise)[0][-1].float().cpu()
                        step = partial(run, captions, lens, noise)
                        seconds = time_fn(step, device, warmup=1, reps=reps)
                        peak = peak_memory(step, device)
                    except Exception as exc:  # noqa: BLE001 - reported, not fatal
                        print(f"  {resolution} B{batch} {name}: failed ({exc.__class__.__name__}: {str(exc)[:300]})")
                        continue
                if name == "original":
                    base, reference = seconds, images
                err = ((images - reference).norm() / reference.norm()).item() if reference is not None else None
                rows.append({"resolution": resolution, "batch": batch, "variant": name, "amp": amp,
                             "images_per_s": batch / seconds, "ms": seconds * 1e3,
                             "x_original": base / seconds if base else None, "rel_err": err,
                             "graph_captured": run.graph is not None,
                             "peak_mb": None if peak is None else peak / 2**20})
    print_table(rows, [("resolution", "res", ""), ("batch", "B", ""), ("variant", "variant", ""),
                       ("images_per_s", "img/s", ".1f"), ("ms", "ms", ".2f"), ("x_original", "x orig", ".2f"),
                       ("rel_err", "rel err", ".1e"), ("peak_mb", "peak MB", ".0f")])
    predicted = predicted_lower_bounds(predicted_cases(), device)
    meta.update({"predicted_gpu_lower_bounds": predicted})
    meta.update({"quick": args.quick, "gpu_quick": args.gpu_quick, "smoke": args.smoke, "notes": notes,
                 "reps": reps,
                 "timing": "triton.testing.do_bench median" if device.type == "cuda"
                 else f"median of {reps} perf_counter repetitions after 1 warm-up",
                 "what": "generate(): text encoder + generator, images left on the device"})
    path = write_results("sample", rows, meta, args.results_dir)
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
