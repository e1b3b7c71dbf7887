"""The docstring examples of nestopt.games and nestopt.optim run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "nestopt.games",
    "nestopt.games.game",
    "nestopt.games.state",
    "nestopt.games.schemes",
    "nestopt.games.rules",
    "nestopt.games.dynamics",
    "nestopt.games.dynamics.operators",
    "nestopt.games.dynamics.rates",
    "nestopt.games.zoo",
    "nestopt.games.zoo.classic",
    "nestopt.games.zoo.ipd",
    "nestopt.games.zoo.gan",
    "nestopt.optim",
    "nestopt.optim.complex_momentum",
    "nestopt.optim.heavy_ball",
    "nestopt.optim.optimistic",
    "nestopt.optim.extragradient",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
