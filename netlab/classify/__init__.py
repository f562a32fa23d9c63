"""Image classification: the first end-to-end task of the engine (digits)."""
