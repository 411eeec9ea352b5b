"""Evaluation: the generation engine and the benchmark tasks that score its responses."""
