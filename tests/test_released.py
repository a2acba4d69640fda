"""Released AttnGAN weights: state dicts built with the original's key names (tests/original_keys.py,
random values, saved with torch.save as the original did) load into attnfast's modules."""
import original_keys as orig
import pytest
import torch

from attnfast.models import G_NET, released
from attnfast.models.released import ReleasedWeightsError


def fake_state(shapes: dict, *, batch_counts: bool = False, prefix: str = "", seed: int = 0) -> dict:
    """Random tensors with the original's keys; ``batch_counts`` False drops num_batches_tracked
    (files written by torch 0.3/0.4.0, as the released ones)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            if batch_counts:
                state[prefix + key] = torch.tensor(7)
            continue
        value = torch.randn(shape, generator=gen) * 0.1
        if key.endswith("running_var"):
            value = value.abs() + 0.5
        state[prefix + key] = value
    return state


def save(tmp_path, name, state, legacy=False):
    path = tmp_path / name
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


SMALL_G = {"branch_num": 3, "ngf": 4, "nef": 8, "ncf": 6, "z_dim": 5, "r_num": 1}


@pytest.mark.parametrize("prefix,legacy,batch_counts", [("", False, False), ("module.", True, True)])
def test_generator_loads_with_inferred_sizes(tmp_path, prefix, legacy, batch_counts):
    state = fake_state(orig.g_net(**SMALL_G), prefix=prefix, batch_counts=batch_counts)
    path = save(tmp_path, "netG_epoch_600.pth", state, legacy)
    net = released.load_released_generator(path)
    assert not net.training
    assert (net.ngf, net.nef, net.ncf, net.z_dim, net.branch_num) == (4, 8, 6, 5, 3)
    assert len(net.h_net2.residual) == 1
    assert net.h_net2.att.mask_mode == net.h_net3.att.mask_mode == "attngan"
    loaded = net.state_dict()
    for key, value in state.items():
        torch.testing.assert_close(loaded[key[len(prefix):]], value, rtol=0, atol=0)
    if batch_counts:
        assert int(loaded["h_net1.fc.1.num_batches_tracked"]) == 7


def test_generator_samples_as_the_same_weights_in_a_fresh_g_net(tmp_path):
    state = fake_state(orig.g_net(**SMALL_G))
    net = released.load_released_generator(save(tmp_path, "netG.pth", state))
    twin = G_NET(ngf=4, nef=8, ncf=6, z_dim=5, branch_num=3, r_num=1, mask_mode="attngan").eval()
    twin.load_state_dict(net.state_dict())
    gen = torch.Generator().manual_seed(1)
    z, sent = torch.randn(3, 5, generator=gen), torch.randn(3, 8, generator=gen)
    words, eps = torch.randn(3, 8, 7, generator=gen), torch.randn(3, 6, generator=gen)
    mask = torch.arange(7)[None, :] >= torch.tensor([[7], [3], [5]])
    with torch.no_grad():
        ours, theirs = net(z, sent, words, mask, eps), twin(z, sent, words, mask, eps)
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1], strict=True):
        torch.testing.assert_close(a, b)
    assert ours[0][-1].shape == (3, 3, 256, 256)


def test_generator_birds_sizes_inferred_on_original_shapes():
    sizes = released.generator_sizes({k: torch.empty(s, device="meta") for k, s in orig.g_net().items()})
    assert sizes == {"ngf": 32, "nef": 256, "ncf": 100, "z_dim": 100, "branch_num": 3, "r_num": 2}
    one_stage = {k: torch.empty(s, device="meta") for k, s in orig.g_net(branch_num=1).items()}
    assert released.generator_sizes(one_stage)["branch_num"] == 1


def test_generator_mask_mode_and_sizes_can_be_overridden(tmp_path):
    path = save(tmp_path, "netG.pth", fake_state(orig.g_net(**SMALL_G)))
    net = released.load_released_generator(path, mask_mode="correct")
    assert net.h_net2.att.mask_mode == "correct"
    with pytest.raises(ReleasedWeightsError, match=r"G_NET: shape mismatches \[h_net1\.fc\.0\.weight: "
                                                      r"file \(2048, 11\) vs model \(4096, 11\)"):
        released.load_released_generator(path, ngf=8)


def test_mismatch_names_missing_unexpected_and_shapes(tmp_path):
    state = fake_state(orig.g_net(**SMALL_G))
    del state["h_net2.att.conv_context.weight"]
    state["h_net2.extra.weight"] = torch.zeros(2)
    state["img_net3.img.0.weight"] = torch.zeros(3, 5, 3, 3)
    path = save(tmp_path, "netG_bad.pth", state)
    with pytest.raises(ReleasedWeightsError) as info:
        released.load_released_generator(path)
    text = str(info.value)
    assert "netG_bad.pth" in text
    assert "missing keys [h_net2.att.conv_context.weight]" in text
    assert "unexpected keys [h_net2.extra.weight]" in text
    assert "img_net3.img.0.weight: file (3, 5, 3, 3) vs model (3, 4, 3, 3)" in text


def test_wrong_file_kind_and_bad_files(tmp_path):
    text_state = fake_state(orig.rnn_encoder(50, ninput=12, nhidden=16))
    text_path = save(tmp_path, "text_encoder200.pth", text_state)
    with pytest.raises(ReleasedWeightsError, match=r"not look like a G_NET .*'ca_net\.fc\.weight'"):
        released.load_released_generator(text_path)
    with pytest.raises(FileNotFoundError, match="G_NET .*missing_netG.pth"):
        released.load_released_generator(tmp_path / "missing_netG.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ReleasedWeightsError, match="garbage.pth.*weights_only"):
        released.load_released_text_encoder(garbage)
    torch.save({"encoder.weight": torch.zeros(2, 2), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ReleasedWeightsError, match=r"not tensors: \[epoch\]"):
        released.load_released_text_encoder(tmp_path / "mixed.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"encoder.weight": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ReleasedWeightsError, match="evil.pth"):
        released.read_state_dict(tmp_path / "evil.pth")


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_text_encoder_loads_and_encodes(tmp_path, rnn_type):
    shapes = orig.rnn_encoder(50, ninput=12, nhidden=16)
    if rnn_type == "GRU":  # 3 gates instead of 4
        shapes = {k: (s[0] * 3 // 4, *s[1:]) if k.startswith("rnn.") else s for k, s in shapes.items()}
    state = fake_state(shapes)
    path = save(tmp_path, "text_encoder200.pth", state, legacy=True)
    enc = released.load_released_text_encoder(path, words_num=12)
    assert (enc.ntoken, enc.ninput, enc.nhidden, enc.rnn_type, enc.n_steps) == (50, 12, 8, rnn_type, 12)
    assert released.text_encoder_sizes(state)["nhidden"] == 16 and not enc.training
    words, sent = enc(torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2]))
    assert words.shape == (2, 16, 3) and sent.shape == (2, 16)
    torch.testing.assert_close(enc.encoder.weight, state["encoder.weight"], rtol=0, atol=0)


def test_text_encoder_birds_sizes():
    sizes = released.text_encoder_sizes({k: torch.empty(s, device="meta")
                                         for k, s in orig.rnn_encoder(5450).items()})
    assert sizes == {"ntoken": 5450, "ninput": 300, "nhidden": 256, "nlayers": 1, "bidirectional": True,
                     "rnn_type": "LSTM"}


def test_image_encoder_loads(tmp_path):
    state = fake_state(orig.cnn_encoder(nef=16))
    path = save(tmp_path, "image_encoder200.pth", state)
    enc = released.load_released_image_encoder(path)
    assert enc.nef == 16 and enc.align_corners and not enc.training
    loaded = enc.state_dict()
    for key in ("emb_features.weight", "emb_cnn_code.bias", "Mixed_7c.branch_pool.bn.running_var",
                "Conv2d_1a_3x3.conv.weight"):
        torch.testing.assert_close(loaded[key], state[key], rtol=0, atol=0)
    del state["emb_features.weight"]
    with pytest.raises(ReleasedWeightsError, match=r"missing keys \[emb_features\.weight\]"):
        released.load_released_image_encoder(save(tmp_path, "bad.pth", state))


def test_sample_cli_from_released_weights(tmp_path, capsys):
    from attnfast import sample
    from attnfast.data import Vocabulary
    from attnfast.data.attngan_text import save_captions_pickle
    vocab = Vocabulary(["a", "small", "red", "bird", "with", "wings"])
    save_captions_pickle(tmp_path / "captions.pickle", [[1, 2, 3, 4]], [[1, 3, 4]], vocab)
    torch.save(fake_state(orig.g_net(**SMALL_G), prefix="module."), tmp_path / "netG_epoch_600.pth")
    torch.save(fake_state(orig.rnn_encoder(len(vocab), ninput=12, nhidden=8)), tmp_path / "text_encoder200.pth")
    argv = ["--netG", str(tmp_path / "netG_epoch_600.pth"), "--text-encoder",
            str(tmp_path / "text_encoder200.pth"), "--vocab", str(tmp_path / "captions.pickle"),
            "--caption", "a small red bird", "--caption", "a bird with red wings", "--n", "2",
            "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"]
    assert sample.main(argv) == 0
    pngs = sorted((tmp_path / "out").glob("*.png"))
    assert len(pngs) == 4
    from PIL import Image
    assert Image.open(pngs[0]).size == (256, 256)
    capsys.readouterr()
    torch.save(fake_state(orig.rnn_encoder(50, ninput=12, nhidden=8)), tmp_path / "text_encoder200.pth")
    assert sample.main(argv) == 2
    assert "7 words but" in capsys.readouterr().err
    assert sample.main(argv[:2] + argv[6:]) == 2
    assert "--netG needs --text-encoder PATH and --vocab" in capsys.readouterr().err
