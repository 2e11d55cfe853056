"""Masked NSD-layout loading: ``read_nsd_betas`` against a raw h5py read of the same bounding box.

Two cases, timed interleaved (raw, ours, raw, ours, ...; best of ``--repeats``) from a warm page
cache so that every variant reads from memory:

``sim``
    The default simulated world (``data/sim/default``; simulated there if absent), whose betas are
    chunked one trial (whole volume) per chunk, as the simulator writes them.

``nsd-shape``
    NSD's real volume: (750, 83, 104, 81) int16 per session, an irregular 15,724-voxel binary
    ``nsdgeneral`` mask (subj01's count; no ``.ctab`` beside it, as most people download it) and an
    NSD-like design (30,000 trials, 10,000 images, 1,000 shared). ``--nsd-sessions`` session files
    are written under ``benchmarks/results/nsd_shape/`` (git-ignored; reused) in two layouts:
    ``nsd``, NSD's own chunking (MATLAB ``[1 1 1 750]``, h5py chunks (750, 1, 1, 1): one chunk per
    voxel; NSD data manual, "Functional data (NSD)"), ``contiguous`` (h5py's default, what a
    re-saved file gets) and ``volume`` (one trial per chunk, as the simulator writes). Also measured: the full subj01 scale (40 sessions x 750 trials x 15,724
    voxels, session-z-scored) in a fresh interpreter, its peak resident memory against 24 GiB; the
    40 session files are links to the written ones (the reader opens 40 files either way).

Variants timed (MB/s over the bounding box's bytes, the same numerator for all):

- ``raw``: one h5py hyperslab of the mask's bounding box per session file, nothing else (the
  historical ceiling; for NSD's per-voxel chunks it is slow: ~220k chunks a session);
- ``ours``: ``read_nsd_betas(..., zscore=False)``, everything a user gets (masked voxels read by the
  route the layout allows, int16 / 300 -> float32, trials mapped to image ids, splits, repeats);
- ``bbox_then_mask``: the previous reader's route, the bounding-box hyperslab then a voxel gather
  and the float32 conversion;
- ``whole`` (``sim`` only): whole volumes read, then masked.

``ratio`` is raw seconds / ours seconds (>= 1: ours is faster than merely reading the box).

Run: ``.venv/bin/python -m benchmarks.bench_loading [--case sim|nsd-shape|all] [--nsd-sessions 3]``.
Writes ``benchmarks/results/loading.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from neurodecode.data.nsd import read_nsd_betas, roi_path, session_files
from neurodecode.data.rois import read_roi_volume, voxel_coordinates

RESULTS = Path(__file__).resolve().parent / "results" / "loading.json"
NSD_SHAPE_DIR = Path(__file__).resolve().parent / "results" / "nsd_shape"
REPO = Path(__file__).resolve().parents[1]
NSD_SHAPE = (750, 83, 104, 81)  # h5py (trials, Z, Y, X) of subj01's func1pt8mm betas
NSD_VOXELS = 15724  # subj01's nsdgeneral
GIB = 1024**3
BETAS = "nsddata_betas/ppdata/subj01/func1pt8mm/betas_fithrf_GLMdenoise_RR"


def _bbox(root: Path, subject: str):
    mask = read_roi_volume(roi_path(root, subject, "nsdgeneral"), subject).mask()
    ijk = voxel_coordinates(mask)
    lo, hi = ijk.min(0), ijk.max(0) + 1
    return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])), ijk


def _interleaved_best(fns: dict, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each function, run in turn (a, b, c, a, b, c, ...) so that
    load from other processes falls on every variant alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _variants(root: Path, subject: str, sessions: list[int] | None, whole: bool) -> tuple:
    files = session_files(root, subject)
    files = [files[s] for s in (sessions or list(files))]
    bbox, ijk = _bbox(root, subject)
    lo = np.array([s.start for s in bbox])
    box = tuple(s.stop - s.start for s in bbox)
    inside = np.ravel_multi_index(tuple((ijk[:, ::-1] - lo).T), box)

    def raw() -> None:
        for path in files:
            with h5py.File(path, "r") as f:
                f["betas"][(slice(None), *bbox)]

    def bbox_then_mask() -> None:
        for path in files:
            with h5py.File(path, "r") as f:
                block = f["betas"][(slice(None), *bbox)]
            out = np.take(block.reshape(len(block), -1), inside, axis=1).astype(np.float32)
            out *= np.float32(1 / 300)

    def ours() -> None:
        read_nsd_betas(root, subject, sessions=sessions, zscore=False, progress=False)

    fns = {"raw": raw, "ours": ours, "bbox_then_mask": bbox_then_mask}
    if whole:

        def whole_volumes() -> None:
            for path in files:
                with h5py.File(path, "r") as f:
                    f["betas"][:][:, ijk[:, 2], ijk[:, 1], ijk[:, 0]]

        fns["whole"] = whole_volumes
    n_bytes = 0
    for path in files:
        with h5py.File(path, "r") as f:
            b = f["betas"]
            n_bytes += b.shape[0] * int(np.prod(box)) * b.dtype.itemsize
    return fns, files, ijk, n_bytes


def _summary(seconds: dict[str, float], n_bytes: int, **extra) -> dict:
    mb = n_bytes / 1e6
    out = {**extra, "bbox_megabytes": round(mb, 1)}
    for name, t in seconds.items():
        out[f"{name}_mb_s"] = round(mb / t, 1)
    out["ratio"] = round(seconds["raw"] / seconds["ours"], 3)
    out["speedup_over_bbox_then_mask"] = round(seconds["bbox_then_mask"] / seconds["ours"], 2)
    out["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return out


# ----------------------------------------------------------------------------- sim case


def case_sim(data: Path, subject: str, repeats: int) -> dict:
    if not (data / "ground_truth.h5").is_file():
        from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

        simulate_fmri(FMRISimConfig.from_yaml(REPO / "datasets/sim/default.yaml"), data)
    fns, files, ijk, n_bytes = _variants(data, subject, None, whole=True)
    fns["raw"]()  # warm the page cache
    seconds = _interleaved_best(fns, repeats)
    with h5py.File(files[0], "r") as f:
        chunks = f["betas"].chunks
    result = _summary(
        seconds,
        n_bytes,
        data=str(data),
        subject=subject,
        sessions=len(files),
        voxels=len(ijk),
        chunks=list(chunks) if chunks else None,
    )
    result["bbox_speedup_over_whole_volume"] = round(seconds["whole"] / seconds["ours"], 2)
    return result


# ----------------------------------------------------------------------------- NSD-shape case


def nsd_like_mask(shape_xyz=NSD_SHAPE[:0:-1], n_voxels=NSD_VOXELS, seed=0) -> np.ndarray:
    """An irregular (X, Y, Z) mask of exactly ``n_voxels``: the top of a smoothed random field
    within a posterior cortical shell (nsdgeneral is occipito-temporo-parietal cortex)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape_xyz), indexing="ij")
    outer = (x / 0.85) ** 2 + (y / 0.9) ** 2 + (z / 0.8) ** 2 < 1
    inner = (x / 0.75) ** 2 + (y / 0.8) ** 2 + (z / 0.7) ** 2 < 1
    region = outer & ~inner & (y < 0.1)
    field = ndimage.gaussian_filter(rng.standard_normal(shape_xyz), 2.0)
    field[~region] = -np.inf
    order = np.argsort(field.ravel())[::-1][:n_voxels]
    mask = np.zeros(int(np.prod(shape_xyz)), bool)
    mask[order] = True
    return mask.reshape(shape_xyz), outer


def _write_design(path: Path, seed: int) -> None:
    """NSD's design shape: masterordering 1x30000 (10,000 columns x 3, 1-based), subjectim 8x10000
    with the 1,000 shared images in the first columns, sharedix 1x1000."""
    import scipy.io

    rng = np.random.default_rng(seed)
    master = rng.permutation(np.repeat(np.arange(1, 10001), 3))
    shared = np.sort(rng.choice(73000, 1000, replace=False)) + 1
    pool = np.setdiff1d(np.arange(1, 73001), shared)
    unique = rng.permutation(pool)[: 8 * 9000].reshape(8, 9000)
    subjectim = np.concatenate([np.tile(shared, (8, 1)), unique], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        path,
        {"masterordering": master[None], "subjectim": subjectim, "sharedix": shared[None]},
    )


def nsd_shape_world(folder: Path, n_sessions: int, layout: str, seed: int = 0) -> Path:
    """Write (or reuse) an NSD-shaped root with ``n_sessions`` session files in ``layout``."""
    import nibabel as nib

    root = folder / layout
    stamp = root / "bench_world.json"
    spec = {"shape": NSD_SHAPE, "voxels": NSD_VOXELS, "sessions": n_sessions, "seed": seed}
    if stamp.is_file() and json.loads(stamp.read_text()).get("spec") == spec:
        return root
    chunks = {"nsd": (NSD_SHAPE[0], 1, 1, 1), "contiguous": None, "volume": (1, *NSD_SHAPE[1:])}[
        layout
    ]
    _write_design(root / "nsddata/experiments/nsd/nsd_expdesign.mat", seed)
    mask, outer = nsd_like_mask(seed=seed)
    roi = np.where(mask, 1, np.where(outer, 0, -1)).astype(np.int16)  # -1 / 0 / 1, no table
    roi_file = roi_path(root, "subj01", "nsdgeneral")
    roi_file.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(roi, np.diag([1.8, 1.8, 1.8, 1.0])), roi_file)
    betas = root / BETAS
    betas.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for s in range(1, n_sessions + 1):
        # int16 drawn directly (a float64 draw of one session would be 4.2 GB)
        volume = rng.integers(-1500, 1500, NSD_SHAPE, dtype=np.int16)
        with h5py.File(betas / f"betas_session{s:02d}.hdf5", "w") as f:
            f.create_dataset("betas", data=volume, chunks=chunks)
        del volume
    info = {
        "spec": spec,
        "layout": layout,
        "chunks": chunks,
        "write_s": time.perf_counter() - start,
    }
    stamp.write_text(json.dumps(info, indent=2) + "\n")
    return root


def _full_scale_root(source: Path, n_sessions: int = 40) -> Path:
    """40 session files (links, cycling over the written ones) beside the same design and ROI."""
    root = source.parent / f"{source.name}-40"
    betas = root / BETAS
    betas.mkdir(parents=True, exist_ok=True)
    for sub in ("nsddata/experiments", "nsddata/ppdata"):
        link = root / sub
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((source / sub).resolve(), target_is_directory=True)
    written = sorted(session_files(source, "subj01").values())
    for s in range(1, n_sessions + 1):
        link = betas / f"betas_session{s:02d}.hdf5"
        if not link.is_symlink():
            link.symlink_to(written[(s - 1) % len(written)].resolve())
    return root


# peak from /proc/self/status VmHWM: Linux keeps ru_maxrss across fork + exec, so a child's
# ru_maxrss can report the parent's resident size at the fork
_FULL_SCALE_CHILD = """
import json, resource, sys, time
from neurodecode.data.nsd import read_nsd_betas
t0 = time.perf_counter()
trials = read_nsd_betas(sys.argv[1], "subj01", zscore=True, progress=False)
seconds = time.perf_counter() - t0
try:
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
except OSError:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"trials": len(trials), "voxels": trials.data.shape[1],
                  "dtype": str(trials.data.dtype), "seconds": round(seconds, 1),
                  "trial_matrix_gib": round(trials.data.nbytes / 1024**3, 3),
                  "peak_rss_gib": round(hwm * 1024 / 1024**3, 3)}))
"""


def full_scale(source: Path) -> dict:
    """Read all 40 sessions of subj01's scale, z-scored, in a fresh interpreter (its own peak)."""
    root = _full_scale_root(source)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _FULL_SCALE_CHILD, str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    if done.returncode != 0:
        raise RuntimeError(f"full-scale read failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["budget_gib"] = 24.0
    result["within_budget"] = result["peak_rss_gib"] < 24.0
    return result


def case_nsd_shape(folder: Path, n_sessions: int, repeats: int, layouts: list[str]) -> dict:
    out = {}
    for layout in layouts:
        root = nsd_shape_world(folder, n_sessions, layout)
        fns, files, ijk, n_bytes = _variants(root, "subj01", None, whole=False)
        fns["raw"]()  # warm the page cache
        seconds = _interleaved_best(fns, repeats)
        with h5py.File(files[0], "r") as f:
            chunks = f["betas"].chunks
        out[layout] = _summary(
            seconds,
            n_bytes,
            data=str(root),
            shape=list(NSD_SHAPE),
            chunks=list(chunks) if chunks else None,
            sessions=len(files),
            voxels=len(ijk),
        )
    if "nsd" in layouts:
        out["full_scale_40_sessions"] = full_scale(folder / "nsd")
    return out


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=["sim", "nsd-shape", "all"], default="all")
    parser.add_argument("--data", type=Path, default=REPO / "data/sim/default")
    parser.add_argument("--subject", default="subj01")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nsd-sessions", type=int, default=3)
    parser.add_argument("--nsd-dir", type=Path, default=NSD_SHAPE_DIR)
    parser.add_argument("--layouts", default="nsd,contiguous,volume", help="comma-separated")
    args = parser.parse_args(argv)
    result: dict = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    if args.case in ("sim", "all"):
        result["sim"] = case_sim(args.data, args.subject, args.repeats)
    if args.case in ("nsd-shape", "all"):
        layouts = [s for s in args.layouts.split(",") if s]
        result["nsd_shape"] = case_nsd_shape(args.nsd_dir, args.nsd_sessions, args.repeats, layouts)
    result["load_average_after"] = os.getloadavg()[0]
    result["peak_rss_gib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print("| case | raw h5py bbox MB/s | ours MB/s | bbox then mask MB/s | ratio ours/raw |")
    print("|---|---:|---:|---:|---:|")
    rows = [("sim", result.get("sim"))] + [
        (f"nsd-shape {k}", v)
        for k, v in result.get("nsd_shape", {}).items()
        if k != "full_scale_40_sessions"
    ]
    for name, r in rows:
        if r:
            print(
                f"| {name} | {r['raw_mb_s']} | {r['ours_mb_s']} | {r['bbox_then_mask_mb_s']} | "
                f"{r['ratio']} |"
            )
    full = result.get("nsd_shape", {}).get("full_scale_40_sessions")
    if full:
        print(
            f"full subj01 scale: {full['trials']} x {full['voxels']} z-scored in "
            f"{full['seconds']} s, peak RSS {full['peak_rss_gib']} GiB (budget 24)"
        )
    return result


if __name__ == "__main__":
    main()
