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
from neurodecode.validation import check_option

log = logging.getLogger(__name__)


#: Seed of the stimulus stream the simulated captioner is trained on (not the experiments').
CAPTIONER_STIMULUS_SEED = 92821

#: Training settings per sim-clip preset (``n_stimuli``, ``steps`` and options of
#: :func:`~neurodecode.analysis.prefix_captioner.train_prefix_captioner`): ``default`` is the
#: captioner of ``neurodecode analyze captions`` and ``make demo``; ``tiny`` is a small one for the
#: tiny world and tests.
CAPTIONER_PRESETS: dict[str, dict] = {
    "default": {"n_stimuli": 6000, "steps": 1500},
    "tiny": {"n_stimuli": 600, "steps": 250, "n_layer": 1, "n_embd": 64},
}


def get_sim_prefix_captioner(
    clip_encoder,
    n_stimuli: int | None = None,
    steps: int | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    preset: str = "default",
    **train_options,
) -> ClipPrefixCaptioner:
    """A captioner for the simulation's CLIP (e.g. sim-clip), trained on first use and cached.

    Trained on ``n_stimuli`` procedural scenes (seed :data:`CAPTIONER_STIMULUS_SEED`, none of
    which an experiment shows) embedded by ``clip_encoder.encode_image`` and their captions. The
    folder is ``<cache>/prefix-captioner/<hash of the settings and the encoder>/``, written to a
    temporary name and renamed (a killed run leaves no partial cache).

    Parameters
    ----------
    clip_encoder : ClipEncoder
        ``encode_image(uint8 images, normalize=True) -> (n, D)``.
    n_stimuli, steps : int, optional
        Training scenes and AdamW steps; default from ``preset``.
    preset : str
        A key of :data:`CAPTIONER_PRESETS`: the defaults of ``n_stimuli``, ``steps`` and the
        training options (explicit arguments override them).
    **train_options
        Passed to :func:`~neurodecode.analysis.prefix_captioner.train_prefix_captioner`.
    """
    check_option("preset", preset, tuple(CAPTIONER_PRESETS))
    defaults = dict(CAPTIONER_PRESETS[preset])
    n_stimuli = int(n_stimuli if n_stimuli is not None else defaults.pop("n_stimuli"))
    steps = int(steps if steps is not None else defaults.pop("steps"))
    defaults.pop("n_stimuli", None)
    defaults.pop("steps", None)
    train_options = {**defaults, **train_options}

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
