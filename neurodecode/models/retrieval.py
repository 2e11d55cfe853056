"""MindEye-style contrastive retrieval head for fMRI: brain voxels -> CLIP image embeddings.

Owns :class:`RetrievalModule` (LightningModule), its building blocks (:class:`ResidualMLP`,
:class:`TokenProjector`) and the optimiser recipe shared by the fMRI models
(:func:`neurodecode.models.training.adamw_onecycle`).

Architecture (MindEye1, Scotti et al. 2023; shared latent from MindEye2, Scotti et al. 2024)
-------------------------------------------------------------------------------------------
- Subject adapter ``Linear(V_s, h)`` (one per subject) -> LayerNorm -> GELU -> Dropout(0.5);
  ``n_blocks`` residual blocks ``h + Dropout(GELU(LN(Linear(h, h))))`` with dropout 0.15;
  ``Linear(h, prod(target_shape))``. This is the *backbone*; its output conditions the diffusion
  prior. With one subject this is exactly MindEye1's MLP (its first layer is the adapter).
  ``shared_latent=True`` allows several subjects: each has its own linear adapter into the shared
  ``h``-dimensional latent and everything after it is shared (MindEye2's design, with MindEye1's
  residual MLP in place of the MLP-mixer); :meth:`RetrievalModule.add_subject` adds a new subject.
- New subjects (MindEye2's fine-tuning of a new subject): :func:`fit_new_subject` (Python) and
  the :class:`NewSubjectFromPretrained` callback (LightningCLI,
  ``experiments/sim_new_subject.yaml``) fit a new adapter into a trained model's latent with
  the rest frozen; :meth:`RetrievalModule.init_adapter_by_ridge` gives it a closed-form start.
- Projector, applied per token: LN, GELU, Linear(D, P), LN, GELU, Linear(P, P), LN, GELU,
  Linear(P, D). Its output is the *retrieval embedding* scored by the contrastive losses and
  returned by :meth:`RetrievalModule.embed`.
- Losses (:mod:`neurodecode.models.losses`): BiMixCo for the first ``mixco_fraction`` of epochs
  (temperature 0.006), then SoftCLIP with τ cosine-annealed 0.004 -> 0.0075 over the remaining
  epochs; plus ``prior_weight`` x the diffusion prior's loss when a prior is configured
  (MindEye1: 30). During BiMixCo epochs the prior sees only the rows that were not mixed (their
  targets are the true embeddings); MindEye1 feeds it the mixed rows too.
- AdamW (weight decay 0.01, none on biases and norm weights, i.e. parameters with < 2 dims),
  OneCycle learning rate (max 3e-4, ``pct_start = 2 / epochs`` as MindEye1, at most 0.3) over
  ``trainer.estimated_stepping_batches``.

Batches are dicts with ``brain`` (B, V_s), ``subject`` (B,) (all rows one subject), ``target``
(B, *target_shape) and ``stimulus_id`` (B,).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurodecode.models.base import check_subject_name, parse_fmri_geometry
from neurodecode.models.losses import (
    clip_loss,
    cosine_temperature,
    mixco_loss,
    mixco_voxels,
    normalize_flat,
    soft_clip_loss,
)
from neurodecode.models.prior import DiffusionPrior
from neurodecode.models.training import adamw_onecycle, onecycle_step_scheduler
from neurodecode.pretrained import PretrainedMixin
from neurodecode.validation import InvalidInputError, check_option

__all__ = [
    "NewSubjectFromPretrained",
    "ResidualMLP",
    "RetrievalModule",
    "TokenProjector",
    "fit_new_subject",
]


class ResidualMLP(nn.Module):
    """MindEye1 residual MLP from a ``hidden_dim`` latent to ``out_dim`` outputs.

    ``LN -> GELU -> Dropout(dropout_in)`` on the (adapter) input, then ``n_blocks`` residual
    blocks ``h + Dropout(GELU(LN(Linear(h))))``, then ``Linear(hidden_dim, out_dim)``.
    """

    def __init__(
        self,
        hidden_dim: int,
        out_dim: int,
        n_blocks: int = 4,
        dropout_in: float = 0.5,
        dropout_blocks: float = 0.15,
    ):
        super().__init__()
        self.input = nn.Sequential(nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout_in))
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden_dim, hidden_dim),
                nn.LayerNorm(hidden_dim),
                nn.GELU(),
                nn.Dropout(dropout_blocks),
            )
            for _ in range(n_blocks)
        )
        self.head = nn.Linear(hidden_dim, out_dim)

    def forward(self, latent: Tensor) -> Tensor:
        """Map (B, hidden_dim) adapter outputs to (B, out_dim)."""
        h = self.input(latent)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


class TokenProjector(nn.Module):
    """MindEye1 projector applied to each token: (B, T, D) -> (B, T, D)."""

    def __init__(self, embed_dim: int, projector_dim: int = 2048):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(embed_dim),
            nn.GELU(),
            nn.Linear(embed_dim, projector_dim),
            nn.LayerNorm(projector_dim),
            nn.GELU(),
            nn.Linear(projector_dim, projector_dim),
            nn.LayerNorm(projector_dim),
            nn.GELU(),
            nn.Linear(projector_dim, embed_dim),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        """Project each token of ``tokens`` (..., D)."""
        return self.net(tokens)


class RetrievalModule(PretrainedMixin, L.LightningModule):
    """Contrastive fMRI -> CLIP decoder (MindEye1; MindEye2-style shared latent optional).

    Parameters
    ----------
    geometry : dict
        ``{"n_voxels": {subject: V_s}, "target_shape": [D] or [T, D]}`` (from the datamodule).
    hidden_dim : int
        Width ``h`` of the shared latent and residual blocks (MindEye1: 4096).
    n_blocks : int
        Residual blocks (MindEye1: 4).
    dropout_in, dropout_blocks : float
        Dropout after the adapter and in each block (MindEye1: 0.5, 0.15).
    projector_dim : int
        Projector width (MindEye1: 2048).
    shared_latent : bool
        Allow several subjects with per-subject adapters into one latent (MindEye2). When False
        the geometry must hold exactly one subject.
    lr, weight_decay : float
        AdamW peak learning rate (OneCycle) and weight decay.
    max_epochs_hint : int
        Epoch count for the loss schedule when the trainer has no ``max_epochs``.
    mixco_fraction : float
        Fraction of epochs trained with BiMixCo before SoftCLIP (MindEye1: 1/3).
    mixco_beta : float
        Beta(β, β) parameter of the mixing weight (MindEye1: 0.15).
    mixco_temperature : float
        BiMixCo temperature (MindEye1: 0.006); also the InfoNCE temperature of ``val/clip_loss``.
    soft_tau : (float, float)
        SoftCLIP temperature at the first and last SoftCLIP epoch (MindEye1: 0.004, 0.0075).
    prior : dict, optional
        Keyword arguments of :class:`~neurodecode.models.prior.DiffusionPrior` (without
        ``embed_shape``); ``None`` trains no prior, ``{}`` one with default sizes.
    prior_weight : float
        Weight of the prior loss (MindEye1: 30).
    test_n_way, test_n_draws : int
        Retrieval protocol of :meth:`on_test_epoch_end` (MindEye: 300-way, 30 draws; N-way when
        fewer than 300 test items).
    prior_inference_steps : int
        Denoising steps when sampling the prior in tests and :meth:`embed`.
    prior_guidance_scale : float
        Classifier-free guidance scale for those samples.
    """

    def __init__(
        self,
        geometry: dict | None = None,
        hidden_dim: int = 4096,
        n_blocks: int = 4,
        dropout_in: float = 0.5,
        dropout_blocks: float = 0.15,
        projector_dim: int = 2048,
        shared_latent: bool = False,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        max_epochs_hint: int = 240,
        mixco_fraction: float = 1 / 3,
        mixco_beta: float = 0.15,
        mixco_temperature: float = 0.006,
        soft_tau: Sequence[float] = (0.004, 0.0075),
        prior: dict | None = None,
        prior_weight: float = 30.0,
        test_n_way: int = 300,
        test_n_draws: int = 30,
        prior_inference_steps: int = 20,
        prior_guidance_scale: float = 1.0,
    ):
        super().__init__()
        geo = parse_fmri_geometry(geometry, "RetrievalModule")
        if not shared_latent and len(geo.n_voxels) != 1:
            raise InvalidInputError(
                f"RetrievalModule with shared_latent=False takes one subject; geometry has "
                f"{geo.subjects}. Set shared_latent=True for a multi-subject model."
            )
        if not 0.0 <= mixco_fraction <= 1.0:
            raise InvalidInputError(f"mixco_fraction={mixco_fraction}; expected 0 <= f <= 1.")
        if len(soft_tau) != 2 or min(soft_tau) <= 0:
            raise InvalidInputError(f"soft_tau={soft_tau!r}; expected two positive temperatures.")
        self.save_hyperparameters()
        self.hparams["geometry"] = geo.to_dict()
        self.hparams["soft_tau"] = [float(t) for t in soft_tau]
        self._geo = geo
        self.adapters = nn.ModuleDict(
            {name: nn.Linear(n, hidden_dim) for name, n in geo.n_voxels.items()}
        )
        self.backbone = ResidualMLP(
            hidden_dim, geo.target_dim, n_blocks, dropout_in, dropout_blocks
        )
        self.projector = TokenProjector(geo.token_shape[1], projector_dim)
        self.prior = DiffusionPrior(geo.target_shape, **prior) if prior is not None else None
        self._test_outputs: dict[int, dict[str, list[Tensor]]] = {}

    # ------------------------------------------------------------------ geometry and subjects
    @property
    def subjects(self) -> list[str]:
        """Subject names; position = the subject index used in batches."""
        return self._geo.subjects

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one embedding, ``(D,)`` or ``(T, D)``."""
        return self._geo.target_shape

    def add_subject(self, name: str, n_voxels: int, freeze_shared: bool = False) -> int:
        """Add a subject with its own linear adapter into the shared latent (MindEye2).

        A model trained on one subject (``shared_latent=False``) has the same network with one
        adapter; it becomes a shared-latent model.

        Parameters
        ----------
        name : str
            New subject's name (e.g. ``"subj03"``).
        n_voxels : int
            Its voxel count.
        freeze_shared : bool
            Freeze every other parameter (other adapters, backbone, projector, prior) so that
            training fits only the new adapter; otherwise everything is fine-tuned.

        Returns
        -------
        int
            The new subject's index (for ``batch["subject"]``).
        """
        check_subject_name(name)
        if name in self._geo.n_voxels:
            raise InvalidInputError(f"subject {name!r} is already in the model ({self.subjects}).")
        if isinstance(n_voxels, bool) or not isinstance(n_voxels, int | np.integer) or n_voxels < 1:
            raise InvalidInputError(f"n_voxels={n_voxels!r}; expected a positive int.")
        reference = next(self.parameters())
        # a single-subject model is the same network with one adapter: it becomes shared-latent
        self.hparams["shared_latent"] = True
        if freeze_shared:
            self.requires_grad_(False)
        self.adapters[name] = nn.Linear(int(n_voxels), self.hparams.hidden_dim).to(reference)
        self._geo.n_voxels[name] = int(n_voxels)
        self.hparams["geometry"] = self._geo.to_dict()
        return len(self._geo.n_voxels) - 1

    @torch.no_grad()
    def init_adapter_by_ridge(
        self,
        name: str,
        brain: Tensor | np.ndarray,
        target: Tensor | np.ndarray,
        reference_subject: str,
        reference_brain: Tensor | np.ndarray,
        reference_target: Tensor | np.ndarray,
        alphas: Sequence[float] | None = None,
    ) -> dict[str, float]:
        """Closed-form start for a new subject's adapter: ridge to the target, then to the latent.

        Subjects see different training images, so the new subject's latent is not observed.
        Two ridge fits (:class:`~neurodecode.models.ridge.RidgeRegression`, cross-validated
        alpha per output) stand in for it: ``R`` from the new subject's voxels to the target
        embedding, and ``M`` from a reference subject's target embeddings to the latent that
        its trained adapter gives its own trials. The adapter becomes ``M ∘ R`` (rank at most
        ``prod(target_shape)``), so before any gradient step the new subject's trials enter the
        backbone where the reference subject's trials of similar images would.

        It decodes without any gradient step; :func:`fit_new_subject` starts from a random
        adapter instead, which ended higher in the new-subject benchmark
        (``benchmarks/README.md``). Use this when no training is possible.

        Parameters
        ----------
        name : str
            Subject whose adapter is set (already added with :meth:`add_subject`).
        brain : Tensor or ndarray, shape (n, V_name)
            Its training trials.
        target : Tensor or ndarray, shape (n, *target_shape)
            Their target embeddings.
        reference_subject : str
            A subject the model was trained on.
        reference_brain : Tensor or ndarray, shape (m, V_reference)
            Trials of the reference subject (e.g. its training trials).
        reference_target : Tensor or ndarray, shape (m, *target_shape)
            Their target embeddings.
        alphas : sequence of float, optional
            Ridge grid (default: RidgeRegression's).

        Returns
        -------
        dict
            Mean cross-validated R² of both fits: ``brain_to_target_r2``, ``target_to_latent_r2``.
        """
        from neurodecode.models.ridge import RidgeRegression

        name = self._subject_name(name)
        reference_subject = self._subject_name(reference_subject)
        if name == reference_subject:
            raise InvalidInputError("reference_subject must differ from the subject being set.")
        adapter, reference = self.adapters[name], self.adapters[reference_subject]
        param = adapter.weight
        kwargs = {} if alphas is None else {"alphas": alphas}

        def as_array(value: Tensor | np.ndarray, label: str, n_cols: int) -> np.ndarray:
            array = value.detach().cpu().numpy() if isinstance(value, Tensor) else value
            array = np.asarray(array, dtype=np.float32).reshape(len(value), -1)
            if array.shape[1] != n_cols:
                raise InvalidInputError(
                    f"{label} has {array.shape[1]} columns per row; expected {n_cols}."
                )
            return array

        dim = self._geo.target_dim
        x = as_array(brain, "brain", self._geo.n_voxels[name])
        y = as_array(target, "target", dim)
        x_ref = as_array(reference_brain, "reference_brain", self._geo.n_voxels[reference_subject])
        y_ref = as_array(reference_target, "reference_target", dim)
        if len(x) != len(y) or len(x_ref) != len(y_ref):
            raise InvalidInputError("brain/target (and reference ones) need the same row count.")
        latent_ref = reference(torch.as_tensor(x_ref, device=param.device, dtype=param.dtype))
        to_target = RidgeRegression(**kwargs).fit(x, y)
        to_latent = RidgeRegression(**kwargs).fit(y_ref, latent_ref.cpu().numpy())
        m_w = torch.as_tensor(to_latent.coef_, dtype=param.dtype, device=param.device)
        m_b = torch.as_tensor(to_latent.intercept_, dtype=param.dtype, device=param.device)
        r_w = torch.as_tensor(to_target.coef_, dtype=param.dtype, device=param.device)
        r_b = torch.as_tensor(to_target.intercept_, dtype=param.dtype, device=param.device)
        adapter.weight.copy_(m_w @ r_w)
        adapter.bias.copy_(m_w @ r_b + m_b)
        return {
            "brain_to_target_r2": float(np.mean(to_target.cv_score_)),
            "target_to_latent_r2": float(np.mean(to_latent.cv_score_)),
        }

    def _subject_name(self, subject: int | str | Tensor) -> str:
        if isinstance(subject, str):
            if subject not in self._geo.n_voxels:
                raise InvalidInputError(
                    f"subject {subject!r} is unknown; expected one of {self.subjects}."
                )
            return subject
        if isinstance(subject, Tensor):
            values = subject.reshape(-1).unique()
            if values.numel() != 1:
                raise InvalidInputError(
                    f"batch mixes subjects {values.tolist()}; expected all rows of a batch to "
                    "belong to one subject."
                )
            subject = int(values.item())
        index = int(subject)
        if not 0 <= index < len(self.subjects):
            raise InvalidInputError(
                f"subject index {index} is out of range; the model knows {self.subjects}."
            )
        return self.subjects[index]

    # ------------------------------------------------------------------ forward
    def forward(self, brain: Tensor, subject: int | str | Tensor) -> tuple[Tensor, Tensor]:
        """Backbone output and retrieval embedding.

        Parameters
        ----------
        brain : Tensor, shape (B, V_s)
            Voxels of one subject.
        subject : int, str or Tensor (B,)
            Subject index or name.

        Returns
        -------
        backbone : Tensor, shape (B, *target_shape)
            Backbone output (the prior's condition).
        embedding : Tensor, shape (B, *target_shape)
            Projected retrieval embedding.
        """
        name = self._subject_name(subject)
        expected = self._geo.n_voxels[name]
        if brain.ndim != 2 or brain.shape[1] != expected:
            raise InvalidInputError(
                f"brain has shape {tuple(brain.shape)}; expected (B, {expected}) for subject {name!r}."
            )
        flat = self.backbone(self.adapters[name](brain))
        n_tokens, dim = self._geo.token_shape
        tokens = flat.reshape(brain.shape[0], n_tokens, dim)
        embedding = self.projector(tokens)
        return flat.reshape(-1, *self.target_shape), embedding.reshape(-1, *self.target_shape)

    @torch.no_grad()
    def embed(
        self,
        brain: Tensor | np.ndarray,
        subject: int | str | Tensor,
        output: str = "retrieval",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Decode new trials (eval mode, no gradients; the training mode is restored after).

        Parameters
        ----------
        brain : Tensor or ndarray, shape (B, V_s)
            Voxels of one subject, preprocessed as in training.
        subject : int, str or Tensor
            Subject index or name.
        output : {"retrieval", "backbone", "prior"}
            The projected retrieval embedding (for retrieval), the backbone output (the
            prior's condition), or image embeddings sampled from the diffusion prior.
        generator : torch.Generator, optional
            Random source for ``output="prior"``.

        Returns
        -------
        Tensor, shape (B, *target_shape)
        """
        check_option("output", output, ("retrieval", "backbone", "prior"))
        if output == "prior" and self.prior is None:
            raise InvalidInputError(
                "output='prior' needs a model trained with a prior (prior=...)."
            )
        reference = next(self.parameters())
        brain = torch.as_tensor(brain, dtype=reference.dtype, device=reference.device)
        was_training = self.training
        self.eval()
        try:
            backbone, embedding = self(brain, subject)
            if output == "retrieval":
                return embedding
            if output == "backbone":
                return backbone
            return self.prior.sample(
                backbone,
                num_inference_steps=self.hparams.prior_inference_steps,
                guidance_scale=self.hparams.prior_guidance_scale,
                generator=generator,
            )
        finally:
            self.train(was_training)

    # ------------------------------------------------------------------ schedule
    def _total_epochs(self) -> int:
        trainer = self._trainer
        epochs = trainer.max_epochs if trainer is not None else None
        if epochs is None or epochs < 1:
            epochs = self.hparams.max_epochs_hint
        return int(epochs)

    def loss_phase(self, epoch: int | None = None) -> tuple[str, float]:
        """Loss used at ``epoch`` (default: the current one) and its temperature.

        Returns
        -------
        (str, float)
            ``("mixco", mixco_temperature)`` during the first ``mixco_fraction`` of epochs,
            else ``("softclip", τ)`` on the cosine schedule over the remaining epochs.
        """
        epoch = self.current_epoch if epoch is None else epoch
        total = self._total_epochs()
        n_mix = int(self.hparams.mixco_fraction * total)
        if epoch < n_mix:
            return "mixco", float(self.hparams.mixco_temperature)
        start, end = self.hparams.soft_tau
        return "softclip", cosine_temperature(epoch - n_mix, total - n_mix, start, end)

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        brain, target = batch["brain"], batch["target"]
        phase, temperature = self.loss_phase()
        prior_rows = None
        if phase == "mixco":
            mixed = mixco_voxels(brain, beta=self.hparams.mixco_beta)
            backbone, embedding = self(mixed.voxels, batch["subject"])
            contrastive = mixco_loss(embedding, target, mixed.perm, mixed.lam, temperature)
            prior_rows = ~mixed.selected
        else:
            backbone, embedding = self(brain, batch["subject"])
            contrastive = soft_clip_loss(embedding, target, temperature)
        loss = contrastive
        bs = brain.shape[0]
        if self.prior is not None:
            if prior_rows is not None and bool(prior_rows.any()):
                prior_loss = self.prior.loss(backbone[prior_rows], target[prior_rows])
            elif prior_rows is None:
                prior_loss = self.prior.loss(backbone, target)
            else:
                prior_loss = backbone.sum() * 0.0
            loss = loss + self.hparams.prior_weight * prior_loss
            self.log("train/prior_loss", prior_loss, batch_size=bs)
        self.log(f"train/{phase}_loss", contrastive, batch_size=bs)
        self.log("train/temperature", temperature, batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        brain, target = batch["brain"], batch["target"]
        backbone, embedding = self(brain, batch["subject"])
        contrastive = clip_loss(embedding, target, self.hparams.mixco_temperature)
        loss = contrastive
        bs = brain.shape[0]
        if self.prior is not None:
            prior_loss = self.prior.loss(backbone, target)
            loss = loss + self.hparams.prior_weight * prior_loss
            self.log("val/prior_loss", prior_loss, batch_size=bs)
        sims = normalize_flat(embedding) @ normalize_flat(target).T
        labels = torch.arange(bs, device=sims.device)
        self.log("val/clip_loss", contrastive, batch_size=bs)
        self.log("val/loss", loss, prog_bar=True, batch_size=bs)
        self.log(
            "val/top1_brain_to_image", (sims.argmax(1) == labels).float().mean(), batch_size=bs
        )
        self.log(
            "val/top1_image_to_brain", (sims.argmax(0) == labels).float().mean(), batch_size=bs
        )
        return loss

    def on_test_epoch_start(self) -> None:
        self._test_outputs = {}

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        backbone, embedding = self(batch["brain"], batch["subject"])
        index = self.subjects.index(self._subject_name(batch["subject"]))
        store = self._test_outputs.setdefault(
            index, {"brain": [], "image": [], "prior": [], "stimulus_id": []}
        )
        store["brain"].append(embedding.detach())
        store["image"].append(batch["target"].detach())
        if "stimulus_id" in batch:
            store["stimulus_id"].append(batch["stimulus_id"].detach().reshape(-1))
        if self.prior is not None:
            sample = self.prior.sample(
                backbone,
                num_inference_steps=self.hparams.prior_inference_steps,
                guidance_scale=self.hparams.prior_guidance_scale,
            )
            store["prior"].append(sample.detach())

    def _gather_rows(self, rows: Tensor) -> Tensor:
        """Concatenate ``rows`` (n_rank, ...) of every process in rank order (padded all_gather,
        as ranks may hold different counts); the tensor itself with one process. On the CPU."""
        world = self.trainer.world_size if self._trainer is not None else 1
        if world <= 1:
            return rows.cpu()
        count = torch.tensor([rows.shape[0]], device=self.device)
        counts = self.all_gather(count).reshape(-1).tolist()
        padded = rows.new_zeros((max(counts), *rows.shape[1:]))
        padded[: rows.shape[0]] = rows
        gathered = self.all_gather(padded)  # (world, max_count, ...)
        return torch.cat([gathered[r, :n] for r, n in enumerate(counts)]).cpu()

    def _gathered_test_outputs(self) -> dict[int, dict[str, Tensor]]:
        """Test outputs of all processes per subject, one row per stimulus (rows that padded
        distributed batches repeat are dropped), ordered by stimulus id when ids are known."""
        reference = next(self.parameters())
        out: dict[int, dict[str, Tensor]] = {}
        for index in range(len(self.subjects)):  # same collectives, same order, on every rank
            store = self._test_outputs.get(index, {})
            parts: dict[str, Tensor] = {}
            for key in ("brain", "image", "prior", "stimulus_id"):
                local = store.get(key) or []
                if key == "stimulus_id":
                    rows = torch.cat(local) if local else reference.new_zeros(0, dtype=torch.long)
                else:
                    shape = (0, *self.target_shape)
                    rows = torch.cat(local) if local else reference.new_zeros(shape)
                parts[key] = self._gather_rows(rows.to(reference.device))
            n = parts["image"].shape[0]
            if n == 0:
                continue
            if parts["stimulus_id"].shape[0] == n:
                _, first = np.unique(parts["stimulus_id"].numpy(), return_index=True)
                keep = torch.as_tensor(first, dtype=torch.long)
                parts = {k: v[keep] if v.shape[0] == n else v for k, v in parts.items()}
            out[index] = parts
        return out

    def on_test_epoch_end(self) -> None:
        """Log N-way top-1/top-5 retrieval per subject (and their mean over subjects).

        Outputs are gathered across processes first, so a distributed test scores the whole
        test set, exactly as one process does."""
        from neurodecode.evaluate.retrieval import retrieval_metrics

        collected: dict[str, list[float]] = {}
        for index, store in sorted(self._gathered_test_outputs().items()):
            image = store["image"]
            n_way = min(int(self.hparams.test_n_way), image.shape[0])
            if n_way < 2:
                continue
            k = (1, 5) if n_way >= 5 else (1,)
            sources = {"": store["brain"]}
            if store["prior"].shape[0]:
                prior = store["prior"]
                sources["prior_"] = prior
                cos = F.cosine_similarity(prior.flatten(1), image.flatten(1), dim=-1).mean()
                collected.setdefault("prior_cosine", []).append(float(cos))
                self.log(f"test/{self.subjects[index]}/prior_cosine", float(cos))
            for prefix, brain in sources.items():
                metrics = retrieval_metrics(
                    brain, image, n_way=n_way, n_draws=self.hparams.test_n_draws, k=k
                )
                for key, value in metrics.items():
                    if key.startswith(("brain_to_image", "image_to_brain")):
                        name = prefix + key
                        self.log(f"test/{self.subjects[index]}/{name}", value)
                        collected.setdefault(name, []).append(value)
            self.log(f"test/{self.subjects[index]}/n_way", float(n_way))
        for name, values in collected.items():
            self.log(f"test/{name}", float(np.mean(values)))
        self._test_outputs = {}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        _, embedding = self(batch["brain"], batch["subject"])
        out = {"embedding": embedding, "subject": batch["subject"]}
        if "stimulus_id" in batch:
            out["stimulus_id"] = batch["stimulus_id"]
        return out

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_onecycle(self, self.hparams.lr, self.hparams.weight_decay)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        onecycle_step_scheduler(scheduler, metric)


# ---------------------------------------------------------------------- new subjects (MindEye2)
def fit_new_subject(
    model: RetrievalModule,
    subject: str,
    n_voxels: int,
    trainer: L.Trainer,
    datamodule: L.LightningDataModule,
    lr: float = 1e-3,
    weight_decay: float | None = None,
    freeze_shared: bool = True,
    new_prior_weight: float = 0.0,
) -> RetrievalModule:
    """Fit a new subject's adapter into a trained model's shared latent (MindEye2's new subject).

    The subject gets its own linear adapter (random init) into the latent of ``model``; with
    ``freeze_shared`` everything else (backbone, projector, prior, other adapters) is frozen,
    so only ``V_new x hidden_dim`` weights are learnt from the new subject's (few) trials while
    the backbone keeps what it learnt from the pretraining subjects. The model is put in
    training mode first (dropout on the latent regularises the adapter) and trained with its
    own loss schedule (BiMixCo then SoftCLIP) for the trainer's epochs. How it compares with the
    same network trained from scratch on the new subject's trials, and how ``lr`` and
    ``weight_decay`` were chosen, is in ``benchmarks/README.md`` (``bench_retrieval``).

    Parameters
    ----------
    model : RetrievalModule
        Trained model (single-subject or shared-latent); modified in place.
    subject : str
        New subject's name; must not be in ``model.subjects``.
    n_voxels : int
        Its voxel count.
    trainer : lightning.Trainer
        Fresh trainer (its ``max_epochs`` sets the schedule).
    datamodule : LightningDataModule
        Yields batches of the new subject whose ``subject`` index is its position after the
        model's subjects, e.g. ``NSDDataModule(subjects=[*model.subjects, subject],
        train_subjects=[subject], eval_subject=subject)``.
    lr, weight_decay : float
        Peak OneCycle learning rate and AdamW weight decay for this fit (stored in
        ``model.hparams``); the decay defaults to 20 when only the adapter trains
        (``freeze_shared``), else 0.01. Only the adapter learns, so a higher rate than the
        pretraining's suits it, and a strong decoupled decay (AdamW shrinks by
        ``lr * weight_decay`` = 2 % a step) keeps its ``V_new x hidden_dim`` weights from
        fitting trial noise.
    freeze_shared : bool
        Train the new adapter only (True) or the whole network (False).
    new_prior_weight : float
        Weight of the diffusion prior's loss during this fit (the model's ``prior_weight`` is
        restored afterwards). Default 0: with a frozen prior its loss only pulls the adapter
        towards latents the prior likes, which cost retrieval on the default world. The prior
        still runs on the new subject afterwards.

    Returns
    -------
    RetrievalModule
        ``model``, now knowing ``subject``.
    """
    geometry = getattr(datamodule, "geometry", None)
    expected = [*model.subjects, subject]
    if isinstance(geometry, dict) and list(geometry.get("n_voxels", {})) != expected:
        raise InvalidInputError(
            f"datamodule subjects {list(geometry.get('n_voxels', {}))} do not match the model's "
            f"subjects followed by the new one ({expected}); batch subject indices would point "
            "at the wrong adapters."
        )
    model.add_subject(subject, n_voxels, freeze_shared=freeze_shared)
    model.hparams["lr"] = float(lr)
    if weight_decay is None:
        weight_decay = 20.0 if freeze_shared else 0.01
    model.hparams["weight_decay"] = float(weight_decay)
    prior_weight = model.hparams.prior_weight
    model.hparams["prior_weight"] = float(new_prior_weight)
    model.train()
    try:
        trainer.fit(model, datamodule=datamodule)
    finally:
        model.hparams["prior_weight"] = prior_weight
    return model


class NewSubjectFromPretrained(L.Callback):
    """LightningCLI route to :func:`fit_new_subject`: start from a saved decoder, train one subject.

    At ``setup`` the model's weights are copied from ``pretrained`` (a
    :func:`neurodecode.save_pretrained` folder of a :class:`RetrievalModule` trained on the
    model's other subjects) except ``subject``'s adapter, which keeps its random init; with
    ``freeze_shared`` every other parameter is then frozen. The model's geometry must list the
    pretrained subjects in the same order, then ``subject`` (the datamodule does this with
    ``train_subjects: [subject]``). See ``experiments/sim_new_subject.yaml``.

    Parameters
    ----------
    pretrained : str
        Folder written by ``save_pretrained``.
    subject : str
        The new subject (in the model's geometry, not in the pretrained one).
    freeze_shared : bool
        Train the new adapter only.
    """

    def __init__(self, pretrained: str, subject: str, freeze_shared: bool = True) -> None:
        super().__init__()
        self.pretrained, self.subject, self.freeze_shared = pretrained, subject, freeze_shared

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from neurodecode.pretrained import load_pretrained

        if not isinstance(pl_module, RetrievalModule):
            raise InvalidInputError(
                f"NewSubjectFromPretrained needs a RetrievalModule; got {type(pl_module).__name__}."
            )
        source = load_pretrained(self.pretrained)
        expected = [*source.subjects, self.subject]
        if pl_module.subjects != expected:
            raise InvalidInputError(
                f"model subjects {pl_module.subjects} do not match {self.pretrained}'s subjects "
                f"followed by the new one ({expected}); set the datamodule's subjects to that "
                f"list and train_subjects to [{self.subject!r}]."
            )
        own = pl_module.state_dict()
        prefix = f"adapters.{self.subject}."
        state = source.state_dict()
        for key, value in own.items():
            if key.startswith(prefix):
                state[key] = value
            elif key not in state or state[key].shape != value.shape:
                raise InvalidInputError(
                    f"{self.pretrained}: weight {key!r} is missing or has another shape; the "
                    "model's sizes must match the pretrained decoder's."
                )
        pl_module.load_state_dict(state)
        if self.freeze_shared:
            pl_module.requires_grad_(False)
            pl_module.adapters[self.subject].requires_grad_(True)
