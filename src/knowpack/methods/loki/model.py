"""LoKI through the method registry: pick down_proj rows (a selection file, an attribution, or attribute on
the fly), then train only those rows (or, LoKI*, a LoRA pair on them). Saved as `loki/` in the run folder:
`selection.json` + `rows.safetensors` (`layer.py`). The settings are `config.py`'s `Config`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from knowpack import models
from knowpack.devices import broadcast
from knowpack.methods import SharedWork, method_config
from knowpack.methods.loki.config import Config
from knowpack.methods.loki.prompt_sets import load_prompts
from knowpack.runs import stage_finished

logger = logging.getLogger(__name__)

WEIGHTS = "loki"


def selection(
    model: Any,
    tokenizer: Any,
    config: Config,
    run_dir: Path,
    progress_bar: Callable[[str], Any] | None = None,
) -> tuple[dict[int, list[int]], dict]:
    """The rows to train and how they were chosen; `progress_bar(label)` shows the attribution's prompts."""
    from knowpack.methods.loki.select import read_selection, select_nodes  # torch: keeps methods.loki light

    if config.positions is not None:
        return read_selection(config.positions, model=model), {"positions": config.positions}
    source = config.attribution
    if source is None:
        source = config.attribution_out or str(run_dir / "attribution")
        ensure_attribution(model, tokenizer, config, Path(source), progress_bar=progress_bar)
    chosen = select_nodes(source, config.quota, config.strategy, seed=config.seed)
    return chosen, {"attribution": str(source), "quota": config.quota, "strategy": config.strategy}


def ensure_attribution(
    model: Any,
    tokenizer: Any,
    config: Config,
    out: Path,
    progress_bar: Callable[[str], Any] | None = None,
) -> None:
    """Attribute on `config.prompts` into `out` unless a finished attribution is there (resumes others);
    `progress_bar(label)`, a context manager yielding `progress(done, total)`, shows the prompts. With
    several processes each attributes its shard and the main one merges them (`attribute`)."""
    if not broadcast(stage_finished(out)):  # every process takes the main one's view
        _attribute(model, tokenizer, config, out, progress_bar)


def _attribute(model: Any, tokenizer: Any, config: Config, out: Path, progress_bar) -> None:
    from knowpack.methods.loki.attribution import attribute  # torch: keeps methods.loki light (the CLI's)

    logger.info("LoKI: attributing on %s into %s", config.prompts, out)
    prompts = load_prompts(config.prompts, tokenizer, per_subject=config.per_subject)
    with progress_bar(f"LoKI attribution ({config.prompts})") if progress_bar else nullcontext() as progress:
        attribute(
            model,
            tokenizer,
            prompts,
            out=out,
            source=config.prompts,
            limit=config.attribution_limit,
            quotas=[config.quota],
            progress=progress,
        )


def prepare(model: Any, config: Config, context: dict[str, Any]) -> Any:
    """Choose the rows, then make them the model's only trainable parameters."""
    from knowpack.methods.loki.layer import apply_loki  # torch: keeps methods.loki light

    bar = context.get("progress_bar")
    chosen, how = selection(model, context["tokenizer"], config, Path(context["run_dir"]), progress_bar=bar)
    context["loki_selection"] = how
    return apply_loki(
        model,
        chosen,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
    )


def save(model: Any, folder: Path, config: Config, context: dict[str, Any]) -> None:
    """Write selection.json + rows.safetensors into `folder`."""
    from knowpack.methods.loki.layer import save_loki  # torch: keeps methods.loki light

    save_loki(model, folder, settings={**context.get("loki_selection", {}), "quota": config.quota})


def load(base: Any, folder: Path) -> Any:
    """The trained model: the saved rows written into a freshly loaded base (a plain model)."""
    from knowpack.methods.loki.layer import load_loki  # torch: keeps methods.loki light

    return load_loki(base, folder, merge=True)


def merge(model: Any) -> Any:
    """A plain model with the rows in its down_proj weights."""
    from knowpack.methods.loki.layer import loki_modules, merge_loki  # torch: keeps methods.loki light

    return merge_loki(model) if loki_modules(model) else model


def shared_work(options: dict[str, Any]) -> SharedWork | None:
    """The attribution, which runs on the same model with the same prompts share (`knowpack sweep` makes it
    once, under OUT/attribution); None when the options give the rows (`positions`) or an attribution."""
    if options.get("positions") or options.get("attribution"):
        return None
    key = {
        "prompts": options.get("prompts", Config.prompts),
        "per_subject": options.get("per_subject", Config.per_subject),
        "limit": options.get("attribution_limit"),
        "heldout": True,  # the prompts are the tasks' attribution splits (knowpack.heldout)
    }
    return SharedWork("attribution", key, _shared_attribution)


def _shared_attribution(config: Any, folder: Path, progress_bar: Callable[[str], Any] | None) -> None:
    """Attribute into `folder` with the run config `config`'s model and LoKI settings."""
    model, tokenizer = models.load_model(
        config.model.name, dtype=config.model.dtype, device=config.model.device
    )
    loki = method_config("loki", config.method.options)
    ensure_attribution(model, tokenizer, loki, folder, progress_bar=progress_bar)
