"""The MindEye-style retrieval head on a richer target space (``pooled+rectified8``) vs the
demo's head on sim-clip's pooled embedding, chosen on validation trials, then on the test trials.

Each head is fitted through LightningCLI as the demo fits its decoder
(:func:`neurodecode.cli.lightning.fit_experiment`), from its experiment YAML
(``experiments/sim_retrieval.yaml``: pooled, ``experiments/sim_retrieval_rich.yaml``: the rich
space), with the datamodule holding out ``--val-images`` of subj01's training images (all their
repeats averaged; the datamodule's own validation split, the one the demo's reconstruction
chooses its settings on). Scored, each head by cosine in its own target space:

- **validation**: n-way top-1 (n = the number of held-out images) in both directions;
- **test**: the 300 averaged test trials, with the demo's ladder rungs in that head's space
  (:func:`neurodecode.demo.ladder.decoder_rungs`: encoding identification, ridge, ours, ours
  fused with encoding identification), and, once both heads are done, each head fused with
  encoding identification in the rich space.

The ``*_both`` heads train on subj01 and subj02 through one shared latent (MindEye2's
recipe: a linear adapter per subject, one backbone; ``shared_latent: true``), evaluated on
subj01 with the same held-out images, to see what a second subject's images add.

Nothing is chosen on the test trials. Run one head per call (``--head pooled`` then ``--head
rich``; without ``--head``, as ``make bench`` runs it: ``demo``, the demo's own decoder); results merge into ``benchmarks/results/rich_head.json`` and the test score matrices
are kept in ``--runs`` for the fused rows. Needs the default world and a store holding both
targets (``neurodecode extract`` with ``targets:``; see ``experiments/extract_rich_targets.yaml``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "rich_head.json"
REPO = Path(__file__).resolve().parents[1]
#: the demo's diffusion prior (experiments/sim_retrieval.yaml)
DEMO_PRIOR = {"prior": {"depth": 2, "num_heads": 4}, "prior_weight": 30.0}
#: MindEye2's shared latent over both subjects (one adapter each), evaluated on subj01
BOTH_SUBJECTS = {"subjects": ["subj01", "subj02"], "eval_subject": "subj01"}
#: head -> (experiment YAML, model overrides, data overrides)
HEADS = {
    "pooled": (REPO / "experiments/sim_retrieval.yaml", {}, {}),  # the demo's head, with its prior
    "pooled_no_prior": (REPO / "experiments/sim_retrieval.yaml", {"prior": None}, {}),
    "pooled_both": (
        REPO / "experiments/sim_retrieval.yaml",
        {"shared_latent": True},
        BOTH_SUBJECTS,
    ),
    "rich": (REPO / "experiments/sim_retrieval_rich.yaml", {}, {}),  # no prior: the validation pick
    "rich_prior": (REPO / "experiments/sim_retrieval_rich.yaml", DEMO_PRIOR, {}),
    "rich_both": (
        REPO / "experiments/sim_retrieval_rich.yaml",
        {"shared_latent": True},
        BOTH_SUBJECTS,
    ),
    # make demo's decoder as it stands (rich target, both subjects, 12 epochs, batch 64)
    "demo": (REPO / "experiments/sim_retrieval_rich_both.yaml", {}, {}),
}
#: the head `make bench` runs (no --head)
DEFAULT_HEAD = "demo"
TOP1 = ("brain_to_image_top1", "image_to_brain_top1")


def _rounded(metrics: dict) -> dict:
    return {k: round(float(v), 4) if isinstance(v, float) else v for k, v in metrics.items()}


def _fused_rows(runs: Path, result: dict) -> dict:
    """Each finished head's test scores fused with encoding identification in the rich space
    (:func:`~neurodecode.evaluate.retrieval.fused_identification`, 300-way)."""
    from neurodecode.evaluate.retrieval import fused_identification

    encid_file = runs / "encid_rich_test_scores.npy"
    if not encid_file.is_file():
        return {}
    likelihoods = np.load(encid_file)
    fused = {}
    for head in result:
        head_file = runs / head / "test_scores.npy"
        if head.split("-seed")[0] in HEADS and head_file.is_file():
            both = fused_identification([np.load(head_file), likelihoods], 300, 30, seed=0)
            fused[head] = _rounded({k: both[k] for k in (*TOP1, "brain_to_image_top5")})
    return fused


def _ensemble(args: argparse.Namespace) -> dict:
    """Average the unit-normalised embeddings of several finished fits (same head, other seeds)
    and score the average like one head: validation n-way and test 300-way top-1, cosine."""
    from neurodecode.evaluate.retrieval import cosine_scores, n_way_identification

    def mean_of(name: str) -> tuple[np.ndarray, np.ndarray]:
        runs = [np.load(args.runs / run / f"{name}_embeddings.npy") for run in args.ensemble]
        targets = [np.load(args.runs / run / f"{name}_targets.npy") for run in args.ensemble]
        if any(not np.array_equal(t, targets[0]) for t in targets):
            raise SystemExit(f"--ensemble: the runs' {name} targets differ (other splits?)")
        unit = [r / np.linalg.norm(r, axis=1, keepdims=True) for r in runs]
        return np.mean(unit, axis=0), targets[0]

    row = {"members": list(args.ensemble)}
    for name, n_way in (("validation", None), ("test", 300)):
        embeddings, targets = mean_of(name)
        n = len(targets) if n_way is None else min(n_way, len(targets))
        scores = cosine_scores(embeddings, targets)
        row[name] = {
            "n_way": n,
            **_rounded(
                {k: v for k, v in n_way_identification(scores, n, 30, seed=0).items() if k in TOP1}
            ),
        }
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.setdefault("ensembles", {})["+".join(args.ensemble)] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(row, indent=1), flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--head", choices=sorted(HEADS), default=None, help=f"default: {DEFAULT_HEAD}"
    )
    parser.add_argument(
        "--fuse-only",
        action="store_true",
        help="fit nothing: recompute the fused rows from the score matrices kept in --runs",
    )
    parser.add_argument("--data", type=Path, default=Path("data/sim/default"))
    parser.add_argument("--store", type=Path, default=Path("data/sim/default-features.h5"))
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--max-epochs", type=int, default=None, help="default: the YAML's")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the YAML's")
    parser.add_argument("--runs", type=Path, default=Path("runs/rich_head"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed_everything (model init, dropout); the "
        "datamodule's seed, hence the held-out images, stays the YAML's. Result key: HEAD-seedN",
    )
    parser.add_argument(
        "--data-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a datamodule argument (YAML value), e.g. repeat_average=0.5; the result "
        "key gets -KEYVALUE appended",
    )
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=None,
        metavar="RUN",
        help="fit nothing: average the unit-normalised embeddings saved by earlier fits (result "
        "keys, e.g. demo demo-seed1) and score the ensemble on validation and test",
    )
    args = parser.parse_args(argv)

    import torch

    from neurodecode.cli.config import load_config
    from neurodecode.cli.lightning import fit_experiment
    from neurodecode.demo.ladder import decoder_rungs, shared_order
    from neurodecode.evaluate.retrieval import (
        cosine_scores,
        n_way_identification,
    )
    from neurodecode.sim.ground_truth import read_ground_truth

    torch.set_num_threads(1)
    if args.fuse_only:
        result = json.loads(args.out.read_text()) if args.out.is_file() else {}
        result["fused_with_encid_rich"] = _fused_rows(args.runs, result)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"fused with enc-id (rich): {result['fused_with_encid_rich']}", flush=True)
        return result
    if args.ensemble:
        return _ensemble(args)
    if args.head is None:
        args.head = DEFAULT_HEAD
    config_file, overrides, data_overrides = HEADS[args.head]
    import yaml

    data_args = {}
    for item in args.data_arg:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--data-arg {item!r}: expected KEY=VALUE")
        data_args[name] = yaml.safe_load(value)
    key = args.head if args.seed is None else f"{args.head}-seed{args.seed}"
    key += "".join(f"-{name}{value}" for name, value in data_args.items())
    experiment = load_config(config_file, required=("model", "data", "trainer"))
    experiment["model"].setdefault("init_args", {}).update(overrides)
    init = experiment["data"].setdefault("init_args", {})
    init.update(root=str(args.data), feature_store=str(args.store), val_images=args.val_images)
    init.update(data_overrides)
    init.update(data_args)
    experiment["trainer"]["enable_progress_bar"] = False  # one line per epoch instead
    if args.max_epochs is not None:
        experiment["trainer"]["max_epochs"] = args.max_epochs
    if args.batch_size is not None:
        init["batch_size"] = args.batch_size
    if args.seed is not None:
        experiment["seed_everything"] = args.seed
    out = args.runs / key
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.head}: fitting {config_file.name} {overrides} -> {out}", flush=True)
    model, datamodule, training = fit_experiment(experiment, out)
    model.eval()
    subject = datamodule.eval_subject
    space = f"{init['feature_model']}/{init['feature_layer']}"

    val = datamodule.val_set.trials[0]
    val_targets = datamodule.val_set.targets[0].reshape(len(val), -1)
    val_emb = model.embed(val.data, subject).cpu().numpy()
    n_val = len(val)
    validation = n_way_identification(cosine_scores(val_emb, val_targets), n_val, 30, seed=0)
    np.save(out / "validation_embeddings.npy", val_emb.reshape(n_val, -1))
    np.save(out / "validation_targets.npy", val_targets)

    t0 = time.perf_counter()
    sharedix = np.asarray(read_ground_truth(args.data).sharedix)
    test_emb = model.embed(datamodule.test_trials.data, subject).cpu().numpy()
    rungs = decoder_rungs(datamodule, test_emb, sharedix, 300)
    perm = shared_order(datamodule.test_trials.stimulus_id, sharedix)
    targets = datamodule.test_targets[perm].reshape(len(perm), -1)
    scores = cosine_scores(test_emb[perm].reshape(len(perm), -1), targets)
    np.save(out / "test_scores.npy", np.asarray(scores))
    np.save(out / "test_embeddings.npy", test_emb[perm].reshape(len(perm), -1))
    np.save(out / "test_targets.npy", targets)
    if (
        args.head.startswith("rich") or args.head == "demo"
    ):  # the rich space's encoding identification, for the fused rows
        from neurodecode.models.encoding_identification import EncodingIdentification

        k = datamodule.eval_index
        train = datamodule.train_set.trials[k]
        test = datamodule.test_trials
        geometry = {
            "n_voxels": {subject: int(test.data.shape[1])},
            "target_shape": [targets.shape[1]],
        }
        encoder = EncodingIdentification(geometry, noise="diagonal", residuals="train")
        encoder.fit(
            datamodule.train_set.targets[k].reshape(len(train), -1),
            train.data,
            groups=np.asarray(train.stimulus_id),
        )
        n_repeats = float(np.median(test.repeat))
        likelihoods = np.asarray(encoder.identify(test.data[perm], targets, n_repeats))
        np.save(args.runs / "encid_rich_test_scores.npy", likelihoods)

    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result[key] = {
        "seed_everything": experiment.get("seed_everything"),
        "experiment": str(config_file.relative_to(REPO)),
        "model_overrides": overrides,
        "data_overrides": {**data_overrides, **data_args},
        "target_space": space,
        "target_dims": int(np.prod(datamodule.geometry["target_shape"])),
        "training": training,
        "threads": torch.get_num_threads(),
        "validation": {"n_way": n_val, **_rounded({k: validation[k] for k in TOP1})},
        "test": {name: _rounded(row) for name, row in rungs.items()},
        "test_ladder_s": round(time.perf_counter() - t0, 1),
    }
    result["fused_with_encid_rich"] = _fused_rows(args.runs, result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result[key], indent=1), flush=True)
    print(f"fused with enc-id (rich): {result.get('fused_with_encid_rich')}", flush=True)
    return result


if __name__ == "__main__":
    main()
