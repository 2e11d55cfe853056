"""Ridge with per-target cross-validated alphas: our torch solver against scikit-learn's RidgeCV.

Problem: a decoder-sized regression (default 4000 train trials x 3000 features -> 512 targets,
1000 held-out trials) with correlated features and per-target noise levels, so the best alpha
differs across targets. Compared: ``solve_ridge_cv`` (5-fold CV, one SVD per fold, float64 and
float32) and ``sklearn.linear_model.RidgeCV(alpha_per_target=True)`` (efficient leave-one-out,
the only scikit-learn mode with one alpha per target), both on the same alpha grid. Reported:
fit seconds (wall and CPU: the CPU time is the fair figure on a shared machine), held-out R² per target (mean and agreement), and how often the chosen alphas agree.

Run: ``.venv/bin/python -m benchmarks.bench_ridge [--n-train 4000 --n-features 3000 --n-targets 512]``
Writes ``benchmarks/results/ridge.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from neurodecode.models.ridge import DEFAULT_ALPHAS, solve_ridge_cv

RESULTS = Path(__file__).resolve().parent / "results" / "ridge.json"


def make_problem(n_train: int, n_test: int, n_features: int, n_targets: int, seed: int = 0):
    """Correlated features (low-rank + isotropic), dense weights, per-target noise from 0.3 to 30."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    rank = max(n_features // 10, 1)
    X = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, n_features)) / np.sqrt(rank)
    X += rng.standard_normal((n, n_features))
    W = rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features)
    clean = X @ W
    noise_sd = np.logspace(np.log10(0.3), np.log10(30), n_targets) * clean.std(0)
    Y = clean + rng.standard_normal((n, n_targets)) * noise_sd
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:]


def r2_per_target(Y: np.ndarray, Y_pred: np.ndarray) -> np.ndarray:
    return 1.0 - ((Y - Y_pred) ** 2).sum(0) / ((Y - Y.mean(0)) ** 2).sum(0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-features", type=int, default=3000)
    parser.add_argument("--n-targets", type=int, default=512)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--skip-sklearn", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    X, Y, X_test, Y_test = make_problem(args.n_train, args.n_test, args.n_features, args.n_targets)
    alphas = DEFAULT_ALPHAS
    rows: dict[str, dict] = {}

    for name, dtype in (("ours_float64", np.float64), ("ours_float32", np.float32)):
        start, cpu_start = time.perf_counter(), time.process_time()
        solution = solve_ridge_cv(
            X.astype(dtype), Y.astype(dtype), alphas=alphas, n_folds=args.n_folds
        )
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        r2 = r2_per_target(Y_test, solution.predict(X_test.astype(dtype)).astype(np.float64))
        rows[name] = {"seconds": seconds, "cpu": cpu, "r2": r2, "alpha": solution.alpha.numpy()}
        print(f"{name}: {seconds:.1f} s", flush=True)

    if not args.skip_sklearn:
        start, cpu_start = time.perf_counter(), time.process_time()
        reference = RidgeCV(alphas=alphas, alpha_per_target=True).fit(X, Y)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        r2 = r2_per_target(Y_test, reference.predict(X_test))
        rows["sklearn_ridgecv_loo"] = {
            "seconds": seconds,
            "cpu": cpu,
            "r2": r2,
            "alpha": reference.alpha_,
        }
        print(f"sklearn_ridgecv_loo: {seconds:.1f} s", flush=True)

    base = rows["ours_float64"]
    summary: dict = {
        "problem": {
            "n_train": args.n_train,
            "n_test": args.n_test,
            "n_features": args.n_features,
            "n_targets": args.n_targets,
            "n_alphas": len(alphas),
            "n_folds": args.n_folds,
        },
        "machine": {
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "methods": {},
    }
    print(
        f"\n{'method':<22}{'fit s':>8}{'cpu s':>8}{'mean R2':>10}{'|dR2| max':>11}{'same alpha':>12}"
    )
    for name, row in rows.items():
        entry = {
            "seconds": round(row["seconds"], 3),
            "cpu_seconds": round(row["cpu"], 3),
            "test_r2_mean": float(row["r2"].mean()),
            "test_r2_max_abs_diff_vs_ours_float64": float(np.abs(row["r2"] - base["r2"]).max()),
            "test_r2_corr_vs_ours_float64": float(np.corrcoef(row["r2"], base["r2"])[0, 1]),
            "fraction_same_alpha_as_ours_float64": float(np.mean(row["alpha"] == base["alpha"])),
            "alpha_log10_mean_abs_diff": float(
                np.abs(np.log10(row["alpha"]) - np.log10(base["alpha"])).mean()
            ),
        }
        summary["methods"][name] = entry
        print(
            f"{name:<22}{entry['seconds']:>8.1f}{entry['cpu_seconds']:>8.1f}"
            f"{entry['test_r2_mean']:>10.4f}"
            f"{entry['test_r2_max_abs_diff_vs_ours_float64']:>11.4f}"
            f"{entry['fraction_same_alpha_as_ours_float64']:>12.2f}"
        )
    if "sklearn_ridgecv_loo" in rows:
        # wall-clock ratios; on a shared machine compare cpu_seconds instead
        summary["speedup_ours_float64_vs_sklearn"] = (
            rows["sklearn_ridgecv_loo"]["seconds"] / rows["ours_float64"]["seconds"]
        )
        summary["speedup_ours_float32_vs_sklearn"] = (
            rows["sklearn_ridgecv_loo"]["seconds"] / rows["ours_float32"]["seconds"]
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {RESULTS}")
    return summary


if __name__ == "__main__":
    main()
