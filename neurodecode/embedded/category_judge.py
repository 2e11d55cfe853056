"""The category judge: a small CNN trained on simulated stimuli that names what an image shows.

BrainDiVE-style synthesis (:mod:`neurodecode.analysis.synthesis`) is scored by whether the images
it makes for an ROI show that ROI's category; on the simulated world no human can judge, so a
classifier trained on the world's own labelled stimuli does (and sim-clip zero-shot as a second
opinion, :func:`zero_shot_categories`). Cached under :func:`neurodecode.embedded.cache.cache_root`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.analysis.synthesis import differentiable_clip_embed
from neurodecode.embedded.cache import cache_root, config_key
from neurodecode.pretrained import PretrainedMixin, save_pretrained
from neurodecode.validation import InvalidInputError


def zero_shot_categories(
    clip_encoder, images: torch.Tensor, categories: Sequence[str] | None = None
) -> np.ndarray:
    """Category of each image by CLIP zero-shot classification over prompt ensembles.

    Parameters
    ----------
    clip_encoder : ClipEncoder
        sim-clip (or any CLIP) with ``encode_text``.
    images : Tensor, shape (N, 3, H, W), in [0, 1]
    categories : sequence of str, optional
        Default :data:`~neurodecode.sim.stimuli.CATEGORIES`, prompts from
        :func:`~neurodecode.embedded.clip.category_prompt_ensemble`.

    Returns
    -------
    ndarray of str, shape (N,)
    """
    from neurodecode.embedded.clip import category_prompt_ensemble
    from neurodecode.sim.stimuli import CATEGORIES

    names = list(categories or CATEGORIES)
    with torch.no_grad():
        prompts = torch.stack(
            [
                clip_encoder.encode_text(category_prompt_ensemble(c), normalize=True).mean(0)
                for c in names
            ]
        )
        prompts = F.normalize(prompts, dim=-1)
        embeds = differentiable_clip_embed(clip_encoder)(images.to(clip_encoder.device))
    return np.array(names)[(embeds @ prompts.T).argmax(1).cpu().numpy()]


class CategoryJudge(PretrainedMixin, nn.Module):
    """A small CNN that names the category of a simulated scene, independent of the guidance.

    BrainDiVE images are scored by a judge that never saw the guidance encoder (sim-clip): a
    classifier trained on simulated stimuli at the generator's resolution (the issue's "classifier
    trained on simulated stimuli"), so guidance cannot win by fooling the network it follows.

    Parameters
    ----------
    categories : sequence of str
        Class names, in logit order.
    image_size : int
        Side (px) images are resized to before the network.
    width : int
        Channels of the first convolution (doubled at each of the three levels).
    """

    def __init__(self, categories: Sequence[str], image_size: int = 32, width: int = 32):
        super().__init__()
        self.categories = tuple(categories)
        self.image_size = int(image_size)
        self.width = int(width)
        layers: list[nn.Module] = []
        channels = 3
        for level in range(3):
            out = width * 2**level
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.Conv2d(out, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, len(self.categories))

    def get_config(self) -> dict[str, Any]:
        """Init arguments (categories, image side, width), as JSON types."""
        return {
            "categories": list(self.categories),
            "image_size": self.image_size,
            "width": self.width,
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_categories) of ``images`` (N, 3, H, W) in [0, 1]."""
        from neurodecode.reconstruct.generators import resize_images

        x = resize_images(images.float(), self.image_size) * 2 - 1
        return self.head(self.features(x).mean((2, 3)))

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, min_probability: float = 0.0, batch_size: int = 256
    ) -> np.ndarray:
        """Category names, shape (N,), of ``images`` (N, 3, H, W) in [0, 1].

        An image whose most probable category has probability below ``min_probability`` is
        labelled ``"none"`` (the judge abstains rather than naming a category for an image that
        shows none, such as a blank background).
        """
        self.eval()
        device = next(self.parameters()).device
        probs = torch.cat(
            [
                self(images[i : i + batch_size].to(device)).softmax(1).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )
        best, index = probs.max(1)
        labels = np.array(self.categories, dtype=object)[index.numpy()]
        labels[(best < min_probability).numpy()] = "none"
        return labels.astype(str)


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur with a per-image ``sigma`` (px, shape (N,)); sigma 0 leaves an image as is."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (N, K)
    x = F.pad(images, (radius,) * 4, mode="replicate")
    x = x.unfold(3, 2 * radius + 1, 1)  # (N, C, H + 2r, W, K)
    x = (x * kernel[:, None, None, None]).sum(-1)
    x = x.unfold(2, 2 * radius + 1, 1)  # (N, C, H, W, K)
    return (x * kernel[:, None, None, None]).sum(-1)


def train_category_judge(
    images: torch.Tensor,
    labels: Sequence[str] | np.ndarray,
    categories: Sequence[str] | None = None,
    image_size: int = 32,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_blur: float = 1.5,
    seed: int = 0,
    width: int = 32,
) -> CategoryJudge:
    """Train a :class:`CategoryJudge` on labelled images.

    Parameters
    ----------
    images : Tensor, shape (N, 3, H, W), in [0, 1]
        Training images (resized to ``image_size``).
    labels : sequence of str, length N
        Category of each image.
    categories : sequence of str, optional
        Class order; default the sorted unique labels.
    image_size : int
        Side of the judge's input (the generator's resolution).
    steps, batch_size, lr : int, int, float
        AdamW steps (cosine decay), batch size and peak learning rate.
    max_blur : float
        Each training image is blurred with a Gaussian of sigma uniform in ``[0, max_blur]`` px
        (and gets flips and small shifts), so that the judge also names the soft images a small
        generator draws; 0 disables blurring.
    seed : int
    width : int
        See :class:`CategoryJudge`.

    Returns
    -------
    CategoryJudge
        On the CPU, in eval mode.
    """
    from neurodecode.reconstruct.generators import resize_images

    labels = np.asarray(labels).astype(str)
    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(labels):
        raise InvalidInputError(
            f"images have shape {tuple(images.shape)} and labels {labels.shape}; expected "
            "(N, 3, H, W) and (N,)."
        )
    names = list(categories) if categories is not None else sorted(set(labels))
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise InvalidInputError(f"labels {unknown} are not among categories {names}.")
    target = torch.as_tensor([names.index(v) for v in labels])
    x_all = resize_images(images.float(), image_size)
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    judge = CategoryJudge(names, image_size, width)
    optimiser = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=max(steps, 2))
    judge.train()
    for _ in range(steps):
        pick = torch.randint(len(x_all), (batch_size,), generator=rng)
        x = x_all[pick]
        if max_blur > 0:
            x = _blur(x, torch.rand(batch_size, generator=rng) * max_blur)
        flip = torch.rand(batch_size, generator=rng) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        shift = torch.randint(-2, 3, (2,), generator=rng)
        x = torch.roll(x, (int(shift[0]), int(shift[1])), dims=(2, 3))
        loss = F.cross_entropy(judge(x), target[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return judge.eval()


def simulated_category_judge(
    image_size: int = 32,
    n_stimuli: int = 6000,
    stimulus_size: int = 64,
    stimulus_seed: int = 7919,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    **train_options,
) -> CategoryJudge:
    """A :class:`CategoryJudge` trained on freshly drawn simulated stimuli (cached).

    The scenes come from :func:`~neurodecode.sim.stimuli.generate_stimuli` with their own seed
    (not the generator's nor the brain's images), drawn at ``stimulus_size`` and shrunk to
    ``image_size`` as the generator's training images are. The trained judge is kept in
    ``<cache>/category-judge/<hash of the settings>/`` (about 2 min to train on 2 CPU cores).

    Parameters
    ----------
    image_size : int
        The generator's resolution (px).
    n_stimuli : int
        Training scenes (categories equally common).
    stimulus_size : int
        Side the scenes are drawn at before shrinking.
    stimulus_seed : int
    cache_dir : path, optional
        Cache root (default :func:`~neurodecode.embedded.cache.cache_root`).
    use_cache : bool
        Load/save the cache; False always trains and writes nothing.
    **train_options
        Passed to :func:`train_category_judge` (``steps``, ``width``, ``max_blur``, ...).
    """
    from neurodecode.reconstruct.generators import images_to_tensor
    from neurodecode.sim.stimuli import CATEGORIES, generate_stimuli

    options = {"steps": 800, "width": 16, **train_options}
    settings = {
        "kind": "category-judge",
        "version": 1,
        "image_size": image_size,
        "n_stimuli": n_stimuli,
        "stimulus_size": stimulus_size,
        "stimulus_seed": stimulus_seed,
        "categories": list(CATEGORIES),
        "train": options,
    }
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = folder / "category-judge" / config_key(settings)
    if use_cache and folder.is_dir():
        return CategoryJudge.from_pretrained(folder)
    stimuli = generate_stimuli(n_stimuli, size=stimulus_size, seed=stimulus_seed)
    images = images_to_tensor(stimuli.images, size=image_size)
    judge = train_category_judge(
        images, stimuli.category, CATEGORIES, image_size=image_size, **options
    )
    if use_cache:
        save_pretrained(judge, folder, metadata=settings, replace=False)
    return judge
