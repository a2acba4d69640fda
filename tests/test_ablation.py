"""bench/ablation.py's pure parts: the rows, the summary of an evaluation report, the table."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import ablation  # noqa: E402


def test_rows_known_and_custom():
    rows = ablation.parse_rows("baseline,hinge", ["mine=gan.projection=true;gan.lambda=3"])
    assert rows == {"mine": ["gan.projection=true", "gan.lambda=3"], "baseline": ["gan.projection=false"],
                    "hinge": ["gan.loss=hinge"]}
    with pytest.raises(SystemExit, match="unknown row 'nope'"):
        ablation.parse_rows("nope", [])
    with pytest.raises(SystemExit, match="NAME=override"):
        ablation.parse_rows("", ["no-equals"])


def test_every_named_row_is_a_valid_config():
    from attnfast.config import load_config
    from attnfast.trainer.gan_options import GANOptions
    for overrides in ablation.ROWS.values():
        GANOptions.from_config(load_config(Path(__file__).resolve().parent.parent / "training/configs/shapes_demo.yaml", overrides))


def test_summary_and_table():
    report = {"attribute_accuracy": {"colour": 1.0, "size": 0.9, "shape": 0.5, "object": 0.45},
              "pointing_game": {"pointing_accuracy": 0.7}, "r_precision": {"mean": 0.6},
              "diversity": {"ratio": 1.25},
              "grounding": {"generator": {"stage_16": {"colour": {"pointing_accuracy": 0.1}},
                                          "stage_32": {"colour": {"pointing_accuracy": 0.9},
                                                       "shape": {"pointing_accuracy": 0.8}}}}}
    summary = ablation.summary_of(report)
    assert summary == {"colour": 1.0, "size": 0.9, "shape": 0.5, "object": 0.45, "pointing_game": 0.7,
                       "r_precision": 0.6, "diversity": 1.25, "g_pointing_colour": 0.9, "g_pointing_shape": 0.8}
    assert ablation.summary_of({"attribute_accuracy": {}})["g_pointing_shape"] is None
    rows = [{"row": "a", "seed": 0, "overrides": [], "steps": 10, **summary},
            {"row": "a", "seed": 1, "overrides": [], "steps": 12, **dict(summary, shape=0.3)}]
    table = ablation.markdown_table(rows).splitlines()
    assert table[2] == ("| a | (demo recipe) | 0,1 | 10/12 | 100.0 | 90.0 | 40.0 | 45.0 | 70.0 | 60.0 | 1.25 "
                        "| 90.0 | 80.0 |")
