"""``neurodecode prepare nsd``: raw NSD betas -> a verified, resumable training cache."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=["nsd"], help="data set to prepare")
    parser.add_argument("--root", required=True, help="NSD root (nsddata/, nsddata_betas/)")
    parser.add_argument("--subject", default="subj01", help="subject, e.g. subj01")
    parser.add_argument("--out", required=True, help="cache folder (resumed if it exists)")


def run(args: argparse.Namespace) -> int:
    from neurodecode.data.nsd_cache import open_nsd_cache, prepare_nsd_cache

    out = prepare_nsd_cache(args.root, args.subject, args.out)
    trials = open_nsd_cache(out)
    print(f"{out}: {len(trials)} trials x {trials.data.shape[1]} voxels, checksums verified")
    return 0
