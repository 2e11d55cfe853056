"""The decoding steps of ``neurodecode demo`` (and of the retrieval benchmark).

simulate (if absent) -> sim-clip (trained once, cached) -> extract image embeddings into a
FeatureStore (:func:`prepare_world`) -> (the command fits the experiment's decoder through
:func:`neurodecode.cli.lightning.fit_experiment`, as ``neurodecode fit`` does) -> evaluate it against ridge and
the oracle on the same test trials (:func:`evaluate_decoder`). The command that strings them
together and writes the run folder is :mod:`neurodecode.cli.demo`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


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


def _extract(
    data: Path,
    encoder,
    preset: str,
    store_path: Path,
    target_space: str | None = None,
    fit_on: str | None = None,
) -> tuple[str, str]:
    """Fill the store as ``neurodecode extract`` does (:func:`neurodecode.features.extract.
    extract`): sim-clip's pooled image embedding of every stimulus, and, with ``target_space``,
    that target space (``targets/<space>``), its statistics fitted on ``fit_on``'s training
    images. Returns the store entry the decoder trains on."""
    from neurodecode.data.nsd import training_image_ids
    from neurodecode.data.stimuli import open_stimuli
    from neurodecode.features.extract import extract
    from neurodecode.features.target_spaces import STORE_MODEL, space_blocks

    model_name = f"sim-clip-{preset}"
    config = {
        "store": store_path,
        "ids": None,
        "outputs": ["image"],
        "layers": [],
        "pooled_layers": True,
        "batch_size": 256,
        "dtype": "float32",
        "targets": None,
    }
    if target_space is not None:
        space_blocks(target_space)  # an unknown space fails before anything is computed
        fit_ids = [str(i) for i in training_image_ids(data, fit_on)]
        config["targets"] = {
            "spaces": [target_space],
            "store_name": STORE_MODEL,
            "fit_ids": fit_ids,
        }
    computed = extract(config, open_stimuli(data), encoder, model_name, progress=True)
    for entry, n in computed.items():
        print(f"    {entry}: {n} images computed ({store_path})")
    if target_space is not None:
        return STORE_MODEL, target_space
    return model_name, "image"


def prepare_world(
    data: Path,
    sim_config: Path,
    clip_preset: str,
    steps: Steps | None = None,
    target_space: str | None = None,
    fit_on: str = "subj01",
):
    """Simulate (if absent), get sim-clip, embed every stimulus (and fill a target space).

    Parameters
    ----------
    target_space : str, optional
        A named target space (:func:`neurodecode.features.target_spaces.space_blocks`, e.g.
        ``"pooled+rectified8"``) to write as the store entry ``targets/<space>``, its block
        statistics fitted on ``fit_on``'s training images only; without it the decoder's entry
        is sim-clip's pooled embedding.
    fit_on : str
        The subject whose training images fit the target space's statistics.

    Returns
    -------
    (store_path, model_name, layer, clip_metrics)
        ``model_name / layer`` is the store entry the decoder trains on.
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
    what = "Image embeddings" + ("" if target_space is None else f" and target {target_space}")
    steps("extract", f"{what} -> FeatureStore")
    store_path = data.with_name(data.name + "-features.h5")
    model_name, layer = _extract(data, encoder, clip_preset, store_path, target_space, fit_on)
    return store_path, model_name, layer, clip_metrics


def target_bands(datamodule):
    """How the ladder's feature oracle reads the decoder's target: ``features_of(ids)``.

    A named target space written by :func:`neurodecode.features.target_spaces.fill_target_space`
    (e.g. ``pooled+rectified8``) records its elementary blocks and their widths; its feature
    oracle then gets one band per ``+``-piece of the name (``pooled`` and ``rectified8``: one
    penalty per piece and voxel, :func:`neurodecode.demo.ladder.banded_feature_oracle_predictions`),
    as ``benchmarks/bench_targets.py`` measures the spaces: one penalty over all 1,088 features
    lets the 960 pixel features drown the 128-d embedding, and understates what the space
    carries. Any other entry is one block (``datamodule.targets_of``).

    Returns
    -------
    callable
        ``ids (n,) -> ndarray (n, ...)`` or ``-> {piece: ndarray (n, d_piece)}``.
    """
    from neurodecode.features.store import FeatureStore
    from neurodecode.features.target_spaces import piece_columns

    hp = datamodule.hparams
    if getattr(datamodule, "store_path", None) is None:
        return datamodule.targets_of
    settings = FeatureStore(datamodule.store_path).settings(hp.feature_model, hp.feature_layer)
    space = str(settings.get("space", ""))
    if settings.get("output") != "target_space" or "+" not in space:
        return datamodule.targets_of
    columns = piece_columns(space, settings["blocks"])

    def features_of(ids: np.ndarray) -> dict[str, np.ndarray]:
        flat = np.asarray(datamodule.targets_of(ids)).reshape(len(ids), -1)
        return {piece: flat[:, c] for piece, c in columns.items()}

    return features_of


def evaluate_decoder(
    model, datamodule, data: Path, with_prior: bool = True, banded_feature_oracle: bool = False
) -> dict:
    """Score a trained decoder on the eval subject's averaged test trials against the ceiling
    ladder (:mod:`neurodecode.demo.ladder`), all rungs on the same trials and candidates.

    ``banded_feature_oracle`` gives the feature oracle of a named target space one penalty per
    ``+``-piece (:func:`target_bands`) instead of one over all its features: a fairer (higher)
    bound, at several times the cost (about 3 more minutes for the default world on 2 cores;
    benchmarks/README.md, 2026-12-07).

    Returns
    -------
    dict
        ``ladder`` (oracle, a feature oracle for the decoder's target space, encoding
        identification, ridge, ours, chance), ``prior`` (the prior output's retrieval and cosine
        to the true embeddings), the ratios of ours to the oracle and to the feature oracle, and
        ``_brain_embeddings`` (the decoder's test output, for figures).
    """
    import torch

    from neurodecode.demo.ladder import decoder_rungs, oracle_rungs
    from neurodecode.evaluate.retrieval import cosine_scores, retrieval_metrics
    from neurodecode.sim.ground_truth import read_ground_truth

    test, image_emb = datamodule.test_trials, datamodule.test_targets
    n_way, subject = min(300, len(test)), datamodule.eval_subject
    brain_emb = model.embed(test.data, subject).cpu().numpy()
    prior_metrics = None
    if with_prior and model.prior is not None:
        generator = torch.Generator().manual_seed(0)
        prior_emb = model.embed(test.data, subject, output="prior", generator=generator)
        prior_emb = prior_emb.cpu().numpy()
        prior_metrics = retrieval_metrics(prior_emb, image_emb, n_way=n_way, n_draws=30)
        prior_metrics["cosine_to_true"] = float(
            np.mean(np.diag(cosine_scores(prior_emb, image_emb)))
        )
    sharedix = np.asarray(read_ground_truth(data).sharedix)
    hp = datamodule.hparams
    space = f"{hp.feature_model}/{hp.feature_layer}"
    train_ids = datamodule.train_set.trials[datamodule.eval_index].stimulus_id
    started = time.perf_counter()
    print("    ladder: oracle and feature oracle (sim-only, from the ground truth) ...", flush=True)
    features_of = target_bands(datamodule) if banded_feature_oracle else datamodule.targets_of
    ladder = oracle_rungs(data, subject, {space: features_of}, train_ids, n_way)
    print(
        f"    ladder: encoding identification and ridge on {len(train_ids)} training images "
        f"(t+{time.perf_counter() - started:.0f} s) ...",
        flush=True,
    )
    ladder.update(decoder_rungs(datamodule, brain_emb, sharedix, n_way))
    print(f"    ladder done (t+{time.perf_counter() - started:.0f} s)", flush=True)
    ours = ladder["ours"]["brain_to_image_top1"]
    return {
        "subject": subject,
        "n_way": n_way,
        "target_space": space,
        "feature_oracle_estimator": "banded" if banded_feature_oracle else "single penalty",
        "ladder": ladder,
        "prior": prior_metrics,
        "ratio_to_oracle": ours / max(ladder["oracle"]["brain_to_image_top1"], 1e-9),
        "ratio_to_feature_oracle": ours
        / max(ladder["feature_oracle"][space]["brain_to_image_top1"], 1e-9),
        "times_chance": ours * n_way,
        "_brain_embeddings": brain_emb,
    }
