"""One config system (`knowpack.config`): a wrong type in a run, sweep, capacity or world config is the same
one-line `file:line: key: expected ...` error, the override grammar is the same for all four, and every probe
default is written once (the CLI's probe options are ProbeConfig's fields)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import yaml

from knowpack.config import parse_override
from knowpack.errors import KnowpackError
from knowpack.experiment.capacity import load_capacity
from knowpack.experiment.sweep import load_sweep
from knowpack.probe.config import ProbeConfig
from knowpack.train.config import load_config
from knowpack.world.config import load_world_config


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def run_yaml(tmp_path):
    return write(tmp_path, "run.yaml", "model:\n  name: tiny\nprobe:\n  run: probe\n")


CASES = [
    # (kind, file text with a wrong type on line 3, the error after "file:")
    ("run", "model:\n  name: tiny\ntrain: {epochs: ten}\n", "3: train.epochs: expected int, got str 'ten'"),
    ("sweep", "base: run.yaml\nout: o\nevaluate: sure\n", "3: evaluate: expected bool, got str 'sure'"),
    ("capacity", "base: run.yaml\nout: o\nstart: one\n", "3: start: expected int, got str 'one'"),
    ("world", "seed: 0\nstrangers: 5\nseq_len: long\n", "3: seq_len: expected int, got str 'long'"),
    ("run", "model:\n  name: tiny\nprobe: {shots: -1}\n", "3: probe.shots: expected an integer >= 0, got -1"),
    ("sweep", "base: run.yaml\nout: o\ncases: [1]\n", "3: cases: expected a mapping, got int"),
    ("capacity", "base: run.yaml\nout: o\nlimit: 0\n", "3: limit: expected an integer >= 1, got 0"),
    ("world", "seed: 0\nstrangers: 5\npeople: {head: x}\n", "3: people.head: expected int, got str 'x'"),
    ("capacity", "base: run.yaml\nout: o\nrule: most\n", "3: rule is 'most'; expected one of all, mean"),
    ("sweep", "base: run.yaml\nout: o\nbudget: {}\n", "3: unknown key budget; expected one of base"),
    ("world", "seed: 0\nstrangers: 5\nlayers: 2\n", "3: unknown key layers; expected one of seed"),
]
LOADERS = {"run": load_config, "sweep": load_sweep, "capacity": load_capacity, "world": load_world_config}


@pytest.mark.parametrize(("kind", "text", "error"), CASES)
def test_a_wrong_value_is_the_same_one_line_error_in_every_kind_of_config(
    tmp_path, run_yaml, kind, text, error
):
    path = write(tmp_path, f"{kind}.yaml", text)
    with pytest.raises(KnowpackError) as e:
        LOADERS[kind](path)
    message = str(e.value)
    assert message.startswith(f"{path}:{error}"), message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kind", "overrides", "error"),
    [
        ("run", ["train.epochs=ten"], "command line: train.epochs: expected int, got str 'ten'"),
        ("sweep", ["evaluate=sure"], "command line: evaluate: expected bool, got str 'sure'"),
        ("capacity", ["start=one"], "command line: start: expected int, got str 'one'"),
        ("world", ["seq_len=long"], "command line: seq_len: expected int, got str 'long'"),
    ],
)
def test_overrides_are_checked_the_same_way(tmp_path, run_yaml, kind, overrides, error):
    text = {
        "run": "",
        "world": "",
        "sweep": "base: run.yaml\nout: o\n",
        "capacity": "base: run.yaml\nout: o\n",
    }
    path = write(tmp_path, f"{kind}.yaml", text[kind] or "{}\n")
    with pytest.raises(KnowpackError) as e:
        LOADERS[kind](path, overrides)
    assert str(e.value) == error


def test_the_override_grammar():
    assert parse_override("train.lr=1e-3") == (("train", "lr"), "1e-3")  # YAML 1.1; the float check reads it
    assert parse_override("a.b=[1, 2]") == (("a", "b"), [1, 2])
    assert parse_override("out=") == (("out",), None)
    assert parse_override("x=[unclosed") == (("x",), "[unclosed")
    with pytest.raises(KnowpackError, match="bad override 'nonsense': expected key=value"):
        parse_override("nonsense")


def test_a_world_config_takes_overrides(tmp_path):
    config = load_world_config(None, ["num_layers=2", "people.head=50"])
    assert config.num_layers == 2 and config.people["head"] == 50 and config.people["torso"] == 500
    with pytest.raises(KnowpackError, match=r"^command line: people.head: expected int, got str 'x'$"):
        load_world_config(write(tmp_path, "world.yaml", "seed: 1\n"), ["people.head=x"])


def _cli_defaults(*verb: str) -> dict[str, object]:
    """The defaults `knowpack VERB` really parses to (click's parameters), by parameter name."""
    import typer

    from knowpack.cli import _Verb, app

    command = typer.main.get_command(app)
    for name in verb:
        command = command.commands[name]
        if isinstance(command, _Verb):  # a verb listed lazily: build it
            command = command.load()
    return {p.name: p.default for p in command.params}


def test_the_cli_probe_options_are_probe_config_fields():
    """Every probe option of `knowpack probe` / `knowpack eval --model` that is a ProbeConfig field has that
    field's default (written once, in ProbeConfig); `knowpack.probe` names none of them: it takes a
    ProbeConfig, its keywords (`KEYWORDS`) set that config's fields (tests/test_probe_engine.py probes with
    them)."""
    from knowpack.probe.config import KEYWORDS
    from knowpack.probe.run import probe as run_probe

    fields = {f.name: f.default for f in dataclasses.fields(ProbeConfig)}
    options = _cli_defaults("probe")
    shared = {"n_prompts", "shots", "samples", "temperature", "top_k", "max_new_tokens", "seed", "batch_size"}
    for name in shared:
        assert options[name] == fields[name], name
    assert options["prompt_format"] == fields["format"]
    evaluated = _cli_defaults("eval")  # `knowpack eval --model`'s probe options
    for name in ("n_prompts", "shots", "samples", "seed"):
        assert evaluated[name] == fields[name], name
    assert not set(inspect.signature(run_probe).parameters) & set(KEYWORDS)
    assert set(KEYWORDS.values()) <= set(fields) and shared <= set(KEYWORDS)


def test_cli_options_take_their_defaults_and_help_from_the_config_fields():
    """A changed field default is the CLI's default at once (no second place to edit), the help text is
    the field's docstring, and `attribute`'s --steps / --per-subject are LoKI's config defaults."""
    from knowpack.cli.options import config_option, field_docs
    from knowpack.methods.loki.config import STEPS, Config

    attribute = _cli_defaults("attribute")
    assert (attribute["steps"], attribute["per_subject"]) == (STEPS, Config.per_subject) == (7, 50)
    select = _cli_defaults("select")
    assert (select["strategy"], select["seed"]) == (Config.strategy, Config.seed)
    assert field_docs(ProbeConfig)["shots"] == "Exemplars per prompt (k)."
    option = config_option(ProbeConfig, "shots")
    assert option.help == "Exemplars per prompt (k)."
    with pytest.raises(KnowpackError, match=r"^--shots: expected an integer >= 0, got -1$"):
        option.callback(-1)
    with pytest.raises(AttributeError, match="no field 'shot'"):
        config_option(ProbeConfig, "shot")


def test_loki_prompts_default_is_read_from_the_loki_config(tmp_path):
    from knowpack.experiment.sweep import share_work
    from knowpack.methods.loki import Config

    config = load_config(None, ["method.name=loki", "method.quota=10", "model.name=tiny"])
    share_work(config, tmp_path)
    first = config.method.options["attribution_out"]
    config = load_config(
        None,
        [
            "method.name=loki",
            "method.quota=10",
            "model.name=tiny",
            f"method.prompts={Config.prompts}",
            f"method.per_subject={Config.per_subject}",
        ],
    )
    share_work(config, tmp_path)
    assert config.method.options["attribution_out"] == first  # the defaults spelled out: the same work


def test_sweep_and_capacity_read_yaml_like_a_run(tmp_path, run_yaml):
    path = write(
        tmp_path, "sweep.yaml", yaml.safe_dump({"base": "run.yaml", "out": "o", "set": {"train.lr": 0}})
    )
    with pytest.raises(KnowpackError, match=r"sweep.yaml:\d+: train.lr: expected a number > 0, got 0.0"):
        load_sweep(path)


OLD_PROBE = "model:\n  name: tiny\nprobe:\n  pool: 300\n  pool_seed: 3\n  samples: 0\n"
NEW_PROBE = "model:\n  name: tiny\nprobe:\n  sample_size: 300\n  sample_size_seed: 3\n  samples: 0\n"


def test_a_config_with_the_old_probe_names_loads_as_the_new_with_one_warning(tmp_path, caplog):
    """`probe.pool` / `probe.pool_seed` (before the rename) read as `probe.sample_size` /
    `probe.sample_size_seed`, with one warning naming the file and the new names."""
    new = load_config(write(tmp_path, "new.yaml", NEW_PROBE))
    old_path = write(tmp_path, "old.yaml", OLD_PROBE)
    with caplog.at_level("WARNING", logger="knowpack.train.config"):
        old = load_config(old_path)
        again = load_config(old_path)  # a sweep reads its base once per cell: still one warning
    assert old == again == new and (new.probe.sample_size, new.probe.sample_size_seed) == (300, 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(old_path) in warnings[0]
    assert "probe.sample_size" in warnings[0] and "probe.sample_size_seed" in warnings[0]
    assert load_config(write(tmp_path, "run.yaml", "model:\n  name: tiny\n"), ["probe.pool=300"]).probe == (
        load_config(None, ["model.name=tiny", "probe.sample_size=300"]).probe
    )  # an override with the old name too (a sweep.yaml's `set:` from before)


def test_an_old_run_folders_config_yaml_loads_to_the_same_run_config(tmp_path):
    """A run folder's config.yaml written before the rename (every key, `probe: {pool, pool_seed}`) gives the
    RunConfig its settings give now; a config with both names of one key is an error naming file and key."""
    config = load_config(None, ["model.name=tiny", "probe.sample_size=300", "out=runs/x"])
    saved = config.to_dict()
    probe = saved["probe"]
    saved["probe"] = {
        ("pool" if k == "sample_size" else "pool_seed" if k == "sample_size_seed" else k): v
        for k, v in probe.items()
    }
    assert "pool" in saved["probe"] and "sample_size" not in saved["probe"]
    path = write(tmp_path, "config.yaml", yaml.safe_dump(saved, sort_keys=False))
    assert load_config(path) == config
    both = write(tmp_path, "both.yaml", "model:\n  name: tiny\nprobe:\n  pool: 300\n  sample_size: 200\n")
    with pytest.raises(KnowpackError, match=r"^\S*both.yaml:4: probe.pool and probe.sample_size are one "):
        load_config(both)
    # an override of either name replaces what the file says under the other
    assert load_config(path, ["probe.sample_size=100"]).probe.sample_size == 100
    assert load_config(write(tmp_path, "new.yaml", NEW_PROBE), ["probe.pool=100"]).probe.sample_size == 100
    with pytest.raises(KnowpackError, match=r"^command line: probe.pool and probe.sample_size are one "):
        load_config(None, ["probe.pool=1", "probe.sample_size=2"])


def test_the_device_sits_with_the_dtype_and_its_old_place_still_reads(tmp_path, caplog):
    """`model.device` (beside `model.dtype`) was `train.device`: a config or run folder's config.yaml that
    says `train.device` (with the probe's old names too, as before both renames) gives the same RunConfig,
    with one warning naming the file and both new names; both places at once is an error naming the line."""
    config = load_config(None, ["model.name=tiny", "model.device=cpu", "probe.sample_size=300", "out=runs/x"])
    assert config.model.device == "cpu" and not hasattr(config.train, "device")
    saved = config.to_dict()
    saved["train"]["device"] = saved["model"].pop("device")
    saved["probe"]["pool"] = saved["probe"].pop("sample_size")
    path = write(tmp_path, "config.yaml", yaml.safe_dump(saved, sort_keys=False))
    with caplog.at_level("WARNING", logger="knowpack.train.config"):
        assert load_config(path) == config
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(path) in warnings[0]
    assert "train.device as model.device" in warnings[0] and "probe.pool as probe.sample_size" in warnings[0]
    assert load_config(path, ["model.device=cuda"]).model.device == "cuda"  # the override wins
    assert load_config(None, ["train.device=cuda"]).model.device == "cuda"  # an old override too
    both = write(tmp_path, "both.yaml", "model:\n  name: tiny\n  device: cpu\ntrain:\n  device: cuda\n")
    with pytest.raises(KnowpackError, match=r"^\S*both.yaml:5: train.device and model.device are one "):
        load_config(both)
    null_model = write(tmp_path, "null.yaml", "model:\ntrain:\n  device: cpu\n")
    assert load_config(null_model).model.device == "cpu"  # a `model:` section that holds nothing yet


def test_the_sweeps_shared_probe_key_is_the_one_from_before_the_rename(tmp_path):
    """A sweep keys its shared base probe by a hash of its settings: still `pool=` and `pool_seed=` in the
    key, so sweep folders from before the rename find their probes. The hashes are the old code's (e721713,
    `share_work` of the same configs)."""
    from pathlib import Path

    from knowpack.experiment.sweep import share_work

    out = Path("/sweep")
    cases = {
        "a6ec0d39ebb1": ["model.name=tiny"],
        "a74e797c72fa": [
            "model.name=tiny",
            "probe.sample_size=300",
            "probe.sample_size_seed=3",
            "probe.samples=0",
            "probe.compile=true",
        ],
    }
    for expected, overrides in cases.items():
        config = load_config(None, overrides)
        share_work(config, out)
        assert config.probe.out == str(out / "probe" / expected)
    old = load_config(None, ["model.name=tiny", "probe.pool=300", "probe.pool_seed=3", "probe.samples=0"])
    share_work(old, out)
    assert old.probe.out == str(out / "probe" / "a74e797c72fa")  # compile is speed only: not in the key
