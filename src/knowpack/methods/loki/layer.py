"""The LoKI layer: train only the chosen rows of each down_proj; save, load, merge and export them.

Row j of layer l's `down_proj.weight` (d_model x d_ff) is output coordinate j of that layer's FFN, a
"node" (docs/papers.md §2.2). `apply_loki` freezes the whole model and wraps each selected down_proj in a
`LokiLinear` whose only trainable parameter is its chosen rows (`rows`, [k_l, d_ff]), or for LoKI* a LoRA
pair on those rows only. An optimizer built from the parameters that require grad then holds state for the
rows alone, and weight decay never reaches a frozen weight. The model class is not touched: wrap any
supported model after loading it.

    import torch, knowpack
    from knowpack.methods.loki.layer import apply_loki, export_loki, load_loki, merge_loki, save_loki

    model, tok = knowpack.load_model("organism")
    apply_loki(model, {0: [3, 17, 40], 2: [5, 9]})   # layer -> rows, e.g. from `knowpack select`
    # LoKI*: apply_loki(model, selection, lora_rank=32, lora_alpha=32)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    ...                                              # train as usual
    save_loki(model, "run/loki", settings={"quota": 10})   # selection.json + rows.safetensors

    base, tok = knowpack.load_model("organism")      # later, in another process
    load_loki(base, "run/loki")                      # the trained model, a plain transformers model
    export_loki("organism", "run/loki", "exported")  # ... or as a checkpoint for AutoModelForCausalLM

**Precision.** Frozen weights stay as loaded, in the model's dtype. The trained rows (and LoKI*'s LoRA
factors) are kept in float32 (or wider), as PEFT keeps adapters (`autocast_adapter_dtype`): in a bf16 copy
small optimizer updates would round away. The forward casts them to the compute dtype (the input's, or
autocast's), so a wrapped model computes exactly what the plain model with the rows written in (rounded to
its dtype) computes: merging plain LoKI rows changes no logit.

**Forward.** y = x W'^T where W' is down_proj.weight with the chosen rows substituted, built as a
transient copy in the forward and again in the backward (`_SubstitutedLinear`). This is bit for bit the
nn.Linear with the rows written in, costs one d_model-row matmul (not d_model + k_l), and keeps nothing but
x for the backward. Letting autograd differentiate `weight.index_copy(0, index, rows)` instead would compute
a full d_model x d_ff weight gradient and keep W' alive until the backward; computing y = x W^T and then
overwriting the chosen outputs with x rows^T costs k_l extra rows of matmul. `bench/loki_layer.py`
measures the training step against plain LoRA and the paper's split-and-gather layer.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from knowpack import models
from knowpack.errors import KnowpackError
from knowpack.io import atomic_dir
from knowpack.models import architecture, module_name

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"
ROWS_FILE = "rows.safetensors"
FORMAT = "knowpack-loki"


class _SubstitutedLinear(torch.autograd.Function):
    """y = x W'^T (+ bias), W' = `weight` with rows `index` replaced by `rows`; grads for x and rows only."""

    @staticmethod
    def forward(ctx, x, weight, rows, index, bias, dtype):
        ctx.save_for_backward(x, weight, rows, index)
        ctx.dtype = dtype
        bias = None if bias is None else bias.to(dtype)
        return F.linear(x.to(dtype), _substituted(weight, rows, index, dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rows, index = ctx.saved_tensors
        grad = grad.to(ctx.dtype)
        grad_x = grad_rows = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad @ _substituted(weight, rows, index, ctx.dtype)).to(x.dtype)
        if ctx.needs_input_grad[2]:
            chosen = grad.index_select(-1, index).reshape(-1, index.numel())
            grad_rows = (chosen.T @ x.to(ctx.dtype).reshape(-1, x.shape[-1])).to(rows.dtype)
        return grad_x, None, grad_rows, None, None, None


def _substituted(weight: torch.Tensor, rows: torch.Tensor, index: torch.Tensor, dtype: torch.dtype):
    """`weight` in `dtype` with its rows `index` replaced by `rows` (rounded to the weight's dtype first, as
    writing them into the weight would)."""
    rows = rows.to(weight.dtype).to(dtype)
    if weight.dtype == dtype:
        return weight.index_copy(0, index, rows)
    return weight.to(dtype).index_copy_(0, index, rows)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class LokiLinear(nn.Module):
    """A down_proj whose chosen output rows are trainable and everything else is frozen.

    Holds the original frozen `weight` (and `bias`) parameters themselves, so the model's state-dict keys for
    them do not change, the sorted row numbers as the buffer `index`, and either
    - `rows` ([k, in_features], float32): the chosen rows themselves (LoKI), or
    - `lora_A` ([r, in_features], Kaiming-uniform) and `lora_B` ([k, r], zeros): the chosen rows are
      weight[index] + (alpha / r) * lora_B @ lora_A (LoKI*), so before training it computes what the base
      does.
    """

    def __init__(
        self,
        base: nn.Linear,
        rows: Sequence[int],
        *,
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        lora_dropout: float = 0.0,
    ):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight.requires_grad_(False)
        self.bias = None if base.bias is None else base.bias.requires_grad_(False)
        weight = self.weight.detach()
        self.register_buffer(
            "index", torch.tensor(sorted(rows), dtype=torch.long, device=weight.device), False
        )
        dtype = torch.promote_types(weight.dtype, torch.float32)
        self.lora_rank = lora_rank
        if lora_rank is None:
            self.rows = nn.Parameter(weight[self.index].to(dtype))
            return
        self.lora_alpha = float(lora_rank if lora_alpha is None else lora_alpha)
        self.scaling = self.lora_alpha / lora_rank
        self.lora_A = nn.Parameter(
            torch.empty(lora_rank, self.in_features, dtype=dtype, device=weight.device)
        )
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and PEFT) initialise A
        self.lora_B = nn.Parameter(torch.zeros(len(self.index), lora_rank, dtype=dtype, device=weight.device))
        self.dropout = nn.Dropout(lora_dropout) if lora_dropout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x)
        if self.lora_rank is None:
            return _SubstitutedLinear.apply(x, self.weight, self.rows, self.index, self.bias, dtype)
        y = F.linear(x, self.weight, self.bias)
        h = self.dropout(x).to(dtype)
        delta = F.linear(F.linear(h, self.lora_A.to(dtype)), self.lora_B.to(dtype)) * self.scaling
        return y.index_add(-1, self.index, delta.to(y.dtype))

    @torch.no_grad()
    def trained_rows(self) -> torch.Tensor:
        """The chosen rows as they are now, [k, in_features], float32 (or wider); LoKI*: the merged rows."""
        if self.lora_rank is None:
            return self.rows.detach().clone()
        base = self.weight[self.index].to(self.lora_B.dtype)
        return base + self.scaling * (self.lora_B @ self.lora_A)

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        """A plain nn.Linear over the same weight parameter, the trained rows written in (in its dtype)."""
        self.weight.index_copy_(0, self.index, self.trained_rows().to(self.weight.dtype))
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight, linear.bias = self.weight, self.bias
        return linear

    def extra_repr(self) -> str:
        lora = (
            "" if self.lora_rank is None else f", lora_rank={self.lora_rank}, lora_alpha={self.lora_alpha:g}"
        )
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rows={len(self.index)}{lora}"
        )


def apply_loki(
    model: Any,
    selection: Mapping[int, Sequence[int]],
    *,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
) -> Any:
    """Freeze `model` and make the selected down_proj rows its only trainable parameters, in place.

    `selection`: layer -> row numbers (keys may be strings, as in JSON); layers it leaves out, or gives no
    rows, stay frozen. With `lora_rank` (LoKI*) each layer trains a LoRA pair on its chosen rows instead of
    the rows themselves, scaled by `lora_alpha / lora_rank` (`lora_alpha` defaults to the rank: scale 1),
    with dropout `lora_dropout` on its input. Returns `model`.

    With gradient checkpointing in transformers' reentrant mode, call `model.enable_input_require_grads()`:
    every embedding is frozen, so nothing before the first LoKI layer would require grad.
    """
    if lora_rank is None and (lora_alpha is not None or lora_dropout):
        raise KnowpackError("LoKI: lora_alpha and lora_dropout need lora_rank (LoKI*)")
    if lora_rank is not None and (
        isinstance(lora_rank, bool) or not isinstance(lora_rank, int) or lora_rank < 1
    ):
        raise KnowpackError(f"LoKI*: lora_rank must be an integer >= 1 (got {lora_rank!r})")
    if not 0 <= lora_dropout < 1:
        raise KnowpackError(f"LoKI*: lora_dropout must be in [0, 1) (got {lora_dropout})")
    if loki_modules(model):
        raise KnowpackError("the model already has LoKI layers (merge_loki it first)")
    chosen = _checked_selection(model, selection)
    targets = {layer: _down_proj(model, layer) for layer in chosen}  # every check before any change

    for p in model.parameters():
        p.requires_grad_(False)
    for layer, rows in chosen.items():
        name, base = targets[layer]
        wrapped = LokiLinear(
            base, rows, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout
        )
        _set_module(model, name, wrapped)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "LoKI%s: %d rows in %d layers, %d trainable parameters",
        "*" if lora_rank else "",
        sum(map(len, chosen.values())),
        len(chosen),
        n,
    )
    return model


def loki_modules(model: Any) -> dict[int, LokiLinear]:
    """Layer -> its LokiLinear, for the layers of `model` that have one."""
    found = {}
    for layer in range(_num_layers(model)):
        module = model.get_submodule(module_name(model, layer, "down_proj"))
        if isinstance(module, LokiLinear):
            found[layer] = module
    return found


def merge_loki(model: Any) -> Any:
    """Write the trained rows into each down_proj.weight (in its dtype) and put plain nn.Linear layers
    back, in place. The parameters stay frozen. Returns `model`."""
    for layer, module in loki_modules(model).items():
        _set_module(model, module_name(model, layer, "down_proj"), module.merged())
    return model


def save_loki(model: Any, out_dir: str | Path, *, settings: dict | None = None) -> Path:
    """Write the LoKI layers of `model` to `out_dir` (replaced as a whole, atomically):

    - `selection.json`: `selection` (layer -> sorted rows), `shape` (`model_type`, `num_layers`, `rows`
      and `cols` of a down_proj weight), `lora` (LoKI*: `rank`, `alpha`, `dropout`; else null), and
      `settings` (yours);
    - `rows.safetensors`: `layers.<l>.rows`, the trained rows [k_l, cols] in float32 (LoKI*: merged), and for
      LoKI* also `layers.<l>.lora_A` / `lora_B` (to go on training).
    """
    from safetensors.torch import save_file

    modules = loki_modules(model)
    if not modules:
        raise KnowpackError("the model has no LoKI layers to save (apply_loki first)")
    tensors = {}
    for layer, module in modules.items():
        tensors[f"layers.{layer}.rows"] = module.trained_rows()
        if module.lora_rank is not None:
            tensors[f"layers.{layer}.lora_A"] = module.lora_A.detach()
            tensors[f"layers.{layer}.lora_B"] = module.lora_B.detach()
    first = next(iter(modules.values()))
    lora = None
    if first.lora_rank is not None:
        dropout = first.dropout.p if isinstance(first.dropout, nn.Dropout) else 0.0
        lora = {"rank": first.lora_rank, "alpha": first.lora_alpha, "dropout": dropout}
    meta = {
        "format": FORMAT,
        "selection": {str(layer): module.index.tolist() for layer, module in modules.items()},
        "shape": _shape(model),
        "lora": lora,
        "settings": settings or {},
    }
    text = json.dumps(meta, indent=2, default=str)
    text = re.sub(r"\[[\d,\s]*\]", lambda m: json.dumps(json.loads(m.group())), text)  # a list on one line
    with atomic_dir(out_dir) as tmp:
        save_file(
            {k: v.to("cpu").contiguous() for k, v in tensors.items()}, tmp / ROWS_FILE, {"format": "pt"}
        )
        (tmp / SELECTION_FILE).write_text(text + "\n", encoding="utf-8")
    return Path(out_dir)


def load_loki(model: Any, loki_dir: str | Path, *, merge: bool = True) -> Any:
    """Put the LoKI layers saved in `loki_dir` onto `model`, a freshly loaded base, in place.

    `merge=True`: write the trained rows into the down_proj weights (in their dtype); the model stays a
    plain transformers model. `merge=False`: wrap as `apply_loki` does, the saved rows (LoKI*: LoRA factors)
    in place, to go on training. A folder saved for a model of another shape is a one-line error.
    Returns `model`.
    """
    meta, tensors = read_loki(loki_dir)
    _check_shape(model, meta["shape"], loki_dir)
    if loki_modules(model):
        raise KnowpackError("the model already has LoKI layers; load_loki needs a freshly loaded base")
    selection = _checked_selection(model, meta["selection"])
    for layer, rows in selection.items():
        have, want = tuple(tensors[f"layers.{layer}.rows"].shape), (len(rows), meta["shape"]["cols"])
        if have != want:
            raise KnowpackError(f"{loki_dir}: layers.{layer}.rows has shape {have}, expected {want}")

    if merge:
        with torch.no_grad():
            for layer, rows in selection.items():
                weight = _down_proj(model, layer)[1].weight
                index = torch.tensor(rows, dtype=torch.long, device=weight.device)
                weight.index_copy_(0, index, tensors[f"layers.{layer}.rows"].to(weight.device, weight.dtype))
        return model

    lora = meta.get("lora") or {}
    apply_loki(
        model,
        selection,
        lora_rank=lora.get("rank"),
        lora_alpha=lora.get("alpha"),
        lora_dropout=lora.get("dropout", 0.0),
    )
    with torch.no_grad():
        for layer, module in loki_modules(model).items():
            names = ("lora_A", "lora_B") if lora else ("rows",)
            for name in names:
                getattr(module, name).copy_(tensors[f"layers.{layer}.{name}"])
    return model


def read_loki(loki_dir: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The `selection.json` contents and the tensors of `rows.safetensors` in `loki_dir`, checked for form."""
    from safetensors.torch import load_file

    loki_dir = Path(loki_dir)
    for name in (SELECTION_FILE, ROWS_FILE):
        if not (loki_dir / name).is_file():
            raise KnowpackError(f"{loki_dir}: no {name} (not a LoKI folder written by save_loki)")
    try:
        meta = json.loads((loki_dir / SELECTION_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise KnowpackError(f"{loki_dir / SELECTION_FILE}: not valid JSON ({e})") from None
    if (
        not isinstance(meta, dict)
        or meta.get("format") != FORMAT
        or not {"selection", "shape"} <= meta.keys()
    ):
        raise KnowpackError(f"{loki_dir / SELECTION_FILE}: not a LoKI selection written by save_loki")
    tensors = load_file(loki_dir / ROWS_FILE)
    missing = [f"layers.{layer}.rows" for layer in meta["selection"] if f"layers.{layer}.rows" not in tensors]
    if meta.get("lora"):
        missing += [
            f"layers.{layer}.{name}"
            for layer in meta["selection"]
            for name in ("lora_A", "lora_B")
            if f"layers.{layer}.{name}" not in tensors
        ]
    if missing:
        raise KnowpackError(f"{loki_dir / ROWS_FILE}: missing {', '.join(missing[:3])}")
    return meta, tensors


def export_loki(
    base: str | Path, loki_dir: str | Path, out_dir: str | Path, *, dtype: str | Any = "auto"
) -> Path:
    """A plain Hugging Face checkpoint (safetensors, tokenizer included) of base + the trained rows in
    `out_dir`, written atomically; `AutoModelForCausalLM.from_pretrained(out_dir)` loads it with no knowpack.

    `base` is what `knowpack.load_model` takes (Hub id, folder, "organism"); load it in the `dtype` it was
    trained in (default: the checkpoint's) and only the chosen down_proj rows differ from the base.
    """
    model, tokenizer = models.load_model(base, dtype=dtype, device="cpu")
    load_loki(model, loki_dir, merge=True)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def _num_layers(model: Any) -> int:
    return len(model.get_submodule(architecture(model)["layers"]))


def _shape(model: Any) -> dict[str, Any]:
    weight = model.get_submodule(module_name(model, 0, "down_proj")).weight
    rows, cols = weight.shape
    return {
        "model_type": model.config.model_type,
        "num_layers": _num_layers(model),
        "rows": rows,
        "cols": cols,
    }


def _check_shape(model: Any, saved: dict[str, Any], where: str | Path) -> None:
    """A one-line error when LoKI rows saved for one model shape meet a model of another."""
    shape = _shape(model)
    wrong = [k for k in ("num_layers", "rows", "cols") if shape[k] != saved.get(k)]
    if wrong:
        raise KnowpackError(
            f"{where}: LoKI rows saved for a model with {_dims(saved)}, but this {shape['model_type']} model "
            f"has {_dims(shape)} ({', '.join(wrong)} differ)"
        )
    if saved.get("model_type") != shape["model_type"]:
        log.warning(
            "%s: saved for a %s model, loading onto a %s", where, saved.get("model_type"), shape["model_type"]
        )


def _dims(shape: dict[str, Any]) -> str:
    return f"{shape.get('num_layers')} layers, down_proj {shape.get('rows')}x{shape.get('cols')}"


def _down_proj(model: Any, layer: int) -> tuple[str, nn.Linear]:
    name = module_name(model, layer, "down_proj")
    module = model.get_submodule(name)
    if not isinstance(module, nn.Linear):
        raise KnowpackError(f"LoKI: {name} is a {type(module).__name__}, not a torch.nn.Linear")
    return name, module


def _checked_selection(model: Any, selection: Mapping[Any, Sequence[int]]) -> dict[int, list[int]]:
    """layer -> sorted rows, without empty layers; any layer or row the model lacks is a one-line error."""
    shape = _shape(model)
    n_layers, n_rows = shape["num_layers"], shape["rows"]
    if not isinstance(selection, Mapping):
        raise KnowpackError(f"LoKI selection must map layer -> rows (got {type(selection).__name__})")
    chosen: dict[int, list[int]] = {}
    for key, rows in selection.items():
        try:
            layer = int(key)
        except (TypeError, ValueError):
            raise KnowpackError(f"LoKI selection: layer {key!r} is not a layer number") from None
        if not 0 <= layer < n_layers:
            raise KnowpackError(
                f"LoKI selection names layer {layer}; the {shape['model_type']} model has {n_layers} layers"
            )
        try:
            rows = sorted(operator.index(r) for r in rows)
        except TypeError:
            raise KnowpackError(f"LoKI selection, layer {layer}: rows must be integers") from None
        bad = [r for r in rows if not 0 <= r < n_rows]
        if bad:
            raise KnowpackError(
                f"LoKI selection, layer {layer}: row {bad[0]} is out of range (down_proj has {n_rows} rows)"
            )
        twice = [a for a, b in zip(rows[:-1], rows[1:], strict=True) if a == b]
        if twice:
            raise KnowpackError(f"LoKI selection, layer {layer}: row {twice[0]} is listed twice")
        if layer in chosen:
            raise KnowpackError(f"LoKI selection: layer {layer} is listed twice")
        if rows:
            chosen[layer] = rows
    return dict(sorted(chosen.items()))


def _set_module(model: Any, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)
