"""Paper metrics: IS / FID through torchmetrics (stand-in feature extractors with closed-form
answers, and the Inception-v3 loader on fake weights with the original key names), the image
directory reader, the DM-GAN R-precision protocol and ``python -m attnfast.eval --is/--fid``."""
import json
import math
import sys

import numpy as np
import original_keys as orig
import pytest
import torch
from PIL import Image
from torch import nn

from attnfast.metrics import image_dir
from attnfast.metrics import inception_metrics as im
from attnfast.models.inception import InceptionA, InceptionE


class MeanColour(nn.Module):
    """Stand-in extractor: pool = per-channel mean intensity (B, 3) in 0..255; logits given by a
    function of the batch (default zeros, K=4)."""

    num_features = 3
    num_classes = 4

    def __init__(self, logits=None):
        super().__init__()
        self.logits = logits

    def forward(self, images):
        assert images.dtype == torch.uint8 and images.shape[1] == 3
        pool = images.float().mean(dim=(2, 3))
        logits = self.logits(images) if self.logits else torch.zeros(images.shape[0], 4)
        return {"pool": pool, "logits": logits}


def random_uint8(n, size=8, low=20, high=200, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, 3, size, size), generator=gen, dtype=torch.uint8)


# ------------------------------------------------------------------ FID
def test_fid_of_a_set_with_itself_is_zero():
    images = random_uint8(40)
    metrics = im.InceptionMetrics(MeanColour(), inception_score=False)
    for chunk in images.split(16):
        metrics.update(chunk)
        metrics.update(chunk, real=True)
    result = metrics.compute()["fid"]
    assert abs(result["value"]) < 1e-6
    assert result["images"] == result["real_images"] == 40


def test_fid_of_a_shifted_set_is_the_squared_shift():
    images = random_uint8(30)
    metrics = im.InceptionMetrics(MeanColour(), inception_score=False)
    metrics.update(images)
    metrics.update(images + 10, real=True)  # every feature +10, same covariance
    assert metrics.compute()["fid"]["value"] == pytest.approx(3 * 10.0 ** 2, rel=1e-6)


def test_fid_matches_the_closed_form_of_two_gaussians():
    fake, real = random_uint8(50, seed=1), random_uint8(60, low=0, high=255, seed=2)
    metrics = im.InceptionMetrics(MeanColour(), inception_score=False)
    metrics.update(fake)
    metrics.update(real, real=True)
    f1, f2 = fake.double().mean(dim=(2, 3)), real.double().mean(dim=(2, 3))
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)
    evals, evecs = torch.linalg.eigh(s1)
    root1 = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp(min=0).sqrt().sum()
    expected = (f1.mean(0) - f2.mean(0)).square().sum() + s1.trace() + s2.trace() - 2 * cross
    assert metrics.compute()["fid"]["value"] == pytest.approx(float(expected), rel=1e-6)


def test_fid_needs_two_images_each_side_and_real_images_need_fid():
    metrics = im.InceptionMetrics(MeanColour(), inception_score=False)
    metrics.update(random_uint8(3))
    with pytest.raises(ValueError, match="FID needs at least 2 generated and 2 real"):
        metrics.compute()
    only_is = im.InceptionMetrics(MeanColour(), fid=False)
    with pytest.raises(ValueError, match="only used by FID"):
        only_is.update(random_uint8(2), real=True)
    with pytest.raises(ValueError, match="nothing to compute"):
        im.InceptionMetrics(MeanColour(), inception_score=False, fid=False)


# ------------------------------------------------------------------ IS
def test_inception_score_of_uniform_logits_is_one():
    metrics = im.InceptionMetrics(MeanColour(), fid=False, splits=5)
    metrics.update(random_uint8(25))
    result = metrics.compute()["inception_score"]
    assert result["mean"] == pytest.approx(1.0, abs=1e-6)
    assert result["std"] == pytest.approx(0.0, abs=1e-6)
    assert result["splits"] == 5 and result["images"] == 25


def test_inception_score_of_confident_balanced_predictions_is_the_class_count():
    def one_hot(images):  # class = image index within the batch mod 4, confident
        return 60.0 * nn.functional.one_hot(torch.arange(images.shape[0]) % 4, 4).float()
    metrics = im.InceptionMetrics(MeanColour(one_hot), fid=False, splits=1)
    for _ in range(3):
        metrics.update(random_uint8(8))
    result = metrics.compute()["inception_score"]
    assert result["mean"] == pytest.approx(4.0, rel=1e-4)
    assert result["std"] == result["std_population"] == 0.0


def test_inception_score_is_seeded_and_std_population_is_rescaled():
    def noisy(images):
        return images.float().mean(dim=(2, 3)).repeat(1, 2)[:, :4] / 20.0
    metrics = im.InceptionMetrics(MeanColour(noisy), fid=False, splits=4)
    metrics.update(random_uint8(40, low=0, high=255))
    first, again = metrics.compute(seed=3), metrics.compute(seed=3)
    assert first == again
    score = first["inception_score"]
    assert score["std_population"] == pytest.approx(score["std"] * math.sqrt(3 / 4))
    with pytest.raises(ValueError, match="needs at least 10 generated images"):
        fresh = im.InceptionMetrics(MeanColour(), fid=False)
        fresh.update(random_uint8(5))
        fresh.compute()


# ------------------------------------------------------------------ input contract
def test_to_uint8_rgb_ranges_and_channel_order():
    images = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    with pytest.raises(ValueError, match=r"looks like \[-1, 1\].*value_range"):
        im.to_uint8_rgb(images)
    out = im.to_uint8_rgb(images, value_range=(-1, 1))
    assert out.dtype == torch.uint8 and out[0, :, 0, 0].tolist() == [0, 128, 255]
    assert im.to_uint8_rgb(images, (-1, 1), channel_order="BGR")[0, :, 0, 0].tolist() == [255, 128, 0]
    assert im.to_uint8_rgb(torch.full((1, 3, 2, 2), 0.5))[0, 0, 0, 0] == 128
    with pytest.raises(ValueError, match="looks like 0..255"):
        im.to_uint8_rgb(torch.full((1, 3, 2, 2), 200.0))
    with pytest.raises(ValueError, match=r"outside value_range=\(0, 1\)"):
        im.to_uint8_rgb(images, value_range=(0, 1))
    with pytest.raises(ValueError, match="channels-last"):
        im.to_uint8_rgb(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="channel_order"):
        im.to_uint8_rgb(out, channel_order="RGBA")
    uint8 = random_uint8(2)
    assert im.to_uint8_rgb(uint8) is uint8


def test_metrics_refuse_unconverted_generator_output():
    metrics = im.InceptionMetrics(MeanColour(), inception_score=False)
    with pytest.raises(ValueError, match="value_range"):
        metrics.update(torch.rand(2, 3, 4, 4) * 2 - 1)
    metrics.update(torch.rand(2, 3, 4, 4) * 2 - 1, value_range=(-1, 1))
    assert metrics.counts["fake"] == 2


def test_missing_torchmetrics_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)
    with pytest.raises(im.MetricUnavailable, match="pip install torchmetrics"):
        im.InceptionMetrics(MeanColour())


# ------------------------------------------------------------------ the Inception network
def test_missing_weights_name_the_expected_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        im.load_inception_features(None)
    with pytest.raises(FileNotFoundError, match=r"nope\.pth.*inception_v3_google-0cc3c7bd\.pth"):
        im.load_inception_features(tmp_path / "nope.pth")


def fake_inception_state(num_classes, seed=0, shapes=None):
    """Original key names (torchvision's), fan-in scaled weights, identity BatchNorm statistics;
    no num_batches_tracked (as in the ported TF file), AuxLogits keys that must be ignored."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in (shapes or orig.inception_v3(num_classes)).items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith(("running_var", ".bn.weight")):
            state[key] = torch.ones(shape)
        elif key.endswith(("running_mean", ".bn.bias")):
            state[key] = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    state["AuxLogits.fc.weight"] = torch.zeros(num_classes, 768)
    return state


@pytest.mark.parametrize("classes,variant", [(1008, "fid"), (1000, "torchvision")])
def test_inception_weights_load_and_extract(tmp_path, classes, variant):
    state = fake_inception_state(classes)
    path = tmp_path / (im.FID_WEIGHTS if variant == "fid" else im.TORCHVISION_WEIGHTS)
    torch.save(state, path)
    features = im.load_inception_features(path)
    assert features.variant == variant and features.num_classes == classes
    assert isinstance(features.net.Mixed_7c, InceptionE)
    assert (type(features.net.Mixed_7c).__name__ == "_FIDInceptionE") == (variant == "fid")
    torch.testing.assert_close(features.fc.weight, state["fc.weight"], rtol=0, atol=0)
    out = features(random_uint8(2, size=37))
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, classes)
    assert torch.isfinite(out["pool"]).all() and out["pool"].abs().sum() > 0
    bias = state["fc.bias"] if variant == "torchvision" else 0
    torch.testing.assert_close(out["logits"], out["pool"] @ state["fc.weight"].T + bias)
    with pytest.raises(ValueError, match="must be uint8 RGB"):
        features(torch.rand(1, 3, 8, 8))


def test_inception_weights_mismatch_is_named(tmp_path):
    state = fake_inception_state(1008)
    del state["Mixed_6e.branch_pool.conv.weight"]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys \[Mixed_6e\.branch_pool\.conv\.weight\]"):
        im.load_inception_features(tmp_path / "bad.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no 'fc.weight'"):
        im.load_inception_features(tmp_path / "other.pth")


def test_fid_blocks_differ_from_torchvision_only_in_their_pooling():
    torch.manual_seed(0)
    plain, fid = InceptionA(16, 8).eval(), im._FIDInceptionA(16, 8).eval()
    fid.load_state_dict(plain.state_dict())
    x = torch.randn(1, 16, 6, 6)
    a, b = plain(x), fid(x)
    torch.testing.assert_close(a[:, :224], b[:, :224])                   # the conv branches
    torch.testing.assert_close(a[:, 224:, 1:-1, 1:-1], b[:, 224:, 1:-1, 1:-1])  # interior pools
    assert not torch.allclose(a[:, 224:, 0], b[:, 224:, 0])              # border: padding excluded
    plain_e, max_e = InceptionE(8).eval(), im._FIDInceptionE(8, im._max_pool_same).eval()
    max_e.load_state_dict(plain_e.state_dict())
    y = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(plain_e(y)[:, :1856], max_e(y)[:, :1856])
    assert not torch.allclose(plain_e(y)[:, 1856:], max_e(y)[:, 1856:])


# ------------------------------------------------------------------ image directories
def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_dir_batches_by_size_and_names_bad_files(tmp_path):
    gen = np.random.default_rng(0)
    for i in range(5):
        write_png(tmp_path / "a" / f"{i}.png", gen.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    write_png(tmp_path / "a" / "sub" / "big.PNG", gen.integers(0, 255, (6, 10, 3), dtype=np.uint8))
    Image.fromarray(gen.integers(0, 255, (8, 8), dtype=np.uint8), "L").save(tmp_path / "a" / "grey.jpg")
    files = image_dir.image_files(tmp_path / "a")
    assert len(files) == 7
    batches = list(image_dir.iter_image_batches(files, batch_size=3))
    assert [tuple(b.shape) for b in batches] == [(3, 3, 8, 8), (3, 3, 8, 8), (1, 3, 6, 10)]
    assert all(b.dtype == torch.uint8 for b in batches)
    first = np.array(Image.open(files[0]))
    assert torch.equal(batches[0][0], torch.from_numpy(first).permute(2, 0, 1))
    assert sum(b.shape[0] for b in image_dir.iter_image_batches(files, 4, limit=2)) == 2
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match="broken.png"):
        list(image_dir.iter_image_batches(image_dir.image_files(tmp_path / "a")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        image_dir.image_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="image directory not found"):
        image_dir.image_files(tmp_path / "missing")


# ------------------------------------------------------------------ R-precision, DM-GAN protocol
def test_r_precision_folds_protocol():
    from attnfast.metrics.r_precision import r_precision_from_features
    gen = torch.Generator().manual_seed(0)
    sentences = torch.randn(20, 16, generator=gen)
    codes = torch.cat([sentences[:10], -sentences[10:]])  # images 0-9 match, 10-19 are opposites
    result = r_precision_from_features(None, codes, None, sentences, None, score="sentence",
                                       candidates=5, runs=1, folds=4, seed=1)
    assert result["protocol"] == "folds" and result["runs"] == [1.0, 1.0, 0.0, 0.0]
    assert result["mean"] == 0.5 and result["std"] == 0.5      # population std over the folds
    single = r_precision_from_features(None, codes, None, sentences, None, score="sentence",
                                       candidates=5, runs=1, seed=1)
    assert single["protocol"] == "runs" and single["mean"] == result["mean"]
    uneven = r_precision_from_features(None, codes, None, sentences, None, score="sentence",
                                       candidates=5, runs=1, folds=3, seed=1)
    assert len(uneven["runs"]) == 3 and uneven["runs"][0] == 1.0 and uneven["runs"][2] == 0.0
    with pytest.raises(ValueError, match="needs runs=1"):
        r_precision_from_features(None, codes, None, sentences, None, score="sentence",
                                  candidates=5, runs=10, folds=10)


# ------------------------------------------------------------------ python -m attnfast.eval
class StandIn(MeanColour):
    variant = "stand-in"


@pytest.fixture
def stand_in_network(monkeypatch):
    """The eval CLI with the stand-in extractor instead of Inception-v3 (its loader is tested above)."""
    calls = []

    def load(path, variant, device):
        calls.append((path, variant, str(device)))
        return StandIn()
    monkeypatch.setattr(im, "load_inception_features", load)
    return calls


def test_eval_cli_over_sample_directories(tmp_path, capsys, stand_in_network):
    from attnfast import eval as cli
    gen = np.random.default_rng(1)
    for i in range(12):
        fake = gen.integers(0, 200, (16, 16, 3), dtype=np.uint8)
        write_png(tmp_path / "samples" / f"{i:03d}.png", fake)
        write_png(tmp_path / "real" / f"{i:03d}.png", fake + 10)
    out = tmp_path / "report.json"
    argv = ["--is", "--fid", "--samples", str(tmp_path / "samples"), "--real", str(tmp_path / "real"),
            "--inception-weights", "w.pth", "--is-splits", "3", "--batch-size", "5",
            "--device", "cpu", "--out", str(out)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["inception_score"]["mean"] == pytest.approx(1.0)
    assert report["inception_score"]["images"] == 12 and report["inception_score"]["splits"] == 3
    assert report["fid"]["value"] == pytest.approx(300.0, rel=1e-6)
    assert report["fid"]["real_images"] == 12 and report["source"] == str(tmp_path / "samples")
    assert stand_in_network == [("w.pth", "auto", "cpu")]                 # one network pass for both


def test_eval_cli_errors(tmp_path, capsys):
    from attnfast import eval as cli
    write_png(tmp_path / "samples" / "a.png", np.zeros((8, 8, 3), dtype=np.uint8))
    samples = ["--samples", str(tmp_path / "samples"), "--device", "cpu"]
    assert cli.main(["--is"] + samples) == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in capsys.readouterr().err
    assert cli.main(["--is", "--inception-weights", str(tmp_path / "none.pth")] + samples) == 2
    assert "none.pth" in capsys.readouterr().err
    assert cli.main(["--fid", "--inception-weights", "w.pth"] + samples) == 2
    assert "--real DIR" in capsys.readouterr().err
    assert cli.main(["--r-precision"] + samples) == 2
    assert "not --r-precision" in capsys.readouterr().err
    assert cli.main(["--is", "--samples", str(tmp_path / "void"), "--inception-weights", "w"]) == 2


def test_eval_cli_generates_from_a_checkpoint(tmp_path, capsys, stand_in_network):
    from attnfast import eval as cli
    from attnfast.models.build import build_generator
    base = ["--device", "cpu", "--num-images", "4", "--batch-size", "4"]
    ctx = cli.load_context(cli.build_parser().parse_args(["--random-init"] + base))
    ckpt = tmp_path / "gan.pt"
    torch.save({"text_encoder": ctx.text_encoder.state_dict(),
                "image_encoder": ctx.image_encoder.state_dict(), "config": ctx.config,
                "vocab": ctx.vocab.to_dict(), "netG_ema": build_generator(ctx.config).state_dict()}, ckpt)
    assert cli.main(["--is", "--fid", "--checkpoint", str(ckpt), "--inception-weights", "w",
                     "--is-splits", "2"] + base) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inception_score"]["images"] == 4 and report["fid"]["real_images"] == 4
    assert report["fid"]["real"] == "shapes test set" and report["fid"]["value"] > 0


def test_eval_cli_r_precision_folds(capsys):
    from attnfast import eval as cli
    argv = ["--r-precision", "--random-init", "--num-images", "24", "--candidates", "8",
            "--folds", "3", "--device", "cpu", "--batch-size", "12", "--backend", "reference"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)["r_precision"]
    assert result["protocol"] == "folds" and len(result["runs"]) == 3


# ------------------------------------------------------------------ the paper's table, streamed
def test_caption_schedule_uses_every_caption_before_repeating():
    from attnfast.metrics.paper_eval import caption_schedule
    assert caption_schedule([2, 1, 3], 7) == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 0), (2, 1), (0, 0)]
    with pytest.raises(ValueError, match="at least one caption"):
        caption_schedule([2, 0], 3)


def tiny_released_models():
    from attnfast.models import G_NET, RNN_ENCODER, SmallImageEncoder
    torch.manual_seed(0)
    # mask_mode "correct": with "attngan" a word mask depends on the batch size (the original's bug)
    netG = G_NET(ngf=4, nef=8, ncf=6, z_dim=5, branch_num=2, r_num=1, mask_mode="correct").eval()
    text = RNN_ENCODER(20, ninput=6, nhidden=8).eval()
    image = SmallImageEncoder(nef=8, ndf=4, regions=4, input_size=16).eval()
    return netG, text, image


@pytest.mark.parametrize("score", ["sentence", "word"])
def test_evaluate_generator_streams_is_fid_and_r_precision(tmp_path, score):
    from attnfast.metrics.paper_eval import evaluate_generator
    netG, text, image = tiny_released_models()
    gen = np.random.default_rng(0)
    captions = [[list(gen.integers(1, 20, size=gen.integers(3, 25))) for _ in range(2)] for _ in range(6)]
    metrics = im.InceptionMetrics(MeanColour(), splits=3)
    metrics.update(random_uint8(4), real=True)
    result = evaluate_generator(netG, text, image, captions, list(range(6)), n_images=12, words_num=18,
                                batch_size=5, device="cpu", inception=metrics, score=score,
                                candidates=4, folds=3, save_dir=tmp_path / "png", progress=False)
    assert result["r_precision"]["protocol"] == "folds" and len(result["r_precision"]["runs"]) == 3
    assert result["r_precision"]["score"] == score and result["r_precision"]["images"] == 12
    assert result["inception_score"]["images"] == 12 and result["fid"]["real_images"] == 4
    assert result["images"] == 12 and result["captions_used"] == 12
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pngs[:2]] == ["00000.png", "00001.png"] and len(pngs) == 12
    assert Image.open(pngs[0]).size == (128, 128)
    again = evaluate_generator(netG, text, image, captions, list(range(6)), n_images=12, batch_size=12,
                               device="cpu", score=score, candidates=4, folds=3, progress=False,
                               save_dir=tmp_path / "again")
    assert again["r_precision"] == result["r_precision"]                # seeded, batch-size independent
    for name in ("00000.png", "00007.png"):  # same noise and captions (the conv sums may round apart)
        first, second = (np.array(Image.open(tmp_path / d / name), dtype=int) for d in ("png", "again"))
        assert np.abs(first - second).max() <= 1


def test_eval_cli_paper_table_on_released_weights(tmp_path, capsys, stand_in_network):
    """--paper on a fake CUB tree with fake released weights (the original's key names)."""
    from test_datasets_real import make_cub
    from test_released import fake_state

    from attnfast import eval as cli
    from attnfast.data.attngan_layout import attngan_vocabulary
    root = tmp_path / "birds"
    make_cub(root, n_train=2, n_test=3)
    vocab = attngan_vocabulary(root, "birds", 10)
    image_encoder = fake_inception_state(0, shapes=orig.cnn_encoder(nef=8))
    del image_encoder["AuxLogits.fc.weight"]                              # CNN_ENCODER has no aux head
    weights = {"netG.pth": fake_state(orig.g_net(branch_num=2, ngf=4, nef=8, ncf=6, z_dim=5, r_num=1)),
               "text_encoder200.pth": fake_state(orig.rnn_encoder(len(vocab), ninput=6, nhidden=8)),
               "image_encoder200.pth": image_encoder}
    for name, state in weights.items():
        torch.save(state, tmp_path / name)
    argv = ["--netG", str(tmp_path / "netG.pth"), "--text-encoder", str(tmp_path / "text_encoder200.pth"),
            "--image-encoder", str(tmp_path / "image_encoder200.pth"), "--data-dir", str(root),
            "--num-generated", "6", "--batch-size", "3", "--candidates", "5", "--folds", "2",
            "--mismatch", "caption", "--inception-weights", "w.pth", "--is-splits", "2",
            "--save-samples", str(tmp_path / "png"), "--device", "cpu"]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    paper = report["paper"]
    assert paper["images"] == 6 and paper["test_items"] == 3 and paper["words_num"] == 25
    assert paper["r_precision"]["protocol"] == "folds" and paper["r_precision"]["score"] == "sentence"
    assert paper["inception_score"]["images"] == 6 and "fid" not in paper
    assert cli.main(argv + ["--real", "test-set", "--num-generated", "4", "--candidates", "3"]) == 0
    fid = json.loads(capsys.readouterr().out)["paper"]["fid"]
    assert fid["real_images"] == 3 and fid["images"] == 4 and fid["value"] >= 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 6 and report["source"] == str(tmp_path / "netG.pth")
    assert cli.main(argv[:2] + ["--data-dir", str(root), "--device", "cpu"]) == 2
    assert "--paper needs --text-encoder, --image-encoder" in capsys.readouterr().err
    assert cli.main(argv + ["--is"]) == 2
    assert "--netG is evaluated by --paper only (not --is)" in capsys.readouterr().err


@pytest.mark.gpu
def test_inception_features_and_metrics_on_cuda_match_cpu(tmp_path):
    torch.save(fake_inception_state(1008), tmp_path / im.FID_WEIGHTS)
    images = random_uint8(4, size=64)
    cpu = im.load_inception_features(tmp_path / im.FID_WEIGHTS)
    gpu = im.load_inception_features(tmp_path / im.FID_WEIGHTS, device="cuda")
    expected, got = cpu(images), gpu(images.cuda())
    for key in ("pool", "logits"):
        assert got[key].is_cuda
        torch.testing.assert_close(got[key].cpu(), expected[key], rtol=1e-3, atol=1e-3)
    results = []
    for extractor, batch in ((cpu, images), (gpu, images.cuda())):
        metrics = im.InceptionMetrics(extractor, splits=2)
        metrics.update(batch)
        metrics.update(batch.flip(0), real=True)
        results.append(metrics.compute())
    assert results[0]["inception_score"]["mean"] == pytest.approx(results[1]["inception_score"]["mean"], rel=1e-3)
