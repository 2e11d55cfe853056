"""Natural Scenes Dataset reader (the real layout; the simulator writes the same one).

Betas: ``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR/betas_sessionNN.hdf5``,
dataset ``betas``, int16 = percent signal change x 300, h5py shape (trials, Z, Y, X) because MATLAB
wrote X x Y x Z x trials; or ``betas_sessionNN.nii.gz`` (X, Y, Z, trials). ROIs are (X, Y, Z) NIfTI,
so masks are transposed (2, 1, 0) before indexing the HDF5 betas. Only the masked voxels are read, by
the fastest route the file's layout allows: NSD's own HDF5 files are chunked one voxel per chunk
(MATLAB chunk size [1 1 1 750], h5py (750, 1, 1, 1); NSD data manual, "Functional data"), so only
the masked voxels' chunks are read; unchunked files are gathered from a memory map; files chunked
by whole volumes are gathered chunk by chunk; anything else (e.g. compressed) through bounding-box
hyperslabs.

Trial ``t`` (0-based, over all sessions) shows 73k image ``subjectim[s, masterordering[t] - 1] - 1``
(both tables 1-based in ``nsd_expdesign.mat``); it is in session ``t // 750 + 1`` at row ``t % 750``.
Test trials are those whose image is in ``sharedix`` (the shared images).

Allen et al. (2022), A massive 7T fMRI dataset to bridge cognitive neuroscience and artificial
intelligence, Nature Neuroscience 25, 116-126.
"""

from __future__ import annotations

import csv
import logging
import math
import mmap
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import scipy.io
from tqdm.auto import tqdm

from neurodecode.data.rois import ROIVolume, read_roi_volume, voxel_coordinates
from neurodecode.data.trials import TrialSet, zscore_sessions
from neurodecode.validation import InvalidInputError, check_file

logger = logging.getLogger(__name__)

BETAS_SUBDIR = "func1pt8mm/betas_fithrf_GLMdenoise_RR"
NSD_TRIALS_PER_SESSION = 750
# sessions each subject completed (Allen et al. 2022; NSD data manual)
NSD_SESSIONS = (40, 40, 32, 30, 40, 32, 40, 30)


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


def training_image_ids(root: str | Path, subject: str) -> np.ndarray:
    """The 73k ids (0-based) of the images the design shows ``subject`` outside the shared test
    set: its training images, from the design alone (no betas are read; images of sessions not
    downloaded are included).

    Returns
    -------
    ndarray, shape (n_images,), int64, sorted and unique
    """
    design = read_design(root)
    index = subject_index(subject)
    if index >= design.subjectim.shape[0]:
        raise InvalidInputError(
            f"subject={subject!r}: the design of {root} only has {design.subjectim.shape[0]} "
            "subjects."
        )
    ids = np.unique(design.image_ids(index, np.arange(len(design.masterordering))))
    return ids[~np.isin(ids, design.sharedix)]


def subject_index(subject: str) -> int:
    """``"subj01"`` -> 0."""
    match = re.fullmatch(r"subj(\d+)", subject)
    if not match:
        raise InvalidInputError(
            f"subject={subject!r} is not valid; expected 'subjNN' like 'subj01'."
        )
    return int(match.group(1)) - 1


def find_nsd_subjects(root: str | Path) -> list[str]:
    """Subjects (``"subj01"`` ...) with a betas folder under ``root``, sorted; empty if none.

    A subject counts when ``nsddata_betas/ppdata/subjXX/func1pt8mm/betas_fithrf_GLMdenoise_RR``
    exists (its sessions are checked when read).
    """
    folder = Path(root) / "nsddata_betas/ppdata"
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if re.fullmatch(r"subj\d\d", p.name) and (p / BETAS_SUBDIR).is_dir()
    )


def session_files(root: str | Path, subject: str) -> dict[int, Path]:
    """``{session number: betas file}`` for the sessions present (HDF5 preferred over NIfTI)."""
    folder = Path(root) / "nsddata_betas/ppdata" / subject / BETAS_SUBDIR
    if not folder.is_dir():
        raise InvalidInputError(
            f"betas folder of {subject} not found: expected a directory at {folder} holding "
            "betas_sessionNN.hdf5 (or .nii.gz) files."
        )
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        match = re.fullmatch(r"betas_session(\d+)\.(hdf5|nii\.gz|nii)", path.name)
        if match and int(match.group(1)) >= 1 and path.is_file():
            if int(match.group(1)) not in files or match.group(2) == "hdf5":
                files[int(match.group(1))] = path
    if not files:
        others = sorted(p.name for p in folder.iterdir())
        raise InvalidInputError(
            f"no NSD betas for {subject}: expected betas_sessionNN.hdf5 (or .nii.gz) files in "
            f"{folder}; it holds {len(others)} other entries{': ' if others else ''}"
            f"{', '.join(others[:5])}{' ...' if len(others) > 5 else ''}."
        )
    return dict(sorted(files.items()))


def roi_path(root: str | Path, subject: str, roi: str) -> Path:
    """Path of an ROI volume in the NSD layout."""
    return Path(root) / "nsddata/ppdata" / subject / "func1pt8mm/roi" / f"{roi}.nii.gz"


@dataclass
class _MaskIndex:
    """Where an (X, Y, Z) ROI mask's voxels sit in a (trials, Z, Y, X) betas array."""

    shape_zyx: tuple[int, int, int]
    zyx: np.ndarray  # (n_voxels, 3) int64, in the mask's C order over (x, y, z)
    bbox: tuple[slice, slice, slice]  # z, y, x
    flat: np.ndarray  # ravelled (z, y, x) index in the whole volume
    flat_bbox: np.ndarray  # ravelled index inside the bounding box

    @classmethod
    def from_mask(cls, mask_xyz: np.ndarray) -> _MaskIndex:
        ijk = voxel_coordinates(mask_xyz)
        zyx = ijk[:, ::-1].astype(np.int64)
        shape_zyx = tuple(int(n) for n in mask_xyz.shape[::-1])
        lo, hi = zyx.min(axis=0), zyx.max(axis=0) + 1
        bbox = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        flat = np.ravel_multi_index(tuple(zyx.T), shape_zyx)
        flat_bbox = np.ravel_multi_index(tuple((zyx - lo).T), tuple(hi - lo))
        return cls(shape_zyx, zyx, bbox, flat, flat_bbox)

    @property
    def bbox_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.bbox)


# bounded temporaries: at most this many bytes of raw (file-dtype) data are held per read step
_BLOCK_BYTES = 64 * 2**20
# blocks gathered right after being read stay in the CPU cache when this small
_CACHE_BYTES = 2**20


# The gatherers below hand consecutive trial blocks of masked betas, in the file's dtype, to a
# ``sink(t0, t1, block)`` that converts them while they are still in cache.


def _gather_contiguous(path: Path, betas: h5py.Dataset, mask: _MaskIndex, sink) -> bool:
    """Masked voxels of an unchunked, unfiltered dataset, gathered straight from a memory map of
    the file (no bounding-box copy), a cache-sized block of trials at a time; ``False`` if the
    dataset has no storage yet."""
    offset = betas.id.get_offset()  # absolute (userblock included); None if never written
    if offset is None:
        return False
    n = betas.shape[0]
    step = max(1, _CACHE_BYTES // max(1, len(mask.flat) * betas.dtype.itemsize))
    piece = np.empty((min(step, n), len(mask.flat)), dtype=betas.dtype)
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if offset + betas.size * betas.dtype.itemsize > len(mm):
            raise InvalidInputError(
                f"{path} is shorter than its dataset 'betas' {betas.shape} {betas.dtype}: the file "
                "is truncated (an interrupted download?)."
            )
        volume = np.frombuffer(mm, dtype=betas.dtype, count=betas.size, offset=offset)
        try:
            trials = volume.reshape(n, -1)
            for t0 in range(0, n, step):
                t1 = min(t0 + step, n)
                np.take(trials[t0:t1], mask.flat, axis=1, out=piece[: t1 - t0])
                sink(t0, t1, piece[: t1 - t0])
        finally:
            del volume, trials  # release the buffer before the map closes
    return True


def _gather_voxel_chunks(betas: h5py.Dataset, mask: _MaskIndex, sink) -> None:
    """NSD's own layout: one chunk per voxel holding all its trials (MATLAB chunk size
    [1 1 1 750], h5py chunks (750, 1, 1, 1)). Reads the masked voxels' chunks only, their raw
    bytes straight into place: 15.7k chunk reads instead of the ~220k of nsdgeneral's bounding box.
    """
    n, tc = betas.shape[0], betas.chunks[0]
    out = np.empty((len(mask.zyx), tc), dtype=betas.dtype)  # voxel-major, as stored
    read = betas.id.read_direct_chunk
    for v, (z, y, x) in enumerate(mask.zyx.tolist()):
        try:
            read((0, z, y, x), out=out[v].view(np.uint8))
        except (RuntimeError, OSError, KeyError):  # chunk never written: HDF5 gives the fill value
            out[v, :n] = betas[:, z, y, x]
    sink(0, n, out[:, :n].T)  # (n, n_voxels) view, converted in one strided pass


def _gather_volume_chunks(betas: h5py.Dataset, mask: _MaskIndex, sink) -> None:
    """Chunks holding whole volumes (tc, Z, Y, X) (the simulator's (1, Z, Y, X)): raw chunk bytes
    are read straight into a cache-sized block of trials (no HDF5 hyperslab machinery), and the
    masked voxels gathered and handed on while the block is still in cache. (Gathering from a
    memory map of the chunks instead measured slower: page faults.)"""
    n, tc = betas.shape[0], betas.chunks[0]
    per_trial = int(np.prod(betas.shape[1:]))
    per_chunk_bytes = tc * per_trial * betas.dtype.itemsize
    n_block = max(1, _CACHE_BYTES // per_chunk_bytes)
    block = np.empty((n_block * tc, per_trial), dtype=betas.dtype)
    piece = np.empty((n_block * tc, len(mask.flat)), dtype=betas.dtype)
    read = betas.id.read_direct_chunk
    for b0 in range(0, n, n_block * tc):
        b1 = min(b0 + n_block * tc, n)
        for t0 in range(b0, b1, tc):
            rows = block[t0 - b0 : t0 - b0 + tc]
            try:
                read((t0, 0, 0, 0), out=rows.reshape(-1).view(np.uint8))
            except (RuntimeError, OSError, KeyError):  # never written: the fill value
                t1 = min(t0 + tc, n)
                rows[: t1 - t0] = betas[t0:t1].reshape(t1 - t0, -1)
        np.take(block[: b1 - b0], mask.flat, axis=1, out=piece[: b1 - b0])
        sink(b0, b1, piece[: b1 - b0])


def _gather_hyperslabs(betas: h5py.Dataset, mask: _MaskIndex, sink) -> None:
    """Any other layout (compressed, odd chunks): bounding-box hyperslabs, a block of trials at a
    time (aligned to the chunks along trials), then the masked voxels."""
    n = betas.shape[0]
    box = mask.bbox_shape
    per_trial = int(np.prod(box)) * betas.dtype.itemsize
    step = max(1, _BLOCK_BYTES // per_trial)
    if betas.chunks is not None:
        tc = betas.chunks[0]
        step = max(tc, step // tc * tc)
    buffer = np.empty((min(step, n), *box), dtype=betas.dtype)
    piece = np.empty((min(step, n), len(mask.flat_bbox)), dtype=betas.dtype)
    for t0 in range(0, n, step):
        t1 = min(t0 + step, n)
        part = buffer[: t1 - t0]
        betas.read_direct(part, np.s_[t0:t1, mask.bbox[0], mask.bbox[1], mask.bbox[2]])
        np.take(part.reshape(t1 - t0, -1), mask.flat_bbox, axis=1, out=piece[: t1 - t0])
        sink(t0, t1, piece[: t1 - t0])


def _gather_hdf5(path: Path, betas: h5py.Dataset, mask: _MaskIndex, sink) -> None:
    """Hand the masked betas to ``sink`` in trial blocks, by the fastest way the layout allows."""
    unfiltered = betas.id.get_create_plist().get_nfilters() == 0
    if betas.chunks is None and unfiltered and _gather_contiguous(path, betas, mask, sink):
        return
    if betas.chunks is not None and unfiltered:
        tc, *spatial = betas.chunks
        if tc >= betas.shape[0] and spatial == [1, 1, 1]:
            return _gather_voxel_chunks(betas, mask, sink)
        if tuple(spatial) == betas.shape[1:]:
            return _gather_volume_chunks(betas, mask, sink)
    return _gather_hyperslabs(betas, mask, sink)


def _read_nifti(path: Path, mask: _MaskIndex) -> np.ndarray:
    """Masked betas of a NIfTI session file (X, Y, Z, trials), in the stored dtype where the file
    is unscaled (NSD's int16), else float32; only the bounding box is decoded."""
    img = nib.load(str(path))
    shape_xyz = mask.shape_zyx[::-1]
    if len(img.shape) != 4 or tuple(img.shape[:3]) != shape_xyz:
        raise InvalidInputError(
            f"betas in {path} have shape {img.shape}; expected ({', '.join(map(str, shape_xyz))}"
            ", trials) = (X, Y, Z, trials) matching the ROI volume."
        )
    bz, by, bx = mask.bbox
    proxy = img.dataobj
    slope = getattr(proxy, "slope", 1.0)
    inter = getattr(proxy, "inter", 0.0)
    if hasattr(proxy, "_get_unscaled") and (slope != 1.0 or inter != 0.0):
        # scaled file: read the stored integers, scale in float32 (not nibabel's float64)
        raw = np.asarray(proxy._get_unscaled((bx, by, bz, slice(None))))
        block = raw.astype(np.float32) * np.float32(slope) + np.float32(inter)
    else:
        block = np.asarray(proxy[bx, by, bz, :])
    block = block.transpose(3, 2, 1, 0)  # (trials, z, y, x) of the bounding box
    return np.take(block.reshape(len(block), -1), mask.flat_bbox, axis=1)


def _to_psc(raw: np.ndarray, out: np.ndarray) -> None:
    """Masked betas in the file's dtype -> float32 ``out``: integers are NSD's psc x 300 (one pass,
    never a float64 copy), floats are taken as they are."""
    if raw.dtype.kind in "iu":
        np.divide(raw, np.float32(300), out=out, dtype=np.float32)
    else:
        out[...] = raw


def _read_session(path: Path, mask: _MaskIndex, out: np.ndarray) -> int:
    """Read one session's masked betas into the first rows of ``out`` (float32, percent signal
    change for NSD's int16 = psc x 300); returns the number of trials read."""
    expected = mask.shape_zyx

    def sink(t0: int, t1: int, piece: np.ndarray) -> None:
        _to_psc(piece, out[t0:t1])

    try:
        if path.suffix in (".hdf5", ".h5"):
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
                if betas.dtype.kind not in "iuf":
                    raise InvalidInputError(
                        f"betas in {path} are {betas.dtype}; expected int16 (psc x 300) or float."
                    )
                n = betas.shape[0]
                if n > len(out):
                    raise InvalidInputError(
                        f"{path} holds {n} trials, more than the {len(out)} of a full session."
                    )
                floating = betas.dtype.kind == "f"
                _gather_hdf5(path, betas, mask, sink)
        else:
            raw = _read_nifti(path, mask)
            n, floating = len(raw), raw.dtype.kind == "f"
            if n > len(out):
                raise InvalidInputError(
                    f"{path} holds {n} trials, more than the {len(out)} of a full session."
                )
            sink(0, n, raw)
    except InvalidInputError:
        raise
    except Exception as err:  # truncated/corrupt files
        raise InvalidInputError(f"cannot read betas file {path}: {err}") from err
    data = out[:n]
    if floating and not np.all(np.isfinite(data)):
        bad = np.unique(np.nonzero(~np.isfinite(data))[1])
        raise InvalidInputError(
            f"betas in {path} have NaN/inf in {len(bad)} masked voxels; expected finite "
            "values (choose a mask that excludes them)."
        )
    return n


def _trial_count(path: Path) -> int:
    """Trials in a session file, from its header only."""
    try:
        if path.suffix in (".hdf5", ".h5"):
            with h5py.File(path, "r") as f:
                if "betas" not in f:
                    raise InvalidInputError(f"{path} has no dataset 'betas'; found {list(f)}.")
                return int(f["betas"].shape[0])
        shape = nib.load(str(path)).shape
    except InvalidInputError:
        raise
    except Exception as err:  # truncated/corrupt files
        raise InvalidInputError(f"cannot read betas file {path}: {err}") from err
    if len(shape) != 4:
        raise InvalidInputError(f"betas in {path} have shape {shape}; expected (X, Y, Z, trials).")
    return int(shape[3])


def read_session_betas(path: str | Path, mask_xyz: np.ndarray) -> np.ndarray:
    """One betas file (an NSD session: ``.hdf5``/``.h5`` (trials, Z, Y, X) or NIfTI
    (X, Y, Z, trials)), masked, with the reader :func:`read_nsd_betas` uses.

    Parameters
    ----------
    path : path
        The betas file.
    mask_xyz : ndarray of bool, shape (X, Y, Z)
        Voxels to keep (in the mask's C order, the project's voxel order).

    Returns
    -------
    ndarray, shape (n_trials, n_voxels), float32
        Percent signal change (NSD's int16 betas divided by 300; float betas as they are), not
        z-scored.
    """
    path = Path(path)
    mask = _MaskIndex.from_mask(np.asarray(mask_xyz, dtype=bool))
    out = np.empty((_trial_count(path), len(mask.zyx)), dtype=np.float32)
    n = _read_session(path, mask, out)
    return out[:n]


@dataclass(frozen=True)
class SessionPresence:
    """Which sessions of a subject a download holds, against a complete download.

    The one session count shared by the readers (NSD betas, MindEye2 shards) and
    ``neurodecode prepare nsd``: one log line, one error for asked-for sessions that are absent.

    Attributes
    ----------
    subject : str
    files : dict of int -> Path
        1-based session -> its file, for the sessions present, sorted.
    n_expected : int
        Sessions of a complete download.
    where : Path
        The folder searched (for messages).
    what : str
        What the files are, for messages (``"sessions"``, ``"MindEye2 train shards"``).
    """

    subject: str
    files: dict[int, Path]
    n_expected: int
    where: Path
    what: str = "sessions"

    @property
    def found(self) -> list[int]:
        """Present sessions, sorted."""
        return sorted(self.files)

    @property
    def missing(self) -> list[int]:
        """Sessions ``1..n_expected`` that are absent."""
        return [s for s in range(1, self.n_expected + 1) if s not in self.files]

    def report(self, log: logging.Logger, extra: str = "") -> None:
        """One line: a warning if sessions are missing, else info."""
        (log.warning if self.missing else log.info)(
            "%s: %d of %d %s found in %s (sessions found: %s; missing: %s)%s.",
            self.subject,
            len(self.files),
            self.n_expected,
            self.what,
            self.where,
            _ranges(self.found),
            _ranges(self.missing),
            extra,
        )

    def choose(self, sessions: list[int] | None, expected: Callable[[list[int]], str]) -> list[int]:
        """``sessions`` (all present ones if ``None``), refusing any that is absent;
        ``expected(absent)`` says which files were looked for (in the error)."""
        if sessions is None:
            return self.found
        chosen = [int(s) for s in sessions]
        absent = [s for s in chosen if s not in self.files]
        if absent:
            raise InvalidInputError(
                f"sessions {absent} of {self.subject} not found: expected {expected(absent)}; present "
                f"sessions: {_ranges(self.found)}."
            )
        return chosen


def session_presence(
    root: str | Path,
    subject: str,
    design: NSDDesign | None = None,
    trials_per_session: int | None = None,
    sessions: list[int] | None = None,
) -> tuple[SessionPresence, int]:
    """The NSD betas sessions of ``subject`` under ``root``, against a complete download.

    Parameters
    ----------
    root, subject
        As for :func:`read_nsd_betas`.
    design : NSDDesign, optional
        Read from ``root`` if not given.
    trials_per_session : int, optional
        Trials in a full session; by default the largest trial count among the files of
        ``sessions`` (all present ones if ``None``) and the first present file (headers only).
    sessions : list of int, optional
        The sessions about to be read (only for inferring ``trials_per_session``).

    Returns
    -------
    presence : SessionPresence
        Present files and :func:`expected_sessions`'s count.
    trials_per_session : int

    Raises
    ------
    InvalidInputError
        No betas folder or files, or files numbered past the design.
    """
    design = read_design(root) if design is None else design
    available = session_files(root, subject)
    folder = available[next(iter(available))].parent
    if trials_per_session is None:
        probe = set(available) if sessions is None else {next(iter(available)), *sessions}
        trials_per_session = max(_trial_count(available[s]) for s in probe if s in available)
    n_expected = expected_sessions(subject, design, trials_per_session)
    beyond = [s for s in available if s > n_expected]
    if beyond:
        names = ", ".join(available[s].name for s in beyond)
        raise InvalidInputError(
            f"{names} in {folder} are past the design: it holds {n_expected} sessions for "
            f"{subject} ({len(design.masterordering)} trials of {trials_per_session})."
        )
    return SessionPresence(subject, available, n_expected, folder), trials_per_session


def missing_sessions(root: str | Path, subject: str) -> tuple[list[int], int]:
    """Sessions of ``subject`` that a complete download has but ``root`` lacks.

    Returns
    -------
    missing : list of int
        1-based session numbers absent from the betas folder.
    n_expected : int
        Sessions of a complete download (:func:`session_presence`).
    """
    presence, _ = session_presence(root, subject)
    return presence.missing, presence.n_expected


def _ranges(numbers: list[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` -> ``"1-3, 5, 7-8"`` (for one-line logs)."""
    if not numbers:
        return "none"
    parts, start, prev = [], numbers[0], numbers[0]
    for k in [*numbers[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if k is not None:
            start = prev = k
    return ", ".join(parts)


def expected_sessions(subject: str, design: NSDDesign, trials_per_session: int) -> int:
    """Sessions a complete download of ``subject`` has: NSD's published counts (40, 40, 32, 30,
    40, 32, 40, 30) for NSD's own design (30,000 trials of 750 a session), else as many sessions
    as the design's trials fill."""
    n_design = len(design.masterordering)
    index = subject_index(subject)
    if trials_per_session == NSD_TRIALS_PER_SESSION and n_design == 30000 and index < 8:
        return NSD_SESSIONS[index]
    return math.ceil(n_design / trials_per_session)


def _design_repeats(design: NSDDesign, s_index: int, n_trials: int) -> np.ndarray:
    """0-based presentation number of each of the first ``n_trials`` design trials' image (the
    design's count, so that a partial download keeps each trial's true repeat index)."""
    ids = design.image_ids(s_index, np.arange(n_trials))
    order = np.lexsort((np.arange(n_trials), ids))
    sorted_ids = ids[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_ids))[0] + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, n_trials]))
    repeat = np.empty(n_trials, dtype=np.int64)
    repeat[order] = np.arange(n_trials) - run_start
    return repeat


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

    Accepts NSD as people download it: the betas folder with some sessions missing (the present
    ones are read, and one log line says which were found and which are missing, against NSD's
    published session counts), ROI masks with or without their label tables (see
    :mod:`neurodecode.data.rois`: a binary ``nsdgeneral.nii.gz`` needs none), HDF5 in NSD's own
    chunking (one chunk per voxel) or any other, or NIfTI. Session files are read and z-scored one
    at a time into one float32 (n_trials, n_voxels) buffer: the peak memory is that buffer plus
    one session's masked trials (about 2 GB for all 40 sessions of subj01's 15,724 nsdgeneral
    voxels).

    Parameters
    ----------
    root : path
        The NSD root (holding ``nsddata/`` and ``nsddata_betas/``).
    subject : str
        ``"subj01"`` ...
    sessions : list of int, optional
        1-based sessions; all present ones by default (missing ones are logged). Asking for a
        session that is not there is an error.
    roi : str or ROIVolume
        ROI file name under ``roi/`` (``"nsdgeneral"``, ``"floc-faces"``, ...) or a loaded volume.
    roi_labels : str or list of str, optional
        Label names within the ROI file (from its .ctab); all positive labels by default.
    zscore : bool
        Z-score each voxel within each session; otherwise percent signal change.
    trials_per_session : int, optional
        Trials in a full session; inferred as the largest file's trial count (750 in NSD).

    Returns
    -------
    TrialSet
        data (n_trials, n_voxels) float32 in session-z-scored units (or percent signal change);
        only the present sessions' trials, each with its design trial number (``info["trial"]``)
        and its true repeat index in the design. ``info`` also has ``voxel_ijk``
        ((n_voxels, 3) (x, y, z)), ``affine``, ``roi``, ``units``, ``sessions_found`` and
        ``sessions_missing``.
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
    index = _MaskIndex.from_mask(mask_xyz)

    presence, trials_per_session = session_presence(
        root, subject, design, trials_per_session, sessions
    )
    available, missing_all = presence.files, presence.missing
    if sessions is None:
        presence.report(logger, f"; reading {len(available)} sessions")
    sessions = presence.choose(sessions, lambda _: f"betas_sessionNN.hdf5 in {presence.where}")

    if not sessions:
        raise InvalidInputError(f"sessions=[] for {subject}: no session to read.")
    # one preallocated buffer (sessions are at most trials_per_session long): no concatenation;
    # each session is z-scored in place as soon as it is read
    buffer = np.empty((len(sessions) * trials_per_session, len(index.flat)), dtype=np.float32)
    n_read = 0
    session_col, trial_col = [], []
    for sess in tqdm(sessions, desc=f"{subject} betas", disable=not progress, leave=False):
        n = _read_session(available[sess], index, buffer[n_read:])
        start = (sess - 1) * trials_per_session
        if start + n > len(design.masterordering):
            raise InvalidInputError(
                f"{available[sess]} has {n} trials, past the design's "
                f"{len(design.masterordering)} trials."
            )
        if zscore:
            rows = slice(n_read, n_read + n)
            buffer[rows] = zscore_sessions(buffer[rows], np.full(n, sess))
        n_read += n
        session_col.append(np.full(n, sess))
        trial_col.append(np.arange(start, start + n))
    data = buffer[:n_read]
    session = np.concatenate(session_col)
    trials = np.concatenate(trial_col)
    ids = design.image_ids(s_index, trials)
    repeat = _design_repeats(design, s_index, int(trials.max()) + 1)[trials]
    split = np.where(np.isin(ids, design.sharedix), "test", "train")
    return TrialSet(
        data=data,
        subject=np.full(len(data), subject),
        session=session,
        stimulus_id=ids,
        repeat=repeat,
        split=split,
        info={
            "voxel_ijk": voxel_coordinates(mask_xyz),
            "affine": volume.affine,
            "roi": volume.name if roi_labels is None else f"{volume.name}:{roi_labels}",
            "units": "session z-score" if zscore else "percent signal change",
            "trial": trials,
            "sessions_found": list(available),
            "sessions_missing": missing_all,
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
