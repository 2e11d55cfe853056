"""The simulated visual cortex: what each voxel computes from an image.

Every image gets a *generating feature vector* made of six blocks (:func:`generating_features`):

``energy``
    Oriented energy (quadrature Gabor pairs, 4 orientations x 2 spatial frequencies) of the
    mean-removed grayscale image, averaged over a G x G grid of image cells: ``(8, G, G)``
    flattened. Non-negative.
``luminance``
    Per cell, the mean ON (lighter than mid-grey) and OFF (darker) luminance signals, half-wave
    rectified per pixel as ON and OFF pathways do, and the RMS luminance contrast:
    ``(3, G, G)``. Non-negative; the cell's mean luminance is ``mid + ON - OFF``.
``colour``
    Per cell, half-wave rectified cone-opponent signals ``L-M > 0`` ("red"), ``L-M < 0``
    ("green"), ``S-(L+M) > 0`` ("blue") and ``S-(L+M) < 0`` ("yellow"): ``(4, G, G)``.
    Non-negative. Cone excitations come from linearised sRGB through the Viénot, Brettel &
    Mollon (1999) matrix, normalised to white and compressed with a cube root.
``category``
    One-hot over :data:`neurodecode.sim.stimuli.CATEGORIES` (recorded; no voxel reads it).
``semantic``
    A graded semantic embedding on :data:`SEMANTIC_AXES` (animate, face, body, scene, text,
    food, manmade, large): each category's prototype (face and body share animacy, place and
    object share man-made and size, food is partly animate-like), scaled per image by the
    object's salience (total object area) and colour typicality, so that responses are graded
    within and across categories.
``attributes``
    Object count, size, x and y position, RGB colour and eccentricity of the object group.

The first three blocks are the *low-level* blocks; they stay raw (non-negative) so that the
compressive exponent is defined. The others are z-scored (:func:`standardise_features`).

Voxels are of three classes. Early-visual voxels (``V1v`` .. ``hV4``) pool the low-level blocks
over a Gaussian population receptive field (pRF) whose size grows from V1 to hV4 (Dumoulin &
Wandell 2008; Kay et al. 2013), each with its own orientation/frequency, luminance and colour
profile and its own mixture of the three blocks (hV4 the most colour-driven, Brewer et al. 2005);
a fraction of them pass that drive through a compressive exponent 0.3 (Kay et al. 2013's CSS
model) and are therefore *not* linear in the generating features. Category voxels (``FFA-1``,
``PPA``, ``VWFA-1`` ...) read the semantic axes (their category's axis first, see
:data:`CATEGORY_TUNING`), attributes (face and word areas prefer central objects, place areas
peripheral ones) and a weak low-level term. Other ``nsdgeneral`` voxels mix a wide pRF with
random semantic weights; a planted unlabelled ``food`` cluster responds to food (NSD has no food
localiser, as in Jain et al. 2023).

Responses are in percent signal change: ``baseline + amplitude * standardised drive``, so that the
signal standard deviation over images equals ``amplitude`` and ``ncsnr = amplitude / noise_sd``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from neurodecode.sim.stimuli import CATEGORIES, COLOURS, StimulusSet

N_ORIENTATIONS = 4
SPATIAL_FREQUENCIES = (0.125, 0.25)  # cycles per pixel at 64 px, scaled with image size
LUMINANCE_CHANNELS = ("on", "off", "contrast")
#: luminance (compressed cone scale, white ~0.96, black ~0.21) from which ON and OFF signals count
_MID_LUMINANCE = 0.6
COLOUR_CHANNELS = ("red", "green", "blue", "yellow")
#: blocks pooled over pRFs and kept raw (non-negative), in the order they are stored
LOWLEVEL_BLOCKS = ("energy", "luminance", "colour")
SEMANTIC_AXES = ("animate", "face", "body", "scene", "text", "food", "manmade", "large")
ATTRIBUTE_NAMES = ("count", "scale", "x", "y", "red", "green", "blue", "eccentricity")

#: Viénot, Brettel & Mollon (1999): linear sRGB -> LMS cone excitations
_RGB_TO_LMS = np.array(
    [
        [17.8824, 43.5161, 4.11935],
        [3.45565, 27.1554, 3.86714],
        [0.0299566, 0.184309, 1.46709],
    ]
)
#: gains on the compressed L-M and S-(L+M) signals: the palette's most saturated colours give ~0.5
_OPPONENT_GAIN = (4.0, 1.5)

#: category -> prototype on :data:`SEMANTIC_AXES` (similarity structure of the categories)
SEMANTIC_PROTOTYPES: dict[str, tuple[float, ...]] = {
    "face": (1.0, 1.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.2),
    "body": (1.0, 0.3, 1.0, 0.1, 0.0, 0.0, 0.0, 0.5),
    "place": (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.6, 1.0),
    "word": (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.7, 0.0),
    "food": (0.25, 0.0, 0.0, 0.0, 0.0, 1.0, 0.1, 0.1),
    "object": (0.0, 0.0, 0.0, 0.15, 0.0, 0.1, 1.0, 0.3),
}
#: category -> colours typical of it (others scale the category's semantic vector by 0.75)
_TYPICAL_COLOURS = {
    "face": ("orange", "yellow", "white"),
    "food": ("red", "green", "orange", "yellow"),
}

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

#: category ROI -> weights on semantic axes and attributes (before per-voxel jitter). Face and
#: word areas prefer central objects, place areas peripheral and large ones (eccentricity bias,
#: Hasson et al. 2002); the spill-over of :data:`CATEGORY_ROIS` comes from the prototypes.
CATEGORY_TUNING: dict[str, dict[str, float]] = {
    "OFA": {"face": 1.0, "animate": 0.15, "eccentricity": -0.25},
    "FFA-1": {"face": 1.0, "animate": 0.2, "body": 0.1, "eccentricity": -0.3, "scale": 0.2},
    "FFA-2": {"face": 1.0, "animate": 0.25, "eccentricity": -0.3},
    "EBA": {"body": 1.0, "animate": 0.2, "scale": 0.15},
    "FBA-1": {"body": 1.0, "animate": 0.25, "face": 0.1},
    "OPA": {"scene": 1.0, "large": 0.3, "eccentricity": 0.3},
    "PPA": {"scene": 1.0, "large": 0.4, "manmade": 0.2, "eccentricity": 0.3, "scale": 0.2},
    "RSC": {"scene": 1.0, "large": 0.3, "eccentricity": 0.2},
    "OWFA": {"text": 1.0, "manmade": 0.2, "eccentricity": -0.2},
    "VWFA-1": {"text": 1.0, "eccentricity": -0.3},
    "food": {"food": 1.0, "animate": 0.1},
}


def _gabor_bank(size: int) -> np.ndarray:
    """Quadrature Gabor filters in the Fourier domain, shape (n_channels, size, size), complex.

    Each filter is one-sided (``2 x`` the positive-frequency lobe): the real part of its output
    is the even (cosine) Gabor response and the imaginary part the odd (sine) one, so the energy
    ``sqrt(even^2 + odd^2)`` is the modulus of one inverse FFT.
    """
    freqs = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(freqs, freqs, indexing="ij")
    bank = []
    for sf in SPATIAL_FREQUENCIES:
        for k in range(N_ORIENTATIONS):
            theta = np.pi * k / N_ORIENTATIONS
            u0, v0 = sf * np.cos(theta), sf * np.sin(theta)
            bw = sf / 2.5
            bank.append(2 * np.exp(-((fx - u0) ** 2 + (fy - v0) ** 2) / (2 * bw**2)))
    return np.asarray(bank, dtype=np.complex64)


def _check_grid(size: int, grid: int) -> None:
    if size % grid:
        raise ValueError(f"image size {size} is not divisible by the energy grid {grid}.")


def _cells(x: np.ndarray, grid: int) -> np.ndarray:
    """(n, c, H, W) -> (n, c, grid, H // grid, grid, W // grid) cell view."""
    n, c, h, w = x.shape
    return x.reshape(n, c, grid, h // grid, grid, w // grid)


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
    _check_grid(size, grid)
    bank = _gabor_bank(size)
    out = np.empty((n, bank.shape[0], grid, grid))
    for start in range(0, n, batch):
        gray = images[start : start + batch].astype(np.float64).mean(axis=-1) / 255.0
        gray -= gray.mean(axis=(1, 2), keepdims=True)
        spectrum = scipy.fft.fft2(gray.astype(np.float32))[:, None]
        energy = np.abs(scipy.fft.ifft2(spectrum * bank[None]))
        out[start : start + len(energy)] = _cells(energy, grid).mean(axis=(3, 5))
    return out.reshape(n, -1)


def cone_opponent_images(images: np.ndarray) -> np.ndarray:
    """Per-pixel luminance and cone-opponent signals, shape (n, 3, H, W): ``(L+M)/2``, ``L-M``,
    ``S-(L+M)/2`` of cube-root-compressed, white-normalised cone excitations (opponent axes
    times :data:`_OPPONENT_GAIN`)."""
    rgb = images.astype(np.float64) / 255.0
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    lms = (linear @ _RGB_TO_LMS.T) / _RGB_TO_LMS.sum(axis=1)
    l_, m_, s_ = np.moveaxis(np.cbrt(lms), -1, 0)
    lum = (l_ + m_) / 2
    return np.stack([lum, _OPPONENT_GAIN[0] * (l_ - m_), _OPPONENT_GAIN[1] * (s_ - lum)], axis=1)


def luminance_colour_features(
    images: np.ndarray, grid: int = 8, batch: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and colour blocks pooled on a grid (see module docstring).

    Returns
    -------
    luminance : ndarray, shape (n, 3 * grid * grid)
        Mean ON and OFF luminance signals and RMS luminance contrast per cell.
    colour : ndarray, shape (n, 4 * grid * grid)
        Mean of the rectified red, green, blue and yellow opponent signals per cell.
    """
    n = images.shape[0]
    _check_grid(images.shape[1], grid)
    lum_out = np.empty((n, 3, grid, grid))
    col_out = np.empty((n, 4, grid, grid))
    for start in range(0, n, batch):
        opp = cone_opponent_images(images[start : start + batch])
        m = len(opp)
        lum = opp[:, :1] - _MID_LUMINANCE
        on_off = np.concatenate([np.maximum(lum, 0), np.maximum(-lum, 0)], axis=1)
        lum_out[start : start + m, :2] = _cells(on_off, grid).mean(axis=(3, 5))
        lum_out[start : start + m, 2] = _cells(opp[:, :1], grid).std(axis=(3, 5))[:, 0]
        rectified = np.concatenate(
            [
                np.maximum(opp[:, 1:2], 0),
                np.maximum(-opp[:, 1:2], 0),
                np.maximum(opp[:, 2:3], 0),
                np.maximum(-opp[:, 2:3], 0),
            ],
            axis=1,
        )
        col_out[start : start + m] = _cells(rectified, grid).mean(axis=(3, 5))
    return lum_out.reshape(n, -1), col_out.reshape(n, -1)


def semantic_features(stimuli: StimulusSet) -> np.ndarray:
    """Graded semantic embedding, shape (n, len(SEMANTIC_AXES)) (see module docstring).

    The category prototype is scaled by the object's salience, ``sqrt(count * scale^2 / 0.07)``
    (0.6-1.7: larger and more objects drive category areas harder), and by its colour typicality
    (1, or 0.75 for a colour atypical of faces or food).
    """
    prototypes = np.array([SEMANTIC_PROTOTYPES[c] for c in CATEGORIES])
    base = prototypes[stimuli.category_index]
    salience = np.sqrt(stimuli.count * stimuli.scale**2 / 0.07)
    typical = np.array(
        [
            1.0 if cat not in _TYPICAL_COLOURS or col in _TYPICAL_COLOURS[cat] else 0.75
            for cat, col in zip(stimuli.category, stimuli.colour)
        ]
    )
    return base * (salience * typical)[:, None]


@dataclass
class GeneratingFeatures:
    """The feature vectors the simulated brain computes from, per image.

    Attributes
    ----------
    values : ndarray, shape (n_images, n_features)
        The blocks side by side (see the module docstring), raw (not standardised).
    blocks : dict of str -> (start, stop)
        Column ranges of the blocks, in storage order.
    grid : int
        Side of the low-level pooling grid.
    """

    values: np.ndarray
    blocks: dict[str, tuple[int, int]]
    grid: int

    def block(self, name: str) -> np.ndarray:
        """The raw columns of one block."""
        start, stop = self.blocks[name]
        return self.values[:, start:stop]


def generating_features(stimuli: StimulusSet, grid: int = 8) -> GeneratingFeatures:
    """Compute the generating features of a stimulus set (see module docstring)."""
    energy = energy_features(stimuli.images, grid=grid)
    luminance, colour = luminance_colour_features(stimuli.images, grid=grid)
    category = np.eye(len(CATEGORIES))[stimuli.category_index]
    rgb = np.array([COLOURS[c] for c in stimuli.colour], dtype=np.float64) / 255.0
    eccentricity = np.hypot(*(stimuli.position - 0.5).T)
    attributes = np.column_stack(
        [stimuli.count, stimuli.scale, stimuli.position, rgb, eccentricity]
    )
    parts = {
        "energy": energy,
        "luminance": luminance,
        "colour": colour,
        "category": category,
        "semantic": semantic_features(stimuli),
        "attributes": attributes,
    }
    blocks, start = {}, 0
    for name, part in parts.items():
        blocks[name] = (start, start + part.shape[1])
        start += part.shape[1]
    return GeneratingFeatures(values=np.hstack(list(parts.values())), blocks=blocks, grid=grid)


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
        Weights on the generating features (raw low-level blocks; standardised others).
    exponent : ndarray, shape (n_voxels,)
        1 for linear units, 0.3 for compressive (CSS) ones (voxels: any compressive source).
    prf : ndarray, shape (n_voxels, 3)
        pRF centre x, y and size in image fractions (NaN for voxels without a pRF).
    amplitude, baseline : ndarray, shape (n_voxels,)
        Signal SD over images and mean response, percent signal change.
    noise_sd : ndarray, shape (n_voxels,)
        Single-trial noise SD (shared and independent parts together), percent signal change.
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


def prf_gaussians(grid: int, cx: np.ndarray, cy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Unit-sum Gaussian pRFs on the cell grid, shape (n, grid * grid) (row-major cells)."""
    centres = (np.arange(grid) + 0.5) / grid
    gy, gx = np.meshgrid(centres, centres, indexing="ij")
    d2 = (gx.ravel()[None] - cx[:, None]) ** 2 + (gy.ravel()[None] - cy[:, None]) ** 2
    gauss = np.exp(-d2 / (2 * sigma[:, None] ** 2))
    return gauss / gauss.sum(axis=1, keepdims=True)


def pooled_block_weights(block: np.ndarray, gauss: np.ndarray, profiles: np.ndarray) -> np.ndarray:
    """Weights of many voxels on one low-level block, each scaled to unit SD of its drive.

    Parameters
    ----------
    block : ndarray, shape (n_images, n_channels * n_cells)
        Raw block values, channel-major.
    gauss : ndarray, shape (n_voxels, n_cells)
        pRF weights per cell (:func:`prf_gaussians`).
    profiles : ndarray, shape (n_voxels, n_channels)
        Channel mixture per voxel.

    Returns
    -------
    ndarray, shape (n_voxels, n_channels * n_cells)
    """
    weights = (profiles[:, :, None] * gauss[:, None, :]).reshape(len(gauss), -1)
    sd = (block @ weights.T).std(axis=0)
    return weights / np.maximum(sd, 1e-12)[:, None]


def drive_statistics(
    population: VoxelPopulation, standardised: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The drive of every unit before its output standardisation.

    Returns
    -------
    drive : ndarray, shape (n_images, n_units)
        ``standardised @ weights.T``, through the compressive exponent where it is not 1.
    mean, sd : ndarray, shape (n_units,)
        Mean and SD of the drive over the images (SD 0 replaced by 1).
    """
    drive = standardised @ population.weights.T
    compressive = population.exponent != 1.0
    if compressive.any():
        drive[:, compressive] = (
            np.maximum(drive[:, compressive], 0.0) ** population.exponent[compressive]
        )
    mean, sd = drive.mean(axis=0), drive.std(axis=0)
    sd[sd == 0] = 1.0
    return drive, mean, sd


def voxel_drive(
    features: GeneratingFeatures, population: VoxelPopulation, standardised: np.ndarray
) -> np.ndarray:
    """Noise-free responses, percent signal change, shape (n_images, n_units).

    ``standardised`` is :func:`standardise_features` of ``features`` (low-level blocks raw and
    non-negative, so that the compressive exponent is defined). Each unit's response is
    ``baseline + amplitude * (drive - mean) / sd`` over the images.
    """
    drive, mean, sd = drive_statistics(population, standardised)
    return population.baseline + population.amplitude * (drive - mean) / sd


def standardise_features(features: GeneratingFeatures) -> np.ndarray:
    """Z-score every block but the low-level ones (:data:`LOWLEVEL_BLOCKS` stay raw)."""
    values = features.values.copy()
    for name, (start, stop) in features.blocks.items():
        if name in LOWLEVEL_BLOCKS:
            continue
        block = values[:, start:stop]
        sd = block.std(axis=0)
        sd[sd == 0] = 1.0
        values[:, start:stop] = (block - block.mean(axis=0)) / sd
    return values
