"""The generator's noise drawn from seeds: z and the conditioning-augmentation noise eps."""
import torch


def fixed_noise(config: dict, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise z (count, z_dim) and CA noise eps (count, condition_dim) from one seeded CPU generator."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, config["model"]["z_dim"], generator=generator)
    return noise, torch.randn(count, config["model"]["condition_dim"], generator=generator)


def seeded_noise(seeds, z_dim: int, condition_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One item per seed (an iterable of ints): z (N, z_dim) and eps (N, condition_dim), row i drawn from a CPU generator
    seeded with seeds[i] (z first, then eps: row i equals ``fixed_noise(config, 1, seeds[i])``).
    Every front end draws its image j with seed + j, so that the same caption and seed give the same
    image from ``sample``, ``eval`` and ``serve``, whatever the batch."""
    config = {"model": {"z_dim": z_dim, "condition_dim": condition_dim}}
    rows = [fixed_noise(config, 1, seed) for seed in seeds]
    return torch.cat([z for z, _ in rows]), torch.cat([eps for _, eps in rows])
