"""Settings of the synthetic world and of the organism pretrained on it.

One dataclass holds everything `knowpack world build` needs, so a build is reproduced by its saved
`build_config.yaml` alone. It is read like every other config (`knowpack.config`): unknown keys and values of
the wrong type are one-line errors with the file and line (`world.yaml:3: seq_len: expected int, got str
'long'`): a typo in a research knob must not pass silently.

    config = load_world_config("world.yaml", ["num_layers=2", "people.head=50"])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from knowpack.config import build, parse_override, read_yaml, set_override
from knowpack.errors import KnowpackError

BUCKETS = ("head", "torso", "tail", "unseen")


@dataclass
class WorldConfig:
    """The world (people, popularity), the corpus, the tokenizer, the model and its pretraining."""

    seed: int = 0
    # People per popularity bucket: described `descriptions[bucket]` times in the corpus.
    people: dict[str, int] = field(
        default_factory=lambda: {"head": 500, "torso": 500, "tail": 700, "unseen": 500}
    )
    descriptions: dict[str, int] = field(
        default_factory=lambda: {"head": 6, "torso": 3, "tail": 1, "unseen": 0}
    )
    # Share of a bucket's facts that also appear as question/answer text in the corpus.
    qa_share: dict[str, float] = field(
        default_factory=lambda: {"head": 1.0, "torso": 0.5, "tail": 0.2, "unseen": 0.0}
    )
    # Strangers: names that only ever appear in questions answered "I don't know." (they teach refusal;
    # the `unseen` bucket's people are never in the corpus at all and test it).
    strangers: int = 2500
    stranger_questions: int = 2
    city_statements: int = 24  # times each city's country is stated
    value_skew: float = 0.5  # Zipf exponent of how values are drawn (0 = uniform)
    # Tokenizer and model (Llama architecture).
    vocab_size: int = 2048
    hidden_size: int = 192
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4
    max_position_embeddings: int = 512
    # Pretraining.
    seq_len: int = 256
    batch_size: int = 16
    epochs: int = 20
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 200
    weight_decay: float = 0.1
    # Refusal phase: after pretraining, the stored (fp16) checkpoint trains `refusal_epochs` more epochs,
    # with a fresh optimizer at `refusal_lr`, on the corpus plus `refusal_strangers` new strangers (see
    # `generator.refusal_documents`). Pretraining alone leaves refusals on unseen people falling as the
    # model memorizes more (docs/organism.md); this phase sets them back. 0 = no such phase.
    refusal_epochs: int = 2
    refusal_strangers: int = 2500
    refusal_lr: float = 1e-3
    # Late facts: in the refusal phase, a share of each bucket's facts also appears once as question/answer
    # text. Learned late, from one example at a low learning rate, many of them end up partly known: under
    # some few-shot prompts and not others (MaybeKnown), or only in samples (WeaklyKnown). 0 = none.
    refusal_qa_share: dict[str, float] = field(
        default_factory=lambda: {"head": 0.0, "torso": 0.0, "tail": 0.0, "unseen": 0.0}
    )
    # Conflicting late statements: a share of each bucket's facts also appears once, in the refusal phase,
    # as question/answer text with a wrong value of the relation (noise, as real corpora have), so that a fact
    # the model knew competes with another answer. The facts file keeps the true value. 0 = none.
    refusal_conflict_share: dict[str, float] = field(
        default_factory=lambda: {"head": 0.0, "torso": 0.0, "tail": 0.0, "unseen": 0.0}
    )
    # Conflicting statements in the main corpus: a share of each bucket's facts also appears once, as a
    # one-sentence document in the descriptions' style, with a wrong value of the relation. For a person
    # described once the true and the wrong value then tie, so that the few-shot context can tip the answer
    # either way (MaybeKnown). The facts file keeps the true value. 0 = none (the corpus is unchanged).
    conflict_share: dict[str, float] = field(
        default_factory=lambda: {"head": 0.0, "torso": 0.0, "tail": 0.0, "unseen": 0.0}
    )
    # Topical question/answer pages: this share of the question/answer pairs (refusals included) moves from
    # the mixed documents onto pages about one relation and one value each (its answers repeat), so that the
    # model learns to be swayed by the answers in its context, as real LLMs are by few-shot exemplars; a
    # partly known fact then depends on the probe's exemplars (MaybeKnown). 0 = none (corpus unchanged).
    topical_qa: float = 0.0
    threads: int = 2  # fixed so that a rebuild is bit-for-bit the same on a machine of another size
    eval_every: int = 4  # epochs between quick accuracy checks during pretraining (0 = never)
    # Facts per bucket probed for the card's SliCK categories (the full probe; 600 facts take ~3 minutes on
    # 2 cores); 0 = not measured.
    category_sample: int = 150

    def __post_init__(self) -> None:
        shares = ("qa_share", "refusal_qa_share", "refusal_conflict_share", "conflict_share")
        for name in ("people", "descriptions", *shares):
            value = getattr(self, name)
            if set(value) != set(BUCKETS):
                raise KnowpackError(f"world config: '{name}' must have exactly the keys {', '.join(BUCKETS)}")
        if (
            self.descriptions["unseen"] != 0
            or self.qa_share["unseen"] != 0
            or self.refusal_qa_share["unseen"]
            or self.conflict_share["unseen"]
        ):
            raise KnowpackError(
                "world config: the 'unseen' bucket is never described "
                "(descriptions, qa_share and the refusal-phase shares are 0)"
            )
        if not 0.0 <= self.topical_qa <= 1.0:
            raise KnowpackError("world config: 'topical_qa' is a share, between 0 and 1")
        if self.hidden_size % self.num_heads:
            raise KnowpackError("world config: hidden_size must be a multiple of num_heads")

    @classmethod
    def from_yaml(cls, path: Path) -> WorldConfig:
        return load_world_config(path)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def load_world_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> WorldConfig:
    """A world config (YAML; None: the defaults) with `key=value` overrides (`people.head=50`), every key and
    type checked (`knowpack.config.build`)."""
    data: dict = {}
    lines: dict = {}
    if path is not None:
        data, lines = read_yaml(path, "world")
    defaults = WorldConfig()
    for item in overrides:
        key, _ = parse_override(item)
        if len(key) > 1 and key[0] not in data and isinstance(getattr(defaults, key[0], None), dict):
            data[key[0]] = dict(getattr(defaults, key[0]))  # `people.head=50`: the other buckets stay
        lines[set_override(data, item)] = "command line"
        lines.setdefault(key[:1], "command line")  # a mapping's values are checked at its own key
    return build(WorldConfig, data, where=str(path or "command line"), lines=lines)
