"""Training and evaluation engines: the loop, checkpoints, schedule, loaders and DDP setup."""

from ..manifest import ChecksumError
from .callbacks import Callback
from .checkpoint import (
    Checkpoint,
    latest_checkpoint,
    load_latest_training_state,
    load_training_state,
    save_training_state,
)
from .distributed import DistributedContext, destroy_distributed, init_distributed
from .evaluation import evaluate_model
from .knobs import ExponentialMovingAverage, FreezeGroups
from .loaders import EvalSplit, build_eval_splits, build_train_loader
from .optim import OPTIMIZERS, build_optimizer
from .run_lock import RunLock, RunLockedError
from .schedule import SCHEDULES, build_scheduler, warmup_cosine_factor, warmup_multistep_factor
from .trainer import (
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    check_model_fits_data,
    seed_everything,
)

__all__ = [
    "Callback",
    "Checkpoint",
    "ChecksumError",
    "DistributedContext",
    "OPTIMIZERS",
    "EvalSplit",
    "ExponentialMovingAverage",
    "FreezeGroups",
    "NonFiniteLossError",
    "RunLock",
    "RunLockedError",
    "SCHEDULES",
    "TrainConfig",
    "Trainer",
    "check_model_fits_data",
    "build_eval_splits",
    "build_optimizer",
    "build_scheduler",
    "build_train_loader",
    "destroy_distributed",
    "evaluate_model",
    "init_distributed",
    "latest_checkpoint",
    "load_latest_training_state",
    "load_training_state",
    "save_training_state",
    "seed_everything",
    "warmup_cosine_factor",
    "warmup_multistep_factor",
]
