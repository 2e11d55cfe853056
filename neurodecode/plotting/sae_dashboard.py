"""Latent dashboard: what drives each SAE latent, in one matplotlib figure.

Owns :func:`latent_dashboard` (one row per latent: top-activating stimuli — for SAEs on a vision
transformer's patch tokens with the patch where the latent fires highlighted and the rest dimmed —
the histogram of its non-zero activations and, when captions are given, the words most associated
with it) and :func:`caption_word_association` (the word scores behind the last panel). Works on
arrays; the caller saves the figure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from neurodecode.validation import InvalidInputError, check_array

_STOPWORDS = frozenset("a an the of in on at to and with two three is are".split())


def caption_word_association(
    activations: np.ndarray, captions: Sequence[str], min_count: int = 2
) -> tuple[list[str], np.ndarray]:
    """Mean activation on captions containing each word minus the mean on all stimuli.

    Parameters
    ----------
    activations : array, shape (n_stimuli,)
        One latent's activation per stimulus.
    captions : sequence of str, length n_stimuli
    min_count : int
        Ignore words in fewer captions than this.

    Returns
    -------
    words : list of str
    scores : ndarray, shape (n_words,)
        Sorted from most to least associated.
    """
    if len(captions) != len(activations):
        raise InvalidInputError(
            f"captions ({len(captions)}) and activations ({len(activations)}) differ in length."
        )
    tokens = [set(re.findall(r"[a-z]+", c.lower())) - _STOPWORDS for c in captions]
    vocabulary = sorted(set().union(*tokens)) if tokens else []
    words, scores = [], []
    base = float(np.mean(activations)) if len(activations) else 0.0
    for word in vocabulary:
        mask = np.array([word in t for t in tokens])
        if mask.sum() >= min_count:
            words.append(word)
            scores.append(float(activations[mask].mean()) - base)
    order = np.argsort(scores)[::-1]
    return [words[i] for i in order], np.asarray(scores)[order]


def latent_dashboard(
    latents: np.ndarray,
    latent_ids: Sequence[int] | None = None,
    images: np.ndarray | None = None,
    stimulus_ids: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
    n_top: int = 6,
    n_latents: int = 6,
    n_words: int = 5,
    patch_index: np.ndarray | None = None,
    patch_grid: tuple[int, int] | None = None,
    latent_titles: Mapping[int, str] | None = None,
) -> Figure:
    """Figure with one row per latent: top stimuli, activation histogram, associated words.

    Parameters
    ----------
    latents : array, shape (n_stimuli, n_latents_total)
        Latent activations per stimulus (e.g. the max over a stimulus's tokens).
    latent_ids : sequence of int, optional
        Which latents to show; default the ``n_latents`` most frequently active among those
        active on at most half the stimuli (then the denser ones).
    images : array, shape (n_stimuli, H, W, 3), uint8 or float in [0, 1], optional
        Stimuli to show (any sequence with ``len`` and indexing, e.g. one that loads on
        demand); without them the top stimulus ids (or row numbers) are listed.
    stimulus_ids : sequence of str, optional
    captions : sequence of str, optional
        One per stimulus; adds the word-association panel.
    n_top, n_words : int
        Stimuli and words shown per latent.
    patch_index : array of int, shape (n_stimuli, n_latents_total), optional
        For token SAEs: the raster patch index (row * n_cols + col) where each latent peaks
        on each stimulus; with ``patch_grid`` the patch is outlined on the shown images and the
        rest dimmed. Negative entries (e.g. the class token) highlight nothing.
    patch_grid : (n_rows, n_cols), optional
        The patch grid of the image tower (e.g. (4, 4) for 32 px images and 8 px patches).
    latent_titles : mapping of int -> str, optional
        Extra text per latent (e.g. the attribute it was matched to), shown in its row label.

    Returns
    -------
    matplotlib.figure.Figure
    """
    latents = check_array("latents", np.asarray(latents), ndim=2, kind="f")
    n_stim = latents.shape[0]
    if images is not None and len(images) != n_stim:
        raise InvalidInputError(f"images ({len(images)}) and latents ({n_stim}) differ in rows.")
    if patch_index is not None:
        patch_index = np.asarray(patch_index)
        if patch_index.shape != latents.shape or patch_grid is None:
            raise InvalidInputError(
                f"patch_index has shape {patch_index.shape}; expected {latents.shape} (one "
                "patch per stimulus and latent), with patch_grid (n_rows, n_cols)."
            )
    if latent_ids is None:  # the most frequent latents that are not dense (<= half the stimuli)
        frequency = (latents > 0).mean(0)
        ranked = np.argsort(-np.where(frequency <= 0.5, frequency, -frequency))
        latent_ids = [int(i) for i in ranked[:n_latents] if frequency[i] > 0]
        if not latent_ids:
            latent_ids = list(range(min(n_latents, latents.shape[1])))
    latent_ids = list(latent_ids)
    n_top = min(n_top, n_stim)
    n_cols = (n_top if images is not None else 1) + 1 + (1 if captions is not None else 0)
    widths = (
        ([1.0] * n_top if images is not None else [2.0])
        + [2.0]
        + ([2.0] if captions is not None else [])
    )
    fig = Figure(figsize=(sum(widths) * 1.3, 1.5 * len(latent_ids) + 0.4))
    axes = fig.subplots(
        len(latent_ids),
        n_cols,
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for row, latent in enumerate(latent_ids):
        values = latents[:, latent]
        top = np.argsort(-values)[:n_top]
        col = 0
        if images is not None:
            for j, index in enumerate(top):
                ax = axes[row, col + j]
                image = np.asarray(images[index])
                ax.imshow(image)
                if patch_index is not None:
                    _highlight_patch(ax, image.shape, int(patch_index[index, latent]), patch_grid)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{values[index]:.2g}", fontsize=7)
                if j == 0:
                    title = f"latent {latent}"
                    if latent_titles and latent in latent_titles:
                        title += f"\n{latent_titles[latent]}"
                    ax.set_ylabel(title, fontsize=7)
            col += n_top
        else:
            ax = axes[row, col]
            names = [str(stimulus_ids[i]) if stimulus_ids is not None else f"#{i}" for i in top]
            text = "\n".join(f"{n}: {values[i]:.3g}" for n, i in zip(names, top))
            ax.text(0.02, 0.98, text, va="top", ha="left", fontsize=7, family="monospace")
            ax.set_axis_off()
            title = f"latent {latent}: top stimuli"
            if latent_titles and latent in latent_titles:
                title += f" ({latent_titles[latent]})"
            ax.set_title(title, fontsize=8)
            col += 1
        ax = axes[row, col]
        active = values[values > 0]
        if active.size:
            ax.hist(active, bins=30, color="tab:blue")
        ax.set_title(f"active on {active.size / max(n_stim, 1):.1%}", fontsize=8)
        ax.tick_params(labelsize=6)
        col += 1
        if captions is not None:
            ax = axes[row, col]
            words, scores = caption_word_association(values, captions)
            shown = words[:n_words][::-1]
            ax.barh(range(len(shown)), scores[:n_words][::-1], color="tab:orange")
            ax.set_yticks(range(len(shown)), shown, fontsize=7)
            ax.tick_params(axis="x", labelsize=6)
            ax.set_title("words", fontsize=8)
    fig.tight_layout()
    return fig


def _highlight_patch(ax, shape: tuple[int, ...], patch: int, grid: tuple[int, int]) -> None:
    """Dim an image shown on ``ax`` outside one raster patch of a ``grid`` and outline it."""
    from matplotlib.patches import Rectangle

    n_rows, n_cols = int(grid[0]), int(grid[1])
    if not 0 <= patch < n_rows * n_cols:
        return
    height, width = shape[0], shape[1]
    r, c = divmod(patch, n_cols)
    top, bottom = r * height / n_rows, (r + 1) * height / n_rows
    left, right = c * width / n_cols, (c + 1) * width / n_cols
    shade = np.zeros((height, width, 4))
    shade[..., 3] = 0.6
    shade[round(top) : round(bottom), round(left) : round(right), 3] = 0.0
    ax.imshow(shade, extent=(-0.5, width - 0.5, height - 0.5, -0.5))
    ax.add_patch(
        Rectangle(
            (left - 0.5, top - 0.5),
            right - left,
            bottom - top,
            fill=False,
            edgecolor="yellow",
            linewidth=1.2,
        )
    )
