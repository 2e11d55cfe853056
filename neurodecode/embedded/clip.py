"""sim-clip: a small CLIP trained on the simulated stimuli and their captions.

The embedded default image-text space of the project: no weights can be downloaded here, so a
small open_clip model (configs ``sim-clip-default`` / ``sim-clip-tiny`` in
``neurodecode/embedded/model_configs/``: the small convnet of
:mod:`neurodecode.embedded.convnet` on 64 px (32 px) images as a timm image tower, and a small
causal text transformer; preset ``vit``: ``sim-clip-vit-64``, a 2-block vision transformer on
64 px images in 8 px patches, for analyses of patch tokens) is trained contrastively (open_clip's
``ClipLoss``) on procedural scenes of :func:`neurodecode.sim.stimuli.generate_stimuli` drawn with
their own seed (:data:`TRAIN_SEED`, not the seed the simulated experiments show), in fp32.

:func:`get_sim_clip` trains on first use and caches the weights under
``$NEURODECODE_CACHE/sim-clip/<preset>-<hash>/`` (default ``~/.cache/neurodecode``): the
open_clip checkpoint (``open_clip_model.safetensors``), ``config.json`` (the preset) and
``metrics.json`` (zero-shot scores on held-out scenes). The folder is written to a temporary
name and renamed, so a killed training leaves no half-written cache. Training time and
zero-shot scores of each preset are in ``benchmarks/README.md`` and in each cache's
``metrics.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode.embedded import convnet  # noqa: F401  (registers sim-clip's timm image towers)
from neurodecode.embedded.cache import cache_root
from neurodecode.features.clip import ClipEncoder, load_clip
from neurodecode.sim.stimuli import CATEGORIES, COLOURS, generate_stimuli
from neurodecode.validation import InvalidInputError, check_option

MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
_open_clip_registered = False


def register_model_configs() -> None:
    """Make open_clip know the ``sim-clip-*`` model configs (idempotent)."""
    global _open_clip_registered
    if not _open_clip_registered:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIG_DIR)
        _open_clip_registered = True


register_model_configs()

#: Seed of the stimulus stream sim-clip is trained and scored on (held out from experiments).
TRAIN_SEED = 7919

#: One prompt per :data:`CATEGORIES` entry for zero-shot classification.
CATEGORY_PROMPTS: dict[str, str] = {
    "face": "a photo of a face",
    "body": "a photo of a person",
    "place": "a photo of a house",
    "word": "a photo of letters",
    "food": "a photo of an apple",
    "object": "a photo of a block",
}
_CATEGORY_NOUNS = {
    "face": ("face", "faces"),
    "body": ("person", "people"),
    "place": ("house", "houses"),
    "word": ("letters", "letters"),
    "food": ("apple", "apples"),
    "object": ("block", "blocks"),
}
#: Prefixes sometimes put before a training caption, so that "a photo of ..." prompts are in the
#: text distribution (web alt-text varies the same way).
CAPTION_PREFIXES: tuple[str, ...] = ("a photo of ", "an image of ", "a picture of ")


def category_prompt_ensemble(category: str) -> list[str]:
    """Prompts for one category, averaged in zero-shot classification (CLIP's prompt ensembling).

    Templates name the category's noun only (no image-specific words): "a photo of a face",
    "a face", "two faces", "a red face", ... over the colours of the simulated world.
    """
    from neurodecode.sim.stimuli import COLOURS

    check_option("category", category, CATEGORIES)
    one, many = _CATEGORY_NOUNS[category]
    article = "an" if one[0] in "aeiou" else "a"
    if category == "word":
        prompts = ["a photo of letters", "the letters", "a word", "letters"]
        prompts += [f"the letters in {colour}" for colour in COLOURS]
        return prompts
    prompts = [f"a photo of {article} {one}", f"{article} {one}", f"two {many}", f"three {many}"]
    prompts += [
        f"a {colour} {one}" if colour[0] not in "aeiou" else f"an {colour} {one}"
        for colour in COLOURS
    ]
    return prompts


#: Training recipes. ``n_train`` scenes are seen for ``steps`` steps of ``batch_size``; with
#: ``shift_pixels`` each training image is moved by a random offset of up to that many pixels
#: (:func:`random_shift`) every time it is drawn.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "model_name": "sim-clip-default",
        "image_size": 64,
        "n_train": 6000,
        "n_eval": 600,
        "steps": 320,
        "batch_size": 128,
        "lr": 2e-3,
        "warmup": 30,
        "weight_decay": 0.05,
        "prefix_prob": 0.2,
        "short_caption_prob": 0.4,
        "seed": 0,
    },
    "tiny": {
        "model_name": "sim-clip-tiny",
        "image_size": 32,
        "n_train": 1500,
        "n_eval": 300,
        "steps": 200,
        "batch_size": 64,
        "lr": 3e-3,
        "warmup": 20,
        "weight_decay": 0.05,
        "prefix_prob": 0.2,
        "short_caption_prob": 0.4,
        "seed": 0,
    },
    # a ViT image tower (sim-clip-vit-64: 64 px, 8 px patches, 8 x 8 tokens, 2 blocks of width 64)
    # for the token-level analyses (SAEs on vision tokens); chosen among patch sizes, depths,
    # learning rates, lengths and shift augmentation on the zero-shot category accuracy of a
    # separate validation stream (benchmarks/README.md, "Trained ViT preset")
    "vit": {
        "model_name": "sim-clip-vit-64",
        "image_size": 64,
        "n_train": 12000,
        "n_eval": 600,
        "steps": 3000,
        "batch_size": 64,
        "lr": 2e-3,
        "warmup": 300,
        "weight_decay": 0.05,
        "prefix_prob": 0.2,
        "short_caption_prob": 0.4,
        "shift_pixels": 4,
        "seed": 0,
    },
}

_CHECKPOINT = "open_clip_model.safetensors"
#: Bump when the training code changes in a way that changes the weights.
_RECIPE_VERSION = 1


def preset_config(preset: str) -> dict[str, Any]:
    """The full training config of ``preset``: recipe, model config and stimulus seed."""
    check_option("preset", preset, PRESETS)
    import open_clip

    recipe = dict(PRESETS[preset])
    return {
        "preset": preset,
        "recipe_version": _RECIPE_VERSION,
        "stimulus_seed": TRAIN_SEED,
        "category_prompts": CATEGORY_PROMPTS,
        **recipe,
        "model_config": open_clip.get_model_config(recipe["model_name"]),
    }


def config_hash(config: dict[str, Any]) -> str:
    """Short hash of a training config (names its cache folder)."""
    text = json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cache_dir_for(preset: str, cache_dir: str | Path | None = None) -> Path:
    """The folder holding ``preset``'s weights: ``<cache>/sim-clip/<preset>-<config hash>``."""
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "sim-clip"
    return root / f"{preset}-{config_hash(preset_config(preset))}"


def _cosine_lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def random_shift(pixels: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random whole-pixel offset, edges replicated.

    Parameters
    ----------
    pixels : Tensor, shape (N, C, H, W)
    max_shift : int
        Largest offset in pixels along each axis (0: the images unchanged).
    generator : torch.Generator
        Draws the offsets, uniform in ``[-max_shift, max_shift]`` per image and axis.

    Returns
    -------
    Tensor, shape (N, C, H, W)
        Image ``i`` shifted right by ``dx_i`` and down by ``dy_i``; the uncovered border repeats
        the nearest edge pixel (the scenes' backgrounds are smooth there).
    """
    if max_shift <= 0:
        return pixels
    n, _, h, w = pixels.shape
    padded = torch.nn.functional.pad(pixels, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dx, dy) in enumerate(offsets)]
    )


def zero_shot_metrics(
    encoder: ClipEncoder, images: np.ndarray, captions: list[str], categories: np.ndarray
) -> dict[str, float]:
    """Zero-shot scores of ``encoder`` on held-out scenes.

    Parameters
    ----------
    images : ndarray (N, H, W, 3) uint8
    captions : list of str, length N
    categories : ndarray of str, shape (N,), entries of :data:`CATEGORIES`

    Returns
    -------
    dict
        ``category_accuracy`` (argmax over the prompt ensembles of
        :func:`category_prompt_ensemble`, chance 1/6), ``category_accuracy_single_prompt``
        (argmax over the single :data:`CATEGORY_PROMPTS`, "a photo of a face", ...),
        ``caption_top1`` / ``caption_top5``: image -> caption retrieval among the distinct
        held-out captions (a hit when the retrieved caption is the image's own text; chance
        1/``n_captions``), and ``n_images``, ``n_captions``, ``category_chance``, ``caption_chance``.
    """
    img = torch.cat(
        [
            encoder.encode_image(images[i : i + 256], normalize=True)
            for i in range(0, len(images), 256)
        ]
    )
    names = np.array(CATEGORIES)
    single = encoder.encode_text([CATEGORY_PROMPTS[c] for c in CATEGORIES], normalize=True)
    ensemble = torch.stack(
        [
            encoder.encode_text(category_prompt_ensemble(c), normalize=True).mean(0)
            for c in CATEGORIES
        ]
    )
    ensemble = torch.nn.functional.normalize(ensemble, dim=-1)
    truth_category = np.asarray(categories)
    single_accuracy = float(
        np.mean(names[(img @ single.T).argmax(1).cpu().numpy()] == truth_category)
    )
    category_accuracy = float(
        np.mean(names[(img @ ensemble.T).argmax(1).cpu().numpy()] == truth_category)
    )

    bank = sorted(set(captions))
    index = {c: i for i, c in enumerate(bank)}
    txt = torch.cat(
        [encoder.encode_text(bank[i : i + 512], normalize=True) for i in range(0, len(bank), 512)]
    )
    truth = torch.tensor([index[c] for c in captions])
    ranking = (img @ txt.T).argsort(dim=1, descending=True).cpu()
    top1 = float((ranking[:, 0] == truth).float().mean())
    top5 = float((ranking[:, :5] == truth[:, None]).any(dim=1).float().mean())
    return {
        "category_accuracy": category_accuracy,
        "category_accuracy_single_prompt": single_accuracy,
        "category_chance": 1 / len(CATEGORIES),
        "caption_top1": top1,
        "caption_top5": top5,
        "caption_chance": 1 / len(bank),
        "n_images": len(images),
        "n_captions": len(bank),
    }


_POSITION = re.compile(
    r" (in the centre|at the top|at the bottom|on the left|on the right)"
    r"( on the left| on the right)?$"
)
_COLOUR_WORD = re.compile(r"\b(" + "|".join(COLOURS) + r") ")
_WORD_COLOUR = re.compile(r" in (" + "|".join(COLOURS) + r")\b")


def shorten_caption(caption: str, rng: np.random.Generator) -> str:
    """Drop attribute words from a caption, each with probability 1/2.

    Position phrase, size word and colour word are dropped independently ("three small purple
    blocks at the top" -> "three purple blocks", "three blocks", ...), as alt-text varies in
    detail. In a batch of short captions, colour and position no longer tell the scenes apart,
    so the model must also learn what is drawn. Only the caption text is used.
    """
    if rng.random() < 0.5:
        caption = _POSITION.sub("", caption)
    if rng.random() < 0.5:
        caption = caption.replace("small ", "").replace("large ", "")
    if rng.random() < 0.5:
        caption = (
            _WORD_COLOUR.sub("", caption)
            if caption.startswith("the letters")
            else (_COLOUR_WORD.sub("", caption, count=1))
        )
    caption = re.sub(r"\ban ([^aeiou])", r"a \1", caption)
    return re.sub(r"\ba ([aeiou])", r"an \1", caption)


def train_sim_clip(
    preset: str = "default",
    out_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> Path:
    """Train sim-clip and write it to ``out_dir`` (atomically); return the folder.

    Parameters
    ----------
    preset : {"default", "tiny", "vit"}
        The recipe of :data:`PRESETS`.
    out_dir : path, optional
        Destination folder (default :func:`cache_dir_for`). It receives
        ``open_clip_model.safetensors``, ``config.json`` and ``metrics.json`` (zero-shot scores on
        ``n_eval`` held-out scenes and the training time in seconds).
    device : str or torch.device
        Where to train (fp32 everywhere).
    progress : bool
        Show a tqdm progress bar with the loss.
    """
    import open_clip
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from neurodecode.models.training import fused_adam_supported

    config = preset_config(preset)
    out_dir = Path(out_dir) if out_dir is not None else cache_dir_for(preset)
    started = time.perf_counter()
    n_train, n_eval, size = config["n_train"], config["n_eval"], config["image_size"]
    stimuli = generate_stimuli(n_train + n_eval, size=size, seed=TRAIN_SEED)

    torch.manual_seed(config["seed"])
    encoder = load_clip(config["model_name"], None, device=device, seed=config["seed"])
    model = encoder.model
    pixels = encoder.preprocess_images(stimuli.images[:n_train])
    captions = stimuli.captions[:n_train]
    text_rng = np.random.default_rng(config["seed"])
    # caption variants: as written; with a prefix; two with attribute words dropped
    variants = [captions, [CAPTION_PREFIXES[int(text_rng.integers(3))] + c for c in captions]]
    variants += [[shorten_caption(c, text_rng) for c in captions] for _ in range(2)]
    tokens = torch.stack([encoder.tokenizer(v) for v in variants]).to(pixels.device)
    p_short = config["short_caption_prob"] / 2
    variant_probs = torch.tensor(
        [1 - config["prefix_prob"] - 2 * p_short, config["prefix_prob"], p_short, p_short]
    )

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=config["lr"],
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=fused_adam_supported(decay + rest),  # one kernel, not a loop over ~200 tensors
    )
    loss_fn = open_clip.ClipLoss()
    generator = torch.Generator().manual_seed(config["seed"])
    steps, batch_size = config["steps"], config["batch_size"]
    order = torch.randperm(n_train, generator=generator)
    cursor = 0
    model.train()
    bar = tqdm(range(steps), desc=f"sim-clip {preset}", disable=not progress)
    for step in bar:
        if cursor + batch_size > n_train:
            order, cursor = torch.randperm(n_train, generator=generator), 0
        batch = order[cursor : cursor + batch_size].to(pixels.device)
        cursor += batch_size
        lr = _cosine_lr(step, steps, config["warmup"], config["lr"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        variant = torch.multinomial(variant_probs, len(batch), True, generator=generator)
        text = tokens[variant.to(pixels.device), batch]
        images = random_shift(pixels[batch], config.get("shift_pixels", 0), generator)
        image_features, text_features, logit_scale = model(images, text)[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    train_seconds = time.perf_counter() - started

    metrics = zero_shot_metrics(
        encoder,
        stimuli.images[n_train:],
        stimuli.captions[n_train:],
        stimuli.category[n_train:],
    )
    metrics.update(
        preset=preset,
        train_seconds=round(train_seconds, 2),
        final_loss=float(loss.item()),
        torch_threads=torch.get_num_threads(),
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / _CHECKPOINT)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if out_dir.exists():  # retraining, or another process finished first
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def get_sim_clip(
    preset: str = "default",
    cache_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    retrain: bool = False,
    output: str = "pooled",
    progress: bool = True,
) -> ClipEncoder:
    """The sim-clip encoder of ``preset``, trained on first use and cached.

    Parameters
    ----------
    preset : {"default", "tiny", "vit"}
        ``default`` (embedding dim 128, 64 px; a few minutes on 2 CPU cores), ``tiny``
        (dim 64, 32 px; seconds, for tests) — both with a convnet image tower — or ``vit``
        (dim 64, 64 px, a 2-block ViT with 8 x 8 patch tokens; a few minutes on one core), the
        trained ViT for token-level analyses.
    cache_dir : path, optional
        Parent of the preset folders (default ``$NEURODECODE_CACHE/sim-clip``).
    device : str or torch.device
        Where the encoder runs.
    retrain : bool
        Train again even if cached weights exist.
    output : {"pooled", "tokens"}
        See :meth:`ClipEncoder.encode_image`.
    progress : bool
        Show the training progress bar.

    Returns
    -------
    ClipEncoder
        Its ``settings`` name the model config and the checkpoint's SHA-256.
    """
    folder = cache_dir_for(preset, cache_dir)
    checkpoint = folder / _CHECKPOINT
    if retrain or not checkpoint.is_file():
        train_sim_clip(preset, folder, device=device, progress=progress)
    if not checkpoint.is_file():  # pragma: no cover - training writes it or raises
        raise InvalidInputError(f"sim-clip checkpoint missing after training: {checkpoint}.")
    config = json.loads((folder / "config.json").read_text())
    encoder = load_clip(config["model_name"], checkpoint, device=device, output=output)
    encoder.weights["sim_clip_preset"] = preset
    return encoder


def read_metrics(preset: str = "default", cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The zero-shot metrics saved when ``preset`` was trained (raises if not trained yet)."""
    path = cache_dir_for(preset, cache_dir) / "metrics.json"
    if not path.is_file():
        raise InvalidInputError(
            f"sim-clip {preset!r} metrics not found: expected {path}; run "
            f"`neurodecode train-clip --preset {preset}` first."
        )
    return json.loads(path.read_text())
