"""The one cache root of the stand-in models trained on the simulated world.

sim-clip, the generator, the VAE, the category judge and the prefix captioner are trained the first
time they are asked for and kept under ``$NEURODECODE_CACHE`` (default ``~/.cache/neurodecode``) in
``<kind>/<key>/``, each a model folder of :mod:`neurodecode.pretrained` (written atomically, so a
crash never leaves a half-written model and two processes racing to write the same key both end
with a complete one). The key hashes the settings that determine the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from neurodecode.pretrained import FORMAT_VERSION


def cache_root() -> Path:
    """The neurodecode cache folder: ``$NEURODECODE_CACHE`` or ``~/.cache/neurodecode``."""
    env = os.environ.get("NEURODECODE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "neurodecode"


def config_key(config: dict[str, Any], length: int = 16) -> str:
    """A stable hex digest of a JSON-serialisable config (sorted keys) and the folder format."""
    text = json.dumps({**config, "folder_format": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
