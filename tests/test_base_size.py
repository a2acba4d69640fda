"""model.base_size 32: a first stage at 32x32 (stages 32, 64[, 128]) for small CPU runs such as the demo."""
import pytest
import torch
from test_train import TINY

from attnfast.config import load_config
from attnfast.models import D_NET, D_NET32, G_NET
from attnfast.models.build import stage_resolutions
from attnfast.sample import sample
from attnfast.trainer.damsm import train_damsm
from attnfast.trainer.gan import train_gan


@pytest.mark.parametrize("branch_num", [1, 2, 3])
def test_generator_stage_sides_halve_with_base_32(branch_num):
    netG = G_NET(ngf=4, nef=16, ncf=8, z_dim=8, branch_num=branch_num, r_num=1, base_size=32).eval()
    words = torch.randn(3, 16, 5)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[1, 3:] = True
    fakes, atts, _mu, _logvar = netG(torch.randn(3, 8), torch.randn(3, 16), words, mask)
    assert [f.shape[-1] for f in fakes] == [32 * 2 ** i for i in range(branch_num)]
    assert all(f.shape[:2] == (3, 3) for f in fakes)
    assert [a.shape for a in atts] == [(3, 5, 32 * 2 ** i, 32 * 2 ** i) for i in range(branch_num - 1)]
    assert "h_net1.upsample4.0.weight" not in netG.state_dict() and "h_net1.upsample3.1.weight" in netG.state_dict()


def test_base_64_keeps_the_original_keys():
    keys = G_NET(ngf=4, nef=16, ncf=8, z_dim=8, branch_num=2, r_num=1).state_dict()
    assert "h_net1.upsample4.1.weight" in keys and keys["h_net1.fc.0.weight"].shape == (4 * 16 * 4 * 4 * 2, 16)


def test_d_net32_maps_32px_images_to_the_4x4_code():
    netD = D_NET(32, ndf=4, nef=16)
    assert isinstance(netD, D_NET32)
    code = netD(torch.randn(2, 3, 32, 32))
    assert code.shape == (2, 32, 4, 4)
    assert netD.COND_DNET(code, torch.randn(2, 16), logits=True).shape == (2,)
    with pytest.raises(ValueError, match="32, 32"):
        netD(torch.randn(2, 3, 64, 64))


def test_bad_base_size_is_refused():
    with pytest.raises(ValueError, match="base_size"):
        G_NET(ngf=4, nef=16, ncf=8, z_dim=8, base_size=48)
    with pytest.raises(ValueError, match="base_size"):
        stage_resolutions(load_config(None, TINY + ["model.base_size=16"]))


def test_base_32_trains_and_samples(tmp_path):
    config = load_config(None, TINY + ["model.base_size=32"])
    assert stage_resolutions(config) == (32, 64)
    cpu = torch.device("cpu")
    damsm = train_damsm(config, tmp_path, cpu, steps=2, progress=False)
    summary = train_gan(config, tmp_path, cpu, damsm["checkpoint"], steps=2, progress=False)
    out = sample(summary["checkpoint"], ["a large red circle in the center"], tmp_path / "samples",
                 n=2, batch=2, attention=True, device=cpu)
    from PIL import Image
    pngs = sorted((tmp_path / "samples").glob("*.png"))
    assert pngs and out
    sides = {Image.open(p).size for p in pngs if "attention" not in p.name}
    assert (64, 64) in sides
