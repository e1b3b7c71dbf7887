"""Per-example or per-class weights of the training loss."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from nestopt.errors import InvalidArgumentError
from nestopt.hparams.base import Family
from nestopt.tree import Tree

__all__ = ["LossReweighting"]


class LossReweighting(Family):
    """Weight each training example's loss by :math:`a_i = 2\\,\\sigma(\\lambda_i)` (1 at initialization).

    ``per="example"`` keeps one weight per training example and needs batches ``(x, y, index)`` whose third
    entry holds the examples' indices in the training set (:class:`nestopt.data.Loader` with
    ``with_index=True`` makes them); ``per="class"`` keeps one weight per class, looked up by label.
    Weighted losses are normalized by the batch's total weight.

    Example:
        >>> import torch
        >>> from nestopt import hparams
        >>> rw = hparams.LossReweighting(per="class", size=3)
        >>> rw.init()["logits"].shape
        torch.Size([3])
    """

    def __init__(self, per: Literal["example", "class"] = "example", *, size: int, name: str = "reweight") -> None:
        if per not in ("example", "class"):
            raise InvalidArgumentError(f"per must be 'example' or 'class', got {per!r}")
        if not isinstance(size, int) or size < 1:
            raise InvalidArgumentError(
                f"size (the number of examples or classes) must be a positive integer, got {size!r}"
            )
        self.per, self.size, self.name = per, size, name

    def init(self) -> Tree:
        return {"logits": torch.zeros(self.size)}

    def example_weights(self, hparams: Tree, batch: tuple[Tensor, ...]) -> Tensor:
        logits = self.own(hparams)["logits"]
        if self.per == "class":
            index = batch[1]
        else:
            if len(batch) < 3:
                raise InvalidArgumentError(
                    "LossReweighting(per='example') needs batches (x, y, index) with each example's index in the "
                    "training set: use nestopt.data.Loader(..., with_index=True)"
                )
            index = batch[2]
        if int(index.max()) >= self.size or int(index.min()) < 0:
            raise InvalidArgumentError(f"an index in the batch ({int(index.max())}) is outside [0, size={self.size})")
        return 2 * torch.sigmoid(logits[index])
