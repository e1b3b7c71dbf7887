"""Random data augmentation whose settings are hyperparameters: cutout, shifts (discrete), noise and scaling
strengths (continuous).

Each family draws its randomness from torch's global generator, which a training loop seeds per step, so a
run repeats exactly and every evaluation inside one hypergradient sees the same augmentation. Each accepts
its tensors with a leading batch dimension (one setting per example), as a best-response strategy perturbs
them. Inputs are 1-D signals ``(B, L)`` or ``(B, C, L)`` (MNIST-1D) or images ``(B, C, H, W)``.

========================  ==========================================  ================  ============
family                    hyperparameters                             kind              enters
========================  ==========================================  ================  ============
:class:`Cutout`           length and number of zeroed spans/squares   discrete          ``sampling``
:class:`RandomShift`      the largest circular shift                  discrete          ``sampling``
:class:`AugmentationStrength`  std of additive noise, range of scaling continuous        ``loss``
========================  ==========================================  ================  ============

A discrete setting has no derivative, so only a best-response strategy tunes it; a continuous strength acts
through reparameterized noise (:math:`x + s\\varepsilon`), so implicit hypergradients reach it too.

References:
    DeVries, Taylor. Improved Regularization of Convolutional Neural Networks with Cutout. 2017.
    MacKay et al. Self-Tuning Networks. ICLR 2019 (cutout length and holes, input scaling, tuned by STNs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nestopt._validate import nonnegative_int
from nestopt.errors import InvalidArgumentError, ShapeMismatchError
from nestopt.hparams.base import Family
from nestopt.hparams.interval import Interval
from nestopt.tree import Tree

__all__ = ["AugmentationStrength", "Cutout", "RandomShift"]

Setting = int | tuple[int, int]


def _discrete(name: str, setting: Setting) -> Interval | int:
    """A fixed count, or the range it is tuned in."""
    if isinstance(setting, tuple | list):
        if len(setting) != 2:
            raise InvalidArgumentError(f"{name} must be a count or a (low, high) range, got {setting!r}")
        low, high = (nonnegative_int(f"{name}[{i}]", v) for i, v in enumerate(setting))
        return Interval(low, high, discrete=True)
    return nonnegative_int(name, setting)


class _Discrete(Family):
    """Shared machinery: settings that are tuned (an :class:`Interval`) or fixed (an int)."""

    enters = frozenset({"sampling"})
    per_example = True
    settings: dict[str, Interval | int]
    inits: dict[str, int]

    def _setup(self, settings: dict[str, Setting], inits: dict[str, int]) -> None:
        self.settings = {k: _discrete(k, v) for k, v in settings.items()}
        self.inits = {}
        for k, s in self.settings.items():
            if isinstance(s, Interval):
                if inits[k] not in s.choices():
                    raise InvalidArgumentError(f"init_{k} must be one of {s.choices()}, got {inits[k]!r}")
                self.inits[k] = inits[k]
        if not self.inits:
            raise InvalidArgumentError(
                f"{type(self).__name__}: nothing to tune; give a (low, high) range for one of {sorted(settings)}"
            )

    def init(self) -> Tree:
        return {k: torch.tensor(self.intervals()[k].unproject(v)) for k, v in self.inits.items()}

    def intervals(self) -> dict[str, Interval]:
        return {k: s for k, s in self.settings.items() if isinstance(s, Interval)}

    def setting(self, hparams: Tree, k: str, x: Tensor) -> Tensor:
        """One integer value per example of ``x`` (as floats)."""
        s = self.settings[k]
        b = x.shape[0]
        if not isinstance(s, Interval):
            return torch.full((b,), float(s), device=x.device)
        value = s.project(hparams[self.key(k)].detach()).to(x.device)
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != b):
            raise ShapeMismatchError(
                f"{self.key(k)} has shape {tuple(value.shape)}: a scalar or one value per example of a batch of {b}"
            )
        return value.expand(b).float()

    def max_setting(self, k: str) -> int:
        s = self.settings[k]
        return int(s.high) if isinstance(s, Interval) else s


def _check_input(x: Tensor, who: str) -> None:
    if x.dim() not in (2, 3, 4):
        raise ShapeMismatchError(
            f"{who} augments signals (B, L), (B, C, L) or images (B, C, H, W), got inputs of shape {tuple(x.shape)}"
        )


def _in_spans(centres: Tensor, length: Tensor, size: int) -> Tensor:
    """``(B, K, size)``: whether each position lies in the span of ``length`` around each centre."""
    start = centres - torch.floor(length / 2)[:, None]
    pos = torch.arange(size, device=centres.device, dtype=centres.dtype)
    return (pos >= start[..., None]) & (pos < (start + length[:, None])[..., None])


class Cutout(_Discrete):
    """Cutout: ``holes`` regions of ``length`` entries zeroed at random places of every training input.

    For signals the regions are spans of the last dimension (the masked spans of MNIST-1D); for images,
    squares of side ``length``. Centres are uniform over the input; regions are clipped at its borders.
    Each of ``length`` and ``holes`` is a fixed count or a ``(low, high)`` range of integers to tune.

    Args:
        length: the region's length (side), fixed or tuned.
        holes: the number of regions, fixed or tuned.
        init_length: the initial length when tuned.
        init_holes: the initial number of regions when tuned.
        name: the key prefix.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> cut = hparams.Cutout(length=(0, 10), holes=2, init_length=3)
        >>> h = cut.initial()
        >>> x, _ = cut.transform_batch(h, (torch.ones(4, 40), torch.zeros(4)))
        >>> bool(((x == 0).sum(1) <= 6).all())   # at most 2 spans of 3 zeroed per signal
        True
    """

    def __init__(
        self,
        length: Setting = (0, 24),
        holes: Setting = 1,
        *,
        init_length: int = 4,
        init_holes: int = 1,
        name: str = "cutout",
    ) -> None:
        self.name = name
        self._setup({"length": length, "holes": holes}, {"length": init_length, "holes": init_holes})

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = batch[0]
        _check_input(x, "Cutout")
        length, holes = self.setting(hparams, "length", x), self.setting(hparams, "holes", x)
        k = max(self.max_setting("holes"), 1)
        b = x.shape[0]
        active = torch.arange(k, device=x.device)[None, :] < holes[:, None]  # (B, K)
        if x.dim() == 4:
            h, w = x.shape[-2:]
            cy = torch.floor(torch.rand(b, k, device=x.device) * h)
            cx = torch.floor(torch.rand(b, k, device=x.device) * w)
            inside = _in_spans(cy, length, h)[..., :, None] & _in_spans(cx, length, w)[..., None, :]
            cut = (inside & active[..., None, None]).any(1)[:, None]  # (B, 1, H, W)
        else:
            size = x.shape[-1]
            c = torch.floor(torch.rand(b, k, device=x.device) * size)
            cut = (_in_spans(c, length, size) & active[..., None]).any(1)  # (B, L)
            if x.dim() == 3:
                cut = cut[:, None]
        return (x.masked_fill(cut, 0.0), *batch[1:])


class RandomShift(_Discrete):
    """A circular shift of every training input by a uniform integer in ``[-s, s]`` (along the last dimension
    of signals, along both spatial dimensions of images, independently), with ``s`` fixed or tuned.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> shift = hparams.RandomShift((0, 8), init=3)
        >>> x = torch.arange(10.0).repeat(5, 1)
        >>> y, _ = shift.transform_batch(shift.initial(), (x, torch.zeros(5)))
        >>> bool((y.sort(1).values == x).all())   # each row is a rotation of 0..9
        True
    """

    def __init__(self, max_shift: Setting = (0, 10), *, init: int = 2, name: str = "shift") -> None:
        self.name = name
        self._setup({"max_shift": max_shift}, {"max_shift": init})

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = batch[0]
        _check_input(x, "RandomShift")
        s = self.setting(hparams, "max_shift", x)
        dims = (-2, -1) if x.dim() == 4 else (-1,)
        for d in dims:
            size = x.shape[d]
            offset = torch.floor(torch.rand(x.shape[0], device=x.device) * (2 * s + 1)) - s  # uniform in -s..s
            idx = (torch.arange(size, device=x.device)[None, :] - offset[:, None].long()) % size  # (B, size)
            shape = [x.shape[0]] + [1] * (x.dim() - 1)
            shape[d] = size
            x = x.gather(d, idx.reshape(shape).expand_as(x))
        return (x, *batch[1:])


class AugmentationStrength(Family):
    """Continuous augmentation strengths: additive Gaussian noise of std :math:`s_n` and a random scaling of
    every input by a factor uniform in :math:`[1/(1+s_r), 1+s_r]`:

    .. math::  x' = r\\,x + s_n \\varepsilon, \\qquad r = \\tfrac{1}{1+s_r} + \\big(1 + s_r - \\tfrac{1}{1+s_r}\\big) u,
               \\quad \\varepsilon \\sim \\mathcal N(0, I),\\ u \\sim U(0, 1).

    The noise is reparameterized, so the strengths enter the training loss differentiably (``"loss"``):
    implicit hypergradients reach them as well as best-response ones. Give an initial value to tune a
    strength; leave it ``None`` to leave it out.

    Args:
        noise: the initial noise std (tuned in ``(0, max_noise)``), or ``None``.
        scale: the initial scaling range :math:`s_r` (tuned in ``(0, max_scale)``), or ``None``.
        max_noise: the upper end of the noise std.
        max_scale: the upper end of the scaling range.
        name: the key prefix.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> aug = hparams.AugmentationStrength(noise=0.1)
        >>> {k: round(float(v), 6) for k, v in aug.project(aug.initial()).items()}
        {'noise': 0.1}
    """

    per_example = True

    def __init__(
        self,
        *,
        noise: float | None = None,
        scale: float | None = None,
        max_noise: float = 1.0,
        max_scale: float = 0.5,
        name: str = "strength",
    ) -> None:
        self.name = name
        self.ranges = {"noise": Interval(0.0, max_noise), "scale": Interval(0.0, max_scale)}
        self.inits = {k: v for k, v in (("noise", noise), ("scale", scale)) if v is not None}
        if not self.inits:
            raise InvalidArgumentError("AugmentationStrength: nothing to tune; give an initial noise or scale")
        for k, v in self.inits.items():
            self.ranges[k].unproject(v)  # raises unless v lies inside its range

    def init(self) -> Tree:
        return {k: torch.tensor(self.ranges[k].unproject(v)) for k, v in self.inits.items()}

    def intervals(self) -> dict[str, Interval]:
        return {k: self.ranges[k] for k in self.inits}

    def _per_example(self, hparams: Tree, k: str, x: Tensor) -> Tensor:
        value = self.ranges[k].project(hparams[self.key(k)]).to(x.dtype)
        if value.dim() == 1 and value.shape[0] != x.shape[0]:
            raise ShapeMismatchError(f"{self.key(k)} has {value.shape[0]} values for a batch of {x.shape[0]}")
        return value.reshape(-1, *([1] * (x.dim() - 1))) if value.dim() == 1 else value

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = batch[0]
        if "scale" in self.inits:
            s = self._per_example(hparams, "scale", x)
            lo = 1.0 / (1.0 + s)
            u = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
            x = x * (lo + (1.0 + s - lo) * u)
        if "noise" in self.inits:
            x = x + self._per_example(hparams, "noise", x) * torch.randn_like(x)
        return (x, *batch[1:])
