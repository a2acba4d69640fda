"""Fused BatchNorm + GLU (or + residual) in Triton (DESIGN.md §3.3): two passes forward, two back.

The BatchNorm input ``y`` comes in one of two geometries:

- plain: (B, K, H, W), K BatchNorm channels, any strides (NCHW or channels_last);
- subpixel: (B, 4K, H+1, W+1), the phases of an upBlock's sub-pixel convolution
  (:func:`attnfast.reference.subpixel_weight` with padding 1): BatchNorm channel k, phase
  (a, b) is ``y[:, 4k + 2a + b, i + a, j + b]`` for 0 <= i < H, 0 <= j < W and lands at output
  pixel (2i + a, 2j + b). The kernels read the phases in place, so the pixel shuffle costs no
  pass of its own; the phase borders that no output pixel uses are skipped (and get zero
  gradient).

Tiles (2-D, fp32 in registers) take one of two shapes, picked from y's memory format so that
the threads of a warp walk contiguous memory:

- NCHW (``CL=False``): (BLOCK_C channels, BLOCK_P positions of one plane); the batch index and
  phase are the tile's scalars, so a plain, contiguous plane is read as one contiguous run;
- channels_last (``CL=True``): (BLOCK_P positions over batch x plane, BLOCK_C * NPH channel
  columns), column = 4k + phase in subpixel geometry, i.e. y's own contiguous channel order.
Output offsets separate into a position part and a channel part in both shapes; the only
integer divisions are per position (never per element).

Forward (training):
  1. ``_stats_kernel``: grid (channel blocks, splits); each program walks its tiles and keeps,
     per channel (per channel and phase for CL), a (count, mean, M2) merged tile by tile with
     Chan's parallel formula (no E[x^2] - E[x]^2 cancellation), written as partials.
  2. ``_finalize_kernel``: merges the partials of each channel: mean, 1/sqrt(var + eps), the
     unbiased variance for running_var, and scale = gamma * invstd, shift = beta - mean * scale.
  3. ``_apply_kernel``: z = y * scale + shift; out = z[:C] * sigmoid(z[C:]) (GLU) or z + residual,
     written in the output's layout: half the channels for GLU, interleaved for subpixel.
Eval mode runs only pass 3, with scale/shift from the running statistics: BatchNorm folded into
the GLU pass, which then costs exactly what a GLU pass after a BN-folded conv would.

Backward (dz = dL/dz, recomputed from y: z is never stored):
  1. ``_bwd_reduce_kernel``: per channel sum(dz) = dbeta and sum(dz * xhat) = dgamma, partials
     per split (summed on the host, one small reduction).
  2. ``_bwd_apply_kernel``: dy = scale * (dz - dbeta / N - xhat * dgamma / N) (training) or
     scale * dz (eval), written in y's layout.

Precision: any of fp32/bf16/fp16 for y (and out, dy), all arithmetic in fp32, statistics and
partials in fp32; out is rounded once, so bf16/fp16 results are at least as accurate as PyTorch's
BatchNorm -> GLU in the same dtype.
"""
import logging
import os

import torch
import triton
import triton.language as tl

LOG = logging.getLogger("attnfast")
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_compiled_once: set[tuple] = set()


# --------------------------------------------------------------------------------------------
# Tile geometry
# --------------------------------------------------------------------------------------------
@triton.jit
def _tile(t, cb, N_TILES, QB, B_PLANE, PLANE, Wp, H, W, C_OUT,
          CL: tl.constexpr, SUB: tl.constexpr, BIG: tl.constexpr,
          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Coordinates of tile ``t`` and channel block ``cb``.

    Returns b, ph (scalars for NCHW tiles, vectors on the tile's position / channel axis for CL
    tiles), ip, jp, q (position vectors: plane row, column, flat index), k (BatchNorm channel of
    each channel-axis entry, < C_OUT), and the 2-D masks in_range (inside y) and valid (inside y
    and read by an output pixel).
    """
    NPH: tl.constexpr = 4 if SUB else 1
    if CL:
        p = t * BLOCK_P + tl.arange(0, BLOCK_P)                    # axis 0: batch x plane
        if BIG:
            p = p.to(tl.int64)
        b = p // PLANE
        q = p - b * PLANE
        col = cb * (BLOCK_C * NPH) + tl.arange(0, BLOCK_C * NPH)   # axis 1: channel x phase
        k = col // NPH
        ph = col - k * NPH
        pos_ok = (p < B_PLANE)[:, None]
        ch_ok = (k < C_OUT)[None, :]
    else:
        row = t // QB                                              # batch x phase (scalar)
        b = row // NPH
        ph = row - b * NPH
        if BIG:
            b = b.to(tl.int64)
        q = (t - row * QB) * BLOCK_P + tl.arange(0, BLOCK_P)       # axis 1: plane positions
        k = cb * BLOCK_C + tl.arange(0, BLOCK_C)                   # axis 0: channels
        pos_ok = (q < tl.where(t < N_TILES, PLANE, 0))[None, :]      # no positions past the last tile
        ch_ok = (k < C_OUT)[:, None]
    ip = q // Wp
    jp = q - ip * Wp
    in_range = pos_ok & ch_ok
    valid = in_range
    if SUB:
        a = ph // 2
        c = ph - a * 2
        if CL:
            valid = in_range & (ip[:, None] >= a[None, :]) & (ip[:, None] < H + a[None, :]) \
                & (jp[:, None] >= c[None, :]) & (jp[:, None] < W + c[None, :])
        else:
            valid = in_range & ((ip >= a) & (ip < H + a) & (jp >= c) & (jp < W + c))[None, :]
    return b, ph, ip, jp, q, k, in_range, valid


@triton.jit
def _y_offsets(b, ph, ip, jp, q, k, s_b, s_c, s_h, s_w,
               CL: tl.constexpr, SUB: tl.constexpr, FLAT: tl.constexpr):
    """2-D offsets into a y-shaped tensor (y, dy) of BatchNorm channels k (phase ph)."""
    NPH: tl.constexpr = 4 if SUB else 1
    if CL:
        return (b * s_b + ip * s_h + jp * s_w)[:, None] + ((k * NPH + ph) * s_c)[None, :]
    else:
        if FLAT:                                     # plane stored as one run: s_h == Wp * s_w
            pos = b * s_b + ph * s_c + q * s_w
        else:
            pos = b * s_b + ph * s_c + ip * s_h + jp * s_w
        return (k * NPH * s_c)[:, None] + pos[None, :]


@triton.jit
def _out_offsets(b, ph, ip, jp, q, k, o_b, o_c, o_h, o_w,
                 CL: tl.constexpr, SUB: tl.constexpr, FLAT: tl.constexpr):
    """2-D offsets into an out-shaped tensor (out, residual, grad_out): channel k at output
    pixel (2 ip - a, 2 jp - c) for phase ph = 2a + c (subpixel), else (ip, jp)."""
    if SUB:
        a = ph // 2
        c = ph - a * 2
        if CL:
            return (b * o_b + 2 * ip * o_h + 2 * jp * o_w)[:, None] + (k * o_c - a * o_h - c * o_w)[None, :]
        else:
            return (k * o_c)[:, None] + (b * o_b + (2 * ip - a) * o_h + (2 * jp - c) * o_w)[None, :]
    else:
        if CL:
            return (b * o_b + ip * o_h + jp * o_w)[:, None] + (k * o_c)[None, :]
        else:
            if FLAT:
                pos = b * o_b + q * o_w
            else:
                pos = b * o_b + ip * o_h + jp * o_w
            return (k * o_c)[:, None] + pos[None, :]


@triton.jit
def _param(ptr, k, C_OUT, CL: tl.constexpr):
    """Per-channel fp32 parameter at channels k, broadcastable over the tile."""
    v = tl.load(ptr + k, mask=k < C_OUT, other=0.0).to(tl.float32)
    if CL:
        return v[None, :]
    else:
        return v[:, None]


@triton.jit
def _along_channels(v, CL: tl.constexpr):
    """Sum over the tile's position axis: a vector along its channel axis."""
    if CL:
        return tl.sum(v, axis=0)
    else:
        return tl.sum(v, axis=1)


@triton.jit
def _spread(v, CL: tl.constexpr):
    """A channel-axis vector broadcast back over the tile."""
    if CL:
        return v[None, :]
    else:
        return v[:, None]


@triton.jit
def _partial_offsets(pid_s, ph, k, K, CL: tl.constexpr, SUB: tl.constexpr):
    """Index into (rows, K) partials: row = split (NCHW tiles) or split x phase (CL tiles)."""
    NPH: tl.constexpr = 4 if SUB else 1
    if CL:
        return (pid_s * NPH + ph) * K + k
    else:
        return pid_s * K + k


@triton.jit
def _glu_grads(g, za, zb):
    """d/dza and d/dzb of za * sigmoid(zb), times the upstream g."""
    s = tl.sigmoid(zb)
    return g * s, g * za * s * (1.0 - s)


# --------------------------------------------------------------------------------------------
# Forward kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _stats_kernel(y_ptr, mean_part_ptr, m2_part_ptr, cnt_part_ptr,
                  K, N_TILES, QB, B_PLANE, PLANE, Wp, H, W, TILES,
                  s_b, s_c, s_h, s_w,
                  CL: tl.constexpr, SUB: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-channel (count, mean, M2) partials of y over the tiles of split program_id(1)."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    count = tl.zeros([BLOCK_C * (4 if (CL and SUB) else 1)], dtype=tl.float32)
    mean = tl.zeros_like(count)
    m2 = tl.zeros_like(count)
    for i in range(TILES):
        t = pid_s * TILES + i
        b, ph, ip, jp, q, k, _in_range, valid = _tile(t, pid_c, N_TILES, QB, B_PLANE, PLANE, Wp, H, W,
                                                     K, CL, SUB, BIG, BLOCK_P, BLOCK_C)
        offs = _y_offsets(b, ph, ip, jp, q, k, s_b, s_c, s_h, s_w, CL, SUB, FLAT)
        x = tl.load(y_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        n = _along_channels(valid.to(tl.float32), CL)
        tile_mean = _along_channels(x, CL) / tl.maximum(n, 1.0)
        d = tl.where(valid, x - _spread(tile_mean, CL), 0.0)
        tile_m2 = _along_channels(d * d, CL)
        total = count + n
        frac = n / tl.maximum(total, 1.0)
        delta = tile_mean - mean
        mean += delta * frac
        m2 += tile_m2 + delta * delta * count * frac
        count = total
    # the channel-axis coordinates (the same for every tile of this program)
    b, ph, ip, jp, q, k, _in_range, valid = _tile(0, pid_c, N_TILES, QB, B_PLANE, PLANE, Wp, H, W,
                                                 K, CL, SUB, BIG, BLOCK_P, BLOCK_C)
    part = _partial_offsets(pid_s, ph, k, K, CL, SUB)
    tl.store(mean_part_ptr + part, mean, mask=k < K)
    tl.store(m2_part_ptr + part, m2, mask=k < K)
    tl.store(cnt_part_ptr + part, count, mask=k < K)


@triton.jit
def _finalize_kernel(mean_part_ptr, m2_part_ptr, cnt_part_ptr, w_ptr, b_ptr,
                     mean_ptr, invstd_ptr, var_ptr, scale_ptr, shift_ptr,
                     K, ROWS, N, eps, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr):
    """Merge (ROWS, K) partials: batch mean, invstd, unbiased var, scale and shift per channel."""
    ks = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_ok = ks < K
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for s0 in range(0, ROWS, BLOCK_S):
        ss = s0 + tl.arange(0, BLOCK_S)
        both = (ss < ROWS)[:, None] & k_ok[None, :]
        n = tl.load(cnt_part_ptr + ss[:, None] * K + ks[None, :], mask=both, other=0.0)
        mu = tl.load(mean_part_ptr + ss[:, None] * K + ks[None, :], mask=both, other=0.0)
        acc += tl.sum(n * mu, axis=0)
    mean = acc / N
    m2 = tl.zeros([BLOCK_K], dtype=tl.float32)
    for s0 in range(0, ROWS, BLOCK_S):
        ss = s0 + tl.arange(0, BLOCK_S)
        both = (ss < ROWS)[:, None] & k_ok[None, :]
        n = tl.load(cnt_part_ptr + ss[:, None] * K + ks[None, :], mask=both, other=0.0)
        mu = tl.load(mean_part_ptr + ss[:, None] * K + ks[None, :], mask=both, other=0.0)
        part = tl.load(m2_part_ptr + ss[:, None] * K + ks[None, :], mask=both, other=0.0)
        d = mu - mean[None, :]
        m2 += tl.sum(part + n * d * d, axis=0)
    var = m2 / N
    invstd = 1.0 / tl.sqrt(var + eps)
    gamma = tl.load(w_ptr + ks, mask=k_ok, other=1.0).to(tl.float32)
    beta = tl.load(b_ptr + ks, mask=k_ok, other=0.0).to(tl.float32)
    scale = gamma * invstd
    tl.store(mean_ptr + ks, mean, mask=k_ok)
    tl.store(invstd_ptr + ks, invstd, mask=k_ok)
    tl.store(var_ptr + ks, m2 / tl.maximum(N - 1.0, 1.0), mask=k_ok)
    tl.store(scale_ptr + ks, scale, mask=k_ok)
    tl.store(shift_ptr + ks, beta - mean * scale, mask=k_ok)


@triton.jit
def _apply_kernel(y_ptr, out_ptr, res_ptr, scale_ptr, shift_ptr,
                  C_OUT, N_TILES, QB, B_PLANE, PLANE, Wp, H, W,
                  s_b, s_c, s_h, s_w, o_b, o_c, o_h, o_w, r_b, r_c, r_h, r_w,
                  CL: tl.constexpr, SUB: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr,
                  GLU: tl.constexpr, RESIDUAL: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """out = GLU(y * scale + shift) or y * scale + shift + residual, one tile per program."""
    NPH: tl.constexpr = 4 if SUB else 1
    b, ph, ip, jp, q, k, _in_range, valid = _tile(tl.program_id(0), tl.program_id(1), N_TILES, QB,
                                                 B_PLANE, PLANE, Wp, H, W, C_OUT, CL, SUB, BIG,
                                                 BLOCK_P, BLOCK_C)
    offs = _y_offsets(b, ph, ip, jp, q, k, s_b, s_c, s_h, s_w, CL, SUB, FLAT)
    x = tl.load(y_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    z = x * _param(scale_ptr, k, C_OUT, CL) + _param(shift_ptr, k, C_OUT, CL)
    if GLU:
        gate = tl.load(y_ptr + offs + C_OUT * NPH * s_c, mask=valid, other=0.0).to(tl.float32)
        zg = gate * _param(scale_ptr + C_OUT, k, C_OUT, CL) + _param(shift_ptr + C_OUT, k, C_OUT, CL)
        z = z * tl.sigmoid(zg)
    if RESIDUAL:
        r_offs = _out_offsets(b, ph, ip, jp, q, k, r_b, r_c, r_h, r_w, CL, SUB, FLAT)
        z += tl.load(res_ptr + r_offs, mask=valid, other=0.0).to(tl.float32)
    o_offs = _out_offsets(b, ph, ip, jp, q, k, o_b, o_c, o_h, o_w, CL, SUB, FLAT)
    tl.store(out_ptr + o_offs, z.to(out_ptr.dtype.element_ty), mask=valid)


# --------------------------------------------------------------------------------------------
# Backward kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _bwd_tile(y_ptr, g_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr, offs, g_offs, k, valid,
              C_OUT, s_c, CL: tl.constexpr, SUB: tl.constexpr, GLU: tl.constexpr):
    """dz and xhat of the value channels k (and of the gate channels k + C_OUT for GLU), zero
    outside ``valid``."""
    NPH: tl.constexpr = 4 if SUB else 1
    g = tl.load(g_ptr + g_offs, mask=valid, other=0.0).to(tl.float32)
    x = tl.load(y_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    xhat = (x - _param(mean_ptr, k, C_OUT, CL)) * _param(invstd_ptr, k, C_OUT, CL)
    if GLU:
        gate = tl.load(y_ptr + offs + C_OUT * NPH * s_c, mask=valid, other=0.0).to(tl.float32)
        xhat_g = (gate - _param(mean_ptr + C_OUT, k, C_OUT, CL)) * _param(invstd_ptr + C_OUT, k, C_OUT, CL)
        za = x * _param(scale_ptr, k, C_OUT, CL) + _param(shift_ptr, k, C_OUT, CL)
        zb = gate * _param(scale_ptr + C_OUT, k, C_OUT, CL) + _param(shift_ptr + C_OUT, k, C_OUT, CL)
        dz, dz_g = _glu_grads(g, za, zb)
        dz_g = tl.where(valid, dz_g, 0.0)
    else:
        dz = g
        xhat_g = xhat
        dz_g = g
    dz = tl.where(valid, dz, 0.0)
    return dz, xhat, dz_g, xhat_g


@triton.jit
def _bwd_reduce_kernel(y_ptr, g_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr, part_ptr,
                       K, C_OUT, N_TILES, QB, B_PLANE, PLANE, Wp, H, W, TILES, PART_ROWS,
                       s_b, s_c, s_h, s_w, g_b, g_c, g_h, g_w,
                       CL: tl.constexpr, SUB: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr,
                       GLU: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """part[0] = sum(dz), part[1] = sum(dz * xhat) per channel, (PART_ROWS, K) each."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    sum_a = tl.zeros([BLOCK_C * (4 if (CL and SUB) else 1)], dtype=tl.float32)
    dot_a = tl.zeros_like(sum_a)
    sum_g = tl.zeros_like(sum_a)
    dot_g = tl.zeros_like(sum_a)
    for i in range(TILES):
        t = pid_s * TILES + i
        b, ph, ip, jp, q, k, _in_range, valid = _tile(t, pid_c, N_TILES, QB, B_PLANE, PLANE, Wp, H, W,
                                                     C_OUT, CL, SUB, BIG, BLOCK_P, BLOCK_C)
        offs = _y_offsets(b, ph, ip, jp, q, k, s_b, s_c, s_h, s_w, CL, SUB, FLAT)
        g_offs = _out_offsets(b, ph, ip, jp, q, k, g_b, g_c, g_h, g_w, CL, SUB, FLAT)
        dz, xhat, dz_g, xhat_g = _bwd_tile(y_ptr, g_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr,
                                           offs, g_offs, k, valid, C_OUT, s_c, CL, SUB, GLU)
        sum_a += _along_channels(dz, CL)
        dot_a += _along_channels(dz * xhat, CL)
        if GLU:
            sum_g += _along_channels(dz_g, CL)
            dot_g += _along_channels(dz_g * xhat_g, CL)
    b, ph, ip, jp, q, k, _in_range, valid = _tile(0, pid_c, N_TILES, QB, B_PLANE, PLANE, Wp, H, W,
                                                 C_OUT, CL, SUB, BIG, BLOCK_P, BLOCK_C)
    part = _partial_offsets(pid_s, ph, k, K, CL, SUB)
    k_ok = k < C_OUT
    tl.store(part_ptr + part, sum_a, mask=k_ok)
    tl.store(part_ptr + PART_ROWS * K + part, dot_a, mask=k_ok)
    if GLU:
        tl.store(part_ptr + part + C_OUT, sum_g, mask=k_ok)
        tl.store(part_ptr + PART_ROWS * K + part + C_OUT, dot_g, mask=k_ok)


@triton.jit
def _bwd_apply_kernel(y_ptr, g_ptr, dy_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr, sums_ptr,
                      K, C_OUT, N_TILES, QB, B_PLANE, PLANE, Wp, H, W, inv_n,
                      s_b, s_c, s_h, s_w, g_b, g_c, g_h, g_w, d_b, d_c, d_h, d_w,
                      CL: tl.constexpr, SUB: tl.constexpr, FLAT: tl.constexpr, BIG: tl.constexpr,
                      GLU: tl.constexpr, TRAINING: tl.constexpr,
                      BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """dy over every position of y's planes (zero where no output pixel reads y)."""
    NPH: tl.constexpr = 4 if SUB else 1
    b, ph, ip, jp, q, k, in_range, valid = _tile(tl.program_id(0), tl.program_id(1), N_TILES, QB,
                                                 B_PLANE, PLANE, Wp, H, W, C_OUT, CL, SUB, BIG,
                                                 BLOCK_P, BLOCK_C)
    offs = _y_offsets(b, ph, ip, jp, q, k, s_b, s_c, s_h, s_w, CL, SUB, FLAT)
    g_offs = _out_offsets(b, ph, ip, jp, q, k, g_b, g_c, g_h, g_w, CL, SUB, FLAT)
    d_offs = _y_offsets(b, ph, ip, jp, q, k, d_b, d_c, d_h, d_w, CL, SUB, FLAT)
    dz, xhat, dz_g, xhat_g = _bwd_tile(y_ptr, g_ptr, scale_ptr, shift_ptr, mean_ptr, invstd_ptr,
                                       offs, g_offs, k, valid, C_OUT, s_c, CL, SUB, GLU)
    if TRAINING:
        dz -= _param(sums_ptr, k, C_OUT, CL) * inv_n + xhat * _param(sums_ptr + K, k, C_OUT, CL) * inv_n
    dy = tl.where(valid, dz * _param(scale_ptr, k, C_OUT, CL), 0.0)
    tl.store(dy_ptr + d_offs, dy.to(dy_ptr.dtype.element_ty), mask=in_range)
    if GLU:
        if TRAINING:
            dz_g -= _param(sums_ptr + C_OUT, k, C_OUT, CL) * inv_n \
                + xhat_g * _param(sums_ptr + K + C_OUT, k, C_OUT, CL) * inv_n
        dyg = tl.where(valid, dz_g * _param(scale_ptr + C_OUT, k, C_OUT, CL), 0.0)
        tl.store(dy_ptr + d_offs + C_OUT * NPH * d_c, dyg.to(dy_ptr.dtype.element_ty), mask=in_range)


# --------------------------------------------------------------------------------------------
# Launch wrappers
# --------------------------------------------------------------------------------------------
def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class _Geometry:
    """Sizes of one call: K BatchNorm channels, C_OUT output channels, y's planes, N values per
    channel, and the output shape."""

    def __init__(self, y: torch.Tensor, glu: bool, subpixel: bool):
        batch, channels, hp, wp = y.shape
        self.nph = 4 if subpixel else 1
        if channels % self.nph:
            raise ValueError(f"subpixel y must have 4K channels, got shape {tuple(y.shape)}")
        self.k = channels // self.nph
        if glu and self.k % 2:
            raise ValueError(f"GLU needs an even number of BatchNorm channels, got {self.k}")
        self.c_out = self.k // 2 if glu else self.k
        self.hp, self.wp = hp, wp
        self.h, self.w = (hp - 1, wp - 1) if subpixel else (hp, wp)
        if self.h < 1 or self.w < 1:
            raise ValueError(f"subpixel y needs planes of at least 2 x 2, got shape {tuple(y.shape)}")
        self.plane = hp * wp
        self.n = batch * self.nph * self.h * self.w
        self.out_shape = (batch, self.c_out, 2 * self.h if subpixel else self.h,
                          2 * self.w if subpixel else self.w)
        self.big = max(y.numel(), batch * self.c_out * self.out_shape[2] * self.out_shape[3]) >= 2**31 - 1
        self.subpixel = subpixel


def output_like(y: torch.Tensor, glu: bool, subpixel: bool,
                residual: torch.Tensor | None = None) -> torch.Tensor:
    """An uninitialised output for ``y`` (channels_last when y is; the dtype y + residual would
    promote to), also used by the fake ops."""
    geo = _Geometry(y, glu, subpixel)
    dtype = y.dtype if residual is None else torch.promote_types(y.dtype, residual.dtype)
    return _empty(geo.out_shape, dtype, y)


def _empty(shape, dtype: torch.dtype, like: torch.Tensor) -> torch.Tensor:
    """Every result buffer comes from here (tests fill it with NaN to catch unwritten elements)."""
    fmt = torch.channels_last if _channels_last(like) else torch.contiguous_format
    return torch.empty(shape, dtype=dtype, device=like.device, memory_format=fmt)


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.stride(1) == 1 and t.shape[1] > 1 and not t.is_contiguous()


def _flat(t: torch.Tensor) -> bool:
    """The (H, W) plane is one run of stride W-stride (so a flat index addresses it)."""
    return t.shape[2] == 1 or t.stride(2) == t.shape[3] * t.stride(3)


class _Plan:
    """Tile shape and tile count of one launch over ``channels`` channels.

    NCHW tiles hold up to 512 positions of one plane (2048 elements per tile); channels_last
    tiles hold up to 64 channel columns (channel x phase) and 2048 / columns positions. The
    interpreter gets 8x larger tiles (fewer Python-level programs). ``others``: the out-shaped
    tensors of the launch (their planes must be flat too for the flat addressing).
    """

    def __init__(self, y: torch.Tensor, geo: "_Geometry", channels: int, others=()):
        self.cl = _channels_last(y)
        big = 8 if _interpret() else 1
        batch = y.shape[0]
        if self.cl:
            cols = min(64, triton.next_power_of_2(channels) * geo.nph)
            self.block_c = max(1, cols // geo.nph)
            self.block_p = min(max(16, 2048 * big // cols), triton.next_power_of_2(batch * geo.plane))
            self.n_tiles, self.qb = triton.cdiv(batch * geo.plane, self.block_p), 1
        else:
            self.block_p = min(512 * big, triton.next_power_of_2(geo.plane))
            self.block_c = min(triton.next_power_of_2(channels), max(1, 2048 * big // self.block_p))
            self.qb = triton.cdiv(geo.plane, self.block_p)
            self.n_tiles = batch * geo.nph * self.qb
        self.channel_blocks = triton.cdiv(channels, self.block_c)
        self.flat = _flat(y) and (geo.subpixel or all(_flat(t) for t in others))
        self.geometry = (self.n_tiles, self.qb, batch * geo.plane, geo.plane, geo.wp, geo.h, geo.w)
        self.flags = {"CL": self.cl, "SUB": geo.subpixel, "FLAT": self.flat, "BIG": geo.big,
                      "BLOCK_P": self.block_p, "BLOCK_C": self.block_c}

    def splits(self, device: torch.device) -> tuple[int, int]:
        """(splits, tiles per split) of a reduction launch: about 4 programs per SM in all."""
        if device.type == "cuda":
            target = 4 * torch.cuda.get_device_properties(device).multi_processor_count
        else:
            target = 4
        splits = max(1, min(self.n_tiles, triton.cdiv(target, self.channel_blocks)))
        tiles = triton.cdiv(self.n_tiles, splits)
        return triton.cdiv(self.n_tiles, tiles), tiles

    def partial_rows(self, splits: int, nph: int) -> int:
        """Rows of the (rows, K) partials: one per split, times the phases for CL tiles."""
        return splits * nph if self.cl else splits


def _launch_options(y: torch.Tensor, warps: int = 4) -> dict:
    """GPU launch options. The two reductions take 8 warps: the backward one keeps ~10 live fp32
    values per tile element (y, gate, grad, both normalised inputs and dz's) and spilled ~140 bytes
    per thread with 4 warps on sm_80, the statistics 8 bytes on sm_90 with triton 3.6 (channels_last
    sub-pixel tiles); bench/kernel_resources.py."""
    return {} if y.device.type == "cpu" else {"num_warps": warps}


def _log_compile(kind: str, y: torch.Tensor, flags: dict) -> None:
    key = (kind, y.dtype, y.device.type, tuple(sorted(flags.items())))
    if key not in _compiled_once:
        _compiled_once.add(key)
        LOG.info("attnfast: compiling Triton bn_glu %s kernel for %s %s (first call)", kind, y.dtype, flags)


def check_inputs(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 residual: torch.Tensor | None, glu: bool, subpixel: bool, training: bool) -> None:
    """Shapes, dtypes and devices the kernels need; errors name the argument."""
    if y.dim() != 4 or y.dtype not in DTYPES:
        raise TypeError(f"y must be a (B, K, H, W) tensor of dtype in {DTYPES}, got shape "
                        f"{tuple(y.shape)}, dtype {y.dtype}")
    geo = _Geometry(y, glu, subpixel)
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (geo.k,) or t.device != y.device:
            raise ValueError(f"{name} must have shape ({geo.k},) on {y.device}, got "
                             f"{tuple(t.shape)} on {t.device}")
    if training and geo.n < 2:
        raise ValueError(f"BatchNorm in training mode needs more than 1 value per channel, got "
                         f"y of shape {tuple(y.shape)}")
    if residual is not None and (tuple(residual.shape) != geo.out_shape or residual.device != y.device):
        raise ValueError(f"residual must have shape {geo.out_shape} on {y.device}, got "
                         f"{tuple(residual.shape)} on {residual.device}")


def _scale_shift(weight, bias, mean, invstd):
    scale = weight.float() * invstd
    return scale, bias.float() - mean * scale


def bn_act_forward(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   residual: torch.Tensor | None, running_mean: torch.Tensor | None,
                   running_var: torch.Tensor | None, training: bool, eps: float,
                   glu: bool, subpixel: bool):
    """BatchNorm of y then GLU (``glu``) or + residual, in one statistics and one apply pass.

    Args:
        y: (B, K, H, W) or, with ``subpixel``, (B, 4K, H+1, W+1) phases; fp32/bf16/fp16, any
            strides (channels_last kept).
        weight, bias: (K,) BatchNorm affine parameters (ones/zeros when the BN has none).
        residual: a tensor of out's shape added at the end, or None.
        running_mean, running_var: (K,), read in eval mode only (``training=False``).
    Returns:
        out (B, K/2 if glu else K, H', W') (H' = 2H for subpixel) in y's dtype (promoted with
        residual's) and memory format, and the fp32 (K,) tensors mean, invstd (batch or running
        statistics) and the unbiased batch variance (for running_var; the running one in eval).
    """
    geo = _Geometry(y, glu, subpixel)
    out = output_like(y, glu, subpixel, residual)
    if training:
        plan = _Plan(y, geo, geo.k)
        splits, per_split = plan.splits(y.device)
        rows = plan.partial_rows(splits, geo.nph)
        f32 = {"device": y.device, "dtype": torch.float32}
        mean_part, m2_part, cnt_part = (torch.empty((rows, geo.k), **f32) for _ in range(3))
        _log_compile("stats", y, plan.flags)
        _stats_kernel[(plan.channel_blocks, splits)](
            y, mean_part, m2_part, cnt_part, geo.k, *plan.geometry, per_split, *y.stride(),
            **plan.flags, **_launch_options(y, warps=8))
        mean, invstd, var, scale, shift = (torch.empty((geo.k,), **f32) for _ in range(5))
        _finalize_kernel[(triton.cdiv(geo.k, 64),)](
            mean_part, m2_part, cnt_part, weight, bias, mean, invstd, var, scale, shift,
            geo.k, rows, float(geo.n), float(eps), BLOCK_S=32, BLOCK_K=64)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("eval-mode BatchNorm needs running_mean and running_var")
        mean = running_mean.float().clone()
        var = running_var.float().clone()
        invstd = torch.rsqrt(var + eps)
        scale, shift = _scale_shift(weight, bias, mean, invstd)
    affine_act(y, scale, shift, residual, glu, subpixel, out=out)
    return out, mean, invstd, var


def affine_act(y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
               residual: torch.Tensor | None, glu: bool, subpixel: bool,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """The apply pass alone: z = y * scale + shift per BatchNorm channel, then GLU or + residual.

    y: as in :func:`bn_act_forward`; scale, shift: (K,). This is the eval-mode BatchNorm and the
    inference epilogue (scale = 1, shift = the folded bias). Returns ``out`` (allocated when
    None) of shape (B, K/2 if glu else K, H', W').
    """
    geo = _Geometry(y, glu, subpixel)
    if out is None:
        out = output_like(y, glu, subpixel, residual)
    scale = scale.to(device=y.device, dtype=torch.float32).contiguous()
    shift = shift.to(device=y.device, dtype=torch.float32).contiguous()
    res = residual if residual is not None else out
    plan = _Plan(y, geo, geo.c_out, (out, res))
    flags = dict(plan.flags, GLU=glu, RESIDUAL=residual is not None)
    _log_compile("apply", y, flags)
    _apply_kernel[(plan.n_tiles, plan.channel_blocks)](
        y, out, res, scale, shift, geo.c_out, *plan.geometry, *y.stride(), *out.stride(),
        *res.stride(), **flags, **_launch_options(y))
    return out


def bn_act_backward(grad_out: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                    training: bool, glu: bool, subpixel: bool):
    """Gradients of :func:`bn_act_forward` (the residual's gradient is grad_out itself).

    Args:
        grad_out: out-shaped, any strides (stride-0 expanded gradients included); y, weight,
            bias: the forward's inputs; mean, invstd: the fp32 (K,) statistics it returned.
    Returns:
        dy (y's shape, dtype and memory format; zero at unused phase borders), dweight and dbias
        (K,) in weight's / bias's dtype.
    """
    geo = _Geometry(y, glu, subpixel)
    dy = _empty(y.shape, y.dtype, y)
    scale, shift = _scale_shift(weight, bias, mean, invstd)
    plan = _Plan(y, geo, geo.c_out, (grad_out,))
    flags = dict(plan.flags, GLU=glu)
    splits, per_split = plan.splits(y.device)
    rows = plan.partial_rows(splits, geo.nph)
    part = torch.empty((2, rows, geo.k), device=y.device, dtype=torch.float32)
    _log_compile("backward", y, flags)
    _bwd_reduce_kernel[(plan.channel_blocks, splits)](
        y, grad_out, scale, shift, mean, invstd, part, geo.k, geo.c_out, *plan.geometry, per_split,
        rows, *y.stride(), *grad_out.stride(), **flags, **_launch_options(y, warps=8))
    sums = part.sum(1)                                                    # (2, K): dbeta, dgamma
    _bwd_apply_kernel[(plan.n_tiles, plan.channel_blocks)](
        y, grad_out, dy, scale, shift, mean, invstd, sums, geo.k, geo.c_out, *plan.geometry,
        1.0 / geo.n, *y.stride(), *grad_out.stride(), *dy.stride(), TRAINING=training, **flags,
        **_launch_options(y))
    return dy, sums[1].to(weight.dtype, copy=True), sums[0].to(bias.dtype, copy=True)
