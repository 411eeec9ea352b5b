"""Experiments: ``sftlab run`` and ``sftlab sweep`` stages, and ``sftlab compare``."""
