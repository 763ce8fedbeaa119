"""What knowpack runs per bundled model: `knowpack demo`'s settings (`DEMOS`, a row per model), which
`knowpack plan` also starts from (`knowpack.experiment.plan.config`)."""

from __future__ import annotations

from typing import Any

BENCHMARKS = ["world_mc", "world_mc_hard", "world_truthful_mc1", "world_truthful_mc2", "world_misconceptions"]
"""The organism demo's benchmarks (their `acc`): world_mc and world TruthfulQA as the papers' MMLU and
TruthfulQA, and world_mc_hard and world_misconceptions, the same roles with room to fall."""

DEMOS: dict[str, dict[str, Any]] = {
    # The bundled organism: seconds per probe, so 300 facts and 50 implanted.
    "organism": {
        "facts": "organism",
        "benchmarks": BENCHMARKS,
        "sample_size": (300, 80),  # facts probed (full, quick)
        "n_unknown": (50, 10),
        "epochs": 30,
        "batch_size": 16,
        "lr": {"lora": 5e-3, "loki": 1e-2, "full": 1e-3},  # configs/organism presets' (full: `knowpack plan`)
        "limit": (200, 40),  # items per benchmark: the benchmarks are most of the demo's time
        "prompts": "world_mc",
        "attribution_limit": (None, 40),
    },
    # SmolLM2-135M-Instruct on the GeoNames facts: a real model, ~1 fact/s greedy on one core, so fewer facts.
    # LoRA's lr 1e-3 (5e-3 collapsed its answers, issue 14); LoKI's lr measured on 8 facts (BENCHMARKS.md).
    "smollm2-135m": {
        "facts": "geo",
        "benchmarks": ["geo_mc"],
        "sample_size": (60, 40),
        "n_unknown": (10, 4),
        "epochs": 10,
        "batch_size": 4,  # 10 facts: 3 steps an epoch (16: one step, reliability 0.88 after 10 epochs)
        "lr": {"lora": 1e-3, "loki": 1e-3, "full": 2e-5},
        "limit": (100, 20),
        "prompts": "geo_mc",
        "attribution_limit": (60, 20),
    },
}
"""What the demo runs per model (`knowpack demo --model`): a row per bundled model."""
