"""A data-augmentation network whose weights are hyperparameters."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.func import functional_call

from nestopt.errors import InvalidArgumentError
from nestopt.hparams.base import Family
from nestopt.tree import Tree

__all__ = ["AugmentationNet"]


class AugmentationNet(Family):
    """Train the model on :math:`T_\\lambda(x)`, where :math:`T` is a network with weights :math:`\\lambda`.

    The validation loss sees clean inputs, so the hypergradient teaches :math:`T` the transformations of the
    training inputs that help generalization (Lorraine et al., 2020, section 5.3). With ``residual=True``
    the model sees :math:`x + T_\\lambda(x)`; initializing the network's last layer at zero then starts from
    no augmentation. Optional input noise makes the augmentation stochastic; it is drawn from the family's
    own generator so that runs repeat exactly.

    With ``centered=True`` the model sees :math:`x + T_\\lambda(x + \\sigma\\varepsilon) - T_\\lambda(x)`: the
    network can only perturb an input by how its output responds to the noise, never move it to a fixed new
    point. An unconstrained network can learn a deterministic map of the training inputs that helps the
    validation loss but that the test inputs never see; centering rules that out (the augmentation is zero
    when ``noise=0``; the network's output bias cancels), at the cost of a second pass of the network.

    Args:
        net: the augmentation network (its output has the shape of its input).
        residual: add the network's output to the input.
        noise: standard deviation of Gaussian noise added to the input before the network.
        centered: subtract the network's output on the clean input (needs ``residual=True``).
        seed: seed of the noise generator.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> aug = hparams.AugmentationNet(torch.nn.Linear(5, 5))
        >>> sorted(aug.init())
        ['bias', 'weight']
    """

    def __init__(
        self,
        net: torch.nn.Module,
        *,
        residual: bool = True,
        noise: float = 0.0,
        centered: bool = False,
        seed: int = 0,
        name: str = "augment",
    ) -> None:
        if not isinstance(net, torch.nn.Module):
            raise InvalidArgumentError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if noise < 0:
            raise InvalidArgumentError(f"noise must be non-negative, got {noise!r}")
        if centered and not residual:
            raise InvalidArgumentError("centered=True perturbs the input x, so it needs residual=True")
        self.net, self.residual, self.noise, self.name = net, residual, float(noise), name
        self.centered = bool(centered)
        self._gen = torch.Generator().manual_seed(seed)

    def init(self) -> Tree:
        return {k: v.detach().clone() for k, v in self.net.named_parameters()}

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = batch[0]
        inputs = x
        if self.noise > 0:
            eps = torch.randn(x.shape, generator=self._gen, dtype=x.dtype).to(x.device)
            inputs = x + self.noise * eps
        own = self.own(hparams)
        out = functional_call(self.net, own, (inputs,))
        if out.shape != x.shape:
            raise InvalidArgumentError(
                f"the augmentation network maps inputs of shape {tuple(x.shape)} to {tuple(out.shape)}; "
                "it must keep the shape"
            )
        if self.centered:
            out = out - functional_call(self.net, own, (x,))
        return (x + out if self.residual else out, *batch[1:])

    def state_dict(self) -> dict[str, Tensor]:
        """The noise generator's state (saved in trainer checkpoints)."""
        return {"generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self._gen.set_state(state["generator"])
