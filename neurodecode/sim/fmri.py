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
    ground_truth.h5                                    what was planted (see :func:`simulate_fmri`)

The model of each voxel is in :mod:`neurodecode.sim.brain`. Everything is a function of
``config.seed``: the same config gives byte-identical files.
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
import yaml
from tqdm.auto import tqdm

from neurodecode.sim.brain import (
    CATEGORY_ROIS,
    ROI_TABLES,
    GeneratingFeatures,
    VoxelPopulation,
    _prf_weights,
    generating_features,
    standardise_features,
    voxel_drive,
)
from neurodecode.sim.stimuli import CATEGORIES, generate_stimuli
from neurodecode.validation import InvalidInputError, check_keys

EARLY_AREAS = ("V1", "V2", "V3", "hV4")
#: posterior band edges (fraction of the brain's posterior-anterior extent) of each early area
_EARLY_BANDS = (0.10, 0.18, 0.25, 0.31)
_PRF_SIZE = {"V1": 0.06, "V2": 0.09, "V3": 0.12, "hV4": 0.17}
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
        Multiplies every voxel's noise SD (1 = the NSD-like default).
    ncsnr_median : dict
        Median noise-ceiling SNR per voxel kind (``early``, ``category``, ``other``).
    ncsnr_spread : float
        SD of log ncsnr across voxels.
    compressive_fraction : float
        Fraction of early-visual voxels with a compressive (non-linear) output.
    energy_grid : int
        Side of the oriented-energy pooling grid.
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
        default_factory=lambda: {"early": 0.5, "category": 0.6, "other": 0.12}
    )
    ncsnr_spread: float = 0.45
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


def _unit_lowlevel(
    energy_raw: np.ndarray,
    grid: int,
    cx: np.ndarray,
    cy: np.ndarray,
    sigma: np.ndarray,
    profiles: np.ndarray,
) -> np.ndarray:
    """pRF pooling weights of many voxels, each scaled to unit SD of its drive over the images.

    Parameters
    ----------
    energy_raw : ndarray, shape (n_images, n_channels * grid * grid)
        Raw oriented energy of every image.
    cx, cy, sigma : ndarray, shape (n,)
        pRF centres and sizes, image fractions.
    profiles : ndarray, shape (n, n_channels)
        Channel mixtures.

    Returns
    -------
    ndarray, shape (n, n_channels * grid * grid)

    Each voxel is computed on its own with :func:`neurodecode.sim.brain._prf_weights` and one
    matrix-vector product: batched ``exp`` and matrix products round differently in the last bit,
    which would change the bytes of worlds already written.
    """
    out = np.empty((len(cx), energy_raw.shape[1]))
    for v in range(len(cx)):
        w = _prf_weights(grid, cx[v], cy[v], sigma[v], profiles[v])
        out[v] = w / max((energy_raw @ w).std(), 1e-12)
    return out


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


def _population(
    config: FMRISimConfig,
    anatomy: SubjectAnatomy,
    features: GeneratingFeatures,
    standardised: np.ndarray,
    rng: np.random.Generator,
) -> VoxelPopulation:
    """Draw every nsdgeneral voxel's parameters.

    The random draws are made voxel by voxel in the order the model defines (the bytes of a world
    depend on it); everything computed from them is done for all voxels at once.
    """
    ijk = np.argwhere(anatomy.nsdgeneral)  # (V, 3) x, y, z in C order of the volume
    n_vox, n_feat = len(ijk), features.values.shape[1]
    roi = np.full(n_vox, "", dtype="<U12")
    for name, mask in anatomy.labels.items():
        roi[mask[tuple(ijk.T)]] = name
    early = np.array([r[:-1] in EARLY_AREAS or r == "hV4" for r in roi], dtype=bool)
    category = np.isin(roi, list(CATEGORY_ROIS))
    kind = np.where(early, "early", np.where(category, "category", "other"))
    weights = np.zeros((n_vox, n_feat))
    exponent = np.ones(n_vox)
    prf = np.full((n_vox, 3), np.nan)
    e0, e1 = features.blocks["energy"]
    c0, c1 = features.blocks["category"]
    a0, a1 = features.blocks["attributes"]
    grid = features.grid
    n_channels = (e1 - e0) // grid**2
    energy_raw = features.values[:, e0:e1]
    ones = np.ones(n_channels)

    # 1. the draws, voxel by voxel in the model's order
    is_early = kind == "early"
    is_category = kind == "category"
    jitter = np.zeros((n_vox, 2))  # early: retinotopic jitter; other: pRF centre
    profiles = np.empty((n_vox, n_channels))
    uniform = np.ones(n_vox)  # early: compressive draw
    attributes = np.zeros((n_vox, a1 - a0))
    semantic = np.zeros((n_vox, c1 - c0))
    for v in range(n_vox):
        if is_early[v]:
            jitter[v] = rng.normal(0, 0.05), rng.normal(0, 0.05)
            profiles[v] = rng.dirichlet(ones)
            uniform[v] = rng.random()
        elif is_category[v]:
            attributes[v] = rng.normal(0, 0.12, size=a1 - a0)
            profiles[v] = rng.dirichlet(ones)
        else:
            semantic[v] = rng.normal(0, 0.5, size=c1 - c0)
            attributes[v] = rng.normal(0, 0.2, size=a1 - a0)
            jitter[v] = rng.uniform(0.2, 0.8, size=2)
            profiles[v] = rng.dirichlet(ones)

    # 2. what the draws mean, for all voxels at once
    x, z = ijk[:, 0].astype(float), ijk[:, 2].astype(float)
    dx = (x - anatomy.centre[0]) / anatomy.radii[0]
    dz = (z - anatomy.centre[2]) / anatomy.radii[2]
    cx, cy, sigma = np.empty(n_vox), np.empty(n_vox), np.empty(n_vox)
    # early: retinotopy (left hemisphere sees the right field; ventral sees the upper field)
    e = np.flatnonzero(is_early)
    cx[e] = np.clip(0.5 - 0.7 * dx[e] + jitter[e, 0], 0.05, 0.95)
    cy[e] = np.clip(0.5 + 0.7 * dz[e] + jitter[e, 1], 0.05, 0.95)
    size = np.array([_PRF_SIZE["hV4" if r == "hV4" else r[:-1]] for r in roi[e]])
    sigma[e] = size * (1 + 0.5 * np.hypot(cx[e] - 0.5, cy[e] - 0.5))
    prf[e] = np.column_stack([cx[e], cy[e], sigma[e]])
    exponent[e[uniform[e] < config.compressive_fraction]] = 0.5
    # category: a weak central low-level term
    c = np.flatnonzero(is_category)
    cx[c], cy[c], sigma[c] = 0.5, 0.5, 0.35
    # other: a wide pRF at the drawn centre
    o = np.flatnonzero(~is_early & ~is_category)
    cx[o], cy[o], sigma[o] = jitter[o, 0], jitter[o, 1], 0.25
    prf[o] = np.column_stack([cx[o], cy[o], sigma[o]])

    lowlevel = _unit_lowlevel(energy_raw, grid, cx, cy, sigma, profiles)
    gain = np.where(is_early, 1.0, np.where(is_category, 0.15, 0.7))
    weights[e, e0:e1] = lowlevel[e]
    weights[~is_early, e0:e1] = gain[~is_early, None] * lowlevel[~is_early]
    for name in np.unique(roi[c]):
        preferred, spill, _ = CATEGORY_ROIS[name]
        members = c[roi[c] == name]
        weights[members, c0 + CATEGORIES.index(preferred)] = 1.0
        if spill is not None:
            weights[members, c0 + CATEGORIES.index(spill)] = 0.35
    weights[c, a0:a1] = attributes[c]
    weights[o, c0:c1] = semantic[o]
    weights[o, a0:a1] = attributes[o]
    amplitude = rng.uniform(0.6, 2.0, size=n_vox)
    baseline = rng.uniform(0.3, 2.0, size=n_vox)
    medians = np.array([config.ncsnr_median[k] for k in kind])
    ncsnr = medians * np.exp(rng.normal(0, config.ncsnr_spread, size=n_vox))
    noise_sd = config.noise_scale * amplitude / ncsnr
    return VoxelPopulation(ijk, roi, kind, weights, exponent, prf, amplitude, baseline, noise_sd)


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

    ``ground_truth.h5`` holds, at the top level, ``generating_features`` (n_images, n_features)
    with attributes ``blocks`` (JSON) and ``energy_grid``, ``category`` (n_images,), the config
    (attribute ``config``, JSON); and per subject group ``subjXX``: ``voxel_ijk`` (V, 3) (x, y, z) of
    the nsdgeneral voxels in the order of the other arrays, ``roi``, ``kind``, ``linear``,
    ``weights`` (V, n_features), ``exponent``, ``prf``, ``amplitude``, ``baseline``, ``noise_sd``
    (percent signal change), ``ncsnr`` and ``noise_ceiling`` (NSD's formula, percent, for
    ``n_repeats`` averaged trials), ``stimulus_ids`` (the 73k ids this subject saw, subjectim order)
    and ``responses`` (len(stimulus_ids), V) noise-free, percent signal change, ``drift_offset``
    (n_sessions, V) and ``drift_gain`` (n_sessions,) such that a written beta is
    ``gain * (response + noise) + offset``.

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

    with h5py.File(tmp / "ground_truth.h5", "w") as gt:
        gt.attrs["config"] = json.dumps(config.settings(), sort_keys=True)
        gt.attrs["config_digest"] = config.digest()
        d = gt.create_dataset("generating_features", data=features.values.astype(np.float32))
        d.attrs["blocks"] = json.dumps(features.blocks)
        d.attrs["energy_grid"] = features.grid
        gt.create_dataset("category", data=stimuli.category.astype("S8"))
        gt.create_dataset("sharedix", data=design.sharedix)
        for s, subject in enumerate(config.subjects):
            srng = np.random.default_rng([config.seed, 100 + s])
            anatomy = _anatomy(config, s, srng)
            _write_roi_volumes(tmp, subject, anatomy)
            pop = _population(config, anatomy, features, standardised, srng)
            responses = voxel_drive(features, pop, standardised)  # (n_images, V)
            ids = design.subjectim[s]
            ncsnr = pop.ncsnr
            nc = 100 * ncsnr**2 / (ncsnr**2 + 1 / config.n_repeats)
            drift_offset = srng.normal(0, config.drift_sd, size=(n_sessions, len(pop.ijk))) * (
                pop.amplitude
            )
            drift_gain = 1 + srng.normal(0, 0.05, size=n_sessions)
            g = gt.create_group(subject)
            for name, value in {
                "voxel_ijk": pop.ijk.astype(np.int32),
                "weights": pop.weights.astype(np.float32),
                "exponent": pop.exponent,
                "linear": pop.linear,
                "prf": pop.prf,
                "amplitude": pop.amplitude,
                "baseline": pop.baseline,
                "noise_sd": pop.noise_sd,
                "ncsnr": ncsnr,
                "noise_ceiling": nc,
                "stimulus_ids": ids.astype(np.int64),
                "responses": responses[ids].astype(np.float32),
                "drift_offset": drift_offset,
                "drift_gain": drift_gain,
            }.items():
                g.create_dataset(name, data=value)
            g.create_dataset("roi", data=pop.roi.astype("S12"))
            g.create_dataset("kind", data=pop.kind.astype("S8"))
            g.attrs["volume_shape_xyz"] = anatomy.shape
            _write_betas(
                tmp,
                config,
                subject,
                anatomy,
                pop,
                responses,
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
    pop: VoxelPopulation,
    responses: np.ndarray,
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
        signal = responses[ids] + rng.normal(size=(len(trials), len(pop.ijk))) * pop.noise_sd
        signal = drift_gain[sess] * signal + drift_offset[sess]
        # streamed in blocks of trials: the other-cortex noise is the session's last draw, so
        # drawing it block by block gives the same numbers as one draw, in bounded memory
        with h5py.File(bdir / f"betas_session{sess + 1:02d}.hdf5", "w") as f:
            out = f.create_dataset("betas", (len(trials), Z, Y, X), np.int16, chunks=(1, Z, Y, X))
            for lo in range(0, len(trials), _TRIALS_PER_BLOCK):
                hi = min(lo + _TRIALS_PER_BLOCK, len(trials))
                volume = np.zeros((hi - lo, X, Y, Z), dtype=np.float32)
                volume[:, pop.ijk[:, 0], pop.ijk[:, 1], pop.ijk[:, 2]] = signal[lo:hi]
                volume[:, other[:, 0], other[:, 1], other[:, 2]] = (
                    other_baseline + rng.normal(size=(hi - lo, len(other))) * other_sd
                )
                # MATLAB stores X x Y x Z x trials; h5py sees the reverse: (trials, Z, Y, X)
                data = np.clip(np.round(volume * 300), -32768, 32767).astype(np.int16)
                out[lo:hi] = data.transpose(0, 3, 2, 1)
