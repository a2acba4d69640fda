"""Data-parallel training (issue 8): 2 gloo processes on the CPU make the same update as one process
on the same global batch; per-rank data shards; the GAN trainer on 2 ranks stays in sync and only
rank 0 writes its checkpoint."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from attnfast.trainer import distributed
from attnfast.trainer.batches import epoch_batches, step_batches
from attnfast.trainer.distributed import DistContext

WORLD = 2


def _init(rank: int, store: str) -> DistContext:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    return DistContext(rank, WORLD)


def _tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 3))


def _update(model, inputs, targets, ctx: DistContext, steps: int = 3):
    """``steps`` Adam updates on the mean squared error of this rank's rows of the global batch."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    rows = distributed.rank_slice(inputs.shape[0], ctx)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(inputs[rows]), targets[rows])
        loss.backward()
        distributed.average_gradients(model.parameters(), ctx)
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, store: str, out: str, seed: int, damsm: str) -> None:
    """Both 2-rank checks in one spawn (a process start costs seconds): the tiny model's update,
    then two GAN trainer steps."""
    ctx = _init(rank, store)
    try:
        model = _tiny_model(seed + rank)           # different initial weights per rank ...
        distributed.broadcast_module(model, ctx)   # ... replaced by rank 0's
        generator = torch.Generator().manual_seed(seed)
        inputs, targets = torch.randn(8, 6, generator=generator), torch.randn(8, 3, generator=generator)
        torch.save(_update(model, inputs, targets, ctx), os.path.join(out, f"rank{rank}.pt"))
        _gan_steps(rank, ctx, os.path.join(out, "gan"), damsm)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run :func:`_worker` on 2 gloo ranks once; returns (output directory, seed)."""
    from test_train import tiny_config

    from attnfast.trainer.damsm import train_damsm
    out = tmp_path_factory.mktemp("ddp")
    seed = int(torch.randint(0, 2**31 - 1, ()).item())
    train_damsm(tiny_config(), out / "damsm", torch.device("cpu"), steps=1, progress=False)
    mp.spawn(_worker, args=(str(out / "store"), str(out), seed, str(out / "damsm" / "damsm.pt")),
             nprocs=WORLD, join=True)
    return out, seed


def test_two_gloo_ranks_make_the_update_of_one_process(two_ranks):
    out, seed = two_ranks
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = torch.randn(8, 6, generator=generator), torch.randn(8, 3, generator=generator)
    single = _update(_tiny_model(seed), inputs, targets, DistContext())
    for rank in range(WORLD):
        state = torch.load(out / f"rank{rank}.pt", weights_only=True)
        for key, value in single.items():
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=f"rank {rank}: {key}")


def test_shards_split_every_global_batch():
    from attnfast.data import ShapesDataset, collate_shapes
    data = ShapesDataset(12, resolution=16, multi_res=(16,), seed=1)
    global_batches = epoch_batches(len(data), 6, seed=3, epoch=0)
    shards = [step_batches(data, 6, 3, 0, collate_shapes, dist=DistContext(r, 3)) for r in range(3)]
    for expected in global_batches:
        got = [next(s)["indices"].tolist() for s in shards]
        assert [i for g in got for i in g] == expected and all(len(g) == 2 for g in got)
    assert distributed.shard(list(range(6)), DistContext(1, 3)) == [2, 3]
    with pytest.raises(ValueError, match="must be divisible by the world size 4"):
        distributed.shard(list(range(6)), DistContext(0, 4))


def test_init_from_env_without_torchrun_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx, device = distributed.init_from_env(torch.device("cpu"))
    assert ctx == DistContext() and not ctx.enabled and ctx.is_main and device.type == "cpu"
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        distributed.init_from_env(torch.device("cpu"))
    with pytest.raises(ValueError, match="--sync-bn needs CUDA"):
        distributed.convert_sync_batch_norm(torch.nn.BatchNorm2d(3), torch.device("cpu"))


# Issue 20's options, all on: DiffAugment, hinge, MA-GP, spectral norm, TTUR betas, mode seeking.
OPTIONS = ["gan.diffaugment=color,translation,cutout", "gan.loss=hinge", "gan.gp=magp",
           "gan.spectral_norm=true", "gan.g_betas=[0.0,0.9]", "gan.d_betas=[0.0,0.9]", "gan.mode_seeking=1.0"]


def _gan_steps(rank: int, ctx: DistContext, out: str, damsm: str) -> None:
    from test_train import tiny_config

    from attnfast.trainer.gan import GANTrainer
    for name, extra in (("", []), ("_options", OPTIONS)):
        torch.manual_seed(100 + rank)                   # rank 0's weights are broadcast
        trainer = GANTrainer(tiny_config(*extra), out + name, torch.device("cpu"), damsm, dist=ctx)
        torch.manual_seed(7)
        trainer.run(trainer.batches(), 2, progress=False)
        state = {"G": trainer.netG.state_dict(), "D": [d.state_dict() for d in trainer.netsD],
                 "EMA": trainer.ema.model.state_dict()}
        torch.save(state, os.path.join(out + name, f"gan_rank{rank}.pt"))


@pytest.mark.parametrize("name", ["gan", "gan_options"])
def test_gan_trainer_on_two_ranks_stays_in_sync_and_rank0_writes(two_ranks, name):
    out = two_ranks[0] / name
    states = [torch.load(out / f"gan_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for key in ("G", "EMA"):
        for entry, value in states[0][key].items():
            assert torch.equal(value, states[1][key][entry]), f"{key}.{entry} differs between ranks"
    for d0, d1 in zip(states[0]["D"], states[1]["D"], strict=True):
        assert all(torch.equal(v, d1[k]) for k, v in d0.items())
    assert (out / "gan.pt").is_file()                     # written once, by rank 0
    lines = (out / "gan_log.jsonl").read_text().splitlines()
    assert len(lines) == 2                                # log_every=1, rank 0 only


def test_batch_norm_modules_form_equals_the_fused_blocks(fresh_seed):
    """--sync-bn runs upBlock/ResBlock in their original form so that SyncBatchNorm is called."""
    import copy

    from attnfast import ops
    model = torch.nn.Sequential(ops.ResBlock(4), ops.upBlock(4, 3)).train()
    literal = distributed.use_batch_norm_modules(copy.deepcopy(model))
    calls = []
    for bn in (m for m in literal.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(literal(x), model(x), rtol=1e-4, atol=1e-5)
    assert len(calls) == 3                                    # every BatchNorm module ran
    for a, b in zip(literal.buffers(), model.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert copy.deepcopy(literal)[0].forward.__self__ is not literal[0]   # EMA copies stay independent
