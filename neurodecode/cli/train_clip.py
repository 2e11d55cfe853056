"""``neurodecode train-clip --preset default``: train sim-clip and cache it (see :mod:`.sim_clip`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode train-clip``."""
    parser.description = (
        "Train sim-clip (a small CLIP) on simulated stimuli and their captions; cache it under "
        "$NEURODECODE_CACHE/sim-clip and print its zero-shot scores on held-out scenes."
    )
    parser.add_argument("--preset", default="default", help="default | tiny | vit")
    parser.add_argument("--cache-dir", type=Path, default=None, help="parent of the preset folders")
    parser.add_argument("--retrain", action="store_true", help="train even if cached")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``neurodecode train-clip``."""
    from neurodecode.embedded.clip import PRESETS, cache_dir_for, get_sim_clip, read_metrics
    from neurodecode.validation import check_option

    check_option("--preset", args.preset, PRESETS)
    get_sim_clip(
        args.preset,
        cache_dir=args.cache_dir,
        device=args.device,
        retrain=args.retrain,
        progress=not args.quiet,
    )
    print(f"sim-clip {args.preset!r} at {cache_dir_for(args.preset, args.cache_dir)}")
    print(json.dumps(read_metrics(args.preset, args.cache_dir), indent=2, sort_keys=True))
    return 0
