"""The ground truth: deterministic per architecture (whatever else is scored, in any order), cached on disk
under its configuration, and a real training run (it learns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nestopt import data, nas
from nestopt.errors import InvalidArgumentError
from nestopt.nas import ground_truth

SPACE = nas.CellSpace(nodes=3, ops=("tanh", "relu", "identity"))
BUDGET = nas.TrainBudget(steps=60, batch_size=32, lr=1e-2, width=8)


def _splits() -> data.Splits:
    return data.synthetic_classification(n_train=128, n_val=64, n_test=64, dim=6, seed=0)


def test_scores_are_deterministic_and_order_free() -> None:
    archs = SPACE.sample(3, torch.Generator().manual_seed(0))
    a = nas.GroundTruth(SPACE, _splits(), BUDGET, seed=4)
    b = nas.GroundTruth(SPACE, _splits(), BUDGET, seed=4)
    first = [s.test_accuracy for s in a.scores(archs)]
    second = [s.test_accuracy for s in b.scores(archs[::-1])][::-1]
    assert first == second
    assert [s.seed for s in a.scores(archs)] == [a.seed_of(x) for x in archs]
    assert a.cache_hits == 3  # the second call read the memo


def test_training_learns() -> None:
    splits = _splits()
    arch = SPACE.parse("relu, 0>relu, 1>tanh")
    net, loss = nas.train_from_scratch(SPACE, arch, splits, BUDGET, seed=0)
    chance = 1.0 / splits.num_classes
    assert nas.accuracy(net, splits.test) > chance + 0.2
    assert loss < 0.8


def test_cache_is_read_back_only_under_the_same_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "truth.json"
    archs = SPACE.sample(2, torch.Generator().manual_seed(1))
    scores = nas.GroundTruth(SPACE, _splits(), BUDGET, seed=0, cache=path).scores(archs)
    stored = json.loads(path.read_text())
    assert stored["config"]["budget"]["steps"] == 60 and len(stored["scores"]) == 2

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(ground_truth, "train_from_scratch", no_training)
    again = nas.GroundTruth(SPACE, _splits(), BUDGET, seed=0, cache=path)
    assert len(again) == 2 and again.scores(archs) == scores
    other = nas.GroundTruth(SPACE, _splits(), nas.TrainBudget(steps=61, batch_size=32, lr=1e-2, width=8), cache=path)
    assert len(other) == 0  # another budget: the stored table is not this one's
    with pytest.raises(AssertionError, match="the cache should have been used"):
        other.score(archs[0])


def test_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="steps must be a positive integer, got 0"):
        nas.TrainBudget(steps=0)
    regression = data.synthetic_regression(n_train=8, n_val=4, n_test=4, dim=3, seed=0)
    with pytest.raises(InvalidArgumentError, match="needs a classification data set"):
        nas.GroundTruth(SPACE, regression)
