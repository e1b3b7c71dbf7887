"""A GAN on 2-D Gaussian mixtures (8 modes on a ring, or a 5x5 grid) and its mode-coverage metrics.

The generator and the discriminator are small ReLU MLPs written functionally (their weights are the
players' trees). With ``ensemble=E`` every weight gets a leading dimension and the game holds E independent
GANs trained side by side (losses are summed over members, so each member's gradients are its own and any
element-wise optimizer, Adam included, treats them exactly as E separate runs): one game for many seeds.

Losses (non-saturating GAN, Goodfellow et al., 2014), with :math:`D` returning logits:

.. math::

    L_D = \\mathbb{E}_x\\, \\mathrm{softplus}(-D(x)) + \\mathbb{E}_z\\, \\mathrm{softplus}(D(G(z))), \\qquad
    L_G = \\mathbb{E}_z\\, \\mathrm{softplus}(-D(G(z))).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nestopt.errors import InvalidArgumentError
from nestopt.games.game import Game
from nestopt.tree import Tree

__all__ = ["gaussian_mixture", "mixture_gan", "mlp", "mode_coverage", "sample_mixture"]


def gaussian_mixture(kind: str = "ring", *, dtype: torch.dtype | None = None) -> tuple[Tensor, float]:
    """The centers and the standard deviation of a standard 2-D mixture.

    ``"ring"``: 8 modes evenly on a circle of radius 2, std 0.05. ``"grid"``: 25 modes on the grid
    :math:`\\{-4, -2, 0, 2, 4\\}^2`, std 0.05.

    Example:
        >>> centers, std = gaussian_mixture("ring")
        >>> centers.shape, std
        (torch.Size([8, 2]), 0.05)
    """
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if kind == "ring":
        angles = torch.arange(8, dtype=dtype) * (2 * math.pi / 8)
        return 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1), 0.05
    if kind == "grid":
        axis = torch.arange(-4.0, 5.0, 2.0, dtype=dtype)
        gx, gy = torch.meshgrid(axis, axis, indexing="ij")
        return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1), 0.05
    raise InvalidArgumentError(f"kind must be 'ring' or 'grid', got {kind!r}")


def sample_mixture(
    centers: Tensor, std: float, n: int, *, generator: torch.Generator | None = None, batch_shape: tuple[int, ...] = ()
) -> Tensor:
    """``n`` draws from the uniform mixture of isotropic Gaussians at ``centers``: shape ``(*batch_shape, n, 2)``."""
    idx = torch.randint(len(centers), (*batch_shape, n), generator=generator)
    noise = torch.randn(*batch_shape, n, centers.shape[1], generator=generator, dtype=centers.dtype)
    # index_select: advanced indexing of a small tensor by a long index is far slower on CPU
    chosen = centers.index_select(0, idx.reshape(-1)).reshape(*batch_shape, n, centers.shape[1])
    return chosen + std * noise


def mode_coverage(
    samples: Tensor, centers: Tensor, std: float, *, threshold: float = 3.0, min_fraction: float = 0.01
) -> dict[str, Any]:
    """How well samples cover a mixture's modes.

    A sample is *high quality* if it lies within ``threshold`` standard deviations of its nearest center; a
    mode is *covered* if at least ``min_fraction`` of all samples are high-quality samples of that mode.

    Args:
        samples: ``(n, 2)`` generated points.
        centers: ``(K, 2)`` mode centers.
        std: the modes' standard deviation.

    Returns:
        ``{"modes": covered modes, "high_quality": fraction of high-quality samples, "counts": per-mode counts}``.

    Example:
        >>> centers, std = gaussian_mixture("ring")
        >>> mode_coverage(sample_mixture(centers, std, 2000, generator=torch.Generator().manual_seed(0)),
        ...               centers, std)["modes"]
        8
    """
    if samples.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise InvalidArgumentError(f"samples must have shape (n, {centers.shape[1]}), got {tuple(samples.shape)}")
    dist = torch.cdist(samples.to(centers.dtype), centers)
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= threshold * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    covered = int((counts >= min_fraction * len(samples)).sum())
    return {"modes": covered, "high_quality": float(good.double().mean()), "counts": counts.tolist()}


def mlp(sizes: list[int], *, ensemble: int, generator: torch.Generator | None, dtype: torch.dtype) -> Tree:
    """Weights of a ReLU MLP with a leading ensemble dimension (PyTorch's default uniform initialization)."""
    params: Tree = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        bound = 1.0 / math.sqrt(fan_in)
        params[f"w{i}"] = (torch.rand(ensemble, fan_in, fan_out, generator=generator, dtype=dtype) * 2 - 1) * bound
        params[f"b{i}"] = (torch.rand(ensemble, 1, fan_out, generator=generator, dtype=dtype) * 2 - 1) * bound
    return params


def _forward(params: Tree, x: Tensor) -> Tensor:
    n_layers = len(params) // 2
    for i in range(n_layers):
        x = torch.baddbmm(params[f"b{i}"], x, params[f"w{i}"])
        if i < n_layers - 1:
            x = F.relu(x)
    return x


def mixture_gan(
    kind: str = "ring",
    *,
    latent_dim: int = 16,
    hidden: int = 128,
    layers: int = 2,
    batch_size: int = 256,
    ensemble: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Game:
    """A GAN learning a 2-D Gaussian mixture (:func:`gaussian_mixture`).

    Players ``generator`` (latent -> 2-D) and ``discriminator`` (2-D -> logit), ReLU MLPs with ``layers``
    hidden layers of width ``hidden``. The losses take ``batch = (real, noise)`` with shapes
    ``(ensemble, n, 2)`` and ``(ensemble, n, latent_dim)``; :attr:`Game.info` has ``"sample_batch"``
    (``generator -> batch`` of ``batch_size``), ``"generate"`` (``(n, generator) -> (ensemble, n, 2)`` samples from
    the current generator), ``"centers"`` and ``"std"``.

    Example:
        >>> game = mixture_gan("ring", hidden=16, generator=torch.Generator().manual_seed(0))
        >>> batch = game.info["sample_batch"](torch.Generator().manual_seed(1))
        >>> [float(v) > 0 for v in game.losses(batch=batch)]
        [True, True]
    """
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    for name, value in (("latent_dim", latent_dim), ("hidden", hidden), ("layers", layers),
                        ("batch_size", batch_size), ("ensemble", ensemble)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    centers, std = gaussian_mixture(kind, dtype=dtype)
    gen = mlp([latent_dim] + [hidden] * layers + [2], ensemble=ensemble, generator=generator, dtype=dtype)
    disc = mlp([2] + [hidden] * layers + [1], ensemble=ensemble, generator=generator, dtype=dtype)

    # one function per player, so that a player's gradient evaluates only its own loss
    def loss_g(p: list[Tree], batch: Any) -> Tensor:
        _, noise = batch
        return F.softplus(-_forward(p[1], _forward(p[0], noise))).mean(dim=(1, 2)).sum()

    def loss_d(p: list[Tree], batch: Any) -> Tensor:
        real, noise = batch
        d_real, d_fake = _forward(p[1], real), _forward(p[1], _forward(p[0], noise))
        return (F.softplus(-d_real).mean(dim=(1, 2)) + F.softplus(d_fake).mean(dim=(1, 2))).sum()

    def sample_batch(g: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        real = sample_mixture(centers, std, batch_size, generator=g, batch_shape=(ensemble,))
        noise = torch.randn(ensemble, batch_size, latent_dim, generator=g, dtype=dtype)
        return real, noise

    game = Game([gen, disc], [loss_g, loss_d], names=["generator", "discriminator"])

    def generate(n: int, g: torch.Generator | None = None) -> Tensor:
        with torch.no_grad():
            return _forward(game.params[0], torch.randn(ensemble, n, latent_dim, generator=g, dtype=dtype))

    sample_fn: Callable[..., Any] = sample_batch
    game.info.update({"centers": centers, "std": std, "sample_batch": sample_fn, "generate": generate})
    return game
