"""Retrieval quality and training throughput on the default simulated world, side by side.

1. ``single_subject``: the MindEye-style head + prior of ``experiments/sim_retrieval.yaml`` on
   subj01 — ours (head, backbone, prior output) vs ridge vs the oracle, 300-way top-1/top-5, and
   training samples/s.
2. ``low_data_subject``: subj02 with only its first session of training trials, trained alone vs
   together with subj01 in the shared-latent (MindEye2-style) model of
   ``experiments/sim_multisubject.yaml``; ridge on the same subj02 trials for reference.

Run: ``.venv/bin/python -m benchmarks.bench_retrieval`` (prepares data/sim/default and sim-clip
like ``make demo``). Writes ``benchmarks/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from neurodecode.data.datamodule import NSDDataModule
from neurodecode.demo import evaluate_decoder, fit_decoder, prepare_world

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "retrieval.json"


def _top1(m: dict) -> dict:
    keep = ("brain_to_image_top1", "image_to_brain_top1", "brain_to_image_top5", "n_way")
    return {k: m[k] for k in keep if k in m} if m else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data/sim/default")
    parser.add_argument("--max-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    store, model_name, layer, _ = prepare_world(
        args.data, REPO / "datasets/sim/default.yaml", "default"
    )
    single_cfg = yaml.safe_load((REPO / "experiments/sim_retrieval.yaml").read_text())
    multi_cfg = yaml.safe_load((REPO / "experiments/sim_multisubject.yaml").read_text())
    trainer = dict(single_cfg["trainer"], enable_progress_bar=False)
    if args.max_epochs:
        trainer["max_epochs"] = args.max_epochs
    common = dict(
        root=str(args.data),
        feature_store=str(store),
        feature_model=model_name,
        feature_layer=layer,
        batch_size=32,
    )
    runs = REPO / "runs/bench_retrieval"
    result: dict = {"date": time.strftime("%Y-%m-%d"), "max_epochs": trainer["max_epochs"]}

    print("[bench] single subject: ours vs ridge vs oracle", flush=True)
    dm = NSDDataModule(subjects=["subj01"], **common)
    model, training = fit_decoder(dm, single_cfg["model"]["init_args"], trainer, runs / "single")
    m = evaluate_decoder(model, dm, args.data)
    result["single_subject"] = {
        "ours": _top1(m["retrieval"]),
        "ours_prior_output": _top1(m["prior"]),
        "prior_cosine_to_true": (m["prior"] or {}).get("cosine_to_true"),
        "ridge": _top1(m["baselines"]["ridge"]),
        "oracle": _top1(m["oracle"]),
        "ratio_to_oracle": round(m["ratio_to_oracle"], 3),
        "training": training,
    }

    print("[bench] low-data subject: alone vs shared latent with subj01", flush=True)
    low = {"subj02": 1}
    dm_alone = NSDDataModule(subjects=["subj02"], max_train_sessions=low, **common)
    model_args = {k: v for k, v in multi_cfg["model"]["init_args"].items() if k != "shared_latent"}
    alone, _ = fit_decoder(dm_alone, model_args, trainer, runs / "alone")
    m_alone = evaluate_decoder(alone, dm_alone, args.data, with_prior=False)
    dm_multi = NSDDataModule(
        subjects=["subj01", "subj02"], eval_subject="subj02", max_train_sessions=low, **common
    )
    multi, _ = fit_decoder(dm_multi, multi_cfg["model"]["init_args"], trainer, runs / "multi")
    m_multi = evaluate_decoder(multi, dm_multi, args.data, with_prior=False)
    result["low_data_subject"] = {
        "subject": "subj02",
        "train_trials": len(dm_alone.train_set),
        "single_subject": _top1(m_alone["retrieval"]),
        "multi_subject": _top1(m_multi["retrieval"]),
        "ridge": _top1(m_alone["baselines"]["ridge"]),
        "oracle": _top1(m_alone["oracle"]),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    s, lo = result["single_subject"], result["low_data_subject"]
    print("| 300-way brain->image top-1 | ours | ridge | oracle |\n|---|---:|---:|---:|")
    print(
        f"| subj01, all sessions | {s['ours']['brain_to_image_top1']:.3f} | "
        f"{s['ridge']['brain_to_image_top1']:.3f} | {s['oracle']['brain_to_image_top1']:.3f} |"
    )
    print(
        f"| subj02, 1 session, alone | {lo['single_subject']['brain_to_image_top1']:.3f} | "
        f"{lo['ridge']['brain_to_image_top1']:.3f} | {lo['oracle']['brain_to_image_top1']:.3f} |"
    )
    print(
        f"| subj02, 1 session, + subj01 (shared latent) | "
        f"{lo['multi_subject']['brain_to_image_top1']:.3f} | | |"
    )
    print(f"training: {s['training']['samples_per_s']} samples/s")
    return result


if __name__ == "__main__":
    main()
