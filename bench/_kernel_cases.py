"""The launches of every Triton kernel of ``kernels/`` at the shapes that matter (issue 18), found by
calling the launchers themselves on meta tensors (``_triton_aot.capture``): each launcher picks its
own tiles, warps, stages and constexpr flags, so nothing here copies a launcher's config logic.

Two tiers:
  model   the shapes the model runs, from training/configs/birds.yaml and coco.yaml: attention at
          the stage-2 and stage-3 inputs (C = gf_dim, T = words_num, 64x64 and 128x128 regions),
          DAMSM at D = embedding_dim, 17 x 17 regions, T = words_num, the blocks of every generator
          stage (NCHW and channels_last); every flag the launchers pass (mask modes, attention
          maps, d attn, strided regions, training and eval). The resource test fails on spills here
          (bar kernel_resources.SPILL_EXCEPTIONS).
  range   beyond the model, up to the kernels' limits: attention with C = 256 and T = 64, 256 x 256
          regions. Checked for compile errors, shared memory and occupancy; spills reported.
fp32, bf16 and fp16; each function's docstring says where fewer: the full cross product is some
650 binaries, too many to compile within the test's 3 minutes on 2 cores, so the cases keep every
tile configuration the launchers choose at these shapes and every flag value, not every
combination. ``cases()`` returns [Case]; each case is one launcher call, which may record several
launches (BatchNorm: statistics, finalize, apply).
"""
import os
from dataclasses import dataclass, field

import torch
from _triton_aot import Launch, capture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
META = torch.device("meta")


@dataclass
class Case:
    op: str
    label: str
    tier: str                                     # "model" or "range"
    launches: list[Launch] = field(default_factory=list)


def _short(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def model_sizes() -> dict:
    """{"birds"|"coco": sizes} read from training/configs: gf_dim, words_num, GAN batch, DAMSM batch
    and embedding size, stages."""
    from attnfast.config import load_config
    sizes = {}
    for name in ("birds", "coco"):
        config = load_config(os.path.join(ROOT, "training", "configs", f"{name}.yaml"))
        sizes[name] = {"gf": config["model"]["gf_dim"], "words": config["dataset"]["words_num"],
                       "batch": config["gan"]["batch_size"], "damsm_batch": config["damsm"]["batch_size"],
                       "dim": config["model"]["embedding_dim"], "branches": config["model"]["branch_num"],
                       "base": config["model"]["base_size"]}
    return sizes


def _empty(*shape, dtype=torch.float32, channels_last=False):
    t = torch.empty(*shape, device=META, dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _regions(batch, channels, side, dtype, strided=False):
    """(B, C, side, side); ``strided``: a view into a wider tensor, its rows not one run (FLAT False)."""
    if strided:
        return _empty(batch, channels, side, side + 8, dtype=dtype)[..., :side]
    return _empty(batch, channels, side, side, dtype=dtype)


# --------------------------------------------------------------------------------------------
# word–region attention (kernels/attention.py)
# --------------------------------------------------------------------------------------------
def _attention(tier, tag, batch, channels, side, words, dtype, *, mask_mode="correct", return_attn=True,
               backward=True, dattn=False, strided=False):
    from attnfast.kernels import attention
    h = _regions(batch, channels, side, dtype, strided)
    w = _empty(batch, channels, words, dtype=dtype)
    mask = None if mask_mode is None else _empty(batch, words, dtype=torch.bool)
    flags = f"mask={mask_mode}" + (" attn" if return_attn else "") + (" strided" if strided else "")
    label = f"{tag} B{batch} C{channels} {side}x{side} T{words} {_short(dtype)}"
    found = []
    with capture(attention) as launches:
        attention.attention_forward(h, w, mask, mask_mode or "correct", return_attn)
    found.append(Case("attention", f"{label} fwd {flags}", tier, list(launches)))
    if backward:
        grad = _regions(batch, channels, side, dtype, strided)
        grad_attn = _regions(batch, words, side, dtype, strided) if dattn else None
        with capture(attention) as launches:
            attention.attention_backward(grad, grad_attn, h, w, mask, mask_mode or "correct")
        bflags = f"mask={mask_mode}" + (" dattn" if dattn else "") + (" strided" if strided else "")
        found.append(Case("attention", f"{label} bwd {bflags}", tier, list(launches)))
    return found


def attention_cases(sizes: dict) -> list[Case]:
    """The generator's calls (mask "correct" with maps, training backward; the released generators'
    "attngan" mask, sampling only) at stages 2 and 3 of birds and COCO in every dtype; the flags the
    generator never passes (no mask, no maps, d attn, strided regions) at birds stage 2; the kernels'
    limits (C = 256, T = 64, 256 x 256 regions) in fp32 and bf16 (fp16 takes bf16's tiles)."""
    from attnfast.kernels.attention import MAX_CHANNELS, MAX_WORDS
    found = []
    for name, s in sizes.items():
        for stage, side in ((2, s["base"]), (3, 2 * s["base"])):
            for dtype in DTYPES:
                tag = f"{name} stage {stage}"
                found += _attention("model", tag, s["batch"], s["gf"], side, s["words"], dtype)
                if stage == 2:
                    found += _attention("model", tag, s["batch"], s["gf"], side, s["words"], dtype,
                                        mask_mode="attngan", backward=False)
    birds = sizes["birds"]
    for dtype in DTYPES:
        args = ("model", "birds stage 2", birds["batch"], birds["gf"], birds["base"], birds["words"], dtype)
        found += _attention(*args, mask_mode=None, return_attn=False, dattn=True)
        found += _attention(*args, mask_mode="attngan", return_attn=False, dattn=True, strided=True)
    for channels, words in ((MAX_CHANNELS, birds["words"]), (birds["gf"], MAX_WORDS), (MAX_CHANNELS, MAX_WORDS)):
        for dtype in (torch.float32, torch.bfloat16):
            found += _attention("range", "range", 8, channels, 64, words, dtype)
    found += _attention("range", "range", 4, birds["gf"], 256, birds["words"], torch.bfloat16)
    return found


# --------------------------------------------------------------------------------------------
# DAMSM (kernels/damsm.py)
# --------------------------------------------------------------------------------------------
def damsm_cases(sizes: dict) -> list[Case]:
    """Forward (with and without attention maps) and backward at the DAMSM batch, D, 17 x 17 regions
    and T of birds in every dtype, and of COCO (T = 12: narrower word tiles) in bf16."""
    from attnfast.kernels import damsm
    side = 17                         # Inception-v3 Mixed_6e regions
    found = []
    for name, s in sizes.items():
        for dtype in DTYPES if name == "birds" else (torch.bfloat16,):
            regions = _empty(s["damsm_batch"], s["dim"], side * side, dtype=dtype)
            words = _empty(s["damsm_batch"], s["dim"], s["words"], dtype=dtype)
            lens = torch.empty(s["damsm_batch"], dtype=torch.int64, device=META)
            label = f"{name} B{s['damsm_batch']} D{s['dim']} R{side * side} T{s['words']} {_short(dtype)}"
            for return_attn in (False, True):
                with capture(damsm) as launches:
                    damsm.damsm_forward(regions, words, lens, 4.0, 5.0, return_attn=return_attn)
                found.append(Case("damsm", f"{label} fwd" + (" attn" if return_attn else ""), "model",
                                  list(launches)))
            grad = _empty(s["damsm_batch"], s["damsm_batch"])
            with capture(damsm) as launches:
                damsm.damsm_backward(grad, regions, words, lens, 4.0, 5.0)
            found.append(Case("damsm", f"{label} bwd", "model", list(launches)))
    return found


# --------------------------------------------------------------------------------------------
# BatchNorm + GLU / + residual (kernels/bn_glu.py)
# --------------------------------------------------------------------------------------------
def _block_shapes(s: dict) -> list[tuple]:
    """(label, BN input shape, glu, subpixel) of every BatchNorm of the generator's blocks: stage 1's
    upBlocks from 4x4 to the base size, then per later stage a ResBlock's two BNs and the upBlock."""
    batch, gf = s["batch"], s["gf"]
    shapes, channels, res = [], gf * 16, 4
    while res < s["base"]:           # upBlock(c, c/2): sub-pixel phases (B, 4 * 2 * c/2, H+1, W+1)
        shapes.append((f"upBlock {channels}->{channels // 2} {res}x{res}",
                       (batch, 4 * channels, res + 1, res + 1), True, True))
        channels, res = channels // 2, res * 2
    for res in [s["base"] * 2 ** i for i in range(s["branches"] - 1)]:
        shapes.append((f"ResBlock({2 * gf}) {res}x{res} BN1", (batch, 4 * gf, res, res), True, False))
        shapes.append((f"ResBlock({2 * gf}) {res}x{res} BN2", (batch, 2 * gf, res, res), False, False))
        shapes.append((f"upBlock {2 * gf}->{gf} {res}x{res}", (batch, 8 * gf, res + 1, res + 1), True, True))
    return shapes


def _bn_glu_calls(tag: str, shape: tuple, glu: bool, subpixel: bool, dtype, channels_last: bool,
                  eval_backward: bool) -> list[Case]:
    """The launcher calls of one BatchNorm: training forward and backward, eval forward (the eval BN
    and the inference epilogue) and, with ``eval_backward``, the backward of an eval-mode BN."""
    from attnfast.kernels import bn_glu
    y = _empty(*shape, dtype=dtype, channels_last=channels_last)
    k = shape[1] // (4 if subpixel else 1)
    weight, bias = _empty(k), _empty(k)
    residual = None if glu else bn_glu.output_like(y, glu, subpixel)
    tag = f"{tag} {_short(dtype)} {'NHWC' if channels_last else 'NCHW'}"
    found = []
    with capture(bn_glu) as launches:
        out, mean, invstd, _ = bn_glu.bn_act_forward(y, weight, bias, residual, None, None, True, 1e-5,
                                                     glu, subpixel)
    found.append(Case("bn_glu", f"{tag} train fwd", "model", list(launches)))
    for training in (True, False) if eval_backward else (True,):
        with capture(bn_glu) as launches:
            bn_glu.bn_act_backward(torch.empty_like(out), y, weight, bias, mean, invstd, training, glu,
                                   subpixel)
        found.append(Case("bn_glu", f"{tag} {'train' if training else 'eval'} bwd", "model", list(launches)))
    with capture(bn_glu) as launches:
        bn_glu.affine_act(y, weight, bias, residual, glu, subpixel)
    found.append(Case("bn_glu", f"{tag} eval fwd", "model", list(launches)))
    return found


def bn_glu_cases(sizes: dict) -> list[Case]:
    """bf16 (the AMP training dtype): NCHW at every BatchNorm of stage 1's upBlocks and stage 2's
    blocks, channels_last at the first upBlock and stage 2's blocks; fp32 and fp16 at stage 2's
    blocks (NCHW). Stage 3's blocks take stage 2's tiles (NCHW tiles depend on the plane size only up
    to 512 positions; channels_last tiles on the channel count), channels_last upBlocks all take one
    tile, and COCO's blocks (gf 48) take birds' tiles: these would add no tile configuration, only
    other integer alignments, at a cost the test's 3 minutes on 2 cores cannot pay."""
    birds = sizes["birds"]
    shapes = _block_shapes(birds)
    stage2 = [s for s in shapes if f" {birds['base']}x{birds['base']}" in s[0]]
    stage1 = [s for s in shapes if s[0].startswith("upBlock") and s not in stage2
              and int(s[0].split()[-1].split("x")[0]) < birds["base"]]
    found = []
    for layout, chosen in ((False, stage1 + stage2), (True, stage1[:1] + stage2)):
        for label, shape, glu, subpixel in chosen:
            found += _bn_glu_calls(f"birds {label}", shape, glu, subpixel, torch.bfloat16, layout,
                                   eval_backward=glu and not subpixel)
    for dtype in (torch.float32, torch.float16):
        for label, shape, glu, subpixel in stage2:
            found += _bn_glu_calls(f"birds {label}", shape, glu, subpixel, dtype, False,
                                   eval_backward=glu and not subpixel)
    return found


def cases() -> list[Case]:
    """Every case of every op (a few seconds: nothing is compiled here)."""
    sizes = model_sizes()
    return attention_cases(sizes) + damsm_cases(sizes) + bn_glu_cases(sizes)


def kernel_modules() -> list:
    """The modules of kernels/ that hold Triton kernels."""
    from attnfast.kernels import attention, bn_glu, damsm
    return [attention, damsm, bn_glu]
