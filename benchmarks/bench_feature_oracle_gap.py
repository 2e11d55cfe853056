"""Why every target's feature oracle sits far below the oracle: a measured diagnosis.

The feature oracle (:mod:`neurodecode.demo.ladder`) regresses the true noise-free responses of the
training images on a target space, then scores the candidates' *predicted* responses with the
*true* noise covariance (low rank + diagonal: the sources' neural noise seen through the point
spread, global factors, thermal noise) as if they were exact. This benchmark asks how much of
the gap is the target space and how much the estimator / scoring:

``planted``
    The same estimator on the world's own generating features (``ground_truth.h5``; all five
    blocks the voxels read, the low-level blocks alone, semantic + attributes alone): how close
    to the oracle can *any* target get?
``scoring``
    The same predictions scored (a) with the true noise (the rung as defined), (b) with its
    diagonal only, (c) with the true noise plus the estimator's own prediction-error covariance
    (``error_aware``: ``C / n + E``, ``E`` = diagonal + the ``rank`` leading components of the
    residuals of a model fitted on 80 % of the fit images and tested on the other 20 %; no
    candidate takes part), (d) true noise after projecting the predictions on the signal
    subspace of the fit images' noise-free responses (``projected``).
``voxels``
    The oracle restricted to early / category / other voxels (and all but each); the prediction
    R² per voxel class on the candidates.
``learning curve``
    The planted linear feature oracle vs the number of fit images.
``spaces``
    Image-only target spaces (:mod:`neurodecode.features.targets`, sim-clip), each scored every
    way on the validation split (``ladder.validation_split``: 1,600 fit / 400 held-out training
    images); the best by the mean of the two validation top-1s of the chosen scoring, then on the
    300 test trials (fit on all 2,000 training images). Nothing is chosen on test trials.

Run: ``python -m benchmarks.bench_feature_oracle_gap [--data DIR] [--parts]`` (needs the default
world; ``--spaces`` needs sim-clip and bench_targets' parts cache). Writes
``benchmarks/results/feature_oracle_gap.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "feature_oracle_gap.json"
PLANTED = {
    "planted_all": ("energy", "luminance", "colour", "semantic", "attributes"),
    "planted_lowlevel": ("energy", "luminance", "colour"),
    "planted_semantic": ("semantic", "attributes"),
}
CLASSES = ("early", "category", "other")
RANKS = (0, 16, 64, 256)
TOP1 = ("brain_to_image_top1", "image_to_brain_top1")


def _identify(scores: np.ndarray, n_way: int, seed: int = 0) -> dict:
    from neurodecode.demo.ladder import N_DRAWS, oracle_identification

    out = oracle_identification(scores, n_way=n_way, n_draws=N_DRAWS, seed=seed)
    return {k: round(float(out[k]), 4) for k in (*TOP1, "brain_to_image_top5")}


def _noise_parts(noise, n_repeats: int, mask: np.ndarray | None = None):
    factors = noise.factors
    d2 = noise.independent_sd**2
    if mask is not None:
        factors, d2 = factors[mask], d2[mask]
    return factors / np.sqrt(n_repeats), d2 / n_repeats


def true_scores(observed, predicted, noise, n_repeats, mask=None) -> np.ndarray:
    """Log-likelihoods under the true noise (the feature oracle's scoring), optionally on a voxel
    subset (the marginal of the Gaussian: rows of the factors)."""
    from neurodecode.sim.noise import whitened_quadratics

    factors, d2 = _noise_parts(noise, n_repeats, mask)
    if mask is not None:
        observed, predicted = observed[:, mask], predicted[:, mask]
    return whitened_quadratics(observed, predicted, factors, d2)


def error_aware_scores(observed, predicted, noise, n_repeats, residuals, rank) -> np.ndarray:
    """Log-likelihoods under ``C / n + E``: the true noise plus the prediction-error covariance
    ``E`` (diagonal + ``rank`` leading components of ``residuals``, (n_images, V), from images
    the encoder was not fitted on)."""
    from neurodecode.sim.noise import whitened_quadratics

    factors, d2 = _noise_parts(noise, n_repeats)
    r = residuals - residuals.mean(0)
    total = (r**2).mean(0)
    columns = [factors.toarray()]
    if rank:
        _, s, vt = np.linalg.svd(r / np.sqrt(len(r)), full_matrices=False)
        lead = vt[:rank].T * s[:rank]
        total = total - (lead**2).sum(1)
        columns.append(lead)
    return whitened_quadratics(
        observed, predicted, np.hstack(columns), d2 + np.maximum(total, 1e-12)
    )


def fit_predict(x_fit, y_fit, x_new, estimator: str, seed: int = 0) -> np.ndarray:
    """``estimator="linear"``: z-scored linear ridge (per-voxel CV alpha); ``"feature_oracle"``:
    :func:`neurodecode.demo.ladder.feature_oracle_predictions` (linear or RFF kernel per voxel)."""
    from neurodecode.demo.ladder import feature_oracle_predictions
    from neurodecode.models.ridge import RidgeRegression

    if estimator == "feature_oracle":
        return feature_oracle_predictions(x_fit, y_fit, x_new, seed)[0]
    mean, sd = x_fit.mean(0), x_fit.std(0) + 1e-6
    model = RidgeRegression().fit(((x_fit - mean) / sd).astype(np.float32), y_fit)
    return np.asarray(model.predict(((x_new - mean) / sd).astype(np.float32)), np.float64)


def predictions_and_residuals(x_fit, y_fit, x_new, estimator, seed=0, inner=0.2):
    """Candidate predictions from all fit images, and residuals of an inner 80/20 split of the
    fit images (the error covariance's estimate: no candidate takes part)."""
    rng = np.random.default_rng(seed + 1)
    held = np.zeros(len(x_fit), dtype=bool)
    held[rng.permutation(len(x_fit))[: round(inner * len(x_fit))]] = True
    inner_pred = fit_predict(x_fit[~held], y_fit[~held], x_fit[held], estimator, seed)
    return fit_predict(x_fit, y_fit, x_new, estimator, seed), y_fit[held] - inner_pred


def r2_by_class(clean: np.ndarray, predicted: np.ndarray, kind: np.ndarray) -> dict:
    """Mean over voxels of R² of the predicted vs true noise-free responses, per voxel class."""
    sse = ((clean - predicted) ** 2).sum(0)
    sst = ((clean - clean.mean(0)) ** 2).sum(0)
    r2 = 1 - sse / np.maximum(sst, 1e-12)
    out = {c: round(float(r2[kind == c].mean()), 4) for c in CLASSES}
    out["all"] = round(float(r2.mean()), 4)
    return out


def score_all_ways(data, predicted, residuals, clean_fit, n_way, ranks=RANKS) -> dict:
    """Identification of ``predicted`` under every scoring (see the module docstring)."""
    from neurodecode.demo.ladder import signal_projection
    from neurodecode.sim.oracle import oracle_scores

    n = data.n_repeats
    rows = {
        "true_noise": _identify(true_scores(data.observed, predicted, data.noise, n), n_way),
        "diagonal_noise": _identify(
            oracle_scores(data.observed, predicted, data.noise.total_sd**2 / n), n_way
        ),
    }
    for rank in ranks:
        rows[f"error_aware_rank{rank}"] = _identify(
            error_aware_scores(data.observed, predicted, data.noise, n, residuals, rank), n_way
        )
    projected, k = signal_projection(clean_fit, predicted)
    rows["projected"] = _identify(true_scores(data.observed, projected, data.noise, n), n_way)
    rows["projected"]["rank"] = k
    return rows


#: encoding-identification variants: the demo's (diagonal noise, training residuals) and a
#: low-rank + diagonal residual covariance (Ledoit-Wolf shrinkage, out-of-fold residuals)
ENCODERS = {
    "diagonal_train": {"noise": "diagonal", "residuals": "train"},
    "shrinkage_cv_rank256": {"noise": "shrinkage", "residuals": "cv", "noise_rank": 256},
    "shrinkage_cv_rank1024": {"noise": "shrinkage", "residuals": "cv", "noise_rank": 1024},
}


def _space_matrix(name: str, parts_file: Path, data: Path, train_ids: np.ndarray):
    from benchmarks.bench_targets import space_blocks
    from neurodecode.data.stimuli import open_stimuli
    from neurodecode.features.targets import standardise_blocks

    parts = dict(np.load(parts_file))
    all_ids = np.asarray(open_stimuli(data).ids).astype(np.int64)
    row_of = {int(i): k for k, i in enumerate(all_ids)}
    reference = np.array([row_of[int(i)] for i in train_ids])
    matrix = standardise_blocks(space_blocks(name, parts), reference)

    def of(ids: np.ndarray) -> np.ndarray:
        return matrix[[row_of[int(i)] for i in np.asarray(ids)]].astype(np.float32)

    return of, int(matrix.shape[1])


def encoding_rungs(args, train_ids, fit_ids, val_ids) -> dict:
    """Encoding identification (Kay et al. 2008) on session-z-scored single trials, every space
    of ``args.encoding`` x every :data:`ENCODERS` variant on the validation images (fit on the
    fit images' trials), the best variant per space then on the 300 test trials."""
    from neurodecode.data.nsd import read_nsd_betas
    from neurodecode.evaluate.retrieval import n_way_identification
    from neurodecode.models.encoding_identification import EncodingIdentification
    from neurodecode.sim.ground_truth import read_ground_truth

    sharedix = read_ground_truth(args.data).sharedix
    trials = read_nsd_betas(args.data, args.subject, progress=False)
    ids = np.asarray(trials.stimulus_id).astype(np.int64)
    train = trials.split == "train"

    def averaged(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.stack([trials.data[mask & (ids == i)].mean(0) for i in images])

    out: dict = {}
    for name in args.encoding:
        features_of, dims = _space_matrix(name, args.parts, args.data, train_ids)
        out[name] = {"dims": dims, "validation": {}}
        for split, fit, cand, mask in (
            ("validation", fit_ids, val_ids, train),
            ("test", train_ids, sharedix, trials.split == "test"),
        ):
            rows = train & np.isin(ids, fit)
            brain = averaged(cand, mask)
            variants = ENCODERS
            if split == "test":
                val = out[name]["validation"]
                best = max(val, key=lambda v: _mean_top1(val[v]))
                variants = {best: ENCODERS[best]} | {"diagonal_train": ENCODERS["diagonal_train"]}
                out[name]["chosen_on_validation"] = best
                out[name]["test"] = {}
            for variant, settings in variants.items():
                t0 = time.perf_counter()
                geometry = {"n_voxels": {args.subject: brain.shape[1]}, "target_shape": [dims]}
                model = EncodingIdentification(geometry, **settings)
                model.fit(features_of(ids[rows]), trials.data[rows], groups=ids[rows])
                scores = np.asarray(model.identify(brain, features_of(cand), 3.0))
                metrics = n_way_identification(scores, min(300, len(cand)), 30, seed=0)
                row = {k: round(float(metrics[k]), 4) for k in (*TOP1, "brain_to_image_top5")}
                row["fit_s"] = round(time.perf_counter() - t0, 1)
                out[name][split][variant] = row
                print(f"enc-id {name} {variant} {split}: {row}", flush=True)
    return out


def _mean_top1(row: dict) -> float:
    return (row[TOP1[0]] + row[TOP1[1]]) / 2


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sim/default"))
    parser.add_argument("--subject", default="subj01")
    parser.add_argument("--cache", type=Path, default=Path("data/gap"))
    parser.add_argument("--parts", type=Path, default=Path("data/targets/parts-default.npz"))
    parser.add_argument(
        "--estimator", default="feature_oracle", choices=("feature_oracle", "linear")
    )
    parser.add_argument("--spaces", nargs="*", default=None, help="image-only spaces to score")
    parser.add_argument("--curve", nargs="*", type=int, default=[250, 500, 1000, 2000])
    parser.add_argument("--skip-planted", action="store_true")
    parser.add_argument(
        "--encoding",
        nargs="*",
        default=None,
        help="spaces for encoding identification on session-z-scored trials (val, then test)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from neurodecode.data.nsd import read_nsd_betas
    from neurodecode.demo.ladder import validation_split
    from neurodecode.sim.ground_truth import read_ground_truth, read_subject_truth
    from neurodecode.sim.oracle import oracle_test_data

    started = time.perf_counter()
    world = read_ground_truth(args.data)
    truth = read_subject_truth(args.data, args.subject)
    trials = read_nsd_betas(args.data, args.subject, zscore=False, progress=False)
    train = trials.split == "train"
    train_ids = np.unique(trials.stimulus_id[train]).astype(np.int64)
    fit_ids, val_ids = validation_split(train_ids)
    rows = np.isin(trials.stimulus_id, val_ids) & train
    val = oracle_test_data(
        truth, val_ids, trials.data[rows], trials.stimulus_id[rows], trials.session[rows]
    )
    test_rows = trials.split == "test"
    test = oracle_test_data(
        truth,
        world.sharedix,
        trials.data[test_rows],
        trials.stimulus_id[test_rows],
        trials.session[test_rows],
    )
    del trials
    kind = truth.kind
    splits = {
        "validation": (fit_ids, val_ids, val, min(300, len(val_ids))),
        "test": (train_ids, world.sharedix, test, 300),
    }
    result: dict = {
        "subject": args.subject,
        "estimator": args.estimator,
        "n_voxels": {c: int((kind == c).sum()) for c in CLASSES},
        "n_sources": len(truth.sources.ijk) if truth.sources is not None else None,
        "noise_share": {
            k: round(float(v.mean()), 3) for k, v in truth.noise.variance_shares().items()
        },
    }
    print(f"voxels {result['n_voxels']}, noise shares {result['noise_share']}", flush=True)

    # the oracle, and which voxels carry it
    oracle = {}
    for split, (_, _, data, n_way) in splits.items():
        oracle[split] = {"all": _identify(data.scores(), n_way)}
        for c in CLASSES:
            for name, mask in ((c, kind == c), (f"all_but_{c}", kind != c)):
                oracle[split][name] = _identify(
                    true_scores(data.observed, data.responses, data.noise, data.n_repeats, mask),
                    n_way,
                )
        print(f"oracle {split}: {oracle[split]}", flush=True)
    result["oracle"] = oracle

    standardised = world.standardised_features()

    def planted(ids: np.ndarray, blocks: tuple[str, ...]) -> np.ndarray:
        cols = np.concatenate([np.arange(*world.features.blocks[b]) for b in blocks])
        return standardised[np.asarray(ids)][:, cols]

    args.cache.mkdir(parents=True, exist_ok=True)

    def evaluate(name: str, features_of, estimator: str) -> dict:
        out = {}
        for split, (fit, cand, data, n_way) in splits.items():
            cache = args.cache / f"{name}-{estimator}-{split}.npz"
            clean_fit = truth.responses_to(fit)
            if cache.is_file():
                saved = np.load(cache)
                predicted, residuals = saved["predicted"], saved["residuals"]
            else:
                t0 = time.perf_counter()
                predicted, residuals = predictions_and_residuals(
                    features_of(fit), clean_fit, features_of(cand), estimator
                )
                np.savez(cache, predicted=predicted, residuals=residuals)
                print(f"  {name} {split} fitted in {time.perf_counter() - t0:.0f} s", flush=True)
            out[split] = score_all_ways(data, predicted, residuals, clean_fit, n_way)
            out[split]["r2"] = r2_by_class(data.responses, predicted, kind)
            summary = {k: (v[TOP1[0]], v[TOP1[1]]) for k, v in out[split].items() if k != "r2"}
            print(f"{name} [{estimator}] {split}: {summary} r2 {out[split]['r2']}", flush=True)
        return out

    if not args.skip_planted:
        result["planted"] = {}
        for name, blocks in PLANTED.items():
            result["planted"][name] = evaluate(
                name, lambda ids, b=blocks: planted(ids, b), args.estimator
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")

        # learning curve: planted, linear, test trials, fit on the first n training images
        curve = {}
        features = PLANTED["planted_all"]
        order = np.random.default_rng(0).permutation(train_ids)
        for n_fit in args.curve:
            fit = np.sort(order[:n_fit])
            clean_fit = truth.responses_to(fit)
            predicted, residuals = predictions_and_residuals(
                planted(fit, features), clean_fit, planted(world.sharedix, features), "linear"
            )
            curve[n_fit] = score_all_ways(test, predicted, residuals, clean_fit, 300, (0, 64))
            curve[n_fit]["r2"] = r2_by_class(test.responses, predicted, kind)
            print(f"curve n={n_fit}: {curve[n_fit]}", flush=True)
        result["learning_curve_planted_linear_test"] = curve
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    if args.spaces:
        from benchmarks.bench_targets import space_blocks
        from neurodecode.data.stimuli import open_stimuli
        from neurodecode.features.targets import standardise_blocks

        parts = dict(np.load(args.parts))
        all_ids = np.asarray(open_stimuli(args.data).ids).astype(np.int64)
        row_of = {int(i): k for k, i in enumerate(all_ids)}
        reference = np.array([row_of[int(i)] for i in train_ids])
        result["spaces"] = {}
        for name in args.spaces:
            matrix = standardise_blocks(space_blocks(name, parts), reference)

            def of(ids, matrix=matrix):
                return matrix[[row_of[int(i)] for i in np.asarray(ids)]].astype(np.float64)

            result["spaces"][name] = evaluate(name, of, args.estimator)
            result["spaces"][name]["dims"] = int(matrix.shape[1])
            args.out.write_text(json.dumps(result, indent=2) + "\n")

    if args.encoding:
        result["encoding_identification"] = encoding_rungs(args, train_ids, fit_ids, val_ids)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    result["total_s"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['total_s']} s)")
    return result


if __name__ == "__main__":
    main()
