"""The one model-folder format: ``config.json`` + ``model.safetensors`` (+ a card), no pickle.

Every model the project saves — decoders, SAEs, the low-level pathway, the embedded generator, VAE,
category judge and prefix captioner, the encoding-model identifier — is a :class:`PretrainedMixin`
and is written by :func:`save_pretrained` and read by :func:`load_pretrained` (as diffusers'
``ModelMixin``). ``config.json`` records the class path, the init arguments (geometry included),
optional free-form ``metadata`` (JSON), the neurodecode version and the format version;
``model.safetensors`` holds the state dict; ``README.md`` is a model-card stub, kept once it has
been edited. Folders are written to a temporary sibling and renamed into place
(:func:`atomic_folder`), so a crash never leaves a half-written model. Only classes inside the
``neurodecode`` package that derive from :class:`PretrainedMixin` can be loaded, so a config cannot
make this module import arbitrary code.

Example
-------
>>> model.save_pretrained("runs/demo/decoder")                    # doctest: +SKIP
>>> model = neurodecode.load_pretrained("runs/demo/decoder")      # doctest: +SKIP
>>> emb = model.embed(brain, subject=0)                           # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurodecode.validation import InvalidInputError

if TYPE_CHECKING:  # torch is imported on use, so that ``import neurodecode`` stays light
    import torch

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "PretrainedMixin",
    "atomic_folder",
    "load_pretrained",
    "read_config",
    "save_pretrained",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 2


def _json_safe(value: Any, where: str) -> Any:
    """Deep-copy ``value`` into plain JSON types (tuples -> lists), or raise naming ``where``."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise InvalidInputError(
        f"init argument {where} of type {type(value).__name__} cannot be written to config.json; "
        "expected JSON types (dict, list, str, int, float, bool, None)."
    )


class PretrainedMixin:
    """Config round trip and ``save_pretrained``/``from_pretrained`` for a ``torch.nn.Module``.

    LightningModules call ``self.save_hyperparameters()`` in ``__init__`` and inherit
    :meth:`get_config` (Lightning records the init arguments, including ``geometry``); plain modules
    override :meth:`get_config` to return their init arguments. :meth:`from_config` rebuilds an
    untrained model with the same architecture. Models that carry files other than tensors (a
    tokenizer, say) override :meth:`save_extra_files` / :meth:`load_extra_files`.
    """

    @property
    def geometry(self) -> dict | None:
        """The input/output geometry the model was built for (as given to ``__init__``)."""
        return copy.deepcopy(self.get_config().get("geometry"))

    def get_config(self) -> dict[str, Any]:
        """Init arguments that rebuild this architecture, as plain JSON types."""
        hparams = getattr(self, "hparams", None)
        if hparams is None:
            raise NotImplementedError(f"{type(self).__name__} must implement get_config().")
        # LightningCLI records its own bookkeeping (``_class_path``, ``_instantiator``) there too
        init_args = {k: v for k, v in dict(hparams).items() if not str(k).startswith("_")}
        config = _json_safe(init_args, type(self).__name__)
        json.dumps(config)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]):
        """Build a fresh (untrained) model from :meth:`get_config`'s output."""
        return cls(**config)

    def save_extra_files(self, folder: Path) -> None:
        """Write files besides the weights and config into ``folder`` (default: none)."""

    def load_extra_files(self, folder: Path) -> None:
        """Read what :meth:`save_extra_files` wrote, after the weights are loaded (default: none)."""

    def save_pretrained(self, directory: str | Path, metadata: dict | None = None) -> Path:
        """Write this model to ``directory``; see :func:`neurodecode.pretrained.save_pretrained`."""
        return save_pretrained(self, directory, metadata=metadata)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu"):
        """Load a model saved by :meth:`save_pretrained`; it must be an instance of ``cls``."""
        model = load_pretrained(directory, device=device)
        if not isinstance(model, cls):
            raise InvalidInputError(
                f"{Path(directory) / CONFIG_NAME} holds a {type(model).__name__}; "
                f"expected a {cls.__name__}."
            )
        return model


@contextmanager
def atomic_folder(folder: str | Path, replace: bool = False) -> Iterator[Path]:
    """Write a folder atomically: yields a temporary sibling renamed to ``folder`` on success.

    ``replace=False`` (caches): if ``folder`` exists when the block ends (another process finished
    first), the new copy is discarded and the complete existing one kept. ``replace=True`` (saving
    a model over an older one): the new folder takes the old one's place, and entries of the old
    folder that the new one does not have (an edited ``README.md``, a ``lowlevel/`` sub-model) are
    carried over. On error nothing is left behind and ``folder`` is untouched.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not folder.exists():
        try:
            os.replace(tmp, folder)
        except OSError:  # renamed into place by someone else meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        return
    if not replace:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for entry in folder.iterdir():
        if not (tmp / entry.name).exists():
            os.replace(entry, tmp / entry.name)
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
    os.replace(folder, old / folder.name)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _class_path(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def save_pretrained(
    model: torch.nn.Module,
    directory: str | Path,
    metadata: dict | None = None,
    replace: bool = True,
) -> Path:
    """Write a model to ``directory`` as config, safetensors weights and a model-card stub.

    Parameters
    ----------
    model : PretrainedMixin and torch.nn.Module
        A neurodecode model (has ``get_config()``).
    directory : str or Path
        Created if absent. An existing model folder is replaced as a whole (atomically); files of
        other names in it are kept.
    metadata : dict, optional
        JSON-safe settings that are not init arguments (how it was trained, a cache key's inputs,
        how a pathway is blended); returned by :func:`read_config`.
    replace : bool
        False: keep an existing complete folder and discard this copy (for caches that several
        processes may fill at once).

    Returns
    -------
    Path
        The directory.
    """
    import torch
    from safetensors.torch import save_file

    from neurodecode._version import __version__

    if not isinstance(model, PretrainedMixin) or not isinstance(model, torch.nn.Module):
        raise InvalidInputError(
            f"model of type {type(model).__name__} cannot be saved; expected a neurodecode model "
            "(a torch Module with PretrainedMixin)."
        )
    directory = Path(directory)
    config = {
        "class_path": _class_path(model),
        "init_args": model.get_config(),
        "metadata": _json_safe(metadata or {}, "metadata"),
        "neurodecode_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    # Clone every tensor so that shared or non-contiguous storage is written plainly.
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_folder(directory, replace=replace) as tmp:
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        model.save_extra_files(tmp)
        if not (directory / CARD_NAME).exists():
            n_params = sum(p.numel() for p in model.parameters())
            (tmp / CARD_NAME).write_text(_card(config, n_params))
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
        "## Evaluation\n\nTODO: the measured numbers, with the ceiling ladder and protocol.\n\n"
        "## Usage\n\n```python\nimport neurodecode\n"
        "model = neurodecode.load_pretrained('path/to/this/folder')\n```\n"
    )


def _resolve_class(class_path: Any, config_file: Path) -> type:
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


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder (``class_path``, ``init_args``, ``metadata``).

    Raises
    ------
    InvalidInputError
        No folder, no or unreadable ``config.json``, or one not written by :func:`save_pretrained`.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"pretrained model not found: expected a directory at {directory}.")
    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        raise InvalidInputError(f"model config not found: expected a file at {config_file}.")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{config_file} is not valid JSON: {err}.") from err
    if not isinstance(config, dict) or not {"class_path", "init_args"} <= set(config):
        raise InvalidInputError(
            f"{config_file} lacks 'class_path'/'init_args'; expected a config written by "
            "neurodecode.save_pretrained."
        )
    if not isinstance(config["init_args"], dict):
        raise InvalidInputError(f"{config_file}: 'init_args' must be a JSON object.")
    config.setdefault("metadata", {})
    return config


def load_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a model written by :func:`save_pretrained`, in eval mode on ``device``.

    Parameters
    ----------
    directory : str or Path
        Folder holding ``config.json`` and ``model.safetensors``.
    device : str or torch.device
        Where to put the weights (``"cpu"``, ``"cuda"``, ...).

    Returns
    -------
    torch.nn.Module
        The model (a decoder, an SAE, a generator network ...) with its trained weights.

    Raises
    ------
    InvalidInputError
        Missing or unreadable files, an unknown class, or weights that do not fit the
        architecture in the config; the message names the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_config(directory)
    config_file = directory / CONFIG_NAME
    weights_file = directory / WEIGHTS_NAME
    if not weights_file.is_file():
        raise InvalidInputError(f"model weights not found: expected a file at {weights_file}.")
    cls = _resolve_class(config["class_path"], config_file)
    try:
        model = cls.from_config(config["init_args"])
    except (TypeError, ValueError, KeyError) as err:
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
    model.load_extra_files(directory)
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
