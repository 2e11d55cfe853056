"""``neurodecode extract --config experiments/<x>.yaml``: fill a FeatureStore from stimuli.

The YAML file (all keys but ``stimuli`` and ``store`` optional)::

    stimuli: data/sim/default        # NSD-layout root, nsd_stimuli.hdf5, or an image folder
    ids: null                        # all ids; or a list; or {start: 0, stop: 1000}
    store: data/sim/default-features.h5
    model:
      name: sim-clip                 # "sim-clip" or any open_clip config name (ViT-B-32, ...)
      preset: default                # sim-clip only: default | tiny
      pretrained: null               # open_clip only: cached hub tag, checkpoint path, or null
      store_name: null               # name in the store; default sim-clip-<preset> / name@weights
    outputs: [image]                 # image (pooled, N x D), image_tokens (N x T x D),
                                     # text (caption embeddings, N x D)
    layers: []                       # image-tower modules captured with forward hooks, e.g.
                                     # transformer.resblocks.1 (stored as visual.<name>)
    pooled_layers: true              # mean over tokens/space for `layers` (else full maps)
    batch_size: 64
    device: auto                     # auto | cpu | cuda | cuda:1 ...

Every entry is resumable: run it again and only missing ids are computed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.validation import InvalidInputError, check_file, check_keys, check_option

CONFIG_KEYS = (
    "stimuli",
    "ids",
    "store",
    "model",
    "outputs",
    "layers",
    "pooled_layers",
    "batch_size",
    "device",
)
MODEL_KEYS = ("name", "preset", "pretrained", "store_name")
OUTPUT_NAMES = ("image", "image_tokens", "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode extract``."""
    parser.description = "Fill a FeatureStore with image/text embeddings or layer activations."
    parser.add_argument("--config", required=True, type=Path, help="extraction YAML")
    parser.add_argument("--store", type=Path, default=None, help="override the config's store")
    parser.add_argument("--stimuli", type=Path, default=None, help="override the stimuli source")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate an extraction YAML; returns it with defaults filled in."""
    import yaml

    path = check_file(path, "extraction config")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise InvalidInputError(f"{path} must hold a mapping; found {type(config).__name__}.")
    check_keys(f"extraction config {path}", config, CONFIG_KEYS)
    for key in ("stimuli", "store"):
        if not config.get(key):
            raise InvalidInputError(f"extraction config {path} lacks '{key}'.")
    model = {"name": "sim-clip", "preset": "default", "pretrained": None, "store_name": None}
    given = config.get("model") or {}
    check_keys(f"'model' in {path}", given, MODEL_KEYS)
    model.update(given)
    outputs = list(config.get("outputs") or ["image"])
    for output in outputs:
        check_option(f"outputs entry in {path}", output, OUTPUT_NAMES)
    batch_size = int(config.get("batch_size", 64))
    if batch_size < 1:
        raise InvalidInputError(f"batch_size in {path} must be >= 1; got {batch_size}.")
    return {
        "stimuli": Path(config["stimuli"]),
        "ids": config.get("ids"),
        "store": Path(config["store"]),
        "model": model,
        "outputs": outputs,
        "layers": list(config.get("layers") or []),
        "pooled_layers": bool(config.get("pooled_layers", True)),
        "batch_size": batch_size,
        "device": str(config.get("device", "auto")),
    }


def _select_ids(all_ids: np.ndarray, ids: Any) -> list[str]:
    if ids is None:
        return [str(i) for i in all_ids]
    if isinstance(ids, dict):
        check_keys("ids", ids, ("start", "stop"))
        start, stop = int(ids.get("start", 0)), int(ids.get("stop", len(all_ids)))
        return [str(i) for i in all_ids[start:stop]]
    if isinstance(ids, list):
        known = set(all_ids.tolist())
        wanted = [str(i) for i in ids]
        missing = [i for i in wanted if i not in known]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} ids of the config are not in the stimuli (first: {missing[:5]})."
            )
        return wanted
    raise InvalidInputError(f"ids must be null, a list or {{start, stop}}; got {ids!r}.")


def _device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build_encoder(model: dict[str, Any], device: str):
    """The :class:`~neurodecode.features.clip.ClipEncoder` and its store name from ``model``."""
    if model["name"] == "sim-clip":
        from neurodecode.features.sim_clip import get_sim_clip

        encoder = get_sim_clip(model["preset"], device=device)
        name = f"sim-clip-{model['preset']}"
    else:
        from neurodecode.features.clip import load_clip

        encoder = load_clip(model["name"], model["pretrained"], device=device)
        pretrained = model["pretrained"]
        if pretrained is None:
            suffix = "random"
        elif Path(str(pretrained)).expanduser().is_file():
            suffix = Path(str(pretrained)).stem
        else:
            suffix = str(pretrained)
        name = f"{model['name']}@{suffix}"
    return encoder, model["store_name"] or name


def extract(config: dict[str, Any], progress: bool = True) -> dict[str, int]:
    """Fill the store described by a validated config; returns rows computed per layer."""
    from neurodecode.data.stimuli import open_stimuli
    from neurodecode.features.hooks import capture_activations
    from neurodecode.features.store import FeatureStore

    source = open_stimuli(config["stimuli"])
    ids = _select_ids(source.ids, config["ids"])
    device = _device(config["device"])
    encoder, model_name = build_encoder(config["model"], device)
    store = FeatureStore(config["store"])
    base = dict(encoder.settings)
    computed: dict[str, int] = {}

    def image_compute(output: str):
        def compute(batch: list[str]) -> np.ndarray:
            encoder.output = output
            return encoder.encode_image(source.load(batch)).cpu().numpy()

        return compute

    for output in config["outputs"]:
        if output == "text":
            captions = source.caption_list(ids)  # fail before computing anything
            by_id = dict(zip(ids, captions))

            def text_compute(batch: list[str], by_id: dict = by_id) -> np.ndarray:
                return encoder.encode_text([by_id[i] for i in batch]).cpu().numpy()

            settings = {**base, "output": "text", "input": "captions"}
            computed["text"] = store.fill(
                model_name, "text", ids, text_compute, settings, config["batch_size"], progress
            )
        else:
            kind = "pooled" if output == "image" else "tokens"
            settings = {**base, "output": kind}
            computed[output] = store.fill(
                model_name,
                output,
                ids,
                image_compute(kind),
                settings,
                config["batch_size"],
                progress,
            )
    encoder.output = "pooled"

    visual = encoder.model.visual
    for module in config["layers"]:
        pooled = config["pooled_layers"]
        layer = f"visual.{module}" + ("" if pooled else ":spatial")

        def layer_compute(batch: list[str], module: str = module, pooled: bool = pooled):
            pixels = encoder.preprocess_images(source.load(batch))
            return capture_activations(visual, [module], pixels, pooled=pooled)[module].cpu()

        if ids:  # an unknown module name fails here, before the store is touched
            capture_activations(visual, [module], encoder.preprocess_images(source.load(ids[:1])))
        settings = {**base, "output": "hook", "module": module, "pooled": pooled}
        computed[layer] = store.fill(
            model_name, layer, ids, layer_compute, settings, config["batch_size"], progress
        )
    return computed


def run(args: argparse.Namespace) -> int:
    """Entry point of ``neurodecode extract``."""
    config = load_config(args.config)
    if args.store is not None:
        config["store"] = args.store
    if args.stimuli is not None:
        config["stimuli"] = args.stimuli
    computed = extract(config, progress=not args.quiet)
    for layer, n in computed.items():
        print(f"{layer}: {n} stimuli computed -> {config['store']}")
    return 0
