"""Fused DAMSM matching scores in Triton (DESIGN.md §3.2): every (image, sentence) pair in one launch.

One program per pair (image j, sentence i), grid (B_img, B_sent). With V = regions[j] (D, R),
E = words[i] (D, T) and L = cap_lens[i], the program computes, looping over blocks of BLOCK_R
regions and keeping the whole (padded) sentence and embedding dimension in registers:

    S = V^T E                     (BLOCK_R, T) per block, never the whole R x T
    P = softmax over the L valid words of S            (Eq. 8)
    A = softmax over the R regions of gamma1 * P^T     (Eq. 9), an online softmax over region
        blocks: running max m_t and sum l_t per word, the context accumulator rescaled
    C = V A^T                     (D, T), then cos_t = <C_t, E_t> / max(|C_t| |E_t|, 1e-8)
    score = log sum_{t < L} exp(gamma2 * cos_t)

As the original code (and unlike the paper's Eq. 10) the score has no 1/gamma2 factor. Nothing of
size pairs x R x T reaches memory; the attention (B_img, B_sent, T, R) is written only on request.

Backward (``damsm_backward``): the same program per pair recomputes the forward pass (pass 1:
m_t, l_t, C), forms dC and the per-word softmax term delta_t = <dC_t, C_t> in registers, then makes
a second pass over region blocks recomputing S, P, A and accumulating

    dV[:, blk] = dC A^T + E dS^T,   dE += V dS,   with dS the Eq. 8 softmax backward of
    gamma1 * A * (V^T dC - delta).

Reduction across pairs: **fp32 atomics**. Each program adds its (D, BLOCK_R) slice of dV into an
fp32 buffer for image j and its (D, T) dE into an fp32 buffer for sentence i (tl.atomic_add), so
results are exact up to the summation order, which is not deterministic run to run.

Precision: inputs fp32, bf16 or fp16; every dot accumulates in fp32; softmax, cosine and LogSumExp
run in fp32. Dot operands computed in the kernel (attention, dC, dS) are rounded to the input dtype
for the tensor cores, as PyTorch does for a bf16/fp16 bmm; fp32 inputs use IEEE fp32 dots (no TF32).
"""
import logging

import torch
import triton
import triton.language as tl

from attnfast.reference.damsm import COSINE_EPS

LOG = logging.getLogger("attnfast")
_TL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_compiled_once: set[tuple] = set()


def _alloc(shape: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Output buffers every element of which the kernel writes (tests fill them with NaN)."""
    return torch.empty(shape, device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------
@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """tl.dot with fp32 accumulation. UPCAST (bf16 under TRITON_INTERPRET only: the interpreter
    multiplies bf16 as raw uint16) runs the same product on the exactly upcast operands, so the
    interpreter reproduces the GPU's bf16 numerics."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc, input_precision="ieee")
    return tl.dot(a, b, acc=acc, input_precision=PRECISION)


@triton.jit
def _operand(x, dtype: tl.constexpr, UPCAST: tl.constexpr):
    """fp32 x rounded (to nearest even) to the dot operand dtype. Under UPCAST the rounding is done
    by bit arithmetic and the value stays fp32: the interpreter truncates fp32 -> bf16 casts."""
    if UPCAST:
        bits = x.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536
        return bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _load_words(words_ptr, i, s_wb, s_wd, s_wt, D, T, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    """E = words[i] as a (BLOCK_D, BLOCK_T) tile in the input dtype, zero outside (D, T)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_T)
    ptrs = words_ptr + i * s_wb + offs_d[:, None] * s_wd + offs_t[None, :] * s_wt
    return tl.load(ptrs, mask=(offs_d[:, None] < D) & (offs_t[None, :] < T), other=0.0)


@triton.jit
def _load_regions(regions_ptr, j, r0, s_rb, s_rd, s_rr, D, R,
                  BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr):
    """V^T for regions r0 .. r0 + BLOCK_R of image j: (BLOCK_R, BLOCK_D), zero outside (R, D)."""
    offs_r = r0 + tl.arange(0, BLOCK_R)
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = regions_ptr + j * s_rb + offs_r[:, None] * s_rr + offs_d[None, :] * s_rd
    return tl.load(ptrs, mask=(offs_r[:, None] < R) & (offs_d[None, :] < D), other=0.0)


@triton.jit
def _word_softmax(s, t_valid):
    """Eq. 8: softmax of each region's row of s (BLOCK_R, BLOCK_T) over the valid words."""
    s = tl.where(t_valid[None, :], s, float("-inf"))
    e = tl.exp(s - tl.max(s, axis=1)[:, None])
    return e / tl.sum(e, axis=1)[:, None]


@triton.jit
def _word_probs(regions_ptr, j, r0, s_rb, s_rd, s_rr, D, R, e_tile, t_valid,
                BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """One region block: V^T (BLOCK_R, BLOCK_D), P (BLOCK_R, BLOCK_T) fp32, region validity."""
    v = _load_regions(regions_ptr, j, r0, s_rb, s_rd, s_rr, D, R, BLOCK_R, BLOCK_D)
    s = _mma(v, e_tile, None, PRECISION, UPCAST)                      # Eq. 7, fp32 acc
    r_valid = (r0 + tl.arange(0, BLOCK_R)) < R
    return v, _word_softmax(s, t_valid), r_valid


@triton.jit
def _context(regions_ptr, j, s_rb, s_rd, s_rr, D, R, e_tile, t_valid, gamma1,
             BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
             PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """Pass 1: online softmax over regions (Eq. 9) and the context.

    Returns m, l (BLOCK_T,) (max and sum of exp(gamma1 * P - m) over regions) and
    C^T (BLOCK_T, BLOCK_D) fp32, already divided by l.
    """
    m = tl.full((BLOCK_T,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_T,), tl.float32)
    acc = tl.zeros((BLOCK_T, BLOCK_D), tl.float32)
    for r0 in range(0, R, BLOCK_R):
        v, p, r_valid = _word_probs(regions_ptr, j, r0, s_rb, s_rd, s_rr, D, R, e_tile, t_valid,
                                    BLOCK_R, BLOCK_D, PRECISION, UPCAST)
        z = tl.where(r_valid[:, None], gamma1 * p, float("-inf"))         # (BLOCK_R, BLOCK_T)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        alpha = tl.exp(m - m_new)                                         # 0 on the first block
        e = tl.exp(z - m_new[None, :])
        l = l * alpha + tl.sum(e, axis=0)
        acc = acc * alpha[:, None] + _mma(tl.trans(_operand(e, v.dtype, UPCAST)), v, None,
                                        PRECISION, UPCAST)
        m = m_new
    return m, l, acc / l[:, None]


@triton.jit
def _cosine_terms(c_t, e_t, eps):
    """Per word: <C_t, E_t>, |C_t|, |E_t| and the clamped norm product q_t (all (BLOCK_T,))."""
    dots = tl.sum(c_t * e_t, axis=1)
    c_norm = tl.sqrt(tl.sum(c_t * c_t, axis=1))
    e_norm = tl.sqrt(tl.sum(e_t * e_t, axis=1))
    return dots, c_norm, e_norm, tl.maximum(c_norm * e_norm, eps)


@triton.jit
def _log_sum_exp(x, valid):
    x = tl.where(valid, x, float("-inf"))
    peak = tl.max(x, axis=0)
    return peak + tl.log(tl.sum(tl.exp(x - peak), axis=0))


@triton.jit
def _region_attention(p, r_valid, t_valid, m, l, gamma1):
    """Eq. 9 from the final statistics: A^T (BLOCK_R, BLOCK_T), zero on padded regions/words."""
    a = tl.exp(gamma1 * p - m[None, :]) / l[None, :]
    return tl.where(r_valid[:, None] & t_valid[None, :], a, 0.0)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _damsm_fwd_kernel(regions_ptr, words_ptr, lens_ptr, scores_ptr, attn_ptr,
                      D, R, T, n_sent,
                      s_rb, s_rd, s_rr, s_wb, s_wd, s_wt,
                      gamma1, gamma2, eps,
                      BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
                      PRECISION: tl.constexpr, UPCAST: tl.constexpr, RETURN_ATTN: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)                                     # image
    i = tl.program_id(1).to(tl.int64)                                     # sentence
    offs_t = tl.arange(0, BLOCK_T)
    t_valid = offs_t < tl.load(lens_ptr + i)
    e_tile = _load_words(words_ptr, i, s_wb, s_wd, s_wt, D, T, BLOCK_D, BLOCK_T)
    m, l, c_t = _context(regions_ptr, j, s_rb, s_rd, s_rr, D, R, e_tile, t_valid, gamma1,
                         BLOCK_R, BLOCK_D, BLOCK_T, PRECISION, UPCAST)
    e_t = tl.trans(e_tile).to(tl.float32)                                 # (BLOCK_T, BLOCK_D)
    dots, _c_norm, _e_norm, q = _cosine_terms(c_t, e_t, eps)
    score = _log_sum_exp(gamma2 * (dots / q), t_valid)
    tl.store(scores_ptr + j * n_sent + i, score)
    if RETURN_ATTN:
        # attn (B_img, B_sent, T, R) contiguous: a second pass with the final statistics.
        base = attn_ptr + (j * n_sent + i) * T * R
        for r0 in range(0, R, BLOCK_R):
            _v, p, r_valid = _word_probs(regions_ptr, j, r0, s_rb, s_rd, s_rr, D, R, e_tile,
                                        t_valid, BLOCK_R, BLOCK_D, PRECISION, UPCAST)
            a = _region_attention(p, r_valid, t_valid, m, l, gamma1)
            offs_r = r0 + tl.arange(0, BLOCK_R)
            ptrs = base + offs_t[None, :] * R + offs_r[:, None]
            a = _operand(a, attn_ptr.dtype.element_ty, UPCAST)
            tl.store(ptrs, a.to(attn_ptr.dtype.element_ty),
                     mask=r_valid[:, None] & (offs_t[None, :] < T))


@triton.jit
def _damsm_bwd_kernel(regions_ptr, words_ptr, lens_ptr, grad_ptr, dregions_ptr, dwords_ptr,
                      D, R, T,
                      s_rb, s_rd, s_rr, s_wb, s_wd, s_wt, s_gi, s_gs,
                      gamma1, gamma2, eps,
                      BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
                      PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1).to(tl.int64)
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    t_valid = offs_t < tl.load(lens_ptr + i)
    e_tile = _load_words(words_ptr, i, s_wb, s_wd, s_wt, D, T, BLOCK_D, BLOCK_T)
    m, l, c_t = _context(regions_ptr, j, s_rb, s_rd, s_rr, D, R, e_tile, t_valid, gamma1,
                         BLOCK_R, BLOCK_D, BLOCK_T, PRECISION, UPCAST)
    e_t = tl.trans(e_tile).to(tl.float32)
    dots, c_norm, e_norm, q = _cosine_terms(c_t, e_t, eps)
    cos = dots / q
    score = _log_sum_exp(gamma2 * cos, t_valid)

    # d score / d cos_t = gamma2 * softmax_t(gamma2 * cos) over the valid words.
    g = tl.load(grad_ptr + j * s_gi + i * s_gs).to(tl.float32)
    dcos = tl.where(t_valid, g * gamma2 * tl.exp(gamma2 * cos - score), 0.0)
    # cos = dots / max(|C||E|, eps): the clamp passes gradient only where |C||E| >= eps (as torch),
    # and a zero norm has zero gradient (torch.norm's subgradient).
    dq = tl.where(c_norm * e_norm >= eps, -dcos * cos / q, 0.0)
    u = dcos / q
    v_c = tl.where(c_norm > 0, dq * e_norm / tl.where(c_norm > 0, c_norm, 1.0), 0.0)
    v_e = tl.where(e_norm > 0, dq * c_norm / tl.where(e_norm > 0, e_norm, 1.0), 0.0)
    dc_t = u[:, None] * e_t + v_c[:, None] * c_t                         # (BLOCK_T, BLOCK_D)
    de_t = u[:, None] * c_t + v_e[:, None] * e_t                         # direct path
    delta = tl.sum(dc_t * c_t, axis=1)                                    # sum_r A dA per word
    dc_op = _operand(dc_t, e_tile.dtype, UPCAST)

    dv_base = dregions_ptr + j * D * R
    for r0 in range(0, R, BLOCK_R):
        v, p, r_valid = _word_probs(regions_ptr, j, r0, s_rb, s_rd, s_rr, D, R, e_tile, t_valid,
                                    BLOCK_R, BLOCK_D, PRECISION, UPCAST)
        a = _region_attention(p, r_valid, t_valid, m, l, gamma1)         # (BLOCK_R, BLOCK_T)
        da = _mma(v, tl.trans(dc_op), None, PRECISION, UPCAST)            # V^T dC
        dp = gamma1 * a * (da - delta[None, :])                           # Eq. 9 backward
        ds = p * (dp - tl.sum(p * dp, axis=1)[:, None])                   # Eq. 8 backward
        ds = _operand(tl.where(r_valid[:, None], ds, 0.0), e_tile.dtype, UPCAST)
        dv = _mma(_operand(a, e_tile.dtype, UPCAST), dc_op, None, PRECISION, UPCAST)
        dv = _mma(ds, tl.trans(e_tile), dv, PRECISION, UPCAST)            # (BLOCK_R, BLOCK_D)
        de_t = _mma(tl.trans(ds), v, de_t, PRECISION, UPCAST)
        offs_r = r0 + tl.arange(0, BLOCK_R)
        tl.atomic_add(dv_base + offs_d[None, :] * R + offs_r[:, None], dv,
                      mask=r_valid[:, None] & (offs_d[None, :] < D), sem="relaxed")
    tl.atomic_add(dwords_ptr + i * D * T + offs_d[None, :] * T + offs_t[:, None], de_t,
                  mask=(offs_t[:, None] < T) & (offs_d[None, :] < D), sem="relaxed")


# --------------------------------------------------------------------------------------------
# Launch wrappers
# --------------------------------------------------------------------------------------------
# GPU launch configurations (BLOCK_R, num_warps, num_stages, maxnreg) per (pass, fp32 or not),
# chosen for D = 256, T = 18 from the kernel resource report (bench/kernel_resources.py: registers,
# shared memory, spills and occupancy of each, compiled for sm_80 and sm_90); not yet timed on a GPU.
# The forward spilled 130-560 bytes per thread with BLOCK_R = 64 (bf16/fp16) and 32 (fp32, 8 warps).
# ptxas stops at 64-128 registers for 16 warps unless maxnreg says 128. The fp32 backward keeps
# six (T x D) fp32 tiles per program: it spills at every configuration tried (8 warps 2.7-3.4 KB,
# 16 warps 1.2 KB); 16 warps with maxnreg 128 spill the least, ~0.8 KB (SPILL_EXCEPTIONS in
# bench/kernel_resources.py).
_GPU_CONFIGS = {
    ("forward", False): (32, 8, 3, None), ("backward", False): (16, 8, 2, None),
    ("forward", True): (16, 16, 1, 128), ("backward", True): (16, 16, 1, 128),
}


def _config(D: int, R: int, T: int, backward: bool, regions: torch.Tensor) -> dict:
    """Tiles and launch options: the whole padded D and T per program (tl.dot needs >= 16),
    BLOCK_R regions per step. Under the interpreter BLOCK_R = 16 (cheap, several region blocks)."""
    block_r, warps, stages, maxnreg = _GPU_CONFIGS[("backward" if backward else "forward",
                                                    regions.dtype == torch.float32)]
    options = {} if regions.device.type == "cpu" else {"num_warps": warps, "num_stages": stages}
    if maxnreg and regions.device.type != "cpu":
        options["maxnreg"] = maxnreg
    if regions.device.type == "cpu":
        block_r = 16
    return dict(BLOCK_R=min(block_r, max(16, triton.next_power_of_2(R))),
                BLOCK_D=max(16, triton.next_power_of_2(D)),
                BLOCK_T=max(16, triton.next_power_of_2(T)), **options)


def _dot_options(regions: torch.Tensor) -> dict:
    """fp32 inputs: IEEE fp32 dots (TF32 would exceed plain PyTorch's fp32 error); bf16 under the
    interpreter: upcast operands (see _mma)."""
    return {"PRECISION": "ieee" if regions.dtype == torch.float32 else "tf32",
            "UPCAST": regions.device.type == "cpu" and regions.dtype == torch.bfloat16}


def _log_compile(kind: str, dtype: torch.dtype, blocks: dict, device: torch.device) -> None:
    key = (kind, dtype, tuple(sorted(blocks.items())), device.type)
    if key not in _compiled_once:
        _compiled_once.add(key)
        LOG.info("attnfast: compiling Triton damsm %s kernel for %s %s (first call)", kind, dtype, blocks)


def _check(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor) -> None:
    if regions.dtype not in _TL_DTYPES:
        raise TypeError(f"triton damsm_scores supports {_TL_DTYPES}, got img_regions dtype {regions.dtype}")
    if regions.dim() != 3 or words.dim() != 3 or regions.shape[1] != words.shape[1]:
        raise ValueError(f"img_regions (B_img, D, R) and words (B_sent, D, T) must share D, got "
                         f"{tuple(regions.shape)} and {tuple(words.shape)}")
    if words.dtype != regions.dtype or words.device != regions.device:
        raise ValueError("img_regions and words must share dtype and device")
    if cap_lens.shape != (words.shape[0],):
        raise ValueError(f"cap_lens must have shape ({words.shape[0]},), got {tuple(cap_lens.shape)}")


def damsm_forward(regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                  gamma1: float, gamma2: float, return_attn: bool = False):
    """Launch the fused forward.

    Args:
        regions: (B_img, D, R) fp32/bf16/fp16, any strides; words: (B_sent, D, T) same dtype;
        cap_lens: (B_sent,) integer lengths in [1, T] (not checked here: the public op does).
    Returns:
        scores (B_img, B_sent) in the input dtype and, if ``return_attn``, the attention
        (B_img, B_sent, T, R) in the input dtype (zero on padded words), else None.
    """
    _check(regions, words, cap_lens)
    n_img, dim, n_reg = regions.shape
    n_sent, _, n_words = words.shape
    lens = cap_lens.to(device=regions.device, dtype=torch.int64).contiguous()
    scores = _alloc((n_img, n_sent), regions.device, torch.float32)
    attn = (_alloc((n_img, n_sent, n_words, n_reg), regions.device, regions.dtype)
            if return_attn else scores)
    blocks = _config(dim, n_reg, n_words, False, regions)
    _log_compile("forward", regions.dtype, blocks, regions.device)
    _damsm_fwd_kernel[(n_img, n_sent)](
        regions, words, lens, scores, attn, dim, n_reg, n_words, n_sent,
        *regions.stride(), *words.stride(), float(gamma1), float(gamma2), COSINE_EPS,
        RETURN_ATTN=return_attn, **blocks, **_dot_options(regions))
    return scores.to(regions.dtype), (attn if return_attn else None)


def damsm_backward(grad_scores: torch.Tensor, regions: torch.Tensor, words: torch.Tensor,
                   cap_lens: torch.Tensor, gamma1: float, gamma2: float):
    """Gradients of sum(grad_scores * scores) to regions (B_img, D, R) and words (B_sent, D, T),
    in the input dtype, recomputing the forward; fp32 atomics reduce over pairs."""
    _check(regions, words, cap_lens)
    n_img, dim, n_reg = regions.shape
    n_sent, _, n_words = words.shape
    lens = cap_lens.to(device=regions.device, dtype=torch.int64).contiguous()
    grad = grad_scores.to(torch.float32)
    d_regions = torch.zeros((n_img, dim, n_reg), device=regions.device, dtype=torch.float32)
    d_words = torch.zeros((n_sent, dim, n_words), device=regions.device, dtype=torch.float32)
    blocks = _config(dim, n_reg, n_words, True, regions)
    _log_compile("backward", regions.dtype, blocks, regions.device)
    _damsm_bwd_kernel[(n_img, n_sent)](
        regions, words, lens, grad, d_regions, d_words, dim, n_reg, n_words,
        *regions.stride(), *words.stride(), *grad.stride(),
        float(gamma1), float(gamma2), COSINE_EPS,
        **blocks, **_dot_options(regions))
    return d_regions.to(regions.dtype), d_words.to(words.dtype)


class DamsmScores(torch.autograd.Function):
    """Eager autograd around the two launches (no torch.library; the custom op in
    attnfast/ops/_damsm_custom_op.py is the torch.compile-friendly path)."""

    @staticmethod
    def forward(ctx, regions, words, cap_lens, gamma1, gamma2):
        ctx.save_for_backward(regions, words, cap_lens)
        ctx.gammas = (gamma1, gamma2)
        return damsm_forward(regions, words, cap_lens, gamma1, gamma2)[0]

    @staticmethod
    def backward(ctx, grad):
        regions, words, cap_lens = ctx.saved_tensors
        d_regions, d_words = damsm_backward(grad, regions, words, cap_lens, *ctx.gammas)
        return (d_regions if ctx.needs_input_grad[0] else None,
                d_words if ctx.needs_input_grad[1] else None, None, None, None)


def damsm_scores_triton(img_regions: torch.Tensor, words: torch.Tensor, cap_lens: torch.Tensor,
                        gamma1: float, gamma2: float, *, return_attn: bool = False):
    """All-pairs DAMSM scores, the contract of :func:`attnfast.reference.damsm_scores`.

    img_regions (B_img, D, R), words (B_sent, D, T), cap_lens (B_sent,) long in [1, T].
    Returns scores (B_img, B_sent) in the input dtype, differentiable to both inputs; with
    ``return_attn`` also the region attention (B_img, B_sent, T, R), zero on padded words, which is
    not differentiable (maps are for inspection; the scores keep their gradient).
    score[j, i] = log sum_t exp(gamma2 * cos_t): no 1/gamma2 factor, as the original code.
    """
    scores = DamsmScores.apply(img_regions, words, cap_lens, float(gamma1), float(gamma2))
    if not return_attn:
        return scores
    with torch.no_grad():
        _, attn = damsm_forward(img_regions, words, cap_lens, gamma1, gamma2, return_attn=True)
    return scores, attn
