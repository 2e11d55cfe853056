"""On-disk cache for the small models :mod:`neurodecode.reconstruct` trains itself.

The embedded default generator and VAE are trained on simulated stimuli the first time they are
asked for and kept under ``$NEURODECODE_CACHE`` (default ``~/.cache/neurodecode``) in
``<kind>/<key>/`` as ``config.json`` + ``model.safetensors`` (no pickle). Folders are written to a
temporary sibling and renamed into place, so a crash never leaves a half-written model and two
processes racing to write the same key both end with a complete one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from neurodecode.validation import InvalidInputError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def cache_root() -> Path:
    """The neurodecode cache folder: ``$NEURODECODE_CACHE`` or ``~/.cache/neurodecode``."""
    env = os.environ.get("NEURODECODE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurodecode"


def config_key(config: dict[str, Any], length: int = 16) -> str:
    """A stable hex digest of a JSON-serialisable config (sorted keys)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Write a folder atomically: yields a temporary sibling that is renamed to ``folder`` on exit.

    If ``folder`` already exists when the block ends (another process finished first), the new copy
    is discarded and the existing complete one kept; on error nothing is left behind.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(tmp)
        else:
            try:
                os.replace(tmp, folder)
            except OSError:  # renamed into place by someone else meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model_folder(
    folder: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any]
) -> Path:
    """Write ``config.json`` + ``model.safetensors`` to ``folder`` atomically.

    Returns
    -------
    Path
        ``folder``.
    """
    with atomic_folder(folder) as tmp:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    return Path(folder)


def load_model_folder(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a folder written by :func:`save_model_folder`: ``(state_dict, config)``."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise InvalidInputError(
            f"model folder {folder} is incomplete: expected {CONFIG_NAME} and {WEIGHTS_NAME}."
        )
    return load_file(str(weights_path)), json.loads(config_path.read_text())
