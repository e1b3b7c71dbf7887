"""The quick run of the `game-optimizers` experiment passes all its claims and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestopt import experiments


def test_game_optimizers_quick(tmp_path: Path) -> None:
    result = experiments.run("game-optimizers", quick=True, out_dir=tmp_path)
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["experiment"] == "game-optimizers"
    assert (tmp_path / "report.md").exists()
    assert all((tmp_path / f).exists() for f in saved["figures"])


@pytest.mark.slow
def test_game_optimizers_full(tmp_path: Path) -> None:
    result = experiments.run("game-optimizers", quick=False, out_dir=tmp_path)
    failed = [c["detail"] or c["name"] for c in result["claims"] if not c["passed"]]
    assert not failed, failed
