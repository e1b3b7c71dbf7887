"""A failing rank must not hold the others forever: report failures, and name the rank that failed.

A collective waits for every rank. When one rank raises, the others are left waiting in their next
collective until the connection to it closes or the process group's timeout passes, and the error they then
get (``Connection closed by peer [10.0.0.7]:29500``, ``Timed out waiting 300000ms``) names neither the rank
nor what it raised. So a rank that fails writes a one-line report into the process group's key-value store
before it dies (:func:`report`: :func:`guard`, the trainer and :func:`~nestopt.distributed.init`'s exception
hook do it), and a rank whose collective fails reads the reports (:func:`diagnose`) and raises a
:class:`~nestopt.errors.RankFailedError` naming the rank and its exception. When no rank reported (one was
killed, or hangs), the ranks that did arrive mark themselves in the store, and the error names the ranks
that did not.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch.distributed as dist

from nestopt.errors import RankFailedError

__all__ = ["diagnose", "guard", "raise_if_peer_failed", "report"]

_FAILED = "nestopt/failed/"
_ARRIVED = "nestopt/arrived/"
_GRACE = 2.0  # seconds the ranks that arrived wait for each other's marks after a timeout
_COMM_MARKERS = ("gloo", "nccl", "c10d", "connection closed by peer")  # what the backends' errors say


def _group() -> tuple[Any, int, int] | None:
    """``(store, rank, world_size)`` of the default process group, or ``None`` (no group, or one rank)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    try:
        store = dist.distributed_c10d._get_default_store()
    except (AttributeError, RuntimeError, ValueError):
        return None
    return store, dist.get_rank(), dist.get_world_size()


def _summary(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:500]


def report(error: BaseException) -> None:
    """Record in the store that this rank failed with ``error`` (nothing in a single-process run)."""
    group = _group()
    if group is None or isinstance(error, RankFailedError):  # a consequence of another rank's failure
        return
    store, rank, _ = group
    with contextlib.suppress(Exception):  # the store may be gone with the rank that hosts it
        store.set(f"{_FAILED}{rank}", _summary(error))


def _marked(store: Any, prefix: str, ranks: range, skip: int) -> dict[int, str]:
    found: dict[int, str] = {}
    for r in ranks:
        key = f"{prefix}{r}"
        if r != skip and store.check([key]):
            found[r] = store.get(key).decode(errors="replace")
    return found


def _failures(store: Any, rank: int, world_size: int) -> dict[int, str]:
    return _marked(store, _FAILED, range(world_size), rank)


def _looks_like_communication(error: BaseException) -> bool:
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error).lower() for m in _COMM_MARKERS)


def diagnose(error: BaseException, what: str) -> RankFailedError | None:
    """The :class:`RankFailedError` that explains ``error`` (raised on this rank while in ``what``), or
    ``None`` when no other rank failed and ``error`` is not a failed collective (this rank's own error)."""
    group = _group()
    if group is None or isinstance(error, RankFailedError):
        return None
    store, rank, world_size = group
    try:
        failures = _failures(store, rank, world_size)
        if not failures and _looks_like_communication(error):
            store.set(f"{_ARRIVED}{rank}", what)
            deadline = time.monotonic() + _GRACE
            while not failures and time.monotonic() < deadline:
                time.sleep(0.05)
                failures = _failures(store, rank, world_size)
            if not failures:
                arrived = {rank, *_marked(store, _ARRIVED, range(world_size), rank)}
                missing = [r for r in range(world_size) if r not in arrived]
                if not missing:
                    return RankFailedError(
                        f"every rank reached a collective but they did not complete (the ranks ran different "
                        f"sequences of collectives, or the network failed); rank {rank} was in {what} and got "
                        f"{_summary(error)}"
                    )
                return RankFailedError(
                    f"rank(s) {missing} did not reach {what} with rank {rank} (they crashed without a report, hang, "
                    f"or ran a different sequence of collectives); rank {rank} got {_summary(error)}"
                )
    except Exception:  # the store itself is gone
        if not _looks_like_communication(error):
            return None
        return RankFailedError(
            f"rank {rank} stopped in {what} ({_summary(error)}) and cannot reach the process group's store: the "
            "process that hosts it (rank 0, or the torchrun agent) has probably failed; see its output"
        )
    if not failures:
        return None
    causes = "; ".join(f"rank {r} failed with {text}" for r, text in sorted(failures.items()))
    return RankFailedError(f"{causes} (rank {rank} stopped in {what}: {_summary(error)})")


def raise_if_peer_failed(error: BaseException, what: str) -> None:
    """Raise the :class:`RankFailedError` that explains ``error``, if another rank's failure does; otherwise
    report ``error`` as this rank's failure and return (the caller re-raises it)."""
    explained = diagnose(error, what)
    if explained is not None:
        raise explained from error
    report(error)


@contextlib.contextmanager
def guard(what: str = "the run") -> Iterator[None]:
    """Run the block so that a failure on any rank ends every rank with an error that names it.

    An exception raised in the block is reported to the other ranks (their next collective then fails with
    a :class:`~nestopt.errors.RankFailedError` naming this rank) and re-raised; an exception that another
    rank's failure caused (a collective that lost its peer) becomes a :class:`RankFailedError` naming that
    rank. :meth:`nestopt.BilevelTrainer.fit` with a :class:`~nestopt.distributed.DataParallel` does this by
    itself. In a single process it does nothing.

    Example:
        >>> from nestopt import distributed
        >>> with distributed.guard("my evaluation"):
        ...     total = sum(range(4))
        >>> total
        6
    """
    try:
        yield
    except BaseException as err:
        raise_if_peer_failed(err, what)
        raise
