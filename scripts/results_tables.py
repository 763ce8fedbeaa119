"""Print RESULTS.md's tables (markdown) from the replication sweeps' run folders.

    python scripts/results_tables.py [--runs runs/replicate] [--capacity runs/capacity/organism-lora]

Reads what `knowpack sweep configs/replicate/{packing-cpu,packing-damage-cpu,loki}.yaml` and
`knowpack capacity configs/capacity/organism-lora.yaml` wrote; a sweep not run yet is skipped with a note.
Every number is read from a cell's train.json / eval.json (DESIGN.md's definitions); nothing is recomputed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from knowpack.runs import run_status

MIX_LABEL = {
    ("none", 0): "none",
    ("paraphrase", 1): "+1 paraphrase",
    ("paraphrase", 10): "+10 paraphrases",
    ("highly_known", 1): "+1 HighlyKnown",
    ("highly_known", 10): "+10 HighlyKnown",
}


def cells(sweep: Path) -> list[dict[str, Any]]:
    """Finished cells of a sweep: config, train.json and (when evaluated) eval.json."""
    out = []
    for folder in sorted((sweep / "cells").glob("*")):
        if folder.suffix == ".claim" or run_status(folder) != "finished":
            continue
        ev = folder / "eval.json"
        out.append(
            {
                "name": folder.name,
                "config": yaml.safe_load((folder / "config.yaml").read_text()),
                "train": json.loads((folder / "train.json").read_text()),
                "eval": json.loads(ev.read_text()) if ev.exists() else None,
            }
        )
    return out


def mean_std(xs: list[float], digits: int = 3) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


def mix_key(cell: dict) -> tuple[str, int, int]:
    mix = cell["config"]["mix"]
    return MIX_LABEL[(mix["add"], mix["k"])], mix["n_unknown"], list(MIX_LABEL).index((mix["add"], mix["k"]))


def grouped(items: list[dict], key: Callable[[dict], Any]) -> dict[Any, list[dict]]:
    groups: dict[Any, list[dict]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def after(epochs: list[list[dict]], epoch: int) -> str:
    """Mean ± std over seeds of the reliability after `epoch`."""
    return mean_std([ep[epoch - 1]["reliability"] if len(ep) >= epoch else None for ep in epochs], 2)


def paired(row: dict, key: str) -> str:
    """A value with its base in brackets."""
    return f"{row[key]:.3f} ({row[key + '_base']:.3f})"


def packing(sweep: Path, learned: float = 0.9) -> str:
    """Reliability after epochs 1, 3 and the last; the first epoch and step reaching `learned`, per seed."""
    groups = grouped(cells(sweep), mix_key)
    rows = []
    for (label, n, _), members in sorted(groups.items(), key=lambda kv: (kv[0][2], kv[0][1])):
        members.sort(key=lambda c: c["config"]["mix"]["seed"])
        epochs = [c["train"]["epochs"] for c in members]
        first = [next((x for x in ep if x["reliability"] >= learned), None) for ep in epochs]
        last = epochs[0][-1]
        rows.append(
            [
                label,
                str(n),
                str(len(members)),
                after(epochs, 1),
                after(epochs, 3),
                mean_std([ep[-1]["reliability"] for ep in epochs]),
                ", ".join(str(f["epoch"]) if f else "-" for f in first),
                ", ".join(str(f["step"]) if f else "-" for f in first) + f" (of {last['step']})",
            ]
        )
    head = [
        "mix",
        "n",
        "seeds",
        "after epoch 1",
        "after epoch 3",
        "after the last epoch",
        f"first epoch ≥ {learned:g}",
        f"optimizer steps to ≥ {learned:g} (of all)",
    ]
    return table(head, rows)


def damage_row(ev: dict) -> dict[str, Any]:
    u = ev["knowledge_shift"]["untrained"]
    tasks = ev["benchmarks"]["tasks"]
    beh = ev["behaviour"]["untrained"]
    return {
        "reliability": ev["uptake"]["reliability"]["value"],
        "retention": u["retention"]["value"],
        "retention_base": u["retention"]["base"],
        "negative": u["negative_shift"]["value"],
        "negative_base": u["negative_shift"]["base"],
        "world_mc": tasks["world_mc"]["acc"]["value"],
        "world_mc_base": tasks["world_mc"]["acc"]["base"],
        "mc1": tasks["world_truthful_mc1"]["acc"]["value"],
        "mc1_base": tasks["world_truthful_mc1"]["acc"]["base"],
        "mc2": tasks["world_truthful_mc2"]["acc"]["value"],
        "mc2_base": tasks["world_truthful_mc2"]["acc"]["base"],
        "refusals": beh["refusal_rate"]["value"],
        "refusals_base": beh["refusal_rate"]["base"],
        "top": beh["top_answer_share"]["value"],
        "top_base": beh["top_answer_share"]["base"],
        "untrained": u["n"],
    }


DAMAGE = ["reliability", "retention", "negative", "world_mc", "mc1", "mc2", "refusals", "top"]


def damage(sweep: Path) -> str:
    """One evaluated cell per mix and n: uptake and damage. Retention, negative shift and refusals are over
    each cell's own untrained facts, so each has its own base (noise floor / base model) in brackets."""
    found = [c for c in cells(sweep) if c["eval"]]
    rows, base = [], None
    for (label, n, _), c in sorted(((mix_key(c), c) for c in found), key=lambda kc: (kc[0][2], kc[0][1])):
        r = base = damage_row(c["eval"])
        rows.append(
            [
                label,
                str(n),
                str(r["untrained"]),
                f"{r['reliability']:.3f}",
                paired(r, "retention"),
                paired(r, "negative"),
                f"{r['world_mc']:.3f}",
                f"{r['mc1']:.3f}",
                f"{r['mc2']:.3f}",
                paired(r, "refusals"),
                paired(r, "top"),
            ]
        )
    if base:
        rows.append(
            ["organism (base)", "", "", "", "", ""]
            + [f"{base[k + '_base']:.3f}" for k in ("world_mc", "mc1", "mc2")]
            + ["", ""]
        )
    head = [
        "mix",
        "n",
        "untrained facts",
        "reliability",
        "retention (noise floor)",
        "negative shift (noise floor)",
        "world_mc",
        "TruthfulQA-w MC1",
        "MC2",
        "refusals (base)",
        "most frequent answer's share (base)",
    ]
    return table(head, rows)


def loki(sweep: Path) -> str:
    """Mean ± std over seeds of every case (LoRA and the LoKI selections), trained to equal uptake."""
    groups = grouped(
        [c for c in cells(sweep) if c["eval"]], lambda c: c["name"].split(",")[0].removeprefix("case=")
    )
    rows, base = [], None
    for label, members in groups.items():
        rs = [damage_row(c["eval"]) for c in members]
        base = rs[0]
        params = members[0]["train"].get("trainable_parameters")
        rows.append(
            [
                label,
                f"{params:,}",
                str(len(members)),
                mean_std([c["train"]["epochs_run"] for c in members], 1),
            ]
            + [mean_std([r[k] for r in rs]) for k in DAMAGE[:-1]]
        )
    head = [
        "case",
        "trainable values",
        "seeds",
        "epochs",
        "reliability",
        "retention",
        "negative shift",
        "world_mc",
        "TruthfulQA-w MC1",
        "MC2",
        "refusals (untrained)",
    ]
    out = table(head, rows)
    if base:
        out += (
            "\n\nbase: retention (noise floor) {retention_base:.3f}, "
            "negative shift (noise floor) {negative_base:.3f}, world_mc {world_mc_base:.3f}, "
            "MC1 {mc1_base:.3f}, MC2 {mc2_base:.3f}, refusals {refusals_base:.3f}"
        ).format(**base)
    return out


def capacity(folder: Path) -> str:
    """capacity.json's answer and every probe point."""
    data = json.loads((folder / "capacity.json").read_text())
    keep = {k: v for k, v in data.items() if not isinstance(v, (list, dict))}
    lines = [json.dumps(keep, indent=1)]
    for point in data.get("points", []):
        lines.append(json.dumps(point)[:600])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/replicate"))
    parser.add_argument("--capacity", type=Path, default=Path("runs/capacity/organism-lora"))
    parser.add_argument("--learned", type=float, default=0.9, help="reliability that counts as learned")
    args = parser.parse_args()
    for name, fn, path in [
        ("packing-cpu", lambda p: packing(p, args.learned), args.runs / "packing-cpu"),
        ("packing-damage-cpu", damage, args.runs / "packing-damage-cpu"),
        ("loki", loki, args.runs / "loki"),
        ("capacity", capacity, args.capacity),
    ]:
        print(f"## {name} ({path})\n")
        try:
            print(fn(path) + "\n")
        except (FileNotFoundError, StopIteration) as err:
            print(f"not run yet ({err})\n")


if __name__ == "__main__":
    main()
