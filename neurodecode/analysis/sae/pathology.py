"""The reconstruction-error pathology check (Gurnee 2024, "SAE reconstruction errors are
(empirically) pathological").

Owns :func:`pathology_check`: run a network three times on the same inputs — clean, with one
layer's activations replaced by an SAE's reconstruction ``x̂``, and with them replaced by
``x + ε``, ``ε`` a uniformly random direction of the same norm as the SAE's error ``‖x - x̂‖``
(per row, i.e. per token) — and compare how far each moves the network's output from the clean
output (KL divergence of the softmax of the output by default). A ratio above 1 says the SAE's
error is more harmful downstream than a random error of the same size; a ratio near 0 says the
error lies where the rest of the network does not look. Works for any ``torch.nn.Module`` and
any layer name of :meth:`~torch.nn.Module.named_modules` through a forward hook; the layer's
output may have token axes (its last axis is the SAE's ``d``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.validation import InvalidInputError


@dataclass
class PathologyResult:
    """Downstream divergence of SAE-reconstructed vs equal-norm randomly perturbed activations.

    Attributes
    ----------
    sae_divergence : float
        Mean divergence from the clean output with the layer replaced by ``x̂``.
    random_divergence : float
        Mean divergence with the layer replaced by ``x + ε``, ``‖ε‖ = ‖x - x̂‖`` per row,
        averaged over ``n_random`` draws.
    ratio : float
        ``sae_divergence / random_divergence`` (``nan`` when both are 0, ``inf`` when only the
        random divergence is).
    error_norm : float
        Root mean squared ``‖x - x̂‖`` over rows (layer units).
    relative_error_norm : float
        ``sqrt(Σ‖x - x̂‖² / Σ‖x‖²)``.
    n_inputs : int
        Network inputs scored.
    """

    sae_divergence: float
    random_divergence: float
    ratio: float
    error_norm: float
    relative_error_norm: float
    n_inputs: int

    def as_dict(self) -> dict[str, float]:
        """The fields as a JSON-ready dict."""
        return dict(self.__dict__)


def kl_divergence(clean: Tensor, patched: Tensor) -> Tensor:
    """KL(softmax(clean) ‖ softmax(patched)) over the last axis, in nats.

    Parameters
    ----------
    clean, patched : Tensor, shape (batch, ..., n_classes)
        Logits.

    Returns
    -------
    Tensor, shape (batch,)
        Summed over the classes and averaged over any middle axes.
    """
    log_p = torch.log_softmax(clean.double(), dim=-1)
    log_q = torch.log_softmax(patched.double(), dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl.reshape(kl.shape[0], -1).mean(1)


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], Tensor):
        return output[0]
    raise InvalidInputError(
        f"the hooked layer returned {type(output).__name__}; expected a tensor or a tuple whose "
        "first item is one."
    )


@contextmanager
def replaced_activations(
    model: nn.Module, layer: str, replace: Callable[[Tensor], Tensor]
) -> Iterator[None]:
    """Within the block, ``layer``'s output rows (last axis) pass through ``replace``.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Name in ``model.named_modules()``.
    replace : callable
        ``replace(rows) -> rows``, shape (n_rows, d) -> (n_rows, d); token axes are folded into
        rows and unfolded again. A tuple output has its first item replaced.
    """
    modules = dict(model.named_modules())
    if layer not in modules:
        raise InvalidInputError(
            f"layer={layer!r} is not a submodule of {type(model).__name__}; "
            f"e.g. {list(modules)[1:6]}."
        )

    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        tensor = _first_tensor(output)
        rows = tensor.reshape(-1, tensor.shape[-1])
        new = replace(rows).to(tensor.dtype).reshape(tensor.shape)
        if isinstance(output, Tensor):
            return new
        return type(output)([new, *output[1:]])

    handle = modules[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _reconstructor(sae: SparseAutoencoder | Callable[[Tensor], Tensor]) -> Callable:
    if isinstance(sae, SparseAutoencoder):
        if sae.transcoder:
            raise InvalidInputError("the pathology check replaces activations; got a transcoder.")
        sae.eval()
        return lambda rows: sae(rows.to(sae.W_enc)).output.to(rows)
    if not callable(sae):
        raise InvalidInputError(f"sae must be a SparseAutoencoder or a callable; got {sae!r}.")
    return sae


def _random_same_norm(error: Tensor, generator: torch.Generator) -> Tensor:
    direction = torch.randn(error.shape, generator=generator, dtype=torch.float64)
    direction = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True).clamp_min(
        1e-30
    )
    norm = torch.linalg.vector_norm(error.double(), dim=1, keepdim=True)
    return (direction * norm).to(error)


@torch.no_grad()
def pathology_check(
    model: nn.Module,
    layer: str,
    inputs: Tensor,
    sae: SparseAutoencoder | Callable[[Tensor], Tensor],
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
    divergence: Callable[[Tensor, Tensor], Tensor] = kl_divergence,
    n_random: int = 4,
    batch_size: int = 256,
    seed: int = 0,
) -> PathologyResult:
    """Downstream divergence of an SAE's reconstruction against an equal-norm random error.

    Parameters
    ----------
    model : nn.Module
        The network, run in inference mode (its ``training`` flag is left as it is).
    layer : str
        Name of the submodule whose output the SAE reconstructs.
    inputs : Tensor, shape (n, ...)
        Network inputs, batch first (e.g. preprocessed images).
    sae : SparseAutoencoder or callable
        The SAE (its ``output``), or any ``reconstruct(rows) -> rows`` map of shape (n_rows, d).
    forward : callable, optional
        ``forward(model, inputs) -> output``; default ``model(inputs)``. For CLIP, return the
        zero-shot logits so that the KL is over classes.
    divergence : callable
        ``divergence(clean_output, patched_output) -> (batch,)`` per-input divergence; default
        :func:`kl_divergence` of the output read as logits.
    n_random : int
        Random draws averaged for the random-error run.
    batch_size : int
        Network inputs per forward pass.
    seed : int
        Seeds the random directions.
    """
    if n_random < 1 or batch_size < 1:
        raise InvalidInputError(
            f"n_random and batch_size must be >= 1; got {n_random}, {batch_size}."
        )
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[0] < 1:
        raise InvalidInputError("inputs must be a non-empty tensor with the batch first.")
    reconstruct = _reconstructor(sae)
    run = forward or (lambda m, x: m(x))
    generator = torch.Generator().manual_seed(seed)
    totals = {"sae": 0.0, "random": 0.0, "error_sq": 0.0, "x_sq": 0.0, "rows": 0}

    def to_sae(rows: Tensor) -> Tensor:
        recon = reconstruct(rows)
        if recon.shape != rows.shape:
            raise InvalidInputError(
                f"the reconstruction has shape {tuple(recon.shape)}; the layer gave "
                f"{tuple(rows.shape)}."
            )
        totals["error_sq"] += float((rows.double() - recon.double()).pow(2).sum())
        totals["x_sq"] += float(rows.double().pow(2).sum())
        totals["rows"] += rows.shape[0]
        return recon

    def to_random(rows: Tensor) -> Tensor:
        return rows + _random_same_norm(rows - reconstruct(rows), generator)

    for start in range(0, inputs.shape[0], batch_size):
        batch = inputs[start : start + batch_size]
        clean = run(model, batch)
        with replaced_activations(model, layer, to_sae):
            patched = run(model, batch)
        totals["sae"] += float(divergence(clean, patched).double().sum())
        for _ in range(n_random):
            with replaced_activations(model, layer, to_random):
                perturbed = run(model, batch)
            totals["random"] += float(divergence(clean, perturbed).double().sum()) / n_random
    n = inputs.shape[0]
    sae_div, random_div = totals["sae"] / n, totals["random"] / n
    if random_div > 0:
        ratio = sae_div / random_div
    else:  # a perfect reconstruction has a zero-norm error, so both runs equal the clean one
        ratio = float("nan") if sae_div == 0 else float("inf")
    return PathologyResult(
        sae_divergence=sae_div,
        random_divergence=random_div,
        ratio=ratio,
        error_norm=(totals["error_sq"] / max(1, totals["rows"])) ** 0.5,
        relative_error_norm=(totals["error_sq"] / totals["x_sq"]) ** 0.5 if totals["x_sq"] else 0.0,
        n_inputs=int(n),
    )
