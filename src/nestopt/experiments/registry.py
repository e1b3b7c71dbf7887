"""The experiment registry: each paper claim as a small experiment that runs and checks itself.

An experiment is a function ``fn(cfg, ctx) -> Outcome`` registered with :func:`experiment`, which gives its
name, its paper, the claim in words, and two configurations: the full one and a ``--quick`` one that the
test suite runs. :func:`run` executes it and writes ``results.json``, ``report.md`` and the figures into an
output folder.

``results.json`` holds ``{"experiment", "paper", "summary", "config", "metrics", "claims": [{"name",
"passed", "value", "threshold", "detail"}], "figures", "seconds", "versions"}``.

Example:
    >>> from nestopt.experiments import Claim, Outcome, experiment
    >>> @experiment("doc-example", paper="-", summary="1 + 1 is 2", full={"n": 1}, quick={"n": 1},
    ...             register=False)
    ... def doc_example(cfg, ctx):
    ...     value = 1 + cfg["n"]
    ...     return Outcome(metrics={"value": value}, claims=[Claim.at_most("sum", value, 2)])
    >>> doc_example.name
    'doc-example'
"""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from nestopt._progress import progress
from nestopt.errors import InvalidArgumentError

__all__ = [
    "Claim",
    "Context",
    "Experiment",
    "Outcome",
    "claims_table",
    "experiment",
    "get",
    "names",
    "run",
    "to_json",
]

T = TypeVar("T")


def to_json(obj: Any) -> Any:
    """Convert metrics (tensors, numpy values, dataclasses, paths) into strict JSON values.

    Non-finite floats become ``None`` with the reason kept as a string: ``"nan"``, ``"inf"``, ``"-inf"``.
    """
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu()
        return to_json(obj.item() if obj.numel() == 1 else obj.tolist())
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, np.generic):
        return to_json(obj.item())
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "as_dict"):
        return to_json(obj.as_dict())
    return str(obj)


@dataclass(frozen=True)
class Claim:
    """One checked claim: its name, whether it held, the measured value and the threshold.

    Prefer the constructors, which write the comparison into ``detail``:

    >>> Claim.at_most("relative error", 3e-9, 1e-8).passed
    True
    >>> Claim.at_least("accuracy gain", 0.01, 0.05).detail
    'accuracy gain = 0.01 >= 0.05 (needed)'
    """

    name: str
    passed: bool
    value: Any
    threshold: Any
    detail: str = ""

    @staticmethod
    def at_most(name: str, value: float, threshold: float) -> Claim:
        v = float(value)
        return Claim(name, bool(v <= threshold), v, threshold, f"{name} = {v:.4g} <= {threshold:.4g} (needed)")

    @staticmethod
    def at_least(name: str, value: float, threshold: float) -> Claim:
        v = float(value)
        return Claim(name, bool(v >= threshold), v, threshold, f"{name} = {v:.4g} >= {threshold:.4g} (needed)")

    @staticmethod
    def holds(name: str, passed: bool, value: Any = None, detail: str = "") -> Claim:
        """A yes/no claim; ``value`` records what was measured (the threshold is ``True``)."""
        return Claim(name, bool(passed), passed if value is None else value, True, detail)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "value": to_json(self.value),
            "threshold": to_json(self.threshold),
            "detail": self.detail,
        }


@dataclass
class Outcome:
    """What an experiment function returns: metrics (JSON-able) and the verdict for each claim."""

    metrics: dict[str, Any]
    claims: list[Claim]
    notes: str = ""


@dataclass
class Context:
    """What an experiment function gets besides its configuration.

    Attributes:
        seed: the base seed; experiments derive every random choice from it.
        quick: whether this is the ``--quick`` run.
        out_dir: where figures go (the runner writes ``results.json`` and ``report.md`` there).
        show_progress: whether progress bars draw (``None``: when stderr is a terminal).
    """

    seed: int
    quick: bool
    out_dir: Path
    show_progress: bool | None = None
    figures: list[str] = field(default_factory=list)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded with ``seed + offset``."""
        return torch.Generator().manual_seed(self.seed + offset)

    def progress(self, iterable: Iterable[T], desc: str = "", total: int | None = None) -> progress[T]:
        """Wrap a long loop in a progress bar."""
        return progress(iterable, total=total, desc=desc, enabled=self.show_progress)

    def savefig(self, fig: Any, name: str) -> Path:
        """Save a matplotlib figure as ``out_dir/name.png``, close it, and list it in the results."""
        path = self.out_dir / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        self.figures.append(path.name)
        return path

    def pyplot(self) -> Any:
        """``matplotlib.pyplot`` with a file backend, or ``None`` when matplotlib is not installed."""
        try:
            import matplotlib

            if "matplotlib.pyplot" not in sys.modules:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return None
        return plt


@dataclass(frozen=True)
class Experiment:
    """A registered experiment. Call :func:`run` (or ``nestopt run NAME``) to execute it."""

    name: str
    paper: str
    summary: str
    fn: Callable[[dict[str, Any], Context], Outcome]
    full: Mapping[str, Any]
    quick: Mapping[str, Any]

    def config(self, quick: bool, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        cfg = dict(self.quick if quick else self.full)
        for k, v in (overrides or {}).items():
            if k not in cfg:
                raise InvalidArgumentError(f"experiment {self.name!r} has no setting {k!r}; it has {sorted(cfg)}")
            cfg[k] = v
        return cfg


_REGISTRY: dict[str, Experiment] = {}
_DISCOVERED = False


def experiment(
    name: str,
    *,
    paper: str,
    summary: str,
    full: Mapping[str, Any],
    quick: Mapping[str, Any],
    register: bool = True,
) -> Callable[[Callable[[dict[str, Any], Context], Outcome]], Experiment]:
    """Register ``fn(cfg, ctx) -> Outcome`` as the experiment ``name``.

    ``full`` and ``quick`` must have the same keys: the quick configuration is the same experiment at a size
    that the test suite can afford.
    """
    if set(full) != set(quick):
        raise InvalidArgumentError(
            f"experiment {name!r}: full and quick configurations need the same keys, "
            f"got {sorted(full)} and {sorted(quick)}"
        )

    def wrap(fn: Callable[[dict[str, Any], Context], Outcome]) -> Experiment:
        exp = Experiment(name, paper, summary, fn, dict(full), dict(quick))
        if register:
            if name in _REGISTRY and _REGISTRY[name].fn.__qualname__ != fn.__qualname__:
                raise InvalidArgumentError(f"an experiment named {name!r} is already registered")
            _REGISTRY[name] = exp
        return exp

    return wrap


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import nestopt.experiments as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name != "registry":
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _DISCOVERED = True


def names() -> list[str]:
    """The names of all registered experiments, sorted."""
    _discover()
    return sorted(_REGISTRY)


def get(name: str) -> Experiment:
    """The experiment registered as ``name``."""
    _discover()
    if name not in _REGISTRY:
        raise InvalidArgumentError(f"no experiment named {name!r}; `nestopt list` shows {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def _versions() -> dict[str, str]:
    from nestopt import __version__

    return {
        "nestopt": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _cell(x: Any) -> str:
    if isinstance(x, list):
        text = "[" + ", ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in x) + "]"
    elif isinstance(x, float):
        text = f"{x:.4g}"
        if float(text) != x and float(text) == round(x):  # 0.99999994 must not read as 1
            text = f"{x:.10g}"
    else:
        text = str(x)
    return text.replace("|", "\\|")


def claims_table(rows: list[tuple[str | None, dict[str, Any]]]) -> str:
    """A markdown table of claims (``Claim.as_dict()`` form), with an experiment column when names are given."""
    named = any(name is not None for name, _ in rows)
    head = ["experiment"] * named + ["claim", "passed", "value", "threshold"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in rows:
        cells = [name or ""] * named + [c["name"], "yes" if c["passed"] else "**NO**", c["value"], c["threshold"]]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join(lines)


def _report(result: dict[str, Any]) -> str:
    lines = [
        f"# {result['experiment']}",
        "",
        f"Paper: {result['paper']}",
        "",
        f"Claim: {result['summary']}",
        "",
        f"Seed {result['config']['seed']}, {'quick' if result['config']['quick'] else 'full'} run, "
        f"{result['seconds']:.1f} s.",
        "",
        claims_table([(None, c) for c in result["claims"]]),
    ]
    if result.get("notes"):
        lines += ["", result["notes"]]
    for fig in result["figures"]:
        lines += ["", f"![{fig}]({fig})"]
    return "\n".join(lines) + "\n"


def run(
    exp: str | Experiment,
    *,
    quick: bool = False,
    seed: int = 0,
    out_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Run an experiment, write ``results.json`` and ``report.md`` into ``out_dir``, return the results.

    Example:
        >>> import tempfile
        >>> res = run("hypergrad-accuracy", quick=True, out_dir=tempfile.mkdtemp())  # doctest: +SKIP
        >>> all(c["passed"] for c in res["claims"])  # doctest: +SKIP
        True
    """
    exp = get(exp) if isinstance(exp, str) else exp
    cfg = exp.config(quick, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / exp.name
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(seed=seed, quick=quick, out_dir=out, show_progress=show_progress)
    torch.manual_seed(seed)
    start = time.perf_counter()
    outcome = exp.fn(dict(cfg), ctx)
    seconds = time.perf_counter() - start
    result = {
        "experiment": exp.name,
        "paper": exp.paper,
        "summary": exp.summary,
        "config": to_json({**cfg, "seed": seed, "quick": quick}),
        "metrics": to_json(outcome.metrics),
        "claims": [c.as_dict() for c in outcome.claims],
        "notes": outcome.notes,
        "figures": ctx.figures,
        "seconds": seconds,
        "versions": _versions(),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(_report(result))
    return result
