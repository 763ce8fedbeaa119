"""Implanting: the run config, the training mix, training examples, uptake tracking, `train()`.

config.py (the YAML run config and its checks), mix.py (which facts to train on), data.py (examples in the
probe's format with the loss mask), uptake.py (reliability after every epoch, early stopping), run.py
(`train()`: one run folder), export.py (merge a run into a plain checkpoint). The methods themselves (LoRA,
LoKI, full) live in `knowpack.methods`.
"""

from knowpack.train.config import RunConfig, load_config
from knowpack.train.run import train

__all__ = ["RunConfig", "load_config", "train"]
