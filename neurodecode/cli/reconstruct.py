"""``neurodecode reconstruct --model DIR --input FILE --out DIR``: images from new brain data.

``--model`` is a decoder saved with ``save_pretrained`` (retrieval head + diffusion prior, e.g.
``runs/demo/decoder``). ``--input`` is brain data as :func:`neurodecode.data.brain_input.
read_brain_input` reads it (``.npy`` (trials, voxels); NSD betas ``.hdf5`` or NIfTI with
``--mask``), masked and z-scored over the given trials. The decoder predicts image embeddings —
by default, where the decoder folder holds ``<model>/condition/`` (written by ``make demo``; see
:mod:`neurodecode.reconstruct.conditioning`), its retrieval output projected onto the manifold of
its training images' embeddings, otherwise samples of its diffusion prior (``--condition``) — and
the embedded default generator (trained for ``--clip-preset``'s sim-clip space) draws
``--num-samples`` images per trial, keeping the one closest to the prediction. If the decoder
folder holds a low-level pathway (``<model>/lowlevel/``, written by ``make demo``; see
:func:`neurodecode.reconstruct.lowlevel.save_lowlevel`), its blurry image is the img2img init at the
saved strength and is blended into the final image with the saved weight (chosen on validation
images); ``--no-lowlevel`` skips it. The output says which was used. Writes ``recon_NNNN.png``
and ``index.csv`` (row, trial, file) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from neurodecode.data.brain_input import read_brain_input
from neurodecode.validation import InvalidInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode reconstruct``."""
    parser.add_argument("--model", required=True, type=Path, help="saved decoder folder")
    parser.add_argument("--input", required=True, type=Path, help=".npy, .h5/.hdf5 or NIfTI")
    parser.add_argument("--out", required=True, type=Path, help="output folder for PNGs")
    parser.add_argument("--mask", type=Path, help="ROI NIfTI (X, Y, Z) for volume inputs")
    parser.add_argument("--trials", help="comma-separated 0-based trial indices (default: all)")
    parser.add_argument("--subject", help="subject name in the decoder (default: its first)")
    parser.add_argument("--clip-preset", default="default", help="sim-clip space of the decoder")
    parser.add_argument("--num-samples", type=int, default=4, help="samples per trial (best-of-n)")
    parser.add_argument(
        "--condition",
        choices=["auto", "manifold", "prior"],
        default="auto",
        help="what conditions the generator: the retrieval output projected onto the training "
        "images' embeddings (<model>/condition/), the diffusion prior's samples, or auto "
        "(manifold when <model>/condition/ exists, else prior)",
    )
    parser.add_argument(
        "--zscore",
        choices=["yes", "no"],
        default="yes",
        help="z-score volume inputs over all the file's trials (one NSD session), then pick --trials",
    )
    parser.add_argument(
        "--no-lowlevel",
        action="store_true",
        help="ignore the low-level pathway saved in <model>/lowlevel/",
    )
    parser.add_argument(
        "--captions",
        action="store_true",
        help="also caption each trial's predicted embedding (captions.csv)",
    )
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Reconstruct and write PNGs + index.csv."""
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    import neurodecode
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.embedded.generator import get_sim_generator
    from neurodecode.reconstruct.conditioning import (
        CONDITION_FOLDER,
        SAMPLING_WORDS,
        load_condition,
    )
    from neurodecode.reconstruct.generators import tensor_to_images
    from neurodecode.reconstruct.lowlevel import LOWLEVEL_FOLDER, load_lowlevel
    from neurodecode.reconstruct.reconstructor import Reconstructor

    trials = [int(t) for t in args.trials.split(",")] if args.trials else None
    decoder = neurodecode.load_pretrained(args.model)
    condition_dir = Path(args.model) / CONDITION_FOLDER
    condition = args.condition
    if condition == "auto":
        condition = "manifold" if condition_dir.is_dir() else "prior"
    if condition == "manifold" and not condition_dir.is_dir():
        raise InvalidInputError(
            f"--condition manifold needs {condition_dir} (written by `neurodecode demo` beside "
            "the decoder); it is missing."
        )
    if condition == "prior" and getattr(decoder, "prior", None) is None:
        raise InvalidInputError(
            f"--model {args.model} has no diffusion prior and no {CONDITION_FOLDER}/ folder; "
            "reconstruction needs a decoder trained with prior=... or --condition manifold."
        )
    subject = args.subject or decoder.subjects[0]
    if subject not in decoder.subjects:
        raise InvalidInputError(
            f"--subject {subject!r} is not in {args.model}: it has {decoder.subjects}."
        )
    brain = read_brain_input(args.input, args.mask, trials, args.zscore == "yes")
    expected = decoder.hparams.geometry["n_voxels"][subject]
    if brain.shape[1] != expected:
        raise InvalidInputError(
            f"--input {args.input} gives {brain.shape[1]} voxels per trial but the decoder in "
            f"{args.model} expects {expected} for {subject} (check --mask / the ROI)."
        )
    pathway = None
    lowlevel_dir = Path(args.model) / LOWLEVEL_FOLDER
    if lowlevel_dir.is_dir() and not args.no_lowlevel:
        pathway = load_lowlevel(lowlevel_dir)
        if pathway.n_voxels != expected or pathway.subject != subject:
            raise InvalidInputError(
                f"low-level pathway {lowlevel_dir} reads {pathway.n_voxels} voxels of "
                f"{pathway.subject!r} but the decoder expects {expected} for {subject!r}; "
                "expected the pathway saved with this decoder (or pass --no-lowlevel)."
            )
    encoder = get_sim_clip(args.clip_preset, progress=False)

    def embed_images(images: np.ndarray) -> torch.Tensor:
        return encoder.encode_image(images)

    generator = get_sim_generator(
        embed_images, preset=args.clip_preset, embed_key=str(encoder.settings)
    )

    if condition == "manifold":
        projection = load_condition(condition_dir)
        print(
            f"condition: retrieval output projected onto {projection.n_pool} training images' "
            f"embeddings ({condition_dir}, temperature {projection.temperature:g}; "
            f"{SAMPLING_WORDS[projection.sampling]}"
            + (
                ""
                if projection.guidance_scale is None
                else f", guidance {projection.guidance_scale:g}"
            )
            + ")"
        )

        def decoder_embed(batch: torch.Tensor) -> torch.Tensor:
            return projection(decoder.embed(batch, subject))

        condition_args = {"guidance_scale": projection.guidance_scale}
        if projection.sampling == "nearest" and args.num_samples > projection.n_pool:
            raise InvalidInputError(
                f"--num-samples {args.num_samples} is more than the {projection.n_pool} training "
                f"images of {condition_dir} (sampling: nearest conditions each sample on one of "
                "them); expected at most that many."
            )
        if projection.sampling != "mean":

            def sample_conditions(batch: torch.Tensor) -> torch.Tensor:
                return projection.sample_conditions(decoder.embed(batch, subject), args.num_samples)

            condition_args["sample_conditions"] = sample_conditions

    else:
        print("condition: samples of the decoder's diffusion prior")
        condition_args = {}

        def decoder_embed(batch: torch.Tensor) -> torch.Tensor:
            return decoder.embed(
                batch, subject, output="prior", generator=torch.Generator().manual_seed(args.seed)
            )

    lowlevel_args = {}
    if pathway is not None:
        lowlevel_args = dict(
            lowlevel=pathway.module.decode,
            strength=pathway.strength,
            blend=pathway.blend,
            blend_mode=pathway.blend_mode,
        )
        print(
            f"low-level pathway: {lowlevel_dir} (img2img strength {pathway.strength:g}, "
            f"{pathway.blend_mode} blend {pathway.blend:g})"
        )
    else:
        print("low-level pathway: none (generating from the embedding alone)")
    reconstructor = Reconstructor(
        decoder_embed,
        generator,
        num_samples=args.num_samples,
        select_with=embed_images,
        batch_size=16,
        **lowlevel_args,
        **condition_args,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(brain), desc="reconstruct", unit="trial")
    done = [0]

    def progress(n: int) -> None:
        bar.update(n - done[0])
        done[0] = n

    result = reconstructor.reconstruct(
        brain, generator=torch.Generator().manual_seed(args.seed), progress=progress
    )
    bar.close()
    images = tensor_to_images(result.images)
    labels = trials if trials is not None else list(range(len(images)))
    with open(args.out / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["row", "trial", "file"])
        for row, (trial, image) in enumerate(zip(labels, images)):
            name = f"recon_{row:04d}.png"
            Image.fromarray(image).save(args.out / name)
            writer.writerow([row, trial, name])
    print(f"wrote {len(images)} reconstructions and index.csv to {args.out}")
    if args.captions:
        from neurodecode.analysis.brain_captions import caption_embeddings
        from neurodecode.embedded.prefix_captioner import (
            CAPTIONER_PRESETS,
            get_sim_prefix_captioner,
        )

        preset = args.clip_preset if args.clip_preset in CAPTIONER_PRESETS else "default"
        captioner = get_sim_prefix_captioner(encoder, preset=preset)
        captions = caption_embeddings(captioner, result.embeds)
        with open(args.out / "captions.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "trial", "file", "caption"])
            for row, (trial, caption) in enumerate(zip(labels, captions)):
                writer.writerow([row, trial, f"recon_{row:04d}.png", caption])
        print(
            f"wrote {len(captions)} captions of the predicted embeddings to {args.out / 'captions.csv'}"
        )
    return 0
