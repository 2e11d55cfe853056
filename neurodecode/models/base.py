"""Input geometry shared by the decoders: :func:`parse_fmri_geometry`, the one reader of the fMRI
geometry dict that the datamodule hands to models (LightningCLI links ``data.geometry`` to
``model.init_args.geometry``). The save/load side of every model (:class:`PretrainedMixin`) lives in
:mod:`neurodecode.pretrained`.

fMRI geometry::

    {"n_voxels": {"subj01": 3000, "subj02": 2800}, "target_shape": [D]}   # or [T, D]

The order of ``n_voxels`` defines the subject indices found in batches (``batch["subject"]``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from neurodecode.validation import InvalidInputError

__all__ = ["FMRIGeometry", "check_subject_name", "parse_fmri_geometry"]

_SUBJECT_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


class FMRIGeometry:
    """Parsed fMRI geometry: subjects in index order with voxel counts, and the target shape.

    Attributes
    ----------
    n_voxels : dict[str, int]
        Voxel count per subject, in subject-index order.
    target_shape : tuple[int, ...]
        ``(D,)`` for pooled or ``(T, D)`` for token-level embedding targets.
    """

    def __init__(self, n_voxels: dict[str, int], target_shape: tuple[int, ...]):
        self.n_voxels = dict(n_voxels)
        self.target_shape = tuple(target_shape)

    @property
    def subjects(self) -> list[str]:
        """Subject names; position = subject index."""
        return list(self.n_voxels)

    @property
    def target_dim(self) -> int:
        """Number of target values per sample, ``prod(target_shape)``."""
        return math.prod(self.target_shape)

    @property
    def token_shape(self) -> tuple[int, int]:
        """``(T, D)``, with ``T = 1`` for pooled targets."""
        if len(self.target_shape) == 1:
            return 1, self.target_shape[0]
        return self.target_shape[0], self.target_shape[1]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form accepted by :func:`parse_fmri_geometry`."""
        return {"n_voxels": dict(self.n_voxels), "target_shape": list(self.target_shape)}


def check_subject_name(name: str) -> str:
    """Return ``name`` if usable as a subject key (letters, digits, ``_`` and ``-``)."""
    if not isinstance(name, str) or not _SUBJECT_NAME.match(name):
        raise InvalidInputError(
            f"subject name {name!r} is not valid; expected letters, digits, '_' or '-' "
            "(e.g. 'subj01')."
        )
    return name


def parse_fmri_geometry(geometry: dict | None, model: str = "model") -> FMRIGeometry:
    """Validate the fMRI geometry dict and return it parsed.

    Parameters
    ----------
    geometry : dict or None
        ``{"n_voxels": {name: int, ...}, "target_shape": [D] or [T, D]}``.
    model : str
        The model's name, used in messages.

    Returns
    -------
    FMRIGeometry

    Raises
    ------
    InvalidInputError
        If geometry is missing or malformed.
    """
    if geometry is None:
        raise InvalidInputError(
            f"{model} needs geometry={{'n_voxels': {{subject: count}}, 'target_shape': [D]}}; "
            "got None (LightningCLI links it from the datamodule's `geometry`)."
        )
    if not isinstance(geometry, dict):
        raise InvalidInputError(f"{model} geometry must be a dict; got {type(geometry).__name__}.")
    missing = {"n_voxels", "target_shape"} - set(geometry)
    if missing:
        raise InvalidInputError(
            f"{model} geometry lacks {sorted(missing)}; expected keys 'n_voxels' and "
            f"'target_shape' (got {sorted(geometry)})."
        )
    n_voxels = geometry["n_voxels"]
    if not isinstance(n_voxels, dict) or not n_voxels:
        raise InvalidInputError(
            f"{model} geometry['n_voxels'] must be a non-empty dict subject -> voxel count; "
            f"got {n_voxels!r}."
        )
    parsed: dict[str, int] = {}
    for name, count in n_voxels.items():
        check_subject_name(name)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise InvalidInputError(
                f"{model} geometry['n_voxels'][{name!r}]={count!r}; expected a positive int."
            )
        parsed[name] = int(count)
    shape = geometry["target_shape"]
    if (
        not isinstance(shape, list | tuple)
        or len(shape) not in (1, 2)
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)
    ):
        raise InvalidInputError(
            f"{model} geometry['target_shape']={shape!r}; expected [D] or [T, D] positive ints."
        )
    return FMRIGeometry(parsed, tuple(int(s) for s in shape))
