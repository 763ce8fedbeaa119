"""Loading models, and where things sit inside them.

`load_model(name)` returns `(model, tokenizer)` ready for batched generation (left padding, a pad token).
Weights are read from safetensors only: a pickle (`.bin`) checkpoint can run code when loaded, so it is
refused. A local safetensors file is checked before loading (its header read and matched against the file's
size), so a truncated or corrupt file is one line naming it, not a traceback from deep inside transformers.
`trust_remote_code=True` logs a warning before any of the model's own code can run.

`ARCHITECTURES` is what knowpack knows about each model family, as data: where the decoder layers are and the
names of the MLP projections inside a layer (LoKI edits `down_proj` rows; LoRA presets target the MLP).
Supporting a new family is a new row. Paths are relative: `layers` from the model, the others from one layer.

    model, tok = load_model("organism")
    model, tok = load_model("smollm2-135m")   # SmolLM2-135M-Instruct, converted once into the cache
    spec = architecture(model)                 # ARCHITECTURES["llama"]
    name = module_name(model, 3, "down_proj")  # "model.layers.3.mlp.down_proj"
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from knowpack.devices import process_device
from knowpack.errors import ModelError
from knowpack.output import quiet_loading
from knowpack.paths import organism_dir
from knowpack.real.smollm2 import smollm2_dir

logger = logging.getLogger(__name__)

_GATED_MLP = {
    "layers": "model.layers",
    "attn": "self_attn",
    "mlp": "mlp",
    "gate_proj": "mlp.gate_proj",
    "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj",
    "mlp_targets": ["gate_proj", "up_proj", "down_proj"],
    "attn_targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "fused_gate_up": False,
}

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": dict(_GATED_MLP),
    "qwen2": dict(_GATED_MLP),
    "qwen3": dict(_GATED_MLP),
    "mistral": dict(_GATED_MLP),
    "gemma": dict(_GATED_MLP),
    "gemma2": dict(_GATED_MLP),
    # Phi-3 fuses gate and up into one projection (output 2 * intermediate) and q, k, v into one.
    "phi3": {
        **_GATED_MLP,
        "gate_proj": None,
        "up_proj": "mlp.gate_up_proj",
        "mlp_targets": ["gate_up_proj", "down_proj"],
        "attn_targets": ["qkv_proj", "o_proj"],
        "fused_gate_up": True,
    },
}
"""Model family (`config.model_type`) -> module paths: `layers` from the model; the rest within one layer."""


def model_source(name: str | os.PathLike, *, convert: bool = True) -> str | os.PathLike:
    """What a model name points at: the organism's folder for `organism`, the converted SmolLM2 checkpoint for
    `smollm2-135m` (made on first use unless `convert` is False), else `name` itself (Hub id or folder)."""
    if str(name) == "organism":
        return organism_dir()
    if str(name) == "smollm2-135m":
        return smollm2_dir(convert=convert)
    return name


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
_PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")


def load_model(
    name: str | os.PathLike,
    *,
    dtype: str | Any = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a Hub id, a local folder, `"organism"` (the bundled model) or
    `"smollm2-135m"` (SmolLM2-135M-Instruct, fetched and converted on first use: `knowpack.real.smollm2`).

    `dtype`: "auto" (the checkpoint's), "float32", "bfloat16", "float16" or a torch dtype.
    `device`: "cpu", "cuda", "cuda:1", ... or "auto" (accelerate's device map over all GPUs); None picks CUDA
    when available, else CPU. Under a launcher with several processes "cuda" is this process's GPU
    (`cuda:LOCAL_RANK`, `knowpack.devices.process_device`). The model is returned in eval mode. The tokenizer
    pads on the left (for batched generation) and, when it has no pad token, pads with its eos token.
    """
    import torch  # lazy: importing knowpack must stay cheap
    import transformers

    source = model_source(name)
    source = _check_local(source) if _is_local(source) else str(source)
    dtype = _dtype(dtype, torch)
    if device != "auto":
        device = process_device(device)

    # transformers renamed `torch_dtype` to `dtype` in 4.56 and dropped the old name later.
    dtype_key = "dtype" if _version(transformers.__version__) >= (4, 56) else "torch_dtype"
    kwargs: dict[str, Any] = {
        dtype_key: dtype,
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
    }
    if device == "auto":
        kwargs["device_map"] = "auto"
    if trust_remote_code:
        warn_remote_code(name)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        with quiet_loading():
            model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:  # missing files, unknown repo, no safetensors, unsupported config
        raise ModelError(f"cannot load model {str(name)!r}: {_first_line(e)}") from e
    except Exception as e:  # safetensors' own error (a corrupt file the header check let through)
        if type(e).__name__ != "SafetensorError":
            raise
        raise ModelError(f"cannot load model {str(name)!r}: corrupt safetensors ({_first_line(e)})") from e
    if device != "auto":
        model.to(device)
    model.eval()

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"tokenizer of {str(name)!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def architecture(model: Any) -> dict[str, Any]:
    """The `ARCHITECTURES` row for a model (or its config), looked up by `config.model_type`."""
    config = getattr(model, "config", model)
    family = getattr(config, "model_type", None)
    if family not in ARCHITECTURES:
        raise ModelError(
            f"unsupported model family {family!r} (supported: {', '.join(sorted(ARCHITECTURES))}); "
            "add a row to knowpack.models.ARCHITECTURES"
        )
    return ARCHITECTURES[family]


def module_name(model: Any, layer: int, key: str) -> str:
    """Full module name of `key` (e.g. "down_proj") in decoder layer `layer`."""
    spec = architecture(model)
    path = spec.get(key)
    if key == "layers" or not isinstance(path, str):
        raise ModelError(f"{model.config.model_type} has no module {key!r} in ARCHITECTURES")
    return f"{spec['layers']}.{layer}.{path}"


def cache_keyword(model: Any) -> str:
    """The forward keyword (and output field) of a transformers model's KV cache: `cache` where transformers
    renamed it (5.x; `past_key_values` is deprecated there and removed in 5.40), else `past_key_values`."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model's own
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


_WHOLE_FILE_LIMIT = 256 * 2**20  # files up to this size are hashed whole; larger ones by size, mtime and ends
_fingerprints: dict[tuple, str] = {}


def model_fingerprint(name: str | os.PathLike) -> str | None:
    """A short hash of what a model name points at, so that work keyed by it (a sweep's shared base probe)
    is not reused when the model behind the name changes: a new bundled organism, a retrained local folder.

    `organism` and local folders: every top-level file (weights, config, tokenizer), hashed whole up to 256
    MiB each (the organism: ~20 MiB, exact), larger files by size, modification time and their first and last
    MiB. `smollm2-135m`: its converted folder (converted first if missing). A Hub id: the commit of its
    snapshot in the local Hugging Face cache (no network). None when it cannot be told (a Hub id not in the
    cache)."""
    import hashlib

    source = model_source(name)
    if not _is_local(source):
        return _hub_commit(str(source))
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return None
    files = [(f, f.stat()) for f in sorted(folder.iterdir()) if f.is_file()]
    key = (str(folder.resolve()), tuple((f.name, st.st_size, st.st_mtime_ns) for f, st in files))
    if key not in _fingerprints:
        digest = hashlib.sha256()
        for f, st in files:
            size = st.st_size
            digest.update(f"{f.name}\0{size}\0".encode())
            with open(f, "rb") as handle:
                if size <= _WHOLE_FILE_LIMIT:
                    for block in iter(lambda: handle.read(2**20), b""):
                        digest.update(block)
                else:
                    digest.update(str(st.st_mtime_ns).encode() + handle.read(2**20))
                    handle.seek(size - 2**20)
                    digest.update(handle.read(2**20))
        _fingerprints[key] = digest.hexdigest()[:16]
    return _fingerprints[key]


def _hub_commit(repo_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id (huggingface_hub's HFValidationError): nothing to tell
        return None
    if not isinstance(cached, str):  # None (not cached) or the "known not to exist" marker
        return None
    parts = Path(cached).parts
    return f"hub:{parts[parts.index('snapshots') + 1]}" if "snapshots" in parts else None


def model_name(model: Any) -> str | None:
    """The name or folder a transformers model was loaded from (None when it was built from a config)."""
    return getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None) or None


def _is_local(source: str | os.PathLike | Path) -> bool:
    return isinstance(source, Path) or os.path.exists(source) or str(source).startswith(("/", ".", "~"))


def _check_local(source: str | os.PathLike) -> str:
    path = Path(source).expanduser()
    if not path.is_dir():
        raise ModelError(f"model folder not found: {path}")
    if not any((path / f).exists() for f in _WEIGHT_FILES) and not list(path.glob("*.safetensors")):
        pickles = [f for f in _PICKLE_FILES if (path / f).exists()]
        if pickles:
            raise ModelError(
                f"{path} has only pickle weights ({pickles[0]}); knowpack loads safetensors only. If you "
                "trust the file, convert it: from_pretrained(..., use_safetensors=False), save_pretrained()"
            )
        raise ModelError(f"no safetensors weights in {path} (expected model.safetensors or its index)")
    for file in sorted(path.glob("*.safetensors")):
        check_safetensors(file)
    return str(path)


def check_model(name: str | os.PathLike) -> None:
    """What can be told of a model without loading it, as one-line errors: a local folder (or the organism)
    must exist and hold valid safetensors (`check_safetensors`). A Hub id is left to `load_model`."""
    source = organism_dir() if str(name) == "organism" else name
    if _is_local(source):
        _check_local(source)


def warn_remote_code(name: str | os.PathLike) -> None:
    """The warning shown before a model's own Python code is allowed to run (`trust_remote_code`)."""
    logger.warning(
        "trust_remote_code is on: %s may run its own Python code from its files; only use it for models "
        "you trust",
        name,
    )


_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def check_safetensors(file: str | os.PathLike) -> None:
    """A one-line `ModelError` naming `file` unless it starts with a safetensors header whose tensors fit in
    the file: catches a truncated download, a Git LFS pointer or random bytes by reading the header only."""
    file = Path(file)
    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if not 2 <= n <= min(size - 8, _MAX_HEADER):
                raise ValueError("no safetensors header")
            header = json.loads(f.read(n).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("no safetensors header")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError) as e:  # JSON and UTF-8 errors are ValueErrors
        reason = str(e) if str(e) == "no safetensors header" else "its header is not valid"
        raise ModelError(
            f"{file}: not a valid safetensors file ({reason}); save or download it again"
        ) from None
    if 8 + n + end > size:
        raise ModelError(
            f"{file}: truncated safetensors file ({size} bytes, its header describes {8 + n + end}); "
            "save or download it again"
        )


def _dtype(dtype: str | Any, torch: Any) -> Any:
    if not isinstance(dtype, str) or dtype == "auto":
        return dtype
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ModelError(f"unknown dtype {dtype!r}; expected auto, {', '.join(names)}")
    return names[dtype]


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
