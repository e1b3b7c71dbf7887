"""Training loops for bilevel problems: :class:`BilevelTrainer`, its :class:`History` and callbacks, and
:class:`PretrainFinetuneTrainer` (pre-training hyperparameters tuned through fine-tuning)."""

from nestopt.bilevel import checkpoint
from nestopt.bilevel.callbacks import Callback, TensorBoardLogger
from nestopt.bilevel.history import History
from nestopt.bilevel.parallel import Parallel
from nestopt.bilevel.pretrain_finetune import PretrainFinetuneTrainer
from nestopt.bilevel.streams import BatchStream
from nestopt.bilevel.trainer import BilevelTrainer

__all__ = [
    "BatchStream",
    "BilevelTrainer",
    "Callback",
    "History",
    "Parallel",
    "PretrainFinetuneTrainer",
    "TensorBoardLogger",
    "checkpoint",
]
