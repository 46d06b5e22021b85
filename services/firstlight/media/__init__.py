"""Photo decoding for the models: decode once, at the size the model needs (pure, no I/O)."""
