"""Which decoding target carries what the simulated brain holds: feature oracles of candidate
target spaces, chosen on validation trials, reported on the test trials beside the oracle.

Candidates (all computed from the stimuli's pixels, :mod:`neurodecode.features.targets`; nothing
from the simulator's ground truth):

- ``pooled``: sim-clip's 128-d image embedding (today's demo target);
- ``stage1`` .. ``stage4``: sim-clip's convnet stage maps (``trunk.features.3/7/11/15``:
  16 x 32 x 32, 32 x 16 x 16, 64 x 8 x 8, 128 x 4 x 4), the first two block-averaged to 8 x 8;
- ``lab8``: an 8 x 8 CIELAB thumbnail; ``contrast8``: RMS luminance contrast per cell;
  ``energy8``: quadrature-Gabor energy (4 orientations x 2 wavelengths) per cell;
  ``lowlevel8``: the three together;
- ``vae`` (with ``--vae``): the sim VAE's 4 x 8 x 8 latents (MindEye's low-level target), the VAE
  trained into ``data/targets/cache`` if absent (not yet measured: on the contended 2-core
  machine the VAE's first training did not finish within 15 minutes);
- concatenations (``a+b``: :func:`~neurodecode.features.targets.standardise_blocks`, statistics
  from the training images).

- ``opponent8``: half-wave rectified ON/OFF lightness and red/green/yellow/blue opponent signals
  per cell (:func:`~neurodecode.features.targets.rectified_opponents`); ``rectified8``:
  opponent8 + contrast8 + energy8 (what the simulator's early areas pool, computed from pixels).

Protocol. The feature oracle (:func:`neurodecode.demo.ladder.banded_feature_oracle_predictions`:
true noise-free responses regressed with one penalty per band and voxel, the bands being the
``+``-pieces of the name, linear or additive RFF-kernel ridge per voxel, candidates scored with
the true noise; ``--single-penalty``: one penalty over all features,
:func:`~neurodecode.demo.ladder.feature_oracle_predictions`, the first measurement) of every
candidate is computed on a **validation split** of subj01's training images
(80 % fit, 20 % held out; candidates = the held-out images and their own repeat-averaged trials:
:func:`neurodecode.demo.ladder.validation_feature_oracles`). The ``--report`` best by the mean
of the two validation top-1s, and ``pooled`` for reference, are then scored on the 300 test
trials (:func:`neurodecode.demo.ladder.oracle_rungs`, regressed on all training images) beside
the oracle, with their ratio to it. Nothing is chosen on the test trials.

With ``--write-store`` the chosen space (best on validation) is written as a FeatureStore layer
(model ``targets``, settings naming its blocks), which ``NSDDataModule(feature_store=...,
feature_model="targets", feature_layer=<space>)`` reads as its target.

Run: ``.venv/bin/python -m benchmarks.bench_targets [--data DIR]`` (needs the default world and
sim-clip, as ``make demo`` prepares them). Writes ``benchmarks/results/targets.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "targets.json"
STAGES = {"stage1": ("trunk.features.3", 8), "stage2": ("trunk.features.7", 8)}
STAGES.update({"stage3": ("trunk.features.11", None), "stage4": ("trunk.features.15", None)})
LOWLEVEL = ("lab8", "contrast8", "energy8")
#: the low-level blocks with rectified ON/OFF and opponent channels in place of the mean Lab
RECTIFIED = ("opponent8", "contrast8", "energy8")
COMBINATIONS = (
    "lowlevel8",
    "pooled+lab8",
    "pooled+lowlevel8",
    "pooled+stage3",
    "pooled+stage4",
    "stage3+lowlevel8",
    "pooled+stage3+lowlevel8",
    "pooled+stage4+lowlevel8",
    "pooled+stage3+stage4+lowlevel8",
    "rectified8",
    "pooled+rectified8",
    "pooled+stage3+rectified8",
)


def compute_parts(images: np.ndarray, with_vae: bool, cache_dir: Path) -> dict[str, np.ndarray]:
    """Every elementary block of the candidates, for all images (N, ...) float32."""
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.features.targets import (
        lab_thumbnail,
        local_contrast,
        oriented_energy,
        rectified_opponents,
        tower_maps,
    )

    encoder = get_sim_clip("default")
    parts: dict[str, np.ndarray] = {}
    pooled = [encoder.encode_image(images[s : s + 256]).numpy() for s in range(0, len(images), 256)]
    parts["pooled"] = np.concatenate(pooled)
    for name, (module, grid) in STAGES.items():
        parts[name] = tower_maps(encoder, images, [module], grid=grid)[module]
    parts["lab8"] = lab_thumbnail(images, 8)
    parts["contrast8"] = local_contrast(images, 8)
    parts["energy8"] = oriented_energy(images, 8)
    parts["opponent8"] = rectified_opponents(images, 8)
    if with_vae:
        import torch

        from neurodecode.embedded.vae import get_sim_vae
        from neurodecode.reconstruct.generators import images_to_tensor
        from neurodecode.reconstruct.lowlevel import encode_images

        vae = get_sim_vae("default", cache_dir=cache_dir)
        size = int(vae.config.sample_size) if hasattr(vae.config, "sample_size") else 32
        with torch.no_grad():
            parts["vae"] = encode_images(vae, images_to_tensor(images, size)).numpy()
    return parts


GROUPS = {"lowlevel8": LOWLEVEL, "rectified8": RECTIFIED}


def space_blocks(name: str, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The blocks of a candidate name (``a+b``; ``lowlevel8`` = lab8 + contrast8 + energy8,
    ``rectified8`` = opponent8 + contrast8 + energy8)."""
    blocks = {}
    for piece in name.split("+"):
        for part in GROUPS.get(piece, (piece,)):
            blocks[part] = parts[part]
    return blocks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sim/default"))
    parser.add_argument("--subject", default="subj01")
    parser.add_argument("--cache", type=Path, default=Path("data/targets"))
    parser.add_argument(
        "--vae", action="store_true", help="add the sim VAE's latents (not yet measured)"
    )
    parser.add_argument("--report", type=int, default=3, help="best on validation to test")
    parser.add_argument("--spaces", nargs="*", default=None, help="restrict the candidates")
    parser.add_argument("--write-store", type=Path, default=None, help="FeatureStore to fill")
    parser.add_argument(
        "--single-penalty",
        action="store_true",
        help="one penalty over all features (the first measurement) instead of one per band",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    from neurodecode.data.stimuli import open_stimuli
    from neurodecode.demo.ladder import oracle_rungs, validation_feature_oracles
    from neurodecode.features.targets import standardise_blocks
    from neurodecode.sim.ground_truth import read_ground_truth

    started = time.perf_counter()
    world = read_ground_truth(args.data)
    source = open_stimuli(args.data)
    all_ids = np.asarray(source.ids).astype(np.int64)
    args.cache.mkdir(parents=True, exist_ok=True)
    cache_file = args.cache / f"parts-{args.data.name}{'-vae' if args.vae else ''}.npz"
    if cache_file.is_file():
        parts = dict(np.load(cache_file))
    if not cache_file.is_file() or "opponent8" not in parts:
        t0 = time.perf_counter()
        parts = compute_parts(source.load(source.ids), args.vae, args.cache / "cache")
        np.savez(cache_file, **parts)
        print(f"extracted parts in {time.perf_counter() - t0:.0f} s -> {cache_file}", flush=True)
    row_of = {int(i): k for k, i in enumerate(all_ids)}

    from neurodecode.data.nsd import read_nsd_betas

    trials = read_nsd_betas(args.data, args.subject, zscore=False, progress=False)
    train_ids = np.unique(trials.stimulus_id[trials.split == "train"]).astype(np.int64)
    del trials
    reference = np.array([row_of[int(i)] for i in train_ids])

    names = ["pooled", *STAGES, *LOWLEVEL, *COMBINATIONS]
    if args.vae:
        names += ["vae", "pooled+vae", "pooled+stage3+vae"]
    if args.spaces:
        names = [n for n in names if n in args.spaces] or list(args.spaces)
    spaces: dict[str, np.ndarray] = {}
    bands: dict[str, dict[str, slice]] = {}  # space -> its bands' columns (the "+"-pieces)
    for name in names:
        spaces[name] = standardise_blocks(space_blocks(name, parts), reference)
        start, bands[name] = 0, {}
        for piece in name.split("+"):
            width = standardise_blocks(space_blocks(piece, parts), reference).shape[1]
            bands[name][piece] = slice(start, start + width)
            start += width

    def features_of(name: str):
        def of(ids: np.ndarray):
            rows = spaces[name][[row_of[int(i)] for i in np.asarray(ids)]]
            if args.single_penalty:
                return rows
            # one penalty per band (the banded feature oracle); each band standardised alone
            return {piece: rows[:, cols] for piece, cols in bands[name].items()}

        return of

    result: dict = {
        "subject": args.subject,
        "threads": torch.get_num_threads(),
        "estimator": "single-penalty" if args.single_penalty else "banded",
        "dims": {n: int(x.shape[1]) for n, x in spaces.items()},
        "validation": {},
    }
    t0 = time.perf_counter()
    val = validation_feature_oracles(
        args.data, args.subject, {n: features_of(n) for n in names}, train_ids
    )
    result["validation"] = val
    result["validation_s"] = round(time.perf_counter() - t0, 1)
    oracle_val = val["oracle"]
    for name, row in val["feature_oracle"].items():
        ratio = [
            row[k] / max(oracle_val[k], 1e-9)
            for k in ("brain_to_image_top1", "image_to_brain_top1")
        ]
        row["ratio_to_oracle"] = [round(r, 3) for r in ratio]
        print(
            f"val {name:32s} d={spaces[name].shape[1]:5d} "
            f"{row['brain_to_image_top1']:.3f} / {row['image_to_brain_top1']:.3f}",
            flush=True,
        )

    def mean_top1(row: dict) -> float:
        return (row["brain_to_image_top1"] + row["image_to_brain_top1"]) / 2

    ranked = sorted(val["feature_oracle"], key=lambda n: -mean_top1(val["feature_oracle"][n]))
    chosen = ranked[: args.report]
    result["chosen_on_validation"] = chosen
    tested = list(dict.fromkeys([*chosen, *(["pooled"] if "pooled" in spaces else [])]))
    t0 = time.perf_counter()
    test = oracle_rungs(
        args.data, args.subject, {n: features_of(n) for n in tested}, train_ids, n_way=300
    )
    result["test_s"] = round(time.perf_counter() - t0, 1)
    for name, row in test["feature_oracle"].items():
        row["ratio_to_oracle"] = [
            round(row[k] / max(test["oracle"][k], 1e-9), 3)
            for k in ("brain_to_image_top1", "image_to_brain_top1")
        ]
        print(
            f"test {name:32s} {row['brain_to_image_top1']:.3f} / "
            f"{row['image_to_brain_top1']:.3f} ratio {row['ratio_to_oracle']}",
            flush=True,
        )
    print(f"test oracle {test['oracle']}", flush=True)
    result["test"] = test
    result["n_shared"] = len(world.sharedix)

    if args.write_store is not None and chosen:
        from neurodecode.features.store import FeatureStore

        store = FeatureStore(args.write_store)
        for name in chosen[:1]:
            matrix = spaces[name]

            def compute(batch: list[str], matrix: np.ndarray = matrix) -> np.ndarray:
                return matrix[[row_of[int(i)] for i in batch]]

            settings = {
                "space": name,
                "blocks": list(space_blocks(name, parts)),
                "standardised_on": f"{len(reference)} training images of {args.subject}",
                "source": "benchmarks/bench_targets.py",
            }
            store.fill("targets", name, [str(i) for i in all_ids], compute, settings, 512, False)
            print(f"wrote targets/{name} ({matrix.shape[1]} d) into {args.write_store}")
    result["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['total_s']} s)")
    return result


if __name__ == "__main__":
    main()
