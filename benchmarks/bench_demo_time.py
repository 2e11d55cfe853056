"""Where ``make demo`` spends its time: per-change speedups measured side by side.

So far one change: the ridge rung of the ceiling ladder (``RidgeRegression`` from the eval
subject's single training trials to the target embedding, 5-fold CV over 17 alphas) with each
fold refitted (one ``eigh`` per training fold) against each fold downdated from the one
decomposition of all trials (:func:`neurodecode.models.ridge.solve_ridge_cv`,
``cv_solver``). The two are run alternately in one process, one thread; reported: seconds per
fit (wall and CPU), and whether the chosen alphas, the CV scores at the chosen alphas and the
weights agree.

Data: the default world's subj01 (``data/sim/default`` with its ``-features.h5``, as ``make demo``
writes them) when present, else a synthetic problem of the same shape (5,850 x 4,233 -> 128).

Run: ``.venv/bin/python -m benchmarks.bench_demo_time [--repeats 2]``
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    X, Y, source = ridge_rung_problem()
    timings: dict[str, dict[str, list[float]]] = {}
    solutions = {}
    for _ in range(args.repeats):
        for solver in ("refit", "downdate"):
            wall, cpu = time.perf_counter(), time.process_time()
            solutions[solver] = solve_ridge_cv(X, Y, cv_solver=solver)
            entry = timings.setdefault(solver, {"wall_s": [], "cpu_s": []})
            entry["wall_s"].append(round(time.perf_counter() - wall, 2))
            entry["cpu_s"].append(round(time.process_time() - cpu, 2))
    refit, downdate = solutions["refit"], solutions["downdate"]
    chosen = refit.alpha.numpy()
    summary = {
        "machine": platform.processor() or platform.machine(),
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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
