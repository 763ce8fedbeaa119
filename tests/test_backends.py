"""The backend options' one-line errors, fast and without a cluster: `--backend ray` with Ray not installed
(as if not installed: `import ray` fails), `--workers` beside it, and a bad `resources:` entry with its
line. tests/test_ray_backend.py runs the Ray backend on a real cluster."""

from __future__ import annotations

import sys

import yaml
from typer.testing import CliRunner

from knowpack.cli import app


def sweep_config(tmp_path, **extra):
    path = tmp_path / "sweep.yaml"
    data = {"base": "../x.yaml", "grid": {"mix.seed": [0]}, "out": str(tmp_path / "out"), **extra}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_ray_backend_without_ray_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when not installed
    path = sweep_config(tmp_path)
    for command in (
        ["sweep", str(path), "--backend", "ray"],
        ["capacity", str(path), "--backend", "ray"],
        ["attribute", "--out", str(tmp_path / "kva"), "--prompts", "world_mc", "--backend", "ray"],
        ["probe", "--out", str(tmp_path / "probe"), "--backend", "ray"],
    ):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1, (command, result.output)
        assert result.stderr == (
            "error: --backend ray needs Ray, which is not installed: pip install 'knowpack[ray]'\n"
        ), command
    assert not (tmp_path / "out").exists() and not (tmp_path / "probe").exists()


def test_backend_options_and_resources_are_checked_before_anything_runs(tmp_path):
    path = sweep_config(tmp_path)
    result = CliRunner().invoke(app, ["sweep", str(path), "--backend", "ray", "--workers", "2"])
    assert result.exit_code == 1
    assert (
        result.stderr == "error: --workers is for --backend local; on Ray every cell is a task of its own\n"
    )
    result = CliRunner().invoke(app, ["sweep", str(path), "--backend", "slurm"])
    assert result.stderr == "error: unknown --backend 'slurm'; expected local or ray\n"
    result = CliRunner().invoke(app, ["probe", "--out", str(tmp_path / "p"), "--shards", "2"])
    assert result.stderr == "error: --shards is for --backend ray (one process: --shard i/n)\n"
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"name": "organism"}, "facts": {"path": "organism"}}))
    bad = sweep_config(tmp_path, base="base.yaml", resources={"gpus": -1})
    result = CliRunner().invoke(app, ["sweep", str(bad), "--dry-run"])
    assert result.exit_code == 1
    assert result.stderr == f"error: {bad}:6: resources.gpus must be a number >= 0, not -1\n"
    bad = sweep_config(tmp_path, base="base.yaml", retries=-1)
    result = CliRunner().invoke(app, ["sweep", str(bad), "--dry-run"])
    assert result.exit_code == 1 and f"{bad}:6: retries" in result.stderr, result.stderr


def test_an_address_no_cluster_answers_is_one_line_at_once(tmp_path):
    """Ray retries an unreachable address for minutes; knowpack says so in a line."""
    import socket

    import pytest

    pytest.importorskip("ray")
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"name": "organism"}}))
    path = sweep_config(tmp_path, base="base.yaml")
    result = CliRunner().invoke(
        app, ["sweep", str(path), "--backend", "ray", "--address", f"127.0.0.1:{port}"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: no Ray cluster answers at 127.0.0.1:{port} (")
    assert result.stderr.endswith("start one (ray start --head) or check --address / RAY_ADDRESS\n")
