"""pyrovae: variational autoencoders written the Pyro way."""

from .config import EvalConfig, ModelConfig, TrainConfig
from .importance import ImportanceEstimate, importance_estimate, log_likelihood
from .model import VAE, Guide, Model

__all__ = [
    "VAE",
    "EvalConfig",
    "Guide",
    "ImportanceEstimate",
    "Model",
    "ModelConfig",
    "TrainConfig",
    "importance_estimate",
    "log_likelihood",
]
