"""Issue 20, diversity: n samples per caption against n real renderings of the caption's scene, in the
attribute classifier's feature space. Identical samples give 0, real against real gives 1, a generator
that ignores its noise gives 0; the shapes evaluation and ``python -m attnfast.eval`` report it."""
import json

import numpy as np
import pytest
import torch
from test_train import tiny_config

from attnfast.data import ShapesDataset, render_scene
from attnfast.data.shapes import BACKGROUNDS, background_weights, sample_scene, scene_for_caption
from attnfast.engine import checkpoint as ckpt
from attnfast.metrics import diversity, shapes_accuracy

CPU = torch.device("cpu")
# test_train's tiny model at 32 -> 64 px
CONFIG = ["model.base_size=32", "damsm.image_size=32", "model.small_encoder_width=8"]


@pytest.fixture(scope="module")
def classifier():
    """Random weights: the features are a fixed function of the image, which is all the metric needs."""
    torch.manual_seed(0)
    return shapes_accuracy.CellClassifier().eval()


def _captions(grid: int, count: int) -> list[str]:
    config = tiny_config(f"dataset.grid={grid}", f"dataset.max_objects={min(3, grid * grid)}")
    return diversity.shapes_test_captions(config, count)


# ---------------------------------------------------------------------- real renderings
def test_scene_for_caption_reads_back_the_test_scenes():
    data = ShapesDataset(30, seed=3, split="test", grid=3)
    for i in range(len(data)):
        scene = data.get_scene(i)
        drawn = scene_for_caption(scene.captions[0], np.random.default_rng(i), 64, 3)
        key = lambda s: sorted((o.shape, o.colour, o.size, o.cell) for o in s.objects)  # noqa: E731
        assert key(drawn) == key(scene)
        if drawn.background == scene.background:
            assert np.array_equal(render_scene(drawn), render_scene(scene))
    named = scene_for_caption("a large red circle in the center on a teal background", np.random.default_rng(0),
                              64, 1)
    assert named.background == "teal"


def test_background_weights_follow_the_data():
    weights = dict(zip(BACKGROUNDS, background_weights(["black"]), strict=True))
    assert weights["navy"] == 0.0 and abs(sum(weights.values()) - 1) < 1e-12  # black does not contrast navy
    rng = np.random.default_rng(0)
    seen = [s.background for s in (sample_scene(rng, max_objects=1, grid=1) for _ in range(20000))
            if s.objects[0].colour == "black"]
    for name, weight in weights.items():
        assert abs(seen.count(name) / len(seen) - weight) < 0.03, name


def test_real_sets_are_seeded_and_vary_only_without_a_named_background():
    captions = ["a large red circle in the center", "a large red circle in the center on a gray background"]
    sets = diversity.real_image_sets(captions, 6, 1, 32, seed=4)
    assert sets.shape == (2, 6, 3, 32, 32) and torch.equal(sets, diversity.real_image_sets(captions, 6, 1, 32, 4))
    assert len({tuple(img[:, 0, 0].tolist()) for img in sets[0]}) > 1          # backgrounds drawn
    assert all(torch.equal(img, sets[1, 0]) for img in sets[1])              # background named


def test_bad_captions_are_refused():
    with pytest.raises(ValueError, match="not on the 1x1 grid"):
        diversity.real_image_sets(["a large red circle in the top left"], 2, 1, 32)
    with pytest.raises(ValueError, match="two objects"):
        diversity.real_image_sets(["a large red circle top, a small blue square top"], 2, 3, 32)


# ---------------------------------------------------------------------- the metric
def test_identical_samples_give_zero_and_real_against_itself_one(classifier):
    real = diversity.real_image_sets(_captions(3, 6), 4, 3, 64)
    same = real[:, :1].expand_as(real).clone()
    result = diversity.diversity(classifier, same, real, grid=3)
    assert result["generated"] == 0.0 and result["ratio"] == 0.0 and result["real"] > 0
    assert (result["captions"], result["n"], result["distance"]) == (6, 4, "l2")
    assert diversity.diversity(classifier, real, real, grid=3)["ratio"] == 1.0


def test_independent_real_draws_give_about_one(classifier):
    captions = _captions(1, 200)
    a, b = (diversity.real_image_sets(captions, 4, 1, 32, seed) for seed in (0, 1))
    ratio = diversity.diversity(classifier, a, b, grid=1)["ratio"]
    assert 0.85 < ratio < 1.15, ratio  # over 6 seeds at K=50 the spread was +-8 %; K=200 here


def test_named_backgrounds_only_give_no_ratio(classifier):
    real = diversity.real_image_sets(["a large red circle in the center on a gray background"] * 2, 3, 1, 32)
    result = diversity.diversity(classifier, real + 0.1 * torch.randn_like(real), real, grid=1)
    assert result["real"] == 0.0 and result["ratio"] is None and result["generated"] > 0


@pytest.mark.parametrize("call", [
    lambda clf, x: diversity.diversity(clf, x[:, :1], x[:, :1], 1),
    lambda clf, x: diversity.diversity(clf, x[:0], x[:0], 1),
    lambda clf, x: diversity.diversity(clf, x, x[:, :2], 1),
    lambda clf, x: diversity.real_image_sets([], 4, 1, 32),
    lambda clf, x: diversity.real_image_sets(["a large red circle in the center"], 1, 1, 32),
    lambda clf, x: diversity.mean_pairwise_distance(torch.zeros(2, 3)),
])
def test_bad_arguments_are_clear_errors(classifier, call):
    images = torch.zeros(2, 3, 3, 32, 32)
    with pytest.raises(ValueError, match="n >= 2|at least one caption|one shape|captions, n"):
        call(classifier, images)


class CaptionOnly(torch.nn.Module):
    """A generator whose image depends on the sentence only: z and the CA noise are ignored."""

    def __init__(self, embedding_dim: int, ncf: int = 8, side: int = 16):
        super().__init__()
        self.ncf, self.side = ncf, side
        self.project = torch.nn.Linear(embedding_dim, 3 * side * side)

    def forward(self, noise, sentence, words, mask, eps=None):
        image = torch.tanh(self.project(sentence)).view(-1, 3, self.side, self.side)
        return [image], [], None, None


def test_a_generator_ignoring_its_noise_gives_zero(classifier):
    from attnfast.generation import encode_captions
    from attnfast.models.build import build_text_encoder
    from attnfast.trainer.common import build_vocabulary
    config = tiny_config("dataset.grid=1", "dataset.max_objects=1")
    vocab = build_vocabulary(config)
    text_encoder = build_text_encoder(config, len(vocab)).eval()
    models = (CaptionOnly(config["model"]["embedding_dim"]), text_encoder, vocab, config)
    result = diversity.evaluate_diversity(models, classifier, _captions(1, 5), n=3, seed=2, batch=4)
    # 0 up to float rounding: a caption's samples fall in batches of other sizes (6e-9 against 0.46;
    # exactly 0 in one batch)
    assert result["ratio"] < 1e-6 and result["real"] > 0
    ids, lens, _, _ = encode_captions(["a large red circle in the center"] * 2, vocab, 18, warn=False)
    fakes = diversity.generated_image_sets(models[0], text_encoder, ids, lens, 3, 18, 8, batch=4)
    assert fakes.shape == (2, 3, 3, 16, 16)


# ---------------------------------------------------------------------- the shapes evaluation and the CLI
@pytest.fixture(scope="module")
def gan_file(tmp_path_factory):
    """An untrained tiny GAN checkpoint (its generator uses z, so its samples differ)."""
    from attnfast.models.build import build_generator, build_image_encoder, build_text_encoder
    from attnfast.trainer.common import build_vocabulary
    config = tiny_config(*CONFIG)
    vocab = build_vocabulary(config)
    path = tmp_path_factory.mktemp("gan") / "gan.pt"
    ckpt.save_atomic({"format": "attnfast", "kind": "gan", "step": 0, "config": config, "vocab": vocab.to_dict(),
                      "text_encoder": build_text_encoder(config, len(vocab)).state_dict(),
                      "image_encoder": build_image_encoder(config).state_dict(),
                      "netG_ema": build_generator(config).state_dict()}, path)
    return path


@pytest.fixture
def cached_random_classifier(tmp_path, monkeypatch):
    """HOME in tmp_path with a random-weight classifier in its cache (no training)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(shapes_accuracy, "train_classifier", lambda: shapes_accuracy.CellClassifier().eval())
    return shapes_accuracy.default_cache_dir()


def test_evaluate_checkpoint_reports_diversity(gan_file, cached_random_classifier):
    from attnfast.metrics.shapes_eval import evaluate_checkpoint
    kwargs = {"num_images": 100, "batch": 50, "r_runs": 1, "diversity_captions": 3, "diversity_n": 3}
    report = evaluate_checkpoint(gan_file, None, CPU, **kwargs)
    result = report["diversity"]
    assert (result["captions"], result["n"], result["resolution"]) == (3, 3, 64)
    assert result["generated"] > 0 and result["ratio"] == result["generated"] / result["real"]
    assert evaluate_checkpoint(gan_file, None, CPU, **kwargs)["diversity"] == result  # seeded
    assert "diversity" not in evaluate_checkpoint(gan_file, None, CPU, **{**kwargs, "diversity_captions": 0})
    with pytest.raises(ValueError, match="n >= 2"):
        evaluate_checkpoint(gan_file, None, CPU, **{**kwargs, "diversity_n": 1})


def test_eval_cli_diversity(gan_file, cached_random_classifier, capsys):
    from attnfast import eval as cli
    base = ["--checkpoint", str(gan_file), "--device", "cpu", "--batch-size", "8", "--diversity-captions", "3",
            "--diversity-n", "2"]
    assert cli.main(["--diversity"] + base) == 0
    result = json.loads(capsys.readouterr().out)["diversity"]
    assert (result["captions"], result["n"]) == (3, 2) and result["generated"] > 0
    assert cli.main(["--diversity"] + base + ["--diversity-n", "1"]) == 2
    assert "n >= 2" in capsys.readouterr().err
    assert cli.main(["--diversity"] + base + ["--diversity-captions", "0"]) == 2
    assert "at least one caption" in capsys.readouterr().err
