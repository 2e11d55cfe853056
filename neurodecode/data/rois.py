"""ROI volumes and their label tables -> named boolean masks.

NSD's ROI files (``roi/NAME.nii.gz``, nibabel shape (X, Y, Z)) hold -1 outside cortex, 0 for
unlabelled voxels and 1..N for labels whose names come from FreeSurfer-style tables
(``NAME.mgz.ctab``: one "index name" pair per line). Label names are always read from those tables,
never hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from neurodecode.validation import InvalidInputError, check_file


def read_label_table(path: str | Path) -> dict[int, str]:
    """Read a ``.ctab`` label table: ``{index: name}`` (index 0 included if listed)."""
    path = check_file(path, "ROI label table (.ctab)")
    table: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2 or not parts[0].lstrip("-").isdigit():
            raise InvalidInputError(
                f"{path}:{lineno} reads {line!r}; expected 'index name' (e.g. '1 V1v')."
            )
        table[int(parts[0])] = parts[1]
    return table


@dataclass
class ROIVolume:
    """One ROI file: an integer label volume and its label table.

    Attributes
    ----------
    name : str
        File stem, e.g. ``"floc-faces"``.
    labels : ndarray, shape (X, Y, Z), int
        -1 outside cortex, 0 unlabelled, 1..N labels.
    table : dict of int -> str
        Label names by index.
    affine : ndarray, shape (4, 4)
        Voxel -> world (mm).
    path : Path
        Where it was read from.
    """

    name: str
    labels: np.ndarray
    table: dict[int, str]
    affine: np.ndarray
    path: Path

    def mask(self, names: str | list[str] | None = None) -> np.ndarray:
        """Boolean (X, Y, Z) mask of the named labels (all positive labels if ``None``)."""
        if names is None:
            return self.labels > 0
        names = [names] if isinstance(names, str) else list(names)
        index = {v: k for k, v in self.table.items()}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise InvalidInputError(
                f"labels {unknown} are not in {self.path}'s table; it has "
                f"{sorted(v for k, v in self.table.items() if k > 0)}."
            )
        return np.isin(self.labels, [index[n] for n in names])

    def named_masks(self) -> dict[str, np.ndarray]:
        """``{label name: (X, Y, Z) bool mask}`` for every positive label in the table."""
        return {name: self.labels == k for k, name in self.table.items() if k > 0}


def find_label_table(roi_path: Path, subject: str | None = None) -> Path:
    """The ``.ctab`` for an ROI file: beside it, or in NSD's ``nsddata/freesurfer/subjXX/label``."""
    stem = roi_path.name.removesuffix(".nii.gz").removesuffix(".nii")
    candidates = [roi_path.parent / f"{stem}.mgz.ctab", roi_path.parent / f"{stem}.ctab"]
    if subject is not None:
        # roi_path = <root>/nsddata/ppdata/subjXX/func1pt8mm/roi/NAME.nii.gz
        nsddata = roi_path.parents[4] if len(roi_path.parents) > 4 else roi_path.parent
        candidates.append(nsddata / "freesurfer" / subject / "label" / f"{stem}.mgz.ctab")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InvalidInputError(
        f"no label table for {roi_path}: expected one of {[str(c) for c in candidates]}."
    )


def read_roi_volume(path: str | Path, subject: str | None = None) -> ROIVolume:
    """Read an ROI NIfTI and its label table (see module docstring)."""
    path = check_file(path, "ROI volume")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise InvalidInputError(f"cannot read ROI volume {path}: {err}") from err
    if data.ndim != 3:
        raise InvalidInputError(
            f"ROI volume {path} has shape {data.shape}; expected 3-D (X, Y, Z)."
        )
    if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
        raise InvalidInputError(f"ROI volume {path} has non-integer values; expected -1/0/1..N.")
    labels = data.astype(np.int32)
    table = read_label_table(find_label_table(path, subject))
    stray = sorted(set(np.unique(labels[labels > 0]).tolist()) - set(table))
    if stray:
        raise InvalidInputError(f"ROI volume {path} has labels {stray} missing from its table.")
    name = path.name.removesuffix(".nii.gz").removesuffix(".nii")
    return ROIVolume(name=name, labels=labels, table=table, affine=img.affine, path=path)


def voxel_coordinates(mask: np.ndarray) -> np.ndarray:
    """(n_voxels, 3) int (x, y, z) indices of a (X, Y, Z) mask, in C order (the voxel order used
    by every masked array in neurodecode)."""
    return np.argwhere(mask)


def union(*masks: np.ndarray) -> np.ndarray:
    """Voxels in any of the masks."""
    return np.logical_or.reduce(masks)
