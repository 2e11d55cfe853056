"""ROI volumes and their label tables -> named boolean masks.

NSD's ROI files (``roi/NAME.nii.gz``, nibabel shape (X, Y, Z)) hold -1 outside cortex, 0 for
unlabelled voxels and 1..N for labels whose names come from FreeSurfer-style tables
(``NAME.mgz.ctab``: one "index name" pair per line). Label names are always read from those tables,
never hard-coded.

Where the tables are looked for (first found wins), for ``<root>/nsddata/ppdata/subjXX/func1pt8mm/
roi/NAME.nii.gz``:

1. beside the ROI file: ``roi/NAME.mgz.ctab`` or ``roi/NAME.ctab``;
2. the subject's FreeSurfer label folder: ``<root>/nsddata/freesurfer/subjXX/label/NAME.mgz.ctab``;
3. fsaverage's label folder, where NSD itself ships them:
   ``<root>/nsddata/freesurfer/fsaverage/label/NAME.mgz.ctab`` (the path ``nsd_access`` reads).

A binary mask (values only in -1/0/1, as ``nsdgeneral.nii.gz``) needs no table: without one its
single label 1 is named after the file (``{1: "nsdgeneral"}``). A volume with labels above 1 and
no table is refused, since its label names cannot be known.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from neurodecode.validation import InvalidInputError, check_file

logger = logging.getLogger(__name__)


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
    table_path : Path or None
        The ``.ctab`` the names came from; ``None`` for a binary mask read without a table.
    """

    name: str
    labels: np.ndarray
    table: dict[int, str]
    affine: np.ndarray
    path: Path
    table_path: Path | None = None

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


def label_table_candidates(roi_path: Path, subject: str | None = None) -> list[Path]:
    """Where the ``.ctab`` of an ROI file may be, in the order searched (see module docstring)."""
    roi_path = Path(roi_path)
    stem = roi_path.name.removesuffix(".nii.gz").removesuffix(".nii")
    candidates = [roi_path.parent / f"{stem}.mgz.ctab", roi_path.parent / f"{stem}.ctab"]
    # <root>/nsddata/ppdata/subjXX/func1pt8mm/roi/NAME.nii.gz: parents[4] is nsddata
    parents = roi_path.parents
    if len(parents) > 4 and parents[3].name == "ppdata":
        freesurfer = parents[4] / "freesurfer"
        subject = subject or parents[2].name
        candidates.append(freesurfer / subject / "label" / f"{stem}.mgz.ctab")
        candidates.append(freesurfer / "fsaverage" / "label" / f"{stem}.mgz.ctab")
    return candidates


def find_label_table(roi_path: Path, subject: str | None = None) -> Path:
    """The ``.ctab`` for an ROI file: beside it, in ``nsddata/freesurfer/subjXX/label`` or in
    ``nsddata/freesurfer/fsaverage/label`` (NSD's own place); raises if there is none."""
    candidates = label_table_candidates(roi_path, subject)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InvalidInputError(
        f"no label table for {roi_path}: expected one of {[str(c) for c in candidates]}."
    )


def read_roi_volume(path: str | Path, subject: str | None = None) -> ROIVolume:
    """Read an ROI NIfTI and its label table (see module docstring: a binary mask needs none)."""
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
    name = path.name.removesuffix(".nii.gz").removesuffix(".nii")
    candidates = label_table_candidates(path, subject)
    table_path = next((c for c in candidates if c.is_file()), None)
    if table_path is None:
        present = np.unique(labels[labels > 0]).tolist()
        if present and max(present) > 1:
            raise InvalidInputError(
                f"no label table for {path}: it holds labels {present[:10]}"
                f"{' ...' if len(present) > 10 else ''}, whose names need a .ctab; expected one "
                f"of {[str(c) for c in candidates]}."
            )
        logger.debug("%s is a binary mask and has no label table; label 1 = %r", path, name)
        return ROIVolume(name=name, labels=labels, table={1: name}, affine=img.affine, path=path)
    table = read_label_table(table_path)
    stray = sorted(set(np.unique(labels[labels > 0]).tolist()) - set(table))
    if stray:
        raise InvalidInputError(
            f"ROI volume {path} has labels {stray} missing from its table {table_path}."
        )
    return ROIVolume(
        name=name, labels=labels, table=table, affine=img.affine, path=path, table_path=table_path
    )


def voxel_coordinates(mask: np.ndarray) -> np.ndarray:
    """(n_voxels, 3) int (x, y, z) indices of a (X, Y, Z) mask, in C order (the voxel order used
    by every masked array in neurodecode)."""
    return np.argwhere(mask)


def union(*masks: np.ndarray) -> np.ndarray:
    """Voxels in any of the masks."""
    return np.logical_or.reduce(masks)
