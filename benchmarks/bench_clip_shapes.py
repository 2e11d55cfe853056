"""Extraction speed and peak memory of MindEye's CLIP token targets, per architecture.

MindEye1: open_clip ``ViT-L-14``, ``output="tokens"`` (257 x 768, ``ln_post`` + projection on every
token). MindEye2: ``ViT-bigG-14``, ``output="patch_tokens"`` (256 x 1664, after ``ln_post``, no
class token, not projected). Random weights (``pretrained=None``: nothing can be downloaded here),
which cost the same compute as trained ones. Each architecture runs in its own process, so its
peak RSS (``ru_maxrss``) is its own: model build, then ``--images`` random 224 px images in
batches of ``--batch-size`` written to a float16 FeatureStore through ``FeatureStore.fill``.

Writes ``benchmarks/results/clip_shapes.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "clip_shapes.json"
ARCHS = {"ViT-L-14": "tokens", "ViT-bigG-14": "patch_tokens"}

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from neurodecode.features.clip import load_clip
from neurodecode.features.store import FeatureStore
name, output, n, batch, store_path = sys.argv[1:6]
n, batch = int(n), int(batch)
t0 = time.perf_counter()
encoder = load_clip(name, None, output=output)
build = time.perf_counter() - t0
images = np.random.default_rng(0).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
store = FeatureStore(store_path)
def compute(ids):
    return encoder.encode_image(images[[int(i) for i in ids]])
t0 = time.perf_counter()
store.fill(name, output, [str(i) for i in range(n)], compute, encoder.settings, batch, False,
           1, "float16")
seconds = time.perf_counter() - t0
print(json.dumps({"arch": name, "output": output, "shape": list(store.feature_shape(name, output)),
                  "images": n, "batch_size": batch, "build_s": round(build, 2),
                  "extract_s": round(seconds, 2), "images_per_s": round(n / seconds, 3),
                  "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
                  "threads": torch.get_num_threads()}))
"""


def run_arch(name: str, images: int, batch_size: int, timeout: float) -> dict:
    """One architecture in a fresh process; its JSON line, or the error it ended with."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-c", _CHILD, name, ARCHS[name], str(images), str(batch_size)]
        cmd.append(str(Path(tmp) / "store.h5"))
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"arch": name, "error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"arch": name, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per architecture")
    args = parser.parse_args(argv)
    result = {
        "machine": f"{os.cpu_count()} CPU cores (shared with other jobs: contended)",
        "runs": [run_arch(a, args.images, args.batch_size, args.timeout) for a in args.archs],
    }
    for run in result["runs"]:
        print(json.dumps(run))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
