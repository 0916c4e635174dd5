"""Training a detector on annotated features: ``train(TrainConfig(...), annotations, features, run_dir)``."""
from davel.train.config import TrainConfig
from davel.train.loop import EpochRecord, TrainProgress, TrainResult, train

__all__ = ["EpochRecord", "TrainConfig", "TrainProgress", "TrainResult", "train"]
