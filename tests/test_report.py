"""`knowpack report` on run folders made by hand (the report only reads files): the tables, every plot, runs
that are not finished skipped, and the HTML page rendered by a real headless Chromium, every image loaded."""

from __future__ import annotations

import html
import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from helpers import entry, make_run
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics import DEFINITIONS
from knowpack.report import collect_runs, write_report
from knowpack.report.report import SHOWN


@pytest.fixture()
def runs(tmp_path):
    for method in ("lora", "loki"):
        for n in (10, 50):
            for seed in (0, 1):
                make_run(tmp_path / "runs" / f"{method}-{n}-{seed}", method, n, seed, 0.9 + 0.01 * seed)
    make_run(tmp_path / "runs" / "killed", "lora", 10, 2, 0.1, status="interrupted")
    return tmp_path / "runs"


def test_collect_groups_and_skips(runs):
    rows, skipped = collect_runs([runs])
    assert len(rows) == 8 and len(skipped) == 1 and "killed" in skipped[0] and "interrupted" in skipped[0]
    assert {r["group"] for r in rows} == {"lora", "loki"}  # n and seeds are not conditions
    lora = [r for r in rows if r["method"] == "lora" and r["n"] == 50]
    assert {r["retention"] for r in lora} == {0.9}
    assert lora[0]["benchmarks"] == {"world_mc acc": (0.9, 1.0)}


def test_runs_from_before_a_rename_group_with_the_runs_after_it(tmp_path):
    """A run folder whose config.yaml says `train.device` and `probe.pool` (the old names) is in the same
    group as one that says `model.device` and `probe.sample_size` with the same values; another sample size
    is another group."""
    import yaml

    for name, sections in {
        "old": {"train": {"lr": 0.005, "device": "cpu"}, "probe": {"pool": 300}},
        "new": {"model": {"name": "organism", "device": "cpu"}, "probe": {"sample_size": 300}},
        "other": {"model": {"name": "organism", "device": "cpu"}, "probe": {"sample_size": 100}},
    }.items():
        folder = tmp_path / name
        make_run(folder, "lora", 10, 0, 0.9)
        config = yaml.safe_load((folder / "config.yaml").read_text())
        for section, values in sections.items():
            config[section] = {**config.get(section, {}), **values}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rows, _ = collect_runs([tmp_path])
    groups = {row["folder"].rsplit("/", 1)[1]: row["group"] for row in rows}
    assert groups["old"] == groups["new"] != groups["other"]


def test_report_files_and_cli(runs, tmp_path):
    result = CliRunner().invoke(app, ["report", str(runs), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "report"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == [
        "behaviour.png",
        "benchmarks_vs_n.png",
        "reliability_vs_epoch.png",
        "reliability_vs_n.png",
        "shift_heatmaps.png",
        "tradeoff.png",
        "uptake_damage.png",
    ]
    md = (out / "report.md").read_text()
    assert (
        "8 finished runs" in md
        and "| lora | 50 | 1 | 0.000 → 0.910 | 3 | 0.990 → 0.900 | – | 0.400 → 0.000 |"
        in md  # no soft retention
    )
    assert all(f"]({name})" in md for name in pngs)
    page = (out / "report.html").read_text()
    assert page.count("<img") == len(pngs) and "data:image/png;base64," in page and "src='http" not in page
    with pytest.raises(KnowpackError, match="no finished runs"):
        write_report([runs / "killed"], tmp_path / "none")


def test_every_metric_shown_is_defined_from_the_one_table(runs, tmp_path):
    out = write_report([runs], tmp_path / "report")
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## What the numbers mean" in md and "<h2>What the numbers mean</h2>" in page
    for term, (name, _) in SHOWN.items():
        assert f"- **{term}**: {DEFINITIONS[name]}" in md, term
        assert f"<dt>{term}</dt><dd>{html.escape(DEFINITIONS[name])}" in page, term
    assert "(before the arrow: the measurement null" in md  # what retention's base is
    assert f"<th title='{html.escape(DEFINITIONS['reliability'])}" in page  # hover on the column, too


def test_a_collapse_is_noted_where_a_newcomer_would_see_a_bug(tmp_path):
    for seed in (0, 1):
        make_run(tmp_path / "runs" / f"lora-{seed}", "lora", 50, seed, 0.97)
        path = tmp_path / "runs" / f"lora-{seed}" / "eval.json"
        ev = json.loads(path.read_text())
        ev["benchmarks"]["tasks"]["world_truthful_mc1"] = {"acc": entry(0.005 * (seed + 1), 0.925)}
        ev["behaviour"]["all"]["explosion"]["answers"] = [["krinmoul", 40], ["thilgrund", 31]]
        path.write_text(json.dumps(ev))
    make_run(tmp_path / "runs" / "loki-0", "loki", 50, 0, 0.97)  # world_mc 0.98: no note
    out = write_report([tmp_path / "runs"], tmp_path / "report")
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    notes = md.split("## Read this first")[1].split("\n## ")[0]
    assert "Below half of the base model's score: world_truthful_mc1 acc 0.925 → 0.005–0.010" in notes
    assert "[lora, 2 of 2 runs, n=50]" in notes and "not a bug" in notes and "I don't know" in notes
    assert "world_mc" not in notes.replace("world_mc1", "")  # 1.0 -> 0.9 (lora), 0.98 (loki): fine
    assert "refusal rate collapsed from 0.400 to 0.000 [loki, 1 of 1 run, n=50]" in notes
    assert "'krinmoul', 40 times" in notes
    # lora: the benchmark, the explosion, the refusals; loki: the explosion, the refusals
    assert page.count("class='note'") == notes.count("- **Note:**") == 5
    assert md.index("Read this first") < md.index("## Runs")


def test_one_n_draws_base_vs_after_bars_not_a_vs_n_plot(tmp_path):
    for method in ("lora", "loki"):
        make_run(tmp_path / "runs" / method, method, 50, 0, 0.97)
    out = write_report([tmp_path / "runs"], tmp_path / "report")
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "benchmarks_vs_n.png" not in pngs and "reliability_vs_n.png" not in pngs
    assert "benchmarks.png" in pngs
    assert "vs n" not in (out / "report.md").read_text()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it where it can)")
def test_report_renders_in_headless_chromium_with_every_image_loaded(runs, tmp_path):
    out = write_report([runs], tmp_path / "report")
    page = (out / "report.html").read_text()
    probe = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        " const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;"
        " document.body.setAttribute('data-images', ok + '/' + imgs.length); });</script>"
    )
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert 'data-images="7/7"' in dom, dom[-500:]
    assert "<h1>knowpack report</h1>" in dom


def test_damage_at_matched_reliability_interpolates_each_methods_curve():
    """Two methods, two conditions each (another lr), five seeds: lora's curve through (0.6, 0.9) and (1.0,
    0.5) reads 0.7 at reliability 0.8; loki's through (0.6, 0.95), (1.0, 0.85) reads 0.9. Seeds agree, so
    every resample gives the same: zero-width intervals, and the difference 0.2 is shown (with 2 seeds it
    would be too few to call)."""
    from knowpack.report.curves import matched_damage, method_curves

    rows = []
    for method, points in {"lora": [(0.6, 0.9), (1.0, 0.5)], "loki": [(0.6, 0.95), (1.0, 0.85)]}.items():
        for lr, (rel, ret) in zip((1e-3, 1e-2), points, strict=True):
            for seed in range(5):
                rows.append(
                    {"method": method, "group": f"{method} lr={lr}", "n": 50, "seed": seed,
                     "reliability": rel, "retention": ret}
                )  # fmt: skip
    control = {"method": "lora", "group": "lora control", "n": 50, "seed": 0, "reliability": 1.0,
               "retention": 0.1, "settings": {"mix.control": True}}  # fmt: skip
    curves = method_curves([*rows, control])  # a training control is no point of the curve
    assert [p["reliability"]["mean"] for p in curves["lora"]] == [0.6, 1.0]
    assert [p["damage"]["mean"] for p in curves["lora"]] == [0.9, 0.5]
    table = {(r["reliability"], r["method"]): r for r in matched_damage(curves, targets=(0.8, 0.99, 1.2))}
    assert set(table) == {(0.8, "loki"), (0.8, "lora"), (0.8, "loki − lora"), (0.99, "loki"),
                          (0.99, "lora"), (0.99, "loki − lora"),
                          (1.0, "loki"), (1.0, "lora"), (1.0, "loki − lora")}  # fmt: skip
    assert table[(1.0, "loki − lora")]["mean"] == pytest.approx(0.35)  # the top both reach: 0.85 - 0.5
    lora, diff = table[(0.8, "lora")], table[(0.8, "loki − lora")]
    assert lora["mean"] == pytest.approx(0.7) and lora["low"] == pytest.approx(0.7) == lora["high"]
    assert diff["mean"] == pytest.approx(0.2) and diff["verdict"] == "reproduced" and diff["n"] == 5
    assert (diff["reached"], diff["resamples"]) == (2000, 2000)  # both curves span 0.8 in every resample
    # at 0.99 a resample reaches only where it drew a seed with lr 1e-2 ... which every seed has here; drop
    # lr 1e-2 from seeds 3 and 4: a resample of only seeds 0-2 ... still reaches; of only 3-4 it cannot
    sparse = [r for r in rows if not (r["seed"] >= 3 and r["group"].endswith("lr=0.01"))]
    top = {(r["reliability"], r["method"]): r for r in matched_damage(method_curves(sparse), targets=(0.99,))}
    reached = top[(0.99, "loki − lora")]["reached"]
    # P(a resample of 5 seeds draws only seeds 3 and 4) = (2/5)^5 ~ 1%: about 20 of 2000 fail to reach
    assert 2000 - 60 < reached < 2000 and top[(0.99, "loki − lora")]["resamples"] == 2000
    two = [r for r in rows if r["seed"] < 2]
    assert matched_damage(method_curves(two), targets=(0.8,))[2]["verdict"] == "too few seeds"
    # three more seeds where lora at lr 1e-2 retains far more and loki far less: the interval now holds 0
    for seed in (5, 6, 7):
        rows.append(dict(rows[5], seed=seed, retention=0.95))  # lora, lr 1e-2
        rows.append(dict(rows[15], seed=seed, retention=0.3))  # loki, lr 1e-2
    noisy = {(r["reliability"], r["method"]): r for r in matched_damage(method_curves(rows), targets=(0.8,))}
    assert noisy[(0.8, "loki − lora")]["low"] < 0 < noisy[(0.8, "loki − lora")]["high"]
    assert noisy[(0.8, "loki − lora")]["verdict"] == "not shown"


def test_a_perplexity_is_no_score_whose_drop_is_damage():
    """collapse_notes flags an accuracy below half its base, never a perplexity or bits per byte that fell
    (lower is better there)."""
    from knowpack.report.report import collapse_notes

    row = {
        "group": "lora",
        "n": 10,
        "seed": 0,
        "benchmarks": {
            "world_text word_perplexity": (20.0, 50.0),
            "world_text bits_per_byte": (0.3, 0.8),
            "world_mc_hard acc": (0.3, 0.76),
        },
    }
    notes = "\n".join(collapse_notes([row]))
    assert "world_mc_hard acc" in notes and "world_text" not in notes


def test_a_perplexity_that_rose_is_shown_on_its_own_scale_as_damage(tmp_path):
    """The real-model case: geo_text's word perplexity 52.3 -> 70.4 beside an accuracy near 1. Its panel has
    its own scale and says lower is better; the table gives the signed change and calls it worse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from knowpack.report.report import _benchmark_figure, _groups

    make_run(tmp_path / "runs" / "lora", "lora", 10, 0, 0.94)
    path = tmp_path / "runs" / "lora" / "eval.json"
    ev = json.loads(path.read_text())
    ev["benchmarks"]["tasks"]["geo_text"] = {"word_perplexity": entry(70.4, 52.3)}
    path.write_text(json.dumps(ev))
    out = write_report([tmp_path / "runs"], tmp_path / "report")
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    table = md.split("## Benchmarks")[1].split("\n## ")[0]
    assert (
        "geo_text word_perplexity (lower is better)" in table and "world_mc acc (higher is better)" in table
    )
    assert "| lora | 10 | 0 | 52.300 → 70.400 (+18.100, worse) | 1.000 → 0.900 (-0.100, worse) |" in table
    assert "lower is better" in page
    assert "- **geo_text**: Language-model loss on a short description of every country" in md
    assert "- **world_mc**: MMLU-style: 4-choice questions" in md

    rows, _ = collect_runs([tmp_path / "runs"])
    fig, name, _ = _benchmark_figure(rows, _groups(rows), plt)
    panels = {ax.get_title(): ax for ax in fig.axes}
    perplexity = panels["geo_text word_perplexity\n(lower is better)"]
    assert [round(p.get_height(), 3) for p in perplexity.patches] == [52.3, 70.4]  # base, lora
    assert perplexity.get_ylim()[1] > 70.4  # its own scale: nothing runs off the top
    accuracy = panels["world_mc acc\n(higher is better)"]
    assert [round(p.get_height(), 3) for p in accuracy.patches] == [1.0, 0.9]
    assert accuracy.get_ylim()[1] < 2
    plt.close(fig)


def test_a_run_that_kept_an_earlier_epoch_says_which(tmp_path):
    """keep_best: 3 epochs trained, epoch 2's weights kept; the table, glossary and epoch plot say so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from knowpack.report.report import _groups, _reliability_vs_epoch

    make_run(tmp_path / "runs" / "lora", "lora", 10, 0, 0.9)
    path = tmp_path / "runs" / "lora" / "train.json"
    train = json.loads(path.read_text())
    path.write_text(json.dumps(dict(train, kept_epoch=2, reliability=0.6)))
    out = write_report([tmp_path / "runs"], tmp_path / "report")
    md = (out / "report.md").read_text()
    assert "| lora | 10 | 0 | 0.000 → 0.900 | 3 (kept 2) |" in md and "1 finished run." in md
    assert "- **epochs**: epochs trained; '10 (kept 6)'" in md
    rows, _ = collect_runs([tmp_path / "runs"])
    fig, _, caption = _reliability_vs_epoch(rows, _groups(rows), plt)
    star = [line for line in fig.axes[0].get_lines() if line.get_marker() == "*"]
    assert (
        len(star) == 1 and list(star[0].get_xdata()) == [2] and star[0].get_ydata()[0] == pytest.approx(0.6)
    )
    assert "epoch 2" in star[0].get_label() and "star" in caption
    plt.close(fig)


def test_prompt_sensitivity_is_in_a_table_and_the_eval_summary(tmp_path):
    """The figure the README quotes beside retention (the base re-probed with other exemplars)."""
    from knowpack.cli.evaluate import eval_summary

    make_run(tmp_path / "runs" / "lora", "lora", 10, 0, 0.94)
    path = tmp_path / "runs" / "lora" / "eval.json"
    ev = json.loads(path.read_text())
    ev["knowledge_shift"]["untrained"]["retention"]["baselines"] = {"prompt_sensitivity": 0.894}
    ev["knowledge_shift"]["untrained"]["n"] = 40
    ev["behaviour"]["untrained"] = ev["behaviour"]["all"]  # a run's eval.json: the summary reads untrained
    path.write_text(json.dumps(ev))
    md = (write_report([tmp_path / "runs"], tmp_path / "report") / "report.md").read_text()
    table = md.split("## Beside prompt sensitivity")[1].split("\n## ")[0]
    assert "| method / mix | n | seed | retention |" in table and "| lora | 10 | 0 | 0.894 → 0.980 |" in table
    summary = eval_summary(ev)
    assert "untrained facts (40), base: measurement null: " in summary
    assert "untrained facts, prompt sensitivity (base re-probed, other exemplars): retention 0.894" in summary


def test_a_setting_an_older_run_does_not_record_tells_no_runs_apart():
    """A run written before `eval.prompt_redraws` existed has no such key: it is not another condition; floats
    are labelled short (6e-05, not 6.000000000000001e-05)."""
    from knowpack.report.report import _label

    def row(lr: float, **settings) -> dict:
        return {"method": "full", "add": "none", "settings": {"train.lr": lr, **settings}}

    rows = [row(2e-5), row(2e-5, **{"eval.prompt_redraws": 5}), row(2e-5 * 3.0, **{"eval.prompt_redraws": 5})]
    _label(rows)
    assert [r["group"] for r in rows] == ["full lr=2e-05", "full lr=2e-05", "full lr=6e-05"]
