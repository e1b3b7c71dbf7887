"""Progress bars: tqdm underneath, quiet off a terminal unless NESTOPT_PROGRESS=1, silenced by NESTOPT_PROGRESS=0."""

from __future__ import annotations

from typing import Any

import pytest
from tqdm.std import tqdm

from nestopt._progress import progress, progress_enabled


def _run(capsys: Any, **kw: Any) -> tuple[list[int], str]:
    bar = progress(iter(range(5)), total=5, desc="steps", **kw)
    items = []
    for i in bar:
        items.append(i)
        bar.set_postfix(f"loss {10 - i}")
    return items, capsys.readouterr().err


def test_it_is_a_tqdm_bar() -> None:
    assert isinstance(progress(range(3), enabled=False)._bar, tqdm)


def test_an_enabled_bar_draws_count_label_and_postfix(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("NESTOPT_PROGRESS", raising=False)
    items, err = _run(capsys, enabled=True)
    assert items == [0, 1, 2, 3, 4]
    assert "steps" in err and "5/5" in err and "loss 6" in err


def test_quiet_when_stderr_is_not_a_terminal(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("NESTOPT_PROGRESS", raising=False)
    assert not progress_enabled()  # capsys: stderr is not a terminal
    items, err = _run(capsys)
    assert items == [0, 1, 2, 3, 4] and err == ""


def test_nestopt_progress_1_draws_off_a_terminal(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("NESTOPT_PROGRESS", "1")
    assert "5/5" in _run(capsys)[1]
    assert _run(capsys, enabled=False)[1] == ""  # an explicit False still wins


@pytest.mark.parametrize("flag", ["0", "false", "off"])
def test_nestopt_progress_0_silences_every_bar(capsys: Any, monkeypatch: Any, flag: str) -> None:
    monkeypatch.setenv("NESTOPT_PROGRESS", flag)
    items, err = _run(capsys, enabled=True)
    assert items == [0, 1, 2, 3, 4] and err == ""


def test_total_comes_from_len(capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("NESTOPT_PROGRESS", raising=False)
    list(progress([1, 2, 3], desc="x", enabled=True))
    assert "3/3" in capsys.readouterr().err
