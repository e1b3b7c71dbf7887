"""The training-loop benchmark's accounting: every system takes as many inner steps per round, whatever its
inner steps per outer step, and a bad ``--inner-steps`` is a usage error."""

from __future__ import annotations

import runpy
import sys
from typing import Any

import pytest

import amortized
from nestopt import data, hypergrad, linalg
from tests.benchmarks.conftest import BENCHMARKS


def test_lockstep_gives_every_system_the_same_inner_steps_per_round() -> None:
    cfg = {**amortized.FLAGSHIP, "hidden": [8], "n_train": 64, "n_val": 16}
    d = data.mnist1d(cfg["n_train"], cfg["n_val"], 10, seed=0)
    solver = lambda: hypergrad.Implicit(solver=linalg.CG(steps=1, tol=0.0))
    runs = [
        amortized.build(amortized.System(f"k={k}", "nestopt", solver(), k), d, cfg, seed=0)
        for k in (amortized.FLAGSHIP_INNER, 5, 2)
    ]
    amortized.lockstep(runs, d, rounds=3, round_steps=amortized.FLAGSHIP_INNER)
    for run in runs:
        outer = 3 * amortized.FLAGSHIP_INNER // run.system.inner_steps
        assert [c["outer_step"] for c in run.curve] == list(range(outer + 1)), run.name
        inner = {int(s["step"]) for s in run.inner_opt.state.values()}  # Adam counts the steps it took
        assert inner == {3 * amortized.FLAGSHIP_INNER}, run.name
        assert run.curve[-1]["seconds"] > 0 and not run.error


def test_inner_steps_that_do_not_divide_a_round_exit_2(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setattr(sys, "argv", ["amortized.py", "--quick", "--inner-steps", "10", "3"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(BENCHMARKS / "amortized.py"), run_name="__main__")
    assert exit_.value.code == 2
    assert "--inner-steps must divide 10" in capsys.readouterr().err
