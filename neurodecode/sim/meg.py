"""Simulated THINGS-MEG: a CTF-275 brain watching procedural stimuli, written in THINGS-MEG layout.

This module owns the MEG half of the simulated world (DESIGN.md §5). :func:`simulate_meg` writes::

    OUT/derivatives/preprocessed/preprocessed_P{n}-epo.fif   MNE Epochs, -0.1..1.3 s, 200 Hz
    OUT/stimuli/images/{stimulus_id}.png                      the images (RGB PNG)
    OUT/stimuli/stimuli.tsv                                   one row per image: id, path, caption, ...
    OUT/ground_truth.h5                                       what was planted (see below)

The brain is a sum of dipolar sources on the CTF-275 helmet (channel names and 2-D layout as MNE
ships them in ``CTF-275.lout``):

- **early** sources (occipital, peak ~100 ms) driven by low-level image statistics (luminance,
  contrast, colour opponency, edge energy, position; horizontal position drives the contralateral
  hemisphere);
- **category** sources (occipito-temporal, peak ~170 ms), one per category with spill-over;
- **semantic** sources (temporal, parietal, frontal; broad peaks 300-500 ms) driven by the scene's
  category, colour, count and size;
- a **generic** evoked response, the same for every image (not decodable).

Noise is spatially correlated 1/f ("pink") background activity from many random sources plus white
sensor noise. Subjects differ in source positions and orientations, latencies, gains and noise
level. Training images are seen once, the shared test images ``n_test_repeats`` times, as in
THINGS-MEG (where test images are repeated 12 times). The same seed gives byte-identical files.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import yaml

from neurodecode.sim.stimuli import CATEGORIES, COLOURS, StimulusSet, generate_stimuli
from neurodecode.validation import InvalidInputError, check_file, check_keys

#: Names of the generating feature columns in ``ground_truth.h5`` (``features``).
LOW_LEVEL_FEATURES = (
    "luminance",
    "contrast",
    "red_green",
    "blue_yellow",
    "edges_horizontal",
    "edges_vertical",
    "position_x",
    "position_y",
)
SEMANTIC_FEATURES = (
    *(f"category_{c}" for c in CATEGORIES),
    *(f"colour_{c}" for c in COLOURS),
    "count",
    "size",
)
FEATURE_NAMES = (*LOW_LEVEL_FEATURES, *SEMANTIC_FEATURES)

_MEAS_DATE = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
_HEAD_RADIUS_M = 0.12


@dataclass
class MEGSimConfig:
    """Parameters of a simulated THINGS-MEG data set.

    Attributes
    ----------
    seed : int
        Master seed; the same seed gives byte-identical files.
    n_subjects : int
        Participants ``P1 .. Pn``.
    n_train_images : int
        Images seen once by every subject (THINGS-MEG: ``exp`` trials).
    n_test_images : int
        Shared test images (THINGS-MEG: 200), each shown ``n_test_repeats`` times.
    n_test_repeats : int
        Repeats of every test image per subject (THINGS-MEG: 12).
    n_sessions : int
        Sessions the trials are spread over (metadata ``session_nr``).
    image_size : int
        Stimulus side in pixels.
    sfreq : float
        Sampling rate of the written epochs (Hz).
    tmin, tmax : float
        Epoch window relative to image onset (s).
    signal_ft : float
        Peak amplitude of a unit-strength source at its strongest sensor (femtotesla).
    noise_ft : float
        Standard deviation of the background (1/f) noise at a sensor (femtotesla).
    sensor_noise_ft : float
        Standard deviation of the white sensor noise (femtotesla).
    noise_exponent : float
        Background noise power falls as 1/f**noise_exponent.
    n_noise_sources : int
        Random dipolar sources making up the background noise.
    subject_latency_jitter_ms : float
        Standard deviation of each subject's per-source latency shift (ms).
    trial_latency_jitter_ms : float
        Standard deviation of the per-trial latency shift shared by all sources (ms).
    """

    seed: int = 0
    n_subjects: int = 2
    n_train_images: int = 600
    n_test_images: int = 60
    n_test_repeats: int = 4
    n_sessions: int = 2
    image_size: int = 64
    sfreq: float = 200.0
    tmin: float = -0.1
    tmax: float = 1.3
    signal_ft: float = 120.0
    noise_ft: float = 150.0
    sensor_noise_ft: float = 30.0
    noise_exponent: float = 1.0
    n_noise_sources: int = 24
    subject_latency_jitter_ms: float = 8.0
    trial_latency_jitter_ms: float = 6.0

    def __post_init__(self) -> None:
        for name in ("n_subjects", "n_train_images", "n_test_images", "n_test_repeats"):
            if int(getattr(self, name)) < 1:
                raise InvalidInputError(
                    f"MEGSimConfig.{name}={getattr(self, name)}; expected >= 1."
                )
        if self.n_sessions < 1 or self.sfreq <= 0 or self.tmax <= self.tmin:
            raise InvalidInputError(
                f"MEGSimConfig: need n_sessions >= 1, sfreq > 0, tmax > tmin; got "
                f"n_sessions={self.n_sessions}, sfreq={self.sfreq}, tmin={self.tmin}, "
                f"tmax={self.tmax}."
            )

    @classmethod
    def from_yaml(cls, path: str | Path) -> MEGSimConfig:
        """Read a config from YAML; unknown keys are an error naming the file.

        The YAML may hold the fields at top level or under a ``meg:`` key.
        """
        path = check_file(path, "MEG simulation config")
        with open(path) as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{path} must hold a mapping of MEGSimConfig fields.")
        raw.pop("modality", None)
        if "meg" in raw and isinstance(raw["meg"], dict):
            raw = raw["meg"]
        check_keys(f"MEG simulation config {path}", raw, [f.name for f in fields(cls)])
        return cls(**raw)

    @property
    def n_times(self) -> int:
        """Samples per epoch."""
        return round((self.tmax - self.tmin) * self.sfreq) + 1


# ----------------------------------------------------------------------------- sensors


def ctf275_sensors() -> tuple[list[str], np.ndarray, np.ndarray]:
    """CTF-275 channel names and sensor geometry from MNE's shipped layout.

    Returns
    -------
    names : list of str, length 275
        Channel names as in MNE's ``CTF-275.lout`` (e.g. ``"MLC11-2622"``).
    xy : ndarray, shape (275, 2)
        2-D layout positions (x right, y anterior), centred, scaled to unit max radius.
    unit : ndarray, shape (275, 3)
        Points on the unit sphere (x right, y anterior, z up) obtained by an azimuthal
        equidistant back-projection of ``xy`` (the helmet reaches 110 degrees from the vertex).
    """
    import mne

    layout = mne.channels.read_layout("CTF-275")
    centre = layout.pos[:, :2] + layout.pos[:, 2:4] / 2
    centre = centre - (centre.max(0) + centre.min(0)) / 2
    xy = centre / np.linalg.norm(centre, axis=1).max()
    theta = np.linalg.norm(xy, axis=1) * np.deg2rad(110)
    phi = np.arctan2(xy[:, 1], xy[:, 0])
    unit = np.stack(
        [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1
    )
    return list(layout.names), xy, unit


def _sphere_point(theta_deg: float, phi_deg: float) -> np.ndarray:
    t, p = np.deg2rad(theta_deg), np.deg2rad(phi_deg)
    return np.array([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)])


def dipolar_pattern(
    sensors: np.ndarray, centre: np.ndarray, angle: float, spread: float = 0.35
) -> np.ndarray:
    """Smooth dipolar field pattern on the helmet for a tangential source under ``centre``.

    Parameters
    ----------
    sensors : ndarray, shape (n_channels, 3)
        Unit-sphere sensor directions.
    centre : ndarray, shape (3,)
        Unit vector to the source.
    angle : float
        Orientation of the lobe axis in the tangent plane (rad).
    spread : float
        Lobe width (chord length on the unit sphere).

    Returns
    -------
    ndarray, shape (n_channels,)
        Pattern with a positive and a negative lobe, max absolute value 1.
    """
    centre = centre / np.linalg.norm(centre)
    helper = np.array([0.0, 0.0, 1.0]) if abs(centre[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(centre, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(centre, e1)
    axis = np.cos(angle) * e1 + np.sin(angle) * e2
    lobes = []
    for sign in (1.0, -1.0):
        p = centre + sign * 0.3 * axis
        p /= np.linalg.norm(p)
        lobes.append(np.exp(-np.sum((sensors - p) ** 2, axis=1) / (2 * spread**2)))
    pattern = lobes[0] - lobes[1]
    return pattern / np.abs(pattern).max()


# ----------------------------------------------------------------------------- features


def stimulus_features(stimuli: StimulusSet) -> tuple[np.ndarray, np.ndarray]:
    """Generating features of each image: low-level statistics and semantic parameters.

    Returns
    -------
    low_level : ndarray, shape (n, 8)
        z-scored :data:`LOW_LEVEL_FEATURES` computed from the pixels (and the scene position).
    semantic : ndarray, shape (n, 16)
        :data:`SEMANTIC_FEATURES`: category and colour one-hot, count and size (z-scored).
    """
    img = stimuli.images.astype(np.float64) / 255.0
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    low = np.stack(
        [
            lum.mean((1, 2)),
            lum.std((1, 2)),
            (r - g).mean((1, 2)),
            (b - (r + g) / 2).mean((1, 2)),
            np.abs(np.diff(lum, axis=1)).mean((1, 2)),
            np.abs(np.diff(lum, axis=2)).mean((1, 2)),
            stimuli.position[:, 0],
            stimuli.position[:, 1],
        ],
        axis=1,
    )
    low = (low - low.mean(0)) / (low.std(0) + 1e-12)
    cat = np.eye(len(CATEGORIES))[stimuli.category_index]
    colour_index = {c: i for i, c in enumerate(COLOURS)}
    col = np.eye(len(COLOURS))[[colour_index[c] for c in stimuli.colour]]
    extra = np.stack([stimuli.count.astype(np.float64), stimuli.scale], axis=1)
    extra = (extra - extra.mean(0)) / (extra.std(0) + 1e-12)
    return low, np.concatenate([cat, col, extra], axis=1)


# ----------------------------------------------------------------------------- the brain


@dataclass
class _Source:
    name: str
    kind: str  # early | category | semantic | generic
    theta: float  # degrees from the vertex
    phi: float  # degrees, 0 = right, 90 = anterior
    latency: float  # s
    width: float  # s, Gaussian sd of the main peak
    rebound: float  # relative size of the opposite-sign peak one width later


def _source_plan() -> list[_Source]:
    early = [
        _Source("early_left", "early", 95, -125, 0.100, 0.018, 0.5),
        _Source("early_right", "early", 95, -55, 0.100, 0.018, 0.5),
        _Source("early_medial", "early", 80, -90, 0.095, 0.016, 0.4),
        _Source("early_lateral", "early", 105, -90, 0.110, 0.020, 0.4),
    ]
    category = [
        _Source(f"category_{c}", "category", th, ph, 0.170, 0.025, 0.3)
        for c, th, ph in zip(
            CATEGORIES,
            (100, 100, 85, 105, 95, 90),
            (-150, -35, -120, -155, -60, -90),
        )
    ]
    semantic = [
        _Source("semantic_temporal_left", "semantic", 100, 170, 0.320, 0.060, 0.0),
        _Source("semantic_temporal_right", "semantic", 100, 10, 0.380, 0.070, 0.0),
        _Source("semantic_parietal", "semantic", 45, -90, 0.440, 0.080, 0.0),
        _Source("semantic_frontal", "semantic", 60, 90, 0.500, 0.080, 0.0),
    ]
    generic = [
        _Source("generic_m100", "generic", 90, -90, 0.100, 0.020, 0.6),
        _Source("generic_sustained", "generic", 70, -90, 0.300, 0.150, 0.0),
    ]
    return early + category + semantic + generic


def _source_drive(low: np.ndarray, semantic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Source strengths per image, shape (n_images, n_sources); shared by all subjects."""
    n = len(low)
    n_cat = len(CATEGORIES)
    # early: random mixtures of low-level statistics; position_x drives the contralateral side
    w_early = rng.normal(0, 0.5, size=(4, low.shape[1]))
    w_early[:, 6] = [1.2, -1.2, 0.0, 0.0]  # left sources see the right visual field
    w_early[:, 7] = [0.0, 0.0, 1.0, -1.0]
    early = low @ w_early.T / np.sqrt(2.0)
    # category: selective for one category, spill-over to the others
    selectivity = np.full((n_cat, n_cat), 0.15) + np.eye(n_cat) * 1.35
    category = semantic[:, :n_cat] @ selectivity.T
    # semantic: category, colour, count and size in a distributed code
    w_sem = rng.normal(0, 1.0, size=(4, semantic.shape[1]))
    late = semantic @ w_sem.T / np.sqrt(semantic.shape[1] / 3)
    generic = np.ones((n, 2))
    return np.concatenate([early, category, late, generic], axis=1)


def _waveform(times: np.ndarray, latency: np.ndarray, width: float, rebound: float) -> np.ndarray:
    """Evoked waveform(s): Gaussian peak at ``latency`` minus a rebound one width later."""
    t = times - latency[..., None]
    main = np.exp(-0.5 * (t / width) ** 2)
    after = np.exp(-0.5 * ((t - 2.2 * width) / (1.4 * width)) ** 2)
    return main - rebound * after


def _pink_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sfreq: float, exponent: float
) -> np.ndarray:
    """Gaussian noise with power ~ 1/f**exponent along the last axis, unit variance."""
    n = shape[-1]
    freqs = np.fft.rfftfreq(n, 1 / sfreq)
    gain = 1.0 / np.maximum(freqs, 1.0) ** (exponent / 2)
    gain[0] = 0.0
    spec = rng.standard_normal((*shape[:-1], len(freqs))) + 1j * rng.standard_normal(
        (*shape[:-1], len(freqs))
    )
    x = np.fft.irfft(spec * gain, n=n, axis=-1)
    return x / x.std(axis=-1, keepdims=True).mean()


# ----------------------------------------------------------------------------- writing


def _trial_table(config: MEGSimConfig, ids: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Per-trial design for one subject: train images once, test images repeated; shuffled."""
    n_train, n_test = config.n_train_images, config.n_test_images
    image_index = np.concatenate(
        [np.arange(n_train), np.repeat(np.arange(n_train, n_train + n_test), config.n_test_repeats)]
    )
    order = rng.permutation(len(image_index))
    image_index = image_index[order]
    session = np.sort(np.arange(len(image_index)) % config.n_sessions) + 1
    runs_per_session = 4
    run = np.zeros(len(image_index), dtype=np.int64)
    for s in range(1, config.n_sessions + 1):
        idx = np.flatnonzero(session == s)
        run[idx] = np.arange(len(idx)) * runs_per_session // max(len(idx), 1) + 1
    return pd.DataFrame({"image_index": image_index, "session_nr": session, "run_nr": run})


def simulate_meg(config: MEGSimConfig, out_dir: str | Path) -> Path:
    """Simulate and write a THINGS-MEG-like data set.

    Parameters
    ----------
    config : MEGSimConfig
        What to simulate.
    out_dir : path
        Output root; created if absent. Files are overwritten.

    Returns
    -------
    Path
        ``out_dir``. Epoch files hold float32 data in tesla, with per-epoch metadata columns
        ``stimulus_id``, ``image_path``, ``image_nr`` (1-based), ``category``, ``category_nr``
        (1-based), ``trial_type`` (``"exp"`` = train, ``"test"``), ``session_nr``, ``run_nr``.
    """

    out = Path(out_dir)
    prep_dir = out / "derivatives" / "preprocessed"
    image_dir = out / "stimuli" / "images"
    prep_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)

    n_images = config.n_train_images + config.n_test_images
    stimuli = generate_stimuli(n_images, size=config.image_size, seed=config.seed)
    ids = np.array([f"{c}_{i:05d}" for i, c in enumerate(stimuli.category)])
    split = np.array(["train"] * config.n_train_images + ["test"] * config.n_test_images)
    paths = [f"stimuli/images/{s}.png" for s in ids]
    _write_stimuli(stimuli, ids, split, paths, out)

    low, semantic = stimulus_features(stimuli)
    features = np.concatenate([low, semantic], axis=1).astype(np.float32)
    rng_brain = np.random.default_rng([config.seed, 1000])
    drive = _source_drive(low, semantic, rng_brain)
    plan = _source_plan()
    names, xy, sensors = ctf275_sensors()
    times = config.tmin + np.arange(config.n_times) / config.sfreq

    truth: dict[str, dict[str, np.ndarray]] = {}
    for subject in range(1, config.n_subjects + 1):
        rng = np.random.default_rng([config.seed, 2000 + subject])
        # subject anatomy and physiology
        centres = np.stack([_sphere_point(s.theta, s.phi) + rng.normal(0, 0.06, 3) for s in plan])
        angles = rng.uniform(0, np.pi, len(plan))
        patterns = np.stack(
            [dipolar_pattern(sensors, c, a) for c, a in zip(centres, angles)]
        )  # (K, C)
        latencies = np.array([s.latency for s in plan]) + rng.normal(
            0, config.subject_latency_jitter_ms / 1000, len(plan)
        )
        gains = rng.uniform(0.8, 1.2, len(plan)) * rng.uniform(0.85, 1.15)
        noise_scale = rng.uniform(0.85, 1.15)

        design = _trial_table(config, ids, rng)
        idx = design["image_index"].to_numpy()
        n_trials = len(idx)
        trial_shift = rng.normal(0, config.trial_latency_jitter_ms / 1000, n_trials)
        trial_gain = rng.normal(1.0, 0.1, n_trials)
        waves = np.stack(
            [
                _waveform(times, latencies[k] + trial_shift, s.width, s.rebound)
                for k, s in enumerate(plan)
            ],
            axis=1,
        )  # (n_trials, K, T)
        amplitude = drive[idx] * gains * trial_gain[:, None]  # (n_trials, K)
        signal = np.einsum("nk,nkt,kc->nct", amplitude, waves, patterns) * config.signal_ft

        noise_centres = rng.normal(size=(config.n_noise_sources, 3))
        noise_centres[:, 2] = np.abs(noise_centres[:, 2])
        noise_patterns = np.stack(
            [
                dipolar_pattern(sensors, c, a)
                for c, a in zip(noise_centres, rng.uniform(0, np.pi, config.n_noise_sources))
            ]
        )  # (Kn, C)
        background = _pink_noise(
            rng,
            (n_trials, config.n_noise_sources, config.n_times),
            config.sfreq,
            config.noise_exponent,
        )
        noise = np.einsum("nkt,kc->nct", background, noise_patterns)
        noise *= config.noise_ft / noise.std()
        noise += rng.normal(0, config.sensor_noise_ft, noise.shape)
        data = ((signal + noise * noise_scale) * 1e-15).astype(np.float32)

        metadata = pd.DataFrame(
            {
                "stimulus_id": ids[idx],
                "image_path": [paths[i] for i in idx],
                "image_nr": idx + 1,
                "category": stimuli.category[idx],
                "category_nr": stimuli.category_index[idx] + 1,
                "trial_type": np.where(split[idx] == "train", "exp", "test"),
                "session_nr": design["session_nr"].to_numpy(),
                "run_nr": design["run_nr"].to_numpy(),
            }
        )
        _write_epochs(
            data, names, sensors, metadata, config, prep_dir / f"preprocessed_P{subject}-epo.fif"
        )
        truth[f"P{subject}"] = {
            "image_index": idx.astype(np.int64),
            "source_amplitude": amplitude.astype(np.float32),
            "source_waveform_mean": np.stack(
                [
                    _waveform(times, latencies[k : k + 1], s.width, s.rebound)[0]
                    for k, s in enumerate(plan)
                ]
            ).astype(np.float32),
            "trial_latency_shift_s": trial_shift.astype(np.float32),
            "latency_s": latencies.astype(np.float32),
            "sensor_pattern": patterns.astype(np.float32),
            "source_gain": gains.astype(np.float32),
            "noise_scale": np.float32(noise_scale),
        }
        del signal, noise, background, waves, data

    _write_truth(
        out / "ground_truth.h5", config, plan, ids, split, features, drive, names, xy, times, truth
    )
    return out


def _write_stimuli(
    stimuli: StimulusSet, ids: np.ndarray, split: np.ndarray, paths: list[str], out: Path
) -> None:
    from PIL import Image

    for image, path in zip(stimuli.images, paths):
        Image.fromarray(image).save(out / path, format="PNG")
    table = pd.DataFrame(
        {
            "stimulus_id": ids,
            "image_path": paths,
            "image_nr": np.arange(1, len(ids) + 1),
            "split": split,
            "category": stimuli.category,
            "colour": stimuli.colour,
            "count": stimuli.count,
            "scale": np.round(stimuli.scale, 6),
            "x": np.round(stimuli.position[:, 0], 6),
            "y": np.round(stimuli.position[:, 1], 6),
            "text": stimuli.text,
            "caption": stimuli.captions,
        }
    )
    table.to_csv(out / "stimuli" / "stimuli.tsv", sep="\t", index=False)


def _write_epochs(
    data: np.ndarray,
    names: list[str],
    sensors: np.ndarray,
    metadata: pd.DataFrame,
    config: MEGSimConfig,
    path: Path,
) -> None:
    import mne

    info = mne.create_info(names, config.sfreq, "mag")
    with info._unlock():
        for ch, unit in zip(info["chs"], sensors):
            loc = np.zeros(12)
            loc[:3] = unit * _HEAD_RADIUS_M + np.array([0.0, 0.0, 0.04])
            loc[9:12] = unit  # sensor normal: radial
            ch["loc"] = loc
        # fixed identifiers so that the same seed gives byte-identical files
        info["file_id"] = None
        info["meas_id"] = None
    info.set_meas_date(_MEAS_DATE)
    n = len(data)
    events = np.stack(
        [np.arange(n) * 400 + 1000, np.zeros(n, int), metadata["image_nr"].to_numpy()], axis=1
    ).astype(np.int64)
    event_id = {f"image_{v}": int(v) for v in np.unique(events[:, 2])}
    epochs = mne.EpochsArray(
        data,
        info,
        events=events,
        tmin=config.tmin,
        event_id=event_id,
        metadata=metadata,
        baseline=None,
        verbose="error",
    )
    epochs.save(path, overwrite=True, fmt="single", verbose="error")


def _write_truth(path, config, plan, ids, split, features, drive, names, xy, times, truth) -> None:
    with h5py.File(path, "w", track_order=False) as f:
        f.attrs["config"] = yaml.safe_dump(asdict(config), sort_keys=True)
        f.attrs["units"] = (
            "latency_s: s; sensor_pattern: unitless (max |.| = 1), scaled by signal_ft fT; "
            "source_amplitude: unitless strengths (times signal_ft fT); noise params in fT"
        )
        f.create_dataset("stimulus_id", data=ids.astype("S"))
        f.create_dataset("split", data=split.astype("S"))
        f.create_dataset("features", data=features)
        f.create_dataset("feature_names", data=np.array(FEATURE_NAMES, dtype="S"))
        f.create_dataset("source_drive", data=drive.astype(np.float32))
        f.create_dataset("source_name", data=np.array([s.name for s in plan], dtype="S"))
        f.create_dataset("source_kind", data=np.array([s.kind for s in plan], dtype="S"))
        f.create_dataset("source_latency_s", data=np.array([s.latency for s in plan], np.float32))
        f.create_dataset("ch_names", data=np.array(names, dtype="S"))
        f.create_dataset("sensor_xy", data=xy.astype(np.float32))
        f.create_dataset("times", data=times.astype(np.float32))
        noise = f.create_group("noise")
        for key in ("noise_ft", "sensor_noise_ft", "noise_exponent", "n_noise_sources"):
            noise.attrs[key] = getattr(config, key)
        for subject, arrays in truth.items():
            g = f.create_group(subject)
            for key, value in arrays.items():
                g.create_dataset(key, data=value)
