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
    outputs: [image]                 # image (pooled, N x D), image_tokens (N x T x D, all
                                     # tokens projected: MindEye1, 257 x 768 for ViT-L-14),
                                     # image_patch_tokens (N x P x width, after ln_post, not
                                     # projected: MindEye2, 256 x 1664 for ViT-bigG-14),
                                     # text (caption embeddings, N x D)
    dtype: float32                   # storage type: float32 | float16
    layers: []                       # image-tower modules captured with forward hooks, e.g.
                                     # transformer.resblocks.1 (stored as visual.<name>)
    pooled_layers: true              # mean over tokens/space for `layers` (else full maps)
    batch_size: 64
    device: auto                     # auto | cpu | cuda | cuda:1 ...
    targets:                         # optional: named target spaces (features/target_spaces.py)
      spaces: [pooled+rectified8]    # pooled embedding + rectified8 pixel blocks, 1,088 d
      fit_on: subj01                 # block statistics from this subject's training images
                                     # (the NSD design's; never the shared test images), or a
                                     # list of training ids
      store_name: targets            # entry <store_name>/<space>, e.g. targets/pooled+rectified8

A target space's statistics are saved beside the store
(``<store stem>.<store_name>.<space>.statistics.npz``) and its entry is what
``NSDDataModule(feature_model="targets", feature_layer="pooled+rectified8")`` trains on.

Every entry is resumable, and ``--rank R --world-size W`` (or ``torchrun``'s ``RANK`` /
``WORLD_SIZE``) shards the work across processes (the protocol is in
:mod:`neurodecode.features.extract`). ``--merge`` merges the shards left in the store's folder
and exits.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neurodecode.cli.config import load_config as read_yaml_config
from neurodecode.validation import InvalidInputError, check_keys, check_option

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
    "dtype",
    "targets",
)
TARGET_KEYS = ("spaces", "fit_on", "store_name")
MODEL_KEYS = ("name", "preset", "pretrained", "store_name")
OUTPUT_NAMES = ("image", "image_tokens", "image_patch_tokens", "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode extract``."""
    parser.description = "Fill a FeatureStore with image/text embeddings or layer activations."
    parser.add_argument("--config", required=True, type=Path, help="extraction YAML")
    parser.add_argument("--store", type=Path, default=None, help="override the config's store")
    parser.add_argument("--stimuli", type=Path, default=None, help="override the stimuli source")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--rank", type=int, default=None, help="this process's rank (default: $RANK or 0)"
    )
    parser.add_argument(
        "--world-size", type=int, default=None, help="number of ranks (default: $WORLD_SIZE or 1)"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=24 * 3600.0,
        help="seconds rank 0 waits for the other ranks' shards before giving up",
    )
    parser.add_argument(
        "--merge", action="store_true", help="only merge shard files left beside the store"
    )


def load_extract_config(path: str | Path) -> dict[str, Any]:
    """Read and validate an extraction YAML; returns it with defaults filled in."""
    config = read_yaml_config(path, "extraction config", allowed=CONFIG_KEYS)
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
    dtype = str(config.get("dtype", "float32"))
    check_option(f"dtype in {path}", dtype, ("float32", "float16"))
    batch_size = int(config.get("batch_size", 64))
    if batch_size < 1:
        raise InvalidInputError(f"batch_size in {path} must be >= 1; got {batch_size}.")
    targets = _target_config(config.get("targets"), path)
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
        "dtype": dtype,
        "targets": targets,
    }


def _target_config(given: Any, path: str | Path) -> dict[str, Any] | None:
    """The validated ``targets`` section (``None`` when absent)."""
    if given is None:
        return None
    from neurodecode.features.target_spaces import STORE_MODEL, space_blocks

    if not isinstance(given, dict):
        raise InvalidInputError(f"'targets' in {path} must be a mapping; got {given!r}.")
    check_keys(f"'targets' in {path}", given, TARGET_KEYS)
    spaces = given.get("spaces")
    if isinstance(spaces, str):
        spaces = [spaces]
    if not spaces or not isinstance(spaces, list):
        raise InvalidInputError(
            f"'targets.spaces' in {path} must list target spaces, e.g. [pooled+rectified8]; "
            f"got {spaces!r}."
        )
    for space in spaces:
        space_blocks(space)
    fit_on = given.get("fit_on")
    if not (isinstance(fit_on, str) and fit_on) and not (isinstance(fit_on, list) and fit_on):
        raise InvalidInputError(
            f"'targets.fit_on' in {path} must name the subject whose training images fit the "
            f"block statistics (e.g. subj01) or list training ids; got {fit_on!r}."
        )
    return {
        "spaces": [str(s) for s in spaces],
        "fit_on": fit_on,
        "store_name": str(given.get("store_name") or STORE_MODEL),
    }


def target_fit_ids(config: dict[str, Any]) -> list[str]:
    """The training ids a config's ``targets.fit_on`` names: a subject's training images in the
    NSD design of ``stimuli``, or the listed ids."""
    fit_on = config["targets"]["fit_on"]
    if isinstance(fit_on, list):
        return [str(i) for i in fit_on]
    from neurodecode.data.nsd import training_image_ids
    from neurodecode.data.stimuli import NSD_STIMULI

    stimuli = Path(config["stimuli"])
    root = stimuli if stimuli.is_dir() else stimuli.parents[len(NSD_STIMULI.parts) - 1]
    design = root / "nsddata/experiments/nsd/nsd_expdesign.mat"
    if not design.is_file():
        raise InvalidInputError(
            f"targets.fit_on={fit_on!r} needs the NSD design of the stimuli's root ({design} is "
            "missing); list the training ids in targets.fit_on instead."
        )
    return [str(i) for i in training_image_ids(root, fit_on)]


def build_encoder(model: dict[str, Any], device: str):
    """The :class:`~neurodecode.features.clip.ClipEncoder` and its store name from ``model``."""
    if model["name"] == "sim-clip":
        from neurodecode.embedded.clip import get_sim_clip

        encoder = get_sim_clip(model["preset"], device=device)
        name = f"sim-clip-{model['preset']}"
    else:
        from neurodecode.features.clip import load_clip

        if model["name"].startswith("sim-clip-"):  # the simulated world's own configs
            from neurodecode.embedded.clip import register_model_configs

            register_model_configs()
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


def run_extraction(
    config: dict[str, Any],
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    wait_timeout: float = 24 * 3600.0,
) -> dict[str, int]:
    """Open the config's stimuli and model and fill its store; returns rows computed per layer
    (:func:`neurodecode.features.extract.extract`)."""
    from neurodecode.data.stimuli import open_stimuli
    from neurodecode.features.extract import device_for_rank, extract

    source = open_stimuli(config["stimuli"])
    if config.get("targets"):  # the training ids, resolved before any model is loaded
        config = {**config, "targets": {**config["targets"], "fit_ids": target_fit_ids(config)}}
    encoder, model_name = build_encoder(config["model"], device_for_rank(config["device"]))
    return extract(
        config,
        source,
        encoder,
        model_name,
        progress=progress,
        rank=rank,
        world_size=world_size,
        wait_timeout=wait_timeout,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``neurodecode extract``."""
    config = load_extract_config(args.config)
    if args.store is not None:
        config["store"] = args.store
    if args.stimuli is not None:
        config["stimuli"] = args.stimuli
    if args.merge:
        from neurodecode.features.store import FeatureStore

        store = FeatureStore(config["store"])
        added = store.merge(store.shard_files())
        for (model, layer), n in added.items():
            print(f"{model}/{layer}: {n} stimuli merged -> {store.path}")
        return 0
    computed = run_extraction(
        config,
        progress=not args.quiet,
        rank=args.rank,
        world_size=args.world_size,
        wait_timeout=args.wait_timeout,
    )
    for layer, n in computed.items():
        print(f"{layer}: {n} stimuli computed -> {config['store']}")
    return 0
