"""Does training on both subjects help the subject with plenty of data? (issue 14 item 2)

The demo's decoder sees only ``subj01``'s 2,000 training images although the default world's
``subj02`` has 2,000 more (different images, the same 300 shared test images). MindEye2 trains one
shared latent on every subject (a linear adapter per subject into it, one backbone); this
benchmark fits ``experiments/sim_retrieval.yaml`` twice with the same trainer settings and seed:

- ``alone``: ``subjects: [subj01]`` (the demo's decoder);
- ``both``: ``subjects: [subj01, subj02]``, ``shared_latent: true``, evaluated on ``subj01``.

Both hold out the same ``--val-images`` of subj01's training images (the datamodule's seeded
choice) and are compared first on them (``n``-way top-1 among the held-out images, both
directions, 30 draws): that is the split that decides. The 300-way test numbers are reported
beside, for the record. Writes ``benchmarks/results/both_subjects[_<experiment>].json``.

Run: ``python -m benchmarks.bench_both_subjects [--max-epochs 20] [--val-images 200]
[--experiment experiments/sim_retrieval_rich.yaml --out runs/bench_both_subjects_rich]``
(needs ``data/sim/default`` and its feature store, as ``make demo`` writes them).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"


def arm_config(base: dict, arm: str, world: Path, store: Path, args) -> dict:
    """``base`` (the demo's experiment) set up for one arm."""
    config = copy.deepcopy(base)
    data = config["data"]["init_args"]
    data.update(root=str(world), feature_store=str(store), val_images=args.val_images)
    data["eval_subject"] = "subj01"
    if arm == "both":
        data["subjects"] = ["subj01", "subj02"]
        config["model"]["init_args"]["shared_latent"] = True
    else:
        data["subjects"] = ["subj01"]
    config["trainer"]["max_epochs"] = args.max_epochs
    config["trainer"]["enable_progress_bar"] = False
    config["trainer"]["enable_checkpointing"] = False
    return config


def score(model, datamodule, sharedix: np.ndarray) -> dict:
    """Validation (``n``-way among the held-out images) and 300-way test top-1, both directions."""
    from neurodecode.demo.ladder import shared_order
    from neurodecode.evaluate.retrieval import cosine_scores, n_way_identification

    subject = datamodule.eval_subject
    out = {}
    val = datamodule.val_set.trials[0]
    val_targets = datamodule.val_set.targets[0].reshape(len(val), -1)
    val_emb = model.embed(val.data, subject).cpu().numpy()
    out["validation"] = n_way_identification(
        cosine_scores(val_emb, val_targets), len(val), 30, seed=0
    )
    out["validation"]["n_way"] = len(val)
    test = datamodule.test_trials
    perm = shared_order(test.stimulus_id, sharedix)
    test_emb = model.embed(test.data[perm], subject).cpu().numpy()
    targets = datamodule.test_targets[perm].reshape(len(perm), -1)
    out["test"] = n_way_identification(cosine_scores(test_emb, targets), 300, 30, seed=0)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, default=REPO / "data/sim/default")
    parser.add_argument(
        "--experiment",
        type=Path,
        default=REPO / "experiments/sim_retrieval.yaml",
        help="the head's config; e.g. experiments/sim_retrieval_rich.yaml (its target entry "
        "must be in the store: neurodecode extract --config experiments/extract_rich_targets.yaml)",
    )
    parser.add_argument("--store", type=Path, default=None, help="default: <world>-features.h5")
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--arms", nargs="+", default=["alone", "both"])
    parser.add_argument("--out", type=Path, default=REPO / "runs/bench_both_subjects")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from neurodecode.cli.lightning import fit_experiment
    from neurodecode.sim.ground_truth import read_ground_truth

    store = args.store or args.world.with_name(args.world.name + "-features.h5")
    base = yaml.safe_load(args.experiment.read_text())
    sharedix = np.asarray(read_ground_truth(args.world).sharedix)
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}, "arms": {}}
    for arm in args.arms:
        started = time.perf_counter()
        model, datamodule, info = fit_experiment(
            arm_config(base, arm, args.world, store, args), args.out / arm
        )
        scores = score(model, datamodule, sharedix)
        scores["fit_s"] = time.perf_counter() - started
        scores["train_trials"] = info.get("train_trials")
        results["arms"][arm] = scores
        v, t = scores["validation"], scores["test"]
        print(
            f"{arm}: validation {v['n_way']}-way {v['brain_to_image_top1']:.3f} / "
            f"{v['image_to_brain_top1']:.3f}; test 300-way {t['brain_to_image_top1']:.3f} / "
            f"{t['image_to_brain_top1']:.3f} ({scores['fit_s']:.0f} s)",
            flush=True,
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "both_subjects" + (
        "" if args.experiment.stem == "sim_retrieval" else "_" + args.experiment.stem
    )
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(results, indent=2, default=float))
    return results


if __name__ == "__main__":
    main()
