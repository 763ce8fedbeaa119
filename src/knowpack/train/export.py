"""Loading a finished run's model, and `export`: merge it into a plain Hugging Face checkpoint.

    model, tokenizer, config = load_run("runs/lora50")        # base + the run's trained weights
    export_run("runs/lora50", "exports/lora50")        # then AutoModelForCausalLM.from_pretrained loads it

A LoRA run merges its adapter into the weights; a LoKI run writes its trained rows into down_proj; a full run
is copied as it is. The export is written to a temporary folder and renamed into place, safetensors only, in
the dtype the base checkpoint stores its weights in (SmolLM2: bf16, half the size of the float32 it is
trained in), unless the run config's `model.dtype` names one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from knowpack import models
from knowpack.errors import KnowpackError
from knowpack.faults import point
from knowpack.io import honour_umask, remove_tree
from knowpack.methods import method_module
from knowpack.models import model_source
from knowpack.runs import run_status
from knowpack.train.config import RunConfig, load_config


def run_config(run: str | os.PathLike) -> RunConfig:
    """The resolved config of a finished run; one-line errors for a folder that is not one."""
    run = Path(run)
    status = run_status(run)
    if status is None:
        raise KnowpackError(f"{run} is not a knowpack run folder (no run.json)")
    if status != "finished":
        raise KnowpackError(f"{run}: the run is {status}, not finished")
    return load_config(run / "config.yaml")


def load_run(run: str | os.PathLike, *, device: str | None = None) -> tuple[Any, Any, RunConfig]:
    """(model, tokenizer, config) of a finished run: its base model with the trained weights applied."""
    config = run_config(run)
    method = method_module(config.method.name)
    folder = Path(run) / method.WEIGHTS
    if not folder.is_dir():
        raise KnowpackError(f"{run}: no trained weights ({folder} is missing)")
    base, tokenizer = models.load_model(
        config.model.name,
        dtype=config.model.dtype,
        device=device,
        trust_remote_code=config.model.trust_remote_code,
    )
    return method.load(base, folder), tokenizer, config


def export_run(run: str | os.PathLike, out: str | os.PathLike, *, force: bool = False) -> Path:
    """Write the run's model, merged, as a plain checkpoint (config, safetensors, tokenizer) into `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise KnowpackError(f"export folder {out} exists and is not a folder; use another --out")
    if out.exists() and any(out.iterdir()) and not force:
        raise KnowpackError(f"export folder {out} is not empty; use another --out or --force")
    model, tokenizer, config = load_run(run)
    merged = method_module(config.method.name).merge(model)
    stored = stored_dtype(config.model.name) if config.model.dtype == "auto" else None
    if stored is not None and stored != merged.dtype:
        merged = merged.to(stored)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    honour_umask(tmp)
    point("export: written")
    remove_tree(out)
    tmp.rename(out)
    return out


def stored_dtype(name: str | os.PathLike) -> Any:
    """The torch dtype most of a local checkpoint's floating-point weights are stored in (its
    `model.safetensors`); None for a Hub id or a sharded checkpoint."""
    from collections import Counter

    import torch
    from safetensors import safe_open

    file = Path(model_source(name)) / "model.safetensors"
    if not file.is_file():
        return None
    with safe_open(str(file), "pt") as f:
        kinds = Counter(f.get_slice(key).get_dtype() for key in f.keys())
    names = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    floats = [kind for kind, _ in kinds.most_common() if kind in names]
    return names[floats[0]] if floats else None
