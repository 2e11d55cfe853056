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

The same pool gives per-sample conditions (``sampling="nearest"``,
:meth:`ImageManifoldProjection.sample_conditions`): sample ``i`` of ``n`` is conditioned on the
embedding of the ``i``-th most similar training image, and the reconstructor keeps the sample
closest to the projection. Each condition is then a real image embedding (an average of several
is not one, and a generator draws it less sharply), while the selection still follows the
averaged evidence.
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
from neurodecode.validation import InvalidInputError, check_option

#: How the samples of one trial are conditioned (:meth:`ImageManifoldProjection.sample_conditions`).
SAMPLINGS = ("mean", "nearest")
#: How each sampling reads in printed summaries.
SAMPLING_WORDS = {
    "mean": "every sample conditioned on the projection",
    "nearest": "each sample conditioned on one of the nearest training images' embeddings",
}
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
    directions: torch.Tensor,
    unit_pool: torch.Tensor,
    temperature: float,
    batch_size: int = 1024,
    unit_values: torch.Tensor | None = None,
) -> torch.Tensor:
    """``unit(softmax(cos(d, e_i) / T) @ unit(v))`` per row of ``directions``; ``v = e`` unless
    ``unit_values`` is given.

    Parameters
    ----------
    directions : Tensor, shape (n, D)
        Any norm (normalised here).
    unit_pool : Tensor, shape (n_pool, D)
        Unit-norm real embeddings.
    temperature : float
        Positive.
    unit_values : Tensor, shape (n_pool, D_out), optional
        Unit-norm rows averaged with the weights instead of ``unit_pool`` (the same images in
        another space, e.g. a rich decoding target's keys and the generator's embeddings).

    Returns
    -------
    Tensor, shape (n, D) or (n, D_out)
        Unit-norm rows.
    """
    if not temperature > 0:
        raise InvalidInputError(f"temperature={temperature!r}; expected a positive number.")
    values = unit_pool if unit_values is None else unit_values
    if len(values) != len(unit_pool):
        raise InvalidInputError(
            f"unit_values has {len(values)} rows; expected one per pool row ({len(unit_pool)})."
        )
    dirs = unit_rows(directions)
    out = dirs.new_empty(len(dirs), values.shape[1])
    for start in range(0, len(dirs), batch_size):
        weights = torch.softmax(dirs[start : start + batch_size] @ unit_pool.T / temperature, 1)
        out[start : start + batch_size] = unit_rows(weights @ values)
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
    value_dim : int, optional
        Length of the output rows when the averaged embeddings live in another space than the
        pool the decoded rows are compared with (``from_pool(..., values=...)``); ``None``: the
        pool itself is averaged and the output has the input's shape.
    sampling : {"mean", "nearest"}
        What conditions each of a trial's samples (:meth:`sample_conditions`): the projection
        itself, or the ``i``-th most similar pool image's embedding for sample ``i``.
    guidance_scale : float, optional
        Classifier-free guidance to sample with (chosen with ``sampling`` on validation images by
        ``neurodecode demo``); ``None``: the generator's default.

    Build one with :meth:`from_pool`; the pool (and values) are buffers, saved with the module.
    """

    def __init__(
        self,
        n_pool: int,
        dim: int,
        temperature: float = DEFAULT_TEMPERATURE,
        value_dim: int | None = None,
        sampling: str = "mean",
        guidance_scale: float | None = None,
    ):
        super().__init__()
        if not temperature > 0:
            raise InvalidInputError(f"temperature={temperature!r}; expected a positive number.")
        self.n_pool, self.dim, self.temperature = int(n_pool), int(dim), float(temperature)
        self.value_dim = None if value_dim is None else int(value_dim)
        self.set_sampling(sampling, guidance_scale)
        self.register_buffer("unit_pool", torch.zeros(self.n_pool, self.dim))
        if self.value_dim is not None:
            self.register_buffer("unit_values", torch.zeros(self.n_pool, self.value_dim))
        self.register_buffer("scale", torch.ones(()))

    def set_sampling(self, sampling: str, guidance_scale: float | None = None) -> None:
        """Record how samples are drawn (saved in the config; see the class)."""
        check_option("sampling", sampling, SAMPLINGS)
        if guidance_scale is not None and not guidance_scale >= 1.0:
            raise InvalidInputError(
                f"guidance_scale={guidance_scale!r}; expected None or a number >= 1 (1 = none)."
            )
        self.sampling = sampling
        self.guidance_scale = None if guidance_scale is None else float(guidance_scale)

    def get_config(self) -> dict[str, Any]:
        """Init arguments (pool size, embedding length, temperature, value length, sampling)."""
        config = {"n_pool": self.n_pool, "dim": self.dim, "temperature": self.temperature}
        if self.value_dim is not None:
            config["value_dim"] = self.value_dim
        config["sampling"] = self.sampling
        if self.guidance_scale is not None:
            config["guidance_scale"] = self.guidance_scale
        return config

    @classmethod
    def from_pool(
        cls,
        pool: np.ndarray | torch.Tensor,
        temperature: float = DEFAULT_TEMPERATURE,
        values: np.ndarray | torch.Tensor | None = None,
        sampling: str = "mean",
        guidance_scale: float | None = None,
    ) -> ImageManifoldProjection:
        """A projection onto ``pool`` (or onto ``values``, weighted by similarity to ``pool``).

        Parameters
        ----------
        pool : array or Tensor, shape (n_pool, D) or (n_pool, ...)
            Real image embeddings in the decoder's output space (e.g. its training targets, one
            row per image); trailing axes are flattened. Finite, no all-zero row.
        temperature : float
        values : array or Tensor, shape (n_pool, D_out) or (n_pool, ...), optional
            The same images' embeddings in the space the generator needs, row for row with
            ``pool`` (e.g. the sim-clip embeddings of the training images of a head trained on
            the rich target ``pooled+rectified8``). The output is their weighted average,
            scaled to their mean norm. Default: ``pool``.
        sampling, guidance_scale
            See the class.
        """
        pool_t = cls._checked_rows(pool, "pool")
        value_t = None if values is None else cls._checked_rows(values, "values")
        if value_t is not None and len(value_t) != len(pool_t):
            raise InvalidInputError(
                f"values has {len(value_t)} rows; expected one per pool row ({len(pool_t)})."
            )
        module = cls(
            len(pool_t),
            pool_t.shape[1],
            temperature,
            None if value_t is None else value_t.shape[1],
            sampling,
            guidance_scale,
        )
        module.unit_pool.copy_(unit_rows(pool_t))
        out_rows = pool_t if value_t is None else value_t
        if value_t is not None:
            module.unit_values.copy_(unit_rows(value_t))
        module.scale.fill_(float(out_rows.norm(dim=1).mean()))
        return module

    @staticmethod
    def _checked_rows(rows: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
        """``rows`` as a float32 (n, D) tensor; finite, at least one row, no all-zero row."""
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.float32))
        if rows_t.ndim < 2 or len(rows_t) == 0:
            raise InvalidInputError(
                f"{name} has shape {tuple(rows_t.shape)}; expected (n_pool, D) real embeddings."
            )
        rows_t = rows_t.reshape(len(rows_t), -1)
        if not torch.isfinite(rows_t).all() or bool((rows_t.norm(dim=1) == 0).any()):
            raise InvalidInputError(f"{name} has non-finite values or an all-zero row.")
        return rows_t

    def _flat(self, embeddings: torch.Tensor) -> torch.Tensor:
        flat = embeddings.reshape(embeddings.shape[0], -1).to(self.unit_pool)
        if flat.shape[1] != self.dim:
            raise InvalidInputError(
                f"embeddings have {flat.shape[1]} values per row; the projection's pool has "
                f"{self.dim}."
            )
        return flat

    @torch.no_grad()
    def sample_conditions(
        self, embeddings: torch.Tensor, num_samples: int, sampling: str | None = None
    ) -> torch.Tensor:
        """One condition per sample of each trial.

        Parameters
        ----------
        embeddings : Tensor, shape (B, D) or (B, ...) with ``D`` elements per row
            Decoded embeddings.
        num_samples : int
            Samples per trial (at most the pool's size with ``sampling="nearest"``).
        sampling : {"mean", "nearest"}, optional
            Default: the projection's own ``sampling``.

        Returns
        -------
        Tensor, shape (B, num_samples, D_out)
            ``sampling="mean"``: the projection, repeated. ``"nearest"``: row ``i`` is the
            embedding (value) of the pool image with the ``i``-th highest cosine similarity to the
            decoded row, scaled to the pool's (values') mean norm.
        """
        if num_samples < 1:
            raise InvalidInputError(f"num_samples={num_samples!r}; expected >= 1.")
        sampling = self.sampling if sampling is None else sampling
        check_option("sampling", sampling, SAMPLINGS)
        if sampling == "mean":
            projected = self(embeddings).reshape(len(embeddings), 1, -1)
            return projected.expand(-1, num_samples, -1)
        if num_samples > self.n_pool:
            raise InvalidInputError(
                f"num_samples={num_samples} nearest pool images asked for; the pool has "
                f"{self.n_pool}."
            )
        directions = unit_rows(self._flat(embeddings))
        nearest = (directions @ self.unit_pool.T).topk(num_samples, dim=1).indices
        values = self.unit_values if self.value_dim is not None else self.unit_pool
        return values[nearest] * self.scale

    @torch.no_grad()
    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Project decoded embeddings.

        Parameters
        ----------
        embeddings : Tensor, shape (B, D) or (B, ...) with ``D`` elements per row

        Returns
        -------
        Tensor, shape as ``embeddings``, or (B, value_dim) with values
            On the pool's (or values') manifold, scaled to its mean norm.
        """
        shape = embeddings.shape
        flat = self._flat(embeddings)
        values = self.unit_values if self.value_dim is not None else None
        projected = softmax_manifold_average(
            flat, self.unit_pool, self.temperature, unit_values=values
        )
        if values is not None:
            return projected * self.scale
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
