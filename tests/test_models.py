"""Model tests: shapes of every stage, the original state_dict keys and shapes, state_dict round
trips, the text encoder's batching contract, one backward pass, the Inception weights loader."""
import warnings

import original_keys as orig
import pytest
import torch

from attnfast.models import (
    CA_NET,
    CNN_ENCODER,
    D_GET_LOGITS,
    D_NET,
    D_NET64,
    D_NET128,
    D_NET256,
    G_NET,
    RNN_ENCODER,
    Inception3,
    KL_loss,
    SmallImageEncoder,
    image_encoder,
    load_inception_weights,
    weights_init,
)


def shapes_of(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def on_meta(factory):
    """Build a module without allocating or initialising its weights (for key/shape checks)."""
    with torch.device("meta"):
        return factory()


def untrained_cnn_encoder(**kwargs):
    with pytest.warns(UserWarning, match="untrained"):
        return CNN_ENCODER(**kwargs)


def captions_batch(lengths, ntoken=50, total=None):
    """(B, T) token ids in [1, ntoken) with zero padding after each length."""
    total = total or max(lengths)
    caps = torch.randint(1, ntoken, (len(lengths), total))
    for i, n in enumerate(lengths):
        caps[i, n:] = 0
    return caps, torch.tensor(lengths)


# --- state_dict keys and shapes of the original modules (birds config) -----------------------

@pytest.mark.parametrize("branch_num", [1, 2, 3])
def test_g_net_keys_match_original(branch_num):
    assert shapes_of(on_meta(lambda: G_NET(branch_num=branch_num))) == orig.g_net(branch_num)


def test_g_net_birds_headline_shapes():
    keys = orig.g_net()
    assert keys["h_net1.fc.0.weight"] == (16384, 200)
    assert keys["h_net2.att.conv_context.weight"] == (32, 256, 1, 1)
    assert keys["h_net3.residual.1.block.0.weight"] == (128, 64, 3, 3)


@pytest.mark.parametrize("resolution,cls", [(64, D_NET64), (128, D_NET128), (256, D_NET256)])
@pytest.mark.parametrize("b_jcu", [True, False])
def test_d_net_keys_match_original(resolution, cls, b_jcu):
    expected = orig.d_net(resolution, b_jcu=b_jcu)
    assert shapes_of(on_meta(lambda: cls(b_jcu=b_jcu))) == expected
    assert shapes_of(on_meta(lambda: D_NET(resolution, b_jcu=b_jcu))) == expected


def test_text_and_ca_keys_match_original():
    assert shapes_of(on_meta(lambda: RNN_ENCODER(5450))) == orig.rnn_encoder(5450)
    assert shapes_of(on_meta(CA_NET)) == orig.ca_net()


def test_cnn_encoder_keys_and_frozen_backbone():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = on_meta(CNN_ENCODER)
        inception = on_meta(Inception3)
    assert shapes_of(enc) == orig.cnn_encoder()
    assert shapes_of(inception) == orig.inception_v3()
    assert sum(p.numel() for p in inception.parameters()) == 23_834_568
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}


def test_state_dict_round_trip_strict(tmp_path):
    for make in (lambda: G_NET(ngf=8, nef=16, ncf=8, z_dim=8, branch_num=3),
                 lambda: D_NET256(ndf=4, nef=16), lambda: RNN_ENCODER(30, ninput=12, nhidden=16)):
        src, dst = make(), make()
        src.apply(weights_init)
        path = tmp_path / "m.pth"
        torch.save(src.state_dict(), path)
        dst.load_state_dict(torch.load(path, weights_only=True), strict=True)
        for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
            assert torch.equal(a, b), name


# --- shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("branch_num", [1, 2, 3])
def test_g_net_shapes(branch_num):
    batch, words, nef = 2, 5, 16
    g = G_NET(ngf=8, nef=nef, ncf=6, z_dim=10, branch_num=branch_num)
    mask = torch.zeros(batch, words, dtype=torch.bool)
    mask[1, 3:] = True
    imgs, atts, mu, logvar = g(torch.randn(batch, 10), torch.randn(batch, nef),
                               torch.randn(batch, nef, words), mask)
    assert [tuple(i.shape) for i in imgs] == [(batch, 3, 64 * 2 ** k, 64 * 2 ** k) for k in range(branch_num)]
    assert [tuple(a.shape) for a in atts] == [(batch, words, 64 * 2 ** k, 64 * 2 ** k)
                                              for k in range(branch_num - 1)]
    assert mu.shape == logvar.shape == (batch, 6)
    assert all(i.abs().max() <= 1 for i in imgs)
    for att in atts:  # padding words get no attention; each region's weights sum to one
        assert att[1, 3:].abs().max() == 0
        torch.testing.assert_close(att.sum(1), torch.ones_like(att[:, 0]))


def test_g_net_attngan_mask_mode_reaches_attention():
    g = G_NET(ngf=8, nef=16, ncf=6, z_dim=10, branch_num=3, mask_mode="attngan")
    assert g.h_net2.att.mask_mode == g.h_net3.att.mask_mode == "attngan"
    with pytest.raises(ValueError, match="branch_num"):
        G_NET(branch_num=4)


@pytest.mark.parametrize("cls,size", [(D_NET64, 64), (D_NET128, 128), (D_NET256, 256)])
def test_d_net_shapes_and_heads(cls, size):
    ndf, nef, batch = 4, 16, 2
    d = cls(ndf=ndf, nef=nef)
    code = d(torch.randn(batch, 3, size, size))
    assert code.shape == (batch, ndf * 8, 4, 4)
    sent = torch.randn(batch, nef)
    probs = d.COND_DNET(code, sent)
    logits = d.COND_DNET(code, sent, logits=True)
    assert probs.shape == logits.shape == (batch,)
    torch.testing.assert_close(probs, torch.sigmoid(logits))
    assert d.UNCOND_DNET(code, logits=True).shape == (batch,)
    with pytest.raises(ValueError, match="x_var"):
        d(torch.randn(batch, 3, size // 2, size // 2))


def test_d_get_logits_rejects_wrong_condition():
    head = D_GET_LOGITS(4, 16, bcondition=True)
    with pytest.raises(ValueError, match="c_code"):
        head(torch.randn(2, 32, 4, 4), torch.randn(2, 15))


def test_cnn_encoder_shapes_and_gradients():
    enc = untrained_cnn_encoder(nef=32).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    features, code = enc(x)
    assert features.shape == (1, 32, 17, 17) and code.shape == (1, 32)
    (features.sum() + code.sum()).backward()
    assert enc.emb_features.weight.grad is not None
    assert enc.Mixed_6e.branch1x1.conv.weight.grad is None


@pytest.mark.parametrize("size,regions,input_size", [(64, 8, 64), (256, 8, 128), (100, 4, 32)])
def test_small_image_encoder_shapes(size, regions, input_size):
    enc = SmallImageEncoder(nef=24, ndf=8, regions=regions, input_size=input_size)
    features, code = enc(torch.rand(3, 3, size, size) * 2 - 1)
    assert features.shape == (3, 24, regions, regions) and code.shape == (3, 24)
    assert isinstance(image_encoder("small", nef=24, ndf=8), SmallImageEncoder)
    with pytest.raises(ValueError, match="power of two"):
        SmallImageEncoder(regions=8, input_size=48)
    with pytest.raises(ValueError, match="kind"):
        image_encoder("resnet")


def test_ca_net_math_and_kl():
    ca = CA_NET(t_dim=12, c_dim=5)
    sent = torch.randn(4, 12)
    eps = torch.randn(4, 5)
    c_code, mu, logvar = ca(sent, eps)
    x = ca.fc(sent)
    torch.testing.assert_close(mu, x[:, :5] * torch.sigmoid(x[:, 10:15]))
    torch.testing.assert_close(logvar, x[:, 5:10] * torch.sigmoid(x[:, 15:]))
    torch.testing.assert_close(c_code, mu + torch.exp(0.5 * logvar) * eps)
    expected = -0.5 * torch.mean(1 + logvar - mu ** 2 - logvar.exp())
    torch.testing.assert_close(KL_loss(mu, logvar), expected)
    assert ca(sent)[0].shape == (4, 5)


# --- text encoder -----------------------------------------------------------------------------

def test_rnn_encoder_shapes_and_total_length():
    rnn = RNN_ENCODER(50, ninput=16, nhidden=256).eval()
    caps, lens = captions_batch([5, 3, 4])
    words, sent = rnn(caps, lens, rnn.init_hidden(3))
    assert words.shape == (3, 256, 5) and sent.shape == (3, 256)
    padded, sent2 = rnn(caps, lens, rnn.init_hidden(3), total_length=18)
    assert padded.shape == (3, 256, 18)
    torch.testing.assert_close(padded[..., :5], words)
    assert padded[..., 5:].abs().max() == 0 and words[1, :, 3:].abs().max() == 0
    torch.testing.assert_close(sent2, sent)


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_rnn_encoder_unsorted_equals_sorted(rnn_type):
    rnn = RNN_ENCODER(50, ninput=16, nhidden=32, rnn_type=rnn_type).eval()
    lengths = [3, 6, 1, 4]
    caps, lens = captions_batch(lengths)
    words, sent = rnn(caps, lens, None)
    order = torch.argsort(lens, descending=True)
    s_words, s_sent = rnn(caps[order], lens[order], rnn.init_hidden(4))
    torch.testing.assert_close(words[order], s_words)
    torch.testing.assert_close(sent[order], s_sent)
    for i, n in enumerate(lengths):  # each caption alone gives the same result
        w1, s1 = rnn(caps[i:i + 1, :n], lens[i:i + 1], None)
        torch.testing.assert_close(words[i:i + 1, :, :n], w1)
        torch.testing.assert_close(sent[i:i + 1], s1)


def test_rnn_encoder_sentence_is_last_states_of_both_directions():
    rnn = RNN_ENCODER(50, ninput=16, nhidden=32).eval()
    caps, lens = captions_batch([4, 2])
    words, sent = rnn(caps, lens, None)
    half = 16
    torch.testing.assert_close(sent[0, :half], words[0, :half, 3])    # forward: last word
    torch.testing.assert_close(sent[1, :half], words[1, :half, 1])
    torch.testing.assert_close(sent[:, half:], words[:, half:, 0])    # backward: first word


@pytest.mark.parametrize("bad,match", [
    (lambda c, l: (c.float(), l), "captions"),
    (lambda c, l: (c[0], l), "captions"),
    (lambda c, l: (c.clone().fill_(50), l), "ntoken"),
    (lambda c, l: (c, l[:1]), "cap_lens"),
    (lambda c, l: (c, l * 0), "cap_lens"),
    (lambda c, l: (c, l + 10), "cap_lens"),
    (lambda c, l: (c, l.float()), "cap_lens"),
])
def test_rnn_encoder_rejects_bad_inputs(bad, match):
    rnn = RNN_ENCODER(50, ninput=8, nhidden=16)
    caps, lens = bad(*captions_batch([3, 2]))
    with pytest.raises((ValueError, TypeError), match=match):
        rnn(caps, lens, None)


def test_rnn_encoder_total_length_too_short():
    rnn = RNN_ENCODER(50, ninput=8, nhidden=16)
    with pytest.raises(ValueError, match="total_length"):
        rnn(*captions_batch([3, 2]), None, total_length=2)


# --- one training step ------------------------------------------------------------------------

def test_forward_backward_g_and_d_finite():
    from attnfast.reference import discriminator_loss_from_logits, generator_adv_loss_from_logits
    batch, words, nef = 3, 6, 16
    g = G_NET(ngf=8, nef=nef, ncf=6, z_dim=10, branch_num=2)
    ds = [D_NET64(ndf=4, nef=nef), D_NET128(ndf=4, nef=nef)]
    for net in (g, *ds):
        net.apply(weights_init)
    sent = torch.randn(batch, nef)
    mask = torch.zeros(batch, words, dtype=torch.bool)
    mask[0, 4:] = True
    imgs, _, mu, logvar = g(torch.randn(batch, 10), sent, torch.randn(batch, nef, words), mask)
    loss_g = KL_loss(mu, logvar)
    for d, img in zip(ds, imgs, strict=True):
        fake = d(img)
        loss_g = loss_g + generator_adv_loss_from_logits(d.COND_DNET(fake, sent, logits=True),
                                                         d.UNCOND_DNET(fake, logits=True))
    loss_g.backward()
    for d, img in zip(ds, imgs, strict=True):
        d.zero_grad()
        real = d(torch.rand_like(img) * 2 - 1)
        fake = d(img.detach())
        loss_d = discriminator_loss_from_logits(
            d.COND_DNET(real, sent, logits=True), d.COND_DNET(fake, sent, logits=True),
            d.COND_DNET(real[:-1], sent[1:], logits=True), d.UNCOND_DNET(real, logits=True),
            d.UNCOND_DNET(fake, logits=True))
        loss_d.backward()
    for net in (g, *ds):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert g.h_net2.att.conv_context.weight.grad.abs().sum() > 0


def test_weights_init_follows_original():
    d = D_NET64(ndf=4, nef=8)
    d.apply(weights_init)
    w = d.img_code_s16[2].weight.flatten(1)                              # (8, 64): orthogonal rows
    torch.testing.assert_close(w @ w.T, torch.eye(8), atol=1e-5, rtol=0)
    assert d.img_code_s16[3].bias.abs().max() == 0
    assert (d.img_code_s16[3].weight - 1).abs().max() < 0.2


# --- Inception weights loader -----------------------------------------------------------------

@pytest.fixture(scope="module")
def inception():
    return Inception3()


def test_inception_loader(inception, tmp_path):
    state = {k: v.clone() for k, v in inception.state_dict().items()
             if not k.endswith("num_batches_tracked")}                  # as torchvision's file
    state["Conv2d_1a_3x3.conv.weight"].normal_()
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)              # ignored
    good = tmp_path / "inception.pth"
    torch.save(state, good)
    load_inception_weights(inception, good)
    torch.testing.assert_close(inception.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                 # no "untrained" warning
        enc = CNN_ENCODER(nef=8, weights_path=good)
    torch.testing.assert_close(enc.Conv2d_1a_3x3.conv.weight, state["Conv2d_1a_3x3.conv.weight"])

    state["Mixed_6e.branch1x1.conv.weightx"] = state.pop("Mixed_6e.branch1x1.conv.weight")
    bad = tmp_path / "renamed.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"Mixed_6e\.branch1x1\.conv\.weightx") as err:
        load_inception_weights(inception, bad)
    assert "missing keys [Mixed_6e.branch1x1.conv.weight]" in str(err.value)

    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_inception_weights(inception, missing)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        CNN_ENCODER(weights_path=missing)


def test_inception_loader_shape_mismatch(inception, tmp_path):
    state = {"fc.weight": torch.zeros(10, 2048)}
    state.update({k: v for k, v in inception.state_dict().items() if k != "fc.weight"})
    path = tmp_path / "fc10.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"fc\.weight: file \(10, 2048\)"):
        load_inception_weights(inception, path)
