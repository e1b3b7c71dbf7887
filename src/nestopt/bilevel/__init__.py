"""Training loops for bilevel problems: :class:`BilevelTrainer` and its :class:`History`."""

from nestopt.bilevel.history import History
from nestopt.bilevel.streams import BatchStream
from nestopt.bilevel.trainer import BilevelTrainer

__all__ = ["BatchStream", "BilevelTrainer", "History"]
