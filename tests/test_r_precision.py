"""R-precision (attnfast/metrics/r_precision.py) on features whose answer is known, the candidate
draws, the encoder wrapper, and the ``python -m attnfast.eval --r-precision`` CLI."""
import json
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # the triton case below runs interpreted

from attnfast.metrics.r_precision import draw_candidates, encode, r_precision, r_precision_from_features

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _matched_features(n, dim=64, num_words=6):
    """Features where image n is built from caption n: its regions are its caption's words (plus
    noise regions) and its code is the sentence code, so every score ranks the truth first."""
    words = torch.randn(n, dim, num_words, device=DEVICE)
    lens = torch.randint(2, num_words + 1, (n,), device=DEVICE)
    words = words * (torch.arange(num_words, device=DEVICE)[None, :] < lens[:, None])[:, None, :]
    noise = 0.3 * torch.randn(n, dim, 3, device=DEVICE)
    regions = torch.cat([words, noise], 2)                                # (N, D, T + 3)
    sentences = torch.randn(n, dim, device=DEVICE)
    return regions, sentences.clone(), words, sentences, lens


def _random_features(n, dim=16, num_regions=9, num_words=5):
    lens = torch.randint(1, num_words + 1, (n,), device=DEVICE)
    return (torch.randn(n, dim, num_regions, device=DEVICE), torch.randn(n, dim, device=DEVICE),
            torch.randn(n, dim, num_words, device=DEVICE), torch.randn(n, dim, device=DEVICE), lens)


@pytest.mark.parametrize("score", ["word", "sentence", "both"])
def test_matched_features_give_one(score):
    result = r_precision_from_features(*_matched_features(120), score=score, runs=3,
                                       backend="reference")
    assert result["mean"] == 1.0 and result["std"] == 0.0 and result["runs"] == [1.0] * 3
    assert result["score"] == score and result["candidates"] == 100 and result["images"] == 120
    json.dumps(result)  # reports embed it


@pytest.mark.parametrize("score", ["word", "sentence"])
def test_random_features_near_chance(score):
    """1 true caption among 100: about 1/100. The 10 runs rank the same 200 images, so they are
    not independent draws; over 600 images and 10 runs the mean stays well inside [0, 0.03]
    (measured over many seeds)."""
    result = r_precision_from_features(*_random_features(600), score=score, runs=10,
                                       backend="reference")
    assert 0.0 < result["mean"] <= 0.03, result
    assert len(result["runs"]) == 10 and result["std"] > 0


def test_top_r_and_candidates():
    feats = _random_features(60)
    kwargs = {"candidates": 20, "runs": 2, "backend": "reference", "strategy": "matrix"}
    top1 = r_precision_from_features(*feats, **kwargs)
    top5 = r_precision_from_features(*feats, top_r=5, **kwargs)
    every = r_precision_from_features(*feats, top_r=20, **kwargs)
    assert top1["mean"] <= top5["mean"] and every["mean"] == 1.0
    with pytest.raises(ValueError, match="mismatching captions"):
        r_precision_from_features(*feats, candidates=61, backend="reference")
    with pytest.raises(ValueError, match="top_r"):
        r_precision_from_features(*feats, top_r=0, backend="reference")
    with pytest.raises(ValueError, match="score"):
        r_precision_from_features(*feats, score="global")


def test_strategies_and_seeds_agree():
    feats = _random_features(40)
    kwargs = {"candidates": 10, "runs": 3, "seed": 5, "backend": "reference"}
    matrix = r_precision_from_features(*feats, strategy="matrix", **kwargs)
    per_image = r_precision_from_features(*feats, strategy="per_image", **kwargs)
    assert matrix == per_image
    assert r_precision_from_features(*feats, strategy="matrix", **kwargs) == matrix
    other = r_precision_from_features(*feats, **{**kwargs, "seed": 6})
    assert other["runs"] != matrix["runs"] or other == matrix  # a new draw (rarely identical)


def test_draw_candidates_protocol():
    true = torch.tensor([3, 0, 7, 2])
    classes = torch.arange(10) % 5                                        # captions 0..9, 5 classes
    cand = draw_candidates(true, 10, 5, torch.Generator().manual_seed(0))
    assert cand.shape == (4, 5) and torch.equal(cand[:, 0], true)
    for row in cand:
        assert len(set(row.tolist())) == 5                                # no repeats, truth once
    cand = draw_candidates(true, 10, 5, torch.Generator().manual_seed(0), classes, classes[true])
    assert (classes[cand[:, 1:]] != classes[true][:, None]).all()
    with pytest.raises(ValueError, match="needs 9 mismatching"):               # 8 per image
        draw_candidates(true, 10, 10, torch.Generator().manual_seed(0), classes, classes[true])


def test_class_mismatch_and_true_caption_mapping():
    """Two captions per image: with true_caption and the owner as class, the other caption of the
    same image is never a 'mismatch'; a duplicate caption would otherwise tie with the truth."""
    regions, codes, words, sentences, lens = _matched_features(50)
    words2, sentences2, lens2 = torch.cat([words, words]), torch.cat([sentences, sentences]), torch.cat([lens, lens])
    owner = torch.cat([torch.arange(50), torch.arange(50)])
    result = r_precision_from_features(regions, codes, words2, sentences2, lens2,
                                       true_caption=torch.arange(50) + 50, caption_classes=owner,
                                       candidates=40, runs=2, backend="reference")
    assert result["mean"] == 1.0
    with pytest.raises(ValueError, match="true_caption"):
        r_precision_from_features(regions, codes, words2, sentences2, lens2,
                                  true_caption=torch.arange(49), backend="reference")


def test_triton_backend_matches_reference():
    pytest.importorskip("triton")
    feats = _random_features(12, dim=16, num_regions=9, num_words=4)
    kwargs = {"candidates": 6, "runs": 2, "seed": 1}
    assert (r_precision_from_features(*feats, backend="triton", **kwargs)
            == r_precision_from_features(*feats, backend="reference", **kwargs))


class _TinyImageEncoder(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, dim, 4, stride=4)
        self.drop = torch.nn.Dropout(0.5)

    def forward(self, x):
        regions = self.drop(self.conv(x))                                 # (B, D, 4, 4)
        return regions, regions.mean(dim=(2, 3))


def test_encoder_wrapper_matches_features_path():
    from attnfast.models import RNN_ENCODER
    images = torch.randn(30, 3, 16, 16)
    captions = torch.randint(1, 20, (30, 7))
    lens = torch.randint(1, 8, (30,))
    image_encoder, text_encoder = _TinyImageEncoder(32), RNN_ENCODER(20, ninput=8, nhidden=32)
    image_encoder.train()
    result = r_precision(image_encoder, text_encoder, images, captions, lens, batch_size=8,
                         candidates=10, runs=2, backend="reference", strategy="matrix")
    assert image_encoder.training and text_encoder.training            # modes restored
    feats = encode(image_encoder, text_encoder, images, captions, lens, batch_size=30)
    assert feats[0].shape == (30, 32, 16) and feats[2].shape == (30, 32, 7)
    assert result == r_precision_from_features(*feats, lens, candidates=10, runs=2,
                                               backend="reference", strategy="matrix")


# ------------------------------------------------------------------ CLI
SMOKE = ["--r-precision", "--num-images", "24", "--candidates", "8", "--runs", "2",
         "--device", "cpu", "--batch-size", "12", "--backend", "reference"]


def test_cli_arguments():
    from attnfast import eval as cli
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--r-precision"])                 # needs a source
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--r-precision", "--random-init", "--checkpoint", "x.pt"])
    args = cli.build_parser().parse_args(["--r-precision", "--random-init"])
    assert (args.candidates, args.runs, args.top_r, args.score) == (100, 10, 1, "word")


def test_cli_random_init_and_checkpoint_round_trip(tmp_path, capsys):
    pytest.importorskip("attnfast.data")
    from attnfast import eval as cli
    out = tmp_path / "r.json"
    assert cli.main(SMOKE + ["--random-init", "--out", str(out)]) == 0
    smoke = json.loads(out.read_text())["r_precision"]
    assert 0.0 <= smoke["mean"] <= 1.0 and len(smoke["runs"]) == 2 and smoke["candidates"] == 8
    ctx = cli.load_context(cli.build_parser().parse_args(SMOKE + ["--random-init"]))
    ckpt = tmp_path / "damsm.pt"
    torch.save({"text_encoder": ctx.text_encoder.state_dict(),
                "image_encoder": ctx.image_encoder.state_dict(), "config": ctx.config,
                "vocab": ctx.vocab.to_dict()}, ckpt)
    capsys.readouterr()
    assert cli.main(SMOKE + ["--checkpoint", str(ckpt)]) == 0
    assert json.loads(capsys.readouterr().out)["r_precision"] == smoke  # same weights, same draws
    torch.save({"config": ctx.config}, ckpt)
    assert cli.main(SMOKE + ["--checkpoint", str(ckpt)]) == 2
    assert "missing" in capsys.readouterr().err


def test_cli_generated_images(tmp_path, capsys):
    """--images generated runs the checkpoint's generator on the captions (random weights here)."""
    from attnfast import eval as cli
    from attnfast.models.build import build_generator
    ctx = cli.load_context(cli.build_parser().parse_args(SMOKE + ["--random-init"]))
    ckpt = tmp_path / "gan.pt"
    state = {"text_encoder": ctx.text_encoder.state_dict(),
             "image_encoder": ctx.image_encoder.state_dict(), "config": ctx.config,
             "vocab": ctx.vocab.to_dict()}
    torch.save(state, ckpt)
    assert cli.main(SMOKE + ["--checkpoint", str(ckpt), "--images", "generated"]) == 2
    assert "netG_ema" in capsys.readouterr().err
    torch.save({**state, "netG_ema": build_generator(ctx.config).state_dict()}, ckpt)
    assert cli.main(SMOKE + ["--checkpoint", str(ckpt), "--images", "generated"]) == 0
    result = json.loads(capsys.readouterr().out)["r_precision"]
    assert result["images_kind"] == "generated" and len(result["runs"]) == 2
