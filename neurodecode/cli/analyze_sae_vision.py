"""``neurodecode analyze sae`` with ``data.source: vision_tokens``: an SAE on a ViT's tokens.

The image tower of an open_clip ViT (the trained sim-clip preset ``vit`` with
``sim_clip_preset: vit``, as ``experiments/sae_vision_tokens.yaml`` does; any open_clip ViT with
``model_name`` + ``pretrained``; without either, ``sim-clip-vit-tiny`` with seeded random weights,
a control and the tests' fast setting) sees the images batch by batch; the token activations of ``layer`` are captured with a forward hook and
streamed into SAE training (:class:`neurodecode.analysis.sae.vision.VisionTokenStream`, never all
held). After training one more pass gives each latent's maximum per image and the patch where it
peaks. When the images' attributes are known — scenes generated here (``stimuli: null``) or a
simulated world whose ``ground_truth.h5`` records them — every latent is named after the category,
colour or object position (the patch holding the object centre, and the object's side:
``horizontal`` left/centre/right, ``vertical`` top/middle/bottom) it detects best, with a
shuffled-label control (:func:`neurodecode.analysis.sae.vision.label_latents`); the attributes
only label and check, the search is the same for any images. The dashboard shows the matched
latents with their top images, the peak patch highlighted.

Source keys (``data:``)::

    source: vision_tokens
    stimuli: null            # null: generate n_images scenes; or a sim world / NSD root,
                             # an image folder (anything open_stimuli reads)
    model_name: sim-clip-vit-tiny
    pretrained: null         # open_clip tag (cached) or checkpoint file; null: random weights
    sim_clip_preset: null    # instead of model_name: a trained sim-clip ViT preset (vit)
    layer: transformer.resblocks.0   # a module of the image tower ("visual." prefix optional)
    tokens: patch            # patch | cls | all
    n_images: 2000           # null: every image of `stimuli`
    image_batch_size: 64
    stimulus_seed: 11        # for generated scenes
    buffer_rows: 65536       # rows held at most while streaming
    min_auroc: 0.75          # latent labelling (see label_latents)
    n_shuffles: 20

Writes, besides ``sae/``, ``metrics.json`` (with a ``labels`` summary) and ``dashboard.png``,
``latent_labels.json``: every alive latent's best attribute, AUROC, contrast, match flag and the
token position where it is most active on average.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.validation import InvalidInputError

VISION_KEYS: dict[str, Any] = {
    "stimuli": None,
    "model_name": "sim-clip-vit-tiny",
    "pretrained": None,
    "sim_clip_preset": None,
    "layer": None,
    "tokens": "patch",
    "n_images": 2000,
    "image_batch_size": 64,
    "stimulus_seed": 11,
    "buffer_rows": 65_536,
    "min_auroc": 0.75,
    "n_shuffles": 20,
}


class _Images:
    """The images of the run by position: generated in memory, or read on demand by id."""

    def __init__(self, source: Any = None, ids: np.ndarray | None = None, array=None) -> None:
        self.source, self.ids, self.array = source, ids, array

    def __len__(self) -> int:
        return len(self.array) if self.array is not None else len(self.ids)

    def take(self, index: np.ndarray) -> np.ndarray:
        if self.array is not None:
            return self.array[index]
        loaded = self.source.load(list(self.ids[index]))
        return np.stack([np.asarray(im) for im in loaded]) if isinstance(loaded, list) else loaded

    def __getitem__(self, index: int) -> np.ndarray:
        return self.take(np.array([int(index)]))[0]


def _colour_names(rgb: np.ndarray) -> np.ndarray:
    """Nearest :data:`neurodecode.sim.stimuli.COLOURS` name of each RGB row in [0, 1]."""
    from neurodecode.sim.stimuli import COLOURS

    names = list(COLOURS)
    table = np.array([COLOURS[n] for n in names], dtype=np.float64) / 255.0
    distance = ((rgb[:, None, :] - table[None]) ** 2).sum(-1)
    return np.array(names)[distance.argmin(1)]


def _open_images(data: dict[str, Any], image_size: int) -> tuple[_Images, dict | None, list]:
    """(images, {"category", "colour", "position" (n, 2)} or None, captions or None)."""
    n_images = data["n_images"]
    if data["stimuli"] is None:
        from neurodecode.sim.stimuli import generate_stimuli

        if n_images is None:
            raise InvalidInputError("data.n_images is needed when data.stimuli is null.")
        stimuli = generate_stimuli(int(n_images), size=image_size, seed=int(data["stimulus_seed"]))
        attributes = {
            "category": stimuli.category,
            "colour": stimuli.colour,
            "position": stimuli.position,
        }
        return _Images(array=stimuli.images), attributes, list(stimuli.captions)

    from neurodecode.data.stimuli import open_stimuli

    source = open_stimuli(data["stimuli"])
    ids = np.asarray(source.ids)[: None if n_images is None else int(n_images)]
    captions = source.caption_list(ids) if source.captions else None
    attributes = None
    root = Path(data["stimuli"])
    if (root / "ground_truth.h5").is_file():
        from neurodecode.sim.ground_truth import read_ground_truth

        truth = read_ground_truth(root)
        rows = np.array([int(i) for i in ids])
        block = truth.features.block("attributes")[rows]
        names = list(truth.attribute_names)
        if {"x", "y", "red", "green", "blue"} <= set(names):
            col = {n: names.index(n) for n in names}
            attributes = {
                "category": truth.category[rows],
                "colour": _colour_names(block[:, [col["red"], col["green"], col["blue"]]]),
                "position": block[:, [col["x"], col["y"]]],
            }
    return _Images(source=source, ids=ids), attributes, captions


def _encoder(data: dict[str, Any]) -> Any:
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.features.clip import load_clip

    if data["sim_clip_preset"] is not None:
        return get_sim_clip(data["sim_clip_preset"], progress=False)
    return load_clip(data["model_name"], data["pretrained"])


def _dashboard_latents(
    labels: dict[str, Any] | None, n: int, tracking: list[int] = ()
) -> list[int] | None:
    """Up to ``n`` latents: the best matched one of each attribute in turn (object-tracking
    latents count as one more attribute), then the next."""
    if labels is None:
        return None
    by_attribute: dict[str, list[int]] = {}
    for row in labels["latents"]:
        if row["matched"]:
            by_attribute.setdefault(row["attribute"], []).append(row["latent"])
    if tracking:
        by_attribute["tracks the object"] = list(tracking)
    chosen: list[int] = []
    while len(chosen) < n and any(by_attribute.values()):
        for queue in by_attribute.values():
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    for row in labels["latents"]:  # too few matched: the best unmatched ones
        if len(chosen) >= n:
            break
        if row["latent"] not in chosen:
            chosen.append(row["latent"])
    return chosen or None


def run_vision_tokens(cfg: dict[str, Any], config: dict[str, Any]) -> Path:
    """Train, label and plot an SAE on ViT token activations (``cfg`` validated); run folder."""
    import matplotlib.pyplot as plt
    import torch
    import yaml
    from torch.utils.data import DataLoader

    from neurodecode.analysis.sae.core import create_sae
    from neurodecode.analysis.sae.metrics import evaluate_reconstruction
    from neurodecode.analysis.sae.training import encode_rows, train_sae
    from neurodecode.analysis.sae.vision import (
        VisionTokenStream,
        image_latent_statistics,
        label_latents,
        merge_labels,
        object_tracking_latents,
        patch_of_position,
        region_of_position,
    )
    from neurodecode.plotting.sae_dashboard import latent_dashboard

    run_dir, data, sae_cfg = cfg["run_dir"], cfg["data"], dict(cfg["sae"])
    training, evaluation, seed = cfg["training"], cfg["evaluation"], cfg["seed"]
    if sae_cfg.get("transcoder") or sae_cfg.get("skip_connection"):
        raise InvalidInputError("data source 'vision_tokens' trains SAEs, not transcoders.")
    if data["layer"] is None:
        raise InvalidInputError(
            "data source 'vision_tokens' needs `layer`, e.g. transformer.resblocks.0."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    encoder = _encoder(data)
    visual = encoder.model.visual
    layer = str(data["layer"]).removeprefix("visual.")
    n_prefix = int(getattr(visual, "num_prefix_tokens", 1) or 1)
    grid = getattr(visual, "grid_size", None)
    images, attributes, captions = _open_images(data, encoder.image_size)
    n = len(images)
    if n < 2:
        raise InvalidInputError(f"data source 'vision_tokens' found {n} images; expected >= 2.")
    order = np.random.default_rng(seed).permutation(n)
    n_eval = round(float(evaluation["eval_fraction"]) * n)
    train_index, eval_index = np.sort(order[: n - n_eval]), np.sort(order[n - n_eval :])
    step = int(data["image_batch_size"])

    def batches(index: np.ndarray):
        def batch(i: int):
            part = index[i * step : (i + 1) * step]
            return encoder.preprocess_images(images.take(part)) if len(part) else None

        return batch

    stream = VisionTokenStream(
        visual,
        layer,
        batches(train_index),
        batch_size=int(training["batch_size"]),
        tokens=data["tokens"],
        n_prefix=n_prefix,
        buffer_rows=int(data["buffer_rows"]),
        seed=seed,
    )
    torch.manual_seed(seed)
    sample = stream.sample(8192)
    architecture = sae_cfg.pop("architecture")
    n_latents = int(sae_cfg.pop("n_latents"))
    d_in = int(sample[0].shape[1])
    sae = create_sae(architecture, d_in, n_latents, **sae_cfg)
    print(
        f"training {architecture} SAE d_in={d_in} n_latents={n_latents} on {data['tokens']} "
        f"tokens of {layer} over {len(train_index)} images (streamed)"
    )
    module = train_sae(
        sae,
        DataLoader(stream, batch_size=None),
        steps=int(training["steps"]),
        lr=float(training["lr"]),
        warmup_steps=int(training["warmup_steps"]),
        decay_fraction=float(training["decay_fraction"]),
        gradient_clip=training["gradient_clip"],
        init_sample=sample,
        run_dir=run_dir,
        accelerator=str(training["accelerator"]),
        seed=seed,
    )
    sae = module.sae.cpu().eval()
    sae.save_pretrained(run_dir / "sae")
    if cfg["export_saelens"]:
        from neurodecode.analysis.sae.saelens import export_saelens

        export_saelens(
            sae,
            run_dir / "saelens",
            hook_name=f"visual.{layer}",
            model_name=str(data["sim_clip_preset"] or data["model_name"]),
        )

    stats = image_latent_statistics(
        sae, visual, layer, batches(np.arange(n)), data["tokens"], n_prefix, eval_index
    )
    rows = stats["eval_rows"] if len(stats["eval_rows"]) else stream.sample(8192)[0]
    size = int(evaluation["batch_size"])
    metrics: dict[str, Any] = {
        "architecture": architecture,
        "transcoder": False,
        "n_latents": n_latents,
        "steps": int(training["steps"]),
        "source": {
            "model": str(data["sim_clip_preset"] or data["model_name"]),
            "pretrained": data["pretrained"],
            "layer": f"visual.{layer}",
            "tokens": data["tokens"],
            "n_images": n,
            "n_eval_images": len(eval_index),
            "tokens_per_image": stats["n_tokens"],
        },
        **evaluate_reconstruction(
            sae,
            (rows[i : i + size] for i in range(0, len(rows), size)),
            dense_threshold=float(evaluation["dense_threshold"]),
        ),
    }

    patch_grid = tuple(int(g) for g in grid) if grid is not None else None
    labels = None
    if attributes is not None:
        named = {"category": attributes["category"], "colour": attributes["colour"]}
        if patch_grid is not None and patch_grid[0] == patch_grid[1]:
            named["position"] = patch_of_position(attributes["position"], patch_grid[0])
        named.update(region_of_position(attributes["position"]))  # the side, per axis
        labels = label_latents(
            stats["image_max"],
            named,
            min_auroc=float(data["min_auroc"]),
            n_shuffles=int(data["n_shuffles"]),
            seed=seed,
        )
    if patch_grid is not None and data["tokens"] == "patch" and len(stats["eval_rows"]):
        # token level on the held-out images: which latents fire at a fixed patch (position)
        token_scores = encode_rows(sae, stats["eval_rows"]).numpy()
        patch_labels = np.tile(np.arange(stats["n_tokens"]), len(eval_index))
        by_patch = label_latents(
            token_scores,
            {"patch": patch_labels},
            min_auroc=float(data["min_auroc"]),
            n_shuffles=int(data["n_shuffles"]),
            alive=(stats["image_max"] > 0).any(0),
            seed=seed,
        )
        labels = by_patch if labels is None else merge_labels(labels, by_patch)
    if labels is not None:
        token_mean = stats["token_mean"]
        total = token_mean.sum(0)
        for row in labels["latents"]:
            column = token_mean[:, row["latent"]]
            row["peak_token"] = int(column.argmax())
            row["peak_token_share"] = float(column.max() / total[row["latent"]])
        metrics["labels"] = {k: v for k, v in labels.items() if k != "latents"}
        (run_dir / "latent_labels.json").write_text(json.dumps(labels["latents"], indent=1) + "\n")
    tracking = None
    square = patch_grid is not None and patch_grid[0] == patch_grid[1]
    if attributes is not None and square and data["tokens"] == "patch":
        # position as where a latent fires: its peak patch follows the object's centre
        tracking = object_tracking_latents(
            stats["argmax_token"],
            stats["image_max"],
            attributes["position"],
            patch_grid[0],
            n_shuffles=int(data["n_shuffles"]),
            seed=seed,
        )
        metrics["object_tracking"] = {
            **{k: v for k, v in tracking.items() if k != "latents"},
            "best": tracking["latents"][:5],
        }
        (run_dir / "object_tracking.json").write_text(
            json.dumps(tracking["latents"], indent=1) + "\n"
        )
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")

    patch_index = None
    if data["tokens"] != "cls" and patch_grid is not None:
        shift = n_prefix if data["tokens"] == "all" else 0
        patch_index = stats["argmax_token"].astype(np.int64) - shift
    titles = None
    if labels is not None:
        titles = {
            r["latent"]: f"{r['attribute']}={r['value']}\nAUROC {r['auroc']:.2f}"
            + ("" if r["matched"] else " (no match)")
            for r in labels["latents"]
        }
    tracking_ids = [r["latent"] for r in tracking["latents"] if r["tracking"]] if tracking else []
    if titles is not None:
        for r in tracking["latents"] if tracking else []:
            if r["tracking"]:
                own = titles.get(r["latent"], "").split("\n")[0]
                titles[r["latent"]] = (
                    f"tracks object {r['hit_rate']:.0%} (shuffled {r['control_mean']:.0%})"
                    + (f"\n{own}" if own else "")
                )
    figure = latent_dashboard(
        stats["image_max"],
        latent_ids=_dashboard_latents(labels, int(evaluation["dashboard_latents"]), tracking_ids),
        images=images,
        captions=captions,
        n_top=int(evaluation["dashboard_top"]),
        n_latents=int(evaluation["dashboard_latents"]),
        patch_index=patch_index,
        patch_grid=patch_grid,
        latent_titles=titles,
    )
    figure.savefig(run_dir / "dashboard.png", dpi=100)
    plt.close(figure)
    summary = {k: metrics[k] for k in ("fvu", "l0", "dead_fraction")}
    line = ", ".join(f"{k}={v:.4g}" for k, v in summary.items())
    if labels is not None:
        line += ", matched " + ", ".join(f"{k} {v}" for k, v in labels["matched"].items())
    if tracking is not None:
        line += f", tracking the object {tracking['n_tracking']} of {tracking['n_scored']}"
    print(f"wrote {run_dir}: {line}")
    return run_dir
