"""Dataset distillation: a small synthetic training set whose every input is a hyperparameter."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError
from nestopt.hparams.base import Family
from nestopt.tree import Tree

__all__ = ["DistilledData"]


class DistilledData(Family):
    """Replace the training batch by ``n_per_class`` learned examples per class (Wang et al., 2018; Lorraine
    et al., 2020, section 5.2).

    The inner problem trains the model on the distilled examples only; the outer loss is the loss on real
    data, so the hypergradient moves the distilled inputs (and, with ``learn_labels``, soft labels) to the
    points whose training transfers best to real data.

    Args:
        n_per_class: learned examples per class.
        input_shape: the shape of one input.
        num_classes: the number of classes.
        learn_labels: learn soft labels (logits per example) as well; otherwise labels are fixed, one class
            per block of ``n_per_class`` examples.
        init: ``None`` (Gaussian noise of scale ``init_scale``) or a tensor of initial inputs.
        seed: seed of the random initialization.

    Example:
        >>> from nestopt import hparams
        >>> dd = hparams.DistilledData(1, (40,), 10)
        >>> dd.init()["x"].shape, dd.labels().tolist()[:3]
        (torch.Size([10, 40]), [0, 1, 2])
    """

    def __init__(
        self,
        n_per_class: int,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        learn_labels: bool = False,
        init: Tensor | None = None,
        init_scale: float = 0.1,
        seed: int = 0,
        name: str = "distilled",
    ) -> None:
        for label, value in (("n_per_class", n_per_class), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(f"{label} must be a positive integer, got {value!r}")
        self.n_per_class, self.num_classes = n_per_class, num_classes
        self.input_shape = tuple(int(s) for s in input_shape)
        self.learn_labels, self.name = learn_labels, name
        self.count = n_per_class * num_classes
        if init is not None and tuple(init.shape) != (self.count, *self.input_shape):
            raise InvalidArgumentError(
                f"init must have shape {(self.count, *self.input_shape)} (n_per_class * num_classes inputs), "
                f"got {tuple(init.shape)}"
            )
        self._init, self.init_scale, self.seed = init, init_scale, seed

    def labels(self) -> Tensor:
        """The fixed labels: examples ``c * n_per_class ... (c + 1) * n_per_class - 1`` belong to class ``c``."""
        return torch.arange(self.num_classes).repeat_interleave(self.n_per_class)

    def init(self) -> Tree:
        if self._init is not None:
            x = self._init.detach().clone()
        else:
            gen = torch.Generator().manual_seed(self.seed)
            x = self.init_scale * torch.randn((self.count, *self.input_shape), generator=gen)
        out = {"x": x}
        if self.learn_labels:
            out["label_logits"] = 5.0 * torch.nn.functional.one_hot(self.labels(), self.num_classes).to(x.dtype)
        return out

    def transform_batch(self, hparams: Tree, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        own = self.own(hparams)
        x = own["x"]
        return x, self.labels().to(x.device)

    def soft_targets(self, hparams: Tree, batch: tuple[Tensor, ...]) -> Tensor | None:
        if not self.learn_labels:
            return None
        return torch.softmax(self.own(hparams)["label_logits"], dim=-1)

    def dataset(self, hparams: Tree) -> tuple[Tensor, Tensor]:
        """The distilled inputs and their (hard) labels, detached: to train a fresh model on them."""
        own = self.own(hparams)
        y = own["label_logits"].argmax(-1) if self.learn_labels else self.labels().to(own["x"].device)
        return own["x"].detach().clone(), y
