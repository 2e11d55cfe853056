"""The prefix captioner of the simulated world: a :class:`~neurodecode.analysis.prefix_captioner.
ClipPrefixCaptioner` trained on simulated scenes' captions, cached under one root."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from neurodecode.analysis.prefix_captioner import ClipPrefixCaptioner, train_prefix_captioner
from neurodecode.embedded.cache import cache_root, config_key
from neurodecode.embedded.generator import embedding_fingerprint
from neurodecode.pretrained import save_pretrained
from neurodecode.sim.stimuli import generate_stimuli

log = logging.getLogger(__name__)


#: Seed of the stimulus stream the simulated captioner is trained on (not the experiments').
CAPTIONER_STIMULUS_SEED = 92821


def get_sim_prefix_captioner(
    clip_encoder,
    n_stimuli: int = 6000,
    steps: int = 1500,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    **train_options,
) -> ClipPrefixCaptioner:
    """A captioner for the simulation's CLIP (e.g. sim-clip), trained on first use and cached.

    Trained on ``n_stimuli`` procedural scenes (seed :data:`CAPTIONER_STIMULUS_SEED`, none of
    which an experiment shows) embedded by ``clip_encoder.encode_image`` and their captions. The
    folder is ``<cache>/prefix-captioner/<hash of the settings and the encoder>/``, written to a
    temporary name and renamed (a killed run leaves no partial cache).
    """

    def embed(images: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat(
                [
                    clip_encoder.encode_image(images[i : i + 256], normalize=True).float()
                    for i in range(0, len(images), 256)
                ]
            )

    # the cache key names the encoder by its embeddings of a few fixed scenes
    probe = generate_stimuli(min(64, n_stimuli), size=64, seed=CAPTIONER_STIMULUS_SEED)
    settings = {
        "kind": "prefix-captioner",
        "version": 1,
        "n_stimuli": n_stimuli,
        "steps": steps,
        "encoder": embedding_fingerprint(embed(probe.images)),
        "train": train_options,
    }
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = root / "prefix-captioner" / config_key(settings)
    if use_cache and (folder / "config.json").is_file():
        return ClipPrefixCaptioner.from_pretrained(folder)
    log.info("training the simulation's prefix captioner (once; cached in %s)", folder)
    stimuli = generate_stimuli(n_stimuli, size=64, seed=CAPTIONER_STIMULUS_SEED)
    model = train_prefix_captioner(
        embed(stimuli.images),
        list(stimuli.captions),
        steps=steps,
        progress=progress,
        **train_options,
    )
    if use_cache:
        save_pretrained(model, folder, metadata=settings, replace=False)
    return model
