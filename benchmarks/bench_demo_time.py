"""Where ``make demo`` spends its time: per-change speedups measured side by side.

Parts (``--part``, default both):

- ``ridge``: the ridge rung of the ceiling ladder (``RidgeRegression`` from the eval subject's
  single training trials to the target embedding, 5-fold CV over 17 alphas) with each fold
  refitted (one ``eigh`` per training fold) against each fold downdated from the one
  decomposition of all trials (:func:`neurodecode.models.ridge.solve_ridge_cv`, ``cv_solver``).
  Run alternately in one process, one thread; reported: seconds per fit (wall and CPU), and
  whether the chosen alphas, the CV scores at the chosen alphas and the weights agree.
  Data: the default world's subj01 (``data/sim/default`` with its ``-features.h5``, as ``make
  demo`` writes them) when present, else a synthetic problem of the same shape (5,850 x 4,233 ->
  128).
- ``sampling``: the reconstruction's sampling, as the demo runs it (the default sim generator,
  64 trials x 4 samples, img2img at strength 0.45, guidance 3, 2 threads) with
  ``SimGenerator.generate(batch_size=B)`` for B in ``--sampling-batches`` (images per UNet call,
  doubled by guidance), alternated; reported: seconds per call and the largest difference from
  the first B's images. The generator comes from the cache (trained on first use).

Run: ``.venv/bin/python -m benchmarks.bench_demo_time [--part ridge|sampling] [--repeats 2]``
Writes ``benchmarks/results/demo_time.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from neurodecode.models.ridge import solve_ridge_cv

RESULTS = Path(__file__).resolve().parent / "results" / "demo_time.json"
WORLD = Path("data/sim/default")


def ridge_rung_problem() -> tuple[torch.Tensor, torch.Tensor, str]:
    """The ridge rung's design and targets (float32), and where they came from."""
    store = WORLD.with_name(WORLD.name + "-features.h5")
    if (WORLD / "ground_truth.h5").is_file() and store.is_file():
        from neurodecode.datamodules.nsd import NSDDataModule

        dm = NSDDataModule(root=str(WORLD), feature_store=str(store), subjects=["subj01"])
        dm.setup()
        k = dm.eval_index
        X = np.asarray(dm.train_set.trials[k].data, dtype=np.float32)
        Y = np.asarray(dm.train_set.targets[k], dtype=np.float32).reshape(len(X), -1)
        return torch.from_numpy(X), torch.from_numpy(Y), f"{WORLD} subj01"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5850, 4233), dtype=np.float32)
    Y = X[:, :128] * 0.1 + rng.standard_normal((5850, 128), dtype=np.float32)
    return torch.from_numpy(X), torch.from_numpy(Y), "synthetic, the demo's shape"


def sampling_batches(batches: list[int], repeats: int, threads: int = 2) -> dict:
    """Seconds per ``generate`` call of the demo's shape for each images-per-call batch size."""
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.embedded.generator import get_sim_generator

    torch.set_num_threads(threads)
    encoder = get_sim_clip("default", progress=False)
    generator = get_sim_generator(
        encoder.encode_image, preset="default", embed_key=str(encoder.settings)
    )
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(64, generator.embed_dim, generator=g)
    init = torch.rand(64, 3, 16, 16, generator=g)
    timings: dict[str, list[float]] = {}
    images: dict[int, torch.Tensor] = {}
    for _ in range(repeats):
        for batch in batches:
            start = time.perf_counter()
            images[batch] = generator.generate(
                embeds,
                init,
                strength=0.45,
                num_samples=4,
                guidance_scale=3.0,
                generator=torch.Generator().manual_seed(0),
                batch_size=batch,
            )
            timings.setdefault(str(batch), []).append(round(time.perf_counter() - start, 2))
    first = images[batches[0]]
    return {
        "threads": threads,
        "shape": {"trials": 64, "samples": 4, "strength": 0.45, "guidance": 3.0},
        "wall_s": timings,
        "max_abs_difference_from_first": {
            str(b): float((images[b] - first).abs().max()) for b in batches
        },
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--part", choices=["ridge", "sampling"], default=None)
    parser.add_argument("--sampling-batches", type=int, nargs="+", default=[256, 64, 32, 16])
    args = parser.parse_args(argv)
    summary: dict = {"machine": platform.processor() or platform.machine()}
    if args.part in (None, "sampling"):
        summary["sampling"] = sampling_batches(args.sampling_batches, args.repeats)
    if args.part in (None, "ridge"):
        summary.update(ridge_rung(args.repeats))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


def ridge_rung(repeats: int) -> dict:
    """Refit vs downdate CV of the ladder's ridge rung, one thread."""
    torch.set_num_threads(1)
    X, Y, source = ridge_rung_problem()
    timings: dict[str, dict[str, list[float]]] = {}
    solutions = {}
    for _ in range(repeats):
        for solver in ("refit", "downdate"):
            wall, cpu = time.perf_counter(), time.process_time()
            solutions[solver] = solve_ridge_cv(X, Y, cv_solver=solver)
            entry = timings.setdefault(solver, {"wall_s": [], "cpu_s": []})
            entry["wall_s"].append(round(time.perf_counter() - wall, 2))
            entry["cpu_s"].append(round(time.process_time() - cpu, 2))
    refit, downdate = solutions["refit"], solutions["downdate"]
    chosen = refit.alpha.numpy()
    return {
        "threads": 1,
        "data": source,
        "shape": {
            "n_trials": int(X.shape[0]),
            "n_voxels": int(X.shape[1]),
            "n_targets": int(Y.shape[1]),
        },
        "ridge_rung": {
            **timings,
            "speedup_wall": round(
                float(
                    np.median(timings["refit"]["wall_s"]) / np.median(timings["downdate"]["wall_s"])
                ),
                2,
            ),
            "alphas_equal_fraction": float((refit.alpha == downdate.alpha).float().mean()),
            "chosen_alphas": {
                str(a): int(c) for a, c in zip(*np.unique(chosen, return_counts=True))
            },
            "max_abs_cv_score_difference_at_chosen": float(
                (refit.cv_score - downdate.cv_score).abs().max()
            ),
            "max_abs_weight_difference": float((refit.weights - downdate.weights).abs().max()),
        },
    }


if __name__ == "__main__":
    main()
