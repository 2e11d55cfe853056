"""A verified, resumable training-ready cache of one NSD subject (``neurodecode prepare nsd``).

Layout of ``out``: ``session_NN.npz`` per session (``data`` (n, n_voxels) float16 session
z-scores, ``stimulus_id``, ``repeat``, ``trial`` int64, ``split``), ``voxel_ijk.npy`` and
``manifest.json`` (subject, sessions, sha256 per file). Each session is read from raw NSD with
:func:`~neurodecode.data.nsd.read_nsd_betas` (one session in memory at a time), written to a
temporary name and renamed (atomic), and recorded in the manifest, so a killed run resumes from
the completed sessions. :func:`open_nsd_cache` verifies every checksum before returning a TrialSet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from neurodecode.data.nsd import missing_sessions, read_nsd_betas, session_files
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
    sessions = list(session_files(root, subject))
    absent, n_expected = missing_sessions(root, subject)
    if absent:  # a partial download: cache what is there, say what is not
        logger.warning(
            "%s: %d of %d sessions found in %s; missing: %s (the cache holds the others).",
            subject,
            len(sessions),
            n_expected,
            root,
            ", ".join(map(str, absent)),
        )
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "subject": subject,
        "roi": "nsdgeneral",
        "files": {},
        "sessions": [],
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
        manifest["files"], manifest["sessions"]  # noqa: B018
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidInputError(f"{path} is not a cache manifest: {err}") from err
    return manifest


def open_nsd_cache(out: str | Path, sessions: list[int] | None = None) -> TrialSet:
    """Open a cache into a TrialSet (data (n_trials, n_voxels) float32 session z-scores), after
    verifying every file's sha256 against the manifest."""
    out = Path(out)
    manifest = _read_manifest(out)
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
    parts = []
    for s in wanted:
        with np.load(out / f"session_{s:02d}.npz") as z:
            part = {k: z[k] for k in z.files}
        if part["data"].shape[1] != len(voxel_ijk):
            raise InvalidInputError(
                f"{out}/session_{s:02d}.npz has {part['data'].shape[1]} voxels; expected "
                f"{len(voxel_ijk)} (voxel_ijk.npy)."
            )
        part["session"] = np.full(len(part["data"]), s)
        parts.append(part)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return TrialSet(
        data=cat["data"].astype(np.float32),
        subject=np.full(len(cat["data"]), manifest["subject"]),
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
