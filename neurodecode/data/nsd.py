"""Natural Scenes Dataset reader (the real layout; the simulator writes the same one).

Betas: ``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.hdf5``,
dataset ``betas``, int16 = percent signal change x 300, h5py shape (trials, Z, Y, X) because MATLAB
wrote X x Y x Z x trials; or ``betas_sessionNN.nii.gz`` (X, Y, Z, trials). ROIs are (X, Y, Z) NIfTI,
so masks are transposed (2, 1, 0) before indexing the HDF5 betas. Only the mask's bounding box is read
from each session file (one hyperslab per session).

Trial ``t`` (0-based, over all sessions) shows 73k image ``subjectim[s, masterordering[t] - 1] - 1``
(both tables 1-based in ``nsd_expdesign.mat``); it is in session ``t // 750 + 1`` at row ``t % 750``.
Test trials are those whose image is in ``sharedix`` (the shared images).

Allen et al. (2022), A massive 7T fMRI dataset to bridge cognitive neuroscience and artificial
intelligence, Nature Neuroscience 25, 116-126.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import scipy.io
from tqdm.auto import tqdm

from neurodecode.data.rois import ROIVolume, read_roi_volume, voxel_coordinates
from neurodecode.data.trials import zscore_sessions, TrialSet
from neurodecode.validation import InvalidInputError, check_dir, check_file

logger = logging.getLogger(__name__)

BETAS_SUBDIR = "func1pt8mm/betas_fithrf_GLMdenoise_RR"
NSD_TRIALS_PER_SESSION = 750


@dataclass
class NSDDesign:
    """The experimental design, converted to 0-based indices.

    Attributes
    ----------
    masterordering : ndarray, shape (n_trials,)
        Column of ``subjectim`` shown on each trial.
    subjectim : ndarray, shape (n_subjects, n_images_per_subject)
        73k image ids (0-based) per subject.
    sharedix : ndarray, shape (n_shared,)
        73k ids of the shared (test) images.
    """

    masterordering: np.ndarray
    subjectim: np.ndarray
    sharedix: np.ndarray

    def image_ids(self, subject_index: int, trials: np.ndarray) -> np.ndarray:
        """73k ids (0-based) shown to a subject on the given 0-based trials."""
        return self.subjectim[subject_index, self.masterordering[trials]]


def read_design(root: str | Path) -> NSDDesign:
    """Read ``nsddata/experiments/nsd/nsd_expdesign.mat`` (1-based) into 0-based arrays."""
    path = check_file(Path(root) / "nsddata/experiments/nsd/nsd_expdesign.mat", "NSD design file")
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:
        raise InvalidInputError(f"cannot read NSD design {path}: {err}") from err
    missing = [k for k in ("masterordering", "subjectim", "sharedix") if k not in mat]
    if missing:
        raise InvalidInputError(f"NSD design {path} lacks {missing}.")
    master = mat["masterordering"].ravel().astype(np.int64)
    subjectim = np.atleast_2d(mat["subjectim"]).astype(np.int64)
    shared = mat["sharedix"].ravel().astype(np.int64)
    if master.min() < 1 or subjectim.min() < 1 or shared.min() < 1:
        raise InvalidInputError(f"NSD design {path} has zeros; expected 1-based indices.")
    if master.max() > subjectim.shape[1]:
        raise InvalidInputError(
            f"NSD design {path}: masterordering refers to column {master.max()} but subjectim has "
            f"{subjectim.shape[1]} columns."
        )
    return NSDDesign(master - 1, subjectim - 1, shared - 1)


def subject_index(subject: str) -> int:
    """``"subj01"`` -> 0."""
    match = re.fullmatch(r"subj(\d+)", subject)
    if not match:
        raise InvalidInputError(
            f"subject={subject!r} is not valid; expected 'subjNN' like 'subj01'."
        )
    return int(match.group(1)) - 1


def session_files(root: str | Path, subject: str) -> dict[int, Path]:
    """``{session number: betas file}`` for the sessions present (HDF5 preferred over NIfTI)."""
    folder = check_dir(
        Path(root) / "nsddata_betas/ppdata" / subject / BETAS_SUBDIR, f"betas folder of {subject}"
    )
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = re.fullmatch(r"betas_session(\d+)\.(hdf5|nii\.gz|nii)", path.name)
        if match and (int(match.group(1)) not in files or match.group(2) == "hdf5"):
            files[int(match.group(1))] = path
    if not files:
        raise InvalidInputError(f"no betas_sessionNN.hdf5/.nii.gz files in {folder}.")
    return dict(sorted(files.items()))


def roi_path(root: str | Path, subject: str, roi: str) -> Path:
    """Path of an ROI volume in the NSD layout."""
    return Path(root) / "nsddata/ppdata" / subject / "func1pt8mm/roi" / f"{roi}.nii.gz"


def _read_session(
    path: Path,
    mask_zyx: np.ndarray,
    bbox: tuple[slice, ...],
    inside: tuple[np.ndarray, ...],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Masked betas of one session in percent signal change, (n_trials, n_voxels) float32.

    Written into the first rows of ``out`` (a preallocated float32 buffer) when given."""
    expected = mask_zyx.shape
    try:
        if path.suffix == ".hdf5":
            with h5py.File(path, "r") as f:
                if "betas" not in f:
                    raise InvalidInputError(f"{path} has no dataset 'betas'; found {list(f)}.")
                betas = f["betas"]
                if betas.ndim != 4 or betas.shape[1:] != expected:
                    raise InvalidInputError(
                        f"betas in {path} have shape {betas.shape}; expected (trials, "
                        f"{', '.join(map(str, expected))}) = (trials, Z, Y, X) matching the ROI "
                        "volume transposed (2, 1, 0)."
                    )
                block = betas[(slice(None), *bbox)]
        else:
            img = nib.load(str(path))
            shape_xyz = expected[::-1]
            if len(img.shape) != 4 or tuple(img.shape[:3]) != shape_xyz:
                raise InvalidInputError(
                    f"betas in {path} have shape {img.shape}; expected ({', '.join(map(str, shape_xyz))}"
                    ", trials) = (X, Y, Z, trials) matching the ROI volume."
                )
            bx, by, bz = bbox[2], bbox[1], bbox[0]
            block = np.asarray(img.dataobj[bx, by, bz, :]).transpose(3, 2, 1, 0)
    except InvalidInputError:
        raise
    except Exception as err:  # truncated/corrupt files
        raise InvalidInputError(f"cannot read betas file {path}: {err}") from err
    # one flat gather is ~3x faster than indexing with three coordinate arrays
    flat = np.ravel_multi_index(inside, block.shape[1:])
    if out is not None and len(out) < len(block):
        raise InvalidInputError(
            f"{path} holds {len(block)} trials, more than the {len(out)} of a full session."
        )
    data = np.empty((len(block), len(flat)), np.float32) if out is None else out[: len(block)]
    data[:] = np.take(block.reshape(len(block), -1), flat, axis=1)
    if block.dtype.kind == "i":
        data *= np.float32(1 / 300.0)
    elif not np.all(np.isfinite(data)):
        bad = np.unique(np.nonzero(~np.isfinite(data))[1])
        raise InvalidInputError(
            f"betas in {path} have NaN/inf in {len(bad)} masked voxels; expected finite values "
            "(choose a mask that excludes them)."
        )
    return data


def read_nsd_betas(
    root: str | Path,
    subject: str = "subj01",
    sessions: list[int] | None = None,
    roi: str | ROIVolume = "nsdgeneral",
    roi_labels: str | list[str] | None = None,
    zscore: bool = True,
    trials_per_session: int | None = None,
    progress: bool = True,
) -> TrialSet:
    """Read masked single-trial betas of one subject.

    Parameters
    ----------
    root : path
        The NSD root (holding ``nsddata/`` and ``nsddata_betas/``).
    subject : str
        ``"subj01"`` ...
    sessions : list of int, optional
        1-based sessions; all present ones by default (gaps are logged).
    roi : str or ROIVolume
        ROI file name under ``roi/`` (``"nsdgeneral"``, ``"floc-faces"``, ...) or a loaded volume.
    roi_labels : str or list of str, optional
        Label names within the ROI file (from its .ctab); all positive labels by default.
    zscore : bool
        Z-score each voxel within each session; otherwise percent signal change.
    trials_per_session : int, optional
        Trials in a full session; inferred as the largest file (750 in NSD).

    Returns
    -------
    TrialSet
        data (n_trials, n_voxels) float32 in session-z-scored units (or percent signal change);
        ``info`` has ``voxel_ijk`` ((n_voxels, 3) (x, y, z)), ``affine``, ``roi``, ``units``.
    """
    root = Path(root)
    s_index = subject_index(subject)
    design = read_design(root)
    if s_index >= design.subjectim.shape[0]:
        raise InvalidInputError(
            f"subject={subject!r}: the design only has {design.subjectim.shape[0]} subjects."
        )
    volume = (
        roi
        if isinstance(roi, ROIVolume)
        else read_roi_volume(roi_path(root, subject, roi), subject)
    )
    mask_xyz = volume.mask(roi_labels)
    if not mask_xyz.any():
        raise InvalidInputError(f"ROI {volume.path} (labels {roi_labels}) selects no voxels.")
    ijk = voxel_coordinates(mask_xyz)
    mask_zyx = mask_xyz.transpose(2, 1, 0)
    lo, hi = ijk.min(axis=0), ijk.max(axis=0) + 1
    bbox = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))  # z, y, x
    inside = (ijk[:, 2] - lo[2], ijk[:, 1] - lo[1], ijk[:, 0] - lo[0])

    available = session_files(root, subject)
    if sessions is None:
        sessions = list(available)
        gaps = sorted(set(range(1, max(available) + 1)) - set(available))
        if gaps:
            logger.warning(
                "%s: sessions %s are missing under %s; reading the %d present.",
                subject,
                gaps,
                root,
                len(available),
            )
    else:
        missing = [s for s in sessions if s not in available]
        if missing:
            raise InvalidInputError(
                f"sessions {missing} of {subject} not found: expected betas_sessionNN.hdf5 in "
                f"{available[next(iter(available))].parent}; present: {list(available)}."
            )
    if trials_per_session is None:
        trials_per_session = NSD_TRIALS_PER_SESSION
        first = available[next(iter(available))]
        if first.suffix == ".hdf5":
            try:
                with h5py.File(first, "r") as f:
                    if "betas" in f:
                        trials_per_session = f["betas"].shape[0]
            except OSError as err:
                raise InvalidInputError(f"cannot read betas file {first}: {err}") from err

    # one preallocated buffer (sessions are at most trials_per_session long): no concatenation
    buffer = np.empty((len(sessions) * trials_per_session, len(ijk)), dtype=np.float32)
    n_read = 0
    session_col, trial_col = [], []
    for sess in tqdm(sessions, desc=f"{subject} betas", disable=not progress, leave=False):
        data = _read_session(available[sess], mask_zyx, bbox, inside, out=buffer[n_read:])
        n_read += len(data)
        start = (sess - 1) * trials_per_session
        trials = np.arange(start, start + len(data))
        if trials[-1] >= len(design.masterordering):
            raise InvalidInputError(
                f"{available[sess]} has {len(data)} trials, past the design's "
                f"{len(design.masterordering)} trials."
            )
        session_col.append(np.full(len(data), sess))
        trial_col.append(trials)
    data = buffer[:n_read]
    session = np.concatenate(session_col)
    trials = np.concatenate(trial_col)
    if zscore:
        data = zscore_sessions(data, session)
    ids = design.image_ids(s_index, trials)
    # repeat = how many earlier trials showed the same image (vectorised cumulative count)
    order = np.lexsort((trials, ids))
    sorted_ids = ids[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_ids))[0] + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(ids)]))
    repeat = np.empty(len(ids), dtype=np.int64)
    repeat[order] = np.arange(len(ids)) - run_start
    split = np.where(np.isin(ids, design.sharedix), "test", "train")
    return TrialSet(
        data=data,
        subject=np.full(len(data), subject),
        session=session,
        stimulus_id=ids,
        repeat=repeat,
        split=split,
        info={
            "voxel_ijk": ijk,
            "affine": volume.affine,
            "roi": volume.name if roi_labels is None else f"{volume.name}:{roi_labels}",
            "units": "session z-score" if zscore else "percent signal change",
            "trial": trials,
        },
    )


def count_roi_voxels(
    root: str | Path,
    subject: str,
    roi: str = "nsdgeneral",
    roi_labels: str | list[str] | None = None,
) -> int:
    """Voxels in a subject's ROI mask (without reading any betas)."""
    return int(read_roi_volume(roi_path(root, subject, roi), subject).mask(roi_labels).sum())


def read_stimuli(root: str | Path, stimulus_ids: np.ndarray | list[int]) -> np.ndarray:
    """Images by 73k id from ``nsd_stimuli.hdf5`` (``imgBrick``): (n, H, W, 3) uint8, in the order
    asked."""
    path = check_file(Path(root) / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "NSD stimuli")
    ids = np.asarray(stimulus_ids, dtype=np.int64)
    with h5py.File(path, "r") as f:
        if "imgBrick" not in f:
            raise InvalidInputError(f"{path} has no dataset 'imgBrick'; found {list(f)}.")
        brick = f["imgBrick"]
        if ids.size and (ids.min() < 0 or ids.max() >= brick.shape[0]):
            raise InvalidInputError(
                f"stimulus ids {ids.min()}..{ids.max()} are outside {path}'s {brick.shape[0]} images."
            )
        unique, inverse = np.unique(ids, return_inverse=True)
        images = (
            brick[unique.tolist()] if len(unique) else np.empty((0, *brick.shape[1:]), brick.dtype)
        )
    return images[inverse]


def read_captions(root: str | Path) -> dict[int, str]:
    """``{73k id: caption}`` from ``nsd_captions.csv`` (columns ``nsdId``, ``caption``)."""
    path = check_file(Path(root) / "nsddata_stimuli/stimuli/nsd/nsd_captions.csv", "NSD captions")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"nsdId", "caption"} <= set(reader.fieldnames):
            raise InvalidInputError(
                f"{path} has columns {reader.fieldnames}; expected 'nsdId' and 'caption'."
            )
        return {int(row["nsdId"]): row["caption"] for row in reader}
