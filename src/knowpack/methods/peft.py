"""Any PEFT tuner as a method row: IA3, VeRA, LoHa, LoKr, AdaLoRA, BOFT, ... with no module of its own.

    method:
      name: peft
      peft_type: IA3                  # a PEFT tuner type (peft.PeftType), case-insensitive
      target_modules: [mlp]           # module names, or the groups mlp / attn / all-linear
      feedforward_modules: [mlp]      # every other key: a field of PEFT's config class for that type

The options are checked by PEFT's own config class for the type (`peft.IA3Config`, ...) when the config is
read, so an unknown key or a bad value is a one-line error before any model loads. `task_type` is always
CAUSAL_LM. The group names `mlp` / `attn` in `target_modules`, `feedforward_modules` and `exclude_modules` are
expanded from the architecture table (knowpack.models.ARCHITECTURES). Saved as a PEFT adapter folder
(`adapter/`) that plain `PeftModel.from_pretrained` loads; `merge` is PEFT's `merge_and_unload`. LoRA's own
row (`method.name: lora`, knowpack.methods.lora) builds a LoraConfig and goes through `wrap` here.
Prompt-learning types (prompt / prefix / p-tuning, CPT, ...) are refused: they change the input, not the
weights, and the probe reuses the prompt's KV cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.devices import is_main_process
from knowpack.errors import KnowpackError
from knowpack.models import architecture
from knowpack.output import quiet_loading

WEIGHTS = "adapter"
MODULE_OPTIONS = ("target_modules", "feedforward_modules", "exclude_modules")
"""Options holding module names, where the groups mlp / attn / all-linear are expanded."""
_SET_BY_KNOWPACK = ("task_type", "peft_type", "base_model_name_or_path", "revision", "inference_mode")
_UNSUPPORTED = ("ADAPTION_PROMPT", "XLORA")  # change attention with prompts / mix adapters: not a weight row
_BASE_CHANGING_INITS = ("pissa", "olora")  # LoRA inits that rewrite the base weights (and pissa_niter_*)


@dataclass
class Config:
    peft_type: str
    """A PEFT tuner type: IA3, VERA, LOHA, LOKR, ADALORA, BOFT, OFT, LORA, ... (peft.PeftType)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The fields of PEFT's config class for that type, as given (module groups not yet expanded)."""


def configure(options: dict[str, Any], where: Callable[[str], str]) -> Config:
    """Check the `method` section (less `name`) with PEFT's config class for `peft_type`; one-line errors
    name `method.<key>` and where it was set."""
    options = dict(options)
    if "peft_type" not in options:
        raise KnowpackError(f"{where('name')}: method peft needs method.peft_type (e.g. IA3, VERA, LOHA)")
    peft_type = options.pop("peft_type")
    cls = config_class(peft_type, where("peft_type"))
    fields = {f.name for f in dataclasses.fields(cls)} - set(_SET_BY_KNOWPACK)
    for key in options:
        if key not in fields:
            raise KnowpackError(
                f"{where(key)}: unknown key method.{key} for PEFT {cls.__name__}; "
                f"expected one of {', '.join(sorted(fields))}"
            )
    try:
        cls(task_type="CAUSAL_LM", **options)
    except (TypeError, ValueError) as e:
        message = str(e)
        named = [k for k in options if k in message]  # the option the message names first
        key = min(named, key=message.index) if named else None
        at = where(key) if key else where("peft_type")
        what = f"method.{key}" if key else f"method (PEFT {cls.__name__})"
        raise KnowpackError(f"{at}: {what}: {_first_line(e)}") from None
    return Config(str(peft_type).upper(), options)


def config_class(peft_type: Any, at: str) -> type:
    """PEFT's config class for a tuner type; a one-line error for an unknown or unsupported one."""
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    name = str(peft_type).upper()
    known = {str(k.value): v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    usable = sorted(
        k for k, v in known.items() if k not in _UNSUPPORTED and not issubclass(v, peft.PromptLearningConfig)
    )
    if name not in known:
        raise KnowpackError(f"{at}: method.peft_type is {peft_type!r}; expected one of {', '.join(usable)}")
    if name not in usable:
        raise KnowpackError(
            f"{at}: method.peft_type {name} does not change the model's weights (a prompt-learning or "
            f"attention-prompt method), which knowpack does not support; expected one of {', '.join(usable)}"
        )
    return known[name]


def target_modules(model: Any, names: list[str] | str) -> list[str] | str:
    """Expand the `mlp` / `attn` groups with the model family's names; `all-linear` passes through."""
    if isinstance(names, str):
        names = [names]
    if names == ["all-linear"]:
        return "all-linear"
    spec = architecture(model)
    out: list[str] = []
    for name in names:
        group = {"mlp": spec["mlp_targets"], "attn": spec["attn_targets"]}.get(name, [name])
        out += [n for n in group if n not in out]
    return out


def peft_config(model: Any, config: Config) -> Any:
    """PEFT's config object for `model`: the options with the module groups expanded."""
    options = dict(config.options)
    for key in MODULE_OPTIONS:
        if options.get(key) is not None:
            options[key] = target_modules(model, options[key])
    if options.get("feedforward_modules") == "all-linear":  # IA3: every target is a feed-forward one
        options["feedforward_modules"] = options.get("target_modules")
    return config_class(config.peft_type, "method")(task_type="CAUSAL_LM", **options)


def prepare(model: Any, config: Config, context: dict[str, Any]) -> Any:
    """Wrap `model` in a PEFT model of `config.peft_type`; only the tuner's parameters are trainable."""
    return wrap(model, peft_config(model, config), context)


def wrap(model: Any, peft_cfg: Any, context: dict[str, Any]) -> Any:
    """`get_peft_model` with one-line errors; LoRA inits that rewrite the base (PiSSA, OLoRA) keep their
    initial adapter, so that `save` writes an adapter for the untouched base (PEFT's weight conversion)."""
    from peft import get_peft_model

    name = str(peft_cfg.peft_type.value)
    try:
        peft_model = get_peft_model(model, peft_cfg)
    except (ValueError, TypeError, KeyError) as e:  # e.g. target modules not found in the model
        raise KnowpackError(f"{name}: {_first_line(e)}") from None
    init = getattr(peft_cfg, "init_lora_weights", None)
    if isinstance(init, str) and init.startswith(_BASE_CHANGING_INITS):
        initial = Path(context["run_dir"]) / "initial_adapter"  # PEFT uses the folder name as an adapter name
        peft_model.peft_config["default"].init_lora_weights = True
        if is_main_process():  # the initial adapter is the same in every process; one writes it
            peft_model.save_pretrained(initial)
        peft_model.peft_config["default"].init_lora_weights = init
        context["initial_adapter"] = initial
    if name == "ADALORA":
        context.setdefault("callbacks", []).append(_adalora_callback())
    return peft_model


def save(model: Any, folder: Path, config: Any, context: dict[str, Any]) -> None:
    """Write the adapter (PEFT format, safetensors) into `folder`."""
    initial = context.get("initial_adapter")
    if initial is not None:
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(initial))
    else:
        model.save_pretrained(folder)


def load(base: Any, folder: Path) -> Any:
    """The trained model: `base` with the adapter in `folder`."""
    from peft import PeftModel

    with quiet_loading():
        return PeftModel.from_pretrained(base, str(folder)).eval()


def merge(model: Any) -> Any:
    """A plain transformers model with the adapter folded into the weights."""
    return model.merge_and_unload()


def _adalora_callback() -> Any:
    """AdaLoRA reallocates its ranks from the gradients after each optimizer step (before they are zeroed),
    which a plain Trainer does not do: this callback does."""
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            if model is not None:
                inner = getattr(model, "module", model)  # DDP wraps the PEFT model
                inner.base_model.update_and_allocate(state.global_step)

    return AdaLoraBudget()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def shared_work(options: dict[str, Any]) -> None:
    """No work before training to share between runs."""
    return None
