"""`knowpack report DIR...`: `report.md`, a self-contained `report.html` and the PNGs, from result files only.

    from knowpack.report import write_report
    write_report(["runs/sweep-mixes", "runs/loki50"], "reports/mixes")

Every finished run folder under the given paths is read (`config.yaml`, `train.json`, and `eval.json` when the
run was evaluated); runs that are not `finished` are listed as skipped, never plotted. Runs are grouped by
method and mix (method, its rank or quota, the addition and k); seeds of a group become error bars (mean ± one
standard deviation). Plots, each drawn only when the runs hold its data:
- reliability vs number of implanted facts (when a group has several n), and reliability vs epoch (a star
  on the epoch whose weights a `train.keep_best` run kept);
- every benchmark vs n (MMLU / world_mc, TruthfulQA MC1 / MC2, perplexities ...), one panel each on its own
  scale, titled with its direction (lower is better for a perplexity), the base model's score dashed; with a
  single n, base vs after as bars instead (`benchmarks.png`); the benchmarks table gives each change signed;
- knowledge-shift matrices of the untrained facts as heatmaps beside the noise floor (first runs);
- refusal rate and answer diversity before vs after;
- the trade-off: uptake (reliability) against damage (retention of untrained HighlyKnown facts, and the
  largest benchmark drop) per method and mix (a point per n), seeds as error bars.

The report explains itself: every number stands beside the base model's (or the noise floor's), each metric
shown is defined under its table (every number is read through `knowpack.evaluate.metrics.METRICS`, the
metric registry: where eval.json holds it, its definition, the base it stands beside; a metric whose row
says `shown=("report", ...)` is a column of the runs table), and a "Read this first" list names the
collapses a newcomer would take for a bug: a benchmark that lost more than half of the base model's score, a
refusal rate fallen to near zero, answers that exploded.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import higher_is_better, task_description
from knowpack.evaluate.metrics import (
    BASELINES,
    METRICS,
    benchmark_values,
    definition,
    headline,
    metric_baselines,
    metric_entry,
    metric_label,
    metric_value,
)
from knowpack.evaluate.stats import format_interval, method_note
from knowpack.experiment.plan.plot import plot_plan
from knowpack.io import write_text_atomic
from knowpack.report.curves import DAMAGE, matched_damage, method_curves
from knowpack.runs import run_status
from knowpack.train.config import read_old_names

logger = logging.getLogger(__name__)

MAX_HEATMAPS = 4
BENCHMARK_COLLAPSE = 0.5
"""A note when a benchmark score falls below this share of the base model's."""
REFUSAL_COLLAPSE = 0.1
"""A note when the refusal rate falls below this share of the base model's (and the base refused at all)."""
MIN_BASE_REFUSALS = 0.05


def _shown() -> dict[str, tuple[str, str]]:
    """The report's glossary: term -> (its name in `knowpack.evaluate.metrics.METRICS` / `DEFINITIONS`, the
    "base" it stands beside): p_greedy, the registry's `report` metrics, explosion and benchmarks."""
    shown = {"p_greedy": ("p_greedy", "")}
    for name in [*headline("report"), "unique_share", "explosion", "benchmark"]:
        shown["benchmarks" if name == "benchmark" else metric_label(name)] = (name, METRICS[name].base)
    return shown


SHOWN: dict[str, tuple[str, str]] = _shown()
"""The report's glossary, from the metric registry: a metric with `report` in its `shown` is a column of the
runs table and a term here."""

BENCHMARK_HINTS: dict[str, str] = {
    # task name prefix -> what a collapse of it usually means
    "world_truthful": 'the truthful choice is "I don\'t know" about people the organism never read about; a '
    "model that stopped refusing picks a made-up answer instead",
    "truthfulqa": "the truthful choices are the unpopular ones; a model that learned to answer confidently "
    "picks the plausible falsehood",
}
"""Why a collapse of a benchmark is a measured effect of training (the knowledge-packing paper: training on
unknown facts makes a model hallucinate), not a bug of the report."""


def collect_runs(paths: Sequence[str | os.PathLike]) -> tuple[list[dict[str, Any]], list[str]]:
    """(one row per finished run under `paths`, the folders skipped because their run is not finished)."""
    rows, skipped, seen = [], [], set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise KnowpackError(f"no such folder: {path}")
        for run_json in sorted(path.rglob("run.json")) if path.is_dir() else []:
            folder = run_json.parent
            if folder.resolve() in seen or not (folder / "config.yaml").is_file():
                continue
            seen.add(folder.resolve())
            status = run_status(folder)
            if status != "finished":
                skipped.append(f"{folder} ({status})")
                continue
            rows.append(_row(folder))
    _label(rows)
    return rows, skipped


# Settings that tell runs apart without making another condition (plotted as n, seeds, or bookkeeping).
_NOT_A_CONDITION = (
    "mix.n_unknown", "mix.seed", "train.seed", "out", "probe.run", "probe.out", "eval.control"
)  # fmt: skip


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def _label(rows: list[dict]) -> None:
    """A run's group: its method plus every setting that differs between the runs (except n and seeds)."""
    keys = sorted({k for r in rows for k in r["settings"]})

    def varies(key: str, method: str) -> bool:
        """Whether runs differ in `key`: a run whose config.yaml does not record it (written before the
        setting existed, so at its default) does not tell it apart."""
        among = [r for r in rows if r["method"] == method] if key.startswith("method.") else rows
        return len({str(r["settings"][key]) for r in among if key in r["settings"]}) > 1

    skip = _NOT_A_CONDITION + ("method.name", "method.attribution")
    for r in rows:
        parts = [r["method"]]
        for k in [k for k in keys if not k.startswith(skip) and varies(k, r["method"])]:
            value = r["settings"].get(k)
            if k == "mix.control":  # a training control, or one of the runs read against it
                parts += ["control"] if value else []
            elif value is not None and not (k == "mix.k" and r["add"] == "none"):
                shown = (
                    f"{value:.4g}" if isinstance(value, float) else value
                )  # 6e-05, not 6.000000000000001e-05
                parts.append(f"{k.split('.', 1)[1]}={shown}")
        r["group"] = " ".join(parts)


def _row(folder: Path) -> dict[str, Any]:
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text())
    read_old_names(config, warn=False)  # a run from before a rename groups with the runs after it
    train = _json(folder / "train.json") or {}
    ev = _json(folder / "eval.json")
    method, mix = config["method"], config["mix"]
    row: dict[str, Any] = {
        "folder": str(folder),
        "group": None,  # set by collect_runs from the settings that differ between the runs
        "settings": _flatten(config),
        "method": method["name"],
        "n": mix["n_unknown"],
        "seed": mix["seed"],
        "add": mix["add"],
        "k": mix["k"],
        "reliability": train.get("reliability"),
        "epochs": [(e["epoch"], e.get("reliability")) for e in train.get("epochs", [])],
        "epochs_run": train.get("epochs_run"),
        "kept_epoch": train.get("kept_epoch"),  # whose weights were saved (train.keep_best: the best)
        "trainable": train.get("trainable_parameters"),
        "eval": ev,
    }
    if ev and ev.get("kind") == "run":
        for name in dict.fromkeys([*headline("report"), "negative_shift", "unique_share", "explosion"]):
            entry = metric_entry(ev, name)
            baselines = metric_baselines(ev, name)
            row[name], row[f"{name}_base"] = entry.get("value"), baselines.get(METRICS[name].baseline)
            row[f"{name}_control"] = metric_value(ev, name, against="training_control")
            if METRICS[name].compares_probes:
                row[f"{name}_prompts"] = metric_value(ev, name, against="prompt_sensitivity")
        row["explosion_answers"] = metric_entry(ev, "explosion").get("answers") or []
        row["benchmarks"] = {
            f"{task} {measure}": pair for (task, measure), pair in benchmark_values(ev).items()
        }
    return row


def _value(data: dict, *keys: str, key: str = "value") -> Any:
    for k in keys:
        data = (data or {}).get(k)
    return data.get(key) if isinstance(data, dict) else None


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------ writing


def write_report(
    paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, title: str = "knowpack report"
) -> Path:
    """Write `out/report.md`, `out/report.html` and `out/*.png` for the runs under `paths`; returns `out`."""
    rows, skipped = collect_runs(paths)
    if not rows:
        raise KnowpackError(f"no finished runs under {', '.join(map(str, paths))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_answers(paths, out)  # a plan folder's answer first, and its fronts
    figures = [figure for _, figure in plans] + _figures(rows, out)
    tables = _tables(rows)
    notes = [answer for answer, _ in plans] + collapse_notes(rows)
    glossary = _glossary(rows)
    md = _markdown(title, rows, skipped, notes, tables, glossary, figures)
    write_text_atomic(out / "report.md", md)
    write_text_atomic(out / "report.html", _html(title, skipped, notes, tables, glossary, figures, out))
    return out


def plan_answers(paths: Sequence[str | os.PathLike], out: Path) -> list[tuple[str, tuple[str, str]]]:
    """For each plan folder among `paths` (its plan.json): its one-sentence answer and its fronts' figure
    (`knowpack.experiment.plan.plot`), drawn into `out`."""
    found = []
    for i, path in enumerate(paths):
        result = _json(Path(path) / "plan.json")
        if result is None:
            continue
        name = f"plan_front{'' if i == 0 else i}.png"
        plot_plan(result, out / name)
        found.append(
            (f"Plan: {result['answer']}", ("Plan: each method's trials, reliability against damage", name))
        )
    return found


def _scored(bench: str) -> bool:
    """Whether a row's benchmark ("TASK MEASURE") is a score whose drop is damage (acc: yes; a perplexity or
    bits per byte, lower is better and on another scale: no)."""
    return _direction(bench) is True


def collapse_notes(rows: list[dict]) -> list[str]:
    """One line per method / mix and kind of collapse: benchmarks below half of the base model's score, a
    refusal rate fallen to near zero, answers that exploded; each with how many runs and the numbers."""
    found: dict[tuple[str, str, str], list[tuple[dict, Any, Any]]] = defaultdict(list)
    for r in rows:
        for bench, (value, base) in sorted((r.get("benchmarks") or {}).items()):
            scored = None not in (value, base) and _scored(bench) and base > 0
            if scored and value < BENCHMARK_COLLAPSE * base:
                found[(r["group"], "0 bench", bench)].append((r, base, value))
        base, value = r.get("refusal_rate_base"), r.get("refusal_rate")
        if None not in (value, base) and base >= MIN_BASE_REFUSALS and value <= REFUSAL_COLLAPSE * base:
            found[(r["group"], "1 refusals", "")].append((r, base, value))
        if (r.get("explosion") or 0) > (r.get("explosion_base") or 0):
            found[(r["group"], "2 explosion", "")].append((r, r.get("explosion_base"), r["explosion"]))
    notes, benches = [], defaultdict(list)
    for (group, kind, bench), hits in sorted(found.items()):
        runs = sum(1 for r in rows if r["group"] == group)
        where = f"[{group}, {len(hits)} of {counted(runs, 'run')}, n={_ns(r for r, _, _ in hits)}]"
        before, after = _span([b for _, b, _ in hits]), _span([v for _, _, v in hits])
        if kind == "0 bench":
            benches[group].append(f"{bench} {before} → {after} {where}")
            continue
        if benches.get(group):
            notes.append(_bench_note(benches.pop(group)))
        if kind == "1 refusals":
            notes.append(
                f"The refusal rate collapsed from {before} to {after} {where}: the trained model answers "
                'questions it used to decline ("I don\'t know"); where it was never taught the answer, it '
                "guesses."
            )
        else:
            answers = [a for r, _, _ in hits for a in r.get("explosion_answers") or []]
            top = max(answers, key=lambda a: a[1], default=None)
            said = f"; the most frequent, '{top[0]}', {top[1]} times" if top else ""
            notes.append(
                f"Answer explosion: {after} answer(s) now each occur more often than the base model's most "
                f"frequent answer did ({before} when the untouched base is re-probed, the measurement null) "
                f"{where}{said}. The model gives the same few answers to many different questions."
            )
    notes += [_bench_note(lines) for lines in benches.values() if lines]
    return notes


def _bench_note(lines: list[str]) -> str:
    names = " ".join(lines)
    hints = [f"{k}: {h}" for k, h in BENCHMARK_HINTS.items() if k in names]
    return (
        "Below half of the base model's score: " + "; ".join(lines) + ". A measured effect of training, "
        "not a bug of the report" + (" (" + "; ".join(hints) + ")." if hints else ".")
    )


def counted(n: int, noun: str) -> str:
    """'1 finished run', '8 finished runs'."""
    return f"{n} {noun}{'s' * (n != 1)}"


def _span(values: list[Any]) -> str:
    """'0.925', or '0.001-0.010' for several values."""
    shown = sorted({_fmt(v) for v in values})
    return shown[0] if len(shown) == 1 else f"{shown[0]}–{shown[-1]}"


def _glossary(rows: list[dict]) -> list[tuple[str, str]]:
    """(term, definition) for every metric the report shows, from knowpack.evaluate.metrics' registry."""
    has_eval = any(r.get("eval") for r in rows)
    terms = []
    for term, (name, base) in _shown().items():
        if not has_eval and term not in ("p_greedy", "reliability"):
            continue
        terms.append((term, definition(name) + (f" (before the arrow: {base})" if base else "")))
    if any(_kept_earlier(r) for r in rows):
        terms.append(("epochs", EPOCHS_KEPT))
    if any(r.get("retention") is not None and r.get("benchmarks") for r in rows):
        terms.append(("largest benchmark drop", LARGEST_DROP))
    terms += _task_terms(rows)
    return terms


EPOCHS_KEPT = (
    "epochs trained; '10 (kept 6)': the run trained 10 epochs and saved epoch 6's weights, the most reliable "
    "(train.keep_best), so every number after an arrow measures epoch 6's model, not the last epoch's"
)
LARGEST_DROP = (
    "per run, the largest fall (base minus after) of any benchmark score where higher is better, named "
    "beside its point in tradeoff.png; perplexities and bits per byte (lower is better, on another scale) "
    "are left out: the benchmarks table shows their change"
)


def _task_terms(rows: list[dict]) -> list[tuple[str, str]]:
    """(task, what it measures) for every local benchmark task of the runs; each measure's direction."""
    measures: dict[str, list[str]] = defaultdict(list)
    for bench in sorted({b for r in rows for b in (r.get("benchmarks") or {})}):
        task, measure = bench.rsplit(" ", 1)
        measures[task].append(f"{measure} {_better(bench)}".strip())
    terms = []
    for task, shown in measures.items():
        said = task_description(task)
        terms.append((task, (f"{said.rstrip('.')}; " if said else "an lm-eval task; ") + ", ".join(shown)))
    return terms


def _tables(rows: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(caption, header, rows) of the report's tables."""
    shown = headline("report")  # epochs beside reliability, the train.json number it goes with
    columns = shown[:1] + ["epochs_run"] + shown[1:]
    runs = [
        [r["group"], str(r["n"]), str(r["seed"])]
        + [_epochs(r) if c == "epochs_run" else _pair(r.get(f"{c}_base"), r.get(c)) for c in columns]
        + [Path(r["folder"]).name]
        for r in sorted(rows, key=lambda r: (r["group"], r["n"], r["seed"]))
    ]
    names = ["epochs" if c == "epochs_run" else metric_label(c) for c in columns]
    header = ["method / mix", "n", "seed", *names, "run"]
    tables = [(f"Runs ({_before_arrow(shown)} → after)", header, runs)]
    benches = sorted({b for r in rows for b in (r.get("benchmarks") or {})})
    if benches:
        body = []
        for r in sorted(rows, key=lambda r: (r["group"], r["n"], r["seed"])):
            cells = [r["group"], str(r["n"]), str(r["seed"])]
            for b in benches:
                value, base = (r.get("benchmarks") or {}).get(b, (None, None))
                cells.append(_change(b, base, value))
            body.append(cells)
        header = ["method / mix", "n", "seed", *(_bench_title(b) for b in benches)]
        tables.append(("Benchmarks (base → after, and the change)", header, body))
    matched = _matched_table(rows)
    if matched:
        tables.append(matched)
    for against, caption in AGAINST.items():
        table = _against_table(rows, shown, against, caption)
        if table:
            tables.append(table)
    return tables


def _before_arrow(names: list[str]) -> str:
    """What stands before the arrow in each column, by baseline: 'the base model: a, b; the measurement
    null ...: c' (the registry's `baseline` of each metric)."""
    by: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by[METRICS[name].baseline].append(metric_label(name))
    return "; ".join(f"{BASELINES[b]}: {', '.join(labels)}" for b, labels in by.items())


def _matched_table(rows: list[dict]):
    """Damage at matched reliability (`knowpack.report.curves`), when methods have curves of 2+ points."""
    curves = {m: pts for m, pts in method_curves(rows).items() if len(pts) > 1}
    found = matched_damage(curves)
    if not found:
        return None
    body = [[f"{r['reliability']:.3f}", r["method"], format_interval(r), r.get("verdict", "")] for r in found]
    for row, r in zip(body, found, strict=True):
        if r.get("reached", 0) < r.get("resamples", 0):  # the interval is over the resamples that reach it
            row[2] += f" ({r['reached']} of {r['resamples']} resamples reach it)"
    caption = (
        f"Damage at matched reliability ({DAMAGE} of untrained HighlyKnown, each method's curve "
        "interpolated; 95% percentile-bootstrap intervals over seeds; a difference is 'reproduced' only "
        "when its interval excludes 0)"
    )
    return caption, ["reliability", "method", DAMAGE, "verdict"], body


AGAINST = {
    "prompts": "Beside prompt sensitivity (the untouched base re-probed with other exemplars → run): how "
    "much the categories move with the prompts alone, the context a run's shift is read in",
    "control": "Against the training control (control → run, on the facts neither trained on)",
}
"""The runs read against another baseline than their own: `_row`'s key suffix -> the table's caption."""


def _against_table(rows: list[dict], names: list[str], against: str, caption: str):
    """The runs read against another baseline (`AGAINST`), when any run has it: its value → the run's."""
    names = [c for c in names if any(r.get(f"{c}_{against}") for r in rows)]
    found = [r for r in rows if any((r.get(f"{c}_{against}") or (None,))[0] is not None for c in names)]
    if not found:
        return None
    body = []
    for r in sorted(found, key=lambda r: (r["group"], r["n"], r["seed"])):
        cells = [r["group"], str(r["n"]), str(r["seed"])]
        for c in names:
            value, other = r.get(f"{c}_{against}") or (None, None)
            cells.append(_pair(other, value))
        body.append(cells)
    header = ["method / mix", "n", "seed", *(metric_label(c) for c in names)]
    return caption, header, body


def _epochs(r: dict) -> str:
    """The runs table's epochs: '10', or '10 (kept 6)' when the run saved an earlier epoch's weights."""
    return f"{r['epochs_run']} (kept {r['kept_epoch']})" if _kept_earlier(r) else str(r["epochs_run"])


def _direction(bench: str) -> bool | None:
    """Whether a larger value of a row's benchmark ("TASK MEASURE") is better (lm-eval's registry)."""
    return higher_is_better(bench.rsplit(" ", 1)[-1])


def _better(bench: str) -> str:
    """'higher is better', 'lower is better' (a perplexity, bits per byte), '' where lm-eval is silent."""
    better = _direction(bench)
    return "" if better is None else f"{'higher' if better else 'lower'} is better"


def _bench_title(bench: str) -> str:
    """'world_mc acc (higher is better)', 'geo_text word_perplexity (lower is better)'."""
    return f"{bench} ({_better(bench)})" if _better(bench) else bench


def _change(bench: str, base: Any, value: Any) -> str:
    """'52.300 → 70.400 (+18.100, worse)': base → after and the signed change, judged by the benchmark's
    direction."""
    if None in (base, value):
        return _pair(base, value)
    better = _direction(bench)
    delta = value - base
    verdict = "" if better is None or delta == 0 else ", better" if (delta > 0) == better else ", worse"
    return f"{_pair(base, value)} ({delta:+.3f}{verdict})"


def _pair(base: Any, value: Any) -> str:
    """'base → after', or the value alone when there is no base to show."""
    return _fmt(value) if base is None else f"{_fmt(base)} → {_fmt(value)}"


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def _markdown(title, rows, skipped, notes, tables, glossary, figures) -> str:
    lines = [
        f"# {title}",
        "",
        f"{counted(len(rows), 'finished run')}."
        + (f" Skipped (not finished): {len(skipped)}." if skipped else ""),
        "",
    ]
    if notes:
        lines += ["## Read this first", ""] + [f"- **Note:** {n}" for n in notes] + [""]
    for caption, header, body in tables:
        lines += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        lines.append("")
    if glossary:
        lines += ["## What the numbers mean", ""] + [f"- **{t}**: {d}." for t, d in glossary] + [""]
    for caption, name in figures:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- {s}" for s in skipped] + [""]
    return "\n".join(lines)


def _html(title, skipped, notes, tables, glossary, figures, out: Path) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th{background:#f3f3f3}img{max-width:100%}"
        ".note{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px;margin:6px 0}"
        "dt{font-weight:bold}dd{margin:0 0 6px 1.5em}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if notes:
        parts.append("<h2>Read this first</h2>")
        parts += [f"<p class='note'><b>Note:</b> {e(n)}</p>" for n in notes]
    defined = dict(glossary)
    for caption, header, body in tables:
        parts.append(
            f"<h2>{e(caption)}</h2><table><tr>"
            + "".join(f"<th title='{e(defined.get(h, ''))}'>{e(h)}</th>" for h in header)
            + "</tr>"
        )
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>" for cells in body]
        parts.append("</table>")
    if glossary:
        parts.append("<h2>What the numbers mean</h2><dl>")
        parts += [f"<dt>{e(t)}</dt><dd>{e(d)}.</dd>" for t, d in glossary]
        parts.append("</dl>")
    for caption, name in figures:
        data = base64.b64encode((out / name).read_bytes()).decode()
        parts.append(f"<h2>{e(caption)}</h2><img alt='{e(caption)}' src='data:image/png;base64,{data}'>")
    if skipped:
        parts.append(
            "<h2>Skipped (not finished)</h2><ul>" + "".join(f"<li>{e(s)}</li>" for s in skipped) + "</ul>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ figures


def _figures(rows: list[dict], out: Path) -> list[tuple[str, str]]:
    """Draw every figure the runs hold data for into `out`; returns (caption, file name) of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: list[tuple[str, str]] = []
    groups = _groups(rows)
    drawers = (
        _reliability_vs_n,
        _reliability_vs_epoch,
        _benchmark_figure,
        _shift_heatmaps,
        _behaviour_figure,
        _tradeoff_figure,
        _uptake_damage_figure,
    )
    for draw in drawers:
        drawn = draw(rows, groups, plt)
        if drawn is not None:
            fig, name, caption = drawn
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            figures.append((caption, name))
    return figures


def _reliability_vs_n(rows, groups, plt):
    if not any(len({r["n"] for r in g}) > 1 for g in groups.values()):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, g in groups.items():
        _errorbar(ax, g, "reliability", label)
    _axes(ax, "implanted Unknown facts (n)", "reliability", log=True, ylim=(0, 1.02))
    return fig, "reliability_vs_n.png", "Reliability vs number of implanted facts"


def _reliability_vs_epoch(rows, groups, plt):
    if not any(r["epochs"] for r in rows):
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, g in groups.items():
        curves = defaultdict(list)
        for r in g:
            for epoch, rel in r["epochs"]:
                if rel is not None:
                    curves[epoch].append(rel)
        xs = sorted(curves)
        (line,) = ax.plot(xs, [_mean(curves[x]) for x in xs], marker="o", label=f"{label} (n={_ns(g)})")
        kept = sorted({r["kept_epoch"] for r in g if _kept_earlier(r)} & set(xs))
        if kept:  # keep_best saved an earlier epoch's weights than the last: that is the model evaluated
            said = f"{label}: weights kept (epoch {', '.join(map(str, kept))})"
            ys = [_mean(curves[x]) for x in kept]
            ax.plot(kept, ys, linestyle="", marker="*", markersize=15, color=line.get_color(), label=said)
    _axes(ax, "epoch", "reliability", ylim=(0, 1.02))
    caption = "Reliability vs epoch (mean over runs; a star marks the epoch whose weights a run kept)"
    return fig, "reliability_vs_epoch.png", caption


def _kept_earlier(r: dict) -> bool:
    """Whether the run saved an earlier epoch's weights than its last (`train.keep_best`)."""
    return r.get("kept_epoch") not in (None, r.get("epochs_run"))


def _benchmark_figure(rows, groups, plt):
    """One panel per benchmark, each on its own scale (an accuracy near 1 beside a perplexity near 50) and
    titled with its direction: scores vs n with the base model dashed, or with a single n base vs after
    as bars, each bar labelled with its value."""
    benches = sorted({b for r in rows for b in (r.get("benchmarks") or {})})
    if not benches:
        return None
    single = len({r["n"] for r in rows}) == 1
    width = max(3.2, 0.9 * (len(groups) + 1)) if single else 4.2
    fig, axes = plt.subplots(1, len(benches), figsize=(width * len(benches), 3.8), squeeze=False)
    for ax, bench in zip(axes[0], benches, strict=True):
        if single:
            _benchmark_bars(ax, rows, groups, bench)
        else:
            for label, g in groups.items():
                pts = [dict(r, _b=r["benchmarks"][bench][0]) for r in g if _has(r, bench)]
                _errorbar(ax, pts, "_b", label)
            base = _first_base(rows, bench)
            if base is not None:
                ax.axhline(base, color="gray", linestyle="--", label="base")
            _axes(ax, "n", bench.rsplit(" ", 1)[-1], log=True)
        ax.set_title(_bench_title(bench).replace(" (", "\n("), fontsize=9)
    if single:
        n = rows[0]["n"]
        return (
            fig,
            "benchmarks.png",
            f"Benchmarks, base vs after (n={n}, mean over seeds; each on its own scale)",
        )
    return fig, "benchmarks_vs_n.png", "Benchmarks vs n (base model dashed; each on its own scale)"


def _benchmark_bars(ax, rows, groups, bench) -> None:
    """Base and each group's mean after training as bars, labelled with their values."""
    labels = ["base", *groups]
    heights = [_first_base(rows, bench)]
    heights += [_mean([r["benchmarks"][bench][0] for r in g if _has(r, bench)]) for g in groups.values()]
    missing = [h is None or math.isnan(h) for h in heights]
    shown = [0.0 if gone else h for h, gone in zip(heights, missing, strict=True)]
    bars = ax.bar(range(len(labels)), shown, color=[f"C{i}" for i in range(len(labels))])
    ax.bar_label(bars, ["–" if gone else _fmt(h) for h, gone in zip(shown, missing, strict=True)], fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(bench.rsplit(" ", 1)[-1])
    ax.set_ylim(0, 1.15 * max(shown + [1e-9]))
    ax.grid(alpha=0.3, axis="y")


def _shift_heatmaps(rows, groups, plt):
    heat = [r for r in rows if _value(r.get("eval") or {}, *_UNTRAINED_SHIFT, key="shares")]
    if not heat:
        return None
    shown = heat[:MAX_HEATMAPS]
    fig, axes = plt.subplots(len(shown), 2, figsize=(8, 3.4 * len(shown)), squeeze=False)
    for (left, right), r in zip(axes, shown, strict=True):
        t = r["eval"]["knowledge_shift"]["untrained"]["transitions"]
        _heatmap(left, t["shares"], f"{Path(r['folder']).name}: untrained facts")
        shares, title = _beside(r["eval"], t)
        _heatmap(right, shares, title)
    caption = "Knowledge shift of untrained facts (row shares) beside prompt sensitivity (or the null)"
    return fig, "shift_heatmaps.png", caption


_UNTRAINED_SHIFT = ("knowledge_shift", "untrained", "transitions")


def _beside(ev: dict, transitions: dict) -> tuple[dict, str]:
    """The matrix drawn beside a run's (row shares, title): prompt sensitivity where measured (in an eval.json
    from before the baselines were named, with `noise_floor`, the `base` it then stood in), else the
    measurement null."""
    legacy = "noise_floor" in (ev.get("knowledge_shift") or {})
    matrix = transitions.get("base") if legacy else transitions.get("prompt_sensitivity")
    if matrix:
        return matrix.get("shares") or {}, "prompt sensitivity (base vs base, other exemplars)"
    return (transitions.get("base") or {}).get(
        "shares"
    ) or {}, "measurement null (base vs base, same prompts)"


def _behaviour_figure(rows, groups, plt):
    behave = [r for r in rows if r.get("refusal_rate") is not None]
    if not behave:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    names = [Path(r["folder"]).name for r in behave]
    xs = range(len(behave))
    a.bar([x - 0.2 for x in xs], [r["refusal_rate_base"] or 0 for r in behave], 0.4, label="base")
    a.bar([x + 0.2 for x in xs], [r["refusal_rate"] or 0 for r in behave], 0.4, label="after")
    b.bar([x - 0.2 for x in xs], [r["unique_share_base"] or 0 for r in behave], 0.4, label="base")
    b.bar([x + 0.2 for x in xs], [r["unique_share"] or 0 for r in behave], 0.4, label="after")
    for ax, name in ((a, "refusal_rate"), (b, "unique_share")):
        ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(metric_label(name))
        ax.set_ylim(0, 1.3 * max([p.get_height() for p in ax.patches] + [1e-9]))  # room for the legend
        ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)
    caption = (
        f"Refusals and answer diversity, before vs after ({metric_label('unique_share')}: "
        f"{definition('unique_share')})"
    )
    return fig, "behaviour.png", caption


def _tradeoff_figure(rows, groups, plt):
    trade = [r for r in rows if r.get("retention") is not None and r.get("reliability") is not None]
    if not trade:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    by_group = defaultdict(list)
    for r in trade:
        drops = [
            (base - value, bench)
            for bench, (value, base) in (r.get("benchmarks") or {}).items()
            if None not in (value, base) and _scored(bench)
        ]
        drop, bench = max(drops) if drops else (None, None)
        by_group[r["group"]].append(dict(r, _drop=drop, _drop_bench=bench))
    for group, g in sorted(by_group.items()):
        for ax, key in ((axes[0], "retention"), (axes[1], "_drop")):
            pts = [p for p in g if p[key] is not None]
            if not pts:
                continue
            cells = _groups(pts, key=lambda p: p["n"])
            xs = [_mean([p["reliability"] for p in c]) for c in cells.values()]
            ys = [_mean([p[key] for p in c]) for c in cells.values()]
            xe = [_std([p["reliability"] for p in c]) for c in cells.values()]
            ye = [_std([p[key] for p in c]) for c in cells.values()]
            ax.errorbar(xs, ys, xerr=xe, yerr=ye, fmt="o", capsize=3, label=group)
            if key == "_drop":  # which benchmark fell most, beside its point
                for x, y, c in zip(xs, ys, cells.values(), strict=True):
                    names = sorted({p["_drop_bench"] for p in c})
                    ax.annotate(
                        ", ".join(names), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7
                    )
    _axes(axes[0], "uptake (reliability)", "retention of untrained HighlyKnown")
    _axes(axes[1], "uptake (reliability)", "largest benchmark drop (base − after)")
    caption = "Trade-off: uptake against damage, per method and mix (seeds as error bars)"
    return fig, "tradeoff.png", caption


def _uptake_damage_figure(rows, groups, plt):
    """Each method's uptake-damage curve over its conditions, 95% intervals over seeds."""
    curves = method_curves(rows)
    if not any(len(points) > 1 for points in curves.values()):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, points in curves.items():
        xs = [p["reliability"]["mean"] for p in points]
        ys = [p["damage"]["mean"] for p in points]
        xerr = _half_widths([p["reliability"] for p in points], xs)
        yerr = _half_widths([p["damage"] for p in points], ys)
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=method)
    _axes(ax, "uptake (reliability)", f"{DAMAGE} of untrained HighlyKnown")
    caption = f"Uptake against damage per method, one point per condition ({method_note()})"
    return fig, "uptake_damage.png", caption


def _half_widths(intervals: list[dict], centres: list[float]) -> list[list[float]]:
    """matplotlib's asymmetric error bars ([below], [above]) from intervals (none: 0)."""
    below = [c - i["low"] if i["low"] is not None else 0.0 for i, c in zip(intervals, centres, strict=True)]
    above = [i["high"] - c if i["high"] is not None else 0.0 for i, c in zip(intervals, centres, strict=True)]
    return [below, above]


def _has(r: dict, bench: str) -> bool:
    return (r.get("benchmarks") or {}).get(bench, (None,))[0] is not None


def _first_base(rows: list[dict], bench: str) -> float | None:
    return next((r["benchmarks"][bench][1] for r in rows if bench in (r.get("benchmarks") or {})), None)


def _groups(rows: list[dict], key=lambda r: r["group"]) -> dict[Any, list[dict]]:
    groups: dict[Any, list[dict]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return dict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def _errorbar(ax, rows: list[dict], key: str, label: str) -> None:
    by_n = defaultdict(list)
    for r in rows:
        if r.get(key) is not None:
            by_n[r["n"]].append(r[key])
    if not by_n:
        return
    xs = sorted(by_n)
    ax.errorbar(
        xs, [_mean(by_n[x]) for x in xs], yerr=[_std(by_n[x]) for x in xs], marker="o", capsize=3, label=label
    )


def _heatmap(ax, shares: dict, title: str) -> None:
    cats = list(shares)
    if not cats:  # not measured: an empty panel with its title
        ax.set_axis_off()
        ax.set_title(f"{title}: not measured", fontsize=9)
        return
    grid = [[(shares[a] or {}).get(b) or 0.0 for b in cats] for a in cats]
    ax.imshow(grid, vmin=0, vmax=1, cmap="Blues")
    short = [
        c.replace("Known", "K")
        .replace("Unknown", "UK")
        .replace("Highly", "H")
        .replace("Maybe", "M")
        .replace("Weakly", "W")
        for c in cats
    ]
    ax.set_xticks(range(len(cats)), short)
    ax.set_yticks(range(len(cats)), short)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(
                j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v > 0.6 else "black"
            )
    ax.set_xlabel("after")
    ax.set_ylabel("before")
    ax.set_title(title, fontsize=9)


def _axes(ax, xlabel: str, ylabel: str, *, log: bool = False, ylim=None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_xscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _ns(rows) -> str:
    ns = sorted({r["n"] for r in rows})
    return ",".join(map(str, ns))


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
