"""Randomness that depends only on a seed: derived seeds and forked global generators.

Dropout and other random layers draw from torch's global generator, which cannot be handed to them. To make
a computation's randomness a function of *what* it is (outer step 7, inner step 3, ...) rather than of how
many random numbers happened to be drawn before it (by evaluation, logging, a progress bar), nestopt runs each
random computation inside :func:`fork`: the global generators are seeded with a seed derived by
:func:`derive` and restored afterwards. Replaying the same block (a recomputed checkpointed step, a resumed
run) then draws the same numbers.

Example:
    >>> import torch
    >>> from nestopt import _rng
    >>> with _rng.fork(_rng.derive(0, "inner", 3)):
    ...     a = torch.rand(2)
    >>> with _rng.fork(_rng.derive(0, "inner", 3)):
    ...     b = torch.rand(2)
    >>> torch.equal(a, b)
    True
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch

from nestopt.errors import InvalidArgumentError

__all__ = ["derive", "fork", "fresh_seed", "generator"]

_MASK = (1 << 63) - 1


def derive(seed: int, *keys: int | str) -> int:
    """A seed in ``[0, 2**63)`` determined by ``seed`` and ``keys`` (a stable hash, the same on every machine)."""
    text = ":".join(str(k) for k in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & _MASK


def generator(seed: int | torch.Generator) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or ``seed`` itself when it is a generator."""
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError(f"seed must be an int or a torch.Generator, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def fresh_seed() -> int:
    """A seed drawn from torch's global CPU generator (so that ``torch.manual_seed`` still decides it)."""
    return int(torch.randint(0, 2**62, (1,)).item())


def _devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []


@contextlib.contextmanager
def fork(seed: int) -> Iterator[None]:
    """Run the block with torch's global generators (CPU and initialized CUDA devices) seeded with ``seed``;
    their previous states are restored afterwards, so the block neither sees nor disturbs the outer stream."""
    devices = _devices()
    with torch.random.fork_rng(devices=devices):
        # not torch.manual_seed: it would also seed CUDA devices that the fork does not restore (lazily, at the
        # cost of capturing a traceback on every call)
        torch.default_generator.manual_seed(seed)
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(seed)
        yield
