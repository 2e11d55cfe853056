"""End-to-end SAEs (Braun et al. 2024, "Identifying functionally important features with
end-to-end sparse dictionary learning").

An SAE is inserted at one layer of a frozen network: the layer's output rows are replaced by the
SAE's output while the network runs, and the SAE is trained on how far that moves the network's
output, not on how well it reconstructs the layer. Two objectives:

- ``e2e``: ``KL(p_clean ‖ p_patched) + sparsity``, ``p`` the softmax of the network's output
  (for CLIP: the zero-shot class logits, image embedding against the category prompts' text
  embeddings at the model's logit scale);
- ``e2e+ds``: the same plus ``ds_coefficient · Σ_l ‖y_l - ŷ_l‖² / E‖y_l‖²`` over later layers
  ``l`` (e.g. the output embedding), ``y_l`` clean and ``ŷ_l`` patched. Braun et al. weight the
  raw squared error by ``β_ds / (number of later layers)``; here each layer's error is divided by
  its clean mean squared norm so that one coefficient suits layers of any scale.

The local reconstruction error at the hooked layer is **not** a term of either loss (that is the
point of the method: the dictionary spends its latents only on what the rest of the network reads,
so its layer FVU is worse than a local SAE's at the same L0, its downstream KL better; see
``tests/analysis/test_sae_e2e.py`` on a planted readout subspace). The sparsity term is the
architecture's own (:meth:`SparseAutoencoder.sparsity_loss`: L1 for ``relu_l1``, as in the paper;
none for TopK, whose L0 is fixed by ``k``); the AuxK term, which asks dead latents to reconstruct
the layer's residual, is left out because nothing here is a local reconstruction.

The trained SAE is an ordinary SAE of its architecture, saved and loaded through the one model
folder (:func:`save_e2e_sae` records the objective, layer and coefficients in the folder's
``metadata.training``); only the training path differs: :class:`E2ETrainingModule` subclasses the
Lightning module of :mod:`neurodecode.analysis.sae.training` and :func:`train_e2e_sae` fits it.
:func:`e2e_evaluation` reports what Braun et al. compare at equal L0: downstream KL, the task
accuracy with and without the replacement, FVU at the layer, and L0. From the command line:
``neurodecode analyze sae`` with an ``e2e`` section (:mod:`neurodecode.cli.analyze_sae_e2e`,
``experiments/sae_e2e.yaml``) trains one in a CLIP image tower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from neurodecode.analysis.sae.core import SparseAutoencoder
from neurodecode.analysis.sae.metrics import evaluate_reconstruction
from neurodecode.analysis.sae.pathology import kl_divergence, replaced_activations
from neurodecode.analysis.sae.training import (
    HookedActivationStream,
    RandomRowBatches,
    SAETrainingModule,
)
from neurodecode.validation import InvalidInputError

Forward = Callable[[nn.Module, Tensor], Tensor]

#: architectures trained end to end: latents ``training_latents(pre_activations(x))`` and a
#: sparsity term of their own. Gated is left out (its gate path learns only through its local
#: frozen-decoder reconstruction term), Switch too (its latents depend on a router).
E2E_ARCHITECTURES = ("relu_l1", "topk", "batchtopk", "jumprelu", "prolu", "matryoshka_batchtopk")


@contextmanager
def _recorded_outputs(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Within the block, the outputs (first tensor, rows on the last axis) of ``layers``."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise InvalidInputError(f"later layers {missing} are not submodules of the network.")
    recorded: dict[str, Tensor] = {}
    handles = []
    for name in layers:

        def hook(module: nn.Module, args: tuple, output: Any, name: str = name) -> None:
            out = output[0] if isinstance(output, tuple | list) else output
            recorded[name] = out.reshape(out.shape[0], -1)

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


class E2ETrainingModule(SAETrainingModule):
    """Lightning module training an SAE on a frozen network's downstream loss.

    Batches are network inputs (e.g. preprocessed images), batch first.

    Parameters
    ----------
    sae : SparseAutoencoder
        One of :data:`E2E_ARCHITECTURES` (a Matryoshka SAE trains as its BatchTopK whole: the
        prefix terms are local reconstructions), not a transcoder; its ``d_in`` is the width of
        ``layer``'s output (last axis).
    network : nn.Module
        Frozen: its parameters are set to ``requires_grad=False`` (:func:`train_e2e_sae` gives
        the flags back afterwards), are not optimised, and it is kept in eval mode.
    layer : str
        Name in ``network.named_modules()`` whose output the SAE replaces.
    forward : callable, optional
        ``forward(network, inputs) -> logits`` of shape (batch, ..., n_classes); default
        ``network(inputs)``.
    later_layers : sequence of str
        Layers after ``layer`` whose outputs enter the ``e2e+ds`` MSE term.
    ds_coefficient : float
        Weight of that term (0: plain ``e2e``).
    kl_coefficient : float
        Weight of the KL term.
    **schedule
        ``lr``, ``warmup_steps``, ``decay_fraction``, ``max_steps`` of :class:`SAETrainingModule`.
    """

    def __init__(
        self,
        sae: SparseAutoencoder,
        network: nn.Module,
        layer: str,
        forward: Forward | None = None,
        later_layers: Sequence[str] = (),
        ds_coefficient: float = 0.0,
        kl_coefficient: float = 1.0,
        **schedule: Any,
    ) -> None:
        super().__init__(sae, **schedule)
        if sae.architecture not in E2E_ARCHITECTURES:
            raise InvalidInputError(
                f"end-to-end training supports {list(E2E_ARCHITECTURES)}; got {sae.architecture!r}."
            )
        if sae.transcoder:
            raise InvalidInputError(
                "an end-to-end SAE replaces a layer's output; got a transcoder."
            )
        if ds_coefficient < 0 or kl_coefficient < 0:
            raise InvalidInputError(
                f"ds_coefficient and kl_coefficient must be >= 0; got {ds_coefficient}, "
                f"{kl_coefficient}."
            )
        if ds_coefficient > 0 and not later_layers:
            raise InvalidInputError("ds_coefficient > 0 needs later_layers (e.g. the output).")
        if layer not in dict(network.named_modules()):
            raise InvalidInputError(f"layer={layer!r} is not a submodule of the network.")
        for parameter in network.parameters():
            parameter.requires_grad_(False)
        network.eval()
        # a tuple keeps the network out of this module's parameters (and its train()/eval())
        self._network = (network,)
        self.layer = layer
        self.forward_fn: Forward = forward or (lambda m, x: m(x))
        self.later_layers = tuple(later_layers)
        self.ds_coefficient = float(ds_coefficient)
        self.kl_coefficient = float(kl_coefficient)
        #: optimiser steps taken (set by :func:`train_e2e_sae`)
        self.trained_steps = 0

    def training_metadata(self) -> dict[str, Any]:
        """The objective as JSON: ``objective`` (``e2e`` or ``e2e+ds``), ``layer``,
        ``later_layers``, ``kl_coefficient``, ``ds_coefficient``, ``lr``, ``steps``."""
        ds = self.ds_coefficient > 0 and bool(self.later_layers)
        return {
            "objective": "e2e+ds" if ds else "e2e",
            "layer": self.layer,
            "later_layers": list(self.later_layers),
            "kl_coefficient": self.kl_coefficient,
            "ds_coefficient": self.ds_coefficient,
            "lr": self.lr,
            "steps": self.trained_steps,
        }

    @property
    def network(self) -> nn.Module:
        """The frozen network."""
        return self._network[0]

    def on_fit_start(self) -> None:
        self.network.to(self.device).eval()

    def e2e_loss(self, inputs: Tensor) -> dict[str, Tensor]:
        """Loss terms on one batch of network inputs.

        Returns
        -------
        dict
            ``loss`` (the sum to minimise), ``kl`` (mean nats per input), ``ds`` (the summed
            normalised later-layer MSE, 0 without later layers), ``sparsity``, ``l0`` and
            ``dead_fraction``.
        """
        sae = self.sae
        with torch.no_grad(), _recorded_outputs(self.network, self.later_layers) as clean_later:
            clean = self.forward_fn(self.network, inputs)
            clean_later = {name: value.detach() for name, value in clean_later.items()}
        seen: dict[str, Tensor] = {}

        def replace(rows: Tensor) -> Tensor:
            if rows.shape[1] != sae.d_in:
                raise InvalidInputError(
                    f"layer {self.layer!r} gives rows of width {rows.shape[1]}; the SAE takes "
                    f"{sae.d_in}."
                )
            pre = sae.pre_activations(rows.to(sae.W_enc) * sae.input_scale)
            latents = sae.training_latents(pre)
            seen["pre"], seen["latents"] = pre, latents
            return sae._decode_normalised(latents, None) / sae.output_scale

        with ExitStack() as stack:
            stack.enter_context(replaced_activations(self.network, self.layer, replace))
            patched_later = stack.enter_context(_recorded_outputs(self.network, self.later_layers))
            patched = self.forward_fn(self.network, inputs)
        kl = kl_divergence(clean, patched).mean().to(patched.dtype)
        ds = patched.new_zeros(())
        for name in self.later_layers:
            y = clean_later[name]
            scale = y.pow(2).sum(-1).mean().clamp_min(1e-12)
            ds = ds + (patched_later[name] - y).pow(2).sum(-1).mean() / scale
        pre, latents = seen["pre"], seen["latents"]
        sae._track_firing(latents)
        sparsity = sae.sparsity_loss(pre, latents)
        return {
            "loss": self.kl_coefficient * kl + self.ds_coefficient * ds + sparsity,
            "kl": kl.detach(),
            "ds": ds.detach(),
            "sparsity": sparsity.detach(),
            "l0": (latents > 0).sum(-1).float().mean().detach(),
            "dead_fraction": sae.dead_mask().float().mean(),
        }

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs = batch[0] if isinstance(batch, tuple | list) else batch
        losses = self.e2e_loss(inputs)
        if self._should_log():
            self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False)
        return losses["loss"]


def capture_layer_rows(
    network: nn.Module,
    layer: str,
    inputs: Tensor,
    forward: Forward | None = None,
    batch_size: int = 256,
) -> Tensor:
    """``layer``'s output rows, shape (n_rows, d), over network inputs (batch first), on CPU."""
    stream = HookedActivationStream(network, layer, lambda i: None, forward=forward)
    parts = [
        stream.capture_batch(inputs[i : i + batch_size])[0].cpu()
        for i in range(0, inputs.shape[0], batch_size)
    ]
    return torch.cat(parts)


def train_e2e_sae(
    sae: SparseAutoencoder,
    network: nn.Module,
    layer: str,
    inputs: Tensor,
    steps: int,
    forward: Forward | None = None,
    later_layers: Sequence[str] = (),
    ds_coefficient: float = 0.0,
    kl_coefficient: float = 1.0,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup_steps: int = 0,
    decay_fraction: float = 0.0,
    gradient_clip: float | None = 1.0,
    accelerator: str = "auto",
    seed: int = 0,
) -> E2ETrainingModule:
    """Initialise an SAE from ``layer``'s activations and train it end to end.

    Parameters
    ----------
    sae : SparseAutoencoder
        One of :data:`E2E_ARCHITECTURES`, not a transcoder, of width ``d`` = ``layer``'s last
        axis.
    network : nn.Module
        The frozen network (see :class:`E2ETrainingModule`).
    layer : str
    inputs : Tensor, shape (n, ...)
        Training inputs of the network (e.g. preprocessed images), drawn in random batches.
    steps : int
        Optimiser steps.
    forward, later_layers, ds_coefficient, kl_coefficient
        As :class:`E2ETrainingModule` (``ds_coefficient > 0`` with later layers: ``e2e+ds``).
    batch_size : int
        Network inputs per step.
    lr, warmup_steps, decay_fraction : float, int, float
        Adam learning rate and its schedule (see :class:`SAETrainingModule`).
    gradient_clip : float, optional
        Gradient-norm clip (None: off).
    accelerator : str
        Lightning accelerator (the network is moved to its device).
    seed : int
        Seeds the batch order and Lightning.

    Returns
    -------
    E2ETrainingModule
        ``.sae`` is the trained SAE (eval mode, on the training device).
    """
    if steps < 1 or batch_size < 1:
        raise InvalidInputError(f"steps and batch_size must be >= 1; got {steps}, {batch_size}.")
    if not isinstance(inputs, Tensor) or inputs.ndim < 1 or inputs.shape[0] < 1:
        raise InvalidInputError("inputs must be a non-empty tensor with the batch first.")
    pl.seed_everything(seed, verbose=False)
    network.eval()
    trainable = [p.requires_grad for p in network.parameters()]
    sae.initialize_from_sample(capture_layer_rows(network, layer, inputs[:2048], forward))
    module = E2ETrainingModule(
        sae,
        network,
        layer,
        forward=forward,
        later_layers=later_layers,
        ds_coefficient=ds_coefficient,
        kl_coefficient=kl_coefficient,
        lr=lr,
        warmup_steps=warmup_steps,
        decay_fraction=decay_fraction,
        max_steps=steps,
    )
    batches = RandomRowBatches(inputs, None, min(batch_size, inputs.shape[0]), seed)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=gradient_clip,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        precision="32-true",
    )
    try:
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    finally:  # the network was frozen for training only; give back its flags
        for parameter, flag in zip(network.parameters(), trainable, strict=True):
            parameter.requires_grad_(flag)
    module.sae.eval()
    module.trained_steps = int(trainer.global_step)
    return module


def save_e2e_sae(
    module: E2ETrainingModule, directory: str | Path, metadata: dict | None = None
) -> Path:
    """Save an end-to-end-trained SAE to the one model folder, its objective in the metadata.

    The folder is an ordinary SAE folder (:func:`neurodecode.load_pretrained` returns the SAE of
    its architecture); ``config.json``'s ``metadata["training"]`` holds
    :meth:`E2ETrainingModule.training_metadata`, next to any ``metadata`` given.

    Parameters
    ----------
    module : E2ETrainingModule
        A trained module (as :func:`train_e2e_sae` returns).
    directory : path
        The model folder to write.
    metadata : dict, optional
        Further JSON metadata (e.g. which network and inputs).

    Returns
    -------
    Path
        The folder written.
    """
    if not isinstance(module, E2ETrainingModule):
        raise InvalidInputError(
            f"save_e2e_sae takes an E2ETrainingModule; got {type(module).__name__}."
        )
    return module.sae.save_pretrained(
        directory, metadata={**(metadata or {}), "training": module.training_metadata()}
    )


@torch.no_grad()
def e2e_evaluation(
    sae: SparseAutoencoder,
    network: nn.Module,
    layer: str,
    inputs: Tensor,
    labels: Tensor | None = None,
    forward: Forward | None = None,
    batch_size: int = 256,
) -> dict[str, float]:
    """Downstream KL, task accuracy, FVU at the layer and L0 of an SAE spliced into a network.

    Parameters
    ----------
    sae : SparseAutoencoder
    network : nn.Module
    layer : str
    inputs : Tensor, shape (n, ...)
        Held-out network inputs.
    labels : Tensor, shape (n,), optional
        Class index per input; adds ``accuracy_clean``, ``accuracy_patched`` and
        ``accuracy_drop`` (argmax of the output's last axis).
    forward : callable, optional
        ``forward(network, inputs) -> logits`` (batch, n_classes).

    Returns
    -------
    dict
        ``kl`` (mean nats per input), ``fvu``, ``l0`` and ``dead_fraction`` (latents that
        never fire) at the layer on these inputs' rows, ``n_inputs`` and the accuracies.
    """
    parameter = next(network.parameters(), None)
    sae = sae.to(inputs.device if parameter is None else parameter.device).eval()
    network.eval()
    run = forward or (lambda m, x: m(x))
    device = sae.W_enc.device

    def replace(rows: Tensor) -> Tensor:
        return sae(rows.to(device)).output.to(rows)

    kl_sum, correct_clean, correct_patched = 0.0, 0, 0
    for start in range(0, inputs.shape[0], batch_size):
        batch = inputs[start : start + batch_size]
        clean = run(network, batch)
        with replaced_activations(network, layer, replace):
            patched = run(network, batch)
        kl_sum += float(kl_divergence(clean, patched).sum())
        if labels is not None:
            truth = labels[start : start + batch_size].to(clean.device)
            correct_clean += int((clean.argmax(-1) == truth).sum())
            correct_patched += int((patched.argmax(-1) == truth).sum())
    n = inputs.shape[0]
    rows = capture_layer_rows(network, layer, inputs, forward, batch_size)
    local = evaluate_reconstruction(sae, [rows[i : i + 4096] for i in range(0, len(rows), 4096)])
    result = {
        "kl": kl_sum / n,
        "fvu": local["fvu"],
        "l0": local["l0"],
        "dead_fraction": local["dead_fraction"],
        "n_inputs": int(n),
    }
    if labels is not None:
        result["accuracy_clean"] = correct_clean / n
        result["accuracy_patched"] = correct_patched / n
        result["accuracy_drop"] = (correct_clean - correct_patched) / n
    return result
