"""``neurodecode demo``: the main job end to end on the embedded simulated world.

simulate (if absent) -> sim-clip (trained once, cached) -> extract image embeddings, and the
experiment's target space when it names one, into a FeatureStore -> fit the experiment's decoder
(``experiments/sim_retrieval_rich_both.yaml``: the MindEye-style retrieval head on the rich target
``pooled+rectified8``, both subjects through one shared latent) through LightningCLI -> evaluate
against the ceiling ladder -> reconstruct -> (with ``--captions``) caption the decoded embeddings
(:mod:`neurodecode.demo.captions`, ``runs/demo/captions.csv``) -> ``runs/demo/metrics.json``,
``runs/demo/report.md``, ``runs/demo/retrieval.png`` and the saved decoder in
``runs/demo/decoder/`` (load it with ``neurodecode.load_pretrained``; ``decoder/condition/``
maps its output to sim-clip embeddings).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode demo``."""
    parser.add_argument(
        "--experiment",
        type=Path,
        default=REPO / "experiments/sim_retrieval_rich_both.yaml",
        help="LightningCLI YAML whose model/data/trainer sections the demo runs",
    )
    parser.add_argument("--sim-config", type=Path, default=REPO / "datasets/sim/default.yaml")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/sim/default"),
        help="simulated data set folder (written if absent)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    parser.add_argument("--clip-preset", default="default", help="sim-clip preset")
    parser.add_argument("--max-epochs", type=int, default=None, help="override trainer epochs")
    parser.add_argument(
        "--no-reconstruction", action="store_true", help="skip image reconstruction"
    )
    parser.add_argument(
        "--banded-feature-oracle",
        action="store_true",
        help="score the target space's feature oracle with one penalty per '+'-piece of its name "
        "(a fairer, higher bound; about 3 more minutes on 2 CPU cores for the default world)",
    )
    parser.add_argument(
        "--captions",
        action="store_true",
        help="also caption the decoded embeddings (brain -> caption, captions.csv); the first run "
        "trains the world's prefix captioner once (about 11 min on 2 CPU cores for the default "
        "world), later runs add about a minute",
    )


def demo_target(data_args: dict) -> tuple[str | None, str]:
    """The target space an experiment's data section asks for, and the subject whose training
    images fit its statistics.

    ``feature_model: targets`` with ``feature_layer: <space>`` (e.g. ``pooled+rectified8``, as
    ``neurodecode extract``'s ``targets:`` section writes it) -> ``(<space>, eval subject)``; any
    other entry -> ``(None, eval subject)``: the demo trains on sim-clip's pooled embedding.
    """
    from neurodecode.features.target_spaces import STORE_MODEL

    subjects = data_args.get("subjects") or ["subj01"]
    fit_on = str(data_args.get("eval_subject") or subjects[0])
    if data_args.get("feature_model") == STORE_MODEL:
        return str(data_args.get("feature_layer")), fit_on
    return None, fit_on


def subjects_in_world(data_args: dict, root: Path) -> None:
    """Fit on the experiment's subjects that the world at ``root`` has (``data_args`` edited).

    The demo's experiment trains on two subjects; a world written with one (``n_subjects: 1``)
    fits the evaluated subject alone, and says so in one line. A world without the evaluated
    subject is an error.
    """
    from neurodecode.data.nsd import find_nsd_subjects
    from neurodecode.validation import InvalidInputError

    present = set(find_nsd_subjects(root))
    subjects = [str(s) for s in (data_args.get("subjects") or ["subj01"])]
    eval_subject = str(data_args.get("eval_subject") or subjects[0])
    if eval_subject not in present:
        raise InvalidInputError(
            f"the experiment evaluates {eval_subject} but {root} holds betas of "
            f"{sorted(present) or 'no subject'} (expected nsddata_betas/ppdata/{eval_subject}/)."
        )
    missing = [s for s in subjects if s not in present]
    if missing:
        kept = [s for s in subjects if s in present]
        print(
            f"    {root} has no {', '.join(missing)}: fitting on {', '.join(kept)} "
            f"(the experiment names {', '.join(subjects)})"
        )
        data_args["subjects"] = kept


def fit_key(experiment: dict, data: Path, store_path: Path, model_name: str, layer: str) -> str:
    """16 hex digits naming everything the demo's fit depends on: the experiment (with its data
    paths), the simulated world's files (size and modification time of its ground truth and
    betas) and the store entry's settings and row count. The fit's checkpoints live under it, so
    a rerun resumes (or reuses) only a fit of the same experiment on the same data."""
    import hashlib

    from neurodecode.features.store import FeatureStore

    world = sorted(
        (str(path.relative_to(data)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in Path(data).rglob("*")
        if path.is_file() and path.suffix in (".h5", ".hdf5", ".mat", ".nii", ".gz")
    )
    store = FeatureStore(store_path)
    entry = {
        "settings": store.settings(model_name, layer),
        "rows": len(store.stimulus_ids(model_name, layer)),
    }
    text = json.dumps([experiment, world, entry], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fit_demo_decoder(
    experiment_path: Path,
    data: Path,
    sim_config: Path,
    clip_preset: str,
    out: Path,
    steps=None,
    max_epochs: int | None = None,
):
    """The demo's world and decoder: simulate and embed what is missing, then fit the experiment
    into ``out`` (or resume / reuse the fit of the same experiment on the same data, see
    :func:`fit_key`).

    Returns
    -------
    (model, datamodule, training, clip_metrics)
        ``training`` as :func:`neurodecode.cli.lightning.fit_experiment` returns it;
        ``clip_metrics`` sim-clip's own scores (:func:`neurodecode.demo.decode.prepare_world`).
    """
    from neurodecode.cli.config import load_config
    from neurodecode.cli.lightning import fit_experiment
    from neurodecode.demo.decode import Steps, prepare_world

    steps = steps or Steps()
    experiment = load_config(experiment_path, required=("model", "data", "trainer"))
    data_args = experiment["data"].setdefault("init_args", {})
    target_space, fit_on = demo_target(data_args)
    store_path, model_name, layer, clip_metrics = prepare_world(
        data, sim_config, clip_preset, steps, target_space, fit_on
    )

    steps("fit", "Fit the decoder of the experiment (LightningCLI, as `neurodecode fit`)")
    subjects_in_world(data_args, data)
    data_args.update(
        root=str(data),
        feature_store=str(store_path),
        feature_model=model_name,
        feature_layer=layer,
    )
    if max_epochs is not None:
        experiment["trainer"]["max_epochs"] = max_epochs
    model, datamodule, training = fit_experiment(
        experiment, out, resume_key=fit_key(experiment, data, store_path, model_name, layer)
    )
    return model, datamodule, training, clip_metrics


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 on success."""
    from neurodecode.data.nsd import read_stimuli
    from neurodecode.demo.decode import Steps, evaluate_decoder
    from neurodecode.demo.ladder import ladder_rows
    from neurodecode.demo.report import jsonable, report_markdown, summary_table
    from neurodecode.plotting.retrieval import plot_ladder, plot_retrieval_examples

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    steps = Steps()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model, datamodule, training, clip_metrics = fit_demo_decoder(
        args.experiment,
        args.data,
        args.sim_config,
        args.clip_preset,
        out,
        steps,
        args.max_epochs,
    )
    model.save_pretrained(out / "decoder")

    steps("evaluate", "Evaluate: 300-way retrieval against the ceiling ladder")
    metrics = evaluate_decoder(
        model, datamodule, args.data, banded_feature_oracle=args.banded_feature_oracle
    )
    brain_emb = metrics.pop("_brain_embeddings")
    metrics.update(sim_clip=clip_metrics, training=training)
    plot_ladder(
        ladder_rows(metrics["ladder"]),
        out / "ladder.png",
        f"{metrics['n_way']}-way identification, {metrics['subject']}: the ceiling ladder",
    )
    test = datamodule.test_trials
    plot_retrieval_examples(
        read_stimuli(args.data, test.stimulus_id),
        brain_emb,
        datamodule.test_targets,
        out / "retrieval.png",
    )

    recon_table = None
    if not args.no_reconstruction:
        from neurodecode.demo.reconstruction import reconstruct_and_score
        from neurodecode.embedded.clip import get_sim_clip

        steps("reconstruct", "Reconstruct test images (generator + low-level pathway + best-of-4)")
        recon = reconstruct_and_score(
            model,
            datamodule,
            args.data,
            get_sim_clip(args.clip_preset, progress=False),
            out,
            preset=args.clip_preset,
        )
        metrics["reconstruction"] = {k: v for k, v in recon.items() if k != "table"}
        recon_table = recon["table"]

    caption_table = None
    if args.captions:
        from neurodecode.demo.captions import caption_demo_trials
        from neurodecode.validation import InvalidInputError

        steps("captions", "Brain -> caption: prefix captioner on the decoded embeddings")
        try:
            captions = caption_demo_trials(model, datamodule, args.data, out, args.clip_preset)
        except InvalidInputError as error:  # e.g. a decoder whose prior predicts another space
            print(f"    captions skipped: {error}")
            metrics["captions"] = {"skipped": str(error)}
        else:
            metrics["captions"] = {k: v for k, v in captions.items() if k != "table"}
            caption_table = captions["table"]

    steps.done()
    metrics["timing"] = {**steps.timing, "total_s": steps.total}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=jsonable))
    report = report_markdown(metrics, args)
    if recon_table is not None:
        networks = ", ".join(f"{k}: {v}" for k, v in metrics["reconstruction"]["networks"].items())
        report += (
            "\n## Reconstruction (MindEye metric table; controls: shuffled trials, mean image)\n\n"
            + recon_table
            + f"\n\nFeature networks and their weights: {networks}.\n\n"
            "![stimulus | low-level | reconstruction](reconstruction.png)\n"
        )
    if caption_table is not None:
        report += (
            "\n## Brain -> caption (controls: shuffled trials; ceiling: true image embeddings)\n\n"
            "The prefix captioner of the simulated world captions the decoded embeddings and the "
            "true images' embeddings; scored against each image's true caption (`captions.csv`).\n\n"
            + caption_table
            + "\n"
        )
    (out / "report.md").write_text(report)
    print("\n" + summary_table(metrics))
    if recon_table is not None:
        print("\n" + recon_table)
    if caption_table is not None:
        print("\n" + caption_table.split("\n\n")[0])
    print(
        f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'ladder.png'}, "
        f"{out / 'retrieval.png'}, "
        + ("" if args.no_reconstruction else f"{out / 'reconstruction.png'}, ")
        + ("" if caption_table is None else f"{out / 'captions.csv'}, ")
        + f"{out / 'decoder'}/ in {steps.total:.0f} s"
    )
    return 0
