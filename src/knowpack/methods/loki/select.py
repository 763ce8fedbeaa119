"""Which down_proj rows LoKI trains: selection from an attribution, and the selection file.

    from knowpack.methods.loki import select_nodes, write_selection, read_selection
    layers = select_nodes("out/kva", quota=10)                       # {layer: [sorted rows]}, LoKI's default
    write_selection("sel.json", layers, shape=(32, 4096), quota=10, strategy="layer-balanced")
    layers = read_selection("sel.json", model=model)                 # checks the file fits the model

Quota q (in %, in (0, 100]) of all L·D nodes (a node is row j of layer l's down_proj.weight). Strategies:
- `layer-balanced` (LoKI): k = floor(q·D/100) rows in every layer: the k rows most often among the k lowest
  signed scores of their layer over the prompts;
- `layer-balanced-high`: the same with the k highest scores (the paper's ablation);
- `global-low` / `global-high`: K = floor(q·L·D/100) nodes over all layers: the K most often among the K
  lowest / highest scores of all nodes (the paper's ablation; layers get unequal shares);
- `abs`: in every layer the k rows with the smallest mean |score| (least influence, either sign);
- `random`: in every layer k rows uniformly at random, seeded (the control).
Ties: on a prompt, equal scores are ordered by layer then row (stats.py). Among equal counts the lower mean
signed score is selected for the `-low` strategies and the higher for the `-high` ones (docs/design.md §4.5:
the criterion itself decides), then the lower row, and for global strategies the lower (layer, row); among
equal mean |score| (`abs`) the lower row.

The selection file (JSON): `{"layers": {"0": [rows...], ...}, "shape": {"num_layers": L, "rows": D},
"quota": q, "strategy": s, "k_per_layer" (or "k_total" for global), "seed" (random only), "source": the
attribution folder, its prompt set and count, "model": the attributed model}`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from knowpack.errors import KnowpackError
from knowpack.io import write_text_atomic
from knowpack.methods.loki.attribution import load_attribution
from knowpack.methods.loki.config import STRATEGIES
from knowpack.methods.loki.stats import KVAStats, check_quota, rows_for_quota


def select_nodes(
    attribution: str | os.PathLike | KVAStats,
    quota: float,
    strategy: str = "layer-balanced",
    *,
    seed: int = 0,
) -> dict[int, list[int]]:
    """The selected rows per layer (every layer present, rows sorted) from an attribution folder or stats."""
    quota = check_quota(quota)
    if strategy not in STRATEGIES:
        raise KnowpackError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if isinstance(attribution, KVAStats):
        stats = attribution
    else:
        stats, _ = load_attribution(attribution)
    if strategy == "random":
        return select_random(stats.num_layers, stats.rows, quota, seed=seed)
    if strategy.startswith("global"):
        return _global(stats, quota, "low" if strategy == "global-low" else "high")
    k = _rows_per_layer(quota, stats.rows)
    if strategy == "abs":
        return {layer: _first(stats.mean_abs()[layer], k) for layer in range(stats.num_layers)}
    side = "high" if strategy == "layer-balanced-high" else "low"
    _check_counted(stats, k, side, "layer", quota)
    counts, second = stats.counts(k, side, "layer"), _tie_break(stats, side)
    return {layer: _first(-counts[layer], k, second[layer]) for layer in range(stats.num_layers)}


def select_to_file(
    attribution: str | os.PathLike,
    out: str | os.PathLike,
    quota: float,
    strategy: str = "layer-balanced",
    *,
    seed: int = 0,
) -> tuple[dict[int, list[int]], KVAStats]:
    """`knowpack select`: select from a finished attribution folder and write the selection file `out`, with
    where the rows came from (the attribution, its prompts and steps, the model); returns the rows per layer
    and the attribution's stats."""
    quota = check_quota(quota)
    if strategy not in STRATEGIES:
        raise KnowpackError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if Path(out).is_dir():
        raise KnowpackError(
            f"--out {out} is a folder; the selection is one JSON file, e.g. {Path(out) / 'selection.json'}"
        )
    stats, meta = load_attribution(attribution)
    layers = select_nodes(stats, quota, strategy, seed=seed)
    settings = meta["settings"]
    write_selection(
        out, layers, shape=(stats.num_layers, stats.rows), quota=quota, strategy=strategy,
        seed=seed if strategy == "random" else None,
        source={
            "attribution": str(attribution), "prompts": settings["prompts"], "n_prompts": stats.n,
            "steps": settings["steps"],
        },
        model=settings["model"],
    )  # fmt: skip
    return layers, stats


def select_random(num_layers: int, rows: int, quota: float, *, seed: int = 0) -> dict[int, list[int]]:
    """k = floor(q·rows/100) rows per layer, uniformly at random (default_rng(seed), layer by layer)."""
    k = _rows_per_layer(check_quota(quota), rows)
    rng = np.random.default_rng(seed)
    return {layer: sorted(rng.choice(rows, size=k, replace=False).tolist()) for layer in range(num_layers)}


def write_selection(
    path: str | os.PathLike,
    layers: dict[int, list[int]],
    *,
    shape: tuple[int, int],
    quota: float,
    strategy: str,
    seed: int | None = None,
    source: Any = None,
    model: str | None = None,
) -> Path:
    """Write a selection file atomically (format in the module docstring); returns its path."""
    num_layers, rows = shape
    _check_layers(layers, num_layers, rows, str(path))
    data: dict[str, Any] = {
        "layers": {str(layer): sorted(int(r) for r in layers.get(layer, [])) for layer in range(num_layers)},
        "shape": {"num_layers": num_layers, "rows": rows},
        "quota": quota,
        "strategy": strategy,
    }
    if strategy.startswith("global"):
        data["k_total"] = sum(len(v) for v in data["layers"].values())
    elif num_layers:
        data["k_per_layer"] = len(data["layers"]["0"])
    if seed is not None:
        data["seed"] = seed
    data["source"] = source
    data["model"] = model
    # One line per layer: readable, and diffs show which layers changed.
    rows_text = ",\n".join(
        f'    "{layer}": {json.dumps(chosen)}' for layer, chosen in data.pop("layers").items()
    )
    rest = json.dumps(data, indent=2)[1:]  # "\n  \"shape\": ..." up to the closing brace
    return write_text_atomic(path, '{\n  "layers": {\n' + rows_text + "\n  }," + rest + "\n")


def read_selection(path: str | os.PathLike, model: Any = None) -> dict[int, list[int]]:
    """Layer -> sorted rows of a selection file; with `model` (or its config), a one-line error unless the
    file was made for a model of the same shape (layers, down_proj rows)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        raw, shape = data["layers"], data["shape"]
        num_layers, rows = int(shape["num_layers"]), int(shape["rows"])
        layers = {int(layer): [int(r) for r in chosen] for layer, chosen in raw.items()}
    except FileNotFoundError:
        raise KnowpackError(f"selection file not found: {path}") from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KnowpackError(f"{path}: not a selection file (needs 'layers' and 'shape')") from None
    _check_layers(layers, num_layers, rows, str(path))
    if model is not None:
        want = model_shape(model)
        if want != (num_layers, rows):
            raise KnowpackError(
                f"{path} selects rows of a model with {num_layers} layers x {rows} down_proj rows; "
                f"this model has {want[0]} layers x {want[1]} rows"
            )
    return {layer: sorted(layers.get(layer, [])) for layer in range(num_layers)}


def model_shape(model: Any) -> tuple[int, int]:
    """(decoder layers, down_proj rows = hidden size) of a model or its config."""
    config = getattr(model, "config", model)
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    return int(config.num_hidden_layers), int(config.hidden_size)


# ------------------------------------------------------------------------------------------------ internals


def _global(stats: KVAStats, quota: float, side: str) -> dict[int, list[int]]:
    total = stats.num_layers * stats.rows
    k = rows_for_quota(quota, total)
    if k == 0:
        raise KnowpackError(f"quota {quota:g}% of {total} nodes selects none; raise the quota")
    _check_counted(stats, k, side, "global", quota)
    counts = stats.counts(k, side, "global").ravel()  # ravel is layer-major: ties -> lower layer
    chosen = _first(-counts, k, _tie_break(stats, side).ravel())
    layers: dict[int, list[int]] = {layer: [] for layer in range(stats.num_layers)}
    for node in chosen:
        layers[node // stats.rows].append(node % stats.rows)
    return layers


def _first(keys: np.ndarray, k: int, second: np.ndarray | None = None) -> list[int]:
    """Indices of the k smallest keys, ties to the smaller `second` key, then the lower index; sorted."""
    if second is None:
        return sorted(np.argsort(keys, kind="stable")[:k].tolist())
    return sorted(np.lexsort((np.arange(len(keys)), second, keys))[:k].tolist())


def _tie_break(stats: KVAStats, side: str) -> np.ndarray:
    """The key among equal counts: the mean signed score, low first for `low`, high first for `high`."""
    mean = stats.sum / max(1, stats.n)
    return mean if side == "low" else -mean


def _rows_per_layer(quota: float, rows: int) -> int:
    k = rows_for_quota(quota, rows)
    if k == 0:
        raise KnowpackError(f"quota {quota:g}% of {rows} rows per layer selects none; raise the quota")
    return k


def _check_counted(stats: KVAStats, k: int, side: str, scope: str, quota: float) -> None:
    if not stats.counted(k, side, scope):
        raise KnowpackError(
            f"this attribution kept no counts for quota {quota:g}% (k = {k}); it counted the quotas "
            f"{_quota_list(stats.quotas)}; rerun knowpack attribute with --quotas {quota:g}"
        )


def _quota_list(quotas: list[float]) -> str:
    whole = [q for q in quotas if q == int(q)]
    extra = [f"{q:g}" for q in quotas if q != int(q)]
    text = "1..100 (whole percent)" if len(whole) == 100 else ", ".join(f"{q:g}" for q in whole)
    return text + (f" and {', '.join(extra)}" if extra else "")


def _check_layers(layers: dict, num_layers: int, rows: int, where: str) -> None:
    for layer, chosen in layers.items():
        if not 0 <= int(layer) < num_layers:
            raise KnowpackError(f"{where}: layer {layer} out of range (the model has {num_layers} layers)")
        bad = [r for r in chosen if not 0 <= int(r) < rows]
        if bad:
            raise KnowpackError(f"{where}: layer {layer}: row {bad[0]} out of range (0..{rows - 1})")
        if len(set(chosen)) != len(chosen):
            raise KnowpackError(f"{where}: layer {layer} lists a row twice")
