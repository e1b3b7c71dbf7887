"""stn-vs-blackbox without Optuna: TPE is skipped, its claim is not made and the notes say how to install it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nestopt import experiments
from nestopt.experiments import stn_vs_blackbox

TINY = {"budget_seconds": 0.3, "steps": 50, "warmup": 5, "hidden": 8, "n_train": 200, "n_val": 200, "n_test": 10,
        "eval_every": 5, "trial_steps": 20, "trial_eval_every": 10}  # fmt: skip


def test_without_optuna_tpe_is_skipped(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` raise ImportError
    assert stn_vs_blackbox._import_optuna() is None
    result = experiments.run("stn-vs-blackbox", quick=True, out_dir=tmp_path, overrides=TINY, show_progress=False)
    m = result["metrics"]
    assert m["best_val_loss"]["tpe"] is None and m["trials"] == {"tpe": 0, "random": m["trials"]["random"]}
    assert m["trials"]["random"] >= 1
    assert [c["name"] for c in result["claims"]] == ["STN best validation loss minus random search's (same CPU budget)"]
    assert "pip install 'nestopt[bench]'" in result["notes"]
    assert "pip install 'nestopt[bench]'" in (tmp_path / "report.md").read_text()
