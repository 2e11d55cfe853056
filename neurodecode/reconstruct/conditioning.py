"""What conditions the generator: decoded embeddings moved onto the manifold of real ones.

A retrieval head is trained contrastively, so its output ranks candidates well by cosine but is
not itself an image embedding a generator has seen (on the default simulated world its cosine to
the true embedding is ~0.06 although it retrieves the right image 4 times in 10 among 50). The
diffusion prior is one way back to the image manifold (MindEye1/2); the other is BrainSCUBA's
projection (Luo et al. 2023, also :func:`neurodecode.analysis.captioning.project_to_image_manifold`):
a softmax over the cosine similarities to a pool of real image embeddings, the pool's embeddings
averaged with those weights::

    p = |e| * unit( sum_i softmax_i(cos(d, e_i) / T) unit(e_i) ),

``|e|`` the pool's mean norm. With the training images as the pool, the result is a weighted
average of the embeddings of images the subject saw that look most like the decoded one.
:class:`ImageManifoldProjection` holds the pool and ``T`` and is saved beside a decoder
(``<decoder>/condition/``) so that ``neurodecode reconstruct`` conditions as the demo did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from neurodecode.pretrained import PretrainedMixin, load_pretrained, save_pretrained
from neurodecode.validation import InvalidInputError

#: Folder of the projection inside a saved decoder.
CONDITION_FOLDER = "condition"
#: Softmax temperature on cosine similarity. Chosen on the demo's validation images (never the
#: test trials) among 0.005, 0.01, 0.02 and 0.05 by the sim-clip 2-way score of the
#: reconstructions (benchmarks/README.md, 2026-12-05); BrainSCUBA uses 1/150 for voxel weights.
DEFAULT_TEMPERATURE = 0.02


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return torch.nn.functional.normalize(x, dim=-1)


def softmax_manifold_average(
    directions: torch.Tensor, unit_pool: torch.Tensor, temperature: float, batch_size: int = 1024
) -> torch.Tensor:
    """``unit(softmax(cos(d, e_i) / T) @ unit(e))`` per row of ``directions``.

    Parameters
    ----------
    directions : Tensor, shape (n, D)
        Any norm (normalised here).
    unit_pool : Tensor, shape (n_pool, D)
        Unit-norm real embeddings.
    temperature : float
        Positive.

    Returns
    -------
    Tensor, shape (n, D)
        Unit-norm rows.
    """
    if not temperature > 0:
        raise InvalidInputError(f"temperature={temperature!r}; expected a positive number.")
    dirs = unit_rows(directions)
    out = torch.empty_like(dirs)
    for start in range(0, len(dirs), batch_size):
        weights = torch.softmax(dirs[start : start + batch_size] @ unit_pool.T / temperature, 1)
        out[start : start + batch_size] = unit_rows(weights @ unit_pool)
    return out


class ImageManifoldProjection(PretrainedMixin, nn.Module):
    """Decoded embeddings -> softmax-weighted averages of real image embeddings.

    Parameters
    ----------
    n_pool : int
        Number of real embeddings in the pool.
    dim : int
        Embedding length ``D``.
    temperature : float
        Softmax temperature on cosine similarity (:data:`DEFAULT_TEMPERATURE`).

    Build one with :meth:`from_pool`; the pool is a buffer, saved with the module.
    """

    def __init__(self, n_pool: int, dim: int, temperature: float = DEFAULT_TEMPERATURE):
        super().__init__()
        if not temperature > 0:
            raise InvalidInputError(f"temperature={temperature!r}; expected a positive number.")
        self.n_pool, self.dim, self.temperature = int(n_pool), int(dim), float(temperature)
        self.register_buffer("unit_pool", torch.zeros(self.n_pool, self.dim))
        self.register_buffer("scale", torch.ones(()))

    def get_config(self) -> dict[str, Any]:
        """Init arguments (pool size, embedding length, temperature)."""
        return {"n_pool": self.n_pool, "dim": self.dim, "temperature": self.temperature}

    @classmethod
    def from_pool(
        cls, pool: np.ndarray | torch.Tensor, temperature: float = DEFAULT_TEMPERATURE
    ) -> ImageManifoldProjection:
        """A projection onto ``pool``.

        Parameters
        ----------
        pool : array or Tensor, shape (n_pool, D) or (n_pool, ...)
            Real image embeddings (e.g. the decoder's training targets, one row per image);
            trailing axes are flattened. Finite, no all-zero row.
        temperature : float
        """
        pool_t = torch.as_tensor(np.asarray(pool, dtype=np.float32))
        if pool_t.ndim < 2 or len(pool_t) == 0:
            raise InvalidInputError(
                f"pool has shape {tuple(pool_t.shape)}; expected (n_pool, D) real embeddings."
            )
        pool_t = pool_t.reshape(len(pool_t), -1)
        norms = pool_t.norm(dim=1)
        if not torch.isfinite(pool_t).all() or bool((norms == 0).any()):
            raise InvalidInputError("pool has non-finite values or an all-zero row.")
        module = cls(len(pool_t), pool_t.shape[1], temperature)
        module.unit_pool.copy_(pool_t / norms[:, None])
        module.scale.fill_(float(norms.mean()))
        return module

    @torch.no_grad()
    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Project decoded embeddings.

        Parameters
        ----------
        embeddings : Tensor, shape (B, D) or (B, ...) with ``D`` elements per row

        Returns
        -------
        Tensor, shape as ``embeddings``
            On the pool's manifold, scaled to the pool's mean norm.
        """
        shape = embeddings.shape
        flat = embeddings.reshape(shape[0], -1).to(self.unit_pool)
        if flat.shape[1] != self.dim:
            raise InvalidInputError(
                f"embeddings have {flat.shape[1]} values per row; the projection's pool has "
                f"{self.dim}."
            )
        projected = softmax_manifold_average(flat, self.unit_pool, self.temperature)
        return (projected * self.scale).reshape(shape)


def save_condition(projection: ImageManifoldProjection, folder: str | Path) -> Path:
    """Write the projection as a model folder (config + safetensors); returns ``folder``."""
    return save_pretrained(projection, folder)


def load_condition(folder: str | Path) -> ImageManifoldProjection:
    """Read a folder written by :func:`save_condition`.

    Raises
    ------
    InvalidInputError
        Missing files or another kind of model (names the folder).
    """
    module = load_pretrained(folder)
    if not isinstance(module, ImageManifoldProjection):
        raise InvalidInputError(
            f"{Path(folder)}/config.json holds a {type(module).__name__}; expected an "
            "ImageManifoldProjection."
        )
    return module
