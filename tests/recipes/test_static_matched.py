"""Static-matched baselines: the static hosts have the parameter counts they claim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.errors import ConfigError
from esper.recipes.baselines import bracket_widths, load_grown_runs, static_params


def cnn_host_params(base: int, in_channels: int = 1, classes: int = 10) -> int:
    """The digits CNNHost by hand: two blocks (3x3 conv without bias + BatchNorm), widths
    base and 2*base, then a linear head."""
    w1, w2 = base, 2 * base
    conv1, bn1 = 9 * in_channels * w1, 2 * w1
    conv2, bn2 = 9 * w1 * w2, 2 * w2
    head = w2 * classes + classes
    return conv1 + bn1 + conv2 + bn2 + head


@pytest.mark.parametrize("width", [1, 2, 3, 4, 6, 8, 13, 14])
def test_static_cnn_hosts_have_the_hand_computed_parameter_count(width: int) -> None:
    assert static_params("digits-impaired", width) == cnn_host_params(width)
    assert static_params("digits", width) == cnn_host_params(width)


def test_the_issue_numbers() -> None:
    # digits-impaired at base 2, 3, 4 (issue 11): 152, 277, 438 parameters.
    assert [static_params("digits-impaired", w) for w in (2, 3, 4)] == [152, 277, 438]


def test_bracket_widths_pick_the_static_hosts_around_the_grown_size() -> None:
    assert bracket_widths("digits-impaired", 342) == (3, 4)  # 277 <= 342 <= 438
    assert bracket_widths("digits-impaired", 438) == (4, 4)  # exactly a static size
    assert bracket_widths("digits", 3930) == (13, 14)  # 3507 <= 3930 <= 4028
    with pytest.raises(ConfigError, match="below the narrowest"):
        bracket_widths("digits-impaired", 10)


def test_transformer_widths_skip_the_ones_its_heads_cannot_take() -> None:
    low, high = bracket_widths("charlm", static_params("charlm", 64) + 1)
    assert (low, high) == (64, 68)  # n_embd must divide into 4 heads: 65..67 are skipped
    with pytest.raises(ValueError):
        static_params("charlm", 65)


def _summary(run: Path, **fields: object) -> None:
    run.mkdir(parents=True)
    base = {"task": "digits-impaired", "epochs": 3, "seed": 1, "total_params": 342, "final_val_accuracy": 0.9}
    (run / "summary.json").write_text(json.dumps({**base, **fields}))


def test_load_grown_runs_reads_an_eval_folder_or_run_dirs(tmp_path: Path) -> None:
    _summary(tmp_path / "eval" / "a", seed=10000, total_params=300)
    _summary(tmp_path / "eval" / "b", seed=10001, total_params=400)
    grown = load_grown_runs([tmp_path / "eval"])
    assert (grown.task, grown.epochs, grown.seeds, grown.mean_params) == (
        "digits-impaired",
        3,
        [10000, 10001],
        350,
    )
    assert load_grown_runs([tmp_path / "eval" / "a"]).seeds == [10000]


def test_load_grown_runs_refuses_mixed_budgets_and_empty_folders(tmp_path: Path) -> None:
    _summary(tmp_path / "a", epochs=3)
    _summary(tmp_path / "b", epochs=60)
    with pytest.raises(ConfigError, match="differ in epochs"):
        load_grown_runs([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no finished run"):
        load_grown_runs([tmp_path / "empty"])
