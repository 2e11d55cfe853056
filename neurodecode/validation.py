"""Argument and input checks shared by every loader, model and command.

One message style everywhere (as MNE's ``_validate_type``/``_check_option``): the error names the
argument or file, says what was expected and what was found. All checks raise
:class:`InvalidInputError`, a :class:`ValueError`, so callers may catch either.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


class InvalidInputError(ValueError):
    """Bad input: the message names the file or argument and what was expected."""


def _where(source: str | Path | None) -> str:
    return f" in {source}" if source is not None else ""


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``; else raise naming ``name`` and the options."""
    allowed = list(allowed)
    if value not in allowed:
        raise InvalidInputError(
            f"{name}={value!r} is not valid; expected one of {', '.join(map(repr, allowed))}."
        )
    return value


def check_file(path: str | Path, what: str) -> Path:
    """Return ``path`` as a :class:`Path` if it is an existing file; else say what was expected."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{what} not found: expected a file at {path}.")
    return path


def check_dir(path: str | Path, what: str) -> Path:
    """Return ``path`` if it is an existing directory; else say what was expected."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidInputError(f"{what} not found: expected a directory at {path}.")
    return path


def check_array(
    name: str,
    array: np.ndarray,
    *,
    ndim: int | None = None,
    shape: tuple[int | None, ...] | None = None,
    kind: str | None = None,
    finite: bool = False,
    source: str | Path | None = None,
) -> np.ndarray:
    """Validate an array's rank, shape (``None`` = any size on that axis), dtype kind and values.

    Parameters
    ----------
    name : str
        What the array is (e.g. ``"betas"``), used in the message.
    kind : str, optional
        Allowed numpy dtype kinds, e.g. ``"iu"`` for integers or ``"f"`` for floats.
    finite : bool
        Reject NaN and inf values, and say how many there are and on which rows.
    source : path, optional
        The file the array came from, named in the message.
    """
    array = np.asarray(array)
    where = _where(source)
    if ndim is not None and array.ndim != ndim:
        raise InvalidInputError(
            f"{name}{where} has {array.ndim} dimensions {array.shape}; expected {ndim}."
        )
    if shape is not None:
        if array.ndim != len(shape) or any(
            s is not None and s != a for s, a in zip(shape, array.shape)
        ):
            expected = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise InvalidInputError(f"{name}{where} has shape {array.shape}; expected {expected}.")
    if kind is not None and array.dtype.kind not in kind:
        raise InvalidInputError(
            f"{name}{where} has dtype {array.dtype}; expected kind {kind!r} "
            "(i=int, u=uint, f=float, b=bool)."
        )
    if finite and array.dtype.kind in "fc":
        bad = ~np.isfinite(array)
        if bad.any():
            rows = np.unique(np.nonzero(bad)[0])[:5].tolist() if array.ndim else []
            raise InvalidInputError(
                f"{name}{where} has {int(bad.sum())} NaN/inf values (first rows: {rows}); "
                "expected finite values."
            )
    return array


def check_keys(name: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Raise if ``given`` has keys outside ``allowed`` (typos in configs are errors, not ignored)."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InvalidInputError(
            f"{name} has unknown keys {unknown}; expected only {sorted(set(allowed))}."
        )
