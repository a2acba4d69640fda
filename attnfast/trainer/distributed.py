"""Data-parallel training across processes (``torchrun --nproc_per_node N -m attnfast.train ...``).

- :func:`init_from_env` reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT
  and starts the process group: NCCL for CUDA, gloo for the CPU. A plain (non-torchrun) run is
  world size 1 and starts nothing.
- Every rank reads its own contiguous slice of each global batch (``step_batches(dist=ctx)``);
  the global batch is the config's batch size, so N ranks make the same update as one process.
- :func:`average_gradients` is DDP's gradient all-reduce (mean over ranks), done explicitly after
  each backward: the GAN step calls the discriminators' heads as submodules and runs two forward
  passes per backward, which ``DistributedDataParallel``'s forward hooks would not see. Buffers
  (BatchNorm running statistics) follow rank 0 as DDP's ``broadcast_buffers`` does, unless
  SyncBatchNorm is asked for (CUDA only).
- Checkpoints, logs and sample grids are written by rank 0 only; every rank loads on resume.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from attnfast import ops


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of this process (rank 0 of 1 when not distributed)."""
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def init_from_env(device: torch.device) -> tuple[DistContext, torch.device]:
    """Start the process group from torchrun's environment; returns the context and this rank's device.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` (a ``--device cuda`` without index is replaced).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(), device
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
    return DistContext(rank, world), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: list[int], ctx: DistContext) -> list[int]:
    """This rank's contiguous slice of one global batch (the batch size must divide evenly)."""
    if len(indices) % ctx.world:
        raise ValueError(f"the global batch size {len(indices)} must be divisible by the world size "
                         f"{ctx.world} (each rank takes batch_size / world items)")
    per = len(indices) // ctx.world
    return indices[ctx.rank * per:(ctx.rank + 1) * per]


def rank_slice(size: int, ctx: DistContext) -> slice:
    """The rows of a global batch of ``size`` that belong to this rank (see :func:`shard`)."""
    per = size // ctx.world
    return slice(ctx.rank * per, (ctx.rank + 1) * per)


def broadcast_module(module: torch.nn.Module, ctx: DistContext, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters (unless ``buffers_only``) and buffers to every rank."""
    if not ctx.enabled:
        return
    tensors = ([] if buffers_only else list(module.parameters())) + list(module.buffers())
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def average_gradients(parameters, ctx: DistContext) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one flat all-reduce).

    Every rank must hold a gradient for the same parameters (None on all ranks is skipped).
    """
    if not ctx.enabled:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ctx.world)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def convert_sync_batch_norm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` with every BatchNorm turned into SyncBatchNorm (statistics over all ranks).

    The fused ``ops.upBlock`` / ``ops.ResBlock`` compute batch norm from the module's parameters
    without calling it, which would bypass SyncBatchNorm: they are switched to their literal
    original forms first (:func:`use_batch_norm_modules`)."""
    if device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm runs on the GPU only)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(use_batch_norm_modules(module))


def _up_block_literal(self, x):
    return torch.nn.Sequential.forward(self, x)      # Upsample -> conv3x3 -> BN module -> GLU


def _res_block_literal(self, x):
    return self.block(x) + x                          # the original ResBlock: block(x) + residual


def use_batch_norm_modules(module: torch.nn.Module) -> torch.nn.Module:
    """Make every ``ops.upBlock`` and ``ops.ResBlock`` in ``module`` run its original Sequential
    form, which calls its BatchNorm modules (in place; returns ``module``). Same values, slower."""
    import types

    for child in module.modules():
        if isinstance(child, ops.upBlock):
            child.forward = types.MethodType(_up_block_literal, child)
        elif isinstance(child, ops.ResBlock):
            child.forward = types.MethodType(_res_block_literal, child)
    return module
