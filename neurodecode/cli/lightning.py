"""LightningCLI wiring for ``neurodecode fit/validate/test/predict``, and the sharded strategies.

Experiments choose their model and datamodule by ``class_path`` (subclass mode), so any
LightningModule/LightningDataModule in :mod:`neurodecode.models` / :mod:`neurodecode.data` can be
trained from YAML without code changes. The datamodule's ``geometry`` (voxel counts per subject,
sensor layout, target shape) is linked into the model's ``geometry`` argument when both are
instantiated, so configs never repeat data-dependent sizes.

Strategies registered here (``trainer.strategy`` in YAML or ``--trainer.strategy=NAME``):

``fsdp_linear``
    Lightning's FSDP (full sharding, GPUs, NCCL) with every ``nn.Linear`` its own FSDP unit: the
    subject adapters (voxels x hidden), the residual blocks and heads of the MindEye backbone
    (hidden x hidden), the projector and the prior's layers, i.e. where MindEye's ~1B parameters
    are. Layer norms and other small parameters live in the root unit.
``fsdp_linear_cpu``
    The same on the CPU with gloo (:class:`CPUFSDPStrategy`), to check an FSDP run without a GPU.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.strategies import FSDPStrategy

FSDP_STRATEGIES = ("fsdp_linear", "fsdp_linear_cpu")


class CPUFSDPStrategy(FSDPStrategy):
    """:class:`~lightning.pytorch.strategies.FSDPStrategy` that also runs on the CPU (gloo).

    Lightning refuses ``strategy="fsdp"`` with ``accelerator="cpu"``, and torch's FSDP needs
    ``device_id=torch.device("cpu")`` to shard CPU modules (Lightning passes the device index,
    ``None`` on the CPU). This wraps the model with that device and otherwise leaves everything
    to Lightning; on a GPU it is the parent class.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("process_group_backend", "gloo")
        super().__init__(**kwargs)

    def _setup_model(self, model):
        import torch
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = any(isinstance(m, FullyShardedDataParallel) for m in model.modules())
        if self.root_device.type == "cpu" and not wrapped:
            kwargs = dict(self.kwargs)
            self.kwargs.pop("auto_wrap_policy", None)  # applied here; Lightning would warn
            model = FullyShardedDataParallel(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **kwargs,
            )
        return super()._setup_model(model)


def register_strategies() -> None:
    """Add :data:`FSDP_STRATEGIES` to Lightning's strategy registry (idempotent)."""
    from lightning.pytorch.strategies import StrategyRegistry
    from torch import nn

    strategies = {
        "fsdp_linear": (FSDPStrategy, "FSDP, full sharding, every nn.Linear its own unit"),
        "fsdp_linear_cpu": (
            CPUFSDPStrategy,
            "FSDP on the CPU (gloo), every nn.Linear its own unit",
        ),
    }
    for name, (strategy, description) in strategies.items():
        if name not in StrategyRegistry:
            StrategyRegistry.register(
                name, strategy, description=description, auto_wrap_policy={nn.Linear}
            )


def build_lightning_cli(argv: list[str], run: bool = True):
    """LightningCLI over ``argv``, with the geometry link and the strategies registered.

    Parameters
    ----------
    argv : list of str
        With ``run=True`` a subcommand first (``["fit", "-c", "experiments/sim_retrieval.yaml"]``);
        with ``run=False`` only the config and overrides, and the caller runs
        ``cli.trainer.fit(cli.model, datamodule=cli.datamodule)`` itself (``neurodecode demo`` does).

    Returns
    -------
    LightningCLI
        With ``model``, ``datamodule`` and ``trainer`` instantiated.
    """
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    register_strategies()

    class NeurodecodeCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments(
                "data.geometry", "model.init_args.geometry", apply_on="instantiate"
            )

    return NeurodecodeCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )


def run_lightning_cli(argv: list[str]) -> None:
    """Run LightningCLI on ``argv`` (e.g. ``["fit", "-c", "experiments/sim_retrieval.yaml"]``)."""
    build_lightning_cli(argv, run=True)


class EpochLines(L.Callback):
    """One printed line per training epoch (epoch, elapsed seconds, the logged losses and scores),
    for runs whose output goes to a log file, where a progress bar shows nothing useful."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        values = []
        for name, value in sorted(trainer.callback_metrics.items()):
            if value.numel() == 1 and ("loss" in name or "top" in name):
                values.append(f"{name} {float(value):.4g}")
        print(
            f"fit: epoch {trainer.current_epoch + 1}/{trainer.max_epochs}, "
            f"{time.perf_counter() - self._start:.0f} s" + "".join(f", {v}" for v in values),
            flush=True,
        )


def latest_checkpoint(folder: Path) -> tuple[Path, int] | None:
    """The newest readable Lightning checkpoint (``*.ckpt``) in ``folder`` and the number of
    epochs it completed, or ``None``.

    Newest by modification time; a file that does not load (a run killed while writing it) is
    skipped for the one before it.
    """
    import torch

    for path in sorted(Path(folder).glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
        except Exception:  # truncated or corrupt: an earlier checkpoint may still be whole
            continue
        if isinstance(state, dict) and "state_dict" in state and "epoch" in state:
            return path, int(state["epoch"]) + 1
    return None


def fit_experiment(experiment: dict, out: Path, resume_key: str | None = None) -> tuple:
    """Fit the model of an experiment config through LightningCLI, as ``neurodecode fit`` does.

    Parameters
    ----------
    experiment : dict
        A LightningCLI config (``seed_everything``, ``trainer``, ``model`` and ``data`` with
        ``class_path``/``init_args``), e.g. ``experiments/sim_retrieval.yaml`` loaded and with
        its data paths set. ``trainer.default_root_dir`` is set to ``out``; logs go to
        ``out/logs`` (CSV). When standard output is not a terminal (a log file), each epoch
        also prints one line (:class:`EpochLines`).
    out : Path
        Run folder.
    resume_key : str, optional
        Checkpoints go to ``out / "checkpoints" / resume_key`` (one per epoch, the latest kept),
        and a fit whose folder already holds one resumes from it (:func:`latest_checkpoint`):
        a killed run goes on from its last finished epoch, a finished one is not trained
        again. The key must name everything the fit depends on (``neurodecode demo`` hashes
        the experiment and its data); without it Lightning's default checkpointing applies and
        every call trains from scratch.

    Returns
    -------
    (model, datamodule, info)
        ``info`` has ``epochs``, ``train_trials``, ``samples_per_s``, ``fit_s`` and
        ``resumed_from`` (the checkpoint resumed, or ``None``).
    """
    from lightning.pytorch.loggers import CSVLogger

    config = copy.deepcopy(experiment)
    config["trainer"] = dict(config.get("trainer", {}))
    config["trainer"].update(
        default_root_dir=str(out),
        enable_model_summary=False,
        logger={
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(out), "name": "logs"},
        },
    )
    # The config is the whole input: hide the calling command's own arguments (``demo ...``),
    # which LightningCLI would otherwise warn about next to ``args=``.
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = build_lightning_cli(config, run=False)
    finally:
        sys.argv = argv
    assert isinstance(cli.trainer.logger, CSVLogger)
    if not sys.stdout.isatty():
        cli.trainer.callbacks.append(EpochLines())
    resume_from = None
    if resume_key is not None:
        checkpoints = Path(out) / "checkpoints" / resume_key
        callback = cli.trainer.checkpoint_callback
        if callback is None:
            from neurodecode.validation import InvalidInputError

            raise InvalidInputError(
                "resuming a fit needs checkpointing; the experiment sets "
                "trainer.enable_checkpointing: false."
            )
        callback.dirpath = str(checkpoints.resolve())
        found = latest_checkpoint(checkpoints)
        if found is not None:
            resume_from, done = found
            print(f"    resuming the fit after epoch {done} from {resume_from}", flush=True)
    start = time.perf_counter()
    cli.trainer.fit(
        cli.model,
        datamodule=cli.datamodule,
        ckpt_path=None if resume_from is None else str(resume_from),
    )
    seconds = time.perf_counter() - start
    n_train = len(cli.datamodule.train_set)
    epochs = cli.trainer.current_epoch
    trained = epochs - (0 if resume_from is None else done)
    info = {
        "epochs": epochs,
        "train_trials": n_train,
        "samples_per_s": round(n_train * trained / max(seconds, 1e-9), 1),
        "fit_s": round(seconds, 1),
        "resumed_from": None if resume_from is None else str(resume_from),
    }
    return cli.model, cli.datamodule, info
