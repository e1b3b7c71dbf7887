"""Checkpoint files: written atomically, read without unpickling anything but tensors and plain values.

A checkpoint is a dict of tensors, numbers, strings, lists, tuples and dicts (``torch.save``). It is read
with ``torch.load(weights_only=True)``, so a file that carries any other object (a crafted pickle that would
run code when loaded, a whole pickled model) is refused with :class:`~nestopt.errors.CheckpointError` and
nothing in it is executed. Checkpoints are shared between people as often as models are.

Example:
    >>> import tempfile, pathlib, torch
    >>> from nestopt.bilevel import checkpoint
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "run.pt"
    >>> checkpoint.save(path, {"kind": "demo", "step": 3, "w": torch.ones(2)})
    >>> checkpoint.load(path, kind="demo")["step"]
    3
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from nestopt.errors import CheckpointError

__all__ = ["FORMAT", "load", "save"]

FORMAT = 2
"""The version of the checkpoint layout written by this release."""


def save(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a crash while writing leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**state, "format": FORMAT}, tmp)
    os.replace(tmp, path)


def load(path: str | os.PathLike[str], *, kind: str) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` whose ``"kind"`` entry is ``kind``.

    Raises:
        CheckpointError: the file is missing or unreadable, carries objects other than tensors and plain
            values (it is not unpickled), or is not a checkpoint of this ``kind`` and format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {str(path)!r} contains objects other than tensors and plain values, so it was not "
            f"loaded (nothing in it was run): {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {err}") from err
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{str(path)!r} is not a {kind} checkpoint (found {found!r})")
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format {state.get('format')!r}; this release reads format {FORMAT}"
        )
    return state
