"""The one optimisation recipe every LightningModule of the project uses, and a quiet fit helper.

:func:`adamw_onecycle` is MindEye1's recipe: AdamW with decoupled weight decay on weight matrices
and none on biases and norm gains (every parameter with fewer than 2 dimensions), and a per-step
OneCycle learning-rate schedule. Modules differ only in its arguments (peak rate, decay, warm-up
fraction), never in the rule.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from neurodecode.validation import InvalidInputError, check_option

__all__ = ["SCHEDULES", "adamw_onecycle", "fit_lightning", "onecycle_step_scheduler"]

SCHEDULES = ("onecycle", "constant")


def fused_adam_supported(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused Adam/AdamW kernel can step ``params``.

    True when this torch build has the kernel and every parameter is a floating-point tensor on
    the CPU or a CUDA device (fused Adam needs one device type and refuses others, e.g. meta).
    """
    if not params:
        return False
    devices = {p.device.type for p in params}
    if len(devices) != 1 or devices - {"cpu", "cuda"}:
        return False
    if not all(torch.is_floating_point(p) for p in params):
        return False
    try:
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1, device=params[0].device))], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def adamw_onecycle(
    module: L.LightningModule,
    lr: float,
    weight_decay: float,
    pct_start: float | None = None,
    final_div_factor: float = 1000.0,
    schedule: str = "onecycle",
) -> dict[str, Any]:
    """AdamW without decay on biases/norms plus a per-step OneCycle schedule (MindEye1 recipe).

    Parameters
    ----------
    module : LightningModule
        Attached to a trainer (``trainer.estimated_stepping_batches`` sets the schedule length).
        Only parameters with ``requires_grad`` are optimised.
    lr : float
        Peak learning rate.
    weight_decay : float
        Decoupled weight decay on parameters with at least 2 dimensions.
    pct_start : float, optional
        Warm-up fraction; default ``min(0.3, 2 / max_epochs)`` (0.3 when training by steps).
    final_div_factor : float
        The final rate is ``lr / 25 / final_div_factor`` (OneCycle's ``div_factor`` is 25).
    schedule : {"onecycle", "constant"}
        ``"constant"`` keeps ``lr`` throughout (no scheduler).

    Returns
    -------
    dict
        Lightning's ``{"optimizer", "lr_scheduler"}`` configuration (``{"optimizer"}`` only for a
        constant rate).
    """
    check_option("schedule", schedule, SCHEDULES)
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    # the fused kernel is the same AdamW update in one pass over all parameters (~4x faster on the
    # CPU than the default per-tensor loop: benchmarks/README.md)
    fused = fused_adam_supported([p for g in groups for p in g["params"]])
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=fused or None)
    if schedule == "constant":
        return {"optimizer": optimizer}
    total = module.trainer.estimated_stepping_batches
    if not math.isfinite(total) or total < 1:
        raise InvalidInputError(
            "OneCycle needs a finite number of training steps; set trainer max_epochs or max_steps."
        )
    if pct_start is None:
        epochs = module.trainer.max_epochs
        pct_start = min(0.3, 2 / epochs) if epochs and epochs > 0 else 0.3
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=lr,
        total_steps=max(int(total), 2),
        pct_start=pct_start,
        final_div_factor=final_div_factor,
    )
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
    }


def onecycle_step_scheduler(scheduler: Any, metric: Any = None) -> None:
    """Step a scheduler, holding a finished OneCycle at its final learning rate.

    A run resumed with more epochs than its checkpointed OneCycle schedule was built for (the
    schedule's ``total_steps`` comes back with its state) keeps the final rate instead of failing.
    """
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        if scheduler.last_epoch >= scheduler.total_steps:
            return
    if metric is None:
        scheduler.step()
    else:
        scheduler.step(metric)


class StepProgress(L.Callback):
    """A tqdm bar over optimiser steps with the last logged loss, for :func:`fit_lightning`.

    In a terminal it redraws one line; in a log file tqdm writes one line per refresh (at most
    every ``mininterval`` seconds), so a long first-time training shows it is alive there too.
    """

    def __init__(self, description: str, total: int, mininterval: float = 5.0) -> None:
        self.description, self.total, self.mininterval = description, total, mininterval
        self._bar = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=self.total, desc=self.description, mininterval=self.mininterval, unit="step"
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and self._bar.n % 10 == 0:
            self._bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def fit_lightning(
    module: L.LightningModule,
    loader: DataLoader,
    max_steps: int,
    progress: str | None = None,
) -> None:
    """Fit ``module`` for ``max_steps`` with a quiet Lightning trainer (no logs or checkpoints).

    For the small stand-in models trained on the fly; experiments go through ``neurodecode fit``.

    Parameters
    ----------
    progress : str, optional
        Description of a step progress bar (:class:`StepProgress`); no bar when omitted.
    """
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StepProgress(progress, max_steps)] if progress else None,
    )
    trainer.fit(module, loader)
