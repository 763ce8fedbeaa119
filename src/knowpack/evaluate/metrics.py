"""The evaluation metrics, as pure functions of probe records (no model): docs/design.md §4, made exact.

    from knowpack.evaluate import metrics
    m = metrics.transitions(before, after, ids=untrained)     # 4x4 (3x3 without samples) counts + row shares
    metrics.shift(m)["positive"]["value"]                     # share of the facts that could move up that did
    metrics.retention(before, after, ids=untrained)["value"]  # HighlyKnown before and still after
    metrics.behaviour(after)                                  # refusal rate, diversity, confidence
    metrics.explosion(before, after)["answers"]               # answers more frequent than the base's top one
    metrics.metric_value(eval_json, "retention")              # (value, base): eval.json read via METRICS
    metrics.metric_value(eval_json, "retention", against="training_control")   # (value, the control's)

Records are probe records (`knowpack.probe`): `id`, `category`, `p_sample`, `greedy` (one answer per prompt),
`samples`, `greedy_correct`, `greedy_logprob`. Choices where docs/design.md and the papers are silent (each
one pinned by tests/test_eval_metrics.py):

- **Categories.** Without samples (`p_sample` None everywhere) there is no WeaklyKnown: matrices are 3x3.
- **Shift** follows the knowledge-packing paper's three categories: a WeaklyKnown fact counts as Unknown
  (the paper's Unknown is SliCK's Unknown + WeaklyKnown), so WeaklyKnown <-> Unknown flips, which are mostly
  sampling noise, are no shift. Positive moves: UK->HK, UK->MK, MK->HK; negative: HK->UK, HK->MK, MK->UK.
  The paper left the denominators unspecified. Here each move's `share` is over the facts of its source
  category (the transition matrix's row share); `positive.value` is the facts that moved up over the facts
  that could (Unknown or MaybeKnown before), `negative.value` the facts that moved down over the facts that
  could (HighlyKnown or MaybeKnown before); `share_of_all` divides the same counts by all facts compared.
- **Answers** are greedy answers (one per fact and prompt) after `knowpack.facts.normalize`; diversity and
  explosion count only answers proper: empty answers and refusals are left out (refusals have their own
  rate, and one refusal phrase would otherwise be the "top answer" of any model that declines).
- **Explosion**: the answers whose count after training is larger than the largest count of any answer of
  the base model on the same facts.
- **Confidence**: the mean of exp(greedy_logprob) over all greedy answers, the probability the model gave its
  own greedy answer (tokens up to and including the one ending the line).
- **Baselines** (`BASELINES`; docs/design.md §4.6): every row names the one its `base` is (`Metric.baseline`).
  A comparison of two probes stands beside the *measurement null* (a run that learned nothing, re-probed with
  the same prompts and another sampling seed: knowpack.evaluate.null), with *prompt sensitivity* (other
  exemplars) beside it as context (`baselines`); with a *training control* run, every metric also carries
  `control`: the run's value and the control's on the facts neither trained on (`against_control`).
A metric over no facts is None, never 0.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate.stats import interval
from knowpack.facts.normalize import DEFAULT_REFUSAL_PATTERNS, is_refusal, normalize
from knowpack.probe.scoring import CATEGORIES, transition_matrix

HK, MK, WK, UK = CATEGORIES
POSITIVE = ((UK, HK), (UK, MK), (MK, HK))
"""The knowledge-packing paper's positive shift (with WeaklyKnown counted as Unknown)."""
NEGATIVE = ((HK, UK), (HK, MK), (MK, UK))
"""The paper's negative shift (with WeaklyKnown counted as Unknown)."""

TERMS: dict[str, str] = {
    "p_greedy": "a fact's share of the probe's few-shot prompts whose greedy answer is correct: 1 for a "
    "HighlyKnown fact, 0 for an Unknown or WeaklyKnown one",
    "transitions": "category transition matrix between two probes: counts[a][b] facts went from a to b; "
    "shares[a][b] = counts[a][b] / facts in a",
    "measurement_null": "the same comparison between the base probe and a run that learned nothing (the "
    "run's method at its initial values, saved and loaded through the run's own path) re-probed with the "
    "same prompts and another sampling seed: what the comparison shows with no learning (with a sound "
    "pipeline greedy categories cannot move; only WeaklyKnown <-> Unknown can)",
    "prompt_sensitivity": "the same comparison between the base probe and the untouched base re-probed with "
    "another seed, hence other exemplars: how much categories depend on the prompts (context, not a null; "
    "called the noise floor before)",
    "training_control": "the same recipe (method, epochs, lr) trained on as many facts the model already "
    "knew (HighlyKnown only): the damage of training at all, against which learning new facts is read",
    "category_share": "share of the probed facts in a SliCK category",
}
"""Words the metrics are defined with, that are not numbers of eval.json themselves."""


@dataclass(frozen=True)
class Metric:
    """A row of `METRICS`: one number of eval.json, where it lives, what it means and how to show it."""

    path: tuple[str, ...]
    """Keys from eval.json's top down to the metric's entry (`{"value", "base", ...}`); `{scope}` stands for
    a group of facts (`all`, `trained`, `untrained`), `{task}` / `{measure}` for a benchmark's task and its
    lm-eval metric."""
    definition: str
    """What it means, exactly (eval.json's `definitions` and the report's glossary carry it)."""
    higher_is_better: bool | None
    """True: more is better (uptake, retention); False: less is better (negative shift); None: a change either
    way is damage (refusal rate, confidence)."""
    baseline: str
    """Which baseline the entry's `base` is (a key of `BASELINES`): `base_model`, or `measurement_null` for a
    comparison of two probes."""
    label: str = ""
    """Its name in tables (default: the metric's name with spaces)."""
    fmt: str = ".3f"
    """Python format of its value."""
    shown: tuple[str, ...] = ()
    """Where it is a headline number: `report` (the report's runs table), `sweep` (sweep.json), `summary` (the
    lines `knowpack eval` prints). Every metric can be read (`metric_value`) and budgeted (capacity)."""
    scope: str = "all"
    """The `{scope}` read when none is asked for."""
    bounds: tuple[float, float | None] = (0.0, 1.0)
    """The values it can take (None: no upper bound): a budget or target on it must lie within them."""

    @property
    def base(self) -> str:
        """What the entry's `base` is, in words (`BASELINES`)."""
        return BASELINES[self.baseline]

    @property
    def compares_probes(self) -> bool:
        """Whether it compares two probes (before, after): its base is that comparison with no training."""
        return self.baseline == "measurement_null"

    @property
    def baselines(self) -> tuple[str, ...]:
        """Every baseline it can be read against (`metric_value(..., against=)`): its own first."""
        context = ("prompt_sensitivity",) if self.compares_probes else ()
        return (self.baseline, *context, "training_control")

    def format(self, value: Any) -> str:
        return "–" if value is None else format(value, self.fmt)


BASELINES: dict[str, str] = {
    "base_model": "the base model",
    "measurement_null": "the measurement null (the run's method untrained, re-probed with the same prompts, "
    "another sampling seed)",
    "prompt_sensitivity": "prompt sensitivity (the untouched base re-probed with other exemplars)",
    "training_control": "the training control (the same recipe on as many facts the model already knew)",
}
"""Baseline name -> what it is, in words (TERMS defines each at length); `Metric.baseline` is one."""
BASE_MODEL = "base_model"
MEASUREMENT_NULL = "measurement_null"
_SHIFT, _BEHAVIOUR = ("knowledge_shift", "{scope}"), ("behaviour", "{scope}")

METRICS: dict[str, Metric] = {
    "reliability": Metric(
        path=("uptake", "reliability"),
        definition="mean p_greedy of the implanted facts under the probe's few-shot prompts",
        higher_is_better=True,
        baseline=BASE_MODEL,
        shown=("report", "sweep", "summary"),
    ),
    "highly_known_share": Metric(
        path=("uptake", "highly_known_share"),
        definition="share of the implanted facts whose category is HighlyKnown (p_greedy = 1)",
        higher_is_better=True,
        baseline=BASE_MODEL,
    ),
    "zero_shot_accuracy": Metric(
        path=("uptake", "zero_shot_accuracy"),
        definition=(
            "share of the implanted facts answered correctly, greedy, in the zero-shot training "
            "format (the prompt the facts were trained with)"
        ),
        higher_is_better=True,
        baseline=BASE_MODEL,
        label="zero-shot",
        shown=("summary",),
    ),
    "generalization": Metric(
        path=("uptake", "generalization"),
        definition=(
            "mean p_greedy over (implanted fact, held-out paraphrase) pairs, the paraphrase asked "
            "under the probe's few-shot prompts"
        ),
        higher_is_better=True,
        baseline=BASE_MODEL,
        shown=("summary",),
    ),
    "generalization_zero_shot": Metric(
        path=("uptake", "generalization_zero_shot"),
        definition=(
            "share of (implanted fact, held-out paraphrase) pairs answered correctly, greedy, in the "
            "zero-shot training format"
        ),
        higher_is_better=True,
        baseline=BASE_MODEL,
    ),
    "idk_refusal_rate": Metric(
        path=("uptake", "idk_refusal_rate"),
        definition=(
            "share of the greedy answers (all prompts) to the facts relabelled 'I don't know.' that "
            "are refusals"
        ),
        higher_is_better=None,
        baseline=BASE_MODEL,
    ),
    "positive_shift": Metric(
        path=(*_SHIFT, "positive_shift"),
        definition=(
            "facts that moved UK->HK, UK->MK or MK->HK (WeaklyKnown counted as Unknown) / facts that "
            "were Unknown, WeaklyKnown or MaybeKnown before"
        ),
        higher_is_better=None,
        baseline=MEASUREMENT_NULL,
        shown=("summary",),
        scope="untrained",
    ),
    "negative_shift": Metric(
        path=(*_SHIFT, "negative_shift"),
        definition=(
            "facts that moved HK->UK, HK->MK or MK->UK (WeaklyKnown counted as Unknown) / facts that "
            "were HighlyKnown or MaybeKnown before"
        ),
        higher_is_better=False,
        baseline=MEASUREMENT_NULL,
        shown=("summary",),
        scope="untrained",
    ),
    "retention": Metric(
        path=(*_SHIFT, "retention"),
        definition="share of the facts HighlyKnown before that are HighlyKnown after",
        higher_is_better=True,
        baseline=MEASUREMENT_NULL,
        shown=("report", "sweep", "summary"),
        scope="untrained",
    ),
    "retention_soft": Metric(
        path=(*_SHIFT, "retention_soft"),
        definition=(
            "mean p_greedy after of the facts HighlyKnown before: a fact that slips from all of its "
            "prompts to all but one costs 1/N_ex here, and all of it in retention"
        ),
        higher_is_better=True,
        baseline=MEASUREMENT_NULL,
        label="soft retention",
        shown=("report", "sweep"),
        scope="untrained",
    ),
    "refusal_rate": Metric(
        path=(*_BEHAVIOUR, "refusal_rate"),
        definition="share of the greedy answers (every fact, every prompt) that match a refusal pattern",
        higher_is_better=None,
        baseline=BASE_MODEL,
        label="refusals",
        shown=("report", "sweep", "summary"),
    ),
    "refusal_rate_samples": Metric(
        path=(*_BEHAVIOUR, "refusal_rate_samples"),
        definition="share of the sampled answers that match a refusal pattern",
        higher_is_better=None,
        baseline=BASE_MODEL,
    ),
    "unique_answers": Metric(
        path=(*_BEHAVIOUR, "unique_answers"),
        definition="distinct normalized greedy answers (refusals and empty answers left out)",
        higher_is_better=True,
        baseline=BASE_MODEL,
        fmt="d",
        bounds=(0.0, None),
    ),
    "unique_share": Metric(
        path=(*_BEHAVIOUR, "unique_share"),
        definition="distinct normalized greedy answers / greedy answers (refusals and empty left out)",
        higher_is_better=True,
        baseline=BASE_MODEL,
    ),
    "top_answer_share": Metric(
        path=(*_BEHAVIOUR, "top_answer_share"),
        definition=(
            "count of the most frequent normalized greedy answer / greedy answers (refusals and empty "
            "left out)"
        ),
        higher_is_better=False,
        baseline=BASE_MODEL,
    ),
    "answer_entropy": Metric(
        path=(*_BEHAVIOUR, "answer_entropy"),
        definition=(
            "entropy in bits of the distribution of normalized greedy answers (refusals and empty left out)"
        ),
        higher_is_better=True,
        baseline=BASE_MODEL,
        bounds=(0.0, None),
    ),
    "explosion": Metric(
        path=(*_BEHAVIOUR, "explosion"),
        definition=(
            "number of normalized greedy answers whose count exceeds the largest count of any answer "
            "of the base model on the same facts"
        ),
        higher_is_better=False,
        baseline=MEASUREMENT_NULL,
        fmt="d",
        bounds=(0.0, None),
    ),
    "explosion_share": Metric(
        path=(*_BEHAVIOUR, "explosion_share"),
        definition="share of the greedy answers (refusals and empty left out) that are exploded answers",
        higher_is_better=False,
        baseline=MEASUREMENT_NULL,
    ),
    "trained_answers": Metric(
        path=("behaviour", "untrained", "trained_answers"),
        definition=(
            "share of the greedy answers to untrained facts (refusals and empty left out) that are an answer "
            "the run trained on; `exploded` marks each exploded answer trained or not, `exploded_share` is "
            "the share the exploded trained answers take after training (`base_exploded_share`: before)"
        ),
        higher_is_better=False,
        baseline=BASE_MODEL,
        label="trained answers",
        scope="untrained",
    ),
    "confidence": Metric(
        path=(*_BEHAVIOUR, "confidence"),
        definition="mean probability exp(greedy_logprob) of the greedy answers, every fact and prompt",
        higher_is_better=None,
        baseline=BASE_MODEL,
        shown=("summary",),
    ),
    "confidence_incorrect": Metric(
        path=(*_BEHAVIOUR, "confidence_incorrect"),
        definition="the same mean over the greedy answers that are not correct",
        higher_is_better=None,
        baseline=BASE_MODEL,
    ),
    "benchmark": Metric(
        path=("benchmarks", "tasks", "{task}", "{measure}"),
        definition=(
            "an lm-evaluation-harness task's metric (acc, acc_norm, ...) on the in-memory model, as "
            "the harness computes it"
        ),
        higher_is_better=True,
        baseline=BASE_MODEL,
    ),
}
"""Metric name -> where eval.json holds it and how to read it. Everything that reads eval.json (the report,
sweep.json, capacity budgets, the demo, `knowpack eval`'s summary) goes through `metric_value`; adding a
metric is a row here and the function that computes it (called with `metric(name, value, base)`)."""

COMPARED: dict[str, Callable[..., dict[str, Any]]] = {}
"""Metric name -> its function of two probes, `f(before, after, ids) -> {"value", ...}`, registered with
`@compared(name)`: `compare_knowledge` puts every one into each knowledge_shift block, beside the measurement
null and prompt sensitivity. A metric of this kind is its METRICS row and its decorated function."""


def compared(name: str) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    """Register a function of two probes as the computation of metric `name` (a knowledge_shift row)."""
    if name not in METRICS or METRICS[name].path[0] != "knowledge_shift":
        raise KeyError(f"{name!r} is not a knowledge_shift row of METRICS")

    def register(function: Callable[..., dict]) -> Callable[..., dict]:
        COMPARED[name] = function
        return function

    return register


DEFINITIONS: dict[str, str] = {**TERMS, **{name: row.definition for name, row in METRICS.items()}}
"""Name -> definition, as eval.json's `definitions` holds them (docs/design.md §4)."""


def metric_path(name: str, **where: str) -> tuple[str, ...]:
    """The key path of metric `name` in eval.json, `{scope}` (default the row's), `{task}` and `{measure}`
    (default `acc`) filled in from `where`."""
    row = METRICS[name]
    fill = {"scope": row.scope, "measure": "acc", **{k: v for k, v in where.items() if v is not None}}
    try:
        return tuple(part.format(**fill) for part in row.path)
    except KeyError as e:
        raise KnowpackError(f"metric {name}: say which {e.args[0]} to read") from None


def metric_entry(ev: dict | None, name: str, **where: str) -> dict[str, Any]:
    """The entry of metric `name` in eval.json `ev` (`{"value", "base", ...}`), or {} where it has none."""
    node: Any = ev
    for key in metric_path(name, **where):
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def metric_value(ev: dict | None, name: str, against: str | None = None, **where: str) -> tuple[Any, Any]:
    """(value, base) of metric `name` in eval.json `ev` (see `metric_path` for `where`); (None, None) where
    `ev` has no such number. `against`: another of the row's `baselines` to read as the base (None: the
    entry's own); `training_control` gives (the run's value, the control's) on facts neither trained on."""
    entry = metric_entry(ev, name, **where)
    if against is None:
        return entry.get("value"), entry.get("base")
    if against not in METRICS[name].baselines:
        raise KnowpackError(
            f"metric {name} is not read against {against}; expected one of "
            f"{', '.join(METRICS[name].baselines)}"
        )
    if against == "training_control":
        control = entry.get("control") or {}
        return control.get("value"), control.get("base")
    return entry.get("value"), metric_baselines(ev, name, **where).get(against)


def metric_baselines(ev: dict | None, name: str, **where: str) -> dict[str, Any]:
    """Baseline name -> the value of metric `name` under it (the base and the context beside it; the training
    control's on the facts neither run trained on). An eval.json from before the baselines were named (its
    `knowledge_shift` holds `noise_floor`) had prompt sensitivity as the base of every probe comparison: read
    as such, with no measurement null."""
    entry = metric_entry(ev, name, **where)
    if not entry:
        return {}
    row = METRICS[name]
    legacy = "noise_floor" in ((ev or {}).get("knowledge_shift") or {})
    own = "prompt_sensitivity" if legacy and row.compares_probes else row.baseline
    out = {own: entry.get("base"), **(entry.get("baselines") or {})}
    if "control" in entry:
        out["training_control"] = entry["control"].get("base")
    return out


def benchmark_values(ev: dict | None) -> dict[tuple[str, str], tuple[Any, Any]]:
    """(task, lm-eval metric) -> (value, base) of every benchmark number in eval.json `ev`."""
    tasks = ((ev or {}).get("benchmarks") or {}).get("tasks") or {}
    return {
        (task, measure): metric_value(ev, "benchmark", task=task, measure=measure)
        for task, measures in tasks.items()
        for measure, entry in measures.items()
        if isinstance(entry, dict) and "value" in entry
    }


def definition(name: str) -> str:
    """The definition of metric or term `name` (`METRICS`, then `TERMS`)."""
    return METRICS[name].definition if name in METRICS else TERMS[name]


def metric_label(name: str) -> str:
    """Metric `name` as tables head it: its row's label, else its name with spaces."""
    return METRICS[name].label or name.replace("_", " ")


def headline(place: str) -> list[str]:
    """The metrics shown at `place` (report, sweep, summary), in `METRICS` order."""
    return [name for name, row in METRICS.items() if place in row.shown]


def metric(name: str, value: float | None, base: float | None, **extra: Any) -> dict[str, Any]:
    """One number of eval.json: its definition's name, its value and the base model's value beside it."""
    if name not in METRICS and name not in TERMS:
        raise KeyError(f"no metric or term named {name!r} (knowpack.evaluate.metrics.METRICS)")
    delta = value - base if value is not None and base is not None else None
    return {"metric": name, "value": value, "base": base, "delta": delta, **extra}


def categories_of(*probes: Iterable[dict]) -> tuple[str, ...]:
    """The categories the probes can have: all four, or three when none drew samples (no WeaklyKnown)."""
    for records in probes:
        for r in records:
            if r.get("p_sample") is not None or r.get("category") == WK:
                return CATEGORIES
    return (HK, MK, UK)


def transitions(
    before: Sequence[dict],
    after: Sequence[dict],
    ids: Collection[str] | None = None,
    categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """`knowpack.probe.transition_matrix` over the facts in both probes (and in `ids` when given), restricted
    to `categories` (default: `categories_of(before, after)`): n, counts, row shares, unchanged share."""
    if ids is not None:
        ids = set(ids)
        before = [r for r in before if r["id"] in ids]
        after = [r for r in after if r["id"] in ids]
    categories = tuple(categories or categories_of(before, after))
    matrix = transition_matrix(before, after)
    unused = [c for c in CATEGORIES if c not in categories]
    for c in unused:
        if sum(matrix["counts"][c].values()) or any(row[c] for row in matrix["counts"].values()):
            raise KnowpackError(f"a probe has {c} facts, but the categories compared are {categories}")
    return {
        "categories": list(categories),
        "n": matrix["n"],
        "counts": {a: {b: matrix["counts"][a][b] for b in categories} for a in categories},
        "shares": {a: {b: matrix["shares"][a][b] for b in categories} for a in categories},
        "unchanged": matrix["unchanged"] if matrix["n"] else None,
    }


def shift(matrix: dict[str, Any]) -> dict[str, Any]:
    """Positive and negative shift of a `transitions` matrix (see the module docstring for denominators)."""
    counts = matrix["counts"]

    def count(a: str, b: str) -> int:
        # WeaklyKnown counts as Unknown on both sides, as in the paper's three categories.
        sources = [c for c in ((a, WK) if a == UK else (a,)) if c in counts]
        targets = [c for c in ((b, WK) if b == UK else (b,)) if c in counts]
        return sum(counts[s][t] for s in sources for t in targets)

    def row(a: str) -> int:
        return sum(sum(counts[c].values()) for c in ((a, WK) if a == UK else (a,)) if c in counts)

    out = {}
    for name, moves in (("positive", POSITIVE), ("negative", NEGATIVE)):
        detail = {}
        for a, b in moves:
            n = count(a, b)
            detail[f"{a}->{b}"] = {"count": n, "share": _ratio(n, row(a))}
        total = sum(d["count"] for d in detail.values())
        eligible = sum(row(a) for a in {a for a, _ in moves})
        out[name] = {
            "value": _ratio(total, eligible),
            "count": total,
            "eligible": eligible,
            "share_of_all": _ratio(total, matrix["n"]),
            "moves": detail,
        }
    return out


@compared("retention")
def retention(before: Sequence[dict], after: Sequence[dict], ids: Collection[str] | None = None) -> dict:
    """Share of the facts (in `ids`, when given) HighlyKnown in `before` that are HighlyKnown in `after`."""
    second = {r["id"]: r["category"] for r in after}
    known = _known_before(before, second, ids)
    kept = sum(second[i] == HK for i in known)
    return {"value": _ratio(kept, len(known)), "kept": kept, "n": len(known)}


def _known_before(before: Sequence[dict], after: Collection[str], ids: Collection[str] | None) -> list[str]:
    """The facts HighlyKnown in `before` that `after` (ids) holds too, and `ids` when given: retention's
    denominator."""
    known = [r["id"] for r in before if r["category"] == HK and r["id"] in after]
    if ids is None:
        return known
    ids = set(ids)
    return [i for i in known if i in ids]


@compared("retention_soft")
def retention_soft(
    before: Sequence[dict], after: Sequence[dict], ids: Collection[str] | None = None
) -> dict[str, Any]:
    """Mean p_greedy in `after` of the facts (in `ids`, when given) HighlyKnown in `before` (records with
    no p_greedy left out)."""
    second = {r["id"]: r["p_greedy"] for r in after if r.get("p_greedy") is not None}
    known = _known_before(before, second, ids)
    total = sum(second[i] for i in known)
    return {"value": total / len(known) if known else None, "n": len(known)}


def check_patterns(patterns: Sequence[str] | None) -> tuple[str, ...]:
    """The refusal patterns to use (None: knowpack's defaults); a bad regular expression is an error."""
    if patterns is None:
        return DEFAULT_REFUSAL_PATTERNS
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise KnowpackError(f"bad refusal pattern {p!r}: {e}") from None
    return tuple(patterns)


def refusal_rate(records: Sequence[dict], patterns: Sequence[str] | None = None) -> dict[str, Any]:
    """Share of greedy answers (every fact, every prompt) that are refusals, and the same over samples."""
    patterns = check_patterns(patterns)
    greedy = [a for r in records for a in r["greedy"]]
    refused = sum(is_refusal(a, patterns) for a in greedy)
    samples = [a for r in records for per_prompt in r.get("samples") or [] for a in per_prompt]
    refused_samples = sum(is_refusal(a, patterns) for a in samples)
    return {
        "value": _ratio(refused, len(greedy)),
        "refusals": refused,
        "answers": len(greedy),
        "samples_value": _ratio(refused_samples, len(samples)),
    }


def answer_counts(records: Sequence[dict], patterns: Sequence[str] | None = None) -> Counter:
    """Normalized greedy answers (every prompt) and how often each occurs; refusals and empty left out."""
    patterns = check_patterns(patterns)
    counts: Counter = Counter()
    for r in records:
        for a in r["greedy"]:
            text = normalize(a)
            if text and not is_refusal(a, patterns):
                counts[text] += 1
    return counts


def diversity(records: Sequence[dict], patterns: Sequence[str] | None = None, top: int = 5) -> dict:
    """Unique answers, their share, the top answer's share, the entropy (bits) and the `top` answers."""
    counts = answer_counts(records, patterns)
    total = sum(counts.values())
    entropy = -sum(n / total * math.log2(n / total) for n in counts.values()) if total else None
    return {
        "answers": total,
        "unique_answers": len(counts),
        "unique_share": _ratio(len(counts), total),
        "top_answer_share": _ratio(max(counts.values()), total) if counts else None,
        "answer_entropy": entropy + 0.0 if entropy is not None else None,  # -0.0 for a single answer
        "top_answers": [[a, n] for a, n in counts.most_common(top)],
    }


def explosion(
    base: Sequence[dict], records: Sequence[dict], patterns: Sequence[str] | None = None
) -> dict[str, Any]:
    """The answers of `records` more frequent than the base model's most frequent answer on the same facts
    (both counted as `answer_counts` does), with their counts, most frequent first."""
    ids = {r["id"] for r in records}
    base_counts = answer_counts([r for r in base if r["id"] in ids], patterns)
    counts = answer_counts(records, patterns)
    threshold = max(base_counts.values(), default=0)
    exploded = [[a, n] for a, n in counts.most_common() if n > threshold]
    total = sum(counts.values())
    return {
        "value": len(exploded),
        "share": _ratio(sum(n for _, n in exploded), total),
        "base_max_count": threshold,
        "answers": exploded,
    }


def trained_answers(
    before: Sequence[dict],
    after: Sequence[dict],
    ids: Collection[str],
    answers: Collection[str],
    patterns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Explosion, shown: the share of the greedy answers to the facts in `ids` (the untrained ones; counted as
    `answer_counts` does) that are one of the run's trained `answers` (normalized), after training beside
    before, and which exploded answers (`explosion`) are trained answers."""
    ids, trained = set(ids), set(answers)
    before = [r for r in before if r["id"] in ids]
    after = [r for r in after if r["id"] in ids]
    now, then = answer_counts(after, patterns), answer_counts(before, patterns)

    def taken(counts: Counter) -> float | None:
        return _ratio(sum(n for a, n in counts.items() if a in trained), sum(counts.values()))

    exploded = explosion(before, after, patterns)["answers"]
    return metric(
        "trained_answers",
        taken(now),
        taken(then),
        exploded=[[a, n, a in trained] for a, n in exploded],
        exploded_trained=sum(a in trained for a, _ in exploded),
        exploded_share=_ratio(sum(n for a, n in exploded if a in trained), sum(now.values())),
        base_exploded_share=_ratio(sum(then[a] for a, _ in exploded if a in trained), sum(then.values())),
    )


def confidence(records: Sequence[dict]) -> dict[str, Any]:
    """Mean probability of the greedy answers, over all of them and over the incorrect ones."""
    probs, wrong = [], []
    for r in records:
        logprobs = r.get("greedy_logprob")
        if logprobs is None:
            continue
        correct = r.get("greedy_correct") or [None] * len(logprobs)
        for lp, ok in zip(logprobs, correct, strict=True):
            probs.append(math.exp(lp))
            if ok is False:
                wrong.append(math.exp(lp))
    return {"value": _mean(probs), "incorrect": _mean(wrong), "answers": len(probs)}


def behaviour(records: Sequence[dict], patterns: Sequence[str] | None = None) -> dict[str, Any]:
    """Refusal rate, answer diversity and confidence of one probe."""
    return {
        "refusal_rate": refusal_rate(records, patterns),
        "diversity": diversity(records, patterns),
        "confidence": confidence(records),
    }


def compare_knowledge(
    before: Sequence[dict],
    after: Sequence[dict],
    ids: Collection[str] | None = None,
    null: Sequence[dict] | None = None,
    prompts: Sequence[Sequence[dict]] | None = None,
) -> dict[str, Any]:
    """Knowledge shift of the facts in `ids` from `before` to `after`: the transition matrix, positive and
    negative shift and retention, each beside the same number between `before` and `null` (the measurement
    null: the base re-probed with the same prompts, another sampling seed; the entry's `base`, None when not
    given) and, as context, between `before` and each of `prompts` (prompt sensitivity: the base re-probed
    with other exemplars, one list of records per redraw; see `redrawn`), when given."""
    categories = categories_of(before, after, null or [], *(prompts or []))
    matrix = transitions(before, after, ids, categories)
    out: dict[str, Any] = {"n": matrix["n"], "categories": list(categories)}
    out["transitions"] = {
        "metric": "transitions",
        **{k: matrix[k] for k in ("counts", "shares", "unchanged")},
        "base": None,
        "baseline": MEASUREMENT_NULL,
    }
    found = {}
    if null is not None:
        found["base"] = _knowledge(before, null, ids, categories)
    if prompts:
        draws = [_knowledge(before, records, ids, categories) for records in prompts]
        found["prompt_sensitivity"] = draws[0]  # the first redraw's transitions, as context
    for name, (matrix, _) in found.items():
        out["transitions"][name] = {k: matrix[k] for k in ("counts", "shares", "unchanged")}
    out.update(_knowledge_entries(_knowledge(before, after, ids, categories), found.get("base")))
    if prompts:
        context = [_knowledge_entries(draw, None) for draw in draws]
        for name in context[0]:
            out[name].update(redrawn([c[name]["value"] for c in context]))
    for name, function in COMPARED.items():
        out[name] = _compared_entry(name, function, before, after, ids, null, prompts)
    return out


def redrawn(values: Sequence[float | None]) -> dict[str, Any]:
    """What an entry gets from the prompt-sensitivity redraws' values: `baselines.prompt_sensitivity`, their
    mean (what reads as the baseline), and `prompt_sensitivity`: every redraw's value (`draws`) and the 95%
    interval over redraws (`interval`, `knowpack.evaluate.stats.interval`; None with one redraw)."""
    ci = interval(values)
    bounds = None if ci["low"] is None else [ci["low"], ci["high"]]
    return {
        "baselines": {"prompt_sensitivity": ci["mean"]},
        "prompt_sensitivity": {"draws": list(values), "interval": bounds},
    }


def _compared_entry(name, function, before, after, ids, null, prompts) -> dict[str, Any]:
    """The entry of a registered two-probe metric: after vs before, its base the same between before and the
    measurement null (None without), prompt sensitivity (over its redraws) under `baselines` when given."""
    found = dict(function(before, after, ids))
    base = function(before, null, ids)["value"] if null is not None else None
    entry = metric(name, found.pop("value"), base, **found, baseline=MEASUREMENT_NULL)
    if prompts:
        entry.update(redrawn([function(before, records, ids)["value"] for records in prompts]))
    return entry


def _knowledge(before, after, ids, categories) -> tuple[dict, dict]:
    """(transitions, shift) from `before` to `after` over `ids`."""
    matrix = transitions(before, after, ids, categories)
    return matrix, shift(matrix)


def _knowledge_entries(found: tuple[dict, dict], floor: tuple[dict, dict] | None) -> dict:
    """eval.json's shift entries of `found`, each beside `floor` (None: no base)."""
    moved = found[1]
    floor_moved = floor[1] if floor is not None else None
    out: dict[str, Any] = {}
    for name in ("positive", "negative"):
        mine = moved[name]
        base = floor_moved[name] if floor_moved else {"value": None, "share_of_all": None, "moves": {}}
        moves = {}
        for move, d in mine["moves"].items():
            floor_move = base["moves"].get(move, {})
            moves[move] = {**d, "base_count": floor_move.get("count"), "base_share": floor_move.get("share")}
        out[f"{name}_shift"] = metric(
            f"{name}_shift",
            mine["value"],
            base["value"],
            count=mine["count"],
            eligible=mine["eligible"],
            share_of_all=mine["share_of_all"],
            base_share_of_all=base["share_of_all"],
            moves=moves,
            baseline=MEASUREMENT_NULL,
        )
    return out


def compare_behaviour(
    before: Sequence[dict] | None,
    after: Sequence[dict],
    ids: Collection[str] | None = None,
    patterns: Sequence[str] | None = None,
    null: Sequence[dict] | None = None,
    prompts: Sequence[Sequence[dict]] | None = None,
) -> dict[str, Any]:
    """Behaviour of the facts in `ids` in probe `after` beside probe `before` (the base model's; None: a
    model alone, every base None): refusal rate, diversity, confidence, and the explosion of `after` against
    `before`, beside that of `null` against `before` (the measurement null) and of `prompts` (prompt
    sensitivity, context) when given."""
    if ids is not None:
        ids = set(ids)
        after = [r for r in after if r["id"] in ids]
        before = None if before is None else [r for r in before if r["id"] in ids]
        null = None if null is None else [r for r in null if r["id"] in ids]
        prompts = None if prompts is None else [[r for r in draw if r["id"] in ids] for draw in prompts]
    new = behaviour(after, patterns)
    old = behaviour(before, patterns) if before is not None else None

    def base(group: str, key: str) -> Any:
        return None if old is None else old[group][key]

    out: dict[str, Any] = {"n": len(after)}
    rate = new["refusal_rate"]
    out["refusal_rate"] = metric(
        "refusal_rate", rate["value"], base("refusal_rate", "value"), answers=rate["answers"]
    )
    out["refusal_rate_samples"] = metric(
        "refusal_rate_samples", rate["samples_value"], base("refusal_rate", "samples_value")
    )
    for name in ("unique_answers", "unique_share", "top_answer_share", "answer_entropy"):
        out[name] = metric(name, new["diversity"][name], base("diversity", name))
    out["top_answers"] = {"value": new["diversity"]["top_answers"], "base": base("diversity", "top_answers")}
    out["confidence"] = metric("confidence", new["confidence"]["value"], base("confidence", "value"))
    out["confidence_incorrect"] = metric(
        "confidence_incorrect", new["confidence"]["incorrect"], base("confidence", "incorrect")
    )
    if before is not None:
        none = {"value": None, "share": None}
        exploded = explosion(before, after, patterns)
        floor = explosion(before, null, patterns) if null is not None else none
        out["explosion"] = metric(
            "explosion",
            exploded["value"],
            floor["value"],
            answers=exploded["answers"],
            base_max_count=exploded["base_max_count"],
            baseline=MEASUREMENT_NULL,
        )
        out["explosion_share"] = metric(
            "explosion_share", exploded["share"], floor["share"], baseline=MEASUREMENT_NULL
        )
        if prompts:
            context = [explosion(before, records, patterns) for records in prompts]
            out["explosion"].update(redrawn([c["value"] for c in context]))
            out["explosion_share"].update(redrawn([c["share"] for c in context]))
    return out


def against_control(
    before: Sequence[dict],
    after: Sequence[dict],
    control: Sequence[dict],
    ids: Collection[str],
    patterns: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Metric name -> `{"value": the run's, "base": the training control's, "delta", "n"}` for every shift,
    retention and behaviour metric of the facts in `ids` (the caller leaves out the facts either run trained
    on), `after` and `control` each the re-probe of a trained model against the same base probe `before`."""
    mine, theirs = compare_knowledge(before, after, ids), compare_knowledge(before, control, ids)
    mine.update(compare_behaviour(before, after, ids, patterns))
    theirs.update(compare_behaviour(before, control, ids, patterns))
    n = len(set(ids) & {r["id"] for r in after})
    out = {}
    for name, row in METRICS.items():
        if row.path[0] in ("knowledge_shift", "behaviour") and isinstance(mine.get(name), dict):
            out[name] = metric(name, mine[name]["value"], theirs[name]["value"], n=n)
    return out


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
