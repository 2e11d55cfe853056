"""THINGS-MEG reader: preprocessed epochs -> a :class:`~neurodecode.data.trials.TrialSet`.

This module owns reading ``derivatives/preprocessed/preprocessed_P{n}-epo.fif`` (the layout of
OpenNeuro ds004212's derivatives, and of :mod:`neurodecode.sim.meg`) and the preprocessing of
Défossez et al. (2023) / Benchetrit et al. (2024):

1. baseline correction (mean of the pre-stimulus samples, per epoch and channel);
2. resampling to 120 Hz with a polyphase filter (:func:`scipy.signal.resample_poly`; MNE's FFT
   resampling took 40 s on a 1000-epoch array);
3. robust scaling per subject and channel: ``(x - median) / IQR`` with statistics from the training
   trials only;
4. clamping to ``±clamp`` (20).

Trials are keyed by image: ``stimulus_id`` comes from the metadata column ``stimulus_id`` if
present, else from the file stem of ``image_path`` (THINGS: ``images_meg/aardvark/aardvark_01b.jpg``
-> ``aardvark_01b``). ``trial_type`` gives the split (``exp``/``train`` -> train, ``test`` -> test;
``catch`` trials are dropped and counted). Metadata come from the epochs file; if it has none, a
``sample_attributes_P{n}.csv`` beside it (one row per epoch) is used.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from neurodecode.data.trials import TrialSet
from neurodecode.validation import InvalidInputError, check_array, check_dir

logger = logging.getLogger(__name__)

EPOCHS_DIR = Path("derivatives") / "preprocessed"
EPOCHS_PATTERN = "preprocessed_P{n}-epo.fif"
IMAGE_COLUMNS = ("stimulus_id", "image_path", "image_name")
_SPLIT_OF_TRIAL_TYPE = {"exp": "train", "train": "train", "test": "test"}
_FILE_RE = re.compile(r"^preprocessed_P(\d+)-epo\.fif$")


def epochs_path(root: str | Path, subject: int) -> Path:
    """Path of subject ``subject``'s (1-based) preprocessed epochs under ``root``."""
    return Path(root) / EPOCHS_DIR / EPOCHS_PATTERN.format(n=subject)


def find_subjects(root: str | Path) -> list[int]:
    """Subject numbers with an epochs file under ``root``, sorted."""
    folder = check_dir(Path(root) / EPOCHS_DIR, "THINGS-MEG preprocessed epochs folder")
    found = [int(m.group(1)) for p in folder.iterdir() if (m := _FILE_RE.match(p.name))]
    if not found:
        raise InvalidInputError(
            f"no preprocessed_P{{n}}-epo.fif files in {folder}; expected the THINGS-MEG "
            "derivatives layout (see datasets/things-meg/README.md)."
        )
    return sorted(found)


def _subject_number(subject: int | str) -> int:
    if isinstance(subject, str):
        match = re.fullmatch(r"P?(\d+)", subject)
        if not match:
            raise InvalidInputError(f"subject {subject!r} is not valid; expected 1, '1' or 'P1'.")
        return int(match.group(1))
    return int(subject)


def sensor_positions_2d(info, source: str | Path | None = None) -> np.ndarray:
    """2-D sensor positions in [0, 1] for spatial attention, shape (n_channels, 2).

    Uses the 3-D sensor locations in ``info`` (a sphere is fitted to them and they are projected
    azimuthally from its vertex, as MNE's topomaps do); if the file has no locations, the channel
    names are looked up in MNE's CTF-275 layout.

    Parameters
    ----------
    info : mne.Info
        Measurement info holding only the MEG channels to use.
    source : path, optional
        The file ``info`` came from, named in error messages.
    """
    pos = np.array([ch["loc"][:3] for ch in info["chs"]], dtype=np.float64)
    if np.isfinite(pos).all() and (np.linalg.norm(pos, axis=1) > 0).all():
        # least-squares sphere: |p|^2 = 2 p.c + (r^2 - |c|^2)
        design = np.column_stack([2 * pos, np.ones(len(pos))])
        solution, *_ = np.linalg.lstsq(design, (pos**2).sum(1), rcond=None)
        unit = pos - solution[:3]
        unit /= np.linalg.norm(unit, axis=1, keepdims=True)
        theta = np.arccos(np.clip(unit[:, 2], -1, 1))
        phi = np.arctan2(unit[:, 1], unit[:, 0])
        xy = np.column_stack([theta * np.cos(phi), theta * np.sin(phi)])
    else:
        import mne

        layout = mne.channels.read_layout("CTF-275")
        lookup = {name.split("-")[0]: i for i, name in enumerate(layout.names)}
        short = [name.split("-")[0] for name in info["ch_names"]]
        missing = [name for name in short if name not in lookup]
        if missing:
            raise InvalidInputError(
                f"{source or 'epochs'} has no sensor locations and channels {missing[:5]} are not "
                "in MNE's CTF-275 layout; expected CTF channel locations in info['chs'][i]['loc']."
            )
        rows = [lookup[name] for name in short]
        xy = layout.pos[rows, :2] + layout.pos[rows, 2:4] / 2
    xy = xy - xy.min(0)
    return (xy / np.maximum(xy.max(0), 1e-12)).astype(np.float32)


def _read_metadata(epochs, path: Path, subject: int) -> pd.DataFrame:
    metadata = epochs.metadata
    source = path
    if metadata is None:
        csv = path.parent / f"sample_attributes_P{subject}.csv"
        if not csv.is_file():
            raise InvalidInputError(
                f"{path} has no per-epoch metadata and {csv.name} is absent beside it; expected "
                f"metadata with an image column (one of {list(IMAGE_COLUMNS)}) and 'trial_type'."
            )
        metadata, source = pd.read_csv(csv), csv
        if len(metadata) != len(epochs):
            raise InvalidInputError(
                f"{csv} has {len(metadata)} rows but {path} has {len(epochs)} epochs; expected "
                "one row per epoch."
            )
    if not any(c in metadata.columns for c in IMAGE_COLUMNS):
        raise InvalidInputError(
            f"metadata of {source} has no image column (columns: {list(metadata.columns)}); "
            f"expected one of {list(IMAGE_COLUMNS)} naming the image of each epoch."
        )
    if "trial_type" not in metadata.columns:
        raise InvalidInputError(
            f"metadata of {source} has no 'trial_type' column; expected 'exp'/'train', 'test' or "
            "'catch' per epoch."
        )
    bad = sorted(set(metadata["trial_type"].astype(str)) - {*_SPLIT_OF_TRIAL_TYPE, "catch"})
    if bad:
        raise InvalidInputError(
            f"metadata of {source} has trial_type values {bad}; expected 'exp', 'train', 'test' "
            "or 'catch'."
        )
    return metadata.reset_index(drop=True)


def _stimulus_ids(metadata: pd.DataFrame) -> np.ndarray:
    if "stimulus_id" in metadata.columns:
        return metadata["stimulus_id"].astype(str).to_numpy()
    column = "image_path" if "image_path" in metadata.columns else "image_name"
    return np.array([Path(str(p)).stem for p in metadata[column]])


def resample_epochs(data: np.ndarray, sfreq: float, new_sfreq: float) -> np.ndarray:
    """Polyphase resampling along the last axis (times).

    Parameters
    ----------
    data : ndarray, shape (..., n_times)
    sfreq, new_sfreq : float
        Old and new sampling rates (Hz); their ratio is approximated by a fraction with a
        denominator of at most 1000.

    Returns
    -------
    ndarray, shape (..., ceil(n_times * up / down))
    """
    from scipy.signal import resample_poly

    if new_sfreq == sfreq:
        return data
    ratio = Fraction(new_sfreq / sfreq).limit_denominator(1000)
    return resample_poly(data, ratio.numerator, ratio.denominator, axis=-1, padtype="line")


def robust_scale(
    data: np.ndarray, fit_mask: np.ndarray, clamp: float | None = 20.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale each channel by its median and interquartile range, fitted on ``fit_mask`` trials.

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_channels, n_times)
    fit_mask : ndarray of bool, shape (n_trials,)
        Trials the statistics come from (the training trials).
    clamp : float or None
        Clip the scaled values to ``[-clamp, clamp]``.

    Returns
    -------
    scaled : ndarray, same shape as ``data``, float32
    median, iqr : ndarray, shape (n_channels,)
    """
    fit = data[fit_mask] if fit_mask.any() else data
    per_channel = np.moveaxis(fit, 1, 0).reshape(fit.shape[1], -1)
    q25, median, q75 = np.percentile(per_channel, [25, 50, 75], axis=1)
    iqr = np.where(q75 - q25 > 0, q75 - q25, 1.0)
    scaled = (data - median[:, None]) / iqr[:, None]
    if clamp is not None:
        np.clip(scaled, -clamp, clamp, out=scaled)
    return scaled.astype(np.float32), median, iqr


def read_things_meg(
    root: str | Path,
    subjects: list[int | str] | None = None,
    preprocess: bool = True,
    sfreq: float = 120.0,
    clamp: float | None = 20.0,
    baseline: tuple[float | None, float] | None = (None, 0.0),
) -> TrialSet:
    """Read THINGS-MEG preprocessed epochs into one :class:`TrialSet`.

    Parameters
    ----------
    root : path
        Data set root holding ``derivatives/preprocessed/preprocessed_P{n}-epo.fif``.
    subjects : list of int or str, optional
        Subjects to read (``1`` or ``"P1"``); default all found.
    preprocess : bool
        Apply baseline, resampling, robust scaling and clamping (module docstring). If False the
        data are returned as stored (tesla), only cast to float32.
    sfreq : float
        Target sampling rate (Hz) when ``preprocess``.
    clamp : float or None
        Clamp after robust scaling.
    baseline : (float or None, float) or None
        Baseline interval (s); ``None`` start = first sample.

    Returns
    -------
    TrialSet
        ``data`` (n_trials, n_channels, n_times) float32; ``subject`` ``"P{n}"``; ``session`` from
        ``session_nr`` (1 if absent); ``stimulus_id`` str; ``repeat`` 0-based occurrence of the
        image for that subject; ``split`` train/test. ``info``: ``ch_names``, ``sfreq`` (Hz),
        ``times`` (s), ``sensor_xy`` ((n_channels, 2) in [0, 1]), ``scaler`` (per subject
        ``median``/``iqr`` lists, in tesla), ``n_catch_dropped`` per subject, ``files``.

    Raises
    ------
    InvalidInputError
        Missing file, unreadable file, channel set differing between subjects, NaN data, metadata
        without an image or ``trial_type`` column; the message names the file.
    """
    import mne

    root = check_dir(root, "THINGS-MEG root")
    numbers = find_subjects(root) if subjects is None else [_subject_number(s) for s in subjects]
    sets: list[TrialSet] = []
    ch_names: list[str] | None = None
    info_out: dict = {"scaler": {}, "n_catch_dropped": {}, "files": []}
    for number in numbers:
        path = epochs_path(root, number)
        if not path.is_file():
            raise InvalidInputError(
                f"THINGS-MEG epochs for subject P{number} not found: expected a file at {path}."
            )
        try:
            epochs = mne.read_epochs(path, preload=True, verbose="error")
        except Exception as error:  # mne raises many types for corrupt files
            raise InvalidInputError(
                f"{path} could not be read as MNE epochs ({type(error).__name__}: {error})."
            ) from error
        metadata = _read_metadata(epochs, path, number)
        epochs.pick("meg", exclude="bads")
        if ch_names is None:
            ch_names = list(epochs.ch_names)
            first_path = path
            sensor_xy = sensor_positions_2d(epochs.info, path)
            orig_sfreq = float(epochs.info["sfreq"])
            orig_times = epochs.times.copy()
        elif list(epochs.ch_names) != ch_names:
            raise InvalidInputError(
                f"{path} has {len(epochs.ch_names)} MEG channels; expected the same "
                f"{len(ch_names)} channels, in the same order, as {first_path}."
            )
        if float(epochs.info["sfreq"]) != orig_sfreq or len(epochs.times) != len(orig_times):
            raise InvalidInputError(
                f"{path} has sfreq {epochs.info['sfreq']} Hz and {len(epochs.times)} samples; "
                f"expected {orig_sfreq} Hz and {len(orig_times)} samples as {first_path}."
            )
        data = check_array("epochs data", epochs.get_data(), ndim=3, finite=True, source=path)
        keep = (metadata["trial_type"].astype(str) != "catch").to_numpy()
        info_out["n_catch_dropped"][f"P{number}"] = int((~keep).sum())
        if (~keep).any():
            logger.info("%s: dropped %d catch trials", path, int((~keep).sum()))
        data, metadata = data[keep], metadata[keep].reset_index(drop=True)
        split = metadata["trial_type"].astype(str).map(_SPLIT_OF_TRIAL_TYPE).to_numpy()
        ids = _stimulus_ids(metadata)
        times = orig_times
        if preprocess:
            if baseline is not None:
                start = times[0] if baseline[0] is None else baseline[0]
                window = (times >= start) & (times <= baseline[1])
                if window.any():
                    data = data - data[:, :, window].mean(-1, keepdims=True)
            data = resample_epochs(data, orig_sfreq, sfreq)
            times = times[0] + np.arange(data.shape[-1]) / sfreq
            data, median, iqr = robust_scale(data, split == "train", clamp)
            info_out["scaler"][f"P{number}"] = {"median": median.tolist(), "iqr": iqr.tolist()}
        else:
            data = data.astype(np.float32)
        session = (
            metadata["session_nr"].to_numpy(np.int64)
            if "session_nr" in metadata.columns
            else np.ones(len(ids), np.int64)
        )
        repeat = pd.Series(ids).groupby(ids).cumcount().to_numpy(np.int64)
        sets.append(
            TrialSet(
                data=np.ascontiguousarray(data, dtype=np.float32),
                subject=np.array([f"P{number}"] * len(ids)),
                session=session,
                stimulus_id=ids,
                repeat=repeat,
                split=split,
            )
        )
        info_out["files"].append(str(path))
        del epochs
    trials = TrialSet.concatenate(sets)
    trials.info = {
        "ch_names": ch_names,
        "sfreq": float(sfreq if preprocess else orig_sfreq),
        "times": times.astype(np.float64),
        "sensor_xy": sensor_xy,
        **info_out,
    }
    return trials
