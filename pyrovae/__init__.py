from .config import ModelConfig, TrainConfig
from .model import VAE, Guide, Model
