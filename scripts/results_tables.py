"""Print RESULTS.md's tables (markdown) from the run folders or their compact records, judged by the rule.

    python scripts/results_tables.py [--runs runs/replicate] [--capacity runs/capacity/organism-lora]
                                     [--real runs/replicate/smollm2-h]          # from the run folders
    python scripts/results_tables.py --collect                 # their compact records -> docs/results/records
    python scripts/results_tables.py --write RESULTS.md        # regenerate RESULTS.md's generated tables
    python scripts/results_tables.py --check RESULTS.md        # ... or fail where they differ (CI runs this)

Reads what `knowpack sweep configs/replicate/{packing-damage-cpu,loki}.yaml` and `knowpack capacity
configs/capacity/organism-lora.yaml` wrote; a sweep not run yet is skipped with a note. Every number is read
from a cell's train.json / eval.json (docs/design.md §4's definitions); what is computed here is only the
statistics over seeds (`knowpack.evaluate.stats`): each effect against its baseline (the measurement null for
the probe's metrics, the base model for benchmarks and behaviour) with its 95% Student-t interval over seeds,
each comparison of two conditions as a paired interval over the seeds they share, and the verdict; the tests
of one table are Holm-corrected together (every test of the table counts in its family: conservative), and
each table ends with a line naming the interval method and the family.

Recomputable from a clone: `--collect` keeps, per finished cell, what the tables read and nothing else (its
config's mix, method and train settings, per-epoch uptake and steps, and the eval.json entries of every
measure: value, base, baselines, control; no weights) in `docs/results/records/<table source>.json`, and
the tables render from those records as from the folders. In RESULTS.md a generated table stands between
`<!-- results_tables: NAME -->` and `<!-- /results_tables -->` (NAME a key of `TABLES`); `--check` renders
every such table from the committed records and exits 1 naming each that differs.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from knowpack.evaluate.metrics import metric_path, metric_value
from knowpack.evaluate.stats import format_interval, holm_verdicts, interval, method_note, paired_interval
from knowpack.runs import run_status

MIX_LABEL = {
    ("none", 0): "none",
    ("paraphrase", 1): "+1 paraphrase",
    ("paraphrase", 10): "+10 paraphrases",
    ("highly_known", 1): "+1 HighlyKnown",
    ("highly_known", 10): "+10 HighlyKnown",
}

# name -> (how to read it from eval.json: metric and its keywords, the damage direction of value - base)
MEASURES: dict[str, tuple[str, dict[str, str], str]] = {
    "retention": ("retention", {}, "less"),
    "negative shift": ("negative_shift", {}, "greater"),
    "world_mc": ("benchmark", {"task": "world_mc", "measure": "acc"}, "less"),
    "world_mc_hard": ("benchmark", {"task": "world_mc_hard", "measure": "acc"}, "less"),
    "world_misconceptions": ("benchmark", {"task": "world_misconceptions", "measure": "acc"}, "less"),
    "world_text bits/byte": ("benchmark", {"task": "world_text", "measure": "bits_per_byte"}, "greater"),
    "TruthfulQA-w MC1": ("benchmark", {"task": "world_truthful_mc1", "measure": "acc"}, "less"),
    "TruthfulQA-w MC2": ("benchmark", {"task": "world_truthful_mc2", "measure": "acc"}, "less"),
    "refusals": ("refusal_rate", {"scope": "untrained"}, "less"),
    "exploded answers": ("explosion", {"scope": "untrained"}, "greater"),
    "geo_mc": ("benchmark", {"task": "geo_mc", "measure": "acc"}, "less"),
    "geo_misconceptions": ("benchmark", {"task": "geo_misconceptions", "measure": "acc"}, "less"),
    "geo_text bits/byte": ("benchmark", {"task": "geo_text", "measure": "bits_per_byte"}, "greater"),
}


RECORDS = Path("docs/results/records")
"""Where `--collect` writes the compact records and `--check` / `--write` read them."""
KEPT = ("metric", "value", "base", "n", "baseline", "baselines", "control")
"""What a compact record keeps of an eval.json entry."""


def cells(sweep: Path) -> list[dict[str, Any]]:
    """Finished, evaluated cells of a sweep (or of a folder of run folders): name, config, train.json and
    eval.json (controls left out); or the cells of a compact records file (`collect`), which read alike."""
    if sweep.suffix == ".json":
        return json.loads(sweep.read_text(encoding="utf-8"))["cells"]
    if not sweep.is_dir():
        raise FileNotFoundError(f"no such folder: {sweep}")
    out = []
    if (sweep / "plan.json").exists():  # a plan: its trials' run folders, trials/<trial>/seed=<seed>
        seeds = json.loads((sweep / "plan.json").read_text(encoding="utf-8")).get("seeds")
        folders = sorted(sweep.glob("trials/*/seed=*"), key=lambda f: (int(f.parent.name), f.name))
        if seeds is not None:  # the seeds the plan reads (a plan rerun with fewer leaves the others out)
            folders = [f for f in folders if int(f.name.removeprefix("seed=")) < seeds]
    else:
        folders = sorted((sweep / "cells" if (sweep / "cells").is_dir() else sweep).glob("*"))
    for folder in folders:
        if (
            folder.suffix == ".claim"
            or run_status(folder) != "finished"
            or not (folder / "eval.json").exists()
        ):
            continue
        config = yaml.safe_load((folder / "config.yaml").read_text())
        trial = folder.parent / "trial.json"
        params = json.loads(trial.read_text())["params"] if trial.exists() else None
        out.append(
            {
                "name": folder.name
                if folder.parent.parent.name != "trials"
                else f"trial={folder.parent.name},{folder.name}",
                "config": config,
                "seed": config["mix"]["seed"],
                "train": json.loads((folder / "train.json").read_text()),
                "eval": json.loads((folder / "eval.json").read_text()),
                **({"params": params} if params else {}),
            }
        )
    return out


def compact(cell: dict[str, Any]) -> dict[str, Any]:
    """A cell as its compact record: what the tables read of it (no weights, no per-fact data)."""
    config, train = cell["config"], cell["train"]
    ev: dict[str, Any] = {}
    paths = [metric_path("reliability")] + [metric_path(m, **where) for m, where, _ in MEASURES.values()]
    for path in paths:
        node: Any = cell["eval"]
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            target = ev
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = {k: node[k] for k in KEPT if k in node}
    return {
        "name": cell["name"],
        "seed": cell["seed"],
        "config": {
            "seed": config.get("seed"),
            "mix": config["mix"],
            "method": config["method"],
            "train": {k: config["train"].get(k) for k in ("lr", "epochs", "target_reliability", "seed")},
        },
        "train": {
            "epochs_run": train.get("epochs_run"),
            "kept_epoch": train.get("kept_epoch"),
            "trainable_parameters": train.get("trainable_parameters"),
            "epochs": [{k: e.get(k) for k in ("epoch", "step", "reliability")} for e in train["epochs"]],
        },
        "eval": ev,
        **({"params": cell["params"]} if "params" in cell else {}),
    }


def collect(sweep: Path, out: Path) -> Path:
    """Write the compact records of `sweep`'s finished cells to `out` (JSON); returns `out`."""
    from knowpack.io import write_json_atomic
    from knowpack.runs import git_commit

    found = cells(sweep)
    if not found:
        raise FileNotFoundError(f"no finished, evaluated cells in {sweep}")
    write_json_atomic(
        out, {"source": str(sweep), "git_commit": git_commit(), "cells": list(map(compact, found))}
    )
    return out


def grouped(items: list[dict], key: Callable[[dict], Any]) -> dict[Any, dict[int, dict]]:
    """key -> {seed: cell}."""
    groups: dict[Any, dict[int, dict]] = {}
    for item in items:
        groups.setdefault(key(item), {})[item["seed"]] = item
    return groups


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def value(cell: dict, name: str) -> tuple[float | None, float | None]:
    metric, where, _ = MEASURES[name]
    return metric_value(cell["eval"], metric, **where)


def effect(seeds: dict[int, dict], name: str) -> dict[str, Any]:
    """value - base per seed (base: the measurement null or the base model), its interval and verdict."""
    pairs = [value(seeds[s], name) for s in sorted(seeds)]
    ci = interval([v - b for v, b in pairs if v is not None and b is not None])
    ci["direction"] = MEASURES[name][2]
    ci["base"] = next((b for _, b in pairs if b is not None), None)
    return ci


def difference(a: dict[int, dict], b: dict[int, dict], name: str) -> dict[str, Any]:
    """Paired a - b over the seeds both have (their own value - base, so that each is against its null)."""
    shared = sorted(set(a) & set(b))

    def delta(cell: dict) -> float | None:
        v, base = value(cell, name)
        return None if v is None or base is None else v - base

    return paired_interval([delta(a[s]) for s in shared], [delta(b[s]) for s in shared])


def less_damage(name: str) -> str:
    """The direction of a - b (each against its baseline) when a damages less on measure `name`."""
    return "less" if MEASURES[name][2] == "greater" else "greater"


def judged(header: list[str], rows: list[list[Any]]) -> str:
    """A table whose cells are text or intervals with a `direction` (a test): the tests Holm-corrected
    together, then every interval written with its verdict's mark, and the note naming method and family."""
    tests = [(c, c["direction"]) for r in rows for c in r if isinstance(c, dict) and "direction" in c]
    holm_verdicts(tests)
    text = [[c if isinstance(c, str) else cell_text(c, c.get("fmt", "+.3f")) for c in r] for r in rows]
    note = f"{method_note()}; ✓: reproduced, Holm-corrected over this table's {len(tests)} tests"
    return table(header, text) + f"\n\n({note})"


def test(ci: dict[str, Any], direction: str, fmt: str = "+.3f") -> dict[str, Any]:
    """`ci` as one of its table's tests: claimed `direction`, written with `fmt`."""
    return {**ci, "direction": direction, "fmt": fmt}


def cell_text(ci: dict[str, Any], fmt: str = "+.3f") -> str:
    verdict_ = ci.get("verdict")
    mark = {"reproduced": " ✓", "not shown": "", "too few seeds": " (too few seeds)"}.get(verdict_ or "", "")
    return format_interval(ci, fmt) + mark


def fmt_for(name: str) -> str:
    return "+.1f" if name == "exploded answers" else "+.3f"


def mix_key(cell: dict) -> tuple[int, str, int]:
    mix = cell["config"]["mix"]
    return list(MIX_LABEL).index((mix["add"], mix["k"])), MIX_LABEL[(mix["add"], mix["k"])], mix["n_unknown"]


def damage(sweep: Path) -> str:
    """Per mix and n: each damage measure minus its baseline, over seeds, with its interval; ✓ where the
    interval excludes no damage (the verdict's rule)."""
    groups = grouped(cells(sweep), mix_key)
    names = [m for m in MEASURES if not m.startswith("geo_")]  # the organism's measures
    rows = []
    for (_, label, n), seeds in sorted(groups.items()):
        rel = interval([c["eval"]["uptake"]["reliability"]["value"] for c in seeds.values()])
        rows.append(
            [label, str(n), str(len(seeds)), format_interval(rel)]
            + [{**effect(seeds, m), "fmt": fmt_for(m)} for m in names]
        )
    any_seeds = next(iter(groups[min(groups)].values()))  # the first mix's (other mixes: other probe pools)
    bases = ["base"] + [""] * 3 + [f"{value(any_seeds, m)[1]:.3f}" for m in names]
    head = ["mix", "n", "seeds", "reliability"] + [f"{m} − base" for m in names]
    return judged(head, rows + [bases])


def comparisons(sweep: Path, pairs: list[tuple[tuple, tuple, str]], measures: list[str]) -> str:
    """Paired differences (a − b, each against its own baseline) with intervals; ✓ where the interval lies
    on the side of the stated direction (`greater`: a damages more; `less`: a damages less)."""
    groups = grouped(cells(sweep), lambda c: mix_key(c)[1:])
    rows = []
    for a, b, claim in pairs:
        if a not in groups or b not in groups:
            continue
        out = []
        for m in measures:
            ci = difference(groups[a], groups[b], m)
            damage_up = MEASURES[m][2]
            direction = damage_up if claim == "more" else less_damage(m)
            out.append(test(ci, direction, fmt_for(m)))
        rows.append(
            [f"{a[0]} n={a[1]} − {b[0]} n={b[1]}", claim, str(len(set(groups[a]) & set(groups[b])))] + out
        )
    return judged(["comparison", "claim: a damages", "seeds"] + measures, rows)


def epochs(sweep: Path, learned: float = 0.9) -> str:
    """Reliability after epochs 1, 3 and 10 with intervals over seeds; the first epoch and optimizer step
    reaching `learned`, per seed."""
    groups = grouped(cells(sweep), mix_key)
    rows = []
    for (_, label, n), seeds in sorted(groups.items()):
        runs = [seeds[s]["train"]["epochs"] for s in sorted(seeds)]
        at = [interval([r[e - 1]["reliability"] for r in runs if len(r) >= e]) for e in (1, 3, 10)]
        at = [format_interval(ci, ".2f") for ci in at]
        first = [next((x for x in r if x["reliability"] >= learned), None) for r in runs]
        rows.append(
            [label, str(n), str(len(seeds)), *at]
            + [", ".join(str(f["epoch"]) if f else "–" for f in first)]
            + [", ".join(str(f["step"]) if f else "–" for f in first) + f" (of {runs[0][-1]['step']})"]
        )
    head = ["mix", "n", "seeds", "after epoch 1", "after epoch 3", "after epoch 10"]
    head += [f"first epoch ≥ {learned:g}", f"steps to ≥ {learned:g}"]
    return table(head, rows) + f"\n\n({method_note()})"


def loki(sweep: Path) -> str:
    """Every case (LoRA and the LoKI selections, trained to equal uptake): effects against the baselines, then
    the paper's comparisons as paired differences."""
    groups = grouped(cells(sweep), lambda c: c["name"].split(",")[0].removeprefix("case="))
    names = ["retention", "negative shift", "world_mc_hard", "world_misconceptions", "world_text bits/byte"]
    rows = []
    for label, seeds in groups.items():
        rel = interval([c["eval"]["uptake"]["reliability"]["value"] for c in seeds.values()])
        ep = interval([c["train"]["epochs_run"] for c in seeds.values()])
        params = next(iter(seeds.values()))["train"].get("trainable_parameters")
        rows.append(
            [label, f"{params:,}", str(len(seeds)), format_interval(ep, ".1f"), format_interval(rel)]
            + [{**effect(seeds, m), "fmt": fmt_for(m)} for m in names]
        )
    out = judged(
        ["case", "trainable", "seeds", "epochs", "reliability"] + [f"{m} − base" for m in names], rows
    )
    pairs = [
        ("loki-layer-balanced", "lora"),
        ("loki-layer-balanced", "loki-global-low"),
        ("loki-layer-balanced", "loki-layer-balanced-high"),
        ("loki-global-low", "loki-global-high"),
    ]
    rows = []
    for a, b in pairs:
        if a in groups and b in groups:
            out_row = []
            for m in names:
                out_row.append(test(difference(groups[a], groups[b], m), less_damage(m), fmt_for(m)))
            rows.append([f"{a} − {b}", str(len(set(groups[a]) & set(groups[b])))] + out_row)
    head = ["comparison (claim: a damages less)", "seeds"] + names
    return out + "\n\n" + judged(head, rows)


def matched(sweep: Path) -> str:
    """LoKI vs LoRA at equal uptake (loki-matched.yaml): each damage measure (minus its baseline) on each
    method's uptake-damage curve, interpolated at common reliabilities (`knowpack.report.curves`), with the
    difference's paired bootstrap interval and verdict."""
    from knowpack.report.curves import matched_damage, method_curves

    names = ["retention", "world_mc", "world_mc_hard", "world_misconceptions", "world_text bits/byte"]
    rows = []
    for c in cells(sweep):
        case = c["name"].split(",")[0].removeprefix("case=")
        row = {"method": case.split("-")[0], "group": case, "n": c["config"]["mix"]["n_unknown"]}
        row.update(seed=c["seed"], reliability=c["eval"]["uptake"]["reliability"]["value"])
        for m in names:
            v, base = value(c, m)
            row[m] = None if v is None or base is None else v - base
        rows.append(row)
    out = []
    for m in names:
        for r in matched_damage(method_curves(rows, damage=m)):
            shown = {**r, "verdict": r.get("verdict")}
            out.append([m, f"{r['reliability']:.3f}", r["method"], cell_text(shown, fmt_for(m))])
    return table(
        ["measure − base", "at reliability", "method", "value [95% CI] (✓: the difference is shown)"], out
    )


def real(folder: Path) -> str:
    """The real model's LoRA and LoKI cells (a folder of run folders evaluated on the geo tasks): each measure
    against its baseline, and LoKI − LoRA paired by seed."""
    groups = grouped(cells(folder), lambda c: c["config"]["method"]["name"])
    names = ["retention", "geo_mc", "geo_misconceptions", "geo_text bits/byte"]
    rows = [[m, str(len(seeds))] + [effect(seeds, n) for n in names] for m, seeds in groups.items()]
    diffs = [test(difference(groups["loki"], groups["lora"], n), less_damage(n)) for n in names]
    rows.append(["LoKI − LoRA (paired)", str(len(set(groups["lora"]) & set(groups["loki"])))] + diffs)
    return judged(["method", "seeds"] + [f"{n} − base" for n in names], rows)


METHOD_LABEL = {"lora": "LoRA", "loki": "LoKI", "full": "full fine-tuning"}
GEO = ["retention", "geo_mc", "geo_text bits/byte"]
"""The real model's plan tables' measures: each against its baseline (null or base)."""


def steps(cell: dict) -> int | None:
    """Optimizer steps up to the kept epoch (the weights evaluated): the steps confound of a comparison."""
    epochs, kept = cell["train"]["epochs"], cell["train"].get("kept_epoch")
    return next((e["step"] for e in epochs if e["epoch"] == kept), epochs[-1]["step"] if epochs else None)


def uptake(seeds: dict[int, dict]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Reliability and steps to the kept epoch over a condition's seeds, each with its interval."""
    cells_ = seeds.values()
    return interval([c["eval"]["uptake"]["reliability"]["value"] for c in cells_]), interval(
        [steps(c) for c in cells_]
    )


def headline(folder: Path) -> str:
    """The real model's methods at their presets over seeds (a plan with one trial per method): reliability,
    steps and each measure against its baseline per method, then every pair of methods paired by seed (the
    same seed: the same facts, in the same order) on each measure; one Holm family for the whole table."""
    groups = grouped(cells(folder), lambda c: c["config"]["method"]["name"])
    order = [m for m in METHOD_LABEL if m in groups]
    rows: list[list[Any]] = []
    for m in order:
        seeds = groups[m]
        rel, st = uptake(seeds)
        rows.append(
            [METHOD_LABEL[m], str(len(seeds)), format_interval(rel), format_interval(st, ".1f")]
            + [{**effect(seeds, n), "fmt": fmt_for(n)} for n in GEO]
        )
    out = judged(["method", "seeds", "reliability", "steps"] + [f"{n} − base" for n in GEO], rows)
    pairs = [
        (a, b)
        for a, b in (("loki", "lora"), ("full", "lora"), ("loki", "full"))
        if a in groups and b in groups
    ]
    rows = []
    for a, b in pairs:
        shared = sorted(set(groups[a]) & set(groups[b]))
        rel = paired_interval(
            [groups[a][s]["eval"]["uptake"]["reliability"]["value"] for s in shared],
            [groups[b][s]["eval"]["uptake"]["reliability"]["value"] for s in shared],
        )
        rows.append(
            [f"{METHOD_LABEL[a]} − {METHOD_LABEL[b]}", str(len(shared)), format_interval(rel, "+.3f")]
            + [test(difference(groups[a], groups[b], n), less_damage(n), fmt_for(n)) for n in GEO]
        )
    head = ["comparison (claim: a damages less)", "seeds", "reliability a − b"] + GEO
    return out + "\n\n" + judged(head, rows)


def front(folder: Path) -> str:
    """Each method's uptake-damage front (a plan's grid of learning rates, several seeds a point): every
    point's reliability, steps and retention against the null; then each pair of methods compared at the
    reliabilities both fronts reach (`knowpack.report.curves`: interpolated, paired bootstrap over seeds),
    each row saying how many resamples reached the level."""
    from knowpack.report.curves import interval_note, matched_damage, method_curves

    found = cells(folder)
    groups = grouped(
        found, lambda c: (list(METHOD_LABEL).index(c["config"]["method"]["name"]), c["params"]["lr_scale"])
    )
    rows = []
    for (i, scale), seeds in sorted(groups.items()):
        cell = next(iter(seeds.values()))
        rel, st = uptake(seeds)
        rows.append(
            [
                list(METHOD_LABEL.values())[i],
                f"x{scale:g} ({cell['config']['train']['lr']:.2g})",
                str(len(seeds)),
            ]
            + [format_interval(rel), format_interval(st, ".1f"), format_interval(effect(seeds, "retention"))]
        )
    out = table(["method", "lr", "seeds", "reliability", "steps", "retention − null"], rows)
    points = []
    for c in found:
        v, base = value(c, "retention")
        points.append(
            {
                "method": c["config"]["method"]["name"],
                "group": f"lr x{c['params']['lr_scale']:g}",
                "n": c["config"]["mix"]["n_unknown"],
                "seed": c["seed"],
                "reliability": c["eval"]["uptake"]["reliability"]["value"],
                "retention": None if v is None or base is None else v - base,
            }
        )
    curves = method_curves(points)
    matched = []
    for a, b in (("loki", "lora"), ("full", "lora"), ("loki", "full")):
        if a not in curves or b not in curves:
            continue
        for r in matched_damage({a: curves[a], b: curves[b]}):
            if "−" not in r["method"]:
                continue
            name = " − ".join(METHOD_LABEL[m] for m in r["method"].split(" − "))
            reached = f"{r['reached']} of {r['resamples']}"
            matched.append([f"{r['reliability']:.3f}", name, cell_text(r), reached])
    head = ["at reliability", "a − b", "retention difference [95% CI] (✓: shown)", "resamples reaching it"]
    note = f"(points: {method_note()}; differences: {interval_note()})"
    return out + "\n\n" + table(head, matched) + "\n\n" + note


def capacity(folder: Path) -> str:
    """capacity.json's answer, its confidence and every point's pass rate."""
    data = json.loads((folder / "capacity.json").read_text())
    keep = {k: v for k, v in data.items() if not isinstance(v, (list, dict))}
    lines = [json.dumps(keep, indent=1)]
    for point in data.get("points", []):
        lines.append(json.dumps({k: point.get(k) for k in ("n", "passed", "pass_rate", "why")})[:600])
    return "\n".join(lines)


VS_NONE = ["retention", "world_mc_hard", "world_misconceptions", "world_text bits/byte", "TruthfulQA-w MC1"]
PAIRS = [
    (("none", 100), ("none", 10), "more"),
    (("none", 50), ("none", 10), "more"),
    (("+10 paraphrases", 50), ("none", 50), "less"),
    (("+10 HighlyKnown", 50), ("none", 50), "less"),
]
TABLES: dict[str, tuple[str, str, Callable[[Path, argparse.Namespace], str]]] = {
    "damage": ("damage per mix and n", "packing-damage-cpu", lambda p, a: damage(p)),
    "epochs": ("reliability per epoch", "packing-damage-cpu", lambda p, a: epochs(p, a.learned)),
    "comparisons": ("comparisons", "packing-damage-cpu", lambda p, a: comparisons(p, PAIRS, VS_NONE)),
    "loki": ("LoKI's selections and LoRA", "loki", lambda p, a: loki(p)),
    "matched": ("LoKI vs LoRA at equal uptake", "loki-matched", lambda p, a: matched(p)),
    "capacity": ("capacity", "capacity", lambda p, a: capacity(p)),
    "real": ("the real model's headroom roles", "smollm2-h", lambda p, a: real(p)),
    "headline": ("the real model's methods at their presets", "smollm2-headline", lambda p, a: headline(p)),
    "front": ("the real model's uptake-damage fronts", "smollm2-front", lambda p, a: front(p)),
}
"""Table name (RESULTS.md's marker) -> (title, the source it reads, how it renders)."""
MARKER = re.compile(r"<!-- results_tables: (\S+) -->\n(.*?)<!-- /results_tables -->", re.S)


def run_source(name: str, args: argparse.Namespace) -> Path:
    """Where table source `name` lies among the run folders."""
    named = {"capacity": args.capacity, "smollm2-h": args.real}
    named |= {"smollm2-headline": args.headline, "smollm2-front": args.front}
    return named.get(name, args.runs / name)


def record_source(name: str, records: Path) -> Path:
    """Where table source `name`'s compact records lie (capacity: its capacity.json, kept whole)."""
    return records / ("capacity" if name == "capacity" else f"{name}.json")


def render(table: str, source: Path, args: argparse.Namespace) -> str:
    return TABLES[table][2](source, args).rstrip("\n") + "\n"


def regenerate(text: str, args: argparse.Namespace) -> tuple[str, list[str]]:
    """`text` (RESULTS.md) with every generated table rendered anew from the records, and the names of those
    that changed."""
    changed: list[str] = []

    def fresh(match: re.Match) -> str:
        name = match.group(1)
        if name not in TABLES:
            raise SystemExit(
                f"{args.file}: unknown generated table {name!r}; expected one of {', '.join(TABLES)}"
            )
        body = render(name, record_source(TABLES[name][1], args.records), args)
        if body != match.group(2):
            changed.append(name)
        return f"<!-- results_tables: {name} -->\n{body}<!-- /results_tables -->"

    return MARKER.sub(fresh, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/replicate"))
    parser.add_argument("--capacity", type=Path, default=Path("runs/capacity/organism-lora"))
    parser.add_argument("--learned", type=float, default=0.9, help="reliability that counts as learned")
    parser.add_argument(
        "--real",
        type=Path,
        default=Path("runs/replicate/smollm2-h"),
        help="the SmolLM2 LoRA / LoKI run folders evaluated on geo_mc, geo_misconceptions and geo_text",
    )
    for name in ("headline", "front"):
        parser.add_argument(
            f"--{name}",
            type=Path,
            default=Path(f"out/plan-smollm2-{name}"),
            help=f"the plan folder of configs/plan/smollm2-{name}.yaml",
        )
    parser.add_argument("--records", type=Path, default=RECORDS, help="the compact records' folder")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--collect", action="store_true", help="write the run folders' compact records")
    what.add_argument("--check", dest="file", type=Path, nargs="?", const=Path("RESULTS.md"))
    what.add_argument("--write", type=Path, nargs="?", const=Path("RESULTS.md"))
    args = parser.parse_args(argv)
    if args.write is not None:
        args.file = args.write
    if args.file is not None:
        text = args.file.read_text(encoding="utf-8")
        new, changed = regenerate(text, args)
        count = len(MARKER.findall(text))
        if args.write is not None:
            args.file.write_text(new, encoding="utf-8")
            print(f"{args.file}: {count} generated tables, {len(changed)} rewritten")
            return 0
        for name in changed:
            print(f"{args.file}: table {name!r} differs from its records ({args.records})", file=sys.stderr)
        print(f"{args.file}: {count} generated tables checked against {args.records}, {len(changed)} differ")
        return 1 if changed else 0
    if args.collect:
        args.records.mkdir(parents=True, exist_ok=True)
        for source in dict.fromkeys(s for _, s, _ in TABLES.values()):
            path = run_source(source, args)
            try:
                if source == "capacity":
                    out = record_source(source, args.records)
                    out.write_text((path / "capacity.json").read_text(encoding="utf-8"), encoding="utf-8")
                else:
                    out = collect(path, record_source(source, args.records))
                print(f"{path} -> {out}")
            except FileNotFoundError as err:
                print(f"{path}: not run yet ({err})")
        return 0
    for name, (title, source, _) in TABLES.items():
        path = run_source(source, args)
        print(f"## {title} ({path})\n")
        try:
            print(render(name, path, args))
        except (FileNotFoundError, StopIteration) as err:
            print(f"not run yet ({err})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
