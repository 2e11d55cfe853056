"""Sparse autoencoders and transcoders: a shared base and registry (:mod:`.core`), one module per
architecture (:mod:`.relu_l1`, :mod:`.topk`, :mod:`.jumprelu`, :mod:`.gated`, :mod:`.prolu`,
:mod:`.matryoshka`, :mod:`.switch`; imported here so that :func:`.core.create_sae` knows them
all), the Lightning training path (:mod:`.training`), metrics (:mod:`.metrics`), the
feature-suppression fix for L1-trained SAEs (:mod:`.suppression`), end-to-end training of any
architecture on a frozen network's downstream KL (:mod:`.e2e`, Braun et al. 2024:
``train_e2e_sae``, ``e2e_evaluation``, ``save_e2e_sae``; registers no architecture, so not
imported here), planted dictionaries to score recovery against (:mod:`.planted`), SAELens's folder format (:mod:`.saelens`: ``export_saelens`` /
``read_saelens``), and the analyses of the literature: latent matching and the stitching path
between SAEs of different sizes (:mod:`.stitching`), meta-SAEs (:mod:`.meta`), the
reconstruction-error pathology check (:mod:`.pathology`) and feature absorption / splitting
(:mod:`.absorption`)."""

from neurodecode.analysis.sae import (  # noqa: F401  (register)
    gated,
    jumprelu,
    matryoshka,
    prolu,
    relu_l1,
    switch,
    topk,
)
