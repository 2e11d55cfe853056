"""Fill a FeatureStore with a model's embeddings and layer activations of stimuli, resumably and
sharded by rank.

Every entry is resumable: run it again and only missing ids are computed.

Sharded by rank (several processes, GPUs or nodes): with ``rank``/``world_size``, or the
``RANK``/``WORLD_SIZE`` variables that ``torchrun`` and Lightning set, or an initialised
``torch.distributed``, each rank computes every W-th batch of the ids the store lacks into its
own shard file, marks it done, and rank 0 waits for every rank's mark and merges the shards into
the store in one atomic commit (:meth:`FeatureStore.merge`). A killed rank is simply run again: it
resumes its shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.validation import InvalidInputError, check_keys


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


def device_for_rank(name: str) -> str:
    """``auto``: this rank's GPU (``cuda:$LOCAL_RANK``, as torchrun/Lightning number them), else
    the CPU; any other name as given."""
    if name == "auto":
        import torch

        if not torch.cuda.is_available():
            return "cpu"
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return f"cuda:{local % torch.cuda.device_count()}"
    return name


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: explicit values, else ``torch.distributed``, else the environment.

    The environment is ``RANK`` and ``WORLD_SIZE`` (set by ``torchrun``, Lightning's launchers
    and SLURM wrappers); without them, one process: ``(0, 1)``.
    """
    if world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            world_size = dist.get_world_size()
            rank = dist.get_rank() if rank is None else rank
        else:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(
            f"rank {rank} of world size {world_size}: expected 0 <= rank < world_size."
        )
    return rank, world_size


def _fill_entries(
    config: dict[str, Any],
    source: Any,
    encoder: Any,
    model_name: str,
    target: Callable[[str, str, list[str]], tuple[Any, list[str]]],
    progress: bool,
) -> dict[str, int]:
    """Fill every entry the config asks for; ``target(model, layer, ids) -> (store, ids)``."""
    from neurodecode.features.hooks import capture_activations

    ids = _select_ids(source.ids, config["ids"])
    base = dict(encoder.settings)
    computed: dict[str, int] = {}

    def fill(layer: str, compute, settings: dict[str, Any]) -> int:
        store, todo = target(model_name, layer, ids)
        return store.fill(
            model_name,
            layer,
            todo,
            compute,
            settings,
            config["batch_size"],
            progress,
            dtype=config.get("dtype", "float32"),
        )

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
            computed["text"] = fill("text", text_compute, settings)
        else:
            kinds = {"image": "pooled", "image_tokens": "tokens"}
            kind = kinds.get(output, "patch_tokens")
            computed[output] = fill(output, image_compute(kind), {**base, "output": kind})
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
        computed[layer] = fill(layer, layer_compute, settings)

    targets = config.get("targets")
    if targets:
        from neurodecode.features.target_spaces import fill_target_space, statistics_path

        def embed(images: np.ndarray) -> np.ndarray:
            encoder.output = "pooled"
            return encoder.encode_image(images).cpu().numpy()

        for space in targets["spaces"]:
            store, todo = target(targets["store_name"], space, ids)
            computed[f"{targets['store_name']}/{space}"], _ = fill_target_space(
                store,
                space,
                todo,
                targets["fit_ids"],
                source.load,
                embed,
                model_name=targets["store_name"],
                settings={**base, "embedding": f"{model_name}/pooled"},
                batch_size=config["batch_size"],
                progress=progress,
                statistics_file=statistics_path(config["store"], targets["store_name"], space),
            )
    return computed


def extract(
    config: dict[str, Any],
    source: Any,
    encoder: Any,
    model_name: str,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    wait_timeout: float = 24 * 3600.0,
) -> dict[str, int]:
    """Fill the store described by a validated config; returns rows computed per layer.

    Parameters
    ----------
    config : dict
        ``store`` (path), ``ids`` (None, a list, or ``{start, stop}``), ``outputs`` (``image``
        pooled (N, D), ``image_tokens`` (N, 1 + P, D): every token after ``ln_post`` and the
        projection, MindEye1's 257 x 768 for ViT-L-14; ``image_patch_tokens`` (N, P, width): patch
        tokens after ``ln_post``, unprojected, MindEye2's 256 x 1664 for ViT-bigG-14; ``text``
        (N, D)), ``dtype`` (``float32`` or ``float16`` storage, optional), ``layers`` (image-tower
        modules captured with forward hooks, stored as ``visual.<name>``), ``pooled_layers``
        and ``batch_size``, as ``neurodecode extract`` validates them; optionally ``targets``
        (``spaces``, ``store_name`` and ``fit_ids``: named target spaces written by
        :func:`neurodecode.features.target_spaces.fill_target_space`, their block statistics
        fitted on the ``fit_ids`` training images).
    source : StimulusSource
        The opened stimuli (:func:`neurodecode.data.stimuli.open_stimuli`).
    encoder : ClipEncoder
        Embeds images and captions (:func:`neurodecode.features.clip.load_clip`).
    model_name : str
        The entry name in the store.

    With ``world_size > 1`` (see :func:`resolve_rank`) this rank computes its share into a shard
    file; rank 0 then waits up to ``wait_timeout`` seconds for every rank's done mark and merges
    the shards into the store (the module docstring has the protocol). The counts returned are
    this rank's.
    """
    from neurodecode.features.store import FeatureStore, shard_ids

    rank, world_size = resolve_rank(rank, world_size)
    store = FeatureStore(config["store"])
    if world_size == 1:
        return _fill_entries(
            config, source, encoder, model_name, lambda model, layer, ids: (store, ids), progress
        )

    shard = store.shard(rank, world_size)
    plan: dict[str, list[str]] = {}  # entry -> the ids every rank computes, in order

    def target(model: str, layer: str, ids: list[str]) -> tuple[FeatureStore, list[str]]:
        have = set(store.stimulus_ids(model, layer)) if (model, layer) in store else set()
        todo = [sid for sid in dict.fromkeys(ids) if sid not in have]
        plan[f"{model}/{layer}"] = todo
        return shard, shard_ids(todo, rank, world_size, config["batch_size"])

    computed = _fill_entries(config, source, encoder, model_name, target, progress)
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    _write_done_mark(store, rank, world_size, digest)
    if rank == 0:
        _wait_for_marks(store, world_size, digest, wait_timeout)
        order = [sid for todo in plan.values() for sid in todo]
        store.merge(store.shard_files(), order=list(dict.fromkeys(order)))
        for r in range(world_size):
            _done_mark(store, r, world_size).unlink(missing_ok=True)
        _check_complete(store, plan)
    _barrier()  # under torch.distributed every rank returns with the store merged
    return computed


def _done_mark(store, rank: int, world_size: int) -> Path:
    return store.path.with_name(f".{store.path.name}.shard-{rank}-of-{world_size}.done")


def _write_done_mark(store, rank: int, world_size: int, digest: str) -> None:
    mark = _done_mark(store, rank, world_size)
    tmp = mark.with_name(mark.name + f".tmp-{os.getpid()}")
    tmp.write_text(digest)
    os.replace(tmp, mark)


def _wait_for_marks(store, world_size: int, digest: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        waiting = [
            r
            for r in range(world_size)
            if not _done_mark(store, r, world_size).is_file()
            or _done_mark(store, r, world_size).read_text() != digest
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise InvalidInputError(
                f"ranks {waiting} of {world_size} did not finish their shards of {store.path} "
                f"within {timeout:.0f} s; run them again (they resume), then "
                "`neurodecode extract --merge`."
            )
        time.sleep(0.5)


def _check_complete(store, plan: dict[str, list[str]]) -> None:
    for entry, todo in plan.items():
        model, _, layer = entry.partition("/")
        if not todo:
            continue
        have = set(store.stimulus_ids(model, layer)) if (model, layer) in store else set()
        missing = [sid for sid in todo if sid not in have]
        if missing:
            raise InvalidInputError(
                f"after merging, {store.path} ({entry}) lacks {len(missing)} ids "
                f"(first: {missing[:5]}); run the extraction again to fill them."
            )


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
