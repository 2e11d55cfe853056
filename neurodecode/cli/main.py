"""The ``neurodecode`` command.

LightningCLI provides ``fit``/``validate``/``test``/``predict`` (models and datamodules are chosen by
``class_path`` in the YAML under ``experiments/``); the other subcommands are registered in
:data:`COMMANDS`, each a module with ``add_arguments(parser)`` and ``run(args)``, imported only when
used so that ``neurodecode --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from neurodecode.validation import InvalidInputError

LIGHTNING_COMMANDS = {
    "fit": "train a model from a YAML config (LightningCLI)",
    "validate": "validate a model (LightningCLI)",
    "test": "test a model (LightningCLI)",
    "predict": "predict with a model (LightningCLI)",
}

#: subcommand -> (module implementing add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("neurodecode.cli.simulate", "write a simulated NSD or THINGS-MEG data set"),
    "extract": ("neurodecode.cli.extract", "fill a FeatureStore with DNN features of stimuli"),
    "train-clip": ("neurodecode.cli.train_clip", "train and cache sim-clip"),
    "analyze": (
        "neurodecode.cli.analyze",
        "run an analysis: sae, encoding, selectivity, captions, synthesis",
    ),
    "reconstruct": (
        "neurodecode.cli.reconstruct",
        "images from brain data with a saved decoder (.npy, NSD betas, NIfTI)",
    ),
    "convert": (
        "neurodecode.cli.convert",
        "turn a peer's released checkpoint (MindEye1) into a decoder folder",
    ),
    "prepare": (
        "neurodecode.cli.prepare",
        "raw NSD betas -> a verified, resumable training cache (prepare nsd)",
    ),
    "demo": (
        "neurodecode.cli.demo",
        "the main job end to end on the simulated world (make demo)",
    ),
}


def _lightning_main(argv: list[str]) -> None:
    from neurodecode.cli.lightning import run_lightning_cli

    run_lightning_cli(argv)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; subcommand parsers are filled lazily from :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="neurodecode",
        description="Align brain recordings with DNN activations: decode, reconstruct, compare.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Lightning subcommands (take --config experiments/<name>.yaml):\n"
        + "\n".join(f"  {name:<10} {text}" for name, text in LIGHTNING_COMMANDS.items()),
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a user error (any position)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, text) in COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    for name, text in LIGHTNING_COMMANDS.items():
        sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neurodecode`` console script.

    A user error (:class:`~neurodecode.validation.InvalidInputError`: a bad file, argument or
    config) prints one line ``neurodecode <command>: error: <message>`` to stderr and exits with
    status 2, as argparse does; ``--debug`` anywhere on the line shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; no display is assumed
    # Lightning 2.x calls a torch.utils._pytree API that torch deprecates; users cannot act on it
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        return _dispatch(argv)
    except InvalidInputError as err:
        if debug:
            raise
        prog = f"neurodecode {command}".strip()
        message = " ".join(str(err).split())  # one line
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        _lightning_main(argv)
        return 0
    if argv and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        parser = argparse.ArgumentParser(prog=f"neurodecode {argv[0]}")
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        result = module.run(args)
        return int(result or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from neurodecode._version import __version__

        print(__version__)
        return 0
    parser.print_help()
    return 0 if not argv else 2


if __name__ == "__main__":
    sys.exit(main())
