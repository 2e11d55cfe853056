"""``neurodecode reconstruct --model DIR --input FILE --out DIR``: images from new brain data.

``--model`` is a decoder saved with ``save_pretrained`` (retrieval head + diffusion prior, e.g.
``runs/demo/decoder``). ``--input`` is brain data in one of these forms:

* ``.npy`` — a (trials, voxels) matrix, preprocessed as in training (session z-scored);
* ``.h5`` / ``.hdf5`` — an NSD betas file (dataset ``betas``, (trials, Z, Y, X), int16 x 300) with
  ``--mask`` (an ROI NIfTI such as ``nsdgeneral.nii.gz``), or a file with a 2-D dataset ``data``;
* ``.nii`` / ``.nii.gz`` — a 3-D volume (one trial) or a 4-D series (X, Y, Z, trials) with ``--mask``.

Volumes are masked (the mask's positive voxels, in the same C order as training) and z-scored over
the given trials, as NSD betas are per session. The decoder's prior predicts image embeddings and
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

from neurodecode.validation import InvalidInputError, check_file


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
        "--zscore",
        choices=["yes", "no"],
        default="yes",
        help="z-score volume inputs over the trials (as NSD sessions)",
    )
    parser.add_argument(
        "--no-lowlevel",
        action="store_true",
        help="ignore the low-level pathway saved in <model>/lowlevel/",
    )
    parser.add_argument("--seed", type=int, default=0)


def _mask(path: Path | None, what: str) -> np.ndarray:
    import nibabel as nib

    if path is None:
        raise InvalidInputError(f"--mask is required for {what}: give an ROI NIfTI (X, Y, Z).")
    data = np.asarray(nib.load(str(check_file(path, "--mask ROI volume"))).dataobj)
    if data.ndim != 3:
        raise InvalidInputError(f"--mask {path} has shape {data.shape}; expected (X, Y, Z).")
    return data > 0


def read_brain_input(
    path: Path, mask_path: Path | None, trials: list[int] | None, zscore: bool
) -> np.ndarray:
    """Brain data of ``--input`` as a (trials, voxels) float32 matrix (see module docstring)."""
    import h5py
    import nibabel as nib

    path = check_file(path, "--input brain data")
    name = path.name.lower()
    try:
        if name.endswith(".npy"):
            data = np.load(path, allow_pickle=False)
            if data.ndim != 2:
                raise InvalidInputError(
                    f"--input {path} has shape {data.shape}; expected (trials, voxels)."
                )
            volume = False
        elif name.endswith((".h5", ".hdf5")):
            with h5py.File(path, "r") as f:
                if "betas" in f:
                    mask = _mask(mask_path, f"NSD betas {path}").transpose(2, 1, 0)
                    betas = f["betas"]
                    if betas.ndim != 4 or betas.shape[1:] != mask.shape:
                        raise InvalidInputError(
                            f"betas in {path} have shape {betas.shape}; expected (trials, "
                            f"{', '.join(map(str, mask.shape))}) = (trials, Z, Y, X) of --mask."
                        )
                    rows = sorted(trials) if trials is not None else slice(None)
                    block = betas[rows]
                    ijk = np.argwhere(mask.transpose(2, 1, 0))
                    data = block[:, ijk[:, 2], ijk[:, 1], ijk[:, 0]].astype(np.float32)
                    if block.dtype.kind == "i":
                        data /= 300.0
                    trials = None  # already selected
                    volume = True
                elif "data" in f:
                    data = f["data"][:]
                    volume = False
                else:
                    raise InvalidInputError(
                        f"--input {path} has datasets {list(f)}; expected "
                        "'betas' (NSD) or 'data' (trials, voxels)."
                    )
        elif name.endswith((".nii", ".nii.gz")):
            img = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
            img = img[..., None] if img.ndim == 3 else img
            mask = _mask(mask_path, f"NIfTI {path}")
            if img.ndim != 4 or img.shape[:3] != mask.shape:
                raise InvalidInputError(
                    f"--input {path} has shape {img.shape}; expected "
                    f"({', '.join(map(str, mask.shape))}[, trials]) of --mask."
                )
            data = img[mask].T
            volume = True
        else:
            raise InvalidInputError(
                f"--input {path}: expected a .npy, .h5/.hdf5 or .nii(.gz) file."
            )
    except InvalidInputError:
        raise
    except Exception as err:
        raise InvalidInputError(f"cannot read --input {path}: {err}") from err
    data = np.asarray(data, dtype=np.float32)
    if trials is not None:
        if max(trials) >= len(data) or min(trials) < 0:
            raise InvalidInputError(
                f"--trials {trials} are outside the {len(data)} trials of {path}."
            )
        data = data[trials]
    if not np.all(np.isfinite(data)):
        raise InvalidInputError(f"--input {path} has NaN/inf values; expected finite voxels.")
    if volume and zscore and len(data) > 1:
        sd = data.std(axis=0)
        sd[sd == 0] = 1.0
        data = (data - data.mean(axis=0)) / sd
    return data


def run(args: argparse.Namespace) -> int:
    """Reconstruct and write PNGs + index.csv."""
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    import neurodecode
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.embedded.generator import get_sim_generator
    from neurodecode.reconstruct.generators import tensor_to_images
    from neurodecode.reconstruct.lowlevel import LOWLEVEL_FOLDER, load_lowlevel
    from neurodecode.reconstruct.reconstructor import Reconstructor

    trials = [int(t) for t in args.trials.split(",")] if args.trials else None
    decoder = neurodecode.load_pretrained(args.model)
    if getattr(decoder, "prior", None) is None:
        raise InvalidInputError(
            f"--model {args.model} has no diffusion prior; reconstruction "
            "needs a decoder trained with prior=..."
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
    return 0
