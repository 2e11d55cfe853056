"""MEG decoder: the Défossez et al. brain module with CLIP + MSE objectives, and time-resolved decoding.

This module owns :class:`MEGBrainModule` (a LightningModule) and its parts, and
:func:`time_resolved_retrieval`, which scores a decoder (this module or ridge on flattened epochs)
on sliding time windows.

Architecture (Défossez et al. 2023, as used by Benchetrit et al. 2024)::

    brain (B, C, T)
      -> SpatialAttention: each of ``spatial_channels`` outputs is a softmax-weighted sum over
         the C input sensors; the weights are a learned function of the sensors' 2-D positions
         (Fourier embedding). In training, the sensors inside a random disk are dropped.
      -> 1x1 conv -> SubjectLayers (one 1x1 linear map per subject, initialised to identity)
      -> n_blocks x ConvBlock: two residual dilated convs (kernel 3, BatchNorm, GELU) and a
         third conv followed by a GLU
      -> 1x1 conv to ``out_channels``, GELU
      -> temporal aggregation: a learned affine map over time (T -> 1)
      -> two heads (LayerNorm, GELU, Linear) to the target dimension D: one for the CLIP loss,
         one for the MSE loss. :meth:`MEGBrainModule.embed` returns the CLIP head's output.

Loss: ``clip_weight * clip_loss(clip_head, target, T) + mse_weight * mse_loss(mse_head, target)``
with a fixed or learned temperature ``T``. Optimiser: AdamW, at a constant rate (paper) or on a
one-cycle schedule stepped per batch.

The model knows nothing of files: its input geometry (``n_channels``, ``n_times``, ``subjects``,
``sensor_xy``, ``target_shape``) comes as a dict, which LightningCLI links from the datamodule's
``geometry``.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurodecode.models.losses import clip_loss, mse_loss
from neurodecode.models.training import adamw_onecycle
from neurodecode.pretrained import PretrainedMixin
from neurodecode.validation import InvalidInputError, check_option

__all__ = [
    "ConvBlock",
    "MEGBrainModule",
    "SpatialAttention",
    "SubjectLayers",
    "embed_trials",
    "fit_brain_module",
    "parse_meg_geometry",
    "retrieval_per_subject",
    "ridge_retrieval",
    "time_resolved_retrieval",
]

#: Learning-rate schedules of :class:`MEGBrainModule`.
LR_SCHEDULES = ("onecycle", "constant")

_GEOMETRY_KEYS = ("n_channels", "n_times", "subjects", "sensor_xy", "target_shape")


def parse_meg_geometry(geometry: dict | None) -> dict:
    """Validate the MEG geometry dict (see :attr:`MEGDataModule.geometry`) and return it.

    Raises
    ------
    InvalidInputError
        If it is missing, lacks keys, or its sizes disagree.
    """
    if geometry is None:
        raise InvalidInputError(
            "MEGBrainModule needs geometry={'n_channels', 'n_times', 'subjects', 'sensor_xy', "
            "'target_shape'}; got None (LightningCLI links it from the datamodule's `geometry`)."
        )
    if not isinstance(geometry, dict):
        raise InvalidInputError(
            f"MEGBrainModule geometry must be a dict; got {type(geometry).__name__}."
        )
    missing = sorted(set(_GEOMETRY_KEYS) - set(geometry))
    if missing:
        raise InvalidInputError(
            f"MEGBrainModule geometry lacks {missing}; expected keys {list(_GEOMETRY_KEYS)}."
        )
    xy = np.asarray(geometry["sensor_xy"], dtype=np.float64)
    if xy.shape != (int(geometry["n_channels"]), 2) or not np.isfinite(xy).all():
        raise InvalidInputError(
            f"MEGBrainModule geometry['sensor_xy'] has shape {xy.shape}; expected "
            f"({geometry['n_channels']}, 2) finite positions."
        )
    if not geometry["subjects"] or int(geometry["n_times"]) < 1:
        raise InvalidInputError(
            "MEGBrainModule geometry needs at least one subject and n_times >= 1; got "
            f"subjects={geometry['subjects']}, n_times={geometry['n_times']}."
        )
    shape = geometry["target_shape"]
    if not isinstance(shape, list | tuple) or len(shape) != 1 or int(shape[0]) < 1:
        raise InvalidInputError(
            f"MEGBrainModule geometry['target_shape']={shape!r}; expected [D] (pooled targets)."
        )
    return geometry


class SpatialAttention(nn.Module):
    """Sensor-position attention: ``out[j] = sum_i softmax_i(a_j(pos_i)) * x[i]``.

    Parameters
    ----------
    sensor_xy : Tensor, shape (C, 2)
        Sensor positions in [0, 1].
    out_channels : int
        Number of virtual channels (Défossez: 270).
    n_freqs : int
        Fourier frequencies per axis; the embedding has ``2 * n_freqs**2`` features.
    dropout_radius : float
        Radius (in position units) of the disk of sensors dropped at random in training
        (0 disables).
    margin : float
        Margin added around [0, 1] so that the lowest frequency does not wrap.
    init_scale : float
        Standard deviation of the initial attention logits at a sensor (about; Défossez: 1). With
        few frequencies the logits vary smoothly over the helmet, and at 1 every virtual channel
        starts as a broad average in which the positive and negative lobes of dipolar fields
        cancel; larger values start with sharper, more local channels.
    """

    def __init__(
        self,
        sensor_xy: Tensor,
        out_channels: int = 270,
        n_freqs: int = 32,
        dropout_radius: float = 0.2,
        margin: float = 0.2,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        xy = torch.as_tensor(sensor_xy, dtype=torch.float32)
        self.register_buffer("sensor_xy", xy)
        k = torch.arange(n_freqs, dtype=torch.float32)
        fx, fy = torch.meshgrid(k, k, indexing="ij")
        phase = 2 * math.pi * (xy[:, :1] * fx.reshape(1, -1) + xy[:, 1:] * fy.reshape(1, -1))
        phase = phase / (1 + 2 * margin)
        self.register_buffer("embedding", torch.cat([phase.cos(), phase.sin()], dim=1))
        n_features = self.embedding.shape[1]
        self.heads = nn.Parameter(
            torch.randn(out_channels, n_features) * (init_scale / math.sqrt(n_features))
        )
        self.dropout_radius = dropout_radius

    def attention_logits(self) -> Tensor:
        """Unnormalised attention scores, shape (out_channels, C)."""
        return self.heads @ self.embedding.T

    def attention_weights(self, drop_mask: Tensor | None = None) -> Tensor:
        """Softmax weights over input sensors, shape (out_channels, C); rows sum to 1."""
        logits = self.attention_logits()
        if drop_mask is not None:
            logits = logits.masked_fill(drop_mask[None, :], float("-inf"))
        return torch.softmax(logits, dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, T) sensors to (B, out_channels, T) virtual channels."""
        drop_mask = None
        if self.training and self.dropout_radius > 0:
            centre = torch.rand(2, device=x.device)
            drop_mask = (self.sensor_xy - centre).norm(dim=1) < self.dropout_radius
            if drop_mask.all():
                drop_mask = None
        weights = self.attention_weights(drop_mask)
        return torch.einsum("oc,bct->bot", weights, x)


class SubjectLayers(nn.Module):
    """One (D x D) 1x1 linear map per subject, initialised to the identity.

    ``forward(x (B, D, T), subject (B,) long) -> (B, D, T)``.
    """

    def __init__(self, channels: int, n_subjects: int) -> None:
        super().__init__()
        eye = torch.eye(channels).expand(n_subjects, channels, channels).clone()
        self.weights = nn.Parameter(eye)

    def forward(self, x: Tensor, subject: Tensor) -> Tensor:
        return torch.einsum("bct,bdc->bdt", x, self.weights[subject])


class ConvBlock(nn.Module):
    """Two dilated convs (residual when shapes match; BatchNorm, GELU) then a conv + GLU.

    Parameters
    ----------
    in_channels, channels : int
        Input and hidden/output channels.
    dilations : (int, int)
        Dilations of the two residual convs.
    kernel_size : int
        Odd kernel size; padding keeps the length.
    dropout : float
        Dropout after each activation.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        dilations: tuple[int, int],
        kernel_size: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, d in enumerate(dilations):
            c_in = in_channels if i == 0 else channels
            self.convs.append(
                nn.Conv1d(c_in, channels, kernel_size, dilation=d, padding=d * (kernel_size // 2))
            )
            self.norms.append(nn.BatchNorm1d(channels))
        self.glu_conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        for conv, norm in zip(self.convs, self.norms):
            y = self.dropout(F.gelu(norm(conv(x))))
            x = x + y if y.shape == x.shape else y
        return F.glu(self.glu_conv(x), dim=1)


class MEGBrainModule(PretrainedMixin, pl.LightningModule):
    """Défossez/Benchetrit brain module: MEG epochs -> image embeddings.

    Parameters
    ----------
    geometry : dict
        ``n_channels``, ``n_times``, ``subjects`` (list), ``sensor_xy`` ((C, 2) in [0, 1]),
        ``target_shape`` ([D]); from :attr:`MEGDataModule.geometry`.
    hidden : int
        Channels of the conv blocks (paper: 320).
    n_blocks : int
        Number of :class:`ConvBlock` (paper: 5).
    spatial_channels : int
        Outputs of the spatial attention (paper: 270).
    n_freqs : int
        Fourier frequencies per axis of the position embedding (paper: 32).
    spatial_dropout : float
        Radius of the dropped sensor disk (paper: 0.2).
    spatial_init_scale : float
        ``init_scale`` of :class:`SpatialAttention` (paper: 1). With ``n_freqs=8``, 4 made the
        simulated world train about twice as fast (``experiments/sim_meg.yaml``).
    out_channels : int
        Channels before temporal aggregation (paper: 2048).
    dropout : float
        Dropout in the conv blocks.
    lr, weight_decay : float
        AdamW settings (paper: 3e-4, 0); ``lr`` is the peak of the ``"onecycle"`` schedule.
    lr_schedule : {"constant", "onecycle"}
        ``"constant"`` (paper): AdamW at ``lr``. ``"onecycle"``:
        :class:`torch.optim.lr_scheduler.OneCycleLR` stepped every batch over the trainer's
        ``estimated_stepping_batches`` (warm-up from ``lr / 25`` for ``warmup_fraction`` of the
        steps, cosine annealing to ~0, momentum cycling).
    warmup_fraction : float
        Fraction of the steps spent warming up (``"onecycle"`` only).
    clip_weight, mse_weight : float
        Loss weights of the CLIP and MSE objectives.
    temperature : float
        CLIP softmax temperature (the initial one if ``learn_temperature``); low-dimensional
        targets need a higher one than CLIP's (``experiments/sim_meg.yaml`` uses 0.2).
    learn_temperature : bool
        Learn the temperature (as ``log_temperature``, clamped to >= 1e-3), as CLIP does
        (Défossez et al. normalise only the image candidates, so the brain output's norm plays
        this role). It did not beat a fixed 0.2 on the simulated world.
    n_way : int
        Retrieval n-way of the test metrics (capped at the number of test images per subject).
    """

    def __init__(
        self,
        geometry: dict | None = None,
        hidden: int = 320,
        n_blocks: int = 5,
        spatial_channels: int = 270,
        n_freqs: int = 32,
        spatial_dropout: float = 0.2,
        spatial_init_scale: float = 1.0,
        out_channels: int = 2048,
        dropout: float = 0.0,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
        warmup_fraction: float = 0.1,
        clip_weight: float = 1.0,
        mse_weight: float = 1.0,
        temperature: float = 0.05,
        learn_temperature: bool = False,
        n_way: int = 50,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        geometry = parse_meg_geometry(geometry)
        check_option("MEGBrainModule lr_schedule", lr_schedule, LR_SCHEDULES)
        if not 0 < warmup_fraction < 1:
            raise InvalidInputError(
                f"MEGBrainModule warmup_fraction={warmup_fraction}; expected 0 < value < 1."
            )
        n_times = int(geometry["n_times"])
        target_dim = int(geometry["target_shape"][0])
        self.subjects = list(geometry["subjects"])
        self.spatial = SpatialAttention(
            torch.tensor(geometry["sensor_xy"], dtype=torch.float32),
            spatial_channels,
            n_freqs,
            spatial_dropout,
            init_scale=spatial_init_scale,
        )
        self.spatial_conv = nn.Conv1d(spatial_channels, spatial_channels, 1)
        self.subject_layers = SubjectLayers(spatial_channels, len(self.subjects))
        blocks = []
        for k in range(n_blocks):
            dilations = (2 ** ((2 * k) % 5), 2 ** ((2 * k + 1) % 5))
            c_in = spatial_channels if k == 0 else hidden
            blocks.append(ConvBlock(c_in, hidden, dilations, 3, dropout))
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.Conv1d(hidden, out_channels, 1), nn.GELU())
        self.temporal = nn.Linear(n_times, 1)
        self.clip_head = nn.Sequential(
            nn.LayerNorm(out_channels), nn.GELU(), nn.Linear(out_channels, target_dim)
        )
        self.mse_head = nn.Sequential(
            nn.LayerNorm(out_channels), nn.GELU(), nn.Linear(out_channels, target_dim)
        )
        if temperature <= 0:
            raise InvalidInputError(f"MEGBrainModule temperature={temperature}; expected > 0.")
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(temperature)), requires_grad=learn_temperature
        )
        self._test_outputs: list[dict[str, Tensor]] = []

    # ------------------------------------------------------------------ forward

    def features(self, brain: Tensor, subject: Tensor) -> Tensor:
        """Shared trunk: (B, C, T) -> aggregated features (B, out_channels)."""
        if brain.ndim != 3 or brain.shape[1] != self.spatial.sensor_xy.shape[0]:
            raise InvalidInputError(
                f"brain has shape {tuple(brain.shape)}; expected (B, "
                f"{self.spatial.sensor_xy.shape[0]}, {self.temporal.in_features})."
            )
        if brain.shape[2] != self.temporal.in_features:
            raise InvalidInputError(
                f"brain has {brain.shape[2]} time samples; the model was built for "
                f"{self.temporal.in_features} (geometry['n_times'])."
            )
        x = self.spatial_conv(self.spatial(brain))
        x = self.subject_layers(x, subject.long())
        x = self.final(self.blocks(x))
        return self.temporal(x).squeeze(-1)

    def forward(self, brain: Tensor, subject: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(clip_embedding, mse_prediction)``, each (B, D)."""
        h = self.features(brain, subject)
        return self.clip_head(h), self.mse_head(h)

    def embed(self, brain: Tensor, subject: Tensor) -> Tensor:
        """Brain embedding used for retrieval (the CLIP head), shape (B, D)."""
        return self.forward(brain, subject)[0]

    def clip_temperature(self) -> Tensor:
        """The CLIP softmax temperature in use (learned or fixed), shape ()."""
        return self.log_temperature.exp().clamp(min=1e-3)

    def _loss(self, batch: dict[str, Any], stage: str) -> Tensor:
        clip_pred, mse_pred = self(batch["brain"], batch["subject"])
        target = batch["target"].flatten(1)
        loss = torch.zeros((), device=clip_pred.device)
        if self.hparams.clip_weight > 0 and len(target) > 1:
            loss = loss + self.hparams.clip_weight * clip_loss(
                clip_pred, target, self.clip_temperature()
            )
        if self.hparams.mse_weight > 0:
            loss = loss + self.hparams.mse_weight * mse_loss(mse_pred, target)
        self.log(f"{stage}_loss", loss, prog_bar=stage != "test", batch_size=len(target))
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._loss(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._loss(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss(batch, "test")
        self._test_outputs.append(
            {
                "embedding": self.embed(batch["brain"], batch["subject"]).detach().cpu(),
                "target": batch["target"].detach().cpu(),
                "subject": batch["subject"].detach().cpu(),
            }
        )

    def on_test_epoch_end(self) -> None:
        from neurodecode.evaluate.retrieval import retrieval_metrics

        if not self._test_outputs:
            return
        emb = torch.cat([o["embedding"] for o in self._test_outputs]).numpy()
        tgt = torch.cat([o["target"] for o in self._test_outputs]).numpy()
        subj = torch.cat([o["subject"] for o in self._test_outputs]).numpy()
        self._test_outputs.clear()
        scores = []
        for s in np.unique(subj):
            m = subj == s
            n_way = min(self.hparams.n_way, int(m.sum()))
            if n_way >= 2:
                scores.append(retrieval_metrics(emb[m], tgt[m], n_way=n_way, n_draws=30))
        for key in ("brain_to_image_top1", "image_to_brain_top1", "chance_top1"):
            if scores:
                self.log(f"test_{key}", float(np.mean([s[key] for s in scores])))

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self.embed(batch["brain"], batch["subject"])

    def configure_optimizers(self):
        return adamw_onecycle(
            self,
            self.hparams.lr,
            self.hparams.weight_decay,
            pct_start=self.hparams.warmup_fraction,
            final_div_factor=1e4,
            schedule="constant" if self.hparams.lr_schedule == "constant" else "onecycle",
        )


# ----------------------------------------------------------------------------- array helpers


class _ArrayDataset(torch.utils.data.Dataset):
    def __init__(self, brain: np.ndarray, target: np.ndarray, subject: np.ndarray) -> None:
        self.brain = torch.as_tensor(np.ascontiguousarray(brain), dtype=torch.float32)
        self.target = torch.as_tensor(np.ascontiguousarray(target), dtype=torch.float32)
        self.subject = torch.as_tensor(subject, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.brain)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"brain": self.brain[i], "target": self.target[i], "subject": self.subject[i]}


def fit_brain_module(
    model: MEGBrainModule,
    brain: np.ndarray,
    target: np.ndarray,
    subject: np.ndarray,
    max_epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
) -> MEGBrainModule:
    """Train ``model`` on arrays with a quiet Lightning Trainer (CPU or the default device).

    Parameters
    ----------
    brain : ndarray, shape (n, C, T)
    target : ndarray, shape (n, D)
    subject : ndarray of int, shape (n,)
        Indices into ``model.subjects``.
    """
    pl.seed_everything(seed, workers=False, verbose=False)
    loader = torch.utils.data.DataLoader(
        _ArrayDataset(brain, target, subject),
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(brain) > batch_size,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, loader)
    return model


@torch.no_grad()
def embed_trials(
    model: MEGBrainModule, brain: np.ndarray, subject: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Brain embeddings of ``brain`` (n, C, T) for subjects ``subject`` (n,); (n, D) float32."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(brain), batch_size):
        x = torch.as_tensor(brain[start : start + batch_size], dtype=torch.float32, device=device)
        s = torch.as_tensor(subject[start : start + batch_size], dtype=torch.long, device=device)
        out.append(model.embed(x, s).cpu())
    return torch.cat(out).numpy()


def retrieval_per_subject(
    embedding: np.ndarray,
    target: np.ndarray,
    subject: np.ndarray,
    n_way: int,
    n_draws: int,
    seed: int,
) -> dict[str, float]:
    from neurodecode.evaluate.retrieval import retrieval_metrics

    results = []
    for s in np.unique(subject):
        m = subject == s
        results.append(
            retrieval_metrics(
                embedding[m], target[m], n_way=min(n_way, int(m.sum())), n_draws=n_draws, seed=seed
            )
        )
    keys = ("brain_to_image_top1", "image_to_brain_top1", "brain_to_image_top5", "chance_top1")
    return {k: float(np.mean([r[k] for r in results])) for k in keys}


def ridge_retrieval(
    train_brain: np.ndarray,
    train_target: np.ndarray,
    train_subject: np.ndarray,
    test_brain: np.ndarray,
    test_target: np.ndarray,
    test_subject: np.ndarray,
    n_way: int = 50,
    n_draws: int = 30,
    alphas: tuple[float, ...] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Ridge baseline on flattened epochs, one model per subject; retrieval averaged over subjects.

    Parameters
    ----------
    train_brain, test_brain : ndarray, shape (n, C, T)
    train_target, test_target : ndarray, shape (n, D)
    train_subject, test_subject : ndarray, shape (n,)

    Returns
    -------
    dict
        ``brain_to_image_top1``, ``image_to_brain_top1``, ``brain_to_image_top5``,
        ``chance_top1``.
    """
    from neurodecode.models.ridge import RidgeRegression

    kwargs = {} if alphas is None else {"alphas": alphas}
    pred = np.zeros(test_target.shape, dtype=np.float32)
    for s in np.unique(test_subject):
        ridge = RidgeRegression(standardize=True, **kwargs)
        ridge.fit(
            train_brain[train_subject == s].reshape((train_subject == s).sum(), -1),
            train_target[train_subject == s],
        )
        m = test_subject == s
        pred[m] = ridge.predict(test_brain[m].reshape(m.sum(), -1))
    return retrieval_per_subject(pred, test_target, test_subject, n_way, n_draws, seed)


def time_resolved_retrieval(
    train_brain: np.ndarray,
    train_target: np.ndarray,
    train_subject: np.ndarray,
    test_brain: np.ndarray,
    test_target: np.ndarray,
    test_subject: np.ndarray,
    times: np.ndarray,
    geometry: dict | None = None,
    decoders: tuple[str, ...] = ("ridge", "model"),
    window_s: float = 0.2,
    step_s: float = 0.1,
    n_way: int = 50,
    n_draws: int = 30,
    model_kwargs: dict | None = None,
    max_epochs: int = 15,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Retrieval accuracy of decoders trained and tested on sliding time windows.

    For every window ``[start, start + window_s)`` (starts every ``step_s`` from ``times[0]``), a
    decoder is trained on the training trials cut to that window and scored by n-way retrieval of
    the (repeat-averaged) test trials, per subject, averaged over subjects.

    Parameters
    ----------
    train_brain, test_brain : ndarray, shape (n, C, T)
    train_target, test_target : ndarray, shape (n, D)
    train_subject, test_subject : ndarray of int, shape (n,)
        Subject indices (into ``geometry["subjects"]``).
    times : ndarray, shape (T,)
        Sample times (s).
    geometry : dict, optional
        The full-epoch geometry (``n_times`` is replaced per window); needed for ``"model"``.
    decoders : tuple of str
        ``"ridge"`` (flattened window, per subject) and/or ``"model"`` (:class:`MEGBrainModule`).
    window_s, step_s : float
        Window length and step (s).
    model_kwargs : dict, optional
        Init arguments of :class:`MEGBrainModule` besides geometry.

    Returns
    -------
    dict
        ``window_start_s``, ``window_centre_s`` (lists, s), ``chance_top1`` and, per decoder, a
        dict of lists ``brain_to_image_top1``, ``image_to_brain_top1``.
    """
    times = np.asarray(times)
    n_win = max(1, round(window_s * (1 / np.median(np.diff(times)))))
    starts = []
    t = times[0]
    while True:
        first = int(np.searchsorted(times, t - 1e-9))
        if first + n_win > len(times):
            break
        starts.append(first)
        t += step_s
    result: dict[str, Any] = {
        "window_start_s": [float(times[s]) for s in starts],
        "window_centre_s": [
            float(times[s] + (n_win - 1) / 2 * np.diff(times).mean()) for s in starts
        ],
    }
    for name in decoders:
        result[name] = {"brain_to_image_top1": [], "image_to_brain_top1": []}
    for s in starts:
        cut = slice(s, s + n_win)
        tr, te = train_brain[:, :, cut], test_brain[:, :, cut]
        for name in decoders:
            if name == "ridge":
                scores = ridge_retrieval(
                    tr,
                    train_target,
                    train_subject,
                    te,
                    test_target,
                    test_subject,
                    n_way=n_way,
                    n_draws=n_draws,
                    seed=seed,
                )
            elif name == "model":
                if geometry is None:
                    raise InvalidInputError("time_resolved_retrieval needs geometry for 'model'.")
                model = MEGBrainModule({**geometry, "n_times": n_win}, **(model_kwargs or {}))
                fit_brain_module(
                    model, tr, train_target, train_subject, max_epochs, batch_size, seed
                )
                emb = embed_trials(model, te, test_subject)
                scores = retrieval_per_subject(emb, test_target, test_subject, n_way, n_draws, seed)
            else:
                raise InvalidInputError(
                    f"decoders contains {name!r}; expected 'ridge' and/or 'model'."
                )
            for key in ("brain_to_image_top1", "image_to_brain_top1"):
                result[name][key].append(scores[key])
            result["chance_top1"] = scores["chance_top1"]
    return result
