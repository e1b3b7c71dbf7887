"""Each experiment's quick run happens once per test session; every test that reads its results shares it.

Under pytest-xdist (``make test`` runs two processes with ``--dist loadgroup``) the session cache is per
process, so every test that reads an experiment's quick run is put in that experiment's group: they all run
in one process, and the quick run happens once.
"""

from __future__ import annotations

import inspect
import re
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


_QUICK_RUN_CALL = re.compile(r"quick_run\(\s*\"([\w-]+)\"")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or "quick_run" not in item.fixturenames:
            continue
        params = getattr(item, "callspec", None)
        name = params.params.get("name") if params is not None else None
        if name is None:
            found = _QUICK_RUN_CALL.findall(inspect.getsource(item.function))
            name = found[0] if found else None
        if isinstance(name, str):
            item.add_marker(pytest.mark.xdist_group(f"quick-run-{name}"))
