"""The caption bank of the simulated world: captions of generated scenes, the text side that voxel
captioning (:mod:`neurodecode.analysis.captioning`) ranks when no captioner weights exist."""

from __future__ import annotations

from neurodecode.analysis.captioning import word_bank
from neurodecode.sim.stimuli import generate_stimuli


def simulated_caption_bank(
    n_images: int = 2000, seed: int = 65537, include_words: bool = True
) -> list[str]:
    """Distinct captions of simulated scenes drawn with their own seed, plus :func:`word_bank`.

    The seed differs from the experiments' and from sim-clip's training seed, so the bank holds
    no caption of a stimulus any subject saw by construction of the seed streams.
    """
    stimuli = generate_stimuli(n_images, size=32, seed=seed)
    bank = sorted(set(stimuli.captions))
    if include_words:
        bank += [w for w in word_bank() if w not in bank]
    return bank
