"""Simulated fMRI experiment written in the Natural Scenes Dataset's own layout.

``simulate_fmri(config, out_dir)`` writes, under ``out_dir`` (paths as in NSD)::

    nsddata/experiments/nsd/nsd_expdesign.mat          masterordering, subjectim, sharedix (1-based)
    nsddata/experiments/nsd/nsd_stim_info_merged.csv   nsdId, shared1000, subjectN_rep0..2
    nsddata/ppdata/subjXX/func1pt8mm/roi/NAME.nii.gz   (X, Y, Z) int16: -1 outside, 0, 1..N
    nsddata/freesurfer/subjXX/label/NAME.mgz.ctab      "index name" per line
    nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.hdf5
                                                       dataset "betas", int16, psc x 300,
                                                       h5py shape (trials, Z, Y, X)
    nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5       dataset "imgBrick" (N, H, W, 3) uint8
    nsddata_stimuli/stimuli/nsd/nsd_captions.csv       nsdId, category, caption
    ground_truth.h5                                    what was planted (layout and reader:
                                                       :mod:`neurodecode.sim.ground_truth`)

The tuning model is in :mod:`neurodecode.sim.brain`, the cortical sources and point spread in
:mod:`neurodecode.sim.cortex`, the noise in :mod:`neurodecode.sim.noise`. Everything is a
function of ``config.seed``: the same config gives byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import scipy.io
import scipy.ndimage
import scipy.sparse
import yaml
from tqdm.auto import tqdm

from neurodecode.sim import ground_truth
from neurodecode.sim.brain import (
    ATTRIBUTE_NAMES,
    CATEGORY_ROIS,
    CATEGORY_TUNING,
    LOWLEVEL_BLOCKS,
    ROI_TABLES,
    SEMANTIC_AXES,
    GeneratingFeatures,
    VoxelPopulation,
    drive_statistics,
    generating_features,
    pooled_block_weights,
    prf_gaussians,
    standardise_features,
)
from neurodecode.sim.cortex import patch_field, place_sources, psf_mixing, psf_support
from neurodecode.sim.noise import NoiseModel
from neurodecode.sim.stimuli import generate_stimuli
from neurodecode.validation import InvalidInputError, check_keys

EARLY_AREAS = ("V1", "V2", "V3", "hV4")
#: posterior band edges (fraction of the brain's posterior-anterior extent) of each early area
_EARLY_BANDS = (0.10, 0.18, 0.25, 0.31)
#: pRF size (Gaussian SD, image fractions) at the fovea per early area; grows with eccentricity.
#: NSD's images span 8.4 deg, so 0.06 is ~0.5 deg in V1 and 0.17 ~1.4 deg in hV4, roughly as
#: Dumoulin & Wandell (2008, NeuroImage 39:647) and Kay et al. (2013, J Neurophysiol 110:481)
#: report near the fovea.
PRF_SIZE = {"V1": 0.06, "V2": 0.09, "V3": 0.12, "hV4": 0.17}
VOXEL_SIZE_MM = 1.8
#: trials per block of a streamed betas write (~100 MB of float32 at NSD's volume size)
_TRIALS_PER_BLOCK = 32


@dataclass
class FMRISimConfig:
    """Settings of a simulated NSD-like experiment (YAML keys are these field names).

    Attributes
    ----------
    seed : int
        Seeds everything; same seed, same bytes.
    image_size : int
        Stimulus side in pixels (divisible by ``energy_grid``).
    n_subjects : int
        Subjects ``subj01`` .. ``subjNN``.
    n_shared : int
        Images seen by every subject (NSD's shared1000: the test split).
    n_train_per_subject : int
        Images seen by one subject only (the training split).
    n_repeats : int
        Presentations of each image per subject (NSD: 3).
    trials_per_session : int
        Trials per betas file (NSD: 750); the last session may hold fewer.
    grid : list of int
        Volume size (X, Y, Z) of the first subject; later subjects differ by a voxel or two.
    noise_scale : float
        Multiplies every voxel's noise SD (1 = the NSD-calibrated default).
    ncsnr_median : dict
        Median noise-ceiling SNR per voxel group: early areas ``V1``, ``V2``, ``V3``, ``hV4``,
        ``category`` ROIs and ``other`` nsdgeneral voxels (calibrated to NSD's volumetric betas,
        see ``datasets/sim/README.md``).
    ncsnr_spread : float
        SD of the log SNR of the sources' neural noise (a smooth field over cortex).
    thermal_spread : float
        SD of the log ratio of a voxel's thermal to neural noise SD.
    source_spacing : float
        Distance (voxels) between the cortical sources that carry tuning and neural noise (see
        :mod:`neurodecode.sim.cortex`); 1 (the default) makes every voxel its own source.
    psf_sigma : float
        SD (voxels) of the Gaussian point spread through which voxels see the sources; 0 (the
        default) makes each voxel see its nearest source only. The shipped configs set both
        (``default.yaml``: 2.5 and 1.0).
    neural_noise_share : float
        Typical fraction of a voxel's (non-global) noise variance that is the sources' neural
        noise, shared with its neighbours; the rest is independent thermal noise.
    global_noise_share : float
        Fraction of every voxel's noise variance in the global factors.
    n_global_factors : int
        Number of global noise factors (constant and x, y, z gradients; at most 4).
    compressive_fraction : float
        Fraction of early-visual voxels with a compressive (non-linear) output.
    energy_grid : int
        Side of the pooling grid of the low-level (energy, luminance, colour) features.
    roi_radius : float
        Radius of category ROIs, voxels.
    drift_sd : float
        SD of per-session additive drift, in units of each voxel's signal SD.
    cortex_thickness : float or None
        None (the small worlds): nsdgeneral fills the posterior part of the brain ellipsoid. A
        number: nsdgeneral is a cortical shell this many voxels thick and the category ROIs sit on
        it, so that an NSD-size volume holds NSD's ~15k nsdgeneral voxels, not ~130k.
    """

    seed: int = 0
    image_size: int = 64
    n_subjects: int = 2
    n_shared: int = 300
    n_train_per_subject: int = 2000
    n_repeats: int = 3
    trials_per_session: int = 750
    grid: list[int] = field(default_factory=lambda: [28, 34, 24])
    noise_scale: float = 1.0
    ncsnr_median: dict[str, float] = field(
        default_factory=lambda: {
            "V1": 0.45,
            "V2": 0.39,
            "V3": 0.37,
            "hV4": 0.35,
            "category": 0.35,
            "other": 0.30,
        }
    )
    ncsnr_spread: float = 0.45
    thermal_spread: float = 0.5
    source_spacing: float = 1.0
    psf_sigma: float = 0.0
    neural_noise_share: float = 0.95
    global_noise_share: float = 0.05
    n_global_factors: int = 3
    compressive_fraction: float = 0.5
    energy_grid: int = 8
    roi_radius: float = 2.2
    drift_sd: float = 0.5
    cortex_thickness: float | None = None

    @classmethod
    def from_yaml(cls, path: str | Path) -> FMRISimConfig:
        """Read a config; unknown keys are an error naming the file."""
        path = Path(path)
        if not path.is_file():
            raise InvalidInputError(f"simulation config not found: expected a YAML file at {path}.")
        raw = yaml.safe_load(path.read_text()) or {}
        if raw.get("modality", "fmri") != "fmri":
            raise InvalidInputError(f"{path} has modality={raw['modality']!r}; expected 'fmri'.")
        raw.pop("modality", None)
        check_keys(f"simulation config {path}", raw, [f.name for f in fields(cls)])
        return cls(**raw)

    @property
    def subjects(self) -> list[str]:
        """Subject labels as NSD spells them."""
        return [f"subj{s + 1:02d}" for s in range(self.n_subjects)]

    @property
    def n_images(self) -> int:
        """Total stimuli written to ``nsd_stimuli.hdf5``."""
        return self.n_shared + self.n_subjects * self.n_train_per_subject

    def settings(self) -> dict:
        """The settings as recorded in the ground truth.

        Options added after worlds were published are left out while unset, so that the configs
        that predate them still give byte-identical files.
        """
        recorded = asdict(self)
        for name in _LATER_OPTIONS:
            if recorded[name] is None:
                del recorded[name]
        return recorded

    def digest(self) -> str:
        """Short hash of the settings (recorded in the ground truth)."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]


#: optional settings recorded only when set (see :meth:`FMRISimConfig.settings`)
_LATER_OPTIONS = ("cortex_thickness",)


# ----------------------------------------------------------------------------- paths


def betas_dir(root: Path, subject: str) -> Path:
    """Folder of a subject's betas files in the NSD layout."""
    return root / "nsddata_betas/ppdata" / subject / "func1pt8mm/betas_fithrf_GLMdenoise_RR"


def roi_dir(root: Path, subject: str) -> Path:
    """Folder of a subject's ROI volumes in the NSD layout."""
    return root / "nsddata/ppdata" / subject / "func1pt8mm/roi"


def ctab_dir(root: Path, subject: str) -> Path:
    """Folder of a subject's ROI label tables (``*.mgz.ctab``) in the NSD layout."""
    return root / "nsddata/freesurfer" / subject / "label"


# ----------------------------------------------------------------------------- anatomy


@dataclass
class SubjectAnatomy:
    """A subject's volume: labels per voxel and the nsdgeneral voxel list."""

    shape: tuple[int, int, int]  # (X, Y, Z)
    brain: np.ndarray  # bool (X, Y, Z)
    nsdgeneral: np.ndarray  # bool (X, Y, Z)
    labels: dict[str, np.ndarray]  # ROI name -> bool (X, Y, Z)
    centre: np.ndarray  # (3,)
    radii: np.ndarray  # (3,)


def _anatomy(config: FMRISimConfig, s: int, rng: np.random.Generator) -> SubjectAnatomy:
    shape = tuple(int(g + d) for g, d in zip(config.grid, rng.integers(-1, 2, size=3)))
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    centre = (np.array(shape) - 1) / 2 + rng.normal(0, 0.3, size=3)
    radii = np.array(shape) * np.array([0.45, 0.47, 0.45])
    brain = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + (
        (z - centre[2]) / radii[2]
    ) ** 2 <= 1.0
    # normalised coordinates: lateral |dx| in radii, posterior->anterior uy in [0, 1], vertical dz
    dx = (x - centre[0]) / radii[0]
    uy = (y - (centre[1] - radii[1])) / (2 * radii[1])
    dz = (z - centre[2]) / radii[2]
    nsdgeneral = brain & (uy < 0.48)
    surface_depth = None  # shell mode: distance below the brain's surface, voxels
    if config.cortex_thickness is not None:
        radius = np.sqrt(dx**2 + (2 * uy - 1) ** 2 + dz**2)
        surface_depth = (1 - radius) * radii.mean()
        nsdgeneral &= surface_depth < config.cortex_thickness
    labels: dict[str, np.ndarray] = {}
    claimed = np.zeros(shape, dtype=bool)
    medial = np.abs(dx) < 0.7
    lower = 0.0
    for area, upper in zip(EARLY_AREAS, _EARLY_BANDS):
        band = nsdgeneral & medial & (uy >= lower) & (uy < upper)
        if area == "hV4":
            labels["hV4"] = band & (dz < 0)
        else:
            labels[f"{area}v"] = band & (dz < 0)
            labels[f"{area}d"] = band & (dz >= 0)
        lower = upper
    for mask in labels.values():
        claimed |= mask
    for name, (_, _, (lat, post, vert)) in CATEGORY_ROIS.items():
        jitter = rng.normal(0, 0.04, size=3)
        cy = centre[1] - radii[1] + 2 * radii[1] * (post + jitter[1])
        cz = centre[2] + radii[2] * (vert + jitter[2])
        region = np.zeros(shape, dtype=bool)
        for side in (-1, 1):
            cx = centre[0] + side * radii[0] * (lat + jitter[0])
            px, py, pz = cx, cy, cz
            if surface_depth is not None:  # move the centre out onto the cortical shell
                px, py, pz = _onto_shell(np.array([cx, cy, cz]), centre, radii, config)
            region |= (x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2 <= config.roi_radius**2
        region &= nsdgeneral & ~claimed
        labels[name] = region
        claimed |= region
    return SubjectAnatomy(shape, brain, nsdgeneral, labels, centre, radii)


def _onto_shell(
    point: np.ndarray, centre: np.ndarray, radii: np.ndarray, config: FMRISimConfig
) -> np.ndarray:
    """Move ``point`` (x, y, z) to the middle of the cortical shell at the same y.

    Only the lateral and vertical coordinates are scaled, so an ROI keeps its place along the
    posterior-anterior axis (and out of the early visual bands behind it).
    """
    n = (point - centre) / radii
    target = 1 - config.cortex_thickness / 2 / radii.mean()
    scale = np.sqrt(max(target**2 - n[1] ** 2, 0.0) / max(n[0] ** 2 + n[2] ** 2, 1e-12))
    return centre + radii * np.array([n[0] * scale, n[1], n[2] * scale])


#: early area -> expected variance fractions of its (energy, luminance, colour) drive; hV4 is the
#: most colour-driven (Brewer et al. 2005), V1 the most orientation-driven
AREA_MIX = {
    "V1": (0.6, 0.25, 0.15),
    "V2": (0.55, 0.25, 0.2),
    "V3": (0.5, 0.25, 0.25),
    "hV4": (0.3, 0.2, 0.5),
}
#: low-level mixture of category and other voxels
_HIGHER_MIX = (0.5, 0.25, 0.25)
#: Dirichlet concentration of each voxel's block mixture around its area's AREA_MIX
_MIX_CONCENTRATION = 12.0
#: Dirichlet concentration of each voxel's channel profile within a low-level block (larger is
#: closer to uniform: a 1.8 mm voxel averages many orientation columns)
_PROFILE_CONCENTRATION = {"energy": 2.0, "luminance": 2.0, "colour": 1.5}
#: images used to scale each source's pooled drive to unit SD
_SCALE_IMAGES = 1024
#: SD (voxels) of the blobs of the smooth fields that decide which early sources are compressive
#: and how reliable each source is (both come in cortical patches)
_PATCH_RADIUS = 4.0
#: exponent of the compressive (CSS) sources: Kay et al. (2013) fit exponents well below 1 in
#: V1-hV4; 0.5 with this world's drive (whose lowest values are rarely near zero) is close to
#: linear, so the planted nonlinearity uses 0.3
CSS_EXPONENT = 0.3


def early_area(roi: str) -> str:
    """``"V1v"`` -> ``"V1"``, ``"hV4"`` -> ``"hV4"``; ``""`` for a non-early ROI."""
    area = roi if roi == "hV4" else roi[:-1]
    return area if area in EARLY_AREAS else ""


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    g = rng.standard_gamma(alpha)
    return g / np.maximum(g.sum(axis=1, keepdims=True), 1e-300)


def _labels_at(
    anatomy: SubjectAnatomy, ijk: np.ndarray, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """ROI name and kind (``early``/``category``/``other``) at voxel coordinates.

    With ``margin > 0``, points outside every ROI but within ``margin`` voxels of a category ROI
    take the nearest one's name: category selectivity extends beyond the localiser ROI, which
    thresholds the core of a larger selective patch (used for the sources, so that the voxels
    inside a localiser ROI see only selective sources through the point spread).
    """
    roi = np.full(len(ijk), "", dtype="<U12")
    for name, mask in anatomy.labels.items():
        roi[mask[tuple(ijk.T)]] = name
    if margin > 0:
        best = np.full(len(ijk), np.inf)
        unlabelled = roi == ""
        for name in CATEGORY_ROIS:
            mask = anatomy.labels.get(name)
            if mask is None or not mask.any():
                continue
            distance = scipy.ndimage.distance_transform_edt(~mask)[tuple(ijk.T)]
            take = unlabelled & (distance <= margin) & (distance < best)
            roi[take] = name
            best[take] = distance[take]
    early = np.array([early_area(r) != "" for r in roi], dtype=bool)
    category = np.isin(roi, list(CATEGORY_ROIS))
    return roi, np.where(early, "early", np.where(category, "category", "other")).astype("<U8")


def _population(
    config: FMRISimConfig,
    anatomy: SubjectAnatomy,
    features: GeneratingFeatures,
    ijk: np.ndarray,
    rng: np.random.Generator,
) -> VoxelPopulation:
    """Draw the tuning of the cortical sources at ``ijk`` (the model: :mod:`neurodecode.sim.brain`).

    The draws are made kind by kind in a fixed order (the bytes of a world depend on it). The
    returned population has no noise yet (``noise_sd`` is NaN).
    """
    n_src, n_feat = len(ijk), features.values.shape[1]
    support = psf_support(config.psf_sigma, config.source_spacing)
    roi, kind = _labels_at(anatomy, ijk, margin=support)
    area = np.array([early_area(r) for r in roi], dtype="<U4")
    e, c, o = (np.flatnonzero(kind == k) for k in ("early", "category", "other"))
    grid = features.grid
    n_cells = grid**2
    channels = {
        b: (features.blocks[b][1] - features.blocks[b][0]) // n_cells for b in LOWLEVEL_BLOCKS
    }
    s0, s1 = features.blocks["semantic"]
    a0, a1 = features.blocks["attributes"]

    def profiles(n: int) -> dict[str, np.ndarray]:
        return {
            b: _dirichlet_rows(rng, np.full((n, channels[b]), _PROFILE_CONCENTRATION[b]))
            for b in LOWLEVEL_BLOCKS
        }

    # 1. the draws
    jitter = rng.normal(0, 0.05, size=(len(e), 2))
    mix_e = _dirichlet_rows(rng, _MIX_CONCENTRATION * np.array([AREA_MIX[a] for a in area[e]]))
    prof_e = profiles(len(e))
    # compressiveness comes in cortical patches (a smooth field), so whole voxels are linear
    field = patch_field(ijk[e], max(4, len(e) // 3), _PATCH_RADIUS, rng)
    gain_c = rng.uniform(0.7, 1.3, size=len(c))
    sem_c = rng.normal(0, 0.1, size=(len(c), s1 - s0))
    attr_c = rng.normal(0, 0.12, size=(len(c), a1 - a0))
    prof_c = profiles(len(c))
    centre_o = rng.uniform(0.2, 0.8, size=(len(o), 2))
    sem_o = rng.normal(0, 0.5, size=(len(o), s1 - s0))
    attr_o = rng.normal(0, 0.2, size=(len(o), a1 - a0))
    prof_o = profiles(len(o))
    amplitude = rng.uniform(0.6, 2.0, size=n_src)
    baseline = rng.uniform(0.3, 2.0, size=n_src)

    # 2. what the draws mean
    x, z = ijk[:, 0].astype(float), ijk[:, 2].astype(float)
    dx = (x - anatomy.centre[0]) / anatomy.radii[0]
    dz = (z - anatomy.centre[2]) / anatomy.radii[2]
    cx, cy, sigma = np.empty(n_src), np.empty(n_src), np.empty(n_src)
    # early: retinotopy (left hemisphere sees the right field; ventral sees the upper field)
    cx[e] = np.clip(0.5 - 0.7 * dx[e] + jitter[:, 0], 0.05, 0.95)
    cy[e] = np.clip(0.5 + 0.7 * dz[e] + jitter[:, 1], 0.05, 0.95)
    sigma[e] = np.array([PRF_SIZE[a] for a in area[e]]) * (
        1 + 0.5 * np.hypot(cx[e] - 0.5, cy[e] - 0.5)
    )
    cx[c], cy[c], sigma[c] = 0.5, 0.5, 0.35  # category: a weak central low-level term
    cx[o], cy[o], sigma[o] = centre_o[:, 0], centre_o[:, 1], 0.25  # other: a wide pRF
    prf = np.full((n_src, 3), np.nan)
    prf[e] = np.column_stack([cx[e], cy[e], sigma[e]])
    prf[o] = np.column_stack([cx[o], cy[o], sigma[o]])
    exponent = np.ones(n_src)
    if len(e) and config.compressive_fraction > 0:
        threshold = np.quantile(field, 1 - config.compressive_fraction)
        exponent[e[field > threshold]] = CSS_EXPONENT

    weights = np.zeros((n_src, n_feat))
    mix = np.empty((n_src, len(LOWLEVEL_BLOCKS)))
    mix[e], mix[c], mix[o] = mix_e, _HIGHER_MIX, _HIGHER_MIX
    gain = np.where(kind == "early", 1.0, np.where(kind == "category", 0.15, 0.7))
    gauss = prf_gaussians(grid, cx, cy, sigma)
    scale_rows = features.values[:_SCALE_IMAGES]
    for k, b in enumerate(LOWLEVEL_BLOCKS):
        b0, b1 = features.blocks[b]
        prof = np.empty((n_src, channels[b]))
        prof[e], prof[c], prof[o] = prof_e[b], prof_c[b], prof_o[b]
        pooled = pooled_block_weights(scale_rows[:, b0:b1], gauss, prof)
        weights[:, b0:b1] = (gain * np.sqrt(mix[:, k]))[:, None] * pooled
    semantic_index = {a: s0 + i for i, a in enumerate(SEMANTIC_AXES)}
    attribute_index = {a: a0 + i for i, a in enumerate(ATTRIBUTE_NAMES)}
    weights[c, s0:s1] = sem_c
    weights[c, a0:a1] = attr_c
    for name in np.unique(roi[c]):
        rows = np.flatnonzero(roi[c] == name)
        for key, value in CATEGORY_TUNING[name].items():
            if key in semantic_index:
                weights[c[rows], semantic_index[key]] += value * gain_c[rows]
            else:
                weights[c[rows], attribute_index[key]] += value
    weights[o, s0:s1] = sem_o
    weights[o, a0:a1] = attr_o
    noise_sd = np.full(n_src, np.nan)
    return VoxelPopulation(ijk, roi, kind, weights, exponent, prf, amplitude, baseline, noise_sd)


@dataclass
class SubjectBrain:
    """Everything planted in one subject: sources, their point-spread mixing, voxels, noise."""

    sources: VoxelPopulation
    voxels: VoxelPopulation
    mixing: scipy.sparse.csr_matrix  # (n_voxels, n_sources)
    noise: NoiseModel
    responses: np.ndarray  # (n_images, n_voxels) noise-free, percent signal change


def _noise_group(kind: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The :attr:`FMRISimConfig.ncsnr_median` key of each unit: early area, category or other."""
    return np.where(kind == "early", [early_area(r) for r in roi], kind)


def _subject_brain(
    config: FMRISimConfig,
    anatomy: SubjectAnatomy,
    features: GeneratingFeatures,
    standardised: np.ndarray,
    rng: np.random.Generator,
) -> SubjectBrain:
    """Sources, the voxels they make through the point spread, and the calibrated noise.

    Noise calibration: every source gets neural noise of SD ``amplitude / snr`` with ``snr``
    log-normal around its group's median; every voxel adds thermal noise, log-normal around
    ``(1 - neural_noise_share) / neural_noise_share`` of its neural noise variance, and global
    noise (``global_noise_share`` of its total). The group scales are then adjusted (three fixed
    point passes) so that each group's median voxel ncsnr is the configured one.
    """
    voxel_ijk = np.argwhere(anatomy.nsdgeneral)  # (V, 3) x, y, z in C order of the volume
    region, _ = _labels_at(anatomy, voxel_ijk)
    source_index = place_sources(voxel_ijk, config.source_spacing, region)
    source_ijk = voxel_ijk[source_index]
    sources = _population(config, anatomy, features, source_ijk, rng)
    drive, d_mean, d_sd = drive_statistics(sources, standardised)
    source_responses = sources.baseline + sources.amplitude * (drive - d_mean) / d_sd
    del drive
    mixing = psf_mixing(
        voxel_ijk,
        source_ijk,
        config.psf_sigma,
        config.source_spacing,
        voxel_regions=region,
        source_regions=region[source_index],
    )
    responses = np.asarray(mixing @ source_responses.T).T  # (n_images, V)

    # voxel parameters, as seen through the point spread
    roi, kind = _labels_at(anatomy, voxel_ijk)
    weights = np.asarray(
        mixing @ ((sources.amplitude / d_sd)[:, None] * sources.weights)
    )  # psc per standardised feature (pre-exponent for compressive sources)
    compressive_share = np.asarray(mixing @ (sources.exponent != 1.0).astype(float)).ravel()
    exponent = np.where(compressive_share > 0, CSS_EXPONENT, 1.0)
    has_prf = np.isfinite(sources.prf[:, 0]).astype(float)
    prf_weight = np.asarray(mixing @ has_prf).ravel()
    prf = (
        np.asarray(mixing @ np.nan_to_num(sources.prf))
        / np.where(prf_weight > 0, prf_weight, np.nan)[:, None]
    )
    amplitude = responses.std(axis=0)
    baseline = np.asarray(mixing @ sources.baseline).ravel()

    # noise: draws, then calibration of the group scales
    # noise groups follow the localiser regions, which the point spread never crosses, so each
    # group's scale sets exactly its voxels' noise (dilated selectivity does not move sources)
    voxel_group = _noise_group(kind, roi)
    source_group = voxel_group[source_index]
    # source reliability varies smoothly over cortex (as NSD's noise-ceiling maps do)
    snr_field = patch_field(source_ijk, max(4, len(source_ijk) // 3), _PATCH_RADIUS, rng)
    source_z = config.ncsnr_spread * snr_field / max(float(snr_field.std()), 1e-12)
    thermal_z = rng.normal(0, config.thermal_spread, size=len(voxel_ijk))
    global_loadings = _global_loadings(voxel_ijk, config.n_global_factors)
    target = np.array([config.ncsnr_median[g] for g in voxel_group])
    scale = {g: 1.0 / config.ncsnr_median[g] for g in set(source_group) | set(voxel_group)}
    share = config.neural_noise_share
    mix2 = mixing.multiply(mixing).tocsr()
    for _ in range(3):
        source_sd = (
            sources.amplitude * np.exp(-source_z) * np.array([scale[g] for g in source_group])
        )
        neural = np.asarray(mix2 @ source_sd**2).ravel()
        thermal = neural * (1 - share) / share * np.exp(2 * thermal_z)
        total = (neural + thermal) / (1 - config.global_noise_share)
        ncsnr = amplitude / np.sqrt(total)
        for g in scale:
            members = voxel_group == g
            if members.any():
                scale[g] *= np.median(ncsnr[members]) / np.median(target[members])
    source_sd = sources.amplitude * np.exp(-source_z) * np.array([scale[g] for g in source_group])
    neural = np.asarray(mix2 @ source_sd**2).ravel()
    thermal = neural * (1 - share) / share * np.exp(2 * thermal_z)
    total = (neural + thermal) / (1 - config.global_noise_share)
    noise = NoiseModel(
        mixing,
        source_sd,
        global_loadings * np.sqrt(config.global_noise_share * total)[:, None],
        np.sqrt(thermal),
    ).scaled(config.noise_scale)
    sources.noise_sd = noise.source_sd
    voxels = VoxelPopulation(
        voxel_ijk, roi, kind, weights, exponent, prf, amplitude, baseline, noise.total_sd
    )
    return SubjectBrain(sources, voxels, mixing, noise, responses)


def _global_loadings(ijk: np.ndarray, n_factors: int) -> np.ndarray:
    """Unit-norm rows of smooth whole-volume patterns: a constant, then x, y, z gradients."""
    xyz = ijk.astype(np.float64)
    centred = (xyz - xyz.mean(axis=0)) / np.maximum(xyz.std(axis=0), 1e-12)
    basis = np.column_stack([np.ones(len(ijk)), 0.5 * centred])[:, : max(0, min(n_factors, 4))]
    norm = np.sqrt((basis**2).sum(axis=1, keepdims=True))
    return basis / np.maximum(norm, 1e-12)


# ----------------------------------------------------------------------------- design


@dataclass
class Design:
    """NSD's experimental design arrays, 0-based here (written 1-based)."""

    masterordering: np.ndarray  # (n_trials,) index into subjectim columns
    subjectim: np.ndarray  # (n_subjects, n_per_subject) 73k ids
    sharedix: np.ndarray  # (n_shared,) 73k ids


def _design(config: FMRISimConfig, rng: np.random.Generator) -> Design:
    perm = rng.permutation(config.n_images)
    shared = np.sort(perm[: config.n_shared])
    subjectim = np.empty((config.n_subjects, config.n_shared + config.n_train_per_subject), int)
    for s in range(config.n_subjects):
        start = config.n_shared + s * config.n_train_per_subject
        own = np.sort(perm[start : start + config.n_train_per_subject])
        subjectim[s] = np.concatenate([shared, own])
    columns = np.arange(subjectim.shape[1])
    masterordering = rng.permutation(np.tile(columns, config.n_repeats))
    return Design(masterordering, subjectim, shared)


# ----------------------------------------------------------------------------- writers


def _write_roi_volumes(root: Path, subject: str, anatomy: SubjectAnatomy) -> None:
    affine = np.diag([VOXEL_SIZE_MM] * 3 + [1.0])
    affine[:3, 3] = -np.array(anatomy.shape) * VOXEL_SIZE_MM / 2
    rdir, cdir = roi_dir(root, subject), ctab_dir(root, subject)
    rdir.mkdir(parents=True, exist_ok=True)
    cdir.mkdir(parents=True, exist_ok=True)

    def save(name: str, volume: np.ndarray) -> None:
        img = nib.Nifti1Image(volume.astype(np.int16), affine)
        img.header.set_xyzt_units("mm")
        # nibabel writes gzip with a timestamp of 0: deterministic bytes
        nib.save(img, rdir / f"{name}.nii.gz")

    outside = np.where(anatomy.brain, 0, -1).astype(np.int16)
    save("nsdgeneral", np.where(anatomy.nsdgeneral, 1, outside))
    (cdir / "nsdgeneral.mgz.ctab").write_text("0 Unknown\n1 nsdgeneral\n")
    for file, names in ROI_TABLES.items():
        volume = outside.copy()
        for index, name in enumerate(names, start=1):
            if name in anatomy.labels:
                volume[anatomy.labels[name]] = index
        save(file, volume)
        table = ["0 Unknown"] + [f"{i} {n}" for i, n in enumerate(names, start=1)]
        (cdir / f"{file}.mgz.ctab").write_text("\n".join(table) + "\n")


def _write_stimuli(root: Path, config: FMRISimConfig, design: Design) -> tuple:
    stim_dir = root / "nsddata_stimuli/stimuli/nsd"
    stim_dir.mkdir(parents=True, exist_ok=True)
    stimuli = generate_stimuli(config.n_images, size=config.image_size, seed=config.seed)
    with h5py.File(stim_dir / "nsd_stimuli.hdf5", "w", track_order=False) as f:
        f.create_dataset("imgBrick", data=stimuli.images, chunks=(1, *stimuli.images.shape[1:]))
    with open(stim_dir / "nsd_captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["nsdId", "category", "caption"])
        for i, (cat, cap) in enumerate(zip(stimuli.category, stimuli.captions)):
            writer.writerow([i, cat, cap])
    return stimuli


def _write_design(root: Path, config: FMRISimConfig, design: Design) -> None:
    exp_dir = root / "nsddata/experiments/nsd"
    exp_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    scipy.io.savemat(
        buffer,
        {
            "masterordering": (design.masterordering + 1)[None, :].astype(np.float64),
            "subjectim": (design.subjectim + 1).astype(np.float64),
            "sharedix": (design.sharedix + 1)[None, :].astype(np.float64),
        },
        do_compression=False,
    )
    # savemat stamps the creation time into the 116-byte text header; fix it for determinism
    raw = bytearray(buffer.getvalue())
    header = b"MATLAB 5.0 MAT-file, written by neurodecode.sim"
    raw[:116] = header.ljust(116, b" ")
    (exp_dir / "nsd_expdesign.mat").write_bytes(bytes(raw))
    shared = set(design.sharedix.tolist())
    reps = {}  # (subject, 73k id) -> list of 1-based trial numbers
    for s in range(config.n_subjects):
        for t, col in enumerate(design.masterordering):
            reps.setdefault((s, int(design.subjectim[s, col])), []).append(t + 1)
    with open(exp_dir / "nsd_stim_info_merged.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        header = ["nsdId", "shared1000"]
        for s in range(config.n_subjects):
            header += [f"subject{s + 1}"] + [
                f"subject{s + 1}_rep{r}" for r in range(config.n_repeats)
            ]
        writer.writerow(header)
        for i in range(config.n_images):
            row = [i, i in shared]
            for s in range(config.n_subjects):
                trials = reps.get((s, i), [])
                row += [int(bool(trials))] + [
                    trials[r] if r < len(trials) else 0 for r in range(config.n_repeats)
                ]
            writer.writerow(row)


def simulate_fmri(config: FMRISimConfig, out_dir: str | Path, progress: bool = True) -> Path:
    """Write a simulated NSD-layout data set under ``out_dir`` (see module docstring).

    ``ground_truth.h5`` holds what was planted: the generating features of every image, and per
    subject the voxels (coordinates, ROI, weights, pRF, amplitude, noise SD, ncsnr, NSD-formula
    noise ceiling, noise-free responses, drift), the cortical sources they see and the noise
    model; its layout and its one reader are in :mod:`neurodecode.sim.ground_truth`.

    The data set is written to a temporary sibling folder and renamed into place when complete, so
    an interrupted run never leaves a half-written data set at ``out_dir``.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise InvalidInputError(
            f"--out {out_dir} already exists; remove it or choose another folder."
        )
    if config.image_size % config.energy_grid:
        raise InvalidInputError(
            f"image_size={config.image_size} must be divisible by energy_grid={config.energy_grid}."
        )
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    design = _design(config, np.random.default_rng([config.seed, 1]))
    _write_design(tmp, config, design)
    stimuli = _write_stimuli(tmp, config, design)
    features = generating_features(stimuli, grid=config.energy_grid)
    standardised = standardise_features(features)
    n_sessions = -(-len(design.masterordering) // config.trials_per_session)

    with h5py.File(tmp / ground_truth.FILE_NAME, "w") as gt:
        ground_truth.write_world(
            gt,
            config.settings(),
            config.digest(),
            features,
            stimuli.category,
            design.sharedix,
            SEMANTIC_AXES,
            ATTRIBUTE_NAMES,
        )
        for s, subject in enumerate(config.subjects):
            srng = np.random.default_rng([config.seed, 100 + s])
            anatomy = _anatomy(config, s, srng)
            _write_roi_volumes(tmp, subject, anatomy)
            brain = _subject_brain(config, anatomy, features, standardised, srng)
            voxels = brain.voxels
            ncsnr = voxels.ncsnr
            drift_offset = srng.normal(0, config.drift_sd, size=(n_sessions, len(voxels.ijk)))
            drift_offset *= voxels.amplitude
            drift_gain = 1 + srng.normal(0, 0.05, size=n_sessions)
            ids = design.subjectim[s]
            truth = ground_truth.SubjectTruth(
                subject=subject,
                voxels=voxels,
                ncsnr=ncsnr,
                noise_ceiling=100 * ncsnr**2 / (ncsnr**2 + 1 / config.n_repeats),
                stimulus_ids=ids,
                responses=brain.responses[ids],
                drift_offset=drift_offset,
                drift_gain=drift_gain,
                noise=brain.noise,
                sources=brain.sources,
                volume_shape=anatomy.shape,
            )
            ground_truth.write_subject(gt, truth)
            _write_betas(
                tmp,
                config,
                subject,
                anatomy,
                brain,
                design,
                s,
                drift_offset,
                drift_gain,
                srng,
                progress,
            )
    os.replace(tmp, out_dir)
    return out_dir


def _write_betas(
    root: Path,
    config: FMRISimConfig,
    subject: str,
    anatomy: SubjectAnatomy,
    brain: SubjectBrain,
    design: Design,
    s: int,
    drift_offset: np.ndarray,
    drift_gain: np.ndarray,
    rng: np.random.Generator,
    progress: bool,
) -> None:
    bdir = betas_dir(root, subject)
    bdir.mkdir(parents=True, exist_ok=True)
    X, Y, Z = anatomy.shape
    # cortex outside nsdgeneral: baseline + noise, no stimulus signal
    other = np.argwhere(anatomy.brain & ~anatomy.nsdgeneral)
    other_baseline = rng.uniform(0.3, 2.0, size=len(other))
    other_sd = rng.uniform(0.8, 2.0, size=len(other))
    n_trials = len(design.masterordering)
    sessions = range(-(-n_trials // config.trials_per_session))
    for sess in tqdm(sessions, desc=f"{subject} betas", disable=not progress, leave=False):
        trials = np.arange(
            sess * config.trials_per_session, min((sess + 1) * config.trials_per_session, n_trials)
        )
        ids = design.subjectim[s, design.masterordering[trials]]
        signal = brain.responses[ids] + brain.noise.draw(len(trials), rng)
        signal = drift_gain[sess] * signal + drift_offset[sess]
        # streamed in blocks of trials: the other-cortex noise is the session's last draw, so
        # drawing it block by block gives the same numbers as one draw, in bounded memory
        with h5py.File(bdir / f"betas_session{sess + 1:02d}.hdf5", "w") as f:
            out = f.create_dataset("betas", (len(trials), Z, Y, X), np.int16, chunks=(1, Z, Y, X))
            for lo in range(0, len(trials), _TRIALS_PER_BLOCK):
                hi = min(lo + _TRIALS_PER_BLOCK, len(trials))
                volume = np.zeros((hi - lo, X, Y, Z), dtype=np.float32)
                ijk = brain.voxels.ijk
                volume[:, ijk[:, 0], ijk[:, 1], ijk[:, 2]] = signal[lo:hi]
                volume[:, other[:, 0], other[:, 1], other[:, 2]] = (
                    other_baseline + rng.normal(size=(hi - lo, len(other))) * other_sd
                )
                # MATLAB stores X x Y x Z x trials; h5py sees the reverse: (trials, Z, Y, X)
                data = np.clip(np.round(volume * 300), -32768, 32767).astype(np.int16)
                out[lo:hi] = data.transpose(0, 3, 2, 1)
