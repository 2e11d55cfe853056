"""``neurodecode analyze <analysis> --config FILE``: run an analysis from a YAML config.

Each analysis is an entry of :data:`ANALYSES` (name -> (help, module, runner name)); a runner takes
the parsed config dict and the config path and returns the run folder. Adding an analysis is one
more entry. The runners live in :mod:`neurodecode.cli.analyze_sae` (SAEs and transcoders) and
:mod:`neurodecode.cli.analyze_cortex` (encoding, selectivity, captions, synthesis) and
:mod:`neurodecode.cli.analyze_sae_encoding` (SAE latents as encoding models).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from neurodecode.cli.config import load_config

#: analysis name -> (help, module, runner(config, config_path) -> run folder)
ANALYSES: dict[str, tuple[str, str, str]] = {
    "sae": (
        "train and evaluate a sparse autoencoder or transcoder",
        "neurodecode.cli.analyze_sae",
        "run_sae",
    ),
    "encoding": (
        "voxel-wise encoding: R², r, noise ceiling, R²/NC per voxel",
        "neurodecode.cli.analyze_cortex",
        "run_encoding",
    ),
    "selectivity": (
        "SAE latents <-> ROI alignment with category preference",
        "neurodecode.cli.analyze_cortex",
        "run_selectivity",
    ),
    "captions": (
        "BrainSCUBA voxel captions scored by ROI category",
        "neurodecode.cli.analyze_cortex",
        "run_captions",
    ),
    "synthesis": (
        "BrainDiVE ROI-guided image synthesis",
        "neurodecode.cli.analyze_cortex",
        "run_synthesis",
    ),
    "sae-encoding": (
        "SAE latents vs dense activations as voxel encoders: banded ridge, variance partition",
        "neurodecode.cli.analyze_sae_encoding",
        "run_sae_encoding",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode analyze``: one subparser per analysis."""
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    for name, (text, _, _) in ANALYSES.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", required=True, type=Path, help="analysis YAML")
        p.add_argument("--run-dir", type=Path, default=None, help="override the config's run_dir")


def run(args: argparse.Namespace) -> int:
    """Run the chosen analysis on its config."""
    _, module, runner = ANALYSES[args.analysis]
    config = load_config(args.config, f"{args.analysis} analysis config")
    if args.run_dir is not None:
        config["run_dir"] = str(args.run_dir)
    getattr(importlib.import_module(module), runner)(config, args.config)
    return 0
