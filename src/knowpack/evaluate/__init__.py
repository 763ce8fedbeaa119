"""Evaluation: uptake of implanted facts, knowledge shift, behaviour and benchmarks."""
