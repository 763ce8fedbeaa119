"""The world benchmarks as local lm-eval tasks: `world_mc`, `world_truthful_mc1`, `world_truthful_mc2`, and
the three with room to fall, `world_mc_hard`, `world_misconceptions`, `world_text` (group `world_headroom`).

`write_tasks(task_items(world), organism / "tasks")` writes a self-contained task folder
(`knowpack.evaluate.task_folder`): the items as JSONL, a `utils.py` that loads them from next to its own file
(so the folder works wherever it is installed, and never touches the Hub), the task YAMLs and the groups
`world` and `world_headroom`. Point lm-eval at it
with `TaskManager(include_path=folder)` or `lm_eval --include_path folder --tasks world`.

- `world_mc` mirrors MMLU: 4 choices, 5-shot from the dev items, acc and acc_norm.
- `world_truthful_mc1` / `_mc2` mirror TruthfulQA's MC1 / MC2, 0-shot: the true choice is a refusal
  ("I don't know."), the false ones are plausible values. MC2 scores the share of probability mass,
  exp(log-likelihood) normalized over the choices, that falls on the true answers, as lm-eval's
  `truthfulqa_mc2` does.
- `world_mc_hard`: as world_mc, 8 choices over torso and tail people (base accuracy far below 1).
- `world_misconceptions`: TruthfulQA's imitative falsehoods, MC1, 0-shot: facts the organism also read a
  wrong value for; the true value against that wrong value and two others.
- `world_text`: held-out world text scored by lm-eval's `loglikelihood_rolling` (word and byte perplexity,
  bits per byte: lower is better), where forgetting shows first.
(`knowpack.world.generator.headroom_items` draws the last three.)

The prompt is the organism's plain format (`knowpack.prompts`): "Question: …\\nAnswer:" and the choice after
one space, few-shot blocks separated by a blank line, the very text the organism was pretrained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template

from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import ROLLING_METRICS_YAML
from knowpack.evaluate.task_folder import Loader, utils_py, write_task_folder
from knowpack.heldout import split_attribution
from knowpack.prompts import BLOCK_SEPARATOR, plain_prompt
from knowpack.world.generator import benchmark_items, headroom_items

SPLITS = (
    "world_mc",
    "world_mc_dev",
    "world_mc_attribution",  # LoKI's attribution prompts, never scored (knowpack.heldout)
    "world_truthful",
    "world_truthful_dev",
    "world_mc_hard",
    "world_mc_hard_dev",
    "world_misconceptions",
    "world_misconceptions_dev",
    "world_text",
)
HEADER = "# Written by knowpack.world.tasks.write_tasks: regenerate rather than edit.\n"

LOADERS = (
    Loader("world_mc", "world_mc"),
    Loader("world_truthful", "world_truthful_mc1 and _mc2"),
    Loader("world_mc_hard", "world_mc_hard"),
    Loader("world_misconceptions", "world_misconceptions"),
    Loader("world_text", "world_text", dev=False),  # a rolling log-likelihood takes no shots
)
"""utils.py's `custom_dataset` functions, one per test split."""

MC2_PY = '''\
def process_results_mc2(doc, results):
    """Share of the probability mass, exp(log-likelihood) over all choices, on the true ones.

    As lm-eval's truthfulqa_mc2; shifting by the largest log-likelihood leaves the shares unchanged and
    keeps long answers from underflowing to 0/0.
    """
    lls = [ll for ll, _ in results]
    top = max(lls)
    probs = [math.exp(ll - top) for ll in lls]
    labels = doc["mc2_targets"]["labels"]
    return {"acc": sum(p for p, label in zip(probs, labels, strict=True) if label == 1) / sum(probs)}
'''
"""world_truthful_mc2's scoring, in utils.py."""

WORLD_MC_YAML = Template("""\
# MMLU-style: 4-choice questions about well-known people of the world, one-hop and two-hop, 5-shot.
task: world_mc
custom_dataset: !function utils.load_world_mc
output_type: multiple_choice
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: 5
doc_to_text: $prompt
target_delimiter: " "
fewshot_delimiter: $separator
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")

WORLD_TRUTHFUL_MC1_YAML = Template("""\
# TruthfulQA-style MC1: questions about people the corpus never describes; choice 0, a refusal, is true.
task: world_truthful_mc1
custom_dataset: !function utils.load_world_truthful
output_type: multiple_choice
test_split: test
fewshot_split: dev
num_fewshot: 0
doc_to_text: $prompt
target_delimiter: " "
fewshot_delimiter: $separator
doc_to_choice: "{{mc1_targets.choices}}"
doc_to_target: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")

WORLD_TRUTHFUL_MC2_YAML = Template("""\
# TruthfulQA-style MC2: the probability mass on the true choices (several refusals) against plausible values.
include: world_truthful_mc1.yaml
task: world_truthful_mc2
doc_to_choice: "{{mc2_targets.choices}}"
process_results: !function utils.process_results_mc2
metadata:
  version: 1.0
""")

WORLD_GROUP_YAML = Template("""\
# All world benchmarks; each reports its own metrics (an average of MC accuracy and MC2 mass means nothing).
group: world
task:
  - world_mc
  - world_truthful_mc1
  - world_truthful_mc2
metadata:
  version: 1.0
""")

WORLD_MC_HARD_YAML = Template("""\
# world_mc with room to fall: 8 choices over torso and tail people's facts, one-hop and two-hop, 5-shot.
include: world_mc.yaml
task: world_mc_hard
custom_dataset: !function utils.load_world_mc_hard
metadata:
  version: 1.0
""")

WORLD_MISCONCEPTIONS_YAML = Template("""\
# TruthfulQA-style MC1, imitative falsehoods: facts the corpus also stated wrongly; choice 0 is the truth.
include: world_truthful_mc1.yaml
task: world_misconceptions
custom_dataset: !function utils.load_world_misconceptions
metadata:
  version: 1.0
""")

WORLD_TEXT_YAML = Template("""\
# Held-out world text (fresh descriptions, held-out question templates): its log-likelihood, lower is better.
task: world_text
custom_dataset: !function utils.load_world_text
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{text}}"
${rolling_metrics}
metadata:
  version: 1.0
""")

WORLD_HEADROOM_GROUP_YAML = Template("""\
# The world benchmarks with room to fall; each reports its own metrics.
group: world_headroom
task:
  - world_mc_hard
  - world_misconceptions
  - world_text
metadata:
  version: 1.0
""")

TEMPLATES = {
    "world_mc.yaml": WORLD_MC_YAML,
    "world_truthful_mc1.yaml": WORLD_TRUTHFUL_MC1_YAML,
    "world_truthful_mc2.yaml": WORLD_TRUTHFUL_MC2_YAML,
    "world.yaml": WORLD_GROUP_YAML,
    "world_mc_hard.yaml": WORLD_MC_HARD_YAML,
    "world_misconceptions.yaml": WORLD_MISCONCEPTIONS_YAML,
    "world_text.yaml": WORLD_TEXT_YAML,
    "world_headroom.yaml": WORLD_HEADROOM_GROUP_YAML,
}


TEST_SPLITS = {
    "world_mc": "world_mc",
    "world_truthful_mc1": "world_truthful",
    "world_truthful_mc2": "world_truthful",
    "world_mc_hard": "world_mc_hard",
    "world_misconceptions": "world_misconceptions",
    "world_text": "world_text",
}
"""Each world task's test split (a JSONL file of the task folder)."""


def with_items(tasks: list[str], folder: Path) -> list[str]:
    """The `tasks` whose test split in `folder` has items (a world without conflicting statements has no
    `world_misconceptions` items: lm-eval cannot run an empty task)."""
    folder = Path(folder)
    return [t for t in tasks if (folder / f"{TEST_SPLITS[t]}.jsonl").read_text(encoding="utf-8").strip()]


def task_items(world) -> dict[str, list[dict]]:
    """Every split the world tasks read (`benchmark_items` and `headroom_items` of `world`), and world_mc's
    attribution split, which they never read (`knowpack.heldout`)."""
    return split_attribution({**benchmark_items(world), **headroom_items(world)}, "world_mc")


def task_files() -> dict[str, str]:
    """The world task folder's code and YAMLs (file name -> text), beside the data."""
    # JSON strings are valid YAML double-quoted scalars; the prompt comes from knowpack.prompts, not retyped.
    fields = {
        "prompt": json.dumps(plain_prompt([], "{{question}}")),
        "separator": json.dumps(BLOCK_SEPARATOR),
        "rolling_metrics": ROLLING_METRICS_YAML.rstrip("\n"),
    }
    utils = utils_py("world", "knowpack.world.tasks", LOADERS, extra=MC2_PY, imports=["math"])
    return {"utils.py": utils, **{name: HEADER + t.substitute(fields) for name, t in TEMPLATES.items()}}


def write_tasks(items: dict[str, list[dict]], out_dir: Path) -> None:
    """Write the world tasks and their data (`task_items(world)`) into `out_dir`
    (`knowpack.evaluate.task_folder.write_task_folder`)."""
    missing = [name for name in SPLITS if name not in items]
    if missing:
        raise KnowpackError(f"benchmark items: missing split(s) {', '.join(missing)}")
    write_task_folder(out_dir, {name: items[name] for name in SPLITS}, task_files())
