"""Named decoding-target spaces: an image embedding plus pixel blocks, block-standardised with
statistics fitted on the training images only, and their FeatureStore entries.

A space is named by its pieces joined with ``+`` (as in ``benchmarks/bench_targets.py``):

- ``pooled``: the image embedding the caller supplies (e.g. sim-clip's pooled 128-d vector);
- pixel blocks on an 8 x 8 grid (:mod:`neurodecode.features.targets`): ``lab8`` (CIELAB
  thumbnail, 192), ``contrast8`` (RMS ``L*`` contrast, 64), ``energy8`` (quadrature-Gabor energy,
  4 orientations x 2 wavelengths, 512), ``opponent8`` (rectified ON/OFF and colour-opponent
  channels, 384);
- groups: ``lowlevel8`` = lab8 + contrast8 + energy8, ``rectified8`` = opponent8 + contrast8 +
  energy8.

So ``pooled+rectified8`` has 1,088 features: the four blocks pooled, opponent8, contrast8 and
energy8, each centred per feature and scaled to unit total variance on the training images
(:class:`~neurodecode.features.targets.BlockStatistics`). The test images are standardised with
the training statistics, never their own.

:func:`fill_target_space` writes a space into a FeatureStore entry (model ``targets``, layer =
the space's name by default) that ``NSDDataModule(feature_model="targets",
feature_layer="pooled+rectified8")`` reads as its target; ``neurodecode extract`` does it from
a config's ``targets:`` section.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurodecode.features.targets import (
    BlockStatistics,
    lab_thumbnail,
    local_contrast,
    oriented_energy,
    rectified_opponents,
)
from neurodecode.validation import InvalidInputError

#: the embedding piece (supplied by the caller, e.g. sim-clip's pooled image embedding)
EMBEDDING_BLOCK = "pooled"
#: pixel blocks: name -> function of (N, H, W, 3) uint8 images
PIXEL_BLOCKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lab8": lambda images: lab_thumbnail(images, 8),
    "contrast8": lambda images: local_contrast(images, 8),
    "energy8": lambda images: oriented_energy(images, 8),
    "opponent8": lambda images: rectified_opponents(images, 8),
}
#: named groups of pixel blocks
GROUPS: dict[str, tuple[str, ...]] = {
    "lowlevel8": ("lab8", "contrast8", "energy8"),
    "rectified8": ("opponent8", "contrast8", "energy8"),
}
#: the model name of target-space entries in a FeatureStore
STORE_MODEL = "targets"


def space_blocks(space: str) -> tuple[str, ...]:
    """The elementary blocks of a space's name, in concatenation order.

    Parameters
    ----------
    space : str
        Pieces joined with ``+``: ``pooled``, a pixel block (:data:`PIXEL_BLOCKS`) or a group
        (:data:`GROUPS`), e.g. ``"pooled+rectified8"``.

    Returns
    -------
    tuple of str
        E.g. ``("pooled", "opponent8", "contrast8", "energy8")``.
    """
    if not isinstance(space, str) or not space:
        raise InvalidInputError(f"target space must be a non-empty string; got {space!r}.")
    known = (EMBEDDING_BLOCK, *PIXEL_BLOCKS, *GROUPS)
    blocks: list[str] = []
    for piece in space.split("+"):
        if piece not in known:
            raise InvalidInputError(
                f"target space {space!r} has an unknown piece {piece!r}; expected pieces among "
                f"{list(known)} joined with '+'."
            )
        for block in GROUPS.get(piece, (piece,)):
            if block in blocks:
                raise InvalidInputError(f"target space {space!r} names block {block!r} twice.")
            blocks.append(block)
    return tuple(blocks)


def piece_columns(space: str, blocks: Sequence[Sequence[Any]]) -> dict[str, np.ndarray]:
    """The columns of each ``+``-piece of a space in its standardised features.

    Parameters
    ----------
    space : str
        The space's name, e.g. ``"pooled+rectified8"``.
    blocks : sequence of (str, int)
        Its elementary blocks and their widths in concatenation order, as a store entry written
        by :func:`fill_target_space` records them (``settings["blocks"]``).

    Returns
    -------
    dict
        Piece -> int ndarray of column indices, in the name's order (e.g. ``pooled`` -> 0..127,
        ``rectified8`` -> 128..1087).
    """
    names = [str(name) for name, _ in blocks]
    if tuple(names) != space_blocks(space):
        raise InvalidInputError(
            f"target space {space!r} has blocks {list(space_blocks(space))}; the recorded blocks "
            f"are {names}."
        )
    edges = np.cumsum([0, *(int(width) for _, width in blocks)])
    start = dict(zip(names, edges[:-1], strict=True))
    stop = dict(zip(names, edges[1:], strict=True))
    return {
        piece: np.concatenate([np.arange(start[b], stop[b]) for b in space_blocks(piece)])
        for piece in space.split("+")
    }


def compute_blocks(
    space: str, images: np.ndarray, embeddings: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The raw (unstandardised) blocks of a space for some images.

    Parameters
    ----------
    space : str
        The space's name (:func:`space_blocks`).
    images : ndarray, shape (N, H, W, 3), uint8 RGB
        ``H`` and ``W`` multiples of 8.
    embeddings : ndarray, shape (N, D), optional
        The images' embeddings (the ``pooled`` block); required when the space has it.

    Returns
    -------
    dict
        Block name -> ndarray (N, d_block) float32, flattened, in concatenation order.
    """
    blocks = space_blocks(space)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InvalidInputError(
            f"images have shape {images.shape} and dtype {images.dtype}; expected (N, H, W, 3) "
            "uint8 RGB."
        )
    out: dict[str, np.ndarray] = {}
    for block in blocks:
        if block == EMBEDDING_BLOCK:
            if embeddings is None:
                raise InvalidInputError(
                    f"target space {space!r} has the '{EMBEDDING_BLOCK}' block; pass the images' "
                    "embeddings (N, D)."
                )
            emb = np.asarray(embeddings, dtype=np.float32)
            if emb.ndim != 2 or len(emb) != len(images) or not np.isfinite(emb).all():
                raise InvalidInputError(
                    f"embeddings have shape {emb.shape}; expected finite ({len(images)}, D), one "
                    "row per image."
                )
            out[block] = emb
        else:
            out[block] = PIXEL_BLOCKS[block](images).reshape(len(images), -1)
    return out


def fit_target_space(
    space: str,
    images: np.ndarray,
    embeddings: np.ndarray | None = None,
) -> BlockStatistics:
    """Block statistics of a space fitted on training images (and only on them).

    Parameters
    ----------
    space : str
        The space's name (:func:`space_blocks`).
    images : ndarray, shape (N, H, W, 3), uint8
        The training images (N >= 2).
    embeddings : ndarray, shape (N, D), optional
        Their embeddings, when the space has ``pooled``.

    Returns
    -------
    BlockStatistics
        Apply with :func:`target_space_features` to any images (the test images included).
    """
    return BlockStatistics.fit(compute_blocks(space, images, embeddings))


def target_space_features(
    space: str,
    statistics: BlockStatistics,
    images: np.ndarray,
    embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """A space's standardised features of some images, with statistics fitted on training images.

    Returns
    -------
    ndarray, shape (N, statistics.dims), float32
        Each block centred and scaled with ``statistics``, concatenated in the space's order.
    """
    blocks = compute_blocks(space, images, embeddings)
    if tuple(statistics.means) != tuple(blocks):
        raise InvalidInputError(
            f"the statistics are of blocks {list(statistics.means)}; target space {space!r} has "
            f"{list(blocks)}."
        )
    return statistics.apply(blocks)


def unstandardise_block(
    statistics: BlockStatistics, features: np.ndarray, block: str = EMBEDDING_BLOCK
) -> np.ndarray:
    """One block of standardised space features mapped back to its own units.

    E.g. the ``pooled`` columns of a decoder's ``pooled+rectified8`` output back to sim-clip
    embeddings (for a generator or captioner that needs them).

    Parameters
    ----------
    statistics : BlockStatistics
        The space's statistics (:func:`fit_target_space`, or loaded from
        :func:`statistics_path`).
    features : ndarray, shape (N, statistics.dims)
        Rows in the standardised space.
    block : str
        The block to return.

    Returns
    -------
    ndarray, shape (N, d_block), float32
    """
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[1] != statistics.dims:
        raise InvalidInputError(
            f"features have shape {features.shape}; expected (N, {statistics.dims}), rows of the "
            "space the statistics standardise."
        )
    start = 0
    for name, mean in statistics.means.items():
        if name == block:
            columns = features[:, start : start + len(mean)].astype(np.float64)
            return (columns * statistics.scales[name] + mean).astype(np.float32)
        start += len(mean)
    raise InvalidInputError(f"block {block!r} is not among {list(statistics.means)}.")


def statistics_path(store_path: str | Path, model_name: str, space: str) -> Path:
    """Where :func:`fill_target_space` keeps an entry's statistics: beside the store, as
    ``<store stem>.<model>.<space>.statistics.npz``."""
    store_path = Path(store_path)
    return store_path.with_name(f"{store_path.stem}.{model_name}.{space}.statistics.npz")


def fill_target_space(
    store: Any,
    space: str,
    ids: Sequence[str],
    fit_ids: Sequence[str],
    load_images: Callable[[list[str]], np.ndarray],
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
    model_name: str = STORE_MODEL,
    settings: dict[str, Any] | None = None,
    batch_size: int = 256,
    progress: bool = True,
    statistics_file: str | Path | None = None,
) -> tuple[int, BlockStatistics]:
    """Fit a space's statistics on the training images and write its features for ``ids``.

    The statistics are fitted on ``fit_ids`` only (every block's mean and scale), applied to
    every id and saved beside the store (:func:`statistics_path`), so the test images are
    standardised with the training statistics. The entry's settings record the space, its
    blocks, the number of training images and the statistics' digest: a rerun (to add ids)
    refits the same statistics from the same images and is refused by the store if they differ.

    Parameters
    ----------
    store : FeatureStore
        Where the entry ``model_name / space`` is written (resumably).
    space : str
        The space's name (:func:`space_blocks`).
    ids : sequence of str
        The stimulus ids to write.
    fit_ids : sequence of str
        The training images the statistics come from (at least 2; never test images).
    load_images : callable
        ``load_images(ids) -> ndarray (n, H, W, 3) uint8``.
    embed : callable, optional
        ``embed(images) -> ndarray (n, D)``: the ``pooled`` block (required when the space has it).
    model_name : str
        The entry's model name (default ``targets``); the layer is the space's name.
    settings : dict, optional
        More settings to record (e.g. the embedding model's).
    batch_size : int
    progress : bool
    statistics_file : path, optional
        Where the statistics are saved once the entry is written; default
        :func:`statistics_path` of the store.

    Returns
    -------
    (computed, statistics)
        Rows computed and written, and the fitted statistics.
    """
    blocks = space_blocks(space)
    if EMBEDDING_BLOCK in blocks and embed is None:
        raise InvalidInputError(
            f"target space {space!r} has the '{EMBEDDING_BLOCK}' block; give an image embedding "
            "(embed=...)."
        )
    fit_ids = list(dict.fromkeys(str(i) for i in fit_ids))
    if len(fit_ids) < 2:
        raise InvalidInputError(
            f"target space {space!r} needs at least 2 training images to fit its statistics; "
            f"got {len(fit_ids)}."
        )

    def raw(batch: list[str]) -> dict[str, np.ndarray]:
        images = np.asarray(load_images(batch))
        embeddings = None if EMBEDDING_BLOCK not in blocks else np.asarray(embed(images))
        return compute_blocks(space, images, embeddings)

    parts = [raw(fit_ids[s : s + batch_size]) for s in range(0, len(fit_ids), batch_size)]
    fitted = {b: np.concatenate([p[b] for p in parts]) for b in blocks}
    statistics = BlockStatistics.fit(fitted)
    fit_row = {sid: row for row, sid in enumerate(fit_ids)}
    recorded = {
        **(settings or {}),
        "output": "target_space",
        "space": space,
        "blocks": [[b, len(statistics.means[b])] for b in blocks],  # in concatenation order
        "standardised_on_images": len(fit_ids),
        "statistics_sha256": statistics.digest(),
    }

    def compute(batch: list[str]) -> np.ndarray:
        # the training images' raw blocks are already computed (to fit the statistics); only the
        # other images' are computed here, in batch order
        batch = [str(sid) for sid in batch]
        known = np.array([sid in fit_row for sid in batch])
        fresh = raw([sid for sid, k in zip(batch, known) if not k]) if not known.all() else {}
        rows = [fit_row[sid] for sid, k in zip(batch, known) if k]
        out = {}
        for b in blocks:
            out[b] = np.empty((len(batch), fitted[b].shape[1]), dtype=np.float32)
            out[b][known] = fitted[b][rows]
            if b in fresh:
                out[b][~known] = fresh[b]
        return statistics.apply(out)

    computed = store.fill(model_name, space, list(ids), compute, recorded, batch_size, progress)
    statistics.save(statistics_file or statistics_path(store.path, model_name, space))
    return computed, statistics
