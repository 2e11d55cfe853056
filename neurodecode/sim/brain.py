"""The simulated visual cortex: what each voxel computes from an image.

Every image gets a *generating feature vector* with three blocks:

``energy``
    Oriented energy (quadrature Gabor pairs, 4 orientations x 2 spatial frequencies) averaged over a
    G x G grid of image cells: ``(8, G, G)`` flattened. Non-negative.
``category``
    One-hot over :data:`neurodecode.sim.stimuli.CATEGORIES`.
``attributes``
    Object count, size, x and y position, and object RGB colour (7 values).

Voxels are of three classes. Early-visual voxels (``V1v`` .. ``hV4``) pool energy over a Gaussian
population receptive field (pRF) with their own orientation/frequency profile; a fraction of them pass
that drive through a compressive exponent 0.5 (Kay et al. 2013's CSS model) and are therefore *not*
linear in the generating features. Category voxels (``FFA-1``, ``PPA``, ``VWFA-1`` ...) respond to
their category, with spill-over to a related one, plus weak attribute and low-level terms. Other
``nsdgeneral`` voxels mix a wide pRF with random semantic weights; a planted unlabelled
``food`` cluster responds to food (NSD has no food localiser, as in Jain et al. 2023).

Responses are in percent signal change: ``baseline + amplitude * standardised drive``, so that the
signal standard deviation over images equals ``amplitude`` and ``ncsnr = amplitude / noise_sd``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurodecode.sim.stimuli import CATEGORIES, COLOURS, StimulusSet

N_ORIENTATIONS = 4
SPATIAL_FREQUENCIES = (0.125, 0.25)  # cycles per pixel at 64 px, scaled with image size
ATTRIBUTE_NAMES = ("count", "scale", "x", "y", "red", "green", "blue")

#: ROI file -> ordered label names (index = position + 1), as NSD's .ctab tables list them.
ROI_TABLES: dict[str, tuple[str, ...]] = {
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
}

#: category ROI -> (preferred category, spill-over category or None, centre (lateral, posterior->
#: anterior, vertical) in units of the brain ellipsoid's radii; mirrored across hemispheres).
CATEGORY_ROIS: dict[str, tuple[str, str | None, tuple[float, float, float]]] = {
    "OFA": ("face", "body", (0.55, 0.27, -0.30)),
    "FFA-1": ("face", "body", (0.42, 0.34, -0.55)),
    "FFA-2": ("face", "body", (0.42, 0.42, -0.55)),
    "EBA": ("body", "face", (0.78, 0.31, 0.05)),
    "FBA-1": ("body", "face", (0.62, 0.40, -0.30)),
    "OPA": ("place", "object", (0.55, 0.24, 0.45)),
    "PPA": ("place", "object", (0.20, 0.40, -0.50)),
    "RSC": ("place", None, (0.18, 0.33, 0.40)),
    "OWFA": ("word", "object", (0.75, 0.34, -0.40)),
    "VWFA-1": ("word", None, (0.62, 0.44, -0.55)),
    "food": ("food", None, (0.32, 0.45, -0.20)),  # planted, in no localiser file
}
ROI_FILE_OF = {name: file for file, names in ROI_TABLES.items() for name in names}


def _gabor_bank(size: int) -> np.ndarray:
    """Quadrature Gabor filters in the Fourier domain, shape (n_channels, 2, size, size)."""
    freqs = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(freqs, freqs, indexing="ij")
    bank = []
    for sf in SPATIAL_FREQUENCIES:
        for k in range(N_ORIENTATIONS):
            theta = np.pi * k / N_ORIENTATIONS
            u0, v0 = sf * np.cos(theta), sf * np.sin(theta)
            bw = sf / 2.5
            lobe = np.exp(-((fx - u0) ** 2 + (fy - v0) ** 2) / (2 * bw**2))
            mirror = np.exp(-((fx + u0) ** 2 + (fy + v0) ** 2) / (2 * bw**2))
            bank.append(np.stack([lobe + mirror, -1j * (lobe - mirror)]))  # even, odd
    return np.asarray(bank)


def energy_features(images: np.ndarray, grid: int = 8, batch: int = 256) -> np.ndarray:
    """Oriented energy pooled on a grid.

    Parameters
    ----------
    images : ndarray, shape (n, H, W, 3), uint8
        Square RGB images; ``H`` must be divisible by ``grid``.
    grid : int
        Cells per side of the pooling grid.

    Returns
    -------
    ndarray, shape (n, 8 * grid * grid), float64
        Energy per (channel, row cell, column cell), channel = frequency x orientation.
    """
    n, size = images.shape[0], images.shape[1]
    if size % grid:
        raise ValueError(f"image size {size} is not divisible by the energy grid {grid}.")
    bank = _gabor_bank(size)
    cell = size // grid
    out = np.empty((n, bank.shape[0], grid, grid))
    for start in range(0, n, batch):
        gray = images[start : start + batch].astype(np.float64).mean(axis=-1) / 255.0
        gray -= gray.mean(axis=(1, 2), keepdims=True)
        spectrum = np.fft.fft2(gray)[:, None, None]
        responses = np.fft.ifft2(spectrum * bank[None]).real
        energy = np.sqrt(responses[:, :, 0] ** 2 + responses[:, :, 1] ** 2)
        m = energy.shape[0]
        out[start : start + m] = energy.reshape(m, bank.shape[0], grid, cell, grid, cell).mean(
            axis=(3, 5)
        )
    return out.reshape(n, -1)


@dataclass
class GeneratingFeatures:
    """The feature vectors the simulated brain computes from, per image.

    Attributes
    ----------
    values : ndarray, shape (n_images, n_features)
        ``[energy | category one-hot | attributes]``, raw (not standardised).
    blocks : dict of str -> (start, stop)
        Column ranges of the ``energy``, ``category`` and ``attributes`` blocks.
    grid : int
        Side of the energy pooling grid.
    """

    values: np.ndarray
    blocks: dict[str, tuple[int, int]]
    grid: int


def generating_features(stimuli: StimulusSet, grid: int = 8) -> GeneratingFeatures:
    """Compute the generating features of a stimulus set (see module docstring)."""
    energy = energy_features(stimuli.images, grid=grid)
    category = np.eye(len(CATEGORIES))[stimuli.category_index]
    rgb = np.array([COLOURS[c] for c in stimuli.colour], dtype=np.float64) / 255.0
    attributes = np.column_stack([stimuli.count, stimuli.scale, stimuli.position, rgb])
    values = np.hstack([energy, category, attributes])
    e, c = energy.shape[1], category.shape[1]
    blocks = {"energy": (0, e), "category": (e, e + c), "attributes": (e + c, values.shape[1])}
    return GeneratingFeatures(values=values, blocks=blocks, grid=grid)


@dataclass
class VoxelPopulation:
    """Parameters of every simulated voxel of one subject (nsdgeneral voxels only).

    Attributes
    ----------
    ijk : ndarray, shape (n_voxels, 3), int
        (x, y, z) voxel indices in the subject's volume.
    roi : ndarray of str, shape (n_voxels,)
        ROI name (``"V1v"``, ``"FFA-1"``, ``"food"``, ... or ``""`` for none).
    kind : ndarray of str, shape (n_voxels,)
        ``"early"``, ``"category"`` or ``"other"``.
    weights : ndarray, shape (n_voxels, n_features)
        Weights on the generating features (raw energy; standardised category/attributes).
    exponent : ndarray, shape (n_voxels,)
        1 for linear voxels, 0.5 for compressive (CSS) ones.
    prf : ndarray, shape (n_voxels, 3)
        pRF centre x, y and size in image fractions (NaN for voxels without a pRF).
    amplitude, baseline : ndarray, shape (n_voxels,)
        Signal SD over images and mean response, percent signal change.
    noise_sd : ndarray, shape (n_voxels,)
        Single-trial noise SD, percent signal change.
    """

    ijk: np.ndarray
    roi: np.ndarray
    kind: np.ndarray
    weights: np.ndarray
    exponent: np.ndarray
    prf: np.ndarray
    amplitude: np.ndarray
    baseline: np.ndarray
    noise_sd: np.ndarray

    @property
    def ncsnr(self) -> np.ndarray:
        """True noise-ceiling SNR per voxel: signal SD / noise SD."""
        return self.amplitude / self.noise_sd

    @property
    def linear(self) -> np.ndarray:
        """Boolean per voxel: the response is linear in the generating features."""
        return self.exponent == 1.0


def _prf_weights(grid: int, cx: float, cy: float, sigma: float, profile: np.ndarray) -> np.ndarray:
    centres = (np.arange(grid) + 0.5) / grid
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    gauss = np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * sigma**2))
    gauss /= gauss.sum()
    return (profile[:, None, None] * gauss[None]).ravel()


def voxel_drive(
    features: GeneratingFeatures, population: VoxelPopulation, standardised: np.ndarray
) -> np.ndarray:
    """Noise-free responses, percent signal change, shape (n_images, n_voxels).

    ``standardised`` is ``features.values`` with category/attribute columns z-scored (energy kept
    raw and non-negative so that the compressive exponent is defined).
    """
    drive = standardised @ population.weights.T
    compressive = population.exponent != 1.0
    if compressive.any():
        drive[:, compressive] = (
            np.maximum(drive[:, compressive], 0.0) ** population.exponent[compressive]
        )
    mean, sd = drive.mean(axis=0), drive.std(axis=0)
    sd[sd == 0] = 1.0
    return population.baseline + population.amplitude * (drive - mean) / sd


def standardise_features(features: GeneratingFeatures) -> np.ndarray:
    """Z-score the category and attribute columns; energy stays raw (non-negative)."""
    values = features.values.copy()
    start = features.blocks["category"][0]
    block = values[:, start:]
    sd = block.std(axis=0)
    sd[sd == 0] = 1.0
    values[:, start:] = (block - block.mean(axis=0)) / sd
    return values
