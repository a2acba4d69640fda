"""The plumbing of ``bench/train_bench.py --config`` (issue 27): the step worker answers every
request on a tiny config, builds the trainer with its tree's CLI defaults, restores what it wraps
for the per-part timing, and the baseline tree is extracted from git with this tree's extension."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_train import TINY

from attnfast.trainer.damsm import train_damsm

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "bench" / "_train_step_worker.py"


def _tiny_yaml(path: Path) -> Path:
    config: dict = {}
    for item in TINY:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        config.setdefault(section, {})[name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("stage", ["gan", "damsm"])
def test_step_worker_answers_each_request(tmp_path, stage):
    from attnfast.config import load_config
    config = _tiny_yaml(tmp_path / "tiny.yaml")
    damsm = None
    if stage == "gan":
        train_damsm(load_config(str(config)), tmp_path / "damsm", torch.device("cpu"), steps=1, progress=False)
        damsm = str(tmp_path / "damsm" / "damsm.pt")
    cmd = [sys.executable, str(WORKER), "--stage", stage, "--config", str(config), "--out", str(tmp_path / "w"),
           "--warmup", "1", "--threads", "1"] + (["--damsm", damsm] if damsm else [])
    requests = [{"cmd": "info"}, {"cmd": "time", "steps": 2}, {"cmd": "parts", "steps": 2},
                {"cmd": "time", "steps": 1}, {"cmd": "flops"}, {"cmd": "nope"}, {"cmd": "quit"}]
    result = subprocess.run(cmd, check=False, input="".join(json.dumps(r) + "\n" for r in requests), capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    ready, info, timed, parts, again, flops, unknown = [json.loads(line) for line in result.stdout.splitlines()]
    assert ready == {"ready": True}
    assert info["amp"] in ("bf16", "off") and info["threads"] == 1 and info["batch"] in (4, 8)
    assert info["attnfast"] == str(ROOT / "attnfast" / "__init__.py")
    assert timed["seconds"] > 0 and again["seconds"] > 0 and flops["flops"] > 0
    assert "data (render + collate)" in parts["parts_ms"] and parts["total_ms"] > 0
    expected = {"G forward", "G backward (through Ds, image encoder, G)", "D0 backward", "optimisers"} \
        if stage == "gan" else {"image encoder forward", "text encoder forward", "backward"}
    assert expected <= set(parts["parts_ms"])
    assert sum(parts["parts_ms"].values()) == pytest.approx(parts["total_ms"], rel=1e-6)
    assert "unknown cmd" in unknown["error"]


def test_parts_wrappers_are_removed_afterwards(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from _train_step_worker import _Parts
    from test_train import tiny_config

    from attnfast.trainer.damsm import DAMSMTrainer
    trainer = DAMSMTrainer(tiny_config(), tmp_path, torch.device("cpu"))
    backward, clip = torch.Tensor.backward, torch.nn.utils.clip_grad_norm_
    with _Parts(trainer, "damsm") as parts:
        trainer.train_step(next(trainer.batches()))
    assert parts.totals["backward"] > 0 and parts.totals["text encoder forward"] > 0
    assert torch.Tensor.backward is backward and torch.nn.utils.clip_grad_norm_ is clip
    assert "forward" not in vars(trainer.image_encoder) and "step" not in vars(trainer.optimizer)


def test_baseline_tree_is_extracted_with_this_trees_extension(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    import train_bench
    if subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", train_bench.BASELINE_REV], check=False).returncode:
        pytest.skip("the baseline revision is not in this clone")
    tree = Path(train_bench._extract_tree(train_bench.BASELINE_REV, str(tmp_path)))
    assert (tree / "attnfast" / "trainer" / "gan.py").is_file()
    assert not (tree / "attnfast" / "ops" / "fast_autograd.py").exists()        # the code before issue 27
    built = sorted(p.name for p in (ROOT / "attnfast").glob("_C*.so"))
    assert sorted(p.name for p in (tree / "attnfast").glob("_C*.so")) == built


def test_the_extension_stands_in_for_the_baseline_only_when_it_adds(monkeypatch):
    """This tree's built extension serves the baseline tree when csrc/ only gained files and lines in the
    entry-point files (every baseline kernel unchanged); a changed kernel or a removed line refuses."""
    sys.path.insert(0, str(ROOT / "bench"))
    import train_bench

    def fake(numstat: str, names: str):
        def run(cmd, **kwargs):
            out = numstat if "--numstat" in cmd else names
            return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")
        return run
    cases = [
        ("3\t0\tcsrc/glu_cpu.cpp\n5\t0\tcsrc/bindings.cpp\n4\t0\tcsrc/ops.h\n",
         "A\tcsrc/glu_cpu.cpp\nM\tcsrc/bindings.cpp\nM\tcsrc/ops.h\n", ""),
        ("1\t1\tcsrc/damsm_cpu.cpp\n", "M\tcsrc/damsm_cpu.cpp\n", "csrc/damsm_cpu.cpp"),
        ("2\t1\tcsrc/bindings.cpp\n", "M\tcsrc/bindings.cpp\n", "csrc/bindings.cpp"),
        ("0\t40\tcsrc/simd.h\n", "D\tcsrc/simd.h\n", "csrc/simd.h"),
        ("", "", ""),
    ]
    for numstat, names, refused in cases:
        monkeypatch.setattr(subprocess, "run", fake(numstat, names))
        why = train_bench._extension_superset(str(ROOT), "0aa2913")
        assert (refused in why and why) if refused else why == ""
