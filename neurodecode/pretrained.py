"""Save and load trained decoders as a folder: ``config.json`` + ``model.safetensors`` + card.

Owns the on-disk format of a pretrained decoder (as diffusers' ``save_pretrained``): no pickle
anywhere. ``config.json`` records the class path, the init arguments (geometry included) and the
neurodecode version; ``model.safetensors`` holds the state dict; ``README.md`` is a model-card
stub to fill in. Only classes inside the ``neurodecode`` package that derive from
:class:`neurodecode.models.base.PretrainedMixin` can be loaded, so a config cannot make this
module import arbitrary code.

Example
-------
>>> model.save_pretrained("runs/demo/decoder")                    # doctest: +SKIP
>>> model = neurodecode.load_pretrained("runs/demo/decoder")      # doctest: +SKIP
>>> emb = model.embed(brain, subject=0)                           # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurodecode.validation import InvalidInputError

if TYPE_CHECKING:  # torch is imported on use, so that ``import neurodecode`` stays light
    import torch

__all__ = ["CONFIG_NAME", "FORMAT_VERSION", "WEIGHTS_NAME", "load_pretrained", "save_pretrained"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1


def _class_path(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def save_pretrained(model: torch.nn.Module, directory: str | Path) -> Path:
    """Write a model to ``directory`` as config, safetensors weights and a model-card stub.

    Parameters
    ----------
    model : PretrainedMixin and torch.nn.Module
        A neurodecode model (has ``get_config()``).
    directory : str or Path
        Created if absent; existing files of the same names are replaced.

    Returns
    -------
    Path
        The directory.
    """
    import torch
    from safetensors.torch import save_file

    from neurodecode import __version__
    from neurodecode.models.base import PretrainedMixin

    if not isinstance(model, PretrainedMixin) or not isinstance(model, torch.nn.Module):
        raise InvalidInputError(
            f"model of type {type(model).__name__} cannot be saved; expected a neurodecode model "
            "(a torch Module with PretrainedMixin)."
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "class_path": _class_path(model),
        "init_args": model.get_config(),
        "neurodecode_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    # Clone every tensor so that shared or non-contiguous storage is written plainly.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp_weights = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format": "pt"})
    tmp_weights.replace(directory / WEIGHTS_NAME)
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps(config, indent=2) + "\n")
    tmp_config.replace(directory / CONFIG_NAME)
    card = directory / CARD_NAME
    if not card.exists():
        n_params = sum(p.numel() for p in model.parameters())
        card.write_text(_card(config, n_params))
    return directory


def _card(config: dict, n_params: int) -> str:
    geometry = config["init_args"].get("geometry")
    return (
        f"# {config['class_path'].rsplit('.', 1)[-1]}\n\n"
        f"- class: `{config['class_path']}`\n"
        f"- parameters: {n_params:,}\n"
        f"- geometry: `{json.dumps(geometry)}`\n"
        f"- neurodecode version: {config['neurodecode_version']}\n\n"
        "## Training data\n\nTODO: data set, subjects, sessions, splits, target features "
        "(model, layer, weights tag).\n\n"
        "## Evaluation\n\nTODO: 300-way top-1 retrieval both directions, protocol.\n\n"
        "## Usage\n\n```python\nimport neurodecode\n"
        "model = neurodecode.load_pretrained('path/to/this/folder')\n"
        "emb = model.embed(brain, subject=0)\n```\n"
    )


def _resolve_class(class_path: Any, config_file: Path) -> type:
    from neurodecode.models.base import PretrainedMixin

    if not isinstance(class_path, str) or not class_path.startswith("neurodecode."):
        raise InvalidInputError(
            f"{config_file}: class_path={class_path!r} is not a neurodecode model; expected "
            "e.g. 'neurodecode.models.retrieval.RetrievalModule'."
        )
    module_name, _, class_name = class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InvalidInputError(
            f"{config_file}: class_path={class_path!r} names an unknown module {module_name!r}."
        ) from err
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, PretrainedMixin):
        raise InvalidInputError(
            f"{config_file}: class_path={class_path!r} is not a known neurodecode model class."
        )
    return cls


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a decoder written by :func:`save_pretrained`, in eval mode on ``device``.

    Parameters
    ----------
    directory : str or Path
        Folder holding ``config.json`` and ``model.safetensors``.
    device : str or torch.device
        Where to put the weights (``"cpu"``, ``"cuda"``, ...).

    Returns
    -------
    torch.nn.Module
        The model (a neurodecode LightningModule) with its trained weights.

    Raises
    ------
    InvalidInputError
        Missing or unreadable files, an unknown class, or weights that do not fit the
        architecture in the config; the message names the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"pretrained model not found: expected a directory at {directory}.")
    config_file = directory / CONFIG_NAME
    weights_file = directory / WEIGHTS_NAME
    for path, what in ((config_file, "model config"), (weights_file, "model weights")):
        if not path.is_file():
            raise InvalidInputError(f"{what} not found: expected a file at {path}.")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{config_file} is not valid JSON: {err}.") from err
    if not isinstance(config, dict) or not {"class_path", "init_args"} <= set(config):
        raise InvalidInputError(
            f"{config_file} lacks 'class_path'/'init_args'; expected a config written by "
            "neurodecode.save_pretrained."
        )
    cls = _resolve_class(config["class_path"], config_file)
    if not isinstance(config["init_args"], dict):
        raise InvalidInputError(f"{config_file}: 'init_args' must be a JSON object.")
    try:
        model = cls.from_config(config["init_args"])
    except (TypeError, ValueError) as err:
        raise InvalidInputError(
            f"{config_file}: cannot build {cls.__name__} from init_args: {err}"
        ) from err
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError) as err:
        raise InvalidInputError(
            f"{weights_file} is not a readable safetensors file: {err}"
        ) from err
    _check_state(model.state_dict(), state, weights_file)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _check_state(expected: dict, found: dict, weights_file: Path) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise InvalidInputError(
            f"{weights_file} does not match the architecture in {CONFIG_NAME}: "
            f"missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected tensors {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
        )
    for key, tensor in expected.items():
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise InvalidInputError(
                f"{weights_file}: tensor {key!r} has shape {tuple(found[key].shape)}; the "
                f"architecture in {CONFIG_NAME} expects {tuple(tensor.shape)}."
            )
