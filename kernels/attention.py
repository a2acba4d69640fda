"""Fused word–region attention in Triton (DESIGN.md §3.1): forward and backward kernels, launchers.

Shapes: h (B, C, H, W) with N = H * W regions, words (B, C, T), mask (B, T) bool (True = padding).

Forward (``_fwd_kernel``), one program per (tile of BLOCK_N regions, caption b):

    S = H_tile^T W          (BLOCK_N, T) in fp32, accumulated over chunks of BLOCK_C channels
    P = softmax_t(S)        over unmasked words, fp32; a row with every word masked gives P = 0
    out_tile^T = P W^T      (BLOCK_N, C), written chunk by chunk in the input dtype
    attn_tile = P^T         written only when asked

Backward (``_bwd_kernel``) recomputes P (never stored) and, with dO = d out and dA = d attn:

    dP = dO^T W (+ dA^T);   dS = P * (dP - rowsum(P * dP))
    dH^T = dS W^T           per region tile, written directly
    dW   = H dS + dO P      summed over all N regions

The sum over N of dW is deterministic: grid (S, B), program (s, b) walks a contiguous run of region
tiles and writes one fp32 partial (C, T) to a (B, S, C, T) buffer; ``torch.sum`` over S finishes it
(no atomics, the same bits every run). S is chosen for about 4 programs per SM in all. The buffer is
small next to the features: at the model's stage-2 size (B=20, C=32, 64x64, T=18, bf16) writing and
reading it adds ~13% to the backward's byte floor, ~4% at 128x128. When the channels fit one chunk
(see ``_config``) the partial lives in registers; otherwise each tile adds its chunk into the
program's own slice of the buffer (read-add-write, a block barrier between tiles).

Precision: fp32, bf16 or fp16 in; every dot accumulates in fp32 and softmax runs in fp32. Products of
an fp32 matrix (P, dS) with a low-precision one use a hi/lo split (``_common.dot_f32_lhs``), so the
kernel is as accurate as the fp32 reference rounded once; fp32 inputs use IEEE fp32 dots (no TF32).
Any strides for h, words, mask and the incoming gradients: nothing is copied to make it contiguous.
"""
import torch
import triton
import triton.language as tl

from ._common import (
    TL_DTYPES,
    cast,
    dot,
    dot_f32_lhs,
    dot_f32_rhs,
    dot_precision,
    emulate_bf16,
    log_first_launch,
    region_offsets,
    sm_count,
)

MAX_CHANNELS = 256
MAX_WORDS = 64
_LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------
@triton.jit
def _load_regions(ptr, b, offs_n, n_ok, offs_c, c_ok, s_b, s_c, s_y, s_x, width, FLAT: tl.constexpr):
    """x[b, c, n]^T of a (B, C, H, W) tensor as a (BLOCK_N, BLOCK_C) tile, zero outside."""
    rows = region_offsets(offs_n, width, s_y, s_x, FLAT)
    ptrs = ptr + b * s_b + rows[:, None] + offs_c[None, :] * s_c
    return tl.load(ptrs, mask=n_ok[:, None] & c_ok[None, :], other=0.0)


@triton.jit
def _load_words(ptr, b, offs_c, c_ok, offs_t, t_ok, s_b, s_c, s_t):
    """words[b] as a (BLOCK_C, BLOCK_T) tile in the input dtype, zero outside."""
    ptrs = ptr + b * s_b + offs_c[:, None] * s_c + offs_t[None, :] * s_t
    return tl.load(ptrs, mask=c_ok[:, None] & t_ok[None, :], other=0.0)


@triton.jit
def _scores(z, h_ptr, w_ptr, do_ptr, b, offs_n, n_ok, offs_t, t_ok, C, width,
            s_hb, s_hc, s_hy, s_hx, s_wb, s_wc, s_wt, s_ob, s_oc, s_oy, s_ox,
            H_FLAT: tl.constexpr, O_FLAT: tl.constexpr, WITH_GRAD: tl.constexpr,
            BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
            NUM_C_CHUNKS: tl.constexpr, PRECISION: tl.constexpr, EMULATE: tl.constexpr):
    """S = H^T W and, with WITH_GRAD, dP = dO^T W: (BLOCK_N, BLOCK_T) fp32 each. ``z`` is 0 (see
    _bwd_kernel)."""
    s = tl.zeros((BLOCK_N, BLOCK_T), dtype=tl.float32)
    dp = tl.zeros((BLOCK_N, BLOCK_T), dtype=tl.float32)
    for ci in range(NUM_C_CHUNKS):
        offs_c = ci * BLOCK_C + tl.arange(0, BLOCK_C) + z
        c_ok = offs_c < C
        w = _load_words(w_ptr, b, offs_c, c_ok, offs_t, t_ok, s_wb, s_wc, s_wt)
        h_t = _load_regions(h_ptr, b, offs_n, n_ok, offs_c, c_ok, s_hb, s_hc, s_hy, s_hx, width, H_FLAT)
        s = dot(h_t, w, s, PRECISION, EMULATE)
        if WITH_GRAD:
            do_t = _load_regions(do_ptr, b, offs_n, n_ok, offs_c, c_ok, s_ob, s_oc, s_oy, s_ox,
                                 width, O_FLAT)
            dp = dot(do_t.to(w.dtype), w, dp, PRECISION, EMULATE)
    return s, dp


@triton.jit
def _probs(s, b, offs_n, n_ok, offs_t, t_ok, mask_ptr, s_mb, s_mt, B, N,
           HAS_MASK: tl.constexpr, ATTNGAN: tl.constexpr):
    """Masked softmax over words of the (BLOCK_N, BLOCK_T) scores, as reference.masked_softmax:
    masked and padding columns get 0, a row with every word masked is all zeros (not NaN)."""
    excluded = ~t_ok[None, :]                                            # (1, BLOCK_T)
    if HAS_MASK:
        if ATTNGAN:
            # The original's mask.repeat(queryL, 1): row b*N + n uses caption (b*N + n) mod B.
            rows = (b * N + offs_n) % B
            m = tl.load(mask_ptr + rows[:, None] * s_mb + offs_t[None, :] * s_mt,
                        mask=n_ok[:, None] & t_ok[None, :], other=1)
        else:
            m = tl.load(mask_ptr + b * s_mb + offs_t * s_mt, mask=t_ok, other=1)[None, :]
        excluded = excluded | (m != 0)
    s = tl.where(excluded, float("-inf"), s)
    peak = tl.max(s, axis=1)
    peak = tl.where(peak == float("-inf"), 0.0, peak)
    e = tl.exp2((s - peak[:, None]) * _LOG2E)
    total = tl.sum(e, axis=1)
    p = e / tl.where(total > 0, total, 1.0)[:, None]
    return tl.where(n_ok[:, None], p, 0.0)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_kernel(h_ptr, w_ptr, mask_ptr, out_ptr, attn_ptr,
                B, C, N, T, width,
                s_hb, s_hc, s_hy, s_hx, s_wb, s_wc, s_wt, s_mb, s_mt,
                s_ob, s_oc, s_on, s_ab, s_at, s_an,
                HAS_MASK: tl.constexpr, ATTNGAN: tl.constexpr, RETURN_ATTN: tl.constexpr,
                H_FLAT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                BLOCK_T: tl.constexpr, NUM_C_CHUNKS: tl.constexpr, PRECISION: tl.constexpr,
                EMULATE: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_t = tl.arange(0, BLOCK_T)
    t_ok = offs_t < T
    s, _ = _scores(0, h_ptr, w_ptr, h_ptr, b, offs_n, n_ok, offs_t, t_ok, C, width,
                   s_hb, s_hc, s_hy, s_hx, s_wb, s_wc, s_wt, s_hb, s_hc, s_hy, s_hx,
                   H_FLAT, H_FLAT, False, BLOCK_N, BLOCK_C, BLOCK_T, NUM_C_CHUNKS, PRECISION, EMULATE)
    p = _probs(s, b, offs_n, n_ok, offs_t, t_ok, mask_ptr, s_mb, s_mt, B, N, HAS_MASK, ATTNGAN)
    if RETURN_ATTN:
        a_ptrs = attn_ptr + b * s_ab + offs_t[None, :] * s_at + offs_n[:, None] * s_an
        tl.store(a_ptrs, cast(p, attn_ptr.dtype.element_ty, EMULATE), mask=n_ok[:, None] & t_ok[None, :])
    for ci in range(NUM_C_CHUNKS):
        offs_c = ci * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        w = _load_words(w_ptr, b, offs_c, c_ok, offs_t, t_ok, s_wb, s_wc, s_wt)
        o = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
        o = dot_f32_lhs(p, tl.trans(w), o, PRECISION, EMULATE)                          # P W^T
        o_ptrs = out_ptr + b * s_ob + offs_c[None, :] * s_oc + offs_n[:, None] * s_on
        tl.store(o_ptrs, cast(o, out_ptr.dtype.element_ty, EMULATE), mask=n_ok[:, None] & c_ok[None, :])


@triton.jit
def _bwd_kernel(h_ptr, w_ptr, mask_ptr, do_ptr, da_ptr, dh_ptr, part_ptr,
                B, C, N, T, width, tiles_per_prog,
                s_hb, s_hc, s_hy, s_hx, s_wb, s_wc, s_wt, s_mb, s_mt,
                s_ob, s_oc, s_oy, s_ox, s_ab, s_at, s_ay, s_ax, s_db, s_dc, s_dn,
                HAS_MASK: tl.constexpr, ATTNGAN: tl.constexpr, HAS_DATTN: tl.constexpr,
                H_FLAT: tl.constexpr, O_FLAT: tl.constexpr, A_FLAT: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
                NUM_C_CHUNKS: tl.constexpr, PRECISION: tl.constexpr, EMULATE: tl.constexpr):
    split = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    # This program's (C, T) fp32 partial of dW: rows of the (B, S, C, T) buffer.
    part = part_ptr + (b * tl.num_programs(0) + split) * C * T
    acc_dw = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
    for it in range(tiles_per_prog):
        # z == 0, but the compiler cannot prove it: offsets built from it stay inside the loop.
        # Otherwise loop-invariant 2-D broadcasts of channel/word offsets and masks get hoisted
        # and held in registers across the loop (sm_90 ptxas: 214 -> 165 registers, bf16 C=32).
        z = it // (tiles_per_prog + 1)
        offs_t = tl.arange(0, BLOCK_T) + z
        t_ok = offs_t < T
        offs_n = (split * tiles_per_prog + it) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        s, dp = _scores(z, h_ptr, w_ptr, do_ptr, b, offs_n, n_ok, offs_t, t_ok, C, width,
                        s_hb, s_hc, s_hy, s_hx, s_wb, s_wc, s_wt, s_ob, s_oc, s_oy, s_ox,
                        H_FLAT, O_FLAT, True, BLOCK_N, BLOCK_C, BLOCK_T, NUM_C_CHUNKS, PRECISION, EMULATE)
        p = _probs(s, b, offs_n, n_ok, offs_t, t_ok, mask_ptr, s_mb, s_mt, B, N, HAS_MASK, ATTNGAN)
        if HAS_DATTN:
            cols = region_offsets(offs_n, width, s_ay, s_ax, A_FLAT)
            da = tl.load(da_ptr + b * s_ab + offs_t[None, :] * s_at + cols[:, None],
                         mask=n_ok[:, None] & t_ok[None, :], other=0.0)
            dp += da.to(tl.float32)
        ds = p * (dp - tl.sum(p * dp, axis=1)[:, None])                  # (BLOCK_N, BLOCK_T)
        for ci in range(NUM_C_CHUNKS):
            offs_c = ci * BLOCK_C + tl.arange(0, BLOCK_C) + z
            c_ok = offs_c < C
            w = _load_words(w_ptr, b, offs_c, c_ok, offs_t, t_ok, s_wb, s_wc, s_wt)
            dh = tl.zeros((BLOCK_N, BLOCK_C), dtype=tl.float32)
            dh = dot_f32_lhs(ds, tl.trans(w), dh, PRECISION, EMULATE)                   # dS W^T
            tl.store(dh_ptr + b * s_db + offs_c[None, :] * s_dc + offs_n[:, None] * s_dn,
                     cast(dh, dh_ptr.dtype.element_ty, EMULATE), mask=n_ok[:, None] & c_ok[None, :])
            h_t = _load_regions(h_ptr, b, offs_n, n_ok, offs_c, c_ok, s_hb, s_hc, s_hy, s_hx,
                                width, H_FLAT)
            do_t = _load_regions(do_ptr, b, offs_n, n_ok, offs_c, c_ok, s_ob, s_oc, s_oy, s_ox,
                                 width, O_FLAT).to(w.dtype)
            dw = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
            dw = dot_f32_rhs(tl.trans(h_t), ds, dw, PRECISION, EMULATE)                 # H dS
            dw = dot_f32_rhs(tl.trans(do_t), p, dw, PRECISION, EMULATE)                 # + dO P
            if NUM_C_CHUNKS == 1:
                acc_dw += dw
            else:
                p_ptrs = part + offs_c[:, None] * T + offs_t[None, :]
                p_mask = c_ok[:, None] & t_ok[None, :]
                prev = tl.load(p_ptrs, mask=p_mask & (it > 0), other=0.0)
                tl.store(p_ptrs, prev + dw, mask=p_mask)
        if NUM_C_CHUNKS > 1:
            # The next tile reads this slice back, possibly from other threads of the block.
            tl.debug_barrier()
    if NUM_C_CHUNKS == 1:
        offs_c = tl.arange(0, BLOCK_C)
        offs_t = tl.arange(0, BLOCK_T)
        t_ok = offs_t < T
        tl.store(part + offs_c[:, None] * T + offs_t[None, :], acc_dw,
                 mask=(offs_c[:, None] < C) & t_ok[None, :])


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------
def check_supported(h: torch.Tensor, words: torch.Tensor) -> None:
    """The limits of these kernels, checked before any launch (names the argument)."""
    if h.dtype not in TL_DTYPES:
        raise TypeError(f"the triton attention backend takes float32, bfloat16 or float16 features, "
                        f"got h of dtype {h.dtype} (use backend='reference' for {h.dtype})")
    if h.shape[1] > MAX_CHANNELS:
        raise ValueError(f"the triton attention backend supports C <= {MAX_CHANNELS} channels, got h of "
                         f"shape {tuple(h.shape)} (C = {h.shape[1]}); use backend='reference'")
    if words.shape[2] > MAX_WORDS:
        raise ValueError(f"the triton attention backend supports T <= {MAX_WORDS} words, got words of "
                         f"shape {tuple(words.shape)} (T = {words.shape[2]}); use backend='reference'")


def _config(kind: str, dtype: torch.dtype, channels: int, num_words: int) -> dict:
    """Tile sizes and warps per kernel: {BLOCK_N, BLOCK_C, NUM_C_CHUNKS, BLOCK_T, num_warps}.

    tl.dot needs every dimension >= 16. Chosen without a GPU at hand, from the kernel resource
    report (bench/kernel_resources.py: every configuration compiled for sm_80 and sm_90, registers,
    spills and occupancy; tests/test_kernel_resources.py holds them to no spills at the model's
    shapes). Unmeasured on a GPU: re-tune with the bench there.
    """
    block_t = max(16, triton.next_power_of_2(num_words))
    pow2_c = max(16, triton.next_power_of_2(channels))
    if kind == "fwd":                  # IEEE fp32 dots run on FMA units and need more registers
        block_n, block_c, warps = (64 if dtype == torch.float32 else 128), min(pow2_c, 32), 8
    elif dtype == torch.float32:
        block_n, block_c, warps = 32, min(pow2_c, 32), 8
    else:                              # C <= 64: one channel chunk, dwords partial in registers
        block_c = pow2_c if pow2_c <= 64 else 32
        block_n = 64 if block_c <= 32 else 32
        warps = 4 if block_t <= 32 else 8
    return {"BLOCK_N": block_n, "BLOCK_C": block_c, "NUM_C_CHUNKS": triton.cdiv(channels, block_c),
            "BLOCK_T": block_t, "num_warps": warps}


def _region_strides(x: torch.Tensor) -> tuple[int, int, bool]:
    """(stride_y, stride_x, flat) of the spatial dims of a (B, C, H, W) tensor."""
    height, width = x.shape[2:]
    s_y, s_x = x.stride(2), x.stride(3)
    return s_y, s_x, height == 1 or s_y == width * s_x


def _mask_args(mask: torch.Tensor | None, h: torch.Tensor):
    if mask is None:
        return h, 0, 0                                   # never read: HAS_MASK is False
    mask = mask.view(torch.uint8) if mask.dtype == torch.bool else mask
    return mask, mask.stride(0), mask.stride(1)


def attention_forward(h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None,
                      mask_mode: str, return_attn: bool, *, out: torch.Tensor | None = None,
                      attn: torch.Tensor | None = None):
    """Launch the forward kernel.

    Args: h (B, C, H, W), words (B, C, T) of the same float dtype, mask (B, T) bool or None, any
    strides. ``out`` (B, C, H, W) and ``attn`` (B, T, H, W) may be given (contiguous); else new.
    Returns (out, attn) with attn None unless ``return_attn``.
    """
    check_supported(h, words)
    batch, channels, height, width = h.shape
    num_regions, num_words = height * width, words.shape[2]
    out = torch.empty_like(h, memory_format=torch.contiguous_format) if out is None else out
    if return_attn and attn is None:
        attn = h.new_empty((batch, num_words, height, width))
    cfg = _config("fwd", h.dtype, channels, num_words)
    s_hy, s_hx, h_flat = _region_strides(h)
    mask_t, s_mb, s_mt = _mask_args(mask, h)
    attn_t = attn if return_attn else out
    key = (h.dtype, tuple(cfg.values()), mask is not None, mask_mode, return_attn, h_flat)
    log_first_launch("word_region_attention_fwd", key)
    grid = (triton.cdiv(num_regions, cfg["BLOCK_N"]), batch)
    _fwd_kernel[grid](
        h, words, mask_t, out, attn_t,
        batch, channels, num_regions, num_words, width,
        h.stride(0), h.stride(1), s_hy, s_hx, words.stride(0), words.stride(1), words.stride(2),
        s_mb, s_mt,
        out.stride(0), out.stride(1), out.stride(3),
        attn_t.stride(0), attn_t.stride(1), attn_t.stride(3),
        HAS_MASK=mask is not None, ATTNGAN=mask_mode == "attngan", RETURN_ATTN=return_attn,
        H_FLAT=h_flat, PRECISION=dot_precision(h.dtype), EMULATE=emulate_bf16(h.dtype), **cfg)
    return out, (attn if return_attn else None)


def num_splits(batch: int, num_tiles: int, device: torch.device) -> tuple[int, int]:
    """(S, tiles per program) for the backward grid (S, B): about 4 programs per SM in all."""
    target = max(1, triton.cdiv(4 * sm_count(device), batch))
    per_prog = triton.cdiv(num_tiles, min(num_tiles, target))
    return triton.cdiv(num_tiles, per_prog), per_prog


def partial_shape(h: torch.Tensor, words: torch.Tensor) -> tuple[int, int, int, int]:
    """Shape (B, S, C, T) of the fp32 buffer of per-program dwords partials."""
    batch, channels, height, width = h.shape
    block_n = _config("bwd", h.dtype, channels, words.shape[2])["BLOCK_N"]
    splits, _ = num_splits(batch, triton.cdiv(height * width, block_n), h.device)
    return batch, splits, channels, words.shape[2]


def attention_backward(grad_out: torch.Tensor, grad_attn: torch.Tensor | None, h: torch.Tensor,
                       words: torch.Tensor, mask: torch.Tensor | None, mask_mode: str, *,
                       dh: torch.Tensor | None = None, partial: torch.Tensor | None = None):
    """Launch the backward kernel: returns (dh (B, C, H, W), dwords (B, C, T)) in h's dtype.

    ``grad_out`` (B, C, H, W) and ``grad_attn`` (B, T, H, W) or None, any strides. ``dh`` and the
    fp32 partial buffer ``partial`` (shape from :func:`partial_shape`) may be given.
    """
    check_supported(h, words)
    batch, channels, height, width = h.shape
    num_regions, num_words = height * width, words.shape[2]
    cfg = _config("bwd", h.dtype, channels, num_words)
    splits, per_prog = num_splits(batch, triton.cdiv(num_regions, cfg["BLOCK_N"]), h.device)
    dh = torch.empty_like(h, memory_format=torch.contiguous_format) if dh is None else dh
    if partial is None:
        partial = torch.empty(partial_shape(h, words), device=h.device, dtype=torch.float32)
    s_hy, s_hx, h_flat = _region_strides(h)
    s_oy, s_ox, o_flat = _region_strides(grad_out)
    has_dattn = grad_attn is not None
    da = grad_attn if has_dattn else grad_out
    s_ay, s_ax, a_flat = _region_strides(da)
    mask_t, s_mb, s_mt = _mask_args(mask, h)
    key = (h.dtype, tuple(cfg.values()), mask is not None, mask_mode, has_dattn, h_flat, o_flat, a_flat)
    log_first_launch("word_region_attention_bwd", key)
    _bwd_kernel[(splits, batch)](
        h, words, mask_t, grad_out, da, dh, partial,
        batch, channels, num_regions, num_words, width, per_prog,
        h.stride(0), h.stride(1), s_hy, s_hx, words.stride(0), words.stride(1), words.stride(2),
        s_mb, s_mt,
        grad_out.stride(0), grad_out.stride(1), s_oy, s_ox, da.stride(0), da.stride(1), s_ay, s_ax,
        dh.stride(0), dh.stride(1), dh.stride(3),
        HAS_MASK=mask is not None, ATTNGAN=mask_mode == "attngan", HAS_DATTN=has_dattn,
        H_FLAT=h_flat, O_FLAT=o_flat, A_FLAT=a_flat, PRECISION=dot_precision(h.dtype),
        EMULATE=emulate_bf16(h.dtype), **cfg)
    dwords = partial.sum(dim=1).to(h.dtype)
    return dh, dwords
