"""Sparse autoencoders and transcoders: a shared base (:mod:`.core`), one module per architecture
(:mod:`.architectures`), the Lightning training path (:mod:`.training`), metrics (:mod:`.metrics`)
and planted dictionaries to score recovery against (:mod:`.planted`)."""
