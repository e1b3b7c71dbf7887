"""Each experiment's quick run happens once per test session; every test that reads its results shares it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nestopt import experiments

QuickRun = Callable[[str], tuple[dict[str, Any], Path]]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """``quick_run(name) -> (results, output folder)`` of ``nestopt run NAME --quick`` (seed 0), run on first use."""
    cache: dict[str, tuple[dict[str, Any], Path]] = {}

    def get(name: str) -> tuple[dict[str, Any], Path]:
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            cache[name] = (experiments.run(name, quick=True, out_dir=out), out)
        return cache[name]

    return get
