"""LoKI through the method registry: pick down_proj rows (a selection file, an attribution, or attribute on
the fly), then train only those rows (or, LoKI*, a LoRA pair on them). Saved as `loki/` in the run folder:
`selection.json` + `rows.safetensors` (knowpack.loki.layer).

    method:
      name: loki
      quota: 10                  # % of the down_proj rows of every layer
      strategy: layer-balanced   # or layer-balanced-high, global-low, global-high, abs, random
      positions: null            # a selection file (knowpack select); null: select here
      attribution: null          # a finished `knowpack attribute` folder to select from; null: attribute here
      prompts: world_mc          # the prompt set to attribute on (a JSONL file, mmlu, mmlu:PATH, world_mc)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.config import check_ranges, ranged
from knowpack.errors import KnowpackError

logger = logging.getLogger(__name__)

WEIGHTS = "loki"


@dataclass
class Config:
    quota: float = ranged(10.0, gt=0, le=100)
    """Share of the down_proj rows (nodes) to train, in %: k = floor(q * D / 100) per layer."""
    strategy: str = "layer-balanced"
    """layer-balanced (LoKI) | layer-balanced-high | global-low | global-high | abs | random."""
    positions: str | None = None
    """A selection file (`knowpack select`) to train; quota and strategy are then the file's."""
    attribution: str | None = None
    """A finished attribution folder (`knowpack attribute`) to select from."""
    attribution_out: str | None = None
    """Where to attribute when neither positions nor attribution is given (default `<run>/attribution`;
    an unfinished one there is resumed, so sweeps can share one)."""
    prompts: str = "world_mc"
    """Prompt set for attributing here: a JSONL file, `mmlu`, `mmlu:NAME_OR_PATH` or `world_mc`."""
    per_subject: int = ranged(50, ge=1)
    """MMLU questions per subject when `prompts` is MMLU."""
    attribution_limit: int | None = ranged(None, ge=1)
    """Attribute only the first N prompts."""
    seed: int = ranged(0, ge=0)
    """Seed of the `random` strategy."""
    lora_rank: int | None = ranged(None, ge=1)
    """LoKI*: train a LoRA pair of this rank on the chosen rows instead of the rows themselves."""
    lora_alpha: float | None = ranged(None, gt=0)
    lora_dropout: float = ranged(0.0, ge=0, lt=1)

    def __post_init__(self) -> None:
        from knowpack.loki.select import STRATEGIES

        check_ranges(self, "method")
        if self.strategy not in STRATEGIES:
            raise KnowpackError(
                f"method.strategy is {self.strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        if self.positions is not None and self.attribution is not None:
            raise KnowpackError("method.positions and method.attribution: give one of them, not both")


def selection(
    model: Any,
    tokenizer: Any,
    config: Config,
    run_dir: Path,
    progress_bar: Callable[[str], Any] | None = None,
) -> tuple[dict[int, list[int]], dict]:
    """The rows to train and how they were chosen; `progress_bar(label)` shows the attribution's prompts."""
    from knowpack.loki.select import read_selection, select_nodes

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
    from knowpack.devices import broadcast
    from knowpack.runs import stage_finished

    if not broadcast(stage_finished(out)):  # every process takes the main one's view
        _attribute(model, tokenizer, config, out, progress_bar)


def _attribute(model: Any, tokenizer: Any, config: Config, out: Path, progress_bar) -> None:
    from knowpack.loki.attribution import attribute
    from knowpack.loki.prompts import load_prompts

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
    from knowpack.loki.layer import apply_loki

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
    from knowpack.loki.layer import save_loki

    save_loki(model, folder, settings={**context.get("loki_selection", {}), "quota": config.quota})


def load(base: Any, folder: Path) -> Any:
    """The trained model: the saved rows written into a freshly loaded base (a plain model)."""
    from knowpack.loki.layer import load_loki

    return load_loki(base, folder, merge=True)


def merge(model: Any) -> Any:
    """A plain model with the rows in its down_proj weights."""
    from knowpack.loki.layer import loki_modules, merge_loki

    return merge_loki(model) if loki_modules(model) else model
