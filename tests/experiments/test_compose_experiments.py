"""The quick runs of the experiments of composed nested problems pass every claim except documented findings.

Temporary: when the registry runs every registered experiment from one parametrized test, this file goes away
(with ``nestopt/experiments/_compose_format.py``).
"""

from __future__ import annotations

import importlib
import json

import pytest

from nestopt import experiments

MODULES = {
    "two-stage-accuracy": "two_stage_accuracy",
    "maml-sinusoid": "maml_sinusoid",
    "three-level": "three_level",
    "pretrain-task-weights": "pretrain_task_weights",
    "pretrain-augmentation": "pretrain_augmentation",
}


def _check(name: str, result: dict, out, quick: bool) -> None:
    exp = importlib.import_module(f"nestopt.experiments.{MODULES[name]}").EXPERIMENT
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == result["claims"] and saved["claims"]
    assert not any(k.startswith("_") for k in saved["metrics"])
    assert saved["figures"] == [f"{f}.png" for f in exp.figures]
    assert all((out / f).stat().st_size > 10_000 for f in saved["figures"])
    failed = [c for c in saved["claims"] if not c["passed"]]
    unexpected = [c["detail"] or c["name"] for c in failed if not any(k.matches(c["name"], quick) for k in exp.known_failures)]
    assert not unexpected, unexpected
    if failed:
        pytest.xfail(f"documented finding: {[(c['name'], c['value']) for c in failed]}")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_quick_run(name, tmp_path):
    _check(name, experiments.run(name, quick=True, out_dir=tmp_path), tmp_path, True)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODULES))
def test_full_run(name, tmp_path):
    _check(name, experiments.run(name, out_dir=tmp_path), tmp_path, False)
