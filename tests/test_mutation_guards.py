"""Direct tests for single-site bugs that only the recorded bit-identity digest caught (issue 30):
each fails on any CPU when the wiring or constant it names changes.

- every generator and discriminator stage concatenates its inputs in the original's order;
- the GAN's DAMSM terms (word and sentence losses) are weighted by gan.lambda, each term alone;
- the EMA of G uses the configured decay (the original's 0.999) once the warm-up is over.
The zero-norm branches of the DAMSM backward are in tests/test_damsm_zero_vectors.py."""
import pytest
import torch
from test_train import damsm_checkpoint, tiny_config  # noqa: F401 - fixtures

from attnfast.config import DEFAULTS
from attnfast.models import D_NET, INIT_STAGE_G, NEXT_STAGE_G
from attnfast.models.build import build_generator
from attnfast.trainer.gan import GANTrainer, ParameterEMA

CPU = torch.device("cpu")


# ------------------------------------------------------------------ stage wiring
def test_init_stage_feeds_the_conditioning_code_before_the_noise():
    """The original INIT_STAGE_G: fc(cat((c_code, z_code), 1)); the released weights' fc columns
    follow that order."""
    torch.manual_seed(0)
    stage = INIT_STAGE_G(ngf=32, ncf=6, z_dim=5).eval()
    z, c = torch.randn(3, 5), torch.randn(3, 6)
    with torch.no_grad():
        expected = stage.fc(torch.cat((c, z), 1)).view(-1, 32, 4, 4)
        for i in range(1, 5):
            expected = getattr(stage, f"upsample{i}")(expected)
        assert torch.equal(stage(z, c), expected)
        assert not torch.allclose(stage(c[:, :5], torch.cat((z, c[:, 5:]), 1)), expected)


def test_next_stage_feeds_the_image_features_before_the_word_context():
    """The original NEXT_STAGE_G: residual(cat((h_code, c_code), 1)), h_code the previous stage's
    features and c_code the attention's word context."""
    torch.manual_seed(0)
    stage = NEXT_STAGE_G(ngf=8, nef=16, ncf=6, r_num=2).eval()
    h, c = torch.randn(2, 8, 8, 8), torch.randn(2, 6)
    words, mask = torch.randn(2, 16, 5), torch.zeros(2, 5, dtype=torch.bool)
    mask[1, 3:] = True
    with torch.no_grad():
        out, att = stage(h, c, words, mask)
        stage.att.applyMask(mask)
        context, expected_att = stage.att(h, words)
        expected = stage.upsample(stage.residual(torch.cat((h, context), 1)))
        swapped = stage.upsample(stage.residual(torch.cat((context, h), 1)))
    assert torch.equal(out, expected) and torch.equal(att, expected_att)
    assert not torch.allclose(out, swapped)


@pytest.mark.parametrize("resolution", [64, 128])
def test_discriminator_condition_follows_the_image_code(resolution):
    """The original D_GET_LOGITS: outlogits(jointConv(cat((h_code, c_code), 1))), the sentence
    code tiled over the 4x4 image code."""
    torch.manual_seed(0)
    netD = D_NET(resolution, ndf=4, nef=8).eval()
    head = netD.COND_DNET
    h = torch.randn(2, 4 * 8, 4, 4)
    sentence = torch.randn(2, 8)
    tiled = sentence.view(2, 8, 1, 1).repeat(1, 1, 4, 4)
    with torch.no_grad():
        expected = head.outlogits[0](head.jointConv(torch.cat((h, tiled), 1))).view(-1)  # no sigmoid
        swapped = head.outlogits[0](head.jointConv(torch.cat((tiled, h), 1))).view(-1)
        got = head(h, sentence, logits=True).view(-1)
    assert torch.allclose(got, expected, rtol=0, atol=1e-6), (got, expected)
    assert not torch.allclose(got, swapped)


def test_generator_stages_compose_in_the_original_order():
    """G_NET: stage 1 on (z, CA(sentence)), then each attentional stage on the previous stage's
    features; images from each stage's features."""
    torch.manual_seed(0)
    config = tiny_config()
    netG = build_generator(config).eval()
    z = torch.randn(2, config["model"]["z_dim"])
    sentence = torch.randn(2, config["model"]["embedding_dim"])
    words = torch.randn(2, config["model"]["embedding_dim"], 6)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    eps = torch.randn(2, config["model"]["condition_dim"])
    with torch.no_grad():
        fakes, atts, mu, logvar = netG(z, sentence, words, mask, eps=eps)
        c_code, mu2, logvar2 = netG.ca_net(sentence, eps=eps)
        h1 = netG.h_net1(z, c_code)
        h2, att2 = netG.h_net2(h1, c_code, words, mask)
    assert torch.equal(mu, mu2) and torch.equal(logvar, logvar2)
    assert torch.equal(fakes[0], netG.img_net1(h1))
    assert torch.equal(fakes[1], netG.img_net2(h2)) and torch.equal(atts[0], att2)


# ------------------------------------------------------------------ loss weights
def _g_losses(config, out_dir, damsm_path, batch=None):
    """G's loss terms of one eager step of a fresh trainer (seeded), and the batch used."""
    torch.manual_seed(0)
    trainer = GANTrainer(config, out_dir, CPU, damsm_path)
    batch = batch if batch is not None else next(trainer.batches())
    torch.manual_seed(1)
    losses = trainer.eager_step(batch)
    return losses, batch


@pytest.fixture(scope="module")
def weighted_losses(tmp_path_factory, damsm_checkpoint):
    """The G losses of the same step with gan.lambda 0, 1 and 3 (everything else equal)."""
    out, batch = {}, None
    for weight in (0.0, 1.0, 3.0):
        out[weight], batch = _g_losses(tiny_config(f"gan.lambda={weight}"), tmp_path_factory.mktemp("lambda"),
                                       damsm_checkpoint, batch)
    return out


@pytest.mark.parametrize("term", ["w_loss", "s_loss"])
def test_each_damsm_term_is_weighted_by_lambda(weighted_losses, term):
    zero, one, three = (weighted_losses[w][term] for w in (0.0, 1.0, 3.0))
    assert float(one) != 0.0
    assert float(zero) == 0.0, f"{term} with gan.lambda=0 is {float(zero)}"
    assert torch.equal(three, one * 3.0), (float(three), float(one))


def test_the_g_loss_is_the_sum_of_its_terms(weighted_losses):
    for weight, losses in weighted_losses.items():
        parts = [v for k, v in losses.items() if k.startswith("g_adv")] + [losses["w_loss"], losses["s_loss"],
                                                                          losses["kl"]]
        assert torch.allclose(losses["errG"], sum(parts), rtol=1e-6, atol=1e-6), weight
    # with lambda = 0 G's loss holds no DAMSM term at all
    zero = weighted_losses[0.0]
    assert torch.allclose(zero["errG"], sum(v for k, v in zero.items() if k.startswith("g_adv")) + zero["kl"])


# ------------------------------------------------------------------ EMA
def test_the_default_ema_decay_is_the_originals():
    assert DEFAULTS["gan"]["ema"] == 0.999


@pytest.mark.parametrize("decay", [0.999, 0.99])
def test_the_ema_uses_its_decay_once_warmed_up(decay):
    """After the warm-up (min(decay, (1 + t) / (10 + t)) reaches decay), one update moves the average
    by exactly (1 - decay) of the way to the model's parameters."""
    model = torch.nn.Linear(3, 2)
    ema = ParameterEMA(model, decay)
    ema.updates = 100_000
    before = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for name, value in model.state_dict().items():
        expected = torch.lerp(before[name], value, 1.0 - decay)
        assert torch.allclose(ema.model.state_dict()[name], expected, rtol=0, atol=1e-7), name
    assert ema.updates == 100_001


def test_the_trainer_averages_g_with_the_configured_decay(tmp_path, damsm_checkpoint):
    trainer = GANTrainer(tiny_config("gan.ema=0.995"), tmp_path, CPU, damsm_checkpoint)
    assert trainer.ema.decay == 0.995
    assert GANTrainer(tiny_config(), tmp_path / "default", CPU, damsm_checkpoint).ema.decay == 0.999


def test_the_ema_warm_up_follows_one_plus_t_over_ten_plus_t():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = ParameterEMA(model, 0.999)
    start = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # t = 0: decay 1/10
    assert torch.allclose(ema.model.weight, torch.lerp(start, model.weight, 0.9), rtol=0, atol=1e-7)
