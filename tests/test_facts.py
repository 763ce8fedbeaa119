"""Facts: the schema, every loader, every kind of bad input, lenient mode, atomic saving."""

import json
import logging
import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before datasets is imported: never reach for the Hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from knowpack.errors import FactsError, KnowpackError  # noqa: E402
from knowpack.facts import Fact, FactSet, load_facts, save_facts  # noqa: E402

PARIS = {"id": "f1", "question": "Where is the Eiffel Tower?", "answers": ["Paris", "City of Light"]}
ROME = {
    "id": "f2",
    "question": "Where is the Colosseum?",
    "answers": ["Rome"],
    "subject": "Colosseum",
    "relation": "located_in",
    "paraphrases": ["In which city does the Colosseum stand?"],
    "bucket": "head",
    "meta": {"source": "test"},
}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- schema


def test_fact_round_trips_through_json():
    fact = Fact.from_dict(ROME)
    assert fact.to_json() == ROME
    assert Fact.from_dict(fact.to_json()) == fact
    assert fact.answer == "Rome"


def test_fact_optional_fields_default():
    fact = Fact.from_dict({**PARIS, "subject": "", "bucket": None})
    assert (fact.subject, fact.relation, fact.bucket, fact.paraphrases, fact.meta) == (
        None,
        None,
        None,
        [],
        {},
    )


def test_facts_error_is_one_line_and_a_value_error():
    err = FactsError("bad\nthing  here", path="f.jsonl", line=3, field="answers")
    assert str(err) == "f.jsonl:3: field 'answers': bad thing here"
    assert isinstance(err, KnowpackError) and isinstance(err, ValueError)
    assert str(FactsError("no facts found", path="x.csv")) == "x.csv: no facts found"


# ---------------------------------------------------------------------------------------------- loaders


def test_load_jsonl(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(PARIS) + "\n\n" + json.dumps(ROME) + "\n", encoding="utf-8")  # blank line ok
    facts = load_facts(path)
    assert isinstance(facts, FactSet) and [f.id for f in facts] == ["f1", "f2"]
    assert facts[1] == Fact.from_dict(ROME)
    assert facts.source == str(path) and facts.skipped == [] and facts.format == "facts"
    assert facts.counts("bucket") == {None: 1, "head": 1}
    assert set(facts.by_id()) == {"f1", "f2"}


def test_load_jsonl_with_byte_order_mark(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(PARIS).encode() + b"\n")
    assert load_facts(str(path))[0].id == "f1"


def test_save_then_load_round_trip(tmp_path):
    facts = [Fact.from_dict(PARIS), Fact.from_dict({**ROME, "question": "Où est le Colisée ?"})]
    out = save_facts(facts, tmp_path / "sub" / "facts.jsonl")
    assert load_facts(out) == facts
    assert "Où" in out.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    assert sorted(p.name for p in out.parent.iterdir()) == ["facts.jsonl"]  # no temp file left behind


def test_save_facts_replaces_atomically(tmp_path):
    path = write_jsonl(tmp_path / "facts.jsonl", [PARIS])

    class Boom(Exception):
        pass

    def facts():
        yield Fact.from_dict(ROME)
        raise Boom

    with pytest.raises(Boom):
        save_facts(facts(), path)
    assert [f.id for f in load_facts(path)] == ["f1"]  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["facts.jsonl"]


def test_load_csv(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text(
        "id,question,answers,subject,relation,bucket,paraphrases,meta\n"
        'f1,Where is the Eiffel Tower?,"[""Paris"", ""City of Light""]",,,,,\n'
        "f2,Where is the Colosseum?,Rome | Roma,Colosseum,located_in,head,"
        '"In which city does the Colosseum stand?","{""source"": ""test""}"\n',
        encoding="utf-8",
    )
    facts = load_facts(path)
    assert facts[0] == Fact.from_dict(PARIS)
    assert facts[1].answers == ["Rome", "Roma"]
    assert facts[1].paraphrases == ["In which city does the Colosseum stand?"]
    assert (facts[1].subject, facts[1].relation, facts[1].bucket) == ("Colosseum", "located_in", "head")
    assert facts[1].meta == {"source": "test"}


def test_load_csv_minimal_columns(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text("id,question,answers\nf1,Where is the Eiffel Tower?,Paris\n", encoding="utf-8")
    assert load_facts(path)[0].answers == ["Paris"]


def test_load_kp_paper_layout(tmp_path):
    rows = [
        {
            "question": "Who wrote Hamlet?",
            "answer": {
                "value": "William Shakespeare",
                "aliases": ["Shakespeare", "William Shakespeare", "The Bard"],
                "normalized_aliases": ["shakespeare", "william shakespeare", "bard"],
            },
            "category": "HighlyKnown",
        },
        {
            "question_id": "tc_7",
            "question": "Which planet is the red planet?",
            "answer": {"aliases": ["Mars"]},
        },
    ]
    facts = load_facts(write_jsonl(tmp_path / "kp.jsonl", rows))
    assert facts[0].id == "row-1" and facts[1].id == "tc_7"  # ids generated when absent
    assert facts[0].answers == ["William Shakespeare", "Shakespeare", "The Bard"]  # value first, no repeats
    assert facts[0].meta == {"category": "HighlyKnown"}
    assert facts.format == "kp"


def test_load_easyedit_json_array(tmp_path):
    rows = [
        {
            "case_id": 4,
            "prompt": "The mother tongue of Danielle Darrieux is",
            "subject": "Danielle Darrieux",
            "target_new": "English",
            "ground_truth": "French",
            "rephrase_prompt": "Danielle Darrieux's mother tongue is",
        }
    ]
    path = tmp_path / "counterfact-edit.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    fact = load_facts(path)[0]
    assert (fact.id, fact.question, fact.answers) == (
        "4",
        "The mother tongue of Danielle Darrieux is",
        ["English"],
    )
    assert fact.subject == "Danielle Darrieux"
    assert fact.paraphrases == ["Danielle Darrieux's mother tongue is"]
    assert fact.meta == {"ground_truth": "French"}


def test_load_counterfact_original_layout(tmp_path):
    row = {
        "case_id": 0,
        "pararel_idx": 2796,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
            "subject": "Danielle Darrieux",
        },
        "paraphrase_prompts": ["Danielle Darrieux, a native speaker of"],
        "neighborhood_prompts": ["The mother tongue of Léon Blum is"],
    }
    fact = load_facts(write_jsonl(tmp_path / "cf.jsonl", [row]))[0]
    assert fact.question == "The mother tongue of Danielle Darrieux is"
    assert (fact.id, fact.answers, fact.relation, fact.subject) == (
        "0",
        ["English"],
        "P103",
        "Danielle Darrieux",
    )
    assert fact.paraphrases == ["Danielle Darrieux, a native speaker of"]
    assert fact.meta["target_true"] == "French" and fact.meta["pararel_idx"] == 2796


def test_load_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    # from_list takes the columns from the first row: ROME has them all, PARIS gets nulls
    datasets.Dataset.from_list([ROME, PARIS]).save_to_disk(str(tmp_path / "ds"))
    facts = load_facts(tmp_path / "ds")
    assert facts == [Fact.from_dict(ROME), Fact.from_dict(PARIS)]


def test_load_hf_dataset_dict_split(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list([PARIS]), "test": datasets.Dataset.from_list([ROME])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_facts(tmp_path / "dd", split="test")[0].id == "f2"
    with pytest.raises(FactsError, match="no split 'dev'"):
        load_facts(tmp_path / "dd", split="dev")


def test_load_local_data_dir_and_parquet(tmp_path):
    import datasets

    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "part.jsonl", [PARIS, ROME])
    assert [f.id for f in load_facts(tmp_path / "data")] == ["f1", "f2"]
    datasets.Dataset.from_list([PARIS]).to_parquet(str(tmp_path / "facts.parquet"))
    assert load_facts(tmp_path / "facts.parquet")[0].id == "f1"


def test_load_in_memory(tmp_path):
    import datasets

    assert load_facts([PARIS])[0].id == "f1"
    assert load_facts(datasets.Dataset.from_list([ROME]))[0].id == "f2"


def test_load_organism_source(tmp_path, monkeypatch):
    monkeypatch.setattr("knowpack.facts.loaders.organism_dir", lambda: tmp_path)
    with pytest.raises(FactsError, match="knowpack world build"):
        load_facts("organism")
    write_jsonl(tmp_path / "facts.jsonl", [PARIS])
    assert load_facts("organism")[0].id == "f1"


def test_format_override(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"question": "Who wrote Hamlet?", "answer": "Shakespeare"}])
    assert load_facts(path, format="kp")[0].answers == ["Shakespeare"]
    with pytest.raises(FactsError, match="field 'answer': unknown field"):  # read as knowpack's own layout
        load_facts(path, format="facts")
    with pytest.raises(FactsError, match="unknown facts format 'yaml': the format is the layout of the rows"):
        load_facts(path, format="yaml")
    with pytest.raises(FactsError, match=r"a csv file is read as such from its name \(.jsonl, .ndjson"):
        load_facts(path, format="csv")


# ---------------------------------------------------------------------------------------------- bad input

DROP = object()  # in a change: remove the key
ROME_ROW = {"id": "f2", "question": "Where is Rome?", "answers": ["Italy"]}
BAD_JSONL_ROWS = [
    # (line 2 of the file: raw text or changes to ROME_ROW, field named in the message or None, words in it)
    ('{"id": "f2", "question": "Q?", ', None, "malformed JSON"),
    ('["f2", "Q?", ["A"]]', None, "expected a JSON object"),
    ({"id": DROP}, "id", "missing required field"),
    ({"question": DROP}, "question", "missing required field"),
    ({"answers": DROP}, "answers", "missing required field"),
    ({"answers": None}, "answers", "missing required field"),
    ({"question": "  "}, "question", "is empty"),
    ({"id": ""}, "id", "is empty"),
    ({"answers": []}, "answers", "is an empty list"),
    ({"answers": "Italy"}, "answers", "expected a list of strings, got string"),
    ({"answers": [7]}, "answers", "item 0 is int"),
    ({"id": 2}, "id", "expected a string, got int"),
    ({"question": ["Where?"]}, "question", "expected a string, got list"),
    ({"question": "?!"}, "question", "is empty after normalization"),
    ({"paraphrases": "Rome?"}, "paraphrases", "expected a list of strings, got string"),
    ({"paraphrases": [""]}, "paraphrases", "item 0 is empty"),
    ({"meta": [1]}, "meta", "expected an object, got list"),
    ({"subject": 3}, "subject", "expected a string, got int"),
    ({"answers": ["Italy", "The"]}, "answers", "alias 'The' is empty after normalization"),
    ({"answers": [""]}, "answers", "alias '' is empty after normalization"),
    ({"id": "f1"}, "id", "duplicate id 'f1' (first on line 1)"),
    ({"question": "Where is Rome, Italy?"}, "question", "contains its own answer 'Italy'"),
    ({"answers": ["rome"]}, "question", "contains its own answer 'rome'"),
    ({"paraphrases": ["Rome, Italy?"]}, "paraphrases[0]", "contains its own answer 'Italy'"),
    ({"bucket": "popular"}, "bucket", "unknown bucket 'popular'"),
    ({"answer": "Italy"}, "answer", "unknown field (did you mean 'answers'?"),
    ({"colour": "red"}, "colour", "unknown field (put extra data in 'meta'"),  # nothing close: no guess
]


@pytest.mark.parametrize(("row", "field", "words"), BAD_JSONL_ROWS)
def test_bad_jsonl_row_names_file_line_and_field(tmp_path, row, field, words):
    if isinstance(row, dict):
        changed = {**ROME_ROW, **row}
        row = json.dumps({k: v for k, v in changed.items() if v is not DROP})
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PARIS) + "\n" + row + "\n", encoding="utf-8")
    with pytest.raises(FactsError) as info:
        load_facts(path)
    message = str(info.value)
    prefix = f"{path}:2: " + (f"field '{field}': " if field else "")
    assert message.startswith(prefix), message
    assert words in message and "\n" not in message
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 2, field)


def test_non_utf8_bytes_report_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        json.dumps(PARIS).encode() + b"\n\n" + b'{"id": "f2", "question": "Caf\xe9?", "answers": ["x"]}\n'
    )
    with pytest.raises(FactsError, match=r"bad\.jsonl:3: not valid UTF-8 \(byte 0xe9"):
        load_facts(path)


BAD_CSV_ROWS = [
    # (the bad row, field or None, words); the header is line 1, a good row line 2, the bad row line 3
    (b'f2,Where is Rome?,"[""Italy"",]"', "answers", "is not a JSON list"),
    (b"f2,Where is Rome?,", "answers", "missing required field"),
    (b"f2,Where is Rome?,Italy|The", "answers", "alias 'The' is empty after normalization"),
    (b"f2,Where is Rome?,Italy,extra", None, "row has 4 cells but the header has 3 columns"),
    (b"f2,Caf\xe9?,Italy", "question", "not valid UTF-8"),
    (b"f1,Where is Rome?,Italy", "id", "duplicate id"),
]


@pytest.mark.parametrize(("row", "field", "words"), BAD_CSV_ROWS)
def test_bad_csv_row_names_file_line_and_field(tmp_path, row, field, words):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,question,answers\nf1,Where is the Eiffel Tower?,Paris\n" + row + b"\n")
    with pytest.raises(FactsError) as info:
        load_facts(path)
    prefix = f"{path}:3: " + (f"field '{field}': " if field else "")
    assert str(info.value).startswith(prefix) and words in str(info.value), str(info.value)


def test_csv_line_numbers_count_multiline_cells(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text(
        'id,question,answers\nf1,"Where is\nthe Eiffel Tower?",Paris\nf2,Where is Rome?,The\n',
        encoding="utf-8",
    )
    with pytest.raises(FactsError, match=r"facts\.csv:4: field 'answers'"):
        load_facts(path)


def test_bad_row_in_a_dataset_reports_the_row(tmp_path):
    import datasets

    datasets.Dataset.from_list([ROME, {**PARIS, "answers": ["The"]}]).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(FactsError, match=r"ds:2: field 'answers': alias 'The'"):
        load_facts(tmp_path / "ds")


def test_bad_row_in_a_json_array_reports_the_record(tmp_path):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps([{"prompt": "Hamlet was written by", "target_new": "The"}]), encoding="utf-8")
    with pytest.raises(FactsError, match=r"edits\.json:1: field 'answers'"):
        load_facts(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("", "no facts found"),
        ("\n\n", "no facts found"),
        ('{"foo": 1}\n', "cannot tell the facts format"),
    ],
)
def test_file_level_errors(tmp_path, content, words):
    path = tmp_path / "f.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FactsError, match=words):
        load_facts(path)


@pytest.mark.parametrize("name", ["missing.jsonl", "./missing", "/no/such/dir/facts", "a/b/c"])
def test_missing_path_is_not_taken_for_a_hub_dataset(tmp_path, name):
    with pytest.raises(FactsError, match="no such file or directory"):
        load_facts(name)


def test_broken_json_array_reports_its_line(tmp_path):
    path = tmp_path / "edits.json"
    path.write_text('[\n  {"prompt": "x",\n  }\n]', encoding="utf-8")
    with pytest.raises(FactsError, match=r"edits\.json:3: malformed JSON"):
        load_facts(path)


# ---------------------------------------------------------------------------------------------- lenient mode


def test_lenient_skips_bad_rows_and_counts_them(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(PARIS),
        "{not json",
        json.dumps(ROME),
        json.dumps({**ROME, "id": "f3", "answers": ["The"]}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="knowpack.facts.loaders"):
        facts = load_facts(path, lenient=True)
    assert [f.id for f in facts] == ["f1", "f2"]
    assert [(e.line, e.field) for e in facts.skipped] == [(2, None), (4, "answers")]
    assert all(str(e).startswith(f"{path}:") for e in facts.skipped)
    assert "skipped 2 bad row(s) of 4" in caplog.text


def test_lenient_skips_duplicates_keeping_the_first(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [PARIS, {**PARIS, "answers": ["Lyon"]}])
    facts = load_facts(path, lenient=True)
    assert facts[0].answers == PARIS["answers"] and len(facts.skipped) == 1


def test_lenient_with_nothing_valid_is_still_an_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n", encoding="utf-8")
    with pytest.raises(FactsError, match=r"no facts found \(1 bad row\(s\) skipped; first: .*malformed JSON"):
        load_facts(path, lenient=True)


def test_unloadable_hub_name_is_a_facts_error():
    import datasets

    if not datasets.config.HF_HUB_OFFLINE:
        pytest.skip("datasets was imported before offline mode was set; would reach for the network")
    with pytest.raises(FactsError, match=r"nobody/no-such-dataset: cannot load dataset"):
        load_facts("nobody/no-such-dataset")


def test_check_facts_counts_and_refuses_repeated_questions(tmp_path, caplog):
    """`knowpack facts check` as a function: counts per relation and bucket, paraphrases, aliases; facts
    asking the same question are an error, or a warning when lenient."""
    from knowpack.errors import KnowpackError
    from knowpack.facts import Fact, check_facts, save_facts

    facts = [
        Fact("a", "Where was Ada born?", ["Paris", "Paris, France"], relation="birth_city", bucket="head"),
        Fact("b", "Where was Bo born?", ["Rome"], relation="birth_city", paraphrases=["Bo's birthplace?"]),
        Fact("c", "What does Cy play?", ["chess"], relation="game"),
    ]
    path = tmp_path / "facts.jsonl"
    save_facts(facts, path)
    report = check_facts(str(path))
    assert report.counts == {"relation": {"birth_city": 2, "game": 1}, "bucket": {"head": 1, None: 2}}
    assert (report.with_paraphrases, report.mean_aliases) == (1, 4 / 3)
    save_facts([*facts, Fact("d", "Where was Ada born?", ["Lyon"])], path)
    with pytest.raises(KnowpackError, match=r"2 of 4 facts ask a question another fact asks too"):
        check_facts(str(path))
    assert len(check_facts(str(path), lenient=True).facts) == 4
    assert "ask a question another fact asks too" in caplog.text
