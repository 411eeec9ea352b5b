"""Preparation: chat-template masking and the cached preprocessing pipeline."""
