"""The experiment registry: each paper claim as a small experiment that runs and checks itself.

An experiment is one module with three small functions, registered together as an :class:`Experiment`:

* ``compute(cfg, ctx) -> metrics``: runs the training and the measurements and returns what they measured
  (a dict; keys that start with ``_`` are kept for the plots and left out of ``results.json``);
* ``claims(metrics, cfg) -> list[Claim]``: the verdict on each claim, from the metrics alone;
* ``plots(plt, metrics, cfg) -> {name: figure}``: the figures, from the metrics alone (skipped when
  matplotlib is missing).

:func:`run` calls them in that order and writes ``results.json``, ``report.md`` and ``NAME.png`` for each
figure into an output folder. ``results.json`` holds ``{"experiment", "paper", "summary", "config",
"metrics", "claims": [{"name", "passed", "value", "threshold", "detail", "known_failure"}], "notes",
"figures", "known_failures", "seconds", "versions"}``, where a claim's ``known_failure`` says where the finding
is documented when a failed claim is a :class:`KnownFailure`, and is ``null`` otherwise.

Example:
    >>> import tempfile
    >>> from nestopt.experiments import Claim, Experiment, run
    >>> exp = Experiment(
    ...     "doc-example", paper="-", summary="1 + n is at most 2", full={"n": 1}, quick={"n": 1},
    ...     compute=lambda cfg, ctx: {"value": 1 + cfg["n"]},
    ...     claims=lambda m, cfg: [Claim.at_most("sum", m["value"], 2)],
    ... )
    >>> result = run(exp, out_dir=tempfile.mkdtemp())
    >>> result["claims"][0]["passed"], result["metrics"]
    (True, {'value': 2})
"""

from __future__ import annotations

import difflib
import importlib
import json
import math
import pkgutil
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from nestopt._progress import progress
from nestopt.errors import InvalidArgumentError
from nestopt.experiments.settings import check_setting, describe

__all__ = [
    "SEED_RANGE",
    "Claim",
    "Context",
    "Experiment",
    "KnownFailure",
    "check_seed",
    "claims_table",
    "get",
    "names",
    "prepare_out_dir",
    "pyplot",
    "register",
    "run",
    "suggest",
    "to_json",
]

T = TypeVar("T")
Metrics = dict[str, Any]
Config = dict[str, Any]

SEED_RANGE = (0, 2**63 - 1)
"""The seeds an experiment accepts. Experiments derive further seeds by adding offsets, and every derived seed
must stay inside ``torch.manual_seed``'s range ``[-2**63, 2**64 - 1]``."""


def to_json(obj: Any) -> Any:
    """Convert metrics (tensors, numpy values, dataclasses, paths) into strict JSON values.

    Non-finite floats become strings naming them: ``"nan"``, ``"inf"``, ``"-inf"``.

    >>> to_json({"a": float("nan"), "b": (1, torch.tensor(2.5))})
    {'a': 'nan', 'b': [1, 2.5]}
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


@dataclass(frozen=True)
class Context:
    """What ``compute`` gets besides its configuration.

    Attributes:
        seed: the base seed; experiments derive every random choice from it.
        quick: whether this is the ``--quick`` run.
        show_progress: whether progress bars draw (``None``: when stderr is a terminal).
    """

    seed: int = 0
    quick: bool = False
    show_progress: bool | None = None

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU ``torch.Generator`` seeded with ``seed + offset``."""
        return torch.Generator().manual_seed(self.seed + offset)

    def progress(self, iterable: Iterable[T], desc: str = "", total: int | None = None) -> progress[T]:
        """Wrap a long loop in a progress bar."""
        return progress(iterable, total=total, desc=desc, enabled=self.show_progress)


@dataclass(frozen=True)
class KnownFailure:
    """A claim that fails as an honest, documented finding: reported as such, not as a bug.

    Attributes:
        prefix: the start of the claim's name.
        why: where the finding is documented, in a few words (``"docs/ift.md, findings"``).
        quick: whether the quick run fails it too (``False``: only the full run does).
    """

    prefix: str
    why: str
    quick: bool = True

    def matches(self, claim_name: str, quick: bool) -> bool:
        return claim_name.startswith(self.prefix) and (self.quick or not quick)


Compute = Callable[[Config, Context], Metrics]
ClaimsFn = Callable[[Metrics, Config], list[Claim]]
PlotsFn = Callable[[Any, Metrics, Config], Mapping[str, Any]]
NotesFn = Callable[[Metrics, Config], str]


@dataclass(frozen=True)
class Experiment:
    """A paper claim that runs and checks itself: its description, two configurations and three functions.

    Attributes:
        name: what ``nestopt run NAME`` calls it.
        paper: the paper the claim comes from.
        summary: the claim in words.
        full: the full configuration (its values are the defaults of ``--set``).
        quick: the same keys at a size the test suite affords (``--quick``).
        compute: ``compute(cfg, ctx) -> metrics``.
        claims: ``claims(metrics, cfg) -> list[Claim]``.
        plots: ``plots(plt, metrics, cfg) -> {name: matplotlib figure}``, or ``None``.
        notes: ``notes(metrics, cfg) -> str``, text for the report and the terminal, or ``None``.
        figures: the names ``plots`` returns (the test suite checks that each one is written).
        known_failures: claims that fail as an honest, documented finding (:class:`KnownFailure`); a failed
            claim that matches one is reported as a known finding and does not make ``nestopt run`` exit with
            status 1.
    """

    name: str
    paper: str
    summary: str
    full: Mapping[str, Any]
    quick: Mapping[str, Any]
    compute: Compute
    claims: ClaimsFn
    plots: PlotsFn | None = None
    notes: NotesFn | None = None
    figures: tuple[str, ...] = ()
    known_failures: tuple[KnownFailure, ...] = ()

    def __post_init__(self) -> None:
        if set(self.full) != set(self.quick):
            raise InvalidArgumentError(
                f"experiment {self.name!r}: full and quick configurations need the same keys, "
                f"got {sorted(self.full)} and {sorted(self.quick)}"
            )
        for key, value in self.quick.items():
            check_setting(f"experiment {self.name!r}: quick setting {key!r}", value, self.full[key])
        if bool(self.figures) != (self.plots is not None):
            raise InvalidArgumentError(f"experiment {self.name!r}: give figures= exactly when plots= is given")

    def settings(self) -> list[tuple[str, str, Any, Any]]:
        """``(key, type, full default, quick value)`` for every setting, sorted by key."""
        return [(k, describe(self.full[k]), self.full[k], self.quick[k]) for k in sorted(self.full)]

    def config(self, quick: bool, overrides: Mapping[str, Any] | None = None) -> Config:
        """The configuration of a run: ``quick`` or ``full``, with ``overrides`` checked against the defaults."""
        cfg = dict(self.quick if quick else self.full)
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise InvalidArgumentError(
                    f"experiment {self.name!r} has no setting {key!r}{suggest(key, cfg)}; "
                    f"its settings: {', '.join(sorted(cfg))}"
                )
            cfg[key] = check_setting(f"setting {key!r}", value, self.full[key])
        return cfg

    def known_failure(self, claim_name: str, quick: bool) -> KnownFailure | None:
        """The documented finding that a failed claim of this name is, in this mode, if any."""
        return next((k for k in self.known_failures if k.matches(claim_name, quick)), None)


_REGISTRY: dict[str, Experiment] = {}
_DISCOVERED = False


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` to the registry (``nestopt list`` shows it) and return it."""
    known = _REGISTRY.get(exp.name)
    if known is not None and known.compute.__qualname__ != exp.compute.__qualname__:
        raise InvalidArgumentError(f"an experiment named {exp.name!r} is already registered")
    _REGISTRY[exp.name] = exp
    return exp


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    import nestopt.experiments as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name not in ("registry", "settings"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _DISCOVERED = True


def names() -> list[str]:
    """The names of all registered experiments, sorted."""
    _discover()
    return sorted(_REGISTRY)


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (difflib), or ``""`` when none is close.

    >>> suggest("hypergrad-acuracy", ["hypergrad-accuracy", "ipd"])
    "; did you mean 'hypergrad-accuracy'?"
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def get(name: str) -> Experiment:
    """The experiment registered as ``name``."""
    _discover()
    if name not in _REGISTRY:
        raise InvalidArgumentError(
            f"no experiment named {name!r}{suggest(name, _REGISTRY)} (`nestopt list` shows all {len(_REGISTRY)})"
        )
    return _REGISTRY[name]


def check_seed(seed: object, argument: str = "seed") -> int:
    """``seed`` itself, if it is an integer in :data:`SEED_RANGE`."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise InvalidArgumentError(
            f"{argument} must be an integer in [0, 2**63 - 1] (experiments derive further seeds from it), got {seed!r}"
        )
    return seed


def prepare_out_dir(path: str | Path, argument: str = "out_dir") -> Path:
    """Create the output folder ``path`` (and its parents) and check that files can be written into it.

    Errors name ``argument`` (how the caller calls the path) and the path.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"{argument} {str(out)!r} is an existing file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise InvalidArgumentError(f"{argument} {str(out)!r} is not a writable folder: {err.strerror or err}") from None
    return out


def pyplot() -> Any:
    """``matplotlib.pyplot`` with a file backend, or ``None`` when matplotlib is not installed."""
    try:
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


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


def _verdict(claim: Mapping[str, Any]) -> str:
    if claim["passed"]:
        return "yes"
    return f"no (known finding: {claim['known_failure']})" if claim.get("known_failure") else "**NO**"


def claims_table(rows: list[tuple[str | None, dict[str, Any]]]) -> str:
    """A markdown table of claims (``results.json`` form), with an experiment column when names are given."""
    named = any(name is not None for name, _ in rows)
    head = ["experiment"] * named + ["claim", "passed", "value", "threshold"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in rows:
        cells = [name or ""] * named + [c["name"], _verdict(c), c["value"], c["threshold"]]
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
    if result["notes"]:
        lines += ["", result["notes"]]
    for fig in result["figures"]:
        lines += ["", f"![{fig}]({fig})"]
    return "\n".join(lines) + "\n"


def _save_figures(exp: Experiment, metrics: Metrics, cfg: Config, out: Path) -> list[str]:
    plt = pyplot() if exp.plots is not None else None
    if exp.plots is None or plt is None:
        return []
    saved = []
    for name, fig in exp.plots(plt, metrics, cfg).items():
        fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        saved.append(f"{name}.png")
    return saved


def run(
    exp: str | Experiment,
    *,
    quick: bool = False,
    seed: int = 0,
    out_dir: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Run an experiment: compute, claims, plots; write ``results.json``, ``report.md`` and the figures into
    ``out_dir`` (default ``runs/NAME``) and return the results.

    Raises:
        InvalidArgumentError: an unknown experiment or setting, an ill-typed setting, a seed outside
            :data:`SEED_RANGE`, or an ``out_dir`` that is a file or cannot be written.
    """
    exp = get(exp) if isinstance(exp, str) else exp
    cfg = exp.config(quick, overrides)
    seed = check_seed(seed)
    out = prepare_out_dir(out_dir if out_dir is not None else Path("runs") / exp.name)
    torch.manual_seed(seed)
    start = time.perf_counter()
    metrics = exp.compute(dict(cfg), Context(seed=seed, quick=quick, show_progress=show_progress))
    claims = [c.as_dict() for c in exp.claims(metrics, cfg)]
    for c in claims:
        known = None if c["passed"] else exp.known_failure(c["name"], quick)
        c["known_failure"] = known.why if known is not None else None
    figures = _save_figures(exp, metrics, cfg, out)
    notes = exp.notes(metrics, cfg) if exp.notes is not None else ""
    result = {
        "experiment": exp.name,
        "paper": exp.paper,
        "summary": exp.summary,
        "config": to_json({**cfg, "seed": seed, "quick": quick}),
        "metrics": to_json({k: v for k, v in metrics.items() if not k.startswith("_")}),
        "claims": claims,
        "notes": notes,
        "figures": figures,
        "known_failures": [asdict(k) for k in exp.known_failures],
        "seconds": time.perf_counter() - start,
        "versions": _versions(),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out / "report.md").write_text(_report(result))
    return result
