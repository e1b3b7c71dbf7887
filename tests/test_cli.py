"""The ``nestopt`` command: exit status 0 (claims held), 1 (a claim failed), 2 (usage error, one line naming
the argument), 3 (internal error); ``list``, ``show``, ``run``, ``--version`` and ``python -m nestopt``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nestopt
from nestopt import cli, experiments
from nestopt.experiments import Claim, Experiment, KnownFailure
from nestopt.experiments.registry import _REGISTRY

SRC = str(Path(nestopt.__file__).parents[1])


def _toy(name: str, **kw: Any) -> Experiment:
    args: dict[str, Any] = {
        "paper": "a toy paper",
        "summary": "x is at most 1",
        "full": {"x": 0.5, "n": 3, "sizes": [1, 2]},
        "quick": {"x": 0.25, "n": 2, "sizes": [1]},
        "compute": lambda cfg, ctx: {"x": cfg["x"]},
        "claims": lambda m, cfg: [Claim.at_most("x at most 1", m["x"], 1.0)],
    }
    return Experiment(name, **{**args, **kw})


@pytest.fixture
def toys() -> Iterator[None]:
    """Registers toy experiments for a test and removes them afterwards."""

    def broken(cfg: dict, ctx: Any) -> dict:
        raise RuntimeError("a bug")

    added = [
        experiments.register(_toy("test-toy")),
        experiments.register(_toy("test-known", known_failures=(KnownFailure("x at most", "docs/toy.md"),))),
        experiments.register(_toy("test-broken", compute=broken)),
    ]
    yield
    for exp in added:
        _REGISTRY.pop(exp.name)


def _usage_error(capsys: Any, argv: list[str]) -> str:
    """Run ``argv``, require exit status 2 with nothing on stdout and one line on stderr; return that line."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    assert code == 2, (argv, captured)
    assert captured.out == ""  # nothing was run or announced
    line = captured.err.strip()
    assert line.startswith("nestopt: error: ") and "\n" not in line, line
    return line


def test_list_shows_every_experiment(capsys: Any) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in experiments.names())


def test_run_writes_results_and_exits_0(toys: None, tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["run", "test-toy", "--quick", "--seed", "7", "--out", str(tmp_path), "--set", "x=1"]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"] == {"x": 1.0, "n": 2, "sizes": [1], "seed": 7, "quick": True}
    assert "== test-toy (quick, seed 7)" in capsys.readouterr().out


def test_failed_claim_exits_1(toys: None, tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["run", "test-toy", "--set", "x=2", "--out", str(tmp_path)]) == 1
    assert "1 claim(s) failed: test-toy: x at most 1" in capsys.readouterr().err


def test_known_finding_is_reported_and_not_counted(toys: None, tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["run", "test-known", "--set", "x=2", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "no (known finding: docs/toy.md)" in captured.out
    assert "1 known finding(s)" in captured.err


def test_run_all_writes_a_summary(toys: None, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(experiments, "names", lambda: ["test-toy", "test-known"])
    assert cli.main(["run", "all", "--quick", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"test-toy", "test-known", "summary.md", "summary.json"}
    assert [r["experiment"] for r in json.loads((tmp_path / "summary.json").read_text())] == ["test-toy", "test-known"]


def test_internal_error_exits_3_with_its_traceback(toys: None, tmp_path: Path, capsys: Any) -> None:
    assert cli.main(["run", "test-broken", "--out", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "RuntimeError: a bug" in err and "internal error" in err


def test_unknown_experiment_suggests_a_name_before_anything_else(capsys: Any) -> None:
    line = _usage_error(capsys, ["run", "hypergrad-acuracy"])
    assert "argument NAME: no experiment named 'hypergrad-acuracy'; did you mean 'hypergrad-accuracy'?" in line
    assert "did you mean 'ipd'?" in _usage_error(capsys, ["show", "ipf"])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("n=abc", "argument --set: n must be an int like its default 3, got 'abc'"),
        ("n=2.5", "argument --set: n must be an int like its default 3, got '2.5'"),
        ("x=abc", "argument --set: x must be a float like its default 0.5, got 'abc'"),
        ("sizes=[1.5]", "argument --set: sizes must be a list[int] like its default [1, 2], got '[1.5]'"),
        ("nn=3", "argument --set: experiment 'test-toy' has no setting 'nn'; did you mean 'n'?"),
        ("n", "argument --set: expects KEY=VALUE, got 'n'"),
    ],
)
def test_ill_typed_or_unknown_setting_exits_2(toys: None, capsys: Any, setting: str, message: str) -> None:
    assert message in _usage_error(capsys, ["run", "test-toy", "--set", setting])


def test_set_cannot_apply_to_run_all(capsys: Any) -> None:
    assert "argument --set: applies to one experiment" in _usage_error(capsys, ["run", "all", "--set", "x=1"])


@pytest.mark.parametrize("seed", ["99999999999999999999", "-1", "abc", "1.5"])
def test_seed_outside_torchs_range_exits_2(toys: None, capsys: Any, seed: str) -> None:
    assert "argument --seed: the seed must be an integer" in _usage_error(capsys, ["run", "test-toy", "--seed", seed])


def test_out_that_is_a_file_or_not_writable_exits_2(toys: None, tmp_path: Path, capsys: Any) -> None:
    file = tmp_path / "file"
    file.write_text("")
    line = _usage_error(capsys, ["run", "test-toy", "--out", str(file)])
    assert f"argument --out: '{file}' is an existing file" in line
    line = _usage_error(capsys, ["run", "test-toy", "--out", str(file / "below")])
    assert "argument --out:" in line and "is not a writable folder" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_exits_2(toys: None, tmp_path: Path, capsys: Any) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "is not a writable folder" in _usage_error(capsys, ["run", "test-toy", "--out", str(locked)])
    finally:
        locked.chmod(0o700)


def test_show_prints_claim_paper_and_settings(toys: None, capsys: Any) -> None:
    assert cli.main(["show", "test-known"]) == 0
    out = capsys.readouterr().out
    assert "claim:   x is at most 1" in out and "paper:   a toy paper" in out
    assert "known finding: claims named 'x at most'" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ") and ":" not in line}
    assert lines["setting"] == ["setting", "type", "full", "(default)", "quick"]
    assert lines["x"] == ["x", "float", "0.5", "0.25"]
    assert lines["sizes"] == ["sizes", "list[int]", "[1,", "2]", "[1]"]


def test_show_prints_full_defaults_of_a_real_experiment(capsys: Any) -> None:
    assert cli.main(["show", "hypergrad-accuracy"]) == 0
    out = capsys.readouterr().out
    assert "unroll_steps  list[int]  [10, 30, 100, 300, 1000]  [10, 30, 100, 300]" in out


def test_version(capsys: Any) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"nestopt {nestopt.__version__}"


def _python_m_nestopt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "nestopt", *args], capture_output=True, text=True, env=env)


def test_python_m_nestopt_version() -> None:
    done = _python_m_nestopt("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"nestopt {nestopt.__version__}"


def test_python_m_nestopt_exit_code_of_a_usage_error() -> None:
    done = _python_m_nestopt("run", "hypergrad-acuracy")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().endswith(f"(`nestopt list` shows all {len(experiments.names())})")
    assert "did you mean 'hypergrad-accuracy'" in done.stderr
