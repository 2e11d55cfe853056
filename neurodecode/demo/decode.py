"""``neurodecode demo``: the main job end to end on the embedded simulated world.

simulate (if absent) -> sim-clip (trained once, cached) -> extract image embeddings into a
FeatureStore -> fit the MindEye-style retrieval head + diffusion prior with Lightning (the model and
data sections of ``experiments/sim_retrieval.yaml``) -> evaluate against ridge and the oracle ->
``runs/demo/metrics.json``, ``runs/demo/report.md``, ``runs/demo/retrieval.png`` and the saved
decoder in ``runs/demo/decoder/`` (load it with ``neurodecode.load_pretrained``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import yaml

from neurodecode.validation import InvalidInputError

REPO = Path(__file__).resolve().parents[1]


class Steps:
    """Prints numbered step headers and records how long each took."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.timing: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def __call__(self, name: str, text: str) -> None:
        self.done()
        self._name, self._t0 = name, time.perf_counter()
        print(
            f"\n[{len(self.timing) + 1}] {text} (t={time.perf_counter() - self.start:.0f} s)",
            flush=True,
        )

    def done(self) -> None:
        if self._name is not None:
            self.timing[f"{self._name}_s"] = round(time.perf_counter() - self._t0, 1)
            self._name = None

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode demo``."""
    parser.add_argument(
        "--experiment",
        type=Path,
        default=REPO / "experiments/sim_retrieval.yaml",
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


def _extract(data: Path, encoder, preset: str, store_path: Path) -> tuple[str, str]:
    import h5py

    from neurodecode.data.nsd import read_stimuli
    from neurodecode.features.store import FeatureStore

    with h5py.File(data / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as f:
        n_images = f["imgBrick"].shape[0]
    model_name, layer = f"sim-clip-{preset}", "image"
    store = FeatureStore(store_path)

    def compute(ids: list[str]) -> np.ndarray:
        images = read_stimuli(data, [int(i) for i in ids])
        return encoder.encode_image(images).cpu().numpy()

    settings = dict(encoder.settings)
    settings["output"] = "pooled"
    computed = store.fill(model_name, layer, np.arange(n_images), compute, settings, batch_size=256)
    print(f"    {computed} images embedded ({n_images - computed} already in {store_path})")
    return model_name, layer


def prepare_world(data: Path, sim_config: Path, clip_preset: str, steps: Steps | None = None):
    """Simulate (if absent), get sim-clip, embed every stimulus.

    Returns
    -------
    (store_path, model_name, layer, clip_metrics)
    """
    import torch

    from neurodecode.embedded.clip import get_sim_clip, read_metrics
    from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

    steps = steps or Steps()
    steps("simulate", f"Simulated NSD world at {data}")
    if (data / "ground_truth.h5").is_file():
        print("    present; reusing it")
    else:
        simulate_fmri(FMRISimConfig.from_yaml(sim_config), data)
        print(f"    written from {sim_config}")
    steps("sim_clip", f"sim-clip '{clip_preset}' image-text model (trained once, cached)")
    torch.manual_seed(0)
    encoder = get_sim_clip(clip_preset)
    clip_metrics = read_metrics(clip_preset)
    print(
        "    zero-shot on held-out scenes: "
        + ", ".join(f"{k}={v:.3f}" for k, v in clip_metrics.items() if isinstance(v, float))
    )
    steps("extract", "Image embeddings -> FeatureStore")
    store_path = data.with_name(data.name + "-features.h5")
    model_name, layer = _extract(data, encoder, clip_preset, store_path)
    return store_path, model_name, layer, clip_metrics


def fit_decoder(datamodule, model_args: dict, trainer_args: dict, out: Path, seed: int = 0):
    """Fit a :class:`~neurodecode.models.retrieval.RetrievalModule` with Lightning.

    Returns
    -------
    (model, info) where info has ``epochs``, ``train_trials``, ``samples_per_s``, ``fit_s``.
    """
    import lightning as L

    from neurodecode.models.retrieval import RetrievalModule

    datamodule.setup("fit")
    L.seed_everything(seed, verbose=False)
    model = RetrievalModule(geometry=datamodule.geometry, **model_args)
    trainer_args = dict(trainer_args)
    trainer_args.pop("logger", None)
    trainer_args.update(default_root_dir=str(out), enable_model_summary=False)
    trainer = L.Trainer(logger=L.pytorch.loggers.CSVLogger(str(out), name="logs"), **trainer_args)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    n_train = len(datamodule.train_set)
    info = {
        "epochs": trainer.current_epoch,
        "train_trials": n_train,
        "samples_per_s": round(n_train * trainer.current_epoch / max(seconds, 1e-9), 1),
        "fit_s": round(seconds, 1),
    }
    return model, info


def evaluate_decoder(model, datamodule, data: Path, with_prior: bool = True) -> dict:
    """300-way (or N-way) retrieval of the eval subject's averaged test trials: ours (head and
    prior output), ridge fitted on the same training trials, and the oracle."""
    import torch

    from neurodecode.evaluate.retrieval import cosine_scores, retrieval_metrics
    from neurodecode.models.ridge import RidgeRegression
    from neurodecode.sim.oracle import oracle_retrieval

    test, image_emb = datamodule.test_trials, datamodule.test_targets
    n_way, subject = min(300, len(test)), datamodule.eval_subject
    brain_emb = model.embed(test.data, subject).cpu().numpy()
    ours = retrieval_metrics(brain_emb, image_emb, n_way=n_way, n_draws=30)
    prior_metrics = None
    if with_prior and model.prior is not None:
        generator = torch.Generator().manual_seed(0)
        prior_emb = model.embed(test.data, subject, output="prior", generator=generator)
        prior_emb = prior_emb.cpu().numpy()
        prior_metrics = retrieval_metrics(prior_emb, image_emb, n_way=n_way, n_draws=30)
        prior_metrics["cosine_to_true"] = float(
            np.mean(np.diag(cosine_scores(prior_emb, image_emb)))
        )
    k = datamodule.eval_index
    ridge = RidgeRegression().fit(
        datamodule.train_set.trials[k].data, datamodule.train_set.targets[k]
    )
    ridge_metrics = retrieval_metrics(ridge.predict(test.data), image_emb, n_way=n_way, n_draws=30)
    oracle = oracle_retrieval(data, subject, n_way=n_way, n_draws=30)
    return {
        "retrieval": {**ours, "subject": subject},
        "prior": prior_metrics,
        "baselines": {"ridge": ridge_metrics},
        "oracle": oracle,
        "ratio_to_oracle": ours["brain_to_image_top1"] / max(oracle["brain_to_image_top1"], 1e-9),
        "times_chance": ours["brain_to_image_top1"] * n_way,
        "_brain_embeddings": brain_emb,
    }


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 on success."""
    from neurodecode.datamodules.nsd import NSDDataModule
    from neurodecode.plotting.retrieval import plot_retrieval_examples

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    steps = Steps()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    experiment = yaml.safe_load(Path(args.experiment).read_text())
    for key in ("model", "data", "trainer"):
        if key not in experiment:
            raise InvalidInputError(f"{args.experiment} has no '{key}' section.")
    store_path, model_name, layer, clip_metrics = prepare_world(
        args.data, args.sim_config, args.clip_preset, steps
    )

    steps("fit", "Fit the retrieval head + diffusion prior (Lightning)")
    data_args = dict(experiment["data"].get("init_args", {}))
    data_args.update(
        root=str(args.data),
        feature_store=str(store_path),
        feature_model=model_name,
        feature_layer=layer,
    )
    datamodule = NSDDataModule(**data_args)
    trainer_args = dict(experiment["trainer"])
    if args.max_epochs is not None:
        trainer_args["max_epochs"] = args.max_epochs
    model, training = fit_decoder(
        datamodule,
        dict(experiment["model"].get("init_args", {})),
        trainer_args,
        out,
        seed=int(experiment.get("seed_everything", 0)),
    )
    model.save_pretrained(out / "decoder")

    steps("evaluate", "Evaluate: 300-way retrieval, ours vs ridge vs oracle")
    metrics = evaluate_decoder(model, datamodule, args.data)
    brain_emb = metrics.pop("_brain_embeddings")
    metrics.update(sim_clip=clip_metrics, training=training)
    test = datamodule.test_trials
    plot_retrieval_examples(
        _stimuli(args.data, test.stimulus_id),
        brain_emb,
        datamodule.test_targets,
        out / "retrieval.png",
    )

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
        metrics["_reconstruction_table"] = recon["table"]

    steps.done()
    metrics["timing"] = {**steps.timing, "total_s": steps.total}
    recon_table = metrics.pop("_reconstruction_table", None)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_jsonable))
    report = _report(metrics, args)
    if recon_table is not None:
        networks = ", ".join(f"{k}: {v}" for k, v in metrics["reconstruction"]["networks"].items())
        report += (
            "\n## Reconstruction (MindEye metric table; controls: shuffled trials, mean image)\n\n"
            + recon_table
            + f"\n\nFeature networks and their weights: {networks}.\n\n"
            "![stimulus | low-level | reconstruction](reconstruction.png)\n"
        )
    (out / "report.md").write_text(report)
    print("\n" + _summary_table(metrics))
    if recon_table is not None:
        print("\n" + recon_table)
    print(
        f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'retrieval.png'}, "
        + ("" if args.no_reconstruction else f"{out / 'reconstruction.png'}, ")
        + f"{out / 'decoder'}/ in {steps.total:.0f} s"
    )
    return 0


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(type(value))


def _stimuli(data: Path, ids: np.ndarray) -> np.ndarray:
    from neurodecode.data.nsd import read_stimuli

    return read_stimuli(data, ids)


def _summary_table(m: dict) -> str:
    n_way = m["retrieval"]["n_way"]
    rows = [("retrieval head (ours)", m["retrieval"])]
    if m.get("prior"):
        rows.append(("diffusion prior output", m["prior"]))
    rows += [
        ("ridge baseline", m["baselines"]["ridge"]),
        ("oracle (true model)", m["oracle"]),
    ]
    lines = [
        f"| {n_way}-way retrieval, {m['retrieval']['subject']} | brain->image top-1 | "
        "image->brain top-1 | brain->image top-5 |",
        "|---|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['brain_to_image_top1']:.3f} | {r['image_to_brain_top1']:.3f} | "
            f"{r.get('brain_to_image_top5', float('nan')):.3f} |"
        )
    lines.append(f"| chance | {1 / n_way:.4f} | {1 / n_way:.4f} | {5 / n_way:.4f} |")
    lines.append("")
    lines.append(
        f"ours / oracle = {m['ratio_to_oracle']:.2f}; ours = {m['times_chance']:.0f}x "
        f"chance; total {m['timing']['total_s']:.0f} s"
    )
    return "\n".join(lines)


def _report(m: dict, args: argparse.Namespace) -> str:
    parts = [
        "# neurodecode demo report",
        "",
        f"Simulated NSD world `{args.data}` (config `{args.sim_config}`), decoder trained with the "
        f"model/data/trainer sections of `{args.experiment}`.",
        "",
        "## Retrieval (MindEye protocol: repeat-averaged shared test trials, cosine, 30 draws)",
        "",
        _summary_table(m),
        "",
        "![test trials and their top retrieved images](retrieval.png)",
        "",
        "## sim-clip (the embedding space)",
        "",
        "Zero-shot scores on held-out scenes: "
        + ", ".join(f"{k} = {v:.3f}" for k, v in m["sim_clip"].items() if isinstance(v, float)),
        "",
        "## Training",
        "",
        f"{m['training']['epochs']} epochs over {m['training']['train_trials']} single trials, "
        f"{m['training']['samples_per_s']} samples/s on this machine.",
        "",
        "## Timing (s)",
        "",
        "| step | seconds |",
        "|---|---:|",
        *[f"| {k.removesuffix('_s')} | {v} |" for k, v in m["timing"].items()],
        "",
    ]
    return "\n".join(parts)
