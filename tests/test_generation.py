"""The generation core (attnfast.generation): captions, seeded items, batch independence, and that the
sample command draws exactly what the core draws for the same captions and seeds."""
import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import damsm_checkpoint, gan_checkpoint  # noqa: F401 - fixtures

from attnfast.data import to_uint8_images
from attnfast.generation import (
    GenerationError,
    SeededGenerator,
    batch_buckets,
    encode_captions,
    fixed_noise,
    load_generator,
    sample_to_files,
    seeded_noise,
)

CPU = torch.device("cpu")
PACKAGE = Path(__file__).resolve().parent.parent / "attnfast"
ENTRY_POINTS = {"sample", "train", "eval", "serve", "demo"}


@pytest.fixture(scope="module")
def models(gan_checkpoint):
    return load_generator(gan_checkpoint, CPU)


def test_encode_captions_returns_unknown_words_and_tokens(models):
    encoded = encode_captions(["a large zebra red circle zebra", "a small blue square in the top left"],
                              models.vocab, 4, warn=False)
    assert encoded.unknown == [["zebra"], []]
    assert encoded.tokens == [["a", "large", "red", "circle"], ["a", "small", "blue", "square"]]  # cut to 4
    assert encoded.ids.shape == (2, 4) and encoded.lens.tolist() == [4, 4]
    with pytest.raises(GenerationError, match="no word the model knows") as info:
        encode_captions(["a red circle", "zebra giraffe"], models.vocab, 18)
    assert info.value.index == 1


def test_seeded_noise_rows_come_from_their_own_seed(models):
    config = models.config
    z, eps = seeded_noise([5, 9, 5], config["model"]["z_dim"], config["model"]["condition_dim"])
    z9, eps9 = fixed_noise(config, 1, 9)
    assert torch.equal(z[1:2], z9) and torch.equal(eps[1:2], eps9)
    assert torch.equal(z[0], z[2]) and not torch.equal(z[0], z[1])


def test_batch_buckets():
    assert batch_buckets(1) == (1,)
    assert batch_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert batch_buckets(48) == (1, 2, 4, 8, 16, 32, 48)


def test_an_items_image_does_not_depend_on_its_batch_mates(models):
    core = SeededGenerator(models, CPU, max_batch=8)
    encoded = core.encode(["a large red circle in the center", "a small blue square in the top left",
                           "a large green star on the left"])
    alone = core.draw(encoded.ids[:1], encoded.lens[:1], [11])
    rows = torch.tensor([1, 2, 0, 2, 1])
    merged = core.draw(encoded.ids[rows], encoded.lens[rows], [3, 4, 11, 6, 7])
    torch.testing.assert_close(merged.images[2:3], alone.images, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged.last_attention[2:3], alone.last_attention, rtol=0, atol=1e-5)
    assert not torch.allclose(merged.images[0], merged.images[4])           # other seeds, other images
    assert alone.images.shape == (1, 3, 128, 128) and alone.last_attention.shape[:2] == (1, 18)
    with pytest.raises(ValueError, match="draw takes 1..8 items"):
        core.draw(encoded.ids[[0] * 9], encoded.lens[[0] * 9], list(range(9)))


def test_sample_draws_what_the_core_draws_and_reproduces(tmp_path, gan_checkpoint, models):
    """``python -m attnfast.sample --seed S`` draws image j with seed S + j: the same pixels as the
    core (and so the server) for that caption and seed, run after run, whatever --batch."""
    captions = ["a large red circle in the center", "a small blue square in the top left"]
    for name, batch in (("a", 4), ("b", 3)):
        sample_to_files(gan_checkpoint, captions, tmp_path / name, n=3, batch=batch, seed=20, progress=False,
                        fmt="npz")
    first = np.load(tmp_path / "a" / "images.npz")["images"].astype(int)
    second = np.load(tmp_path / "b" / "images.npz")["images"].astype(int)
    assert np.abs(first - second).max() <= 1
    core = SeededGenerator(models, CPU, max_batch=6)
    encoded = core.encode(captions)
    rows = torch.tensor([0, 0, 0, 1, 1, 1])
    drawn = to_uint8_images(core.draw(encoded.ids[rows], encoded.lens[rows], list(range(20, 26))).images)
    assert np.abs(drawn.astype(int) - first).max() <= 1
    sample_to_files(gan_checkpoint, captions[1:], tmp_path / "png", n=1, batch=1, seed=23, progress=False)
    png = np.asarray(Image.open(tmp_path / "png" / "0000_a_small_blue_square_in_the_top_left_0.png"))
    assert np.abs(png.astype(int) - drawn[3]).max() <= 1


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_library_module_imports_a_command_line_entry_point():
    entry_modules = {f"attnfast.{name}" for name in ENTRY_POINTS}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent)
        hits = _imports(path) & entry_modules - {f"attnfast.{path.stem}"}
        if hits:
            offenders.append(f"{relative}: {sorted(hits)}")
    assert not offenders, offenders


@pytest.mark.gpu
def test_graphed_buckets_equal_eager_on_cuda(gan_checkpoint):
    """With graphs, a batch is padded to its bucket and replayed: the same images as eager."""
    cuda = torch.device("cuda")
    models = load_generator(gan_checkpoint, cuda)
    eager = SeededGenerator(models, cuda, max_batch=8)
    graphed = SeededGenerator(models, cuda, graphs=True, max_batch=8)
    graphed.warm_up()
    encoded = eager.encode(["a large red circle in the center", "a small blue square in the top left"])
    for count in (1, 3, 8):                                 # bucket 1, 4 (padded), 8
        rows = torch.arange(count) % 2
        seeds = list(range(100, 100 + count))
        ref = eager.draw(encoded.ids[rows], encoded.lens[rows], seeds)
        got = graphed.draw(encoded.ids[rows], encoded.lens[rows], seeds)
        assert all(runner.graph is not None for runner in graphed._runners.values())
        torch.testing.assert_close(got.images, ref.images, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.last_attention, ref.last_attention, rtol=1e-4, atol=1e-4)
