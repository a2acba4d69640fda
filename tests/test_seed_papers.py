"""Issue 9, from the seed papers: GAN-INT and caption interpolation, the style encoder inverting G,
StackGAN++'s colour-consistency regulariser, and the generator terms' plumbing (CPU, tiny configs).
VLMGAN's matching block and VLMS are tested in test_seed_papers_vlm.py."""
import functools
import json

import pytest
import torch
from PIL import Image
from test_train import damsm_checkpoint, gan_checkpoint, tiny_config  # noqa: F401 - fixtures

from attnfast import sample as sample_cli
from attnfast import train as train_cli
from attnfast.generation import interpolation_images
from attnfast.interpolate import interpolate_text, paired_with_next
from attnfast.reference.colour_consistency import colour_consistency_loss, colour_statistics
from attnfast.trainer.gan import GANTrainer
from attnfast.trainer.style import StyleTrainer

CPU = torch.device("cpu")


# ------------------------------------------------------------------ colour consistency
def test_colour_statistics_match_torch_cov():
    images = torch.rand(3, 3, 5, 7, dtype=torch.float64)
    mu, sigma = colour_statistics(images)
    for b in range(3):
        pixels = images[b].flatten(1)
        assert torch.allclose(mu[b], pixels.mean(1))
        assert torch.allclose(sigma[b], torch.cov(pixels, correction=0))


def test_colour_consistency_is_zero_for_identical_colour_statistics():
    low = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    high = torch.nn.functional.interpolate(low, scale_factor=2, mode="nearest")   # same pixels, 4x each
    shuffled = high.flatten(2)[:, :, torch.randperm(256)].view_as(high)          # same colours, moved
    assert float(colour_consistency_loss([low, high, shuffled])) < 1e-24
    other = low.clone()
    other[:, 0] += 0.5                                                            # red shifted by 0.5
    loss = float(colour_consistency_loss([low, other], lambda1=1.0, lambda2=5.0))
    assert loss == pytest.approx(0.25)                                            # ||d mu||^2, Sigma unchanged


def test_colour_consistency_value_and_gradcheck():
    a = (torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1).requires_grad_()
    b = (torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_()
    mu_a, sig_a = colour_statistics(a)
    mu_b, sig_b = colour_statistics(b)
    expected = ((mu_b - mu_a).pow(2).sum(1) * 2.0 + (sig_b - sig_a).pow(2).sum((1, 2)) * 3.0).mean()
    assert torch.allclose(colour_consistency_loss([a, b], 2.0, 3.0), expected)
    assert torch.autograd.gradcheck(lambda x, y: colour_consistency_loss([x, y]), (a, b))


def test_colour_consistency_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 stages"):
        colour_consistency_loss([torch.rand(1, 3, 4, 4)])
    with pytest.raises(ValueError, match=r"stages\[1\] must be a \(B, 3, H, W\)"):
        colour_consistency_loss([torch.rand(1, 3, 4, 4), torch.rand(1, 4, 4)])
    with pytest.raises(ValueError, match=r"stages\[1\] holds 2 images"):
        colour_consistency_loss([torch.rand(1, 3, 4, 4), torch.rand(2, 3, 4, 4)])


# ------------------------------------------------------------------ interpolation (GAN-INT)
def _text(batch=3, dim=5, length=6):
    sent = torch.randn(batch, dim)
    words = torch.randn(batch, dim, length)
    lens = torch.randint(1, length + 1, (batch,))
    mask = torch.arange(length)[None] >= lens[:, None]
    return sent, words * (~mask)[:, None], mask


def test_interpolate_text_endpoints_and_midpoint():
    # lerp computes a + beta (b - a): an absolute rounding of about one ulp of |a|, |b|, large
    # against the result where a and b nearly cancel, so the comparison needs an absolute part
    close = functools.partial(torch.allclose, rtol=1e-6, atol=1e-6)
    a, b = _text(), _text()
    s0, w0, m0 = interpolate_text(*a, *b, 0.0)
    s1, w1, m1 = interpolate_text(*a, *b, 1.0)
    assert torch.equal(s0, a[0]) and torch.equal(m0, a[2]) and torch.equal(w0, a[1])
    assert torch.equal(s1, b[0]) and torch.equal(m1, b[2]) and torch.equal(w1, b[1])
    s, w, m = interpolate_text(*a, *b, 0.5)
    assert close(s, (a[0] + b[0]) / 2)
    assert torch.equal(m, a[2] & b[2])
    both = ~a[2] & ~b[2]
    only_a = ~a[2] & b[2]
    mid = (a[1] + b[1]) / 2
    assert close(w.transpose(1, 2)[both], mid.transpose(1, 2)[both])
    assert close(w.transpose(1, 2)[only_a], a[1].transpose(1, 2)[only_a])
    # per-row beta; the batch pairing of GAN-INT is caption i with caption i+1
    s, _, _ = interpolate_text(*a, *b, torch.tensor([0.0, 0.25, 1.0]))
    assert close(s[1], 0.75 * a[0][1] + 0.25 * b[0][1])
    s, _, _ = paired_with_next(*a, beta=0.5)
    assert close(s[2], (a[0][2] + a[0][0]) / 2)
    with pytest.raises(ValueError, match="beta must be"):
        interpolate_text(*a, *b, 1.5)
    with pytest.raises(ValueError, match="same shapes"):
        interpolate_text(*a, *_text(batch=2), 0.5)


def test_interpolation_endpoints_equal_plain_sampling(gan_checkpoint):
    netG, text_encoder, vocab, config = sample_cli.load_generator(gan_checkpoint, CPU)
    words_num = config["dataset"]["words_num"]
    ids, lens, _, _ = sample_cli.encode_captions(["a large red circle in the center",
                                               "a small blue square in the top left"], vocab, words_num)
    noise, eps = sample_cli.fixed_noise(config, 1, seed=3)
    path = interpolation_images(netG, text_encoder, ids, lens, words_num, 5, noise, eps)
    assert path.shape == (5, 3, 128, 128)
    for index, row in ((0, 0), (-1, 1)):
        fakes, _ = sample_cli.generate(netG, text_encoder, ids[row:row + 1], lens[row:row + 1], noise,
                                       words_num, eps=eps)
        assert torch.allclose(path[index], fakes[-1][0], atol=1e-5), index
    assert not torch.allclose(path[0], path[-1], atol=1e-3)


def test_sample_cli_interpolation_strip(tmp_path, gan_checkpoint):
    code = sample_cli.main(["--checkpoint", str(gan_checkpoint), "--interpolate", "a large red circle",
                            "a small green star", "--steps", "4", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    with Image.open(tmp_path / "interpolation.png") as strip:
        assert strip.size[0] > 4 * 128 and strip.size[1] > 128           # one row of 4 tiles + labels


def test_sample_cli_interpolation_errors(tmp_path, gan_checkpoint, capsys):
    base = ["--checkpoint", str(gan_checkpoint), "--out", str(tmp_path), "--interpolate"]
    assert sample_cli.main(base + ["a red circle", "a blue star", "--steps", "1"]) == 2
    assert "--steps must be >= 2" in capsys.readouterr().err
    assert sample_cli.main(base + ["a red circle", "zebra"]) == 2
    assert "no word the model knows" in capsys.readouterr().err


# ------------------------------------------------------------------ generator terms in training
@pytest.mark.parametrize("options, term", [
    (("gan.int_weight=1.0",), "g_int"),
    (("gan.colour_consistency=50.0",), "colour"),
    (("gan.attention_grounding=1.0",), "grounding"),
])
def test_gan_extra_terms_enter_the_generator_loss(tmp_path, damsm_checkpoint, options, term):
    trainer = GANTrainer(tiny_config(*options), tmp_path, CPU, damsm_checkpoint)
    batch = next(trainer.batches())
    losses = trainer.train_step(batch)
    assert term in losses and torch.isfinite(losses[term]) and float(losses[term]) > 0
    parts = sum(float(v) for k, v in losses.items() if k.startswith("g_adv")) + float(losses[term])
    parts += float(losses["w_loss"] + losses["s_loss"] + losses["kl"])
    assert float(losses["errG"]) == pytest.approx(parts, rel=1e-5)


def test_gan_with_options_off_computes_no_extra_terms(tmp_path, damsm_checkpoint):
    trainer = GANTrainer(tiny_config(), tmp_path, CPU, damsm_checkpoint)
    losses = trainer.train_step(next(trainer.batches()))
    assert not {"g_int", "colour", "grounding", "vlm", "vvm"} & set(losses)


def test_gan_resume_is_exact_with_the_extra_terms_on(tmp_path, damsm_checkpoint):
    from attnfast.engine import checkpoint as ckpt
    from attnfast.trainer.gan import train_gan
    config = tiny_config("dataset.train_size=8", "gan.int_weight=1.0", "gan.colour_consistency=5.0",
                         "gan.attention_grounding=1.0")
    train_gan(config, tmp_path / "full", CPU, damsm_checkpoint, steps=3, progress=False)
    train_gan(config, tmp_path / "half", CPU, damsm_checkpoint, steps=2, progress=False)
    train_gan(config, tmp_path / "half", CPU, None, resume=tmp_path / "half" / "gan.pt", steps=3, progress=False)
    full, resumed = ckpt.load(tmp_path / "full" / "gan.pt"), ckpt.load(tmp_path / "half" / "gan.pt")
    for key in ("netG", "netG_ema"):
        assert all(torch.equal(full[key][k], resumed[key][k]) for k in full[key]), key


@pytest.mark.parametrize("options, message", [
    (("vlm.lambda_vlm=1.0",), "need vlm.checkpoint"),
    (("gan.colour_consistency=1.0", "model.branch_num=1"), "needs model.branch_num >= 2"),
    (("gan.int_beta=2",), "gan.int_beta must lie in"),
    (("gan.int_weight=-1",), "gan.int_weight must be >= 0"),
    (("gan.attention_grounding=-1",), "gan.attention_grounding must be >= 0"),
    (("gan.attention_grounding=1.0", "model.branch_num=1"), "needs model.branch_num >= 2"),
])
def test_gan_extra_terms_bad_options(tmp_path, damsm_checkpoint, options, message):
    with pytest.raises(ValueError, match=message):
        GANTrainer(tiny_config(*options), tmp_path, CPU, damsm_checkpoint)


# ------------------------------------------------------------------ style encoder
def test_style_encoder_lowers_its_loss_on_shapes(tmp_path, gan_checkpoint):
    """Every step draws fresh z, so the falling loss is inversion of G, not memorisation."""
    config = tiny_config("style.batch_size=16", "style.lr=0.001", "style.ndf=8")
    trainer = StyleTrainer(config, tmp_path, CPU, gan_checkpoint)
    batches = trainer.batches()
    history = [float(trainer.train_step(next(batches))["style_loss"]) for _ in range(30)]
    first, last = sum(history[:3]) / 3, sum(history[-3:]) / 3
    assert last < 0.6 * first, (first, last)


@pytest.fixture(scope="module")
def style_checkpoint(tmp_path_factory, gan_checkpoint):
    out = tmp_path_factory.mktemp("style")
    code = train_cli.main(["--stage", "style", "--gan", str(gan_checkpoint), "--out", str(out), "--steps", "2",
                           "--device", "cpu", "--no-progress", "--set", "style.batch_size=4",
                           "--set", "style.ndf=8", "--set", "dataset.train_size=48"])
    assert code == 0
    assert json.loads((out / "style_log.jsonl").read_text().splitlines()[-1])["step"] == 2
    return out / "style.pt"


def test_style_transfer_cli_writes_its_grid(tmp_path, gan_checkpoint, style_checkpoint):
    image = tmp_path / "style.png"
    Image.new("RGB", (90, 70), (200, 30, 30)).save(image)
    code = sample_cli.main(["--checkpoint", str(gan_checkpoint), "--style", str(style_checkpoint),
                            "--style-from", str(image), "--style-from", str(image),
                            "--caption", "a large red circle", "--caption", "a small blue square",
                            "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    with Image.open(tmp_path / "out" / "style_transfer.png") as grid:
        assert grid.size[0] > 3 * 128 and grid.size[1] > 2 * 128     # 2 rows: image + 2 captions


def test_style_transfer_keeps_z_from_the_image(gan_checkpoint, style_checkpoint):
    from attnfast.generation import transfer_images
    from attnfast.models.build import load_style_encoder
    netG, text_encoder, vocab, config = sample_cli.load_generator(gan_checkpoint, CPU)
    encoder, _ = load_style_encoder(style_checkpoint, CPU)
    ids, lens, _, _ = sample_cli.encode_captions(["a red circle", "a blue star"], vocab, 18)
    images = torch.rand(2, 3, 128, 128) * 2 - 1
    _, eps = sample_cli.fixed_noise(config, 1, 0)
    out = transfer_images(netG, text_encoder, encoder, images, ids, lens, 18, eps)
    assert out.shape == (2, 2, 3, 128, 128)
    fakes, _ = sample_cli.generate(netG, text_encoder, ids[1:], lens[1:], encoder(images[1:]), 18, eps=eps)
    assert torch.allclose(out[1, 1], fakes[-1][0], atol=1e-5)


def test_style_transfer_bad_inputs(tmp_path, gan_checkpoint, style_checkpoint, capsys):
    base = ["--checkpoint", str(gan_checkpoint), "--style", str(style_checkpoint), "--caption", "a red circle",
            "--out", str(tmp_path)]
    missing = tmp_path / "nope.png"
    assert sample_cli.main(base + ["--style-from", str(missing)]) == 2
    assert f"style image not found: {missing}" in capsys.readouterr().err
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    assert sample_cli.main(base + ["--style-from", str(text)]) == 2
    assert f"style image {text} is not an image Pillow can read" in capsys.readouterr().err
    assert sample_cli.main(["--checkpoint", str(gan_checkpoint), "--style-from", str(text),
                            "--caption", "a red circle", "--out", str(tmp_path)]) == 2   # no style.pt by gan.pt
    assert "checkpoint not found" in capsys.readouterr().err
    assert train_cli.main(["--stage", "style", "--out", str(tmp_path)]) == 2
    assert "pass --gan CKPT" in capsys.readouterr().err
