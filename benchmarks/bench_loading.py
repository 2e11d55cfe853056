"""Masked NSD-layout loading: ``read_nsd_betas`` against a raw h5py read of the same bytes.

The raw read (the ceiling) reads the nsdgeneral bounding box of every session file with one h5py
hyperslab and does nothing else. Ours reads the same hyperslabs and also masks, converts int16/300
to float32, maps trials to image ids and splits — everything a user gets. Also reported: reading
whole volumes and masking afterwards (what the bounding box saves).

Run: ``.venv/bin/python -m benchmarks.bench_loading [--data data/sim/default]`` (simulates the
default world there if absent). Writes ``benchmarks/results/loading.json`` with
``masked_load_mb_s``, ``raw_read_mb_s``, ``ratio`` and ``whole_volume_mb_s``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import h5py
import numpy as np

from neurodecode.data.nsd import read_nsd_betas, roi_path, session_files
from neurodecode.data.rois import read_roi_volume, voxel_coordinates

RESULTS = Path(__file__).resolve().parent / "results" / "loading.json"
REPO = Path(__file__).resolve().parents[1]


def _bbox(root: Path, subject: str):
    mask = read_roi_volume(roi_path(root, subject, "nsdgeneral"), subject).mask()
    ijk = voxel_coordinates(mask)
    lo, hi = ijk.min(0), ijk.max(0) + 1
    return (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])), ijk


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data/sim/default")
    parser.add_argument("--subject", default="subj01")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not (args.data / "ground_truth.h5").is_file():
        from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

        simulate_fmri(FMRISimConfig.from_yaml(REPO / "datasets/sim/default.yaml"), args.data)
    files = list(session_files(args.data, args.subject).values())
    bbox, ijk = _bbox(args.data, args.subject)

    def raw() -> None:
        for path in files:
            with h5py.File(path, "r") as f:
                f["betas"][(slice(None), *bbox)]

    def whole() -> None:
        for path in files:
            with h5py.File(path, "r") as f:
                f["betas"][:][:, ijk[:, 2], ijk[:, 1], ijk[:, 0]]

    def ours() -> None:
        read_nsd_betas(args.data, args.subject, zscore=False, progress=False)

    n_bytes = 0
    for path in files:
        with h5py.File(path, "r") as f:
            b = f["betas"]
            n_bytes += (
                b.shape[0] * int(np.prod([s.stop - s.start for s in bbox])) * b.dtype.itemsize
            )
    raw()  # warm the page cache so every variant reads from memory
    t_raw, t_ours, t_whole = (_best_of(fn, args.repeats) for fn in (raw, ours, whole))
    mb = n_bytes / 1e6
    result = {
        "data": str(args.data),
        "subject": args.subject,
        "sessions": len(files),
        "voxels": len(ijk),
        "bbox_megabytes": round(mb, 1),
        "raw_read_mb_s": round(mb / t_raw, 1),
        "masked_load_mb_s": round(mb / t_ours, 1),
        "ratio": round(t_raw / t_ours, 3),
        "whole_volume_mb_s": round(mb / t_whole, 1),
        "bbox_speedup_over_whole_volume": round(t_whole / t_ours, 2),
        "seconds": {"raw": round(t_raw, 3), "ours": round(t_ours, 3), "whole": round(t_whole, 3)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print("| loader | MB/s (bounding-box bytes) |\n|---|---:|")
    print(f"| raw h5py hyperslab (ceiling) | {result['raw_read_mb_s']} |")
    print(f"| read_nsd_betas (ours) | {result['masked_load_mb_s']} |")
    print(f"| whole volumes then mask | {result['whole_volume_mb_s']} |")
    print(f"ratio ours/raw = {result['ratio']}")
    return result


if __name__ == "__main__":
    main()
