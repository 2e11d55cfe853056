"""Sparse autoencoders and transcoders: a shared base and registry (:mod:`.core`), one module per
architecture (:mod:`.relu_l1`, :mod:`.topk`, :mod:`.jumprelu`, :mod:`.gated`; imported here so that
:func:`.core.create_sae` knows them all), the Lightning training path (:mod:`.training`), metrics
(:mod:`.metrics`) and planted dictionaries to score recovery against (:mod:`.planted`)."""

from neurodecode.analysis.sae import gated, jumprelu, relu_l1, topk  # noqa: F401  (register)
