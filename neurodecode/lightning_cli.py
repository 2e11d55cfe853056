"""LightningCLI wiring for ``neurodecode fit/validate/test/predict``.

Experiments choose their model and datamodule by ``class_path`` (subclass mode), so any
LightningModule/LightningDataModule in :mod:`neurodecode.models` / :mod:`neurodecode.data` can be
trained from YAML without code changes. The datamodule's ``geometry`` (voxel counts per subject,
sensor layout, target shape) is linked into the model's ``geometry`` argument when both are
instantiated, so configs never repeat data-dependent sizes.
"""

from __future__ import annotations


def run_lightning_cli(argv: list[str]) -> None:
    """Run LightningCLI on ``argv`` (e.g. ``["fit", "-c", "experiments/sim_retrieval.yaml"]``)."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    class NeurodecodeCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments(
                "data.geometry", "model.init_args.geometry", apply_on="instantiate"
            )

    NeurodecodeCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
