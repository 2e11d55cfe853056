"""Sparse autoencoders and transcoders: a shared base and registry (:mod:`.core`), one module per
architecture (:mod:`.relu_l1`, :mod:`.topk`, :mod:`.jumprelu`, :mod:`.gated`; imported here so that
:func:`.core.create_sae` knows them all), the Lightning training path (:mod:`.training`), metrics
(:mod:`.metrics`), planted dictionaries to score recovery against (:mod:`.planted`), SAELens's folder
format (:mod:`.saelens`: ``export_saelens`` / ``read_saelens``), and the analyses of the
literature: latent matching and the stitching path between SAEs of different sizes
(:mod:`.stitching`), meta-SAEs (:mod:`.meta`), the reconstruction-error pathology check
(:mod:`.pathology`) and feature absorption / splitting (:mod:`.absorption`)."""

from neurodecode.analysis.sae import gated, jumprelu, relu_l1, topk  # noqa: F401  (register)
