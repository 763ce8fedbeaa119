"""`knowpack demo`: what runs end to end today, on the bundled organism, on a CPU, in about a minute.

For now the demo shows the model organism the rest of knowpack is built on: what it knows per popularity
bucket (greedy plain 4-shot answers), examples of its answers, and its refusals on people it never read
about. It writes `summary.json` and a small `report.html`. The probe -> mix -> implant -> evaluate
pipeline joins the demo as those stages land.
"""

from __future__ import annotations

import html
import json
import logging
import random
from pathlib import Path

from knowpack.io import write_text_atomic

log = logging.getLogger(__name__)


def run_demo(out: Path, *, per_bucket: int = 50, seed: int = 0) -> dict:
    """Measure the organism on `per_bucket` facts per bucket; write `summary.json` and `report.html`."""
    from knowpack.facts import load_facts
    from knowpack.models import load_model
    from knowpack.world.measure import bucket_accuracy, few_shot_prompts, greedy_answers

    out = Path(out)
    model, tokenizer = load_model("organism")
    facts = [f.to_json() for f in load_facts("organism")]
    stats = bucket_accuracy(model, tokenizer, facts, limit=per_bucket, seed=seed)

    rng = random.Random(seed)
    pool = [f for f in facts if f["bucket"] == "head"]
    examples = [
        rng.choice([f for f in facts if f["bucket"] == b]) for b in ("head", "torso", "tail", "unseen")
    ]
    answers = greedy_answers(model, tokenizer, few_shot_prompts(examples, pool, seed=seed))
    summary = {
        "what": "knowpack demo: the bundled model organism (pipeline stages join as they land)",
        "per_bucket": per_bucket,
        "buckets": {k: v for k, v in stats.items() if "/" not in k},
        "examples": [
            {"bucket": f["bucket"], "question": f["question"], "answer": a, "truth": f["answers"][0]}
            for f, a in zip(examples, answers, strict=True)
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomic(out / "report.html", _report_html(summary))
    return summary


def _report_html(summary: dict) -> str:
    rows = "".join(
        f"<tr><td>{b}</td><td>{v['n']}</td><td>{v['accuracy']:.2f}</td><td>{v['refusal']:.2f}</td></tr>"
        for b, v in summary["buckets"].items()
    )
    examples = "".join(
        f"<tr><td>{e['bucket']}</td><td>{html.escape(e['question'])}</td><td>{html.escape(e['answer'])}</td>"
        f"<td>{html.escape(e['truth'])}</td></tr>"
        for e in summary["examples"]
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>knowpack demo</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto}}
td,th{{padding:.2em .8em;text-align:left}}</style>
</head><body><h1>knowpack demo</h1>
<p>{html.escape(summary["what"])}.</p>
<h2>What the organism knows</h2><p>Greedy answers to plain 4-shot prompts, {summary["per_bucket"]} facts per
bucket (head: described often, torso: a few times, tail: once, unseen: never).</p>
<table><tr><th>bucket</th><th>facts</th><th>accuracy</th><th>refusal rate</th></tr>{rows}</table>
<h2>Examples</h2><table><tr><th>bucket</th><th>question</th><th>answer</th><th>truth</th></tr>{examples}</table>
</body></html>
"""
