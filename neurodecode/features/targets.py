"""Decoding targets computed from images alone: spatial maps of an image tower, a low-level
colour / contrast / oriented-energy pathway, and standardised concatenations of them.

MindEye1/2 decode more than a pooled CLIP vector: CLIP's token outputs (257 x 768, 256 x 1664)
carry layout, and a low-level pathway (Stable Diffusion VAE latents) carries colour and
position. This module builds the same kinds of targets for any image tower and any stimulus
set, from pixels only (nothing here reads a simulator's ground truth):

- :func:`tower_maps`: activations of named image-tower modules (forward hooks), kept spatial and
  block-averaged onto a coarse grid (a convnet's stage maps, or a vision transformer's patch
  tokens laid back on their grid);
- :func:`lab_thumbnail`, :func:`local_contrast`, :func:`oriented_energy`: a small CIELAB image,
  the RMS luminance contrast of each grid cell, and quadrature-Gabor energy per orientation and
  wavelength (the image-computable encoding model of Kay et al. 2008), each on a grid;
- :func:`rectified_opponents`: half-wave rectified ON/OFF lightness and colour-opponent signals
  (``a*`` red/green, ``b*`` yellow/blue) per pixel, averaged per grid cell: what retinal and
  LGN ON/OFF and opponent pathways pass on, which a cell's mean ``L*a*b*`` cannot express (a
  cell half black, half white has the mean of a grey one);
- :func:`standardise_blocks` / :class:`BlockStatistics`: several such blocks, centred per feature
  and scaled so that every block carries the same total variance, flattened and concatenated,
  with statistics taken from reference rows only (the training images) and kept to standardise
  other rows (the test images) the same way, so a FeatureStore layer can hold the result.

Named spaces built from these blocks (``pooled+rectified8``, ...) and their FeatureStore entries
are in :mod:`neurodecode.features.target_spaces`.

Every map is channel-first ``(N, C, g, g)``; flattened it is a row of ``C * g * g`` features.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neurodecode.validation import InvalidInputError

#: sRGB (D65) -> CIE XYZ
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidInputError(
            f"images have shape {images.shape} and dtype {images.dtype}; expected (N, H, W, 3) "
            "uint8 RGB."
        )
    return images


def srgb_to_lab(images: np.ndarray) -> np.ndarray:
    """CIELAB (D65 white) of sRGB images.

    Parameters
    ----------
    images : ndarray, shape (N, H, W, 3), uint8 sRGB

    Returns
    -------
    ndarray, shape (N, H, W, 3), float32
        ``L*`` in [0, 100], ``a*`` and ``b*`` roughly in [-110, 110].
    """
    rgb = _check_images(images).astype(np.float64) / 255.0
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = linear @ _RGB_TO_XYZ.T / _WHITE_D65
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )
    return lab.astype(np.float32)


def block_average(maps: np.ndarray | torch.Tensor, grid: int) -> np.ndarray:
    """Average channel-first maps over equal square blocks onto a ``grid x grid`` lattice.

    Parameters
    ----------
    maps : ndarray or Tensor, shape (N, C, H, W)
        ``H`` and ``W`` must be multiples of ``grid`` (a map already at ``grid`` is returned as is).
    grid : int

    Returns
    -------
    ndarray, shape (N, C, grid, grid), float32
    """
    maps = torch.as_tensor(maps)
    if maps.ndim != 4:
        raise InvalidInputError(f"maps have shape {tuple(maps.shape)}; expected (N, C, H, W).")
    height, width = maps.shape[-2:]
    if grid < 1 or height % grid or width % grid:
        raise InvalidInputError(
            f"cannot average a {height} x {width} map onto a {grid} x {grid} grid; the grid must "
            "divide both sides."
        )
    pooled = torch.nn.functional.avg_pool2d(maps.float(), (height // grid, width // grid))
    return pooled.numpy().astype(np.float32)


def lab_thumbnail(images: np.ndarray, grid: int = 8) -> np.ndarray:
    """A ``grid x grid`` CIELAB image: each cell's mean ``L*, a*, b*``.

    Returns
    -------
    ndarray, shape (N, 3, grid, grid), float32 (CIELAB units)
    """
    lab = srgb_to_lab(images)
    return block_average(np.moveaxis(lab, -1, 1), grid)


def local_contrast(images: np.ndarray, grid: int = 8) -> np.ndarray:
    """RMS contrast of ``L*`` within each cell of a ``grid x grid`` lattice.

    Returns
    -------
    ndarray, shape (N, 1, grid, grid), float32 (``L*`` units)
    """
    lightness = srgb_to_lab(images)[..., :1]
    lightness = np.moveaxis(lightness, -1, 1).astype(np.float64)
    mean = block_average(lightness, grid).astype(np.float64)
    mean_square = block_average(lightness**2, grid).astype(np.float64)
    return np.sqrt(np.maximum(mean_square - mean**2, 0.0)).astype(np.float32)


#: ``L*`` of mid-grey: :func:`rectified_opponents` counts ON and OFF signals from it
MID_LIGHTNESS = 50.0


def rectified_opponents(images: np.ndarray, grid: int = 8) -> np.ndarray:
    """Half-wave rectified lightness and colour-opponent signals, averaged per grid cell.

    Per pixel, in CIELAB: ``max(L* - 50, 0)`` (ON), ``max(50 - L*, 0)`` (OFF), ``max(a*, 0)``
    (red), ``max(-a*, 0)`` (green), ``max(b*, 0)`` (yellow), ``max(-b*, 0)`` (blue); each
    channel's mean over the pixels of every cell of a ``grid x grid`` lattice. Rectifying before
    pooling keeps what a cell's mean colour loses (black and white halves average to grey).

    Returns
    -------
    ndarray, shape (N, 6, grid, grid), float32 (CIELAB units)
    """
    lab = np.moveaxis(srgb_to_lab(images), -1, 1).astype(np.float32)
    lightness = lab[:, :1] - MID_LIGHTNESS
    signed = np.concatenate([lightness, lab[:, 1:2], lab[:, 2:3]], axis=1)
    channels = np.stack([np.maximum(signed, 0), np.maximum(-signed, 0)], axis=2)
    return block_average(channels.reshape(len(lab), 6, *lab.shape[-2:]), grid)


def gabor_pairs(
    n_orientations: int = 4, wavelengths: Sequence[float] = (4.0, 8.0)
) -> tuple[torch.Tensor, int]:
    """Zero-mean even/odd Gabor kernels, one quadrature pair per (wavelength, orientation).

    The envelope SD is half the wavelength (about one octave of bandwidth).

    Returns
    -------
    kernels : Tensor, shape (2 * n_wavelengths * n_orientations, 1, K, K)
        Even then odd kernel of each pair, pairs ordered wavelength-major; each kernel has unit
        L2 norm.
    size : int
        ``K`` (odd), set by the longest wavelength.
    """
    if n_orientations < 1 or not wavelengths or min(wavelengths) <= 0:
        raise InvalidInputError(
            f"need n_orientations >= 1 and positive wavelengths; got {n_orientations}, "
            f"{list(wavelengths)}."
        )
    size = 2 * math.ceil(1.5 * max(wavelengths)) + 1
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    kernels = []
    for wavelength in wavelengths:
        envelope = np.exp(-(x**2 + y**2) / (2 * (wavelength / 2) ** 2))
        for k in range(n_orientations):
            theta = np.pi * k / n_orientations
            phase = 2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / wavelength
            for carrier in (np.cos(phase), np.sin(phase)):
                kernel = envelope * carrier
                kernel = kernel - envelope * (kernel.sum() / envelope.sum())
                kernels.append(kernel / np.linalg.norm(kernel))
    return torch.tensor(np.stack(kernels)[:, None], dtype=torch.float32), size


def oriented_energy(
    images: np.ndarray,
    grid: int = 8,
    n_orientations: int = 4,
    wavelengths: Sequence[float] = (4.0, 8.0),
    batch_size: int = 256,
) -> np.ndarray:
    """Quadrature-Gabor energy of ``L*`` per orientation and wavelength, averaged per grid cell.

    Energy is ``sqrt(even² + odd²)`` of each pair (:func:`gabor_pairs`), with reflected borders.

    Returns
    -------
    ndarray, shape (N, n_wavelengths * n_orientations, grid, grid), float32
    """
    images = _check_images(images)
    kernels, size = gabor_pairs(n_orientations, wavelengths)
    # by FFT in float64 (scipy's pocketfft: the same numbers on every call): torch's float32 CPU
    # convolution picks its algorithm per call, and gave energies differing by ~1e-5 from call to
    # call for the same images, so a target space's statistics (fitted on these values, their
    # digest recorded in the store) came out different on a rerun
    from scipy import fft

    flipped = kernels[:, 0].double().numpy()[:, ::-1, ::-1]  # conv2d is a correlation
    out = []
    for start in range(0, len(images), batch_size):
        lightness = srgb_to_lab(images[start : start + batch_size])[..., 0] / 100.0
        x = np.pad(
            np.asarray(lightness, dtype=np.float64),
            ((0, 0), (size // 2, size // 2), (size // 2, size // 2)),
            mode="reflect",
        )
        height, width = x.shape[-2] - size + 1, x.shape[-1] - size + 1  # the image's own size
        shape = [fft.next_fast_len(n + size - 1, real=True) for n in x.shape[-2:]]
        kernel_spectrum = fft.rfft2(flipped, s=shape)[None]
        for chunk in range(0, len(x), 32):  # small chunks: large temporaries cost more than FFTs
            spectrum = fft.rfft2(x[chunk : chunk + 32], s=shape)[:, None] * kernel_spectrum
            full = fft.irfft2(spectrum, s=shape)  # the full convolution, no wrap-around
            response = full[..., size - 1 : size - 1 + height, size - 1 : size - 1 + width]
            pairs = response.reshape(len(response), -1, 2, height, width)
            energy = np.sqrt((pairs**2).sum(2)).astype(np.float32)
            out.append(block_average(energy, grid))
    return np.concatenate(out) if out else np.zeros((0, len(kernels) // 2, grid, grid), "f4")


def tower_maps(
    encoder,
    images: np.ndarray,
    modules: Sequence[str],
    grid: int | None = None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Spatial activations of image-tower modules, optionally block-averaged onto a grid.

    Parameters
    ----------
    encoder : ClipEncoder
        Its ``preprocess_images`` and ``model.visual`` are used
        (:func:`neurodecode.features.clip.load_clip`, or sim-clip).
    images : ndarray, shape (N, H, W, 3), uint8
    modules : sequence of str
        Dotted names under ``model.visual`` (e.g. ``trunk.features.11``: a convnet stage,
        ``transformer.resblocks.5``: a ViT block).
    grid : int, optional
        Block-average each map onto ``grid x grid`` (it must divide the map's side).

    Returns
    -------
    dict
        Module -> ndarray, shape (N, C, h, w) (``(N, C, grid, grid)`` with ``grid``), float32.
        A transformer block's tokens ``(N, T, D)`` are laid back on their square patch grid
        (prefix tokens dropped) as ``(N, D, s, s)``.
    """
    from neurodecode.features.hooks import capture_activations

    images = _check_images(images)
    visual = encoder.model.visual
    parts: dict[str, list[np.ndarray]] = {m: [] for m in modules}
    for start in range(0, len(images), batch_size):
        pixels = encoder.preprocess_images(images[start : start + batch_size])
        captured = capture_activations(visual, list(modules), pixels, pooled=False)
        for module, activation in captured.items():
            activation = activation.detach().float().cpu()
            if activation.ndim == 3:
                activation = _tokens_to_grid(activation, module)
            if activation.ndim != 4:
                raise InvalidInputError(
                    f"module {module!r} returned shape {tuple(activation.shape)}; expected a "
                    "spatial map (N, C, H, W) or tokens (N, T, D)."
                )
            parts[module].append(
                block_average(activation, grid) if grid else activation.numpy().astype("f4")
            )
    return {m: np.concatenate(p) for m, p in parts.items()}


def _tokens_to_grid(tokens: torch.Tensor, module: str) -> torch.Tensor:
    n, count, width = tokens.shape
    for prefix in range(0, 9):
        side = math.isqrt(count - prefix)
        if side * side == count - prefix:
            patches = tokens[:, prefix:]
            return patches.transpose(1, 2).reshape(n, width, side, side)
    raise InvalidInputError(
        f"module {module!r} returned {count} tokens, which are no square patch grid plus up to "
        "8 prefix tokens."
    )


@dataclass(frozen=True)
class BlockStatistics:
    """Per-block centring and scaling fitted on reference rows (the training images).

    Each block is centred per feature and divided by the square root of its total variance
    (summed over its features), both measured on the reference rows, so every block carries unit
    total variance there whatever its size and units. :meth:`apply` then standardises any rows
    (e.g. the test images) with these training statistics.

    Attributes
    ----------
    means : dict
        Block name -> ndarray (d_block,) float64, the reference mean of each flattened feature;
        the blocks' order is the order of the concatenation.
    scales : dict
        Block name -> float, the square root of the block's total reference variance.
    n_reference : int
        Number of reference rows the statistics come from.
    """

    means: dict[str, np.ndarray]
    scales: dict[str, float]
    n_reference: int

    @classmethod
    def fit(
        cls, blocks: Mapping[str, np.ndarray], reference: np.ndarray | slice | None = None
    ) -> BlockStatistics:
        """Statistics of ``blocks`` (name -> ndarray (N, ...)) on the ``reference`` rows (index
        array, boolean mask or slice; default all rows)."""
        flats = _flat_blocks(blocks)
        means, scales, n_reference = {}, {}, 0
        for name, flat in flats.items():
            ref = flat if reference is None else flat[reference]
            if len(ref) < 2:
                raise InvalidInputError("block statistics need at least 2 reference rows.")
            mean = ref.mean(0)
            total = float(((ref - mean) ** 2).sum(1).mean())
            if not np.isfinite(total) or total <= 0:
                raise InvalidInputError(f"block {name!r} is constant on the reference rows.")
            means[name], scales[name], n_reference = mean, math.sqrt(total), len(ref)
        return cls(means, scales, n_reference)

    @property
    def dims(self) -> int:
        """Width of the concatenated, standardised rows."""
        return int(sum(len(m) for m in self.means.values()))

    def apply(self, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
        """Standardise and concatenate ``blocks`` (the fitted names, any order, any rows).

        Returns
        -------
        ndarray, shape (N, dims), float32
        """
        if set(blocks) != set(self.means):
            raise InvalidInputError(
                f"blocks {sorted(blocks)} differ from the fitted blocks {sorted(self.means)}."
            )
        flats = _flat_blocks({name: blocks[name] for name in self.means})
        parts = []
        for name, flat in flats.items():
            if flat.shape[1] != len(self.means[name]):
                raise InvalidInputError(
                    f"block {name!r} has {flat.shape[1]} features per row; the statistics were "
                    f"fitted on {len(self.means[name])}."
                )
            parts.append(((flat - self.means[name]) / self.scales[name]).astype(np.float32))
        return np.concatenate(parts, axis=1)

    def digest(self) -> str:
        """SHA-256 (16 hex digits) of the statistics rounded to float32: equal statistics, equal
        digest."""
        sha = hashlib.sha256()
        for name in self.means:
            sha.update(name.encode())
            sha.update(np.asarray(self.means[name], dtype="<f4").tobytes())
            sha.update(np.asarray([self.scales[name]], dtype="<f4").tobytes())
        return sha.hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write the statistics to an ``.npz`` file (read back by :meth:`load`)."""
        path = Path(path)
        arrays = {f"mean:{name}": mean for name, mean in self.means.items()}
        arrays["order"] = np.array(list(self.means))
        arrays["scales"] = np.array([self.scales[name] for name in self.means])
        arrays["n_reference"] = np.array(self.n_reference)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(temporary, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(temporary, path)  # atomic: ranks writing the same statistics never collide
        return path

    @classmethod
    def load(cls, path: str | Path) -> BlockStatistics:
        """Read statistics written by :meth:`save`."""
        path = Path(path)
        try:
            with np.load(path) as data:
                order = [str(name) for name in data["order"]]
                means = {name: data[f"mean:{name}"].astype(np.float64) for name in order}
                scales = dict(zip(order, (float(s) for s in data["scales"])))
                n_reference = int(data["n_reference"])
        except (OSError, KeyError, ValueError) as err:
            raise InvalidInputError(
                f"{path} is not a block-statistics file written by BlockStatistics.save ({err})."
            ) from None
        return cls(means, scales, n_reference)


def _flat_blocks(blocks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not blocks:
        raise InvalidInputError("block standardisation needs at least one block.")
    sizes = {name: len(block) for name, block in blocks.items()}
    if len(set(sizes.values())) != 1:
        raise InvalidInputError(f"blocks have different numbers of rows: {sizes}.")
    return {
        name: np.asarray(block, dtype=np.float64).reshape(len(block), -1)
        for name, block in blocks.items()
    }


def standardise_blocks(
    blocks: Mapping[str, np.ndarray], reference: np.ndarray | slice | None = None
) -> np.ndarray:
    """Flatten, centre and scale feature blocks so each carries the same variance; concatenate.

    Each block is centred per feature and divided by the square root of its total variance
    (summed over its features), both measured on the ``reference`` rows only, so every block
    contributes unit total variance whatever its size and units (:class:`BlockStatistics` keeps
    the statistics, to standardise other rows the same way).

    Parameters
    ----------
    blocks : mapping
        Name -> ndarray (N, ...), the same N rows (images) in every block; concatenated in the
        mapping's order.
    reference : index array, boolean mask or slice, optional
        The rows the statistics come from (e.g. the training images); default all rows.

    Returns
    -------
    ndarray, shape (N, sum of block sizes), float32
    """
    return BlockStatistics.fit(blocks, reference).apply(blocks)
