"""Models: loading any model spec, the GGUF conversion cache, training precision."""
