"""SAEs on the token activations of a vision transformer, and the search for labelled latents.

Owns the token source (:func:`token_activations`, :class:`VisionTokenStream`: a ViT layer's patch
tokens, class token optional, captured with a forward hook image batch by image batch and
shuffled in a bounded buffer, so the activations of a large image set are never all held), the
per-image pass over a trained SAE (:func:`image_latent_statistics`: each latent's maximum over an
image's tokens and the patch where it is reached) and the automatic labelling of latents against
known image attributes (:func:`label_latents`: per latent, the attribute value with the highest
AUROC, kept only when it beats the same search on shuffled labels). Works on modules, tensors and
arrays; which attributes the images have is the caller's business (the simulated world records
category, colour and object position). Token layout is open_clip's: ``n_prefix`` class/prefix
tokens first, then the patches in raster order. The project's trained ViT is sim-clip's ``vit``
preset (:mod:`neurodecode.embedded.clip`); a seeded random-weight tower carries mostly position
and layout, so use it only as a control (benchmarks/README.md compares the two).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import IterableDataset

from neurodecode.features.hooks import capture_activations
from neurodecode.validation import InvalidInputError, check_option

TOKEN_CHOICES = ("patch", "cls", "all")


def select_tokens(activation: Tensor, tokens: str = "patch", n_prefix: int = 1) -> Tensor:
    """Keep the patch tokens, the class token or all tokens of a (N, T, D) activation.

    Parameters
    ----------
    activation : Tensor, shape (N, T, D)
        Batch first, ``n_prefix`` prefix (class) tokens then the patches.
    tokens : {"patch", "cls", "all"}
    n_prefix : int
        Prefix tokens before the patches (1 for open_clip's class token).

    Returns
    -------
    Tensor, shape (N, T - n_prefix, D), (N, 1, D) or (N, T, D)
    """
    check_option("tokens", tokens, TOKEN_CHOICES)
    if activation.ndim != 3 or activation.shape[1] <= n_prefix:
        raise InvalidInputError(
            f"token activation has shape {tuple(activation.shape)}; expected (N, T, D) with more "
            f"than n_prefix={n_prefix} tokens (a transformer block of a ViT image tower)."
        )
    if tokens == "patch":
        return activation[:, n_prefix:]
    if tokens == "cls":
        return activation[:, :1]
    return activation


def token_activations(
    model: nn.Module, layer: str, pixels: Tensor, tokens: str = "patch", n_prefix: int = 1
) -> Tensor:
    """A ViT layer's token activations for one image batch, through a forward hook.

    Parameters
    ----------
    model : nn.Module
        The image tower (e.g. ``clip.visual``), called as ``model(pixels)``.
    layer : str
        Dotted sub-module name, e.g. ``"transformer.resblocks.1"``.
    pixels : Tensor, shape (N, 3, S, S)
        Preprocessed images.
    tokens, n_prefix
        See :func:`select_tokens`.

    Returns
    -------
    Tensor, shape (N, T', D), float32, on CPU
        A sequence-first (T, N, D) output (older open_clip) is turned batch first.
    """
    out = capture_activations(model, [layer], pixels, pooled=False)[layer]
    n = pixels.shape[0]
    if out.ndim == 3 and out.shape[0] != n and out.shape[1] == n:
        out = out.transpose(0, 1)
    if out.ndim != 3 or out.shape[0] != n:
        raise InvalidInputError(
            f"layer {layer!r} returned shape {tuple(out.shape)} for {n} images; expected "
            "(N, T, D) tokens (pick a transformer block or one of its sub-modules)."
        )
    return select_tokens(out, tokens, n_prefix).detach().float().cpu()


class VisionTokenStream(IterableDataset):
    """Endless shuffled batches of token rows from a ViT layer, computed image batch by batch.

    Image batches are run through the model in turn (cycling when they run out); their token
    rows (N * T', D) go into a buffer of at most ``buffer_rows`` rows from which random training
    batches are drawn, so memory is bounded whatever the number of images.

    Parameters
    ----------
    model : nn.Module
        The image tower.
    layer : str
        Dotted sub-module name (see :func:`token_activations`).
    image_batches : callable
        ``image_batches(i) -> Tensor (N, 3, S, S) or None``: the i-th batch of preprocessed
        images, ``None`` after the last one (i = 0, 1, ...).
    batch_size : int
        Rows per training batch.
    tokens, n_prefix
        See :func:`select_tokens`.
    buffer_rows : int
        About the most rows held: image batches are added until half of it is full, then
        batches are drawn at random from it until about a quarter remains. When one pass over
        all images gives at most ``buffer_rows`` rows (e.g. ``tokens="cls"``: one row per
        image), the rows of the first pass are kept and reshuffled for every later pass, and
        the model is not run again (its activations are deterministic in eval mode).
    seed : int
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        image_batches: Callable[[int], Tensor | None],
        batch_size: int = 1024,
        tokens: str = "patch",
        n_prefix: int = 1,
        buffer_rows: int = 65_536,
        seed: int = 0,
    ) -> None:
        check_option("tokens", tokens, TOKEN_CHOICES)
        if batch_size < 1 or buffer_rows < batch_size:
            raise InvalidInputError(
                f"batch_size={batch_size} and buffer_rows={buffer_rows}: expected "
                "1 <= batch_size <= buffer_rows."
            )
        self.model, self.layer, self.image_batches = model, layer, image_batches
        self.batch_size, self.tokens, self.n_prefix = int(batch_size), tokens, int(n_prefix)
        self.buffer_rows, self.seed = int(buffer_rows), seed

    def rows(self, pixels: Tensor) -> Tensor:
        """Token rows (N * T', D) of one image batch."""
        acts = token_activations(self.model, self.layer, pixels, self.tokens, self.n_prefix)
        return acts.reshape(-1, acts.shape[-1])

    def sample(self, n_rows: int = 8192) -> tuple[Tensor, None]:
        """The first ``n_rows`` rows in image order (for ``initialize_from_sample``)."""
        parts, have, i = [], 0, 0
        while have < n_rows and (pixels := self.image_batches(i)) is not None:
            parts.append(self.rows(pixels))
            have += parts[-1].shape[0]
            i += 1
        if not parts:
            raise InvalidInputError("the image stream gave no images.")
        return torch.cat(parts)[:n_rows], None

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        fill = max(self.batch_size, self.buffer_rows // 2)
        buffer = torch.empty(0)
        first_pass: list[Tensor] | None = []  # every row of the first pass, while they fit
        n_first = 0
        i = 0
        while True:
            pixels = self.image_batches(i)
            i += 1
            if pixels is None:
                if i == 1:
                    raise InvalidInputError("the image stream gave no images.")
                if first_pass is not None:
                    # the whole image set fits in the buffer (e.g. one class token per image):
                    # later passes would give the same rows, so stop running the tower
                    yield from self._epochs(torch.cat(first_pass), generator)
                i = 0  # next pass over the images
                continue
            new = self.rows(pixels)
            if first_pass is not None:
                n_first += new.shape[0]
                if n_first <= self.buffer_rows:
                    first_pass.append(new)
                else:
                    first_pass = None
            buffer = new if buffer.numel() == 0 else torch.cat([buffer, new])
            if buffer.shape[0] < fill or first_pass is not None:
                continue  # (while the first pass may still fit, rows wait for it to end)
            # shuffle, draw batches, keep about half a buffer of rows to mix with the next images
            buffer = buffer[torch.randperm(buffer.shape[0], generator=generator)]
            n_draw = max(1, (buffer.shape[0] - fill // 2) // self.batch_size)
            for b in range(n_draw):
                yield buffer[b * self.batch_size : (b + 1) * self.batch_size]
            buffer = buffer[n_draw * self.batch_size :]

    def _epochs(self, rows: Tensor, generator: torch.Generator) -> Iterator[Tensor]:
        """Endless batches from cached ``rows`` (N, D): each pass a new random order, every row
        once per pass (a pass shorter than a batch is repeated to fill it)."""
        carry = rows[:0]
        while True:
            order = torch.cat([carry, rows[torch.randperm(len(rows), generator=generator)]])
            n_full = len(order) // self.batch_size
            for b in range(n_full):
                yield order[b * self.batch_size : (b + 1) * self.batch_size]
            carry = order[n_full * self.batch_size :]


@torch.no_grad()
def image_latent_statistics(
    sae: nn.Module,
    model: nn.Module,
    layer: str,
    image_batches: Callable[[int], Tensor | None],
    tokens: str = "patch",
    n_prefix: int = 1,
    eval_images: np.ndarray | None = None,
) -> dict[str, Any]:
    """One pass over the images: per-image latent maxima, where they occur, held-out rows.

    Parameters
    ----------
    sae : SparseAutoencoder
        Trained on the rows of :class:`VisionTokenStream` with the same layer and tokens.
    model, layer, image_batches, tokens, n_prefix
        As :class:`VisionTokenStream` (``image_batches`` is read once, to its end).
    eval_images : ndarray of int, optional
        Image indices (in stream order) whose token rows are also returned for evaluation.

    Returns
    -------
    dict
        ``image_max`` (n_images, n_latents) float32: each latent's maximum over an image's
        tokens; ``argmax_token`` (n_images, n_latents) int16: the token (patch index for
        ``tokens="patch"``) where it is reached; ``token_mean`` (T', n_latents) float64: the
        mean activation at each token position over images; ``n_tokens`` (T');
        ``eval_rows`` (rows, D) float32 tensor of the ``eval_images`` tokens (empty without).
    """
    sae.eval()
    device = sae.W_enc.device
    wanted = set(int(i) for i in eval_images) if eval_images is not None else set()
    maxima, argmax, eval_rows = [], [], []
    token_sum: Tensor | None = None
    start, i = 0, 0
    while (pixels := image_batches(i)) is not None:
        acts = token_activations(model, layer, pixels, tokens, n_prefix)
        n, t, d = acts.shape
        latents = sae.encode(acts.reshape(-1, d).to(device)).cpu().reshape(n, t, -1)
        values, where = latents.max(dim=1)
        maxima.append(values.numpy().astype(np.float32))
        argmax.append(where.numpy().astype(np.int16))
        summed = latents.sum(0).double()
        token_sum = summed if token_sum is None else token_sum + summed
        rows = [k for k in range(n) if start + k in wanted]
        if rows:
            eval_rows.append(acts[rows].reshape(-1, d))
        start += n
        i += 1
    if token_sum is None:
        raise InvalidInputError("the image stream gave no images.")
    return {
        "image_max": np.concatenate(maxima),
        "argmax_token": np.concatenate(argmax),
        "token_mean": (token_sum / start).numpy(),
        "n_tokens": int(token_sum.shape[0]),
        "eval_rows": torch.cat(eval_rows) if eval_rows else torch.zeros(0, 0),
    }


def patch_of_position(position: np.ndarray, grid: int) -> np.ndarray:
    """Raster patch index (row * grid + col) of the patch holding each (x, y) point.

    Parameters
    ----------
    position : array, shape (n, 2)
        (x, y) in [0, 1] image coordinates, y down (as the simulated stimuli record them).
    grid : int
        Patches per side.

    Returns
    -------
    ndarray of int, shape (n,)
    """
    position = np.asarray(position, dtype=np.float64)
    if position.ndim != 2 or position.shape[1] != 2:
        raise InvalidInputError(f"position has shape {position.shape}; expected (n, 2) (x, y).")
    cells = np.clip(np.floor(position * grid).astype(np.int64), 0, grid - 1)
    return cells[:, 1] * grid + cells[:, 0]


def object_tracking_latents(
    argmax_token: np.ndarray,
    image_max: np.ndarray,
    position: np.ndarray,
    grid: int,
    radius: int = 1,
    min_images: int = 50,
    min_gain: float = 0.25,
    n_shuffles: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Latents whose peak patch follows the object: where they fire says where the object is.

    A patch-token latent can encode position without any single patch being its preference: it
    fires on the object wherever the object is, so its per-image maximum ignores position (the
    AUROC labels of :func:`label_latents` miss it) while its *peak patch* tracks the object's
    centre. For each latent, over the images it fires on, the hit rate is the fraction whose peak
    patch lies within ``radius`` patches (Chebyshev distance) of the patch holding the object's
    centre; the control re-pairs the same peaks with the positions of other images it fires on
    (``n_shuffles`` permutations), which keeps the latent's own spatial preference and breaks
    only the link to the object.

    Parameters
    ----------
    argmax_token : ndarray of int, shape (n_images, n_latents)
        Patch index (raster order over a ``grid x grid`` patch grid, class token dropped) where
        each latent peaks in each image (:func:`image_latent_statistics`, ``tokens="patch"``).
    image_max : ndarray, shape (n_images, n_latents)
        The peak values; a latent fires on an image when its peak is > 0.
    position : ndarray, shape (n_images, 2)
        Object centre (x, y) in [0, 1] image coordinates, y down.
    grid : int
        Patches per side.
    radius : int
        Largest distance, in patches, of a hit.
    min_images : int
        Latents firing on fewer images are not scored.
    min_gain : float
        A latent is *tracking* when its hit rate beats every shuffle and exceeds the shuffles'
        mean by at least this much.
    n_shuffles, seed
        Control permutations and their seed.

    Returns
    -------
    dict
        ``latents``: list of ``{latent, n_images, hit_rate, control_mean, control_max, gain,
        tracking}`` for the scored latents, highest gain first; ``n_tracking``; ``n_scored``;
        ``radius``; ``chance``: the hit rate of a peak patch drawn uniformly over the grid,
        averaged over the object positions.
    """
    peaks = np.asarray(argmax_token, dtype=np.int64)
    maxima = np.asarray(image_max)
    if peaks.ndim != 2 or maxima.shape != peaks.shape:
        raise InvalidInputError(
            f"argmax_token has shape {peaks.shape} and image_max {maxima.shape}; expected the "
            "same (n_images, n_latents) shape."
        )
    object_patch = patch_of_position(position, grid)
    if len(object_patch) != len(peaks):
        raise InvalidInputError(
            f"position has {len(object_patch)} rows for {len(peaks)} images; expected one "
            "object position per image."
        )
    if int(peaks.max(initial=0)) >= grid * grid or int(peaks.min(initial=0)) < 0:
        raise InvalidInputError(
            f"argmax_token holds patch indices outside 0..{grid * grid - 1} for grid={grid}; "
            "expected patch tokens only (tokens='patch')."
        )
    obj_row, obj_col = np.divmod(object_patch, grid)

    def hits(peak: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        peak_row, peak_col = np.divmod(peak, grid)
        return np.maximum(np.abs(peak_row - row), np.abs(peak_col - col)) <= radius

    cells = np.arange(grid * grid)
    chance = float(
        np.mean([hits(cells, r, c).mean() for r, c in zip(obj_row, obj_col, strict=True)])
    )
    rng = np.random.default_rng(seed)
    rows = []
    for latent in range(peaks.shape[1]):
        fired = np.flatnonzero(maxima[:, latent] > 0)
        if len(fired) < min_images:
            continue
        peak = peaks[fired, latent]
        rate = float(hits(peak, obj_row[fired], obj_col[fired]).mean())
        shuffled = []
        for _ in range(n_shuffles):
            other = rng.permutation(fired)
            shuffled.append(float(hits(peak, obj_row[other], obj_col[other]).mean()))
        control_mean, control_max = float(np.mean(shuffled)), float(np.max(shuffled))
        rows.append(
            {
                "latent": latent,
                "n_images": len(fired),
                "hit_rate": rate,
                "control_mean": control_mean,
                "control_max": control_max,
                "gain": rate - control_mean,
                "tracking": bool(rate > control_max and rate - control_mean >= min_gain),
            }
        )
    rows.sort(key=lambda r: -r["gain"])
    return {
        "latents": rows,
        "n_tracking": sum(r["tracking"] for r in rows),
        "n_scored": len(rows),
        "radius": int(radius),
        "chance": chance,
    }


def region_of_position(
    position: np.ndarray, edges: tuple[float, float] = (0.4, 0.6)
) -> dict[str, np.ndarray]:
    """Coarse side of the image holding each (x, y) point, along each axis.

    An object covers several patches, so "the patch holding its centre" is a narrow label; a
    latent tuned to where objects are fires for a whole side. The default edges are the
    simulated captions' ("on the left" below x = 0.4, "on the right" above 0.6, same for y).

    Parameters
    ----------
    position : array, shape (n, 2)
        (x, y) in [0, 1] image coordinates, y down.
    edges : (float, float)
        Lower and upper boundary of the middle band, 0 < lower < upper < 1.

    Returns
    -------
    dict
        ``horizontal``: ``"left" | "centre" | "right"`` and ``vertical``:
        ``"top" | "middle" | "bottom"``, each an ndarray of str, shape (n,).
    """
    position = np.asarray(position, dtype=np.float64)
    if position.ndim != 2 or position.shape[1] != 2:
        raise InvalidInputError(f"position has shape {position.shape}; expected (n, 2) (x, y).")
    low, high = (float(e) for e in edges)
    if not 0 < low < high < 1:
        raise InvalidInputError(f"edges={edges}: expected 0 < lower < upper < 1.")
    band = np.digitize(position, [low, high])  # 0 below low, 1 between, 2 above high
    return {
        "horizontal": np.array(["left", "centre", "right"])[band[:, 0]],
        "vertical": np.array(["top", "middle", "bottom"])[band[:, 1]],
    }


def auroc_table(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC of every latent's scores for every label value against the rest (ties halved).

    Parameters
    ----------
    scores : array, shape (n, n_latents)
    labels : array, shape (n,)
        Any hashable values; values held by every or by no image are skipped.

    Returns
    -------
    values : ndarray, shape (n_values,)
        The label values scored, sorted.
    auroc : ndarray, shape (n_values, n_latents)
        Mann-Whitney U / (n_pos * n_neg): the chance that an image with the value outscores one
        without it.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2 or len(labels) != scores.shape[0]:
        raise InvalidInputError(
            f"scores {scores.shape} and labels {labels.shape}: expected (n, n_latents) and (n,)."
        )
    ranks = rankdata(scores, axis=0)
    values, rows = [], []
    for value in np.unique(labels):
        mask = labels == value
        n_pos = int(mask.sum())
        n_neg = len(labels) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue
        u = ranks[mask].sum(0) - n_pos * (n_pos + 1) / 2
        values.append(value)
        rows.append(u / (n_pos * n_neg))
    if not rows:
        return np.array([]), np.zeros((0, scores.shape[1]))
    return np.asarray(values), np.vstack(rows)


def label_latents(
    scores: np.ndarray,
    attributes: Mapping[str, np.ndarray],
    min_auroc: float = 0.75,
    n_shuffles: int = 20,
    alive: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Name latents after the image attribute they detect best, against a shuffled-label control.

    For every latent and every value of every attribute, the AUROC of the latent's per-image
    score for images with that value against the rest (:func:`auroc_table`). A latent's label
    is its highest-AUROC (attribute, value). The control runs the same search with the image
    labels permuted (one permutation of the images for all attributes, ``n_shuffles`` times):
    per attribute, ``control`` is the largest AUROC any latent reaches for any value over all
    shuffles. A latent is *matched* when its AUROC exceeds both ``min_auroc`` and the control of
    its attribute.

    Parameters
    ----------
    scores : array, shape (n_images, n_latents)
        E.g. ``image_max`` of :func:`image_latent_statistics`.
    attributes : mapping of str -> array, shape (n_images,)
        Attribute name -> one label per image, e.g. ``{"category": ..., "colour": ...,
        "position": patch indices}``.
    min_auroc : float
        Smallest AUROC that counts as a match.
    n_shuffles : int
        Permutations in the control (at least 1).
    alive : array of bool, shape (n_latents,), optional
        Latents to label (default: those non-zero on some image).

    Returns
    -------
    dict
        ``latents``: list of ``{latent, attribute, value, auroc, contrast, matched}`` for the
        alive latents, best AUROC first (``contrast``: mean score on images with the value
        minus the mean on the others, in the latent's units); ``control``: attribute -> the
        shuffled-label AUROC bound; ``matched``: attribute -> number of matched latents;
        ``values_covered``: attribute -> sorted values with at least one matched latent;
        ``n_values``: attribute -> number of values scored; ``strongest``: attribute ->
        ``{latent, value, auroc}`` of the highest AUROC any alive latent reaches for any of its
        values, whether or not that is the latent's own best attribute (how close an attribute
        came to a match); ``n_alive``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise InvalidInputError(f"scores has shape {scores.shape}; expected (n, n_latents).")
    if not attributes:
        raise InvalidInputError("label_latents needs at least one attribute.")
    if n_shuffles < 1:
        raise InvalidInputError(f"n_shuffles must be >= 1; got {n_shuffles}.")
    n = scores.shape[0]
    for name, labels in attributes.items():
        if len(labels) != n:
            raise InvalidInputError(f"attribute {name!r} has {len(labels)} labels for {n} images.")
    alive = (scores > 0).any(0) if alive is None else np.asarray(alive, dtype=bool)
    ids = np.flatnonzero(alive)
    live = scores[:, ids]
    best: dict[str, Any] = {
        "auroc": np.full(len(ids), -np.inf),
        "attribute": [""] * len(ids),
        "value": [None] * len(ids),
    }
    n_values: dict[str, int] = {}
    strongest: dict[str, dict[str, Any]] = {}
    for name, labels in attributes.items():
        labels = np.asarray(labels)
        values, table = auroc_table(live, labels)
        n_values[name] = len(values)
        if not len(values) or not len(ids):
            continue
        v, j = np.unravel_index(int(table.argmax()), table.shape)
        strongest[name] = {
            "latent": int(ids[j]),
            "value": values[v].item() if hasattr(values[v], "item") else values[v],
            "auroc": float(table[v, j]),
        }
        top = table.argmax(0)
        for j in range(len(ids)):
            if table[top[j], j] > best["auroc"][j]:
                best["auroc"][j] = table[top[j], j]
                best["attribute"][j] = name
                best["value"][j] = values[top[j]]
    rng = np.random.default_rng(seed)
    control = {name: 0.0 for name in attributes}
    for _ in range(int(n_shuffles)):
        order = rng.permutation(n)
        for name, labels in attributes.items():
            _, table = auroc_table(live, np.asarray(labels)[order])
            if table.size:
                control[name] = max(control[name], float(table.max()))
    rows = []
    for j, latent in enumerate(ids):
        name, value = best["attribute"][j], best["value"][j]
        if not name:
            continue
        mask = np.asarray(attributes[name]) == value
        contrast = float(live[mask, j].mean() - live[~mask, j].mean())
        auroc = float(best["auroc"][j])
        rows.append(
            {
                "latent": int(latent),
                "attribute": name,
                "value": value.item() if hasattr(value, "item") else value,
                "auroc": auroc,
                "contrast": contrast,
                "matched": bool(auroc > min_auroc and auroc > control[name]),
            }
        )
    return _summary(rows, control, n_values, len(ids), min_auroc, n_shuffles, strongest)


def _summary(
    rows: list[dict[str, Any]],
    control: dict[str, float],
    n_values: dict[str, int],
    n_alive: int,
    min_auroc: float,
    n_shuffles: int,
    strongest: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    rows = sorted(rows, key=lambda r: -r["auroc"])
    matched = {name: 0 for name in control}
    covered: dict[str, set] = {name: set() for name in control}
    for row in rows:
        if row["matched"]:
            matched[row["attribute"]] += 1
            covered[row["attribute"]].add(row["value"])
    return {
        "latents": rows,
        "control": control,
        "matched": matched,
        "values_covered": {k: sorted(v, key=str) for k, v in covered.items()},
        "n_values": n_values,
        "strongest": strongest,
        "n_alive": int(n_alive),
        "min_auroc": float(min_auroc),
        "n_shuffles": int(n_shuffles),
    }


def merge_labels(*results: dict[str, Any]) -> dict[str, Any]:
    """Combine :func:`label_latents` results on different attributes (e.g. image-level
    category/colour and token-level patch index): each latent keeps its highest-AUROC row, each
    attribute its own control. The results must use different attribute names."""
    if not results:
        raise InvalidInputError("merge_labels needs at least one label_latents result.")
    control: dict[str, float] = {}
    n_values: dict[str, int] = {}
    strongest: dict[str, dict[str, Any]] = {}
    best: dict[int, dict[str, Any]] = {}
    for result in results:
        overlap = set(control) & set(result["control"])
        if overlap:
            raise InvalidInputError(f"merge_labels: attributes {sorted(overlap)} appear twice.")
        control.update(result["control"])
        n_values.update(result["n_values"])
        strongest.update(result["strongest"])
        for row in result["latents"]:
            if row["latent"] not in best or row["auroc"] > best[row["latent"]]["auroc"]:
                best[row["latent"]] = row
    first = results[0]
    return _summary(
        list(best.values()),
        control,
        n_values,
        max(r["n_alive"] for r in results),
        first["min_auroc"],
        first["n_shuffles"],
        strongest,
    )
