"""Shared fixtures: a fixed image embedding and the tiny sim generator/VAE, trained once per run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from neurodecode.embedded.generator import get_sim_generator
from neurodecode.embedded.vae import get_sim_vae


def make_embed_fn(dim: int = 32, seed: int = 0):
    """A deterministic image embedding: a seeded random conv net on 32 px images (uint8 in)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, 16, 5, 2, 2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(512, dim),
        ).eval()

    @torch.no_grad()
    def embed(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255
        x = nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
        return net(x * 2 - 1)

    return embed


@pytest.fixture(scope="session")
def embed_fn():
    return make_embed_fn()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("neurodecode-cache")


@pytest.fixture(scope="session")
def tiny_generator(embed_fn, cache_dir):
    return get_sim_generator(embed_fn, preset="tiny", cache_dir=cache_dir)


@pytest.fixture(scope="session")
def tiny_vae(cache_dir):
    return get_sim_vae(preset="tiny", cache_dir=cache_dir)
