"""``neurodecode analyze sae`` with an ``e2e`` section: an end-to-end SAE in a CLIP image tower.

The SAE (Braun et al. 2024; :mod:`neurodecode.analysis.sae.e2e`) is spliced into the image tower
at ``data.layer`` (its output rows replaced by the SAE's output) and trained on how far that moves
the tower's downstream output, not on how well it reconstructs the layer:

- ``objective: e2e``: KL(clean ‖ patched) of the zero-shot category logits — the image embedding,
  L2-normalised, against the six category prompts' text embeddings
  (:data:`neurodecode.embedded.clip.CATEGORY_PROMPTS`), times ``logit_scale`` — plus the
  architecture's sparsity term;
- ``objective: e2e+ds``: plus ``ds_coefficient`` times the normalised MSE of ``later_layers``'
  outputs (default ``visual``: the image embedding itself).

The images come from ``data.stimuli`` (a simulated world such as ``data/sim/default``, whose
``ground_truth.h5`` gives each image's category) or are generated (``stimuli: null``); a seeded
``evaluation.eval_fraction`` of them is held out, and the first ``data.n_downstream_images`` of
those are scored. With ``compare_local: true`` (the default) an SAE of the same config and
initialisation seed is also trained the usual way (MSE on the training images' layer rows, same
steps, batch size and learning rate) and scored on the same images: the e2e SAE should move the
logits less at equal L0 while explaining less of the layer's variance.

Section keys (``e2e:``, defaults in :data:`neurodecode.cli.analyze_sae.E2E_KEYS`)::

    objective: e2e+ds          # e2e | e2e+ds
    kl_coefficient: 1.0
    ds_coefficient: 1.0        # e2e+ds only
    later_layers: [visual]     # e2e+ds only: modules of the CLIP model
    logit_scale: null          # null: the model's own (exp of its logit_scale)
    compare_local: true

``training.batch_size`` is images per step (one row per image at ``visual.trunk.head``).
Writes ``config.yaml``; ``sae/`` (the one SAE model folder; ``config.json``'s
``metadata.training`` records the objective, layer and coefficients, and
:func:`neurodecode.load_pretrained` loads it); ``sae_local/`` with ``compare_local``;
``metrics.json`` (below) and ``dashboard.png``; and prints a summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.validation import InvalidInputError


def _check_modules(network: Any, names: list[str], what: str) -> None:
    modules = dict(network.named_modules())
    missing = [name for name in names if name not in modules]
    if missing:
        raise InvalidInputError(
            f"{what} {missing} not found in the CLIP model; e.g. "
            f"{[n for n in modules if n.startswith('visual')][:6]}."
        )


def zero_shot_logits(encoder: Any, logit_scale: float | None = None) -> tuple[Any, float]:
    """The network's downstream output for end-to-end training: zero-shot category logits.

    Parameters
    ----------
    encoder : neurodecode.features.clip.ClipEncoder
    logit_scale : float, optional
        Multiplies the cosine similarities; default the model's own ``exp(logit_scale)``.

    Returns
    -------
    forward : callable
        ``forward(model, pixels) -> logits``: pixels (n, 3, S, S) preprocessed -> (n, 6) float,
        ``logit_scale`` times the cosine similarity of each image embedding with each category
        prompt's text embedding (order :data:`neurodecode.sim.stimuli.CATEGORIES`).
    logit_scale : float
        The scale used.
    """
    import torch

    from neurodecode.embedded.clip import CATEGORY_PROMPTS
    from neurodecode.sim.stimuli import CATEGORIES

    with torch.no_grad():
        text = encoder.encode_text([CATEGORY_PROMPTS[c] for c in CATEGORIES], normalize=True)
        text = text.detach().float().cpu()
        if logit_scale is None:
            logit_scale = float(encoder.model.logit_scale.exp())
    scale = float(logit_scale)

    def forward(model: Any, pixels: torch.Tensor) -> torch.Tensor:
        image = torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1)
        return scale * image @ text.to(image.device).T

    return forward, scale


def run_e2e(
    cfg: dict[str, Any],
    config: dict[str, Any],
    open_encoder: Callable[[dict[str, Any]], Any],
    read_images: Callable[[dict[str, Any], int], tuple],
) -> Path:
    """Train, save and score an end-to-end SAE as the validated ``cfg`` says; the run folder.

    Parameters
    ----------
    cfg : dict
        :func:`neurodecode.cli.analyze_sae.validate_sae_config`'s result, with ``cfg["e2e"]`` set
        (``data.source`` is ``clip``).
    config : dict
        The config as read (written to ``run_dir/config.yaml``).
    open_encoder, read_images : callable
        The ``clip`` source's readers, given by the caller (``neurodecode.cli.analyze_sae``):
        ``open_encoder(cfg["data"])`` gives the CLIP image encoder (``.model``,
        ``.image_size``); ``read_images(cfg["data"], image_size)`` gives (images, category,
        captions, ids).

    Returns
    -------
    Path
        ``run_dir``, holding ``sae/``, ``metrics.json``, ``dashboard.png`` (and ``sae_local/``).
        ``metrics.json`` has the e2e SAE's scores on the held-out images at the top level —
        ``kl`` (mean nats per image, clean ‖ patched logits), ``fvu``, ``l0`` (active latents
        per row), ``dead_fraction``, ``accuracy_clean`` / ``accuracy_patched`` /
        ``accuracy_drop`` (zero-shot category accuracy, fractions; when the categories are
        known) and the other reconstruction statistics — plus ``objective``, ``training``,
        ``source``, ``kl_mean_ablation`` (the KL with the layer replaced by its training mean,
        for scale), ``train_seconds`` and, with ``compare_local``, ``local`` (the same scores
        of the local-MSE SAE).
    """
    import matplotlib.pyplot as plt
    import torch
    import yaml

    from neurodecode.analysis.sae.core import create_sae
    from neurodecode.analysis.sae.e2e import (
        capture_layer_rows,
        e2e_evaluation,
        save_e2e_sae,
        train_e2e_sae,
    )
    from neurodecode.analysis.sae.metrics import evaluate_reconstruction
    from neurodecode.analysis.sae.pathology import kl_divergence, replaced_activations
    from neurodecode.analysis.sae.training import ArrayActivationDataModule, encode_rows, train_sae
    from neurodecode.plotting.sae_dashboard import latent_dashboard
    from neurodecode.sim.stimuli import CATEGORIES

    run_dir, data, sae_cfg = cfg["run_dir"], cfg["data"], dict(cfg["sae"])
    training, evaluation, e2e, seed = cfg["training"], cfg["evaluation"], cfg["e2e"], cfg["seed"]
    layer = data["layer"]
    if layer is None:
        raise InvalidInputError(
            "an e2e SAE needs data.layer, e.g. visual.trunk.head (sim-clip's pooled features)."
        )
    eval_fraction = float(evaluation["eval_fraction"])
    if not 0 < eval_fraction < 1:
        raise InvalidInputError(
            f"an e2e run scores held-out images: evaluation.eval_fraction is {eval_fraction}; "
            "expected a fraction in (0, 1)."
        )
    encoder = open_encoder(data)
    network = encoder.model.eval()
    _check_modules(network, [layer], "data.layer")
    _check_modules(network, e2e["later_layers"], "e2e.later_layers")
    images, category, captions, ids = read_images(data, encoder.image_size)
    n = len(images)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    step = int(data["image_batch_size"])
    pixels = torch.cat(
        [encoder.preprocess_images(images[i : i + step]).cpu() for i in range(0, n, step)]
    )
    labels = None
    if category is not None and set(category) <= set(CATEGORIES):
        labels = torch.tensor([CATEGORIES.index(c) for c in category])
    order = np.random.default_rng(seed).permutation(n)
    n_eval = min(max(1, round(eval_fraction * n)), n - 1)
    train_index, eval_index = np.sort(order[: n - n_eval]), np.sort(order[n - n_eval :])
    eval_index = eval_index[: int(data["n_downstream_images"])]
    forward, scale = zero_shot_logits(encoder, e2e["logit_scale"])

    all_rows = capture_layer_rows(network, layer, pixels, forward, step)
    per_image = all_rows.shape[0] // n
    by_image = all_rows.reshape(n, per_image, -1)
    train_rows = by_image[torch.from_numpy(train_index)].reshape(-1, all_rows.shape[1])
    eval_rows = by_image[torch.from_numpy(eval_index)].reshape(-1, all_rows.shape[1])
    eval_pixels = pixels[torch.from_numpy(eval_index)]
    eval_labels = None if labels is None else labels[torch.from_numpy(eval_index)]

    architecture = sae_cfg.pop("architecture")
    n_latents = int(sae_cfg.pop("n_latents"))
    d_in = int(all_rows.shape[1])
    schedule = {
        "steps": int(training["steps"]),
        "lr": float(training["lr"]),
        "warmup_steps": int(training["warmup_steps"]),
        "decay_fraction": float(training["decay_fraction"]),
        "gradient_clip": training["gradient_clip"],
        "accelerator": str(training["accelerator"]),
        "seed": seed,
    }
    objective = e2e["objective"]
    print(
        f"training {architecture} SAE ({objective}) d_in={d_in} n_latents={n_latents} at {layer} "
        f"on {len(train_index)} images, scoring {len(eval_index)} held-out images"
    )
    torch.manual_seed(seed)
    sae = create_sae(architecture, d_in, n_latents, **sae_cfg)
    start = time.perf_counter()
    module = train_e2e_sae(
        sae,
        network,
        layer,
        pixels[torch.from_numpy(train_index)],
        forward=forward,
        later_layers=e2e["later_layers"],
        ds_coefficient=float(e2e["ds_coefficient"]),
        kl_coefficient=float(e2e["kl_coefficient"]),
        batch_size=int(training["batch_size"]),
        **schedule,
    )
    train_seconds = time.perf_counter() - start
    network.cpu().eval()  # Lightning moved it to the training device
    sae = module.sae.cpu().eval()
    model_name = str(data["model_name"] or f"sim-clip-{data['sim_clip_preset']}")
    source = {
        "model": model_name,
        "pretrained": data["pretrained"],
        "layer": layer,
        "stimuli": None if data["stimuli"] is None else str(data["stimuli"]),
        "n_images": n,
        "n_train_images": len(train_index),
        "n_eval_images": len(eval_index),
        "rows_per_image": per_image,
        "logit_scale": scale,
        "classes": list(CATEGORIES),
    }
    save_e2e_sae(module, run_dir / "sae", metadata={"source": source})
    if cfg["export_saelens"]:
        from neurodecode.analysis.sae.saelens import export_saelens

        export_saelens(sae, run_dir / "saelens", hook_name=layer, model_name=model_name)

    size = int(evaluation["batch_size"])

    def scores(trained: Any) -> dict[str, Any]:
        local = evaluate_reconstruction(
            trained,
            [eval_rows[i : i + size] for i in range(0, len(eval_rows), size)],
            dense_threshold=float(evaluation["dense_threshold"]),
        )
        end = e2e_evaluation(
            trained, network, layer, eval_pixels, eval_labels, forward=forward, batch_size=step
        )
        return {**local, **end}

    mean_row = train_rows.mean(0)
    with torch.no_grad():
        clean = forward(network, eval_pixels)
        with replaced_activations(network, layer, lambda r: mean_row.expand_as(r).to(r)):
            ablated = forward(network, eval_pixels)
    metrics: dict[str, Any] = {
        "architecture": architecture,
        "transcoder": False,
        "n_latents": n_latents,
        "steps": int(training["steps"]),
        "objective": objective,
        "training": module.training_metadata(),
        "source": source,
        "kl_mean_ablation": float(kl_divergence(clean, ablated).mean()),
        **scores(sae),
        "train_seconds": train_seconds,
    }
    if e2e["compare_local"]:
        torch.manual_seed(seed)
        local_sae = create_sae(architecture, d_in, n_latents, **sae_cfg)
        rows = ArrayActivationDataModule(
            train_rows, batch_size=int(training["batch_size"]), eval_fraction=0.0, seed=seed
        )
        start = time.perf_counter()
        local_sae = train_sae(local_sae, rows, **schedule).sae.cpu().eval()
        local_seconds = time.perf_counter() - start
        local_sae.save_pretrained(
            run_dir / "sae_local",
            metadata={
                "source": source,
                "training": {"objective": "local", "layer": layer, "lr": schedule["lr"],
                             "steps": schedule["steps"]},
            },
        )  # fmt: skip
        metrics["local"] = {**scores(local_sae), "train_seconds": local_seconds}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    per_stim = encode_rows(sae, all_rows).numpy().reshape(n, per_image, n_latents).max(1)
    figure = latent_dashboard(
        per_stim,
        images=images,
        stimulus_ids=ids,
        captions=captions,
        n_top=int(evaluation["dashboard_top"]),
        n_latents=int(evaluation["dashboard_latents"]),
    )
    figure.savefig(run_dir / "dashboard.png", dpi=100)
    plt.close(figure)

    print(
        f"downstream KL with the layer mean-ablated: {metrics['kl_mean_ablation']:.4g} nats "
        f"({len(eval_index)} held-out images)"
    )
    for name, row in [(objective, metrics), ("local", metrics.get("local"))]:
        if row is None:
            continue
        line = (
            f"  {name:7s} KL={row['kl']:.4g} FVU={row['fvu']:.4g} L0={row['l0']:.3g} "
            f"dead={row['dead_fraction']:.3g}"
        )
        if "accuracy_clean" in row:
            line += f" accuracy {row['accuracy_clean']:.3f} -> {row['accuracy_patched']:.3f}"
        print(line)
    print(f"wrote {run_dir}")
    return run_dir
