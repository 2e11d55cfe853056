"""A verified, resumable training-ready cache of one NSD subject (``neurodecode prepare nsd``).

Layout of ``out``: ``session_NN.npz`` per session (``data`` (n, n_voxels) float16 session
z-scores, ``stimulus_id``, ``repeat``, ``trial`` int64, ``split``), ``voxel_ijk.npy`` and
``manifest.json`` (subject, ROI, the sessions planned (present in the raw download) and those
completed, sha256 per file). Each session is read from raw NSD with
:func:`~neurodecode.data.nsd.read_nsd_betas` (one session in memory at a time), written to a
temporary name and renamed (atomic), and recorded in the manifest, so a killed run resumes from
the completed sessions. :func:`open_nsd_cache` verifies the subject, the ROI, completeness and
every checksum before returning a TrialSet; :func:`find_nsd_cache` tells a cache folder from a raw
NSD root (``NSDDataModule`` trains from either).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from neurodecode.data.nsd import read_nsd_betas, session_presence
from neurodecode.data.trials import TrialSet
from neurodecode.validation import InvalidInputError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(out: Path, manifest: dict) -> None:
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, out / MANIFEST)


def prepare_nsd_cache(
    root: str | Path, subject: str, out: str | Path, progress: bool = True
) -> Path:
    """Write (or resume) the cache of ``subject``'s present sessions under ``out``.

    Parameters
    ----------
    root : path
        The NSD root (``nsddata/``, ``nsddata_betas/``), read as :func:`read_nsd_betas` reads it.
    subject : str
        ``"subj01"`` ...
    out : path
        Cache folder; sessions already recorded in its manifest (with matching checksums) are kept.

    Returns
    -------
    Path
        ``out``. Data are float16 per-session z-scores of the nsdgeneral voxels.
    """
    root, out = Path(root), Path(out)
    presence, _ = session_presence(root, subject)
    presence.report(logger, "; the cache holds the sessions found")
    sessions, absent = presence.found, presence.missing
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "subject": subject,
        "roi": "nsdgeneral",
        "files": {},
        "sessions": [],
        "planned_sessions": sessions,
        "missing_sessions": absent,
    }
    if (out / MANIFEST).exists():
        old = _read_manifest(out)
        if old.get("subject") != subject:
            raise InvalidInputError(
                f"{out / MANIFEST} is a cache of {old.get('subject')!r}; expected {subject!r} "
                "(choose another --out)."
            )
        for s in old["sessions"]:
            name = f"session_{s:02d}.npz"
            path = out / name
            if path.exists() and _sha256(path) == old["files"].get(name):
                manifest["sessions"].append(s)
                manifest["files"][name] = old["files"][name]
        if "voxel_ijk.npy" in old["files"]:
            manifest["files"]["voxel_ijk.npy"] = old["files"]["voxel_ijk.npy"]
    todo = [s for s in sessions if s not in manifest["sessions"]]
    _write_manifest(out, manifest)  # the plan is on disk before any session is written
    for s in tqdm(todo, desc=f"{subject} cache", disable=not progress):
        trials = read_nsd_betas(root, subject, sessions=[s], progress=False)
        if "voxel_ijk.npy" not in manifest["files"]:
            np.save(out / "voxel_ijk.npy", trials.info["voxel_ijk"])
            manifest["files"]["voxel_ijk.npy"] = _sha256(out / "voxel_ijk.npy")
        elif not np.array_equal(np.load(out / "voxel_ijk.npy"), trials.info["voxel_ijk"]):
            raise InvalidInputError(
                f"session {s} of {root} has other voxels than the cache in {out}."
            )
        name = f"session_{s:02d}.npz"
        tmp = out / (name + ".tmp.npz")
        np.savez(
            tmp,
            data=trials.data.astype(np.float16),
            stimulus_id=trials.stimulus_id.astype(np.int64),
            repeat=trials.repeat.astype(np.int64),
            trial=np.asarray(trials.info["trial"], dtype=np.int64),
            split=trials.split.astype("U5"),
        )
        os.replace(tmp, out / name)
        manifest["files"][name] = _sha256(out / name)
        manifest["sessions"] = sorted([*manifest["sessions"], s])
        _write_manifest(out, manifest)
    return out


def _read_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.is_file():
        raise InvalidInputError(
            f"no NSD cache at {out}: expected {path} (run `neurodecode prepare nsd`)."
        )
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["sessions"]
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(f"{path} is not a cache manifest: {err}") from err
    return manifest


def find_nsd_cache(path: str | Path, subject: str) -> Path | None:
    """The cache folder of ``subject`` at ``path``: ``path`` itself if it holds a
    ``manifest.json``, else ``path/<subject>`` if that does (one folder of caches per subject),
    else ``None`` (``path`` is not a cache; e.g. a raw NSD root)."""
    path = Path(path)
    for folder in (path, path / subject):
        if (folder / MANIFEST).is_file():
            return folder
    return None


def cache_voxel_count(out: str | Path) -> int:
    """Voxels per trial in a cache (from ``voxel_ijk.npy``'s header; no trial data read)."""
    path = Path(out) / "voxel_ijk.npy"
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError) as err:
        raise InvalidInputError(
            f"cannot read {path} ({err}); rerun `neurodecode prepare nsd` to rewrite it."
        ) from err


def _npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of array ``key`` in an ``.npz`` from its header only (no data read)."""
    with np.load(path) as z, z.zip.open(f"{key}.npy") as member:
        fmt = np.lib.format
        version = fmt.read_magic(member)
        header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, _ = header(member)
    return tuple(shape)


def open_nsd_cache(
    out: str | Path,
    sessions: list[int] | None = None,
    subject: str | None = None,
    roi: str | None = None,
) -> TrialSet:
    """Open a cache written by :func:`prepare_nsd_cache` into a TrialSet, after verifying it.

    Parameters
    ----------
    out : path
        The cache folder (holding ``manifest.json``).
    sessions : list of int, optional
        1-based sessions to open; by default all, and then a cache whose preparation was
        interrupted (fewer sessions than planned) is refused.
    subject, roi : str, optional
        What the caller expects the cache to hold; a cache of another subject or ROI is refused.

    Returns
    -------
    TrialSet
        data (n_trials, n_voxels) float32 session z-scores (stored as float16), ``session``,
        ``stimulus_id``, ``repeat``, ``split`` and ``info["trial"]`` as
        :func:`~neurodecode.data.nsd.read_nsd_betas` gives them; ``info`` also has ``voxel_ijk``,
        ``roi`` and ``units``. The float32 array is allocated once and filled one session at a
        time (peak memory: it plus one session's float16 trials).

    Raises
    ------
    InvalidInputError
        No manifest, another subject or ROI, an incomplete cache, a session not in the cache, or
        a file missing or failing its sha256.
    """
    out = Path(out)
    manifest = _read_manifest(out)
    if subject is not None and manifest.get("subject") != subject:
        raise InvalidInputError(
            f"{out / MANIFEST} is a cache of {manifest.get('subject')!r}; expected {subject!r}."
        )
    if roi is not None and manifest.get("roi") != roi:
        raise InvalidInputError(
            f"{out / MANIFEST} holds ROI {manifest.get('roi')!r} voxels; expected roi={roi!r}."
        )
    if sessions is None:
        unfinished = [
            s for s in manifest.get("planned_sessions", []) if s not in manifest["sessions"]
        ]
        if unfinished:
            raise InvalidInputError(
                f"the cache {out} is incomplete: sessions {unfinished} were planned but not "
                "written (an interrupted `neurodecode prepare nsd`; rerun it to finish)."
            )
    wanted = manifest["sessions"] if sessions is None else [int(s) for s in sessions]
    missing = [s for s in wanted if s not in manifest["sessions"]]
    if missing:
        raise InvalidInputError(
            f"sessions {missing} are not in the cache {out}; it holds {manifest['sessions']}."
        )
    if not wanted:
        raise InvalidInputError(f"the cache {out} holds no sessions.")
    names = ["voxel_ijk.npy", *[f"session_{s:02d}.npz" for s in wanted]]
    for name in names:
        path = out / name
        if not path.is_file() or _sha256(path) != manifest["files"].get(name):
            raise InvalidInputError(
                f"{path} fails its checksum in {out / MANIFEST} (missing, truncated or corrupt); "
                "rerun `neurodecode prepare nsd` to rewrite it."
            )
    voxel_ijk = np.load(out / "voxel_ijk.npy")
    shapes = {s: _npz_shape(out / f"session_{s:02d}.npz", "data") for s in wanted}
    for s, shape in shapes.items():
        if len(shape) != 2 or shape[1] != len(voxel_ijk):
            raise InvalidInputError(
                f"{out}/session_{s:02d}.npz has data of shape {shape}: {shape[1:]} voxels; "
                f"expected {len(voxel_ijk)} (voxel_ijk.npy)."
            )
    data = np.empty((sum(shape[0] for shape in shapes.values()), len(voxel_ijk)), np.float32)
    columns: dict[str, list[np.ndarray]] = {}
    row = 0
    for s in wanted:
        with np.load(out / f"session_{s:02d}.npz") as z:
            n = len(z["stimulus_id"])
            data[row : row + n] = z["data"]  # float16 -> float32 in place, one session at a time
            for key in ("stimulus_id", "repeat", "trial", "split"):
                columns.setdefault(key, []).append(z[key])
        columns.setdefault("session", []).append(np.full(n, s))
        row += n
    cat = {k: np.concatenate(v) for k, v in columns.items()}
    return TrialSet(
        data=data,
        subject=np.full(len(data), manifest["subject"]),
        session=cat["session"],
        stimulus_id=cat["stimulus_id"],
        repeat=cat["repeat"],
        split=cat["split"],
        info={
            "voxel_ijk": voxel_ijk,
            "roi": manifest["roi"],
            "units": "session z-score",
            "trial": cat["trial"],
        },
    )
