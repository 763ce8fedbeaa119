"""Full fine-tuning: every weight trains. The reference point for damage (LoKI's paper: forgetting 84%).

Saved as a plain transformers checkpoint (`model/` in the run folder, safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack import models

WEIGHTS = "model"


@dataclass
class Config:
    train_embeddings: bool = True
    """Also train the token embeddings and the output head (false: freeze them)."""


def prepare(model: Any, config: Config, context: dict[str, Any]) -> Any:
    """Make every parameter trainable (or all but embeddings / head)."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if not config.train_embeddings:
        for module in (model.get_input_embeddings(), model.get_output_embeddings()):
            if module is not None:
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
    return model


def save(model: Any, folder: Path, config: Config, context: dict[str, Any]) -> None:
    """Write the whole model (safetensors) into `folder`."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = context.get("tokenizer")
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def load(base: Any, folder: Path) -> Any:
    """The trained model, read from `folder` (`base` only tells the dtype and device)."""
    model, _ = models.load_model(folder, dtype=base.dtype, device=str(base.device))
    return model


def merge(model: Any) -> Any:
    """Nothing to merge: the model is already plain."""
    return model


def shared_work(options: dict[str, Any]) -> None:
    """No work before training to share between runs."""
    return None
