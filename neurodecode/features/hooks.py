"""Activations of any ``torch.nn.Module`` at named layers, through forward hooks.

Layer names are the dotted names of :meth:`torch.nn.Module.named_modules` (``"layer3.1.conv2"``
for a torchvision ResNet, ``"transformer.resblocks.5"`` for an open_clip vision transformer,
``"blocks.7"`` for a timm ViT). Works with any model the user brings: the model is called once on
the inputs and the outputs of the named sub-modules are kept.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from neurodecode.validation import InvalidInputError


def pool_activation(activation: torch.Tensor) -> torch.Tensor:
    """Average an activation over its spatial or token axes, keeping batch and channels.

    - 4-D (N, C, H, W) (convolutional maps): mean over H and W -> (N, C).
    - 5-D (N, C, T, H, W): mean over T, H, W -> (N, C).
    - 3-D (N, T, D) (transformer tokens, batch first): mean over the T tokens (class token
      included) -> (N, D).
    - 2-D (N, D): returned as is.
    """
    if activation.ndim == 2:
        return activation
    if activation.ndim == 3:
        return activation.mean(dim=1)
    if activation.ndim in (4, 5):
        return activation.mean(dim=tuple(range(2, activation.ndim)))
    raise InvalidInputError(
        f"cannot pool an activation of shape {tuple(activation.shape)}; expected 2 to 5 "
        "dimensions with the batch first."
    )


def _first_tensor(output: Any) -> torch.Tensor:
    """The tensor a module returned (the first one if it returned a tuple, e.g. attention)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Sequence) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping):
        for value in output.values():
            if isinstance(value, torch.Tensor):
                return value
    raise InvalidInputError(f"module returned {type(output).__name__}, which holds no tensor.")


def capture_activations(
    model: nn.Module,
    layers: list[str],
    inputs: torch.Tensor | tuple | dict,
    pooled: bool = True,
    grad: bool = False,
) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``inputs`` once and return the outputs of the named sub-modules.

    Parameters
    ----------
    model : nn.Module
        Any module; its train/eval mode is left as it is (call ``model.eval()`` first for
        features).
    layers : list of str
        Dotted sub-module names (as ``model.named_modules()``); ``""`` is the model itself.
    inputs : Tensor, tuple or dict
        Called as ``model(inputs)``, ``model(*inputs)`` or ``model(**inputs)``.
    pooled : bool
        Average over spatial/token axes (see :func:`pool_activation`) -> (N, C); else the
        activation as the module returned it, e.g. (N, C, H, W) or (N, T, D).
    grad : bool
        Keep the autograd graph (for gradients with respect to the inputs); off by default.

    Returns
    -------
    dict
        Layer name -> tensor, batch first. A module that returns a tuple contributes its first
        element.

    Raises
    ------
    InvalidInputError
        For an unknown layer name (with the closest valid names), or a layer that ran more than
        once in the forward pass (its output would be ambiguous).
    """
    if isinstance(layers, str):
        layers = [layers]
    names = dict(model.named_modules())
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        valid = [n for n in names if n]
        close = difflib.get_close_matches(unknown[0], valid, n=5, cutoff=0.4)
        examples = close or valid[:8]
        raise InvalidInputError(
            f"layers {unknown} are not sub-modules of {type(model).__name__}; valid names include "
            f"{examples} (see model.named_modules(), {len(valid)} in all)."
        )
    captured: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    handles = []

    def make_hook(layer: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            captured[layer].append(_first_tensor(output))

        return hook

    try:
        for layer in dict.fromkeys(layers):
            handles.append(model.get_submodule(layer).register_forward_hook(make_hook(layer)))
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            if isinstance(inputs, dict):
                model(**inputs)
            elif isinstance(inputs, tuple):
                model(*inputs)
            else:
                model(inputs)
    finally:
        for handle in handles:
            handle.remove()

    result = {}
    for layer in layers:
        outputs = captured[layer]
        if len(outputs) != 1:
            raise InvalidInputError(
                f"layer {layer!r} ran {len(outputs)} times in one forward pass; expected once "
                "(pick a module that is not shared or skipped)."
            )
        result[layer] = pool_activation(outputs[0]) if pooled else outputs[0]
    return result
