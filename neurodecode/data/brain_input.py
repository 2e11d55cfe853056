"""Brain data handed to a trained decoder: a (trials, voxels) matrix from an ``.npy`` file, an NSD
betas file or a NIfTI volume/series, masked by an ROI NIfTI (see :func:`read_brain_input`).

The forms:

* ``.npy`` — a (trials, voxels) matrix, preprocessed as in training (session z-scored);
* ``.h5`` / ``.hdf5`` — an NSD betas file (dataset ``betas``, (trials, Z, Y, X), int16 x 300) with a
  mask (an ROI NIfTI such as ``nsdgeneral.nii.gz``), or a file with a 2-D dataset ``data``;
* ``.nii`` / ``.nii.gz`` — a 3-D volume (one trial) or a 4-D series (X, Y, Z, trials) with a mask.

Volumes are masked (the mask's positive voxels, in the same C order as training; NSD betas through
:func:`neurodecode.data.nsd.read_session_betas`, the reader of :func:`read_nsd_betas`) and z-scored
over *all* the file's trials (:func:`neurodecode.data.trials.zscore_sessions`), as NSD betas are
per session, before ``trials`` are picked: a file too short to z-score is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodecode.data.nsd import read_session_betas
from neurodecode.data.trials import zscore_sessions
from neurodecode.validation import InvalidInputError, check_file


#: Fewest trials a volume input may hold to be z-scored over itself.
MIN_ZSCORE_TRIALS = 20


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
    """Brain data as a (trials, voxels) float32 matrix (the forms are in the module docstring).

    Parameters
    ----------
    path : Path
        ``.npy``, ``.h5``/``.hdf5`` or ``.nii``/``.nii.gz``.
    mask_path : Path or None
        ROI NIfTI (X, Y, Z) for volume inputs; positive voxels are kept.
    trials : list of int or None
        0-based rows/volumes to keep (default: all).
    zscore : bool
        Z-score volume inputs over all the file's trials (at least :data:`MIN_ZSCORE_TRIALS`).

    Messages name the command-line flags (``--input``, ``--mask``, ``--trials``) that
    ``neurodecode reconstruct`` passes these as.
    """
    import h5py
    import nibabel as nib

    path = check_file(path, "--input brain data")
    name = path.name.lower()
    nsd_betas = False
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
                    mask = _mask(mask_path, f"NSD betas {path}")
                    nsd_betas = True
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
    if nsd_betas:  # the same masked reader as read_nsd_betas (percent signal change)
        data, volume = read_session_betas(path, mask), True
    data = np.asarray(data, dtype=np.float32)
    if not np.all(np.isfinite(data)):
        raise InvalidInputError(f"--input {path} has NaN/inf values; expected finite voxels.")
    if volume and zscore:
        # statistics of the whole file (an NSD session), never of the few trials asked for
        if len(data) < MIN_ZSCORE_TRIALS:
            raise InvalidInputError(
                f"--input {path} holds {len(data)} trial(s): too few to z-score as the decoder's "
                f"training data was (per session); expected a whole session's file (at least "
                f"{MIN_ZSCORE_TRIALS} trials, NSD: 750) or --zscore no with trials already "
                "z-scored against their session."
            )
        data = zscore_sessions(data)
    if trials is not None:
        if max(trials) >= len(data) or min(trials) < 0:
            raise InvalidInputError(
                f"--trials {trials} are outside the {len(data)} trials of {path}."
            )
        data = data[trials]
    return data
