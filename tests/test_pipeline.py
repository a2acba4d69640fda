"""``python -m attnfast.train`` with no --stage: DAMSM -> GAN -> shapes evaluation into one folder,
continued exactly after a SIGKILL in either stage; checkpoints of another config are refused."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from test_train import TINY, tiny_config

from attnfast import train as train_cli
from attnfast.engine import checkpoint as ckpt
from attnfast.pipeline import config_differences, run_pipeline
from attnfast.trainer import common

# test_train's tiny model at 32 -> 64 px, a checkpoint every step (so a kill finds one mid-stage)
PIPELINE = TINY + ["model.base_size=32", "damsm.image_size=32", "model.small_encoder_width=8",
                   "train.checkpoint_every=1", "damsm.steps=6", "gan.steps=6"]
CPU = torch.device("cpu")


def _sets(overrides) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def _command(out) -> list[str]:
    return [sys.executable, "-m", "attnfast.train", "--out", str(out), "--device", "cpu", "--no-progress",
            *_sets(PIPELINE)]


@pytest.fixture(scope="module")
def child_env(tmp_path_factory):
    """Environment of the training subprocesses: one thread each (2 shared CI cores; every run uses
    the same setting, so their results compare bit for bit) and a HOME whose cache already holds a
    (random-weight) shapes classifier, so the evaluation does not train one."""
    from attnfast.metrics import shapes_accuracy
    home = tmp_path_factory.mktemp("home")
    real_train = shapes_accuracy.train_classifier
    shapes_accuracy.train_classifier = lambda: shapes_accuracy.CellClassifier().eval()
    try:
        shapes_accuracy.cached_classifier(home / ".cache" / "attnfast")
    finally:
        shapes_accuracy.train_classifier = real_train
    return {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, child_env):
    out = tmp_path_factory.mktemp("pipeline") / "full"
    result = subprocess.run(_command(out), env=child_env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_default_pipeline_writes_both_checkpoints_and_the_eval(uninterrupted):
    out, result = uninterrupted
    assert f"damsm.steps=6 -> {out / 'damsm.pt'}" in result.stderr  # the plan, said first
    assert f"gan.steps=6 -> {out / 'gan.pt'}" in result.stderr
    assert ckpt.load(out / "damsm.pt", kind="damsm")["step"] == 6
    gan = ckpt.load(out / "gan.pt", kind="gan")
    assert gan["step"] == 6 and gan["damsm_checkpoint"] == str(out / "damsm.pt")
    report = json.loads((out / "eval.json").read_text())
    assert report["step"] == 6 and report["images"] > 0
    assert set(report["attribute_accuracy"]) >= {"shape", "colour", "scene"}
    summary = json.loads(result.stdout)
    assert summary["damsm"]["steps"] == summary["gan"]["steps"] == 6 and summary["eval"] == report


def _kill_once_written(command, env, path, log, timeout=900.0) -> None:
    """Start ``command`` and SIGKILL it as soon as ``path`` exists (checkpoints are renamed into
    place whole, so the file is complete when it appears)."""
    with open(log, "w") as stream:
        process = subprocess.Popen(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not path.exists():
                assert process.poll() is None, f"ended before {path} appeared:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no {path} after {timeout} s"
                time.sleep(0.01)
        finally:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_killed_in_each_stage_and_rerun_equals_the_uninterrupted_run(tmp_path, uninterrupted, child_env):
    full, _ = uninterrupted
    out = tmp_path / "run"
    _kill_once_written(_command(out), child_env, out / "damsm.pt", tmp_path / "first.log")
    assert ckpt.load(out / "damsm.pt")["step"] < 6 and not (out / "gan.pt").exists(), "not killed in DAMSM"
    _kill_once_written(_command(out), child_env, out / "gan.pt", tmp_path / "second.log")
    assert "DAMSM: resuming" in (tmp_path / "second.log").read_text()
    assert ckpt.load(out / "damsm.pt")["step"] == 6 and ckpt.load(out / "gan.pt")["step"] < 6, "not killed in GAN"
    result = subprocess.run(_command(out), env=child_env, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(damsm.steps=6): finished, reused" in result.stderr and "(gan.steps=6): resuming" in result.stderr
    expected, resumed = ckpt.load(full / "gan.pt"), ckpt.load(out / "gan.pt")
    assert resumed["step"] == 6
    for key in ("netG", "netG_ema"):
        for name, value in expected[key].items():
            assert torch.equal(value, resumed[key][name]), f"{key}.{name} differs from the uninterrupted run"
    for theirs, ours in zip(expected["netsD"], resumed["netsD"], strict=True):
        assert all(torch.equal(theirs[name], ours[name]) for name in theirs)
    assert json.loads((out / "eval.json").read_text())["step"] == 6


# ---------------------------------------------------------------------- refusals (no training)
def _fake_checkpoint(path, kind, config, step, **entries) -> None:
    """A checkpoint with what the pipeline reads before training: kind, step, config, vocabulary."""
    state = {"format": "attnfast", "kind": kind, "step": step, "config": config,
             "vocab": common.build_vocabulary(config).to_dict(), **entries}
    ckpt.save_atomic(state, path)


def test_a_damsm_checkpoint_of_another_encoder_size_is_an_error_naming_both(tmp_path, capsys):
    _fake_checkpoint(tmp_path / "damsm.pt", "damsm", tiny_config("damsm.steps=6"), 3)
    args = ["--out", str(tmp_path), "--device", "cpu", "--no-progress", *_sets(PIPELINE)]
    assert train_cli.main(args + ["--set", "model.embedding_dim=16"]) == 2
    err = capsys.readouterr().err
    assert "model.embedding_dim: damsm.pt has 32, the config asks for 16" in err
    assert "can be neither reused nor continued" in err
    assert ckpt.load(tmp_path / "damsm.pt")["step"] == 3 and not (tmp_path / "gan.pt").exists()


def test_config_differences_name_the_vocabulary_and_ignore_lengths_and_bookkeeping(tmp_path):
    config = tiny_config()
    vocab = common.build_vocabulary(config).to_dict()
    other_words = dict(vocab, ixtoword=vocab["ixtoword"][:3] + ["zebra"] + vocab["ixtoword"][4:])
    state = {"kind": "damsm", "config": config, "vocab": other_words}
    lines = config_differences(state, config, tmp_path / "damsm.pt")
    assert lines == [(f"vocabulary: damsm.pt has {len(vocab['ixtoword']) - 1} words, the config's data set "
                     f"{len(vocab['ixtoword']) - 1} (first difference at index 3: 'zebra' vs "
                     f"{vocab['ixtoword'][3]!r})")]
    same = tiny_config("damsm.steps=99", "gan.steps=7", "train.log_every=5", "dataset.num_workers=2",
                       "train.checkpoint_every=3")
    assert config_differences(dict(state, vocab=vocab), same, tmp_path / "damsm.pt") == []
    # G's sizes do not concern the DAMSM encoders, but they do concern a GAN checkpoint
    wider = tiny_config("model.gf_dim=8")
    assert config_differences(dict(state, vocab=vocab), wider, tmp_path / "damsm.pt") == []
    assert config_differences({"kind": "gan", "config": config}, wider, tmp_path / "gan.pt") == [
        "model.gf_dim: gan.pt has 4, the config asks for 8"]


def test_a_gan_checkpoint_on_other_damsm_encoders_is_refused(tmp_path):
    config = tiny_config("damsm.steps=6", "gan.steps=6")
    encoders = {"text_encoder": {"w": torch.zeros(2)}, "image_encoder": {"w": torch.zeros(3)}}
    _fake_checkpoint(tmp_path / "damsm.pt", "damsm", config, 4, **encoders)
    _fake_checkpoint(tmp_path / "gan.pt", "gan", config, 2, damsm_checkpoint="elsewhere/damsm.pt", **encoders)
    with pytest.raises(ValueError, match=r"gan.pt exists but .*damsm.pt is at step 4, short of damsm.steps=6"):
        run_pipeline(config, tmp_path, CPU, progress=False)
    _fake_checkpoint(tmp_path / "damsm.pt", "damsm", config, 6,
                     text_encoder={"w": torch.ones(2)}, image_encoder={"w": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"trained on other DAMSM encoders .*elsewhere/damsm.pt"):
        run_pipeline(config, tmp_path, CPU, progress=False)


@pytest.mark.parametrize("args, message", [
    (["--steps", "5"], "for the whole pipeline use --set damsm.steps=N --set gan.steps=M"),
    (["--gan", "g.pt"], "--gan (the generator to invert) goes with --stage style"),
])
def test_pipeline_cli_refuses_single_stage_flags(tmp_path, capsys, args, message):
    assert train_cli.main(["--out", str(tmp_path), "--device", "cpu", *args]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_bare_damsm_flag_still_means_the_gan_stage(tmp_path, capsys):
    assert train_cli.main(["--damsm", str(tmp_path / "missing.pt"), "--out", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint not found: {tmp_path / 'missing.pt'}" in err and "whole pipeline" not in err
