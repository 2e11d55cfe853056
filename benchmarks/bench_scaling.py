"""Data-scaling curves: 300-way top-1 against training sessions per subject (issue 14 item 5).

On the default simulated world (10 sessions of 750 trials per subject), subj01 trained on its
first 1, 2, 5 and all sessions' training trials:

- ``ours``: the decoder of ``experiments/sim_retrieval.yaml`` (retrieval head + prior) through
  :func:`neurodecode.cli.lightning.fit_experiment`, its retrieval embedding ranked by cosine;
- ``encoding_identification`` (Kay et al. 2008) and ``ridge`` on the same training trials
  (:func:`neurodecode.demo.ladder.decoder_rungs`, the demo ladder's classical rungs);

and MindEye2's new-subject step (``experiments/sim_new_subject.yaml``'s lr / weight decay:
the all-sessions subj01 decoder gets a new subj02 adapter fitted on subj02's first 1, 2, 5
sessions, everything else frozen), beside subj02's own encoding identification and ridge on
the same trials. Every number is the same 300-way protocol on the repeat-averaged test trials
of the shared images, both directions.

``--experiment`` picks another decoder recipe (e.g. ``experiments/sim_retrieval_rich_both.yaml``,
the demo's: its model, trainer and data settings — target entry, batch size, repeat averaging —
with the subjects and sessions set as above).

Run: ``.venv/bin/python -m benchmarks.bench_scaling [--experiment PATH] [--max-epochs N]
[--sessions 1 2 5 all]`` (prepares data/sim/default, sim-clip and the experiment's target entry
like ``make demo`` when they are absent).
Writes ``benchmarks/results/scaling.json`` and ``benchmarks/results/scaling.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import yaml

from neurodecode.cli.lightning import fit_experiment
from neurodecode.datamodules.nsd import NSDDataModule
from neurodecode.demo.ladder import decoder_rungs
from neurodecode.models.retrieval import fit_new_subject
from neurodecode.plotting.scaling import plot_data_scaling
from neurodecode.sim.ground_truth import read_ground_truth

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("ours", "encoding_identification", "ridge")


def _sessions(values: list[str]) -> list[int | None]:
    """``["1", "2", "all"]`` -> ``[1, 2, None]`` (None: every session)."""
    out: list[int | None] = []
    for v in values:
        if v == "all":
            out.append(None)
        elif v.isdigit() and int(v) > 0:
            out.append(int(v))
        else:
            raise SystemExit(
                f"bench_scaling: error: --sessions takes positive ints or 'all'; got {v!r}"
            )
    return out


def _experiment(cfg: dict, data_args: dict, trainer: dict) -> dict:
    return {
        "seed_everything": cfg.get("seed_everything", 0),
        "trainer": dict(trainer),
        "model": copy.deepcopy(cfg["model"]),
        "data": {"class_path": cfg["data"]["class_path"], "init_args": data_args},
    }


def _row(sessions: int, datamodule, rungs: dict, **extra) -> dict:
    k = datamodule.eval_index
    row = {
        "sessions": sessions,
        "train_trials": len(datamodule.train_set.trials[k]),
        **{name: rungs[name] for name in ("ours", "encoding_identification", "ridge", "chance")},
    }
    row.update(extra)
    return row


def _curves(result: dict) -> dict:
    curves = {}

    def add(label: str, rows: list[dict], key: str) -> None:
        curves[label] = {
            "sessions": [r["sessions"] for r in rows],
            **{
                d: [r[key][d] for r in rows] for d in ("brain_to_image_top1", "image_to_brain_top1")
            },
        }

    for key, label in (
        ("ours", "ours (subj01)"),
        ("encoding_identification", "encoding identification (subj01)"),
        ("ridge", "ridge (subj01)"),
    ):
        add(label, result["subj01"], key)
    if result.get("new_subject"):
        add("ours, new subject (subj02)", result["new_subject"], "ours")
        add("encoding identification (subj02)", result["new_subject"], "encoding_identification")
        add("ridge (subj02)", result["new_subject"], "ridge")
    return curves


def table(result: dict) -> str:
    """The markdown table of ``result`` (one row per subject and session count)."""
    lines = [
        "| subject, sessions (training trials) | ours | encoding identification | ridge |",
        "|---|---:|---:|---:|",
    ]

    def cell(rung: dict) -> str:
        return f"{rung['brain_to_image_top1']:.3f} / {rung['image_to_brain_top1']:.3f}"

    for label, key in (("subj01", "subj01"), ("subj02, new subject", "new_subject")):
        for r in result.get(key, []):
            lines.append(
                f"| {label}, {r['sessions']} ({r['train_trials']}) | {cell(r['ours'])} | "
                f"{cell(r['encoding_identification'])} | {cell(r['ridge'])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data/sim/default")
    parser.add_argument(
        "--features",
        type=Path,
        default=None,
        help="feature store with sim-clip-default/image (default: <data>-features.h5; made "
        "with sim-clip like make demo when absent)",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        default=REPO / "experiments/sim_retrieval.yaml",
        help="the decoder's recipe (model, trainer, data settings)",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="epochs of every fit")
    parser.add_argument(
        "--sessions", nargs="+", default=["1", "2", "5", "all"], help="subj01 session counts"
    )
    parser.add_argument(
        "--new-subject-sessions",
        nargs="*",
        default=["1", "2", "5"],
        help="subj02 session counts for the new-subject step (none: skip it)",
    )
    args = parser.parse_args(argv)
    sessions, new_sessions = _sessions(args.sessions), _sessions(args.new_subject_sessions)
    from neurodecode.cli.demo import demo_target
    from neurodecode.features.store import FeatureStore

    single = yaml.safe_load(args.experiment.read_text())
    recipe = dict(single["data"]["init_args"])
    store = args.features or args.data.with_name(args.data.name + "-features.h5")
    model_name = recipe.get("feature_model", "sim-clip-default")
    layer = recipe.get("feature_layer", "image")
    if not store.is_file() or (model_name, layer) not in FeatureStore(store):
        from neurodecode.demo.decode import prepare_world

        target_space, fit_on = demo_target(recipe)
        store, model_name, layer, _ = prepare_world(
            args.data, REPO / "datasets/sim/default.yaml", "default", None, target_space, fit_on
        )
    new_cfg = yaml.safe_load((REPO / "experiments/sim_new_subject.yaml").read_text())
    trainer = dict(single["trainer"], enable_progress_bar=False)
    if args.max_epochs:
        trainer["max_epochs"] = args.max_epochs
    new_trainer = dict(accelerator="auto", devices=1, max_epochs=trainer["max_epochs"])
    # the recipe's data settings, less what this bench sets (data, subjects, sessions)
    set_here = ("root", "feature_store", "subjects", "eval_subject", "train_subjects")
    common = {k: v for k, v in recipe.items() if k not in set_here and k != "max_train_sessions"}
    common.update(
        root=str(args.data),
        feature_store=str(store),
        feature_model=model_name,
        feature_layer=layer,
        batch_size=recipe.get("batch_size", 32),
    )
    sharedix = np.asarray(read_ground_truth(args.data).sharedix)
    runs = REPO / "runs/bench_scaling" / args.experiment.stem
    result: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "experiment": str(args.experiment),
        "max_epochs": trainer["max_epochs"],
        "n_way": 300,
        "subj01": [],
        "new_subject": [],
    }
    start = time.perf_counter()
    full_model = None
    for n in sorted(sessions, key=lambda s: 10**9 if s is None else s):
        print(f"[bench] subj01, sessions {n or 'all'}", flush=True)
        data = dict(common, subjects=["subj01"], max_train_sessions=n)
        model, dm, info = fit_experiment(
            _experiment(single, data, trainer), runs / f"subj01_{n or 'all'}"
        )
        brain = model.embed(dm.test_trials.data, "subj01").numpy()
        n_sessions = n or int(max(dm.train_set.trials[dm.eval_index].session))
        rungs = decoder_rungs(dm, brain, sharedix)
        result["subj01"].append(_row(n_sessions, dm, rungs, fit_s=info["fit_s"]))
        print("   ", {k: rungs[k]["brain_to_image_top1"] for k in METHODS}, flush=True)
        if n is None:
            full_model = model
    if new_sessions:
        if full_model is None:
            print("[bench] subj01, all sessions (the new-subject step's pretrained model)")
            data = dict(common, subjects=["subj01"])
            full_model, _, _ = fit_experiment(_experiment(single, data, trainer), runs / "all")
        new_args = new_cfg["model"]["init_args"]
        for n in new_sessions:
            print(f"[bench] subj02 as a new subject, sessions {n}", flush=True)
            dm = NSDDataModule(
                subjects=["subj01", "subj02"],
                train_subjects=["subj02"],
                eval_subject="subj02",
                max_train_sessions={"subj02": n},
                **common,
            )
            dm.setup("fit")
            L.seed_everything(new_cfg.get("seed_everything", 0), verbose=False)
            model = copy.deepcopy(full_model)
            t0 = time.perf_counter()
            fit_new_subject(
                model,
                "subj02",
                dm.geometry["n_voxels"]["subj02"],
                L.Trainer(
                    logger=False,
                    enable_checkpointing=False,
                    enable_progress_bar=False,
                    enable_model_summary=False,
                    **new_trainer,
                ),
                dm,
                lr=new_args["lr"],
                weight_decay=new_args.get("weight_decay"),
            )
            fit_s = round(time.perf_counter() - t0, 1)
            brain = model.embed(dm.test_trials.data, "subj02").numpy()
            rungs = decoder_rungs(dm, brain, sharedix)
            result["new_subject"].append(_row(n, dm, rungs, fit_s=fit_s))
            print("   ", {k: rungs[k]["brain_to_image_top1"] for k in METHODS}, flush=True)
    result["total_s"] = round(time.perf_counter() - start, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(result, indent=2))
    plot_data_scaling(
        _curves(result),
        RESULTS / "scaling.png",
        chance=1.0 / result["subj01"][0]["chance"]["n_way"] if result["subj01"] else None,
        title=f"default world, 300-way top-1, {trainer['max_epochs']} epochs per fit",
    )
    print(table(result))
    return result


if __name__ == "__main__":
    main()
