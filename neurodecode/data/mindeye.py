"""MindEye's preprocessed NSD releases, read into :class:`~neurodecode.data.trials.TrialSet`.

Two releases, with the schemas read from the code that writes and reads them:

**MindEye2** (Scotti et al. 2024, ICML; Hugging Face ``pscotti/mindeyev2``), under ``root``:

- ``betas_all_subjNN_fp32_renorm.hdf5``: dataset ``betas`` (n_trials, n_voxels) float32, one row
  per trial of all the subject's sessions (30,000 x 15,724 for subj01), already z-scored per session
  by MindEye; columns are subjNN's nsdgeneral voxels in C order over (x, y, z), the order
  :func:`~neurodecode.data.nsd.read_nsd_betas` uses (MindEyeV2 ``src/dataset_creation.ipynb`` masks
  ``nsd_access``'s (X, Y, Z, trials) NIfTI betas flattened in C order). MindEye's loaders cast it
  to float16; here it stays float32.
- ``wds/subjNN/train/K.tar`` (K = session - 1: the session's non-shared trials),
  ``wds/subjNN/test/0.tar`` and ``wds/subjNN/new_test/0.tar`` (shared-image trials): webdataset
  shards, members ``sampleNNNNNNNNN.behav.npy`` (1, 17) float64, ``.past_behav.npy`` and
  ``.future_behav.npy`` (15, 17), ``.olds_behav.npy`` (3, 17); -1 where empty. ``behav`` columns
  (:data:`MINDEYE2_BEHAV_COLUMNS`, from ``src/dataset_creation.ipynb``): 0 the 73k image id
  (0-based), 1 subject (1-based), 2 session (1-based), 3 run, 4 trial in the run, 5 the global
  trial ``(session - 1) * 750 + trial in session`` = the row of ``betas``, ..., 16 shared1000 (0/1).
  ``olds_behav`` holds the same columns for the image's other presentations. ``Train.py`` uses
  ``behav[:, 0, 0]`` to index images and ``behav[:, 0, 5]`` to index betas.
- ``coco_images_224_float16.hdf5``: dataset ``images`` (73000, 3, 224, 224) float16 in [0, 1],
  row = 73k id; read through :func:`neurodecode.data.stimuli.open_stimuli`.

Test sets: ``new_test`` is all trials of the **shared 1000** images (3,000 trials for subj01/02/05/
07; what MindEye2 reports on); ``test`` is the older shard from before NSD's last sessions were
released (2,770 trials for subj01), the test set of MindEye1 and earlier papers, **982** images.

**MindEye1** (Scotti et al. 2023, NeurIPS; ``fMRI-reconstruction-NSD``, Hugging Face
``pscotti/naturalscenesdataset``), under ``root/webdataset_avg_split/``:

- ``train/train_subjNN_{0..17}.tar``, ``val/val_subjNN_0.tar``, ``test/test_subjNN_{0..1}.tar``:
  one sample per image, members ``KEY.nsdgeneral.npy`` (3, n_voxels) (the image's 3 repeats, float16),
  ``KEY.jpg`` (the image), ``KEY.coco73k.npy`` (1,) (73k id), ``KEY.trial.npy`` (1,) and
  ``KEY.num_uniques.npy`` (1,) (how many of the 3 rows are real repeats; MindEye's writers fill
  the rest with copies or their mean). All five are required: ``utils.get_dataloaders`` renames
  exactly these keys (``images="jpg;png"``, ``voxels``, ``trial``, ``coco``, ``reps``) for every
  sample. MindEye1 trains on ``train`` + ``val`` (8,559 + 300 images) and tests on ``test``: the
  **982** shared images, repeats averaged (``torch.mean(voxel, axis=1)``).

Here every real repeat is one trial (``repeat`` 0..num_uniques-1; the padding rows are skipped and
counted in the log), so :meth:`TrialSet.average_repeats` gives MindEye's averages exactly. MindEye1
shards do not say which session each repeat came from: ``session`` is 0 ("unknown") there.

Every shard is checked (truncated tars, missing members, dtypes, shapes, indices past the betas or
images, voxel counts) and every problem is one :class:`InvalidInputError` naming the file and
what was expected. Unused members (``past_behav.npy`` ...) are skipped and counted in the log.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from neurodecode.data.nsd import NSD_SESSIONS, SessionPresence, _ranges, roi_path, subject_index
from neurodecode.data.rois import read_roi_volume, voxel_coordinates
from neurodecode.data.trials import TrialSet
from neurodecode.validation import InvalidInputError

logger = logging.getLogger(__name__)

MINDEYE2_BEHAV_COLUMNS = (
    "cocoidx",
    "subject",
    "session",
    "run",
    "trial",
    "global_trial",
    "time",
    "isold",
    "iscorrect",
    "rt",
    "changemind",
    "isoldcurrent",
    "iscorrectcurrent",
    "total1",
    "total2",
    "button",
    "shared1000",
)
# subj01..08 nsdgeneral voxels: the column count of both releases (MindEye1 Train_MindEye.py)
NSDGENERAL_VOXELS = (15724, 14278, 15226, 13153, 13039, 17907, 12682, 14386)
N_IMAGES_73K = 73000
MINDEYE2_BETAS = "betas_all_{subject}_fp32_renorm.hdf5"
MINDEYE2_IMAGES = "coco_images_224_float16.hdf5"
MINDEYE2_SPLITS = ("train", "test", "new_test")
MINDEYE1_SPLITS = ("train", "val", "test")
MINDEYE1_FOLDER = "webdataset_avg_split"
_COL = {name: k for k, name in enumerate(MINDEYE2_BEHAV_COLUMNS)}
_SHARD_NUMBER = re.compile(r"(\d+)\.tar")


# ----------------------------------------------------------------------------- tar shards


@dataclass
class ShardMember:
    """Where one member's bytes are inside a shard (for lazy reads)."""

    shard: Path
    name: str
    offset: int
    size: int


def _split_name(name: str) -> tuple[str, str]:
    """webdataset's rule: the key is the path up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return "", ""
    return (f"{folder}/{stem}" if folder else stem), ext


def iter_shard(path: Path, wanted: set[str], ignored: Counter | None = None):
    """Yield ``(key, {ext: bytes})`` for each sample of a webdataset tar shard, reading only the
    members whose extension is in ``wanted`` (the others are counted in ``ignored``).

    Raises :class:`InvalidInputError` for an unreadable or truncated shard (a member running past
    the end of the file, or no end-of-archive blocks), a member without an extension and a sample
    key that comes back after other samples.
    """
    size = path.stat().st_size
    seen: set[str] = set()
    key, sample = None, {}
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.offset_data + member.size > size:
                    raise InvalidInputError(
                        f"tar shard {path} is truncated: member {member.name} needs bytes "
                        f"{member.offset_data}..{member.offset_data + member.size} of a "
                        f"{size}-byte file (an interrupted download?)."
                    )
                k, ext = _split_name(member.name)
                if not k:
                    raise InvalidInputError(
                        f"tar shard {path}: member {member.name!r} has no 'KEY.ext' name; "
                        "expected webdataset naming like 'sample000000001.behav.npy'."
                    )
                if k != key:
                    if key is not None:
                        yield key, sample
                    if k in seen:
                        raise InvalidInputError(
                            f"tar shard {path}: sample {k!r} comes back after other samples; "
                            "expected each sample's members to be consecutive."
                        )
                    seen.add(k)
                    key, sample = k, {}
                if ext not in wanted:
                    if ignored is not None:
                        ignored[ext] += 1
                    continue
                if ext in sample:
                    raise InvalidInputError(f"tar shard {path}: sample {k!r} has two {ext!r}.")
                sample[ext] = tar.extractfile(member).read()
            end = tar.offset
        with open(path, "rb") as raw:
            raw.seek(end)
            tail = raw.read(1024)
    except InvalidInputError:
        raise
    except (tarfile.TarError, OSError, EOFError) as err:
        raise InvalidInputError(f"cannot read tar shard {path}: {err}") from err
    if len(tail) < 1024 or any(tail):
        raise InvalidInputError(
            f"tar shard {path} is truncated: no end-of-archive blocks after byte {end} of {size} "
            "(an interrupted download?)."
        )
    if key is not None:
        yield key, sample


def _npy(path: Path, key: str, ext: str, payload: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(payload), allow_pickle=False)
    except Exception as err:
        raise InvalidInputError(
            f"tar shard {path}: {key}.{ext} is not a readable .npy array ({err})."
        ) from err


def _require(path: Path, key: str, sample: dict, exts: tuple[str, ...]) -> None:
    missing = [e for e in exts if e not in sample]
    if missing:
        raise InvalidInputError(
            f"tar shard {path}: sample {key!r} lacks {missing}; expected members "
            f"{[f'{key}.{e}' for e in exts]}."
        )


def _integral(path: Path, what: str, values: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``values`` as int64 if all are whole numbers in [lo, hi)."""
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise InvalidInputError(f"{path}: {what} has non-integer values; expected integers.")
    out = values.astype(np.int64)
    bad = out[(out < lo) | (out >= hi)]
    if bad.size:
        raise InvalidInputError(
            f"{path}: {what} has {bad.size} values outside {lo}..{hi - 1} (e.g. {bad[:3].tolist()})."
        )
    return out


def _expected_voxels(subject: str, n_voxels: int | None) -> int:
    if n_voxels is not None:
        return int(n_voxels)
    index = subject_index(subject)
    if index >= len(NSDGENERAL_VOXELS):
        raise InvalidInputError(
            f"subject={subject!r} is not one of NSD's 8; pass n_voxels= to say how many voxels "
            "its release has."
        )
    return NSDGENERAL_VOXELS[index]


def _nsdgeneral_ijk(nsd_root: str | Path | None, subject: str, n_voxels: int) -> dict:
    """``{"voxel_ijk": ..., "affine": ...}`` of the subject's nsdgeneral mask, if an NSD root is
    given (the releases' voxel order is the mask's C order over (x, y, z))."""
    if nsd_root is None:
        return {}
    volume = read_roi_volume(roi_path(nsd_root, subject, "nsdgeneral"), subject)
    ijk = voxel_coordinates(volume.mask())
    if len(ijk) != n_voxels:
        raise InvalidInputError(
            f"{volume.path} has {len(ijk)} nsdgeneral voxels; the MindEye release has {n_voxels} "
            "columns: not the same mask."
        )
    return {"voxel_ijk": ijk, "affine": volume.affine}


def _repeat_by_order(stimulus: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """0-based presentation number of each trial's image, by ``order_key`` (trial number)."""
    order = np.lexsort((order_key, stimulus))
    sorted_ids = stimulus[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_ids))[0] + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(stimulus)]))
    repeat = np.empty(len(stimulus), dtype=np.int64)
    repeat[order] = np.arange(len(stimulus)) - run_start
    return repeat


def _shard_listing(folder: Path, pattern: re.Pattern) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        match = pattern.fullmatch(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


# ----------------------------------------------------------------------------- MindEye2


def _check_images_file(path: Path) -> int:
    """Rows of a MindEye2 ``coco_images_224_float16.hdf5`` (``images`` (N, 3, H, W) float)."""
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f:
                raise InvalidInputError(f"{path} has no dataset 'images'; found {list(f)}.")
            shape, dtype = f["images"].shape, f["images"].dtype
    except InvalidInputError:
        raise
    except OSError as err:
        raise InvalidInputError(f"{path} is not a readable HDF5 file ({err}).") from err
    if len(shape) != 4 or shape[1] != 3 or dtype.kind != "f":
        raise InvalidInputError(
            f"images in {path} have shape {shape} and dtype {dtype}; expected (73000, 3, 224, 224) "
            "float16 in [0, 1]."
        )
    return int(shape[0])


def _read_rows(path: Path, dataset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` as float32, read in contiguous blocks (h5py's fancy indexing is slow)."""
    out = np.empty((len(rows), dataset.shape[1]), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    block = max(1, (64 * 2**20) // max(1, dataset.shape[1] * dataset.dtype.itemsize))
    i = 0
    while i < len(sorted_rows):
        start = int(sorted_rows[i])
        stop = min(start + block, dataset.shape[0])
        j = int(np.searchsorted(sorted_rows, stop, side="left"))
        chunk = dataset[start:stop]
        out[order[i:j]] = chunk[sorted_rows[i:j] - start]
        i = j
    if not np.all(np.isfinite(out)):
        raise InvalidInputError(f"betas in {path} have NaN/inf in the trials read.")
    return out


def read_mindeye2(
    root: str | Path,
    subject: str = "subj01",
    splits: tuple[str, ...] | list[str] = ("train", "new_test"),
    sessions: list[int] | None = None,
    n_voxels: int | None = None,
    nsd_root: str | Path | None = None,
) -> TrialSet:
    """Read MindEye2's release of one subject (see the module docstring for the layout).

    Parameters
    ----------
    root : path
        The release folder (holding ``betas_all_subjNN_fp32_renorm.hdf5`` and ``wds/``).
    subject : str
        ``"subj01"`` ...
    splits : sequence of {"train", "new_test", "test"}
        Which shards: ``train`` (``wds/subjNN/train/K.tar``, one per session) and one test set:
        ``new_test`` (the shared 1000 images, MindEye2's test set) or ``test`` (the older 982-image
        shard of MindEye1 and earlier papers). Not both: they hold the same trials.
    sessions : list of int, optional
        1-based sessions of the ``train`` shards (all present ones by default; missing shards are
        logged in one line). Test shards hold every session's shared trials.
    n_voxels : int, optional
        Expected columns of ``betas``; NSD's nsdgeneral count for the subject by default (15,724
        for subj01).
    nsd_root : path, optional
        An NSD root whose ``nsdgeneral.nii.gz`` gives ``info["voxel_ijk"]`` (checked to have the
        same voxel count).

    Returns
    -------
    TrialSet
        One row per trial: data float32 (MindEye2's per-session z-scored betas), ``stimulus_id``
        the 73k id, ``session`` from ``behav``, ``repeat`` the presentation number in the whole
        experiment (from ``olds_behav`` when present), ``split`` "test" for shared1000 trials.
        ``info``: ``trial`` (global trial = betas row), ``units``, ``test_set``, ``betas_file``,
        ``shards``, ``sessions_found``, ``sessions_missing``.
    """
    root = Path(root)
    splits = tuple(splits)
    bad = [s for s in splits if s not in MINDEYE2_SPLITS]
    if bad or not splits:
        raise InvalidInputError(
            f"splits={splits!r} is not valid; expected some of {MINDEYE2_SPLITS}."
        )
    if "test" in splits and "new_test" in splits:
        raise InvalidInputError(
            "splits has both 'test' and 'new_test': they hold the same shared-image trials "
            "(new_test: all 1000 shared images; test: the older 982-image subset). Choose one."
        )
    s_number = subject_index(subject) + 1
    expected_voxels = _expected_voxels(subject, n_voxels)
    betas_path = root / MINDEYE2_BETAS.format(subject=subject)
    wds = root / "wds" / subject

    shards: list[tuple[str, int | None, Path]] = []  # (split, session or None, path)
    found: list[int] = []
    missing_sessions: list[int] = []
    if "train" in splits:
        listing = _shard_listing(wds / "train", _SHARD_NUMBER)
        present = {k + 1: p for k, p in listing.items()}
        if not present:
            raise InvalidInputError(
                f"no MindEye2 train shards for {subject}: expected K.tar files (K = session - 1) "
                f"in {wds / 'train'}."
            )
        n_expected = NSD_SESSIONS[s_number - 1] if s_number <= len(NSD_SESSIONS) else max(present)
        presence = SessionPresence(
            subject, present, n_expected, wds / "train", "MindEye2 train shards"
        )
        found, missing_sessions = presence.found, presence.missing
        if sessions is None:
            presence.report(logger)
        chosen = presence.choose(
            sessions,
            lambda absent: (
                "MindEye2 train shards "
                + str([str(wds / "train" / f"{s - 1}.tar") for s in absent])
            ),
        )
        shards += [("train", s, present[s]) for s in chosen]
    for split in ("new_test", "test"):
        if split in splits:
            path = wds / split / "0.tar"
            if not path.is_file():
                raise InvalidInputError(f"MindEye2 {split} shard not found: expected {path}.")
            shards.append((split, None, path))
    if not shards:
        raise InvalidInputError(
            f"no MindEye2 shards for {subject}: expected wds/{subject}/train/K.tar (K = session - "
            f"1) under {root}."
        )
    if not betas_path.is_file():
        raise InvalidInputError(f"MindEye2 betas not found: expected a file at {betas_path}.")

    ignored: Counter = Counter()
    behav_rows, olds_rows, shard_of, split_of = [], [], [], []
    for split, session, path in shards:
        n_before = len(behav_rows)
        for key, sample in iter_shard(path, {"behav.npy", "olds_behav.npy"}, ignored):
            _require(path, key, sample, ("behav.npy",))
            behav = _npy(path, key, "behav.npy", sample["behav.npy"])
            if behav.shape != (1, 17) or behav.dtype.kind not in "fiu":
                raise InvalidInputError(
                    f"tar shard {path}: {key}.behav.npy is {behav.dtype} {behav.shape}; expected "
                    "(1, 17) float64 (MindEye2's behav columns)."
                )
            olds = None
            if "olds_behav.npy" in sample:
                olds = _npy(path, key, "olds_behav.npy", sample["olds_behav.npy"])
                if olds.shape != (3, 17) or olds.dtype.kind not in "fiu":
                    raise InvalidInputError(
                        f"tar shard {path}: {key}.olds_behav.npy is {olds.dtype} {olds.shape}; "
                        "expected (3, 17) float64."
                    )
            behav_rows.append(behav[0].astype(np.float64))
            olds_rows.append(olds)
            shard_of.append(str(path))
            split_of.append(split)
        n_samples = len(behav_rows) - n_before
        if n_samples == 0:
            raise InvalidInputError(f"tar shard {path} holds no samples; expected behav.npy ones.")
        # per-shard schema checks (the column meanings of src/dataset_creation.ipynb)
        block = np.asarray(behav_rows[n_before:])
        subj_col = _integral(path, "behav subject (column 1)", block[:, 1], 1, 9)
        if np.any(subj_col != s_number):
            raise InvalidInputError(
                f"tar shard {path} holds subject {sorted(set(subj_col.tolist()))} trials; "
                f"expected {subject}."
            )
        sess_col = _integral(path, "behav session (column 2)", block[:, 2], 1, 41)
        if session is not None and np.any(sess_col != session):
            raise InvalidInputError(
                f"tar shard {path} holds sessions {sorted(set(sess_col.tolist()))}; expected "
                f"only session {session} (train shard K.tar = session K + 1)."
            )
        shared = _integral(path, "behav shared1000 (column 16)", block[:, 16], 0, 2)
        want = 0 if split == "train" else 1
        if np.any(shared != want):
            raise InvalidInputError(
                f"tar shard {path} ({split}) has {int((shared != want).sum())} trials with "
                f"shared1000 = {1 - want}; expected {want} for every {split} trial."
            )
    if ignored:
        logger.info(
            "%s: MindEye2 shard members not used: %s",
            subject,
            ", ".join(f"{n} x {ext}" for ext, n in sorted(ignored.items())),
        )
    behav = np.asarray(behav_rows)
    shard_of_arr = np.asarray(shard_of)

    try:
        with h5py.File(betas_path, "r") as f:
            if "betas" not in f:
                raise InvalidInputError(f"{betas_path} has no dataset 'betas'; found {list(f)}.")
            dset = f["betas"]
            if dset.ndim != 2 or dset.dtype.kind != "f":
                raise InvalidInputError(
                    f"betas in {betas_path} are {dset.dtype} {dset.shape}; expected (n_trials, "
                    "n_voxels) float32."
                )
            if dset.shape[1] != expected_voxels:
                raise InvalidInputError(
                    f"betas in {betas_path} have {dset.shape[1]} voxels; expected "
                    f"{expected_voxels} (nsdgeneral of {subject}; pass n_voxels= for another "
                    "count)."
                )
            n_rows = dset.shape[0]
            rows = np.empty(len(behav), dtype=np.int64)
            for path in dict.fromkeys(shard_of):
                sel = shard_of_arr == path
                rows[sel] = _integral(
                    Path(path),
                    f"behav global_trial (column 5, the row of {betas_path.name})",
                    behav[sel, 5],
                    0,
                    n_rows,
                )
            unique, counts = np.unique(rows, return_counts=True)
            if np.any(counts > 1):
                dup = unique[counts > 1][0]
                where = sorted({shard_of[k] for k in np.nonzero(rows == dup)[0]})
                raise InvalidInputError(
                    f"trial {dup} (betas row) appears {counts[counts > 1][0]} times, in {where}; "
                    "expected each trial once."
                )
            data = _read_rows(betas_path, dset, rows)
    except InvalidInputError:
        raise
    except OSError as err:
        raise InvalidInputError(f"cannot read MindEye2 betas {betas_path}: {err}") from err

    images_path = root / MINDEYE2_IMAGES
    n_images = _check_images_file(images_path) if images_path.is_file() else N_IMAGES_73K
    ids = np.empty(len(behav), dtype=np.int64)
    for path in dict.fromkeys(shard_of):
        sel = shard_of_arr == path
        what = (
            f"behav image id (column 0; rows of {images_path})"
            if images_path.is_file()
            else "behav image id (column 0, NSD's 73k id)"
        )
        ids[sel] = _integral(Path(path), what, behav[sel, 0], 0, n_images)
    session = behav[:, 2].astype(np.int64)
    if all(o is not None for o in olds_rows):
        olds = np.stack(olds_rows)[:, :, 5]  # other presentations' global trials, -1 if none
        repeat = ((olds >= 0) & (olds < rows[:, None])).sum(axis=1).astype(np.int64)
    else:
        repeat = _repeat_by_order(ids, rows)
    split = np.where(behav[:, 16] == 1, "test", "train")
    test_set = next((s for s in ("new_test", "test") if s in splits), None)
    return TrialSet(
        data=data,
        subject=np.full(len(data), subject),
        session=session,
        stimulus_id=ids,
        repeat=repeat,
        split=split,
        info={
            "units": "session z-score (MindEye2 release)",
            "roi": "nsdgeneral",
            "trial": rows,
            "mindeye_split": np.asarray(split_of),
            "test_set": {
                "new_test": "shared 1000 images (MindEye2)",
                "test": "982 shared images (MindEye1 and earlier)",
                None: None,
            }[test_set],
            "betas_file": str(betas_path),
            "shards": [str(p) for _, _, p in shards],
            "sessions_found": found,
            "sessions_missing": missing_sessions,
            **_nsdgeneral_ijk(nsd_root, subject, data.shape[1]),
        },
    )


# ----------------------------------------------------------------------------- MindEye1


def _mindeye1_folder(root: str | Path) -> Path:
    root = Path(root)
    return (
        root
        if root.name == MINDEYE1_FOLDER or not (root / MINDEYE1_FOLDER).is_dir()
        else (root / MINDEYE1_FOLDER)
    )


def _mindeye1_shards(folder: Path, subject: str, split: str) -> dict[int, Path]:
    pattern = re.compile(rf"{split}_{re.escape(subject)}_(\d+)\.tar")
    return _shard_listing(folder / split, pattern)


def read_mindeye1(
    root: str | Path,
    subject: str = "subj01",
    splits: tuple[str, ...] | list[str] = MINDEYE1_SPLITS,
    n_voxels: int | None = None,
    nsd_root: str | Path | None = None,
) -> TrialSet:
    """Read MindEye1's webdataset shards of one subject (see the module docstring).

    Parameters
    ----------
    root : path
        ``webdataset_avg_split/`` or the folder holding it.
    subject : str
        ``"subj01"`` ... (MindEye1 released subj01, 02, 05, 07).
    splits : sequence of {"train", "val", "test"}
        ``train`` and ``val`` (MindEye1 trains on both) give ``split="train"`` trials, ``test``
        (the 982 shared images) ``split="test"``; ``info["mindeye_split"]`` keeps the shard's name.
    n_voxels : int, optional
        Expected voxels; NSD's nsdgeneral count for the subject by default.
    nsd_root : path, optional
        An NSD root whose ``nsdgeneral.nii.gz`` gives ``info["voxel_ijk"]``.

    Returns
    -------
    TrialSet
        One row per real repeat (``repeat`` 0..num_uniques-1), data float32 (MindEye's z-scored
        betas), ``stimulus_id`` the 73k id, ``session`` 0 (the shards do not record it).
        ``info["trial_npy"]`` keeps each sample's ``trial.npy`` value, ``info["shards"]`` the files.
    """
    folder = _mindeye1_folder(root)
    splits = tuple(splits)
    bad = [s for s in splits if s not in MINDEYE1_SPLITS]
    if bad or not splits:
        raise InvalidInputError(
            f"splits={splits!r} is not valid; expected some of {MINDEYE1_SPLITS}."
        )
    expected_voxels = _expected_voxels(subject, n_voxels)
    shards: list[tuple[str, Path]] = []
    for split in splits:
        listing = _mindeye1_shards(folder, subject, split)
        if not listing:
            raise InvalidInputError(
                f"no MindEye1 {split} shards for {subject}: expected {split}_{subject}_K.tar in "
                f"{folder / split}."
            )
        gaps = [k for k in range(max(listing) + 1) if k not in listing]
        (logger.warning if gaps else logger.info)(
            "%s: %d MindEye1 %s shards found in %s (numbers found: %s; missing: %s).",
            subject,
            len(listing),
            split,
            folder / split,
            _ranges(list(listing)),
            _ranges(gaps),
        )
        shards += [(split, p) for p in listing.values()]

    wanted = ("nsdgeneral.npy", "coco73k.npy", "trial.npy", "num_uniques.npy")
    ignored: Counter = Counter()
    blocks, ids, reps, trial_npy, split_of, padding = [], [], [], [], [], 0
    for split, path in shards:
        n_before = len(ids)
        for key, sample in iter_shard(path, {*wanted, "jpg", "png"}, ignored):
            _require(path, key, sample, wanted)
            if "jpg" not in sample and "png" not in sample:
                raise InvalidInputError(
                    f"tar shard {path}: sample {key!r} has no image; expected {key}.jpg (or .png)."
                )
            vox = _npy(path, key, "nsdgeneral.npy", sample["nsdgeneral.npy"])
            if vox.ndim != 2 or vox.shape[0] != 3 or vox.dtype.kind != "f":
                raise InvalidInputError(
                    f"tar shard {path}: {key}.nsdgeneral.npy is {vox.dtype} {vox.shape}; expected "
                    f"(3, {expected_voxels}) float16 (3 repeats x voxels)."
                )
            if vox.shape[1] != expected_voxels:
                raise InvalidInputError(
                    f"tar shard {path}: {key}.nsdgeneral.npy has {vox.shape[1]} voxels; expected "
                    f"{expected_voxels} (nsdgeneral of {subject}; pass n_voxels= for another "
                    "count)."
                )
            scalars = {}
            for ext in ("coco73k.npy", "trial.npy", "num_uniques.npy"):
                value = _npy(path, key, ext, sample[ext])
                if value.size != 1 or value.dtype.kind not in "fiu":
                    raise InvalidInputError(
                        f"tar shard {path}: {key}.{ext} is {value.dtype} {value.shape}; expected "
                        "one integer, shape (1,)."
                    )
                scalars[ext] = value.reshape(1).astype(np.float64)
            coco = _integral(path, f"{key}.coco73k.npy", scalars["coco73k.npy"], 0, N_IMAGES_73K)
            reps_npy = scalars["num_uniques.npy"]
            n_rep = int(_integral(path, f"{key}.num_uniques.npy", reps_npy, 1, 4)[0])
            trial = _integral(path, f"{key}.trial.npy", scalars["trial.npy"], 0, 2**31)
            if not np.all(np.isfinite(vox[:n_rep])):
                raise InvalidInputError(f"tar shard {path}: {key}.nsdgeneral.npy has NaN/inf.")
            blocks.append(vox[:n_rep].astype(np.float32))
            ids += [int(coco[0])] * n_rep
            reps += list(range(n_rep))
            trial_npy += [int(trial[0])] * n_rep
            split_of += [split] * n_rep
            padding += 3 - n_rep
        if len(ids) == n_before:
            raise InvalidInputError(f"tar shard {path} holds no samples.")
    logger.info(
        "%s: %d MindEye1 trials (%d images); skipped %d padding rows of images with fewer than "
        "3 repeats%s.",
        subject,
        len(ids),
        len(blocks),
        padding,
        ("; members not used: " + ", ".join(f"{n} x {e}" for e, n in sorted(ignored.items())))
        if ignored
        else "",
    )
    data = np.concatenate(blocks)
    split_arr = np.asarray(split_of)
    return TrialSet(
        data=data,
        subject=np.full(len(data), subject),
        session=np.zeros(len(data), dtype=np.int64),
        stimulus_id=np.asarray(ids, dtype=np.int64),
        repeat=np.asarray(reps, dtype=np.int64),
        split=np.where(split_arr == "test", "test", "train"),
        info={
            "units": "session z-score (MindEye1 release)",
            "roi": "nsdgeneral",
            "mindeye_split": split_arr,
            "trial_npy": np.asarray(trial_npy, dtype=np.int64),
            "test_set": "982 shared images (MindEye1)" if "test" in splits else None,
            "shards": [str(p) for _, p in shards],
            **_nsdgeneral_ijk(nsd_root, subject, data.shape[1]),
        },
    )


def index_mindeye1_images(root: str | Path) -> dict[str, ShardMember]:
    """``{73k id (str): where its image is}`` over every MindEye1 shard under ``root`` (all
    subjects and splits; the first shard holding an id wins). Only tar headers and the small
    ``coco73k.npy`` members are read."""
    folder = _mindeye1_folder(root)
    members: dict[str, ShardMember] = {}
    paths = sorted(
        p
        for split in MINDEYE1_SPLITS
        if (folder / split).is_dir()
        for p in (folder / split).glob("*.tar")
    )
    if not paths:
        raise InvalidInputError(
            f"no MindEye1 shards under {folder}: expected train/, val/, test/ with *.tar files."
        )
    for path in paths:
        images: dict[str, tuple[int, int, str]] = {}
        try:
            with tarfile.open(path, mode="r:") as tar:
                for member in tar:
                    k, ext = _split_name(member.name)
                    if ext in ("jpg", "png"):
                        images[k] = (member.offset_data, member.size, member.name)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise InvalidInputError(f"cannot read tar shard {path}: {err}") from err
        for key, sample in iter_shard(path, {"coco73k.npy"}):
            _require(path, key, sample, ("coco73k.npy",))
            if key not in images:
                raise InvalidInputError(
                    f"tar shard {path}: sample {key!r} has no image; expected {key}.jpg (or .png)."
                )
            coco = _npy(path, key, "coco73k.npy", sample["coco73k.npy"]).reshape(-1)
            if coco.size != 1:
                raise InvalidInputError(
                    f"tar shard {path}: {key}.coco73k.npy has shape {coco.shape}; expected (1,)."
                )
            sid = str(int(_integral(path, f"{key}.coco73k.npy", coco, 0, N_IMAGES_73K)[0]))
            offset, size, name = images[key]
            members.setdefault(sid, ShardMember(path, name, offset, size))
    return members
