"""Published limits of the GPUs attnfast plans for (A100, H100, H200), and the two models built on
them: the theoretical occupancy of a kernel (blocks and warps resident per SM) and the lower-bound
time of a piece of work (its bytes at the copy bandwidth, its FLOPs at the peak rate).

Both are models, not measurements: the occupancy follows the CUDA occupancy calculator's rules
(registers allocated per warp in units of 256 and split over the SM's 4 sub-partitions, shared
memory in units of 128 bytes plus 1 KB the driver reserves per block); the bandwidths and rates are
the figures issue 18 gives (DESIGN.md §7: a device-to-device copy moved about 3.0 TB/s on the lent
H100, a large bf16 matmul ran at about 800 TFLOP/s; the H200 moved about 4.3 TB/s).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class SmLimits:
    """Per-SM resources of one compute capability (CUDA programming guide, table of technical
    specifications per compute capability)."""
    arch: int                       # compute capability x 10: 80 (A100), 90 (H100/H200)
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    max_regs_per_thread: int = 255
    reg_alloc_unit: int = 256        # registers are allocated per warp in units of 256
    sub_partitions: int = 4          # warp schedulers; each holds a quarter of the register file
    smem_per_sm: int = 0             # bytes of shared memory per SM (largest carve-out)
    smem_per_block: int = 0          # bytes one block may use (opt-in maximum)
    smem_alloc_unit: int = 128
    smem_reserved_per_block: int = 1024
    threads_per_sm: int = 2048
    blocks_per_sm: int = 32
    warp_size: int = 32


SM80 = SmLimits(arch=80, smem_per_sm=164 * 1024, smem_per_block=163 * 1024)
SM90 = SmLimits(arch=90, smem_per_sm=228 * 1024, smem_per_block=227 * 1024)
ARCHS = {80: SM80, 90: SM90}


@dataclass(frozen=True)
class Gpu:
    """A device for the lower-bound model: its SM limits, SM count, copy bandwidth (bytes/s, read +
    write counted) and peak rates (FLOP/s): dense bf16/fp16 on tensor cores; fp32 on the FMA units
    (attnfast's fp32 kernels and PyTorch's fp32 matmuls use IEEE fp32, no TF32); "tf32" for fp32
    convolutions, which cuDNN runs on the tensor cores in TF32 by default (half the bf16 rate)."""
    name: str
    sm: SmLimits
    sms: int
    copy_bytes_per_s: float
    bf16_flop_per_s: float
    fp32_flop_per_s: float

    def flop_rate(self, dtype: str) -> float:
        """Peak FLOP/s for work in ``dtype`` ("float32", "tf32", "bfloat16" or "float16")."""
        if dtype == "tf32":
            return self.bf16_flop_per_s / 2
        return self.fp32_flop_per_s if dtype == "float32" else self.bf16_flop_per_s


GPUS = (
    Gpu("A100", SM80, 108, 1.6e12, 312e12, 19.5e12),
    Gpu("H100", SM90, 132, 3.0e12, 800e12, 67e12),
    Gpu("H200", SM90, 132, 4.3e12, 800e12, 67e12),
)


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(sm: SmLimits, threads: int, regs: int, smem: int) -> dict:
    """Blocks and warps resident per SM for a kernel of ``threads`` per block, ``regs`` registers
    per thread and ``smem`` bytes of shared memory per block (static + dynamic), and which resource
    limits it ("threads", "blocks", "registers", "shared").

    Zero blocks means the kernel cannot launch on this SM (too many registers or too much shared
    memory for one block)."""
    warps = -(-threads // sm.warp_size)
    regs_per_warp = _round_up(max(regs, 1) * sm.warp_size, sm.reg_alloc_unit)
    limits = {"threads": sm.threads_per_sm // (warps * sm.warp_size), "blocks": sm.blocks_per_sm}
    # the hardware's per-block check assumes the block's warps spread over every sub-partition
    regs_per_block = regs_per_warp * _round_up(warps, sm.sub_partitions)
    if regs > sm.max_regs_per_thread or regs_per_block > sm.regs_per_block:
        limits["registers"] = 0
    else:
        warps_per_partition = sm.regs_per_sm // sm.sub_partitions // regs_per_warp
        limits["registers"] = warps_per_partition * sm.sub_partitions // warps
    if smem > sm.smem_per_block:
        limits["shared"] = 0
    else:
        limits["shared"] = sm.smem_per_sm // _round_up(smem + sm.smem_reserved_per_block, sm.smem_alloc_unit)
    blocks = min(limits.values())
    limiter = min(limits, key=limits.get)         # ties: the first of threads, blocks, registers, shared
    return {"blocks": blocks, "warps": blocks * warps,
            "warps_fraction": blocks * warps * sm.warp_size / sm.threads_per_sm, "limited_by": limiter}


def lower_bound_seconds(gpu: Gpu, nbytes: float, flops: float, dtype: str) -> float:
    """The time below which no implementation can do the work on ``gpu``: moving ``nbytes`` at the
    copy bandwidth or computing ``flops`` at the peak rate for ``dtype``, whichever is longer."""
    return max(nbytes / gpu.copy_bytes_per_s, flops / gpu.flop_rate(dtype))


def predicted_rows(cases: list[dict]) -> list[dict]:
    """Lower-bound rows for ``cases`` ({"case", "dtype", "bytes", "flops"}, plus an optional
    "per_call_items" to express the bound as items per second): one row per case with the time (µs)
    on each GPU of :data:`GPUS` and whether bytes or FLOPs bound it."""
    rows = []
    for case in cases:
        row = {"case": case["case"], "dtype": case["dtype"], "bytes": case["bytes"], "flops": case["flops"]}
        for gpu in GPUS:
            seconds = lower_bound_seconds(gpu, case["bytes"], case["flops"], case["dtype"])
            row[f"{gpu.name}_us"] = seconds * 1e6
            if case.get("per_call_items"):
                row[f"{gpu.name}_items_per_s"] = case["per_call_items"] / seconds
            bytes_time = case["bytes"] / gpu.copy_bytes_per_s
            row[f"{gpu.name}_bound"] = "bytes" if bytes_time >= seconds else "flops"
        rows.append(row)
    return rows


def print_predicted(rows: list[dict], print_table) -> None:
    """Print the rows of :func:`predicted_rows` with the benches' table printer, labelled as a model."""
    if not rows:
        return
    print("Predicted GPU lower bounds (a MODEL from published limits, not a measurement): "
          + ", ".join(f"{g.name} {g.copy_bytes_per_s / 1e12:.1f} TB/s, bf16 {g.bf16_flop_per_s / 1e12:.0f} / "
                      f"fp32 {g.fp32_flop_per_s / 1e12:.1f} TFLOP/s" for g in GPUS))
    columns = [("case", "case", ""), ("dtype", "dtype", ""), ("bytes", "MB", "")]
    shown = [dict(r, bytes=f"{r['bytes'] / 1e6:.1f}") for r in rows]
    columns += [("flops", "GFLOP", "")]
    shown = [dict(r, flops=f"{r['flops'] / 1e9:.2f}") for r in shown]
    for gpu in GPUS:
        columns.append((f"{gpu.name}_us", f"{gpu.name} us", ".1f"))
    if any("H100_items_per_s" in r for r in rows):
        columns += [(f"{gpu.name}_items_per_s", f"{gpu.name} items/s", ".3g") for gpu in GPUS]
    columns.append(("H100_bound", "bound by", ""))
    print_table(shown, columns)
