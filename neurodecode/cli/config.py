"""The one reader of the command line's YAML config files, with one error style.

Every subcommand that takes ``--config`` reads it through :func:`load_config` and checks its
sections with :func:`section`; a missing file, invalid YAML, a file that is not a mapping, a
missing or unknown key all give one :class:`~neurodecode.validation.InvalidInputError` that names
the file and what was expected.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from neurodecode.validation import InvalidInputError, check_file, check_keys


def load_config(
    path: str | Path,
    what: str = "config",
    required: Iterable[str] = (),
    allowed: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Read a YAML config that holds a mapping.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is, for messages ("extraction config", ...).
    required : iterable of str
        Top-level keys that must be present.
    allowed : iterable of str, optional
        The only top-level keys allowed (a typo gets a "did you mean" message).

    Returns
    -------
    dict
    """
    import yaml

    path = check_file(path, what)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InvalidInputError(f"{what} {path} is not valid YAML: {err}") from err
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise InvalidInputError(
            f"{what} {path} must hold a mapping of sections; found {type(config).__name__}."
        )
    if allowed is not None:
        check_keys(f"{what} {path}", config, list(allowed))
    missing = [key for key in required if key not in config]
    if missing:
        raise InvalidInputError(f"{what} {path} lacks the section(s) {missing}.")
    return config


def section(config: dict[str, Any], name: str, defaults: dict[str, Any], where: str) -> dict:
    """Section ``name`` of ``config`` merged over ``defaults``; unknown keys are refused."""
    given = config.get(name) or {}
    if not isinstance(given, dict):
        raise InvalidInputError(f"{where}: section {name!r} must be a mapping; got {given!r}.")
    check_keys(f"{where} section {name!r}", given, defaults)
    return {**defaults, **given}
