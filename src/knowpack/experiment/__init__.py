"""Experiments over many runs: sweeps (a resumable grid of run folders) and capacity search."""
