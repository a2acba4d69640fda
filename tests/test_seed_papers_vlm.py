"""Issue 9, VLMGAN: the matching-score block, its pretraining stage, VLMS in attnfast.eval and the
VLM / VVM generator losses (CPU, tiny configs; the DAMSM encoders get a short real training so
that the matching has something to find)."""
import json

import pytest
import torch
from test_train import TINY

from attnfast import eval as eval_cli
from attnfast import train as train_cli
from attnfast.config import load_config
from attnfast.models.vlmgan import MatchingScoreBlock, global_scores, local_scores, mismatched_order
from attnfast.trainer.damsm import train_damsm
from attnfast.trainer.gan import GANTrainer

CPU = torch.device("cpu")
FAST = TINY + ["dataset.train_size=96", "damsm.batch_size=16", "damsm.lr=0.02", "model.small_encoder_width=16",
               "vlm.dim=32", "vlm.heads=2", "vlm.layers=1", "vlm.ffn=64", "vlm.batch_size=16", "vlm.lr=0.002"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    out = tmp_path_factory.mktemp("damsm_vlm")
    train_damsm(load_config(None, FAST), out, CPU, steps=50, progress=False)
    return out / "damsm.pt"


@pytest.fixture(scope="module")
def vlm_checkpoint(tmp_path_factory, encoders):
    out = tmp_path_factory.mktemp("vlm")
    args = ["--stage", "vlm", "--damsm", str(encoders), "--out", str(out), "--steps", "200", "--device", "cpu",
            "--no-progress"]
    for item in FAST:
        args += ["--set", item]
    assert train_cli.main(args) == 0
    return out / "vlm.pt"


def test_vlms_is_higher_for_true_pairs_than_shuffled_pairs(tmp_path, vlm_checkpoint):
    out = tmp_path / "vlms.json"
    assert eval_cli.main(["--checkpoint", str(vlm_checkpoint), "--vlms", "--num-images", "64",
                          "--batch-size", "32", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())["vlms"]
    true, shuffled = report["true"], report["shuffled"]
    assert report["pairs"] == 64 and report["shuffled_pairs"] > 32
    assert true["vlms"] > shuffled["vlms"] and report["gap"] > 0
    assert true["general"] > shuffled["general"] + 0.02, report    # the trained block separates them
    assert true["global"] > shuffled["global"]
    assert 0 < true["general"] < 1
    assert true["vlms"] == pytest.approx((true["local"] + true["global"] + true["general"]) / 3, rel=1e-5)


def test_vlms_needs_a_matching_block(tmp_path, encoders, capsys):
    assert eval_cli.main(["--checkpoint", str(encoders), "--vlms", "--num-images", "8", "--device", "cpu"]) == 2
    assert "--vlms needs the matching block" in capsys.readouterr().err


def test_matching_block_contracts():
    torch.manual_seed(0)
    block = MatchingScoreBlock(nef=8, dim=16, heads=2, layers=1, ffn=32).eval()
    regions, code = torch.randn(3, 8, 4, 4), torch.randn(3, 8)
    words, sentence = torch.randn(3, 8, 6), torch.randn(3, 8)
    mask = torch.arange(6)[None] >= torch.tensor([6, 3, 1])[:, None]
    logits = block(regions, code, words, sentence, mask)
    assert logits.shape == (3,)
    other = words.clone()
    other[mask[:, None, :].expand_as(words)] = 100.0                   # padded words change nothing
    assert torch.allclose(block(regions, code, other, sentence, mask), logits, atol=1e-5)
    single = block(regions[1:2], code[1:2], words[1:2], sentence[1:2], mask[1:2])
    assert torch.allclose(single, logits[1:2], atol=1e-5)            # pairs are scored independently
    assert torch.all((block.score(regions, code, words, sentence, mask) > 0)
                     & (block.score(regions, code, words, sentence, mask) < 1))
    with pytest.raises(ValueError, match="mask must be a"):
        block(regions, code, words, sentence, mask[:, :5])
    with pytest.raises(ValueError, match="a row is all padding"):
        block(regions, code, words, sentence, torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="regions must have shape"):
        block(regions[:, :4], code, words, sentence, mask)


def test_local_and_global_scores_of_matched_pairs():
    regions, words = torch.randn(4, 8, 3, 3, dtype=torch.float64), torch.randn(4, 8, 5, dtype=torch.float64)
    lens = torch.tensor([5, 2, 3, 1])
    from attnfast.reference import damsm_scores
    expected = torch.diagonal(damsm_scores(regions.flatten(2), words, lens, 4.0, 5.0)) / 5.0
    assert torch.allclose(local_scores(regions, words, lens, 4.0, 5.0), expected)
    code, sentence = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.allclose(global_scores(code, sentence), torch.nn.functional.cosine_similarity(code, sentence))


def test_mismatched_order_has_no_fixed_points_and_flags_same_class_pairs():
    classes = torch.tensor([0, 1, 0, 2, 3, 3])
    order, usable = mismatched_order(classes, torch.Generator().manual_seed(1))
    assert sorted(order.tolist()) == list(range(6)) and bool((order != torch.arange(6)).all())
    assert torch.equal(usable, classes != classes[order])


@pytest.mark.parametrize("option, term", [("vlm.lambda_vlm=1.0", "vlm"), ("vlm.lambda_vvm=1.0", "vvm")])
def test_vlm_and_vvm_losses_enter_the_generator_loss(tmp_path, encoders, vlm_checkpoint, option, term):
    config = load_config(None, FAST + [option, f"vlm.checkpoint={vlm_checkpoint}"])
    trainer = GANTrainer(config, tmp_path, CPU, encoders)
    before = {k: v.clone() for k, v in trainer.extras.msb.state_dict().items()}
    losses = trainer.train_step(next(trainer.batches()))
    assert term in losses and torch.isfinite(losses[term]) and float(losses[term]) > 0
    adv = sum(float(v) for k, v in losses.items() if k.startswith("g_adv"))
    total = adv + float(losses["w_loss"] + losses["s_loss"] + losses["kl"] + losses[term])
    assert float(losses["errG"]) == pytest.approx(total, rel=1e-5)
    after = trainer.extras.msb.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)    # the pretrained block stays frozen


def test_matching_block_is_tied_to_its_encoders(tmp_path, vlm_checkpoint):
    other = tmp_path / "other"
    train_damsm(load_config(None, FAST + ["train.seed=7"]), other, CPU, steps=1, progress=False)
    config = load_config(None, FAST + ["vlm.lambda_vlm=1.0", f"vlm.checkpoint={vlm_checkpoint}"])
    with pytest.raises(ValueError, match="trained on other DAMSM encoders"):
        GANTrainer(config, tmp_path, CPU, other / "damsm.pt")


def test_vlm_stage_resume_is_exact(tmp_path, encoders):
    from attnfast.engine import checkpoint as ckpt
    from attnfast.trainer.vlm import train_vlm
    config = load_config(None, FAST + ["dataset.train_size=32"])         # 2 steps per epoch
    train_vlm(config, tmp_path / "full", CPU, encoders, steps=3, progress=False)
    train_vlm(config, tmp_path / "half", CPU, encoders, steps=2, progress=False)
    train_vlm(config, tmp_path / "half", CPU, None, resume=tmp_path / "half" / "vlm.pt", steps=3, progress=False)
    full, resumed = ckpt.load(tmp_path / "full" / "vlm.pt"), ckpt.load(tmp_path / "half" / "vlm.pt")
    assert all(torch.equal(full["msb"][k], resumed["msb"][k]) for k in full["msb"])
