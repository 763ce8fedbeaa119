"""Reports: tables and plots read from result files (run folders, eval.json); never re-runs a model."""

from knowpack.report.report import collect_runs, write_report

__all__ = ["collect_runs", "write_report"]
