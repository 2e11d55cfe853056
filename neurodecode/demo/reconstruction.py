"""Reconstruction on the embedded default: the step ``make demo`` runs after decoding.

The decoder predicts sim-clip image embeddings from the eval subject's averaged test trials: by
default its retrieval output projected onto the embeddings of the subject's training images
(:mod:`neurodecode.reconstruct.conditioning`), or its diffusion prior's samples. The low-level
pathway (a closed-form ridge from voxels to a 16 px image, fitted on the repeat-averaged training
trials) gives a blurry image; the embedded default generator draws ``num_samples`` images per
trial by img2img from that blurry image at ``strength`` and keeps the one whose sim-clip embedding
is closest to the predicted one (MindEye's best-of-n). With the projection, what conditions the
samples (the projection itself, or each sample the embedding of one of the ``num_samples``
training images nearest to the decoded output) and the classifier-free guidance are chosen on the
validation images (:data:`SAMPLING_GRID`, :data:`GUIDANCE_GRID`). The kept image is blended with the blurry
one, as MindEye2 does to keep the low-level information; by default only in luminance
(``blend_mode="luminance"``: light/dark layout from the blurry image, colours from the generated
one). ``blend`` is chosen on the held-out *validation* images (never the test trials) by
:func:`choose_blend`. Scored with MindEye's metric table against two controls: *shuffled* trials
(each stimulus paired with the reconstruction of another test trial), and the mean training image;
the low-level image alone is reported too. The fitted pathway and the projection are saved beside
the decoder (``<out>/decoder/lowlevel/``, ``<out>/decoder/condition/``) so that
``neurodecode reconstruct --model <out>/decoder`` uses them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode.validation import InvalidInputError, check_option

#: img2img strength from the blurry image (4 of the generator's 10 DDIM steps). Chosen on the
#: demo's validation images (never the test trials) among 0.3, 0.45, 0.6, 0.8 and 1.0
#: (``benchmarks/README.md`` has the comparison).
DEFAULT_STRENGTH = 0.45
#: What conditions a trial's samples, searched on the validation images (see
#: :meth:`neurodecode.reconstruct.conditioning.ImageManifoldProjection.sample_conditions`).
SAMPLING_GRID = ("mean", "nearest")
#: Classifier-free guidance searched on the validation images (the generator's default is 1.5).
GUIDANCE_GRID = (1.5, 3.0)
#: Blend weights searched on the validation images.
BLEND_GRID = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 11))
#: Side (px) of the low-level pathway's blurry image.
LOWLEVEL_SIZE = 16


def fit_lowlevel(brain: np.ndarray, images: np.ndarray, image_size: int = LOWLEVEL_SIZE):
    """Fit the ridge low-level pathway on (trials, stimulus images).

    Parameters
    ----------
    brain : ndarray, shape (n_trials, n_voxels)
        Repeat-averaged training trials.
    images : ndarray, shape (n_trials, H, W, 3), uint8
        The stimulus of each trial.

    Returns
    -------
    neurodecode.reconstruct.lowlevel.RidgeLowLevel
    """
    from neurodecode.reconstruct.generators import images_to_tensor
    from neurodecode.reconstruct.lowlevel import RidgeLowLevel

    return RidgeLowLevel.fit(brain, images_to_tensor(images), image_size=image_size)


def noise_free_lowlevel(
    data_root: Path, subject: str, train_ids: np.ndarray, test_ids: np.ndarray
) -> torch.Tensor:
    """The pixel ceiling of the simulated world (*sim-only diagnostic*): the low-level pathway
    fitted on the true noise-free responses of the training images and applied to those of the
    test images.

    It answers whether the simulated cortex carries pixel information at all, independently of the
    noise: a decoder's low-level image cannot beat it except by chance.

    Parameters
    ----------
    data_root : Path
        A simulated data set root (with ``ground_truth.h5``).
    subject : str
        The eval subject.
    train_ids, test_ids : ndarray of int, shape (n_train,), (n_test,)
        73k ids (0-based) of the training images (each once) and of the test trials, in order.

    Returns
    -------
    Tensor, shape (n_test, 3, LOWLEVEL_SIZE, LOWLEVEL_SIZE), in [0, 1]
    """
    from neurodecode.data.nsd import read_stimuli
    from neurodecode.sim.ground_truth import read_subject_truth

    truth = read_subject_truth(data_root, subject)
    train_ids = np.unique(np.asarray(train_ids, dtype=np.int64))
    pathway = fit_lowlevel(truth.responses_to(train_ids), read_stimuli(data_root, train_ids))
    with torch.no_grad():
        return pathway.decode(torch.as_tensor(truth.responses_to(test_ids), dtype=torch.float32))


def choose_blend(
    generated: torch.Tensor,
    lowlevel: torch.Tensor,
    stimuli: np.ndarray,
    clip_fn,
    control: np.ndarray,
    mode: str = "luminance",
    grid: tuple[float, ...] = BLEND_GRID,
    margin: float = 0.5,
) -> tuple[float, dict[float, dict[str, float]]]:
    """Pick the blend weight on validation images.

    The rule is the demo's success criterion measured on validation images, with a safety margin:
    the weight with the best CLIP 2-way among those whose PixCorr and SSIM beat the ``control``
    image (the mean training image) by at least ``margin`` of the best gain over it on the grid
    (SSIM gains are a few thousandths here, so a bare "beats" would be a coin toss on the test
    trials); if none does, the weight with the best mean of the three metrics, each min-max
    normalised over the grid.

    Parameters
    ----------
    generated : Tensor, shape (N, 3, H, W), in [0, 1]
        Selected generated samples of the validation trials (before blending).
    lowlevel : Tensor, shape (N, 3, h, w), in [0, 1]
        Their blurry images.
    stimuli : ndarray, shape (N, S, S, 3), uint8
    clip_fn : callable
        Images (N, 3, H, W) in [0, 1] -> embeddings (N, D).
    control : Tensor or ndarray, shape (3, h, w), in [0, 1]
        The control image (mean training image).
    mode : {"rgb", "luminance"}
    grid : tuple of float
    margin : float in [0, 1]
        Fraction of the best gain over the control a weight must keep on PixCorr and SSIM.

    Returns
    -------
    weight : float
    scores : dict
        weight -> {"pixcorr", "ssim", "clip_2way"} on the validation images, plus ``"control"`` ->
        the control's PixCorr and SSIM.
    """
    from neurodecode.evaluate.image_metrics import pixcorr, ssim, two_way_identification
    from neurodecode.reconstruct.generators import images_to_tensor
    from neurodecode.reconstruct.reconstructor import blend_images

    size = int(stimuli.shape[1])
    truth = torch.as_tensor(clip_fn(images_to_tensor(stimuli))).float().numpy()
    scores = {}
    for weight in grid:
        images = blend_images(generated, lowlevel, weight, mode)
        features = torch.as_tensor(clip_fn(images)).float().numpy()
        scores[weight] = {
            "pixcorr": pixcorr(images, stimuli, size=size),
            "ssim": ssim(images, stimuli, size=size),
            "clip_2way": two_way_identification(features, truth),
        }
    control = torch.as_tensor(control).float()[None].expand(len(stimuli), -1, -1, -1)
    floor = {"pixcorr": pixcorr(control, stimuli, size=size), "ssim": ssim(control, stimuli, size)}
    need = {
        k: floor[k] + margin * max(max(s[k] for s in scores.values()) - floor[k], 0.0)
        for k in floor
    }
    passing = [
        w
        for w, s in scores.items()
        if all(s[k] > floor[k] and s[k] >= need[k] for k in ("pixcorr", "ssim"))
    ]
    if passing:
        weight = max(passing, key=lambda w: (scores[w]["clip_2way"], -w))
    else:
        table = np.array(
            [[s[k] for k in ("pixcorr", "ssim", "clip_2way")] for s in scores.values()]
        )
        spread = table.max(0) - table.min(0)
        normalised = (table - table.min(0)) / np.where(spread > 0, spread, 1.0)
        weight = list(scores)[int(np.argmax(normalised.mean(1)))]
    scores["control"] = floor
    return weight, scores


#: Softmax temperatures of the condition projection searched on the validation images.
TEMPERATURE_GRID = (0.005, 0.01, 0.02, 0.05, 0.1)


def choose_temperature(
    decoded: torch.Tensor | np.ndarray,
    true_embeddings: torch.Tensor | np.ndarray,
    pool: np.ndarray,
    values: np.ndarray | None = None,
    grid: tuple[float, ...] = TEMPERATURE_GRID,
) -> tuple[float, dict[str, float]]:
    """Pick the condition projection's temperature on validation images.

    Each temperature's projection (:class:`~neurodecode.reconstruct.conditioning.
    ImageManifoldProjection`) of the decoded validation outputs is scored by 2-way
    identification against the validation images' true embeddings in the generator's space
    (the criterion the reconstructions' CLIP 2-way applies, without generating any image); the
    best wins, ties to the smaller temperature.

    Parameters
    ----------
    decoded : Tensor or ndarray, shape (n_val, D)
        The decoder's retrieval output for the validation trials (its target space).
    true_embeddings : Tensor or ndarray, shape (n_val, D_out)
        The validation images' embeddings in the generator's space.
    pool : ndarray, shape (n_pool, D)
        The training images' targets (the projection's keys).
    values : ndarray, shape (n_pool, D_out), optional
        The same images in the generator's space (default: ``pool``).
    grid : tuple of float

    Returns
    -------
    (temperature, scores)
        ``scores`` maps each temperature (as a string) to its validation 2-way accuracy.
    """
    from neurodecode.evaluate.image_metrics import two_way_identification
    from neurodecode.reconstruct.conditioning import ImageManifoldProjection

    decoded_t = torch.as_tensor(np.asarray(decoded, dtype=np.float32))
    truth = np.asarray(true_embeddings, dtype=np.float32)
    scores = {}
    for temperature in grid:
        projection = ImageManifoldProjection.from_pool(pool, temperature, values=values)
        with torch.no_grad():
            projected = projection(decoded_t).numpy()
        scores[str(temperature)] = two_way_identification(projected, truth)
    best = max(grid, key=lambda t: (scores[str(t)], -t))
    return float(best), scores


def _trial_bar(total: int, description: str):
    """A tqdm bar over trials (one line per refresh in a log file, at most every 5 s)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"    {description}", unit="trial", mininterval=5.0)


def reconstruct_and_score(
    model,
    datamodule,
    data_root: Path,
    encoder,
    out: Path,
    preset: str = "default",
    num_samples: int = 4,
    strength: float = DEFAULT_STRENGTH,
    blend: float | None = None,
    blend_mode: str = "luminance",
    condition: str = "manifold",
    sampling: str | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Reconstruct the eval subject's test trials, score them and their controls, save a figure.

    Also writes the low-level pathway to ``out / "decoder" / "lowlevel"`` (config + safetensors).

    Parameters
    ----------
    blend : float, optional
        Weight of the blurry image in the final one; ``None`` chooses it on the validation images
        with :func:`choose_blend`.
    blend_mode : {"rgb", "luminance"}
        See :func:`neurodecode.reconstruct.reconstructor.blend_images`.
    condition : {"manifold", "prior"}
        What conditions the generator: the retrieval output projected onto the eval subject's
        training images' target embeddings
        (:class:`neurodecode.reconstruct.conditioning.ImageManifoldProjection`, saved to
        ``out / "decoder" / "condition"``; when the decoder's target is not the encoder's pooled
        embedding, e.g. ``pooled+rectified8``, the weights come from the target and the average
        from the same images' encoder embeddings; the temperature is chosen on the validation
        images by :func:`choose_temperature`), or samples of the diffusion prior (MindEye1/2). On
        the default world's validation images the projection gave sim-clip 2-way 0.757 vs the
        prior's 0.708 (benchmarks/README.md, 2026-12-05).
    sampling : {"mean", "nearest"}, optional
        With ``condition="manifold"``: every sample conditioned on the projection, or each on one
        of the ``num_samples`` nearest training images' embeddings (the projection still picks
        the best). ``None`` chooses among :data:`SAMPLING_GRID` on the validation images.
    guidance_scale : float, optional
        Classifier-free guidance; ``None`` chooses among :data:`GUIDANCE_GRID` on the validation
        images (``condition="manifold"``) or keeps the generator's default (``"prior"``).

    Every choice made on the validation images (sampling and guidance jointly with the blend)
    takes the candidate whose blend chosen by :func:`choose_blend` has the best CLIP 2-way; ties go
    to the earlier candidate in grid order.

    Returns
    -------
    dict
        ``pixcorr``, ``ssim``, ``clip_2way`` (and the other available network metrics),
        ``controls.shuffled`` and ``controls.mean_image`` with the same keys, ``lowlevel`` (the
        blurry image alone, same keys), ``ceiling.generator_true_embedding`` (the same
        generation from the test images' true embeddings, same low-level images and settings,
        same keys), ``strength``, ``blend``, ``sampling``, ``guidance_scale``,
        ``sampling_validation`` (each candidate's chosen blend and validation scores),
        ``blend_validation`` (the chosen candidate's scores per weight), ``networks``,
        ``n_trials``, ``table`` (markdown), with ``condition="manifold"``
        ``condition_temperature`` and ``condition_temperature_validation``
        (:func:`choose_temperature`), and, on a simulated root, ``ceiling.lowlevel_noise_free``
        (:func:`noise_free_lowlevel`, same keys).
    """
    from neurodecode.data.nsd import read_stimuli
    from neurodecode.embedded.generator import get_sim_generator
    from neurodecode.evaluate.image_metrics import compare_methods, feature_networks, metric_table
    from neurodecode.plotting.reconstructions import plot_reconstructions
    from neurodecode.reconstruct.conditioning import (
        CONDITION_FOLDER,
        SAMPLING_WORDS,
        SAMPLINGS,
        ImageManifoldProjection,
        save_condition,
    )
    from neurodecode.reconstruct.generators import images_to_tensor
    from neurodecode.reconstruct.lowlevel import (
        LOWLEVEL_FOLDER,
        LowLevelPathway,
        save_lowlevel,
    )
    from neurodecode.reconstruct.reconstructor import Reconstructor

    def embed_images(images: np.ndarray) -> torch.Tensor:
        return encoder.encode_image(images)

    def clip_fn(images: torch.Tensor) -> torch.Tensor:
        uint8 = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return encoder.encode_image(uint8)

    check_option("condition", condition, ("manifold", "prior"))
    if sampling is not None:
        check_option("sampling", sampling, SAMPLINGS)
    generator = get_sim_generator(embed_images, preset=preset, embed_key=str(encoder.settings))
    k = datamodule.eval_index
    subject = datamodule.eval_subject
    train = datamodule.train_set.trials[k]
    averaged = train.average_repeats()
    lowlevel = fit_lowlevel(averaged.data, read_stimuli(data_root, averaged.stimulus_id))

    temperature_scores = None
    if condition == "manifold":
        # one target embedding per training image of the eval subject (its repeats share it)
        pool_ids, first = np.unique(train.stimulus_id, return_index=True)
        pool = np.asarray(datamodule.train_set.targets[k])[first]
        # the generator's space: the same images' sim-clip embeddings, unless the decoder's
        # target already is that embedding
        hp = datamodule.hparams
        values = None
        if (hp.feature_model, hp.feature_layer) != (f"sim-clip-{preset}", "image"):
            values = embed_images(read_stimuli(data_root, pool_ids)).cpu().numpy()
        val = datamodule.val_set.trials[0]
        with torch.no_grad():
            val_decoded = model.embed(val.data, subject)
        temperature, temperature_scores = choose_temperature(
            val_decoded,
            embed_images(read_stimuli(data_root, val.stimulus_id)),
            pool,
            values,
        )
        candidates = [
            (mode, scale)
            for mode in ([sampling] if sampling is not None else SAMPLING_GRID)
            for scale in ([guidance_scale] if guidance_scale is not None else GUIDANCE_GRID)
        ]
        projection = ImageManifoldProjection.from_pool(pool, temperature, values=values)

        def decoder_embed(brain: torch.Tensor) -> torch.Tensor:
            return projection(model.embed(brain, subject))

        def conditions_of(mode: str):
            if mode == "mean":
                return None

            def sample_conditions(brain: torch.Tensor) -> torch.Tensor:
                decoded = model.embed(brain, subject)
                return projection.sample_conditions(decoded, num_samples, sampling=mode)

            return sample_conditions

    else:
        if getattr(model, "prior", None) is None:
            raise InvalidInputError(
                "condition='prior' needs a decoder trained with a diffusion prior; this one has "
                "none (use condition='manifold')."
            )
        if sampling not in (None, "mean"):
            raise InvalidInputError(
                f"sampling={sampling!r} needs condition='manifold' (the prior's samples are the "
                "conditions)."
            )
        candidates = [("mean", guidance_scale)]

        def decoder_embed(brain: torch.Tensor) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed)
            return model.embed(brain, subject, output="prior", generator=g)

        def conditions_of(mode: str):
            return None

    def reconstructor_for(
        mode: str, scale: float | None, weight: float = 0.0, embed=None, low=None
    ) -> Reconstructor:
        return Reconstructor(
            embed or decoder_embed,
            generator,
            lowlevel=low or lowlevel.decode,
            strength=strength,
            blend=weight,
            blend_mode=blend_mode,
            num_samples=num_samples,
            select_with=embed_images,
            sample_conditions=conditions_of(mode),
            guidance_scale=scale,
        )

    train_images = images_to_tensor(
        read_stimuli(data_root, np.unique(train.stimulus_id)[:500]), size=generator.image_size
    )
    mean_image = train_images.mean(0)
    blend_scores = None
    candidate_scores = None
    chosen = candidates[0]
    if blend is None or len(candidates) > 1:
        val = datamodule.val_set.trials[0]
        val_stimuli = read_stimuli(data_root, val.stimulus_id)
        candidate_scores, per_candidate = {}, {}
        for mode, scale in candidates:
            name = f"{mode}, guidance {'default' if scale is None else f'{scale:g}'}"
            with _trial_bar(len(val), f"reconstruct (validation: {name})") as bar:
                val_recon = reconstructor_for(mode, scale).reconstruct(
                    val.data, generator=torch.Generator().manual_seed(seed), progress=bar.update
                )
            weight, scores = choose_blend(
                val_recon.images,
                val_recon.lowlevel,
                val_stimuli,
                clip_fn,
                mean_image,
                blend_mode,
                grid=BLEND_GRID if blend is None else (float(blend),),
            )
            per_candidate[(mode, scale)] = (weight, scores)
            candidate_scores[name] = {"blend": weight, **scores[weight]}
        chosen = max(
            candidates, key=lambda c: per_candidate[c][1][per_candidate[c][0]]["clip_2way"]
        )
        blend, blend_scores = per_candidate[chosen]
    sampling, guidance_scale = chosen
    if condition == "manifold":  # saved with the choice, so `reconstruct` samples the same way
        projection.set_sampling(sampling, guidance_scale)
        save_condition(projection, Path(out) / "decoder" / CONDITION_FOLDER)
    save_lowlevel(
        LowLevelPathway(lowlevel, subject, strength, blend, blend_mode),
        Path(out) / "decoder" / LOWLEVEL_FOLDER,
    )

    reconstructor = reconstructor_for(sampling, guidance_scale, blend)
    test = datamodule.test_trials
    stimuli = read_stimuli(data_root, test.stimulus_id)
    with _trial_bar(len(test), "reconstruct (test trials)") as bar:
        ours = reconstructor.reconstruct(
            test.data, generator=torch.Generator().manual_seed(seed), progress=bar.update
        )
    # The generator's ceiling: the same generation (low-level images, strength, guidance,
    # best-of-n, blend) from the test images' true embeddings instead of the decoded ones. Its
    # "brain" rows are the trial indices, which look up both inputs.
    true_embeds = torch.as_tensor(embed_images(stimuli)).float()
    ceiling = reconstructor_for(
        "mean",
        guidance_scale,
        blend,
        embed=lambda rows: true_embeds[rows[:, 0].long()],
        low=lambda rows: ours.lowlevel[rows[:, 0].long()],
    )
    with _trial_bar(
        len(test), "generate from the true embeddings (the generator's ceiling)"
    ) as bar:
        from_truth = ceiling.reconstruct(
            torch.arange(len(test), dtype=torch.float32)[:, None],
            generator=torch.Generator().manual_seed(seed),
            progress=bar.update,
        ).images
    # The shuffled-trial control: each stimulus is paired with the reconstruction of another
    # trial. A permutation of the reconstructions is exactly that (the same pipeline on other
    # trials' data), without generating every image a second time.
    shuffled_rows = np.random.default_rng(seed).permutation(len(test))
    mean_images = mean_image[None].expand(len(test), -1, -1, -1)
    generator_ceiling = "generator given the true embeddings (ceiling of the semantic part)"
    methods = {
        "reconstruction": ours.images,
        "low-level alone": ours.lowlevel,
        "shuffled trials": ours.images[torch.as_tensor(shuffled_rows)],
        "mean training image": mean_images,
        generator_ceiling: from_truth,
    }
    ceiling_name = "low-level from noise-free responses (sim-only ceiling)"
    if (Path(data_root) / "ground_truth.h5").exists():
        methods[ceiling_name] = noise_free_lowlevel(
            data_root, subject, train.stimulus_id, test.stimulus_id
        )

    # AlexNet/Inception/EffNet/SwAV run only with local weights; a randomly initialised AlexNet
    # would say little and costs minutes at 300 images, so the demo leaves it out
    networks = feature_networks(clip_fn=clip_fn, clip_source="sim-clip", random_fallback=False)
    scored = compare_methods(
        methods,
        stimuli,
        networks=networks,
        size=int(stimuli.shape[1]),  # PixCorr/SSIM at the stimuli's own size (NSD's is 425)
    )
    plot_reconstructions(
        stimuli,
        ours.lowlevel,
        ours.images,
        Path(out) / "reconstruction.png",
        extra_columns={"true embedding\n(ceiling)": from_truth},
    )
    result = dict(scored["reconstruction"].values)
    result["controls"] = {
        "shuffled": scored["shuffled trials"].values,
        "mean_image": scored["mean training image"].values,
    }
    result["lowlevel"] = scored["low-level alone"].values
    result["ceiling"] = {"generator_true_embedding": scored[generator_ceiling].values}
    if ceiling_name in scored:
        result["ceiling"]["lowlevel_noise_free"] = scored[ceiling_name].values
    result["strength"] = float(strength)
    result["blend"] = float(blend)
    result["blend_mode"] = blend_mode
    result["condition"] = condition
    result["sampling"] = sampling
    result["guidance_scale"] = guidance_scale
    result["num_samples"] = int(num_samples)
    if candidate_scores is not None:
        result["sampling_validation"] = candidate_scores
    if temperature_scores is not None:
        result["condition_temperature"] = projection.temperature
        result["condition_temperature_validation"] = temperature_scores
    if blend_scores is not None:
        result["blend_validation"] = {str(w): s for w, s in blend_scores.items()}
    result["networks"] = scored["reconstruction"].networks
    result["n_trials"] = len(test)
    conditioned = SAMPLING_WORDS[sampling] if condition == "manifold" else "the prior's samples"
    guidance = "the generator's default" if guidance_scale is None else f"{guidance_scale:g}"
    result["table"] = metric_table(scored) + (
        f"\n\nimg2img strength {strength:g} from the low-level image; best of {num_samples} "
        f"samples, {conditioned}; classifier-free guidance {guidance}; the final image blends "
        f"the generated one with the low-level one ({blend_mode}, weight {blend:g}: "
        "MindEye2-style blend). Sampling, guidance and blend chosen on the validation images."
    )
    return result
