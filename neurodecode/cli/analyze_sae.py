"""``neurodecode analyze sae --config FILE``: train and evaluate an SAE or transcoder.

This module is where the SAE analysis's paths are wired to objects; the analysis modules
themselves (:mod:`neurodecode.analysis.sae`) take arrays and modules.

SAE config (every section's keys are checked; unknown keys are errors)::

    run_dir: runs/sae_planted        # created; receives config, sae/, metrics.json, dashboard.png
    seed: 0
    data:
      source: planted                # planted | array | feature_store | clip | vision_tokens
      ...                            # the source's own keys (see SOURCE_KEYS)
    sae:
      architecture: topk             # relu_l1 | topk | batchtopk | jumprelu | gated | prolu |
                                     # matryoshka_batchtopk | switch
      n_latents: 512
      ...                            # shared SAE options (transcoder, skip_connection,
                                     # unit_norm_decoder, normalize_activations, dead_window,
                                     # encoder_init_scale) and the architecture's hyperparameters
    training: {steps: 2000, batch_size: 512, lr: 1.0e-3, ...}
    evaluation: {eval_fraction: 0.1, dense_threshold: 0.1, dashboard_latents: 6, ...}
    export_saelens: false            # also write run_dir/saelens/ (SAELens's cfg.json +
                                     # sae_weights.safetensors; relu_l1/topk/jumprelu/batchtopk)
    e2e: {objective: e2e+ds, ...}    # optional: train end to end instead (see below)

``source: vision_tokens`` (:mod:`neurodecode.cli.analyze_sae_vision`) trains on a ViT layer's
patch (or class, or all) tokens streamed image batch by batch, and names latents after the
planted category, colour or position they detect (``latent_labels.json``) and, for patch tokens,
lists the latents whose peak patch follows the object (``object_tracking.json``), e.g.
``data: {source: vision_tokens, model_name: sim-clip-vit-tiny, layer: transformer.resblocks.0,
tokens: patch}``.

``source: clip`` takes its images from ``stimuli`` (null: ``n_images`` generated scenes; or a
simulated world / NSD root, an image folder: the first ``n_images`` of it, null: all; categories
for the zero-shot check come from a world's ``ground_truth.h5``).

An ``e2e`` section (:mod:`neurodecode.cli.analyze_sae_e2e`; ``source: clip`` only) trains the SAE
end to end (Braun et al. 2024): spliced into the image tower at ``data.layer``, on the KL between
the tower's clean and patched zero-shot category logits (``e2e``), plus the normalised MSE of
later layers' outputs (``e2e+ds``, default the output embedding ``visual``); its keys are
:data:`E2E_KEYS`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.cli.analyze_sae_vision import VISION_KEYS
from neurodecode.cli.config import section
from neurodecode.validation import InvalidInputError, check_file, check_keys, check_option

TOP_KEYS = ("run_dir", "seed", "data", "sae", "training", "evaluation", "export_saelens", "e2e")

#: data source -> allowed keys (besides ``source``) with defaults.
SOURCE_KEYS: dict[str, dict[str, Any]] = {
    "planted": {
        "n_samples": 50_000,
        "d": 64,
        "n_atoms": 256,
        "n_active": 5,
        "magnitude": [0.5, 1.5],
        "noise": 0.0,
        "d_out": None,
        "seed": 0,
    },
    "array": {"inputs": None, "targets": None, "stimulus_ids": None},
    "feature_store": {"path": None, "model_name": None, "layer": None, "target_layer": None},
    "clip": {
        "stimuli": None,
        "sim_clip_preset": "default",
        "model_name": None,
        "pretrained": None,
        "layer": None,
        "capture": "output",
        "n_images": 2000,
        "image_batch_size": 100,
        "stimulus_seed": 11,
        "n_downstream_images": 300,
    },
    "vision_tokens": VISION_KEYS,
}

TRAINING_KEYS: dict[str, Any] = {
    "steps": 2000,
    "batch_size": 512,
    "lr": 1e-3,
    "warmup_steps": 0,
    "decay_fraction": 0.2,
    "gradient_clip": 1.0,
    "accelerator": "auto",
}

EVALUATION_KEYS: dict[str, Any] = {
    "eval_fraction": 0.1,
    "batch_size": 4096,
    "dense_threshold": 0.1,
    "dashboard_latents": 6,
    "dashboard_top": 6,
}

#: ``e2e`` section -> defaults (the section's presence selects end-to-end training).
E2E_KEYS: dict[str, Any] = {
    "objective": "e2e",  # e2e | e2e+ds
    "kl_coefficient": 1.0,
    "ds_coefficient": 1.0,  # e2e+ds only
    "later_layers": ["visual"],  # e2e+ds only: modules of the CLIP model (visual: the embedding)
    "logit_scale": None,  # null: the model's own (exp of its logit_scale)
    "compare_local": True,  # also train a local-MSE SAE of the same config and score it alike
}


def validate_sae_config(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Check every section of an SAE config and fill defaults; one clear error per problem.

    Returns
    -------
    dict
        ``run_dir``, ``seed``, ``data`` (with ``source``), ``sae``, ``training``, ``evaluation``.
    """
    from neurodecode.analysis.sae.core import SAE_REGISTRY, SparseAutoencoder

    check_keys(where, config, TOP_KEYS)
    if "run_dir" not in config:
        raise InvalidInputError(f"{where} needs `run_dir` (the folder the run writes to).")
    data = dict(config.get("data") or {})
    source = check_option(f"{where} data.source", data.pop("source", None), sorted(SOURCE_KEYS))
    check_keys(f"{where} section 'data' (source {source!r})", data, SOURCE_KEYS[source])
    data = {"source": source, **SOURCE_KEYS[source], **data}
    if source == "vision_tokens":
        from neurodecode.analysis.sae.vision import TOKEN_CHOICES

        check_option(f"{where} data.tokens", data["tokens"], TOKEN_CHOICES)
        sae_in = config.get("sae") or {}
        if sae_in.get("transcoder") or sae_in.get("skip_connection"):
            raise InvalidInputError(
                f"{where}: data source 'vision_tokens' trains SAEs; drop sae.transcoder and "
                "sae.skip_connection."
            )
    sae = dict(config.get("sae") or {})
    architecture = check_option(
        f"{where} sae.architecture", sae.get("architecture"), sorted(SAE_REGISTRY)
    )
    if "n_latents" not in sae:
        raise InvalidInputError(f"{where} section 'sae' needs `n_latents`.")
    shared = (
        "architecture",
        "n_latents",
        "transcoder",
        "skip_connection",
        "unit_norm_decoder",
        "normalize_activations",
        "dead_window",
        "encoder_init_scale",
    )
    check_keys(
        f"{where} section 'sae' ({architecture})",
        sae,
        [*shared, *SAE_REGISTRY[architecture].hyperparameters],
    )
    assert issubclass(SAE_REGISTRY[architecture], SparseAutoencoder)
    e2e = _e2e_section(config, data, sae, architecture, where) if "e2e" in config else None
    return {
        "run_dir": Path(config["run_dir"]),
        "seed": int(config.get("seed", 0)),
        "data": data,
        "sae": sae,
        "training": section(config, "training", TRAINING_KEYS, where),
        "evaluation": section(config, "evaluation", EVALUATION_KEYS, where),
        "export_saelens": _export_flag(
            config.get("export_saelens", False), architecture, sae, where
        ),
        "e2e": e2e,
    }


def _e2e_section(
    config: dict[str, Any], data: dict[str, Any], sae: dict[str, Any], architecture: str, where: str
) -> dict[str, Any]:
    """The ``e2e`` section merged over :data:`E2E_KEYS`, checked against the rest of the config."""
    from neurodecode.analysis.sae.e2e import E2E_ARCHITECTURES

    e2e = section(config, "e2e", E2E_KEYS, where)
    objective = check_option(f"{where} e2e.objective", e2e["objective"], ("e2e", "e2e+ds"))
    if data["source"] != "clip":
        raise InvalidInputError(
            f"{where}: an e2e section needs data.source: clip (the SAE is spliced into a CLIP "
            f"image tower); got {data['source']!r}."
        )
    if data["capture"] != "output":
        raise InvalidInputError(
            f"{where}: an e2e SAE replaces the layer's output; set data.capture: output."
        )
    if architecture not in E2E_ARCHITECTURES:
        raise InvalidInputError(
            f"{where} e2e: end-to-end training takes sae.architecture in "
            f"{list(E2E_ARCHITECTURES)}; got {architecture!r}."
        )
    if sae.get("transcoder") or sae.get("skip_connection"):
        raise InvalidInputError(
            f"{where} e2e: an end-to-end SAE replaces the layer's output; drop sae.transcoder "
            "and sae.skip_connection."
        )
    given = config.get("e2e") or {}
    if objective == "e2e" and {"ds_coefficient", "later_layers"} & set(given):
        raise InvalidInputError(
            f"{where} e2e: ds_coefficient and later_layers belong to objective e2e+ds; the "
            "objective is e2e."
        )
    for key in ("kl_coefficient", "ds_coefficient"):
        value = e2e[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise InvalidInputError(f"{where} e2e.{key} is {value!r}; expected a number >= 0.")
    later = e2e["later_layers"]
    if objective == "e2e+ds":
        if not isinstance(later, list) or not later or not all(isinstance(n, str) for n in later):
            raise InvalidInputError(
                f"{where} e2e.later_layers is {later!r}; expected a non-empty list of module "
                "names of the CLIP model, e.g. [visual] (the image embedding)."
            )
        if not e2e["ds_coefficient"] > 0:
            raise InvalidInputError(f"{where} e2e.ds_coefficient must be > 0 for e2e+ds.")
    scale = e2e["logit_scale"]
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0
    ):
        raise InvalidInputError(
            f"{where} e2e.logit_scale is {scale!r}; expected a number > 0 or null (the model's)."
        )
    if not isinstance(e2e["compare_local"], bool):
        raise InvalidInputError(
            f"{where} e2e.compare_local is {e2e['compare_local']!r}; expected true or false."
        )
    return {
        **e2e,
        "later_layers": list(later) if objective == "e2e+ds" else [],
        "ds_coefficient": float(e2e["ds_coefficient"]) if objective == "e2e+ds" else 0.0,
    }


def _export_flag(value: Any, architecture: str, sae: dict, where: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where} export_saelens is {value!r}; expected true or false.")
    exportable = ("relu_l1", "topk", "jumprelu", "batchtopk")
    if value and (
        architecture not in exportable or sae.get("transcoder") or sae.get("skip_connection")
    ):
        raise InvalidInputError(
            f"{where} export_saelens: SAELens's format takes relu_l1, topk, jumprelu and batchtopk "
            f"SAEs, not {'a transcoder' if sae.get('transcoder') else architecture}."
        )
    return value


# --- data sources -------------------------------------------------------------------------------
class _LoadedData:
    """Rows for training plus what the dashboard and downstream check need."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray | None = None) -> None:
        self.inputs = inputs
        self.targets = targets
        self.planted_atoms: np.ndarray | None = None
        self.stimulus_ids: np.ndarray | None = None
        self.images: np.ndarray | None = None
        self.captions: list[str] | None = None
        self.downstream: Callable[[Any], dict[str, Any]] | None = None


def _load_planted(data: dict[str, Any], transcoder: bool) -> _LoadedData:
    from neurodecode.analysis.sae.planted import make_planted_activations

    d_out = data["d_out"] if data["d_out"] is not None else (data["d"] if transcoder else None)
    planted = make_planted_activations(
        int(data["n_samples"]),
        d=int(data["d"]),
        n_atoms=int(data["n_atoms"]),
        n_active=int(data["n_active"]),
        magnitude=tuple(data["magnitude"]),
        noise=float(data["noise"]),
        d_out=d_out,
        seed=int(data["seed"]),
    )
    loaded = _LoadedData(planted.inputs, planted.targets)
    loaded.planted_atoms = planted.output_atoms if transcoder else planted.atoms
    return loaded


def _load_array(data: dict[str, Any]) -> _LoadedData:
    if data["inputs"] is None:
        raise InvalidInputError("data source 'array' needs `inputs` (a .npy file).")
    inputs = np.load(check_file(data["inputs"], "data.inputs array"))
    targets = None
    if data["targets"] is not None:
        targets = np.load(check_file(data["targets"], "data.targets array"))
    loaded = _LoadedData(inputs, targets)
    if data["stimulus_ids"] is not None:
        loaded.stimulus_ids = np.load(check_file(data["stimulus_ids"], "data.stimulus_ids array"))
    return loaded


def _load_feature_store(data: dict[str, Any], transcoder: bool) -> _LoadedData:
    from neurodecode.features.store import FeatureStore

    for key in ("path", "model_name", "layer"):
        if data[key] is None:
            raise InvalidInputError(f"data source 'feature_store' needs `{key}`.")
    store = FeatureStore(check_file(data["path"], "data.path FeatureStore"))
    ids = store.stimulus_ids(data["model_name"], data["layer"])
    inputs = store.read(data["model_name"], data["layer"], ids)
    targets = None
    if transcoder:
        if data["target_layer"] is None:
            raise InvalidInputError("a transcoder from a FeatureStore needs data.target_layer.")
        targets = store.read(data["model_name"], data["target_layer"], ids)
    loaded = _LoadedData(inputs, targets)
    loaded.stimulus_ids = ids
    return loaded


def _load_clip(data: dict[str, Any], transcoder: bool) -> _LoadedData:
    """Capture a CLIP vision-tower layer with a forward hook over simulated stimuli."""
    import torch

    from neurodecode.analysis.sae.training import HookedActivationStream

    if data["layer"] is None:
        raise InvalidInputError(
            "data source 'clip' needs `layer`, e.g. visual.trunk.head (sim-clip) or visual.transformer.resblocks.11 (an open_clip ViT)."
        )
    if transcoder and data["capture"] != "io":
        raise InvalidInputError(
            "a transcoder needs data.capture: io (the layer's input and output)."
        )
    encoder = _clip_encoder(data)
    images, category, captions, ids = clip_images(data, encoder.image_size)
    n, step = len(images), int(data["image_batch_size"])

    def batch(i: int) -> torch.Tensor | None:
        if i * step >= n:
            return None
        return encoder.preprocess_images(images[i * step : (i + 1) * step])

    stream = HookedActivationStream(
        encoder.model,
        data["layer"],
        batch,
        capture=data["capture"],
        forward=lambda model, pixels: model.encode_image(pixels),
    )
    firsts, seconds, rows_per_image = [], [], None
    for i in range(0, (n + step - 1) // step):
        first, second = stream.capture_batch(batch(i))
        rows_per_image = first.shape[0] // min(step, n - i * step)
        firsts.append(first.numpy())
        if second is not None:
            seconds.append(second.numpy())
    inputs = np.concatenate(firsts).reshape(n, rows_per_image, -1)
    targets = np.concatenate(seconds).reshape(n, rows_per_image, -1) if seconds else None
    loaded = _LoadedData(inputs, targets)
    loaded.stimulus_ids = ids
    loaded.images = images
    loaded.captions = captions
    if category is not None:  # the zero-shot check needs each image's category
        n_down = min(int(data["n_downstream_images"]), n)
        loaded.downstream = _clip_downstream(
            encoder, stream, images, category, loaded, n_down, transcoder
        )
    return loaded


def clip_images(
    data: dict[str, Any], image_size: int
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, np.ndarray]:
    """The images of a ``source: clip`` config: generated scenes, or read from ``data.stimuli``.

    Parameters
    ----------
    data : dict
        The validated ``data`` section (``stimuli``, ``n_images``, ``stimulus_seed``).
    image_size : int
        Side in pixels of generated scenes (the model's input size; read images keep theirs).

    Returns
    -------
    images : ndarray, shape (n, H, W, 3), uint8
    category : ndarray of str, shape (n,), or None
        Each image's category (:data:`neurodecode.sim.stimuli.CATEGORIES`); None when unknown
        (images not from a simulated world).
    captions : list of str, or None
    stimulus_ids : ndarray of str, shape (n,)
    """
    n_images = data["n_images"]
    if data["stimuli"] is None:
        from neurodecode.sim.stimuli import generate_stimuli

        if n_images is None:
            raise InvalidInputError("data.n_images is needed when data.stimuli is null.")
        n, seed = int(n_images), int(data["stimulus_seed"])
        stimuli = generate_stimuli(n, size=max(image_size, 8), seed=seed)
        ids = np.array([f"sim-{seed}-{i}" for i in range(n)])
        return stimuli.images, np.asarray(stimuli.category), list(stimuli.captions), ids
    from neurodecode.cli.analyze_sae_vision import _open_images

    opened, attributes, captions = _open_images(data, image_size)
    if len(opened) < 2:
        raise InvalidInputError(
            f"data.stimuli {data['stimuli']} holds {len(opened)} images; expected >= 2."
        )
    images = opened.take(np.arange(len(opened)))
    category = None if attributes is None else np.asarray(attributes["category"])
    return images, category, captions, np.asarray(opened.ids).astype(str)


def _clip_encoder(data: dict[str, Any]) -> Any:
    # importing embedded.clip registers the sim-clip-* model configs that load_clip may be named
    from neurodecode.embedded.clip import get_sim_clip

    if data["model_name"] is not None:
        from neurodecode.features.clip import load_clip

        return load_clip(data["model_name"], data["pretrained"])
    return get_sim_clip(data["sim_clip_preset"], progress=False)


def _clip_downstream(
    encoder: Any,
    stream: Any,
    all_images: np.ndarray,
    category: np.ndarray,
    loaded: _LoadedData,
    n_images: int,
    transcoder: bool,
) -> Callable[[Any], dict[str, Any]]:
    """Zero-shot category accuracy with the hooked layer's output replaced by given activations.

    ``downstream(outputs)`` runs the image tower with the layer's output set to ``outputs``
    (n_images, tokens, d); it is scored with the captured outputs and with the SAE's
    reconstructions (transcoder: its prediction from the captured inputs).
    """
    import torch

    from neurodecode.analysis.sae.metrics import downstream_drop
    from neurodecode.embedded.clip import CATEGORY_PROMPTS
    from neurodecode.sim.stimuli import CATEGORIES

    images = all_images[:n_images]
    truth = np.asarray(category[:n_images])
    prompts = encoder.encode_text([CATEGORY_PROMPTS[c] for c in CATEGORIES], normalize=True)
    captured_in = torch.from_numpy(loaded.inputs[:n_images])
    captured_out = torch.from_numpy((loaded.targets if transcoder else loaded.inputs)[:n_images])
    step = 100

    def downstream(outputs: torch.Tensor) -> float:
        position = {"start": 0}

        def replace(module: Any, args: tuple, output: Any) -> Any:
            start = position["start"]
            chunk = outputs[start : start + output.shape[0]]
            position["start"] = start + output.shape[0]
            return chunk.to(output.device, output.dtype).reshape(output.shape)

        handle = stream.module.register_forward_hook(replace)
        try:
            embeddings = torch.cat(
                [
                    encoder.encode_image(images[i : i + step], normalize=True)
                    for i in range(0, len(images), step)
                ]
            )
        finally:
            handle.remove()
        predicted = np.array(CATEGORIES)[(embeddings @ prompts.T).argmax(1).cpu().numpy()]
        return float(np.mean(predicted == truth))

    def run(sae: Any) -> dict[str, Any]:
        sae = sae.cpu().eval()
        source = captured_in if transcoder else captured_out
        with torch.no_grad():
            rows = sae(source.reshape(-1, source.shape[-1])).output
        reconstructed = rows.reshape(*captured_out.shape[:-1], rows.shape[-1])
        result = downstream_drop(downstream, captured_out, reconstructed)
        return {"task": "zero_shot_category_accuracy", "n_images": len(images), **result}

    return run


# --- the SAE analysis ---------------------------------------------------------------------------
def run_sae(config: dict[str, Any], config_path: Path | None = None) -> Path:
    """Train, evaluate and plot an SAE/transcoder as ``config`` says; returns the run folder."""
    import torch
    import yaml

    from neurodecode.analysis.sae.core import create_sae
    from neurodecode.analysis.sae.metrics import evaluate_reconstruction
    from neurodecode.analysis.sae.planted import dictionary_recovery
    from neurodecode.analysis.sae.training import (
        ArrayActivationDataModule,
        _as_rows,
        encode_rows,
        train_sae,
    )
    from neurodecode.plotting.sae_dashboard import latent_dashboard

    where = str(config_path) if config_path is not None else "config"
    cfg = validate_sae_config(config, where)
    if cfg["data"]["source"] == "vision_tokens":
        from neurodecode.cli.analyze_sae_vision import run_vision_tokens

        return run_vision_tokens(cfg, config)
    if cfg["e2e"] is not None:
        from neurodecode.cli.analyze_sae_e2e import run_e2e

        return run_e2e(cfg, config, _clip_encoder, clip_images)
    run_dir, data_cfg, sae_cfg = cfg["run_dir"], cfg["data"], dict(cfg["sae"])
    training, evaluation = cfg["training"], cfg["evaluation"]
    transcoder = bool(sae_cfg.get("transcoder", False))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    source = data_cfg["source"]
    if source == "planted":
        loaded = _load_planted(data_cfg, transcoder)
    elif source == "array":
        loaded = _load_array(data_cfg)
    elif source == "feature_store":
        loaded = _load_feature_store(data_cfg, transcoder)
    else:
        loaded = _load_clip(data_cfg, transcoder)
    if transcoder and loaded.targets is None:
        raise InvalidInputError(f"{where}: sae.transcoder is true but the data give no targets.")

    torch.manual_seed(cfg["seed"])
    datamodule = ArrayActivationDataModule(
        loaded.inputs,
        loaded.targets if transcoder else None,
        batch_size=int(training["batch_size"]),
        eval_fraction=float(evaluation["eval_fraction"]),
        seed=cfg["seed"],
    )
    architecture = sae_cfg.pop("architecture")
    n_latents = int(sae_cfg.pop("n_latents"))
    d_in = datamodule.train_inputs.shape[1]
    if transcoder:
        sae_cfg.setdefault("d_out", datamodule.train_targets.shape[1])
    sae = create_sae(architecture, d_in, n_latents, **sae_cfg)
    print(
        f"training {architecture} ({'transcoder' if transcoder else 'SAE'}) d_in={d_in} "
        f"n_latents={n_latents} on {datamodule.train_inputs.shape[0]} rows"
    )
    module = train_sae(
        sae,
        datamodule,
        steps=int(training["steps"]),
        lr=float(training["lr"]),
        warmup_steps=int(training["warmup_steps"]),
        decay_fraction=float(training["decay_fraction"]),
        gradient_clip=training["gradient_clip"],
        run_dir=run_dir,
        accelerator=str(training["accelerator"]),
        seed=cfg["seed"],
    )
    sae = module.sae.cpu().eval()
    sae.save_pretrained(run_dir / "sae")
    if cfg["export_saelens"]:
        from neurodecode.analysis.sae.saelens import export_saelens

        data = cfg["data"]
        export_saelens(
            sae,
            run_dir / "saelens",
            hook_name=str(data.get("layer") or ""),
            model_name=str(data.get("model_name") or data["source"]),
        )

    metrics: dict[str, Any] = {
        "architecture": architecture,
        "transcoder": transcoder,
        "n_latents": n_latents,
        "steps": int(training["steps"]),
        **evaluate_reconstruction(
            sae,
            datamodule.eval_batches(int(evaluation["batch_size"])),
            dense_threshold=float(evaluation["dense_threshold"]),
        ),
    }
    if loaded.planted_atoms is not None:
        metrics["recovery"] = dictionary_recovery(loaded.planted_atoms, sae.W_dec)
    if loaded.downstream is not None:
        metrics["downstream"] = loaded.downstream(sae)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    # dashboard: per-stimulus latent activation (max over a stimulus's tokens)
    n_stim = len(loaded.inputs)
    rows = _as_rows("inputs", loaded.inputs)
    per_stim = encode_rows(sae, rows).numpy().reshape(n_stim, -1, n_latents).max(1)
    figure = latent_dashboard(
        per_stim,
        images=loaded.images,
        stimulus_ids=loaded.stimulus_ids,
        captions=loaded.captions,
        n_top=int(evaluation["dashboard_top"]),
        n_latents=int(evaluation["dashboard_latents"]),
    )
    figure.savefig(run_dir / "dashboard.png", dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)
    summary = {k: metrics[k] for k in ("fvu", "l0", "dead_fraction") if k in metrics}
    print(f"wrote {run_dir}: " + ", ".join(f"{k}={v:.4g}" for k, v in summary.items()))
    return run_dir
