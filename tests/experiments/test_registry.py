"""Every registered experiment, driven by the registry: its quick run (and, marked slow, its full run) passes
every claim except its documented findings, and writes what it declares.

A new experiment needs no new test here; checks beyond these live in test_findings.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nestopt import experiments
from nestopt.errors import InvalidArgumentError
from nestopt.experiments import Claim, Experiment, KnownFailure
from nestopt.experiments.registry import pyplot

NAMES = experiments.names()
RESULT_KEYS = {
    "experiment", "paper", "summary", "config", "metrics", "claims", "notes", "figures", "known_failures",
    "seconds", "versions",
}  # fmt: skip
CLAIM_KEYS = {"name", "passed", "value", "threshold", "detail", "known_failure"}


def _check(exp: Experiment, result: dict[str, Any], out: Path) -> None:
    saved = json.loads((out / "results.json").read_text())
    assert set(saved) == RESULT_KEYS
    assert saved["experiment"] == exp.name and saved["claims"] == result["claims"]
    assert all(set(c) == CLAIM_KEYS for c in saved["claims"]) and saved["claims"]
    assert not any(k.startswith("_") for k in saved["metrics"])  # plot-only data stays out of the file
    assert (out / "report.md").read_text().startswith(f"# {exp.name}\n")
    if pyplot() is not None:
        assert saved["figures"] == [f"{name}.png" for name in exp.figures]
        assert all((out / f).stat().st_size > 10_000 for f in saved["figures"])
    failed = [c for c in saved["claims"] if not c["passed"]]
    unexpected = [c["detail"] or c["name"] for c in failed if not c["known_failure"]]
    assert not unexpected, unexpected
    if failed:
        pytest.xfail(f"known finding: {[(c['name'], c['value']) for c in failed]}")


@pytest.mark.parametrize("name", NAMES)
def test_quick_run(name: str, quick_run: Any) -> None:
    result, out = quick_run(name)
    assert result["config"]["quick"] is True
    _check(experiments.get(name), result, out)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_full_run(name: str, tmp_path: Path) -> None:
    _check(experiments.get(name), experiments.run(name, out_dir=tmp_path), tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_registration_is_complete(name: str) -> None:
    exp = experiments.get(name)
    assert exp.paper and exp.summary and exp.figures
    assert set(exp.full) == set(exp.quick)
    assert exp.full != exp.quick  # the quick run is smaller
    assert [k for k, *_ in exp.settings()] == sorted(exp.full)


def _toy(**kw: Any) -> Experiment:
    args: dict[str, Any] = {
        "paper": "-",
        "summary": "x is at most 1",
        "full": {"x": 1.0, "n": 3, "on": True, "names": ["a"], "steps": [1, 2]},
        "quick": {"x": 0.5, "n": 2, "on": False, "names": [], "steps": [1]},
        "compute": lambda cfg, ctx: {"x": cfg["x"], "_plot_only": [1, 2]},
        "claims": lambda m, cfg: [Claim.at_most("x: at most 1", m["x"], 1.0), Claim.holds("always", True)],
    }
    return Experiment("toy", **{**args, **kw})


def test_run_calls_compute_claims_plots_and_notes_in_order(tmp_path: Path) -> None:
    calls: list[str] = []

    def compute(cfg: dict, ctx: Any) -> dict:
        calls.append("compute")
        assert ctx.quick and ctx.seed == 5
        return {"x": cfg["x"], "_curve": [3.0, 2.0]}

    def claims(m: dict, cfg: dict) -> list[Claim]:
        calls.append("claims")
        return [Claim.at_most("x: at most 1", m["x"], 1.0)]

    def plots(plt: Any, m: dict, cfg: dict) -> dict:
        calls.append("plots")
        fig, ax = plt.subplots()
        ax.plot(m["_curve"])
        return {"curve": fig}

    def notes(m: dict, cfg: dict) -> str:
        calls.append("notes")
        return f"x was {m['x']}"

    pytest.importorskip("matplotlib")
    exp = _toy(compute=compute, claims=claims, plots=plots, notes=notes, figures=("curve",))
    result = experiments.run(exp, quick=True, seed=5, out_dir=tmp_path)
    assert calls == ["compute", "claims", "plots", "notes"]
    assert result["metrics"] == {"x": 0.5} and result["figures"] == ["curve.png"]
    assert (tmp_path / "curve.png").exists()
    report = (tmp_path / "report.md").read_text()
    assert "x was 0.5" in report and "![curve.png](curve.png)" in report


def test_known_failures_are_reported_by_mode(tmp_path: Path) -> None:
    exp = _toy(known_failures=(KnownFailure("x: at most", "docs/toy.md", quick=False),))
    over = {"x": 2.0}
    full = experiments.run(exp, out_dir=tmp_path, overrides=over)["claims"]
    quick = experiments.run(exp, quick=True, out_dir=tmp_path, overrides=over)["claims"]
    assert [c["known_failure"] for c in full] == ["docs/toy.md", None]  # a passed claim is never one
    assert [c["known_failure"] for c in quick] == [None, None]  # a quick failure here is a bug
    assert "no (known finding: docs/toy.md)" in experiments.registry.claims_table([(None, full[0])])
    assert "**NO**" in experiments.registry.claims_table([(None, quick[0])])


def test_overrides_are_checked_against_the_defaults() -> None:
    exp = _toy()
    cfg = exp.config(True, {"x": 3, "steps": [4, 5], "names": ["b", "c"]})
    assert cfg["x"] == 3.0 and isinstance(cfg["x"], float)  # an int is a float setting's value too
    assert cfg["steps"] == [4, 5] and cfg["n"] == 2
    for key, value in [("n", 2.5), ("n", True), ("on", 1), ("x", "abc"), ("x", float("nan")), ("steps", [1.5])]:
        with pytest.raises(InvalidArgumentError, match=f"setting '{key}' must be"):
            exp.config(False, {key: value})
    with pytest.raises(InvalidArgumentError, match=r"no setting 'stepz'; did you mean 'steps'\?"):
        exp.config(False, {"stepz": [1]})


def test_registration_errors_name_the_problem() -> None:
    with pytest.raises(InvalidArgumentError, match="same keys"):
        _toy(quick={"x": 1.0})
    with pytest.raises(InvalidArgumentError, match="quick setting 'n' must be an int"):
        _toy(quick={"x": 0.5, "n": 2.5, "on": False, "names": [], "steps": [1]})
    with pytest.raises(InvalidArgumentError, match="figures="):
        _toy(figures=("curve",))


def test_unknown_experiment_suggests_the_closest_name() -> None:
    with pytest.raises(InvalidArgumentError, match=r"no experiment named 'hypergrad-acuracy'; did you mean"):
        experiments.get("hypergrad-acuracy")
    with pytest.raises(InvalidArgumentError, match=r"no experiment named 'zzz' \(`nestopt list`"):
        experiments.get("zzz")


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_seeds_outside_the_range_are_refused(seed: Any, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="seed must be an integer in"):
        experiments.run(_toy(), seed=seed, out_dir=tmp_path)


def test_largest_seed_runs_a_real_experiment(tmp_path: Path) -> None:
    """Experiments derive seeds by adding offsets: at the top of the range they must stay valid."""
    result = experiments.run("hypergrad-accuracy", quick=True, seed=2**63 - 1, out_dir=tmp_path)
    assert result["config"]["seed"] == 2**63 - 1 and all(c["passed"] for c in result["claims"])


def test_out_dir_that_is_a_file_or_cannot_be_created(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(InvalidArgumentError, match="is an existing file"):
        experiments.run(_toy(), out_dir=file)
    with pytest.raises(InvalidArgumentError, match="is not a writable folder"):
        experiments.run(_toy(), out_dir=file / "below")
