import json
import subprocess
import sys

import pytest

from nestopt import cli, experiments
from nestopt.experiments import Claim, Outcome
from nestopt.experiments.registry import _REGISTRY


def test_list_shows_every_experiment(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in experiments.names():
        assert name in out


def test_run_writes_results_and_exit_code(tmp_path, capsys):
    assert cli.main(["run", "hypergrad-accuracy", "--quick", "--seed", "1", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["seed"] == 1 and saved["config"]["quick"] is True
    assert "hypergrad-accuracy" in capsys.readouterr().out


def test_failed_claim_gives_exit_code_one(tmp_path, capsys):
    @experiments.experiment("test-failing", paper="-", summary="fails on purpose", full={"x": 1}, quick={"x": 1})
    def failing(cfg, ctx):
        return Outcome({"x": cfg["x"]}, [Claim.at_most("x", cfg["x"], 0)])

    try:
        assert cli.main(["run", "test-failing", "--out", str(tmp_path)]) == 1
        assert "1 claim(s) failed" in capsys.readouterr().err
        assert cli.main(["run", "test-failing", "--set", "x=0", "--out", str(tmp_path)]) == 0
        assert cli.main(["run", "test-failing", "--set", "y=0", "--out", str(tmp_path)]) == 2
        assert "has no setting 'y'" in capsys.readouterr().err
    finally:
        _REGISTRY.pop("test-failing")


def test_unknown_experiment_is_a_clear_error(capsys):
    assert cli.main(["run", "no-such-thing"]) == 2
    assert "no experiment named 'no-such-thing'" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "nestopt.cli", "list"], capture_output=True, text=True, check=True)
    assert "hypergrad-accuracy" in out.stdout


def test_experiment_configs_are_consistent():
    for name in experiments.names():
        exp = experiments.get(name)
        assert set(exp.full) == set(exp.quick), name
        assert exp.paper and exp.summary


def test_json_is_strict():
    with pytest.raises(ValueError):
        json.dumps(float("nan"), allow_nan=False)
    assert experiments.to_json({"a": float("nan"), "b": [1.0, float("inf")]}) == {"a": "nan", "b": [1.0, "inf"]}


def test_run_prints_the_experiments_notes(tmp_path, capsys):
    @experiments.experiment("test-notes", paper="-", summary="has notes", full={}, quick={})
    def noted(cfg, ctx):
        return Outcome({}, [Claim.holds("ok", True)], notes="| run | value |\n|---|---|\n| a | 1 |")

    try:
        assert cli.main(["run", "test-notes", "--out", str(tmp_path)]) == 0
        assert "| a | 1 |" in capsys.readouterr().out
    finally:
        _REGISTRY.pop("test-notes")
