"""Shared test fixtures. Derivative tests run in float64.

Every test runs single-threaded: the tensors here are small and gain nothing from intra-op threads, and on
a shared, oversubscribed machine OpenMP's spinning workers can make small kernels a hundred times slower.

``pytest --device cuda`` runs the tests with CUDA as torch's default device (tensors made without a device
land there) and hands the ``device`` fixture to the tests that place their tensors explicitly
(``tests/test_device.py``); the default is ``cpu``. ``benchmarks/gpu_check.sh`` runs the suite that way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

DEVICE = pytest.StashKey[torch.device]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="torch device of the tests' tensors: cpu (default) or cuda[:i]")


def parse_device(name: str) -> torch.device:
    """The device ``--device`` names; a usage error for a name that is not a device or one this machine lacks."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise pytest.UsageError(f"--device {name!r} is not a torch device: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device {name}: only cpu and cuda are supported")
    return device


def pytest_configure(config: pytest.Config) -> None:
    config.stash[DEVICE] = parse_device(config.getoption("--device", default="cpu"))


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device the tests run on (``--device``, default ``cpu``)."""
    return pytestconfig.stash[DEVICE]


@pytest.fixture(autouse=True)
def _seed_threads_and_device(device: torch.device) -> Iterator[None]:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if device.type != "cpu":
        torch.set_default_device(device)
    yield
    if device.type != "cpu":
        torch.set_default_device("cpu")
    torch.set_num_threads(threads)


@pytest.fixture
def f64():
    """Run the test with float64 as the default dtype and restore the previous default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(old)
