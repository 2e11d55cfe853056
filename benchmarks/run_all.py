"""``make bench``: every benchmark in one run, results as JSON under benchmarks/results/.

Each ``benchmarks/bench_*.py`` module has a ``main(argv)``; they run in a fixed order and a failure
in one is reported without stopping the others. The exit status is non-zero if any failed.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from pathlib import Path

ORDER = [
    "loading",
    "ridge",
    "retrieval",
    "scaling",
    "sae",
    "sae_analyses",
    "sae_e2e",
    "meg",
    "reconstruct",
    "analysis",
    "sae_encoding",
    "scale",
]


def main() -> int:
    here = Path(__file__).resolve().parent
    found = sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    names = [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]
    failed = []
    start = time.perf_counter()
    for name in names:
        print(f"\n=== benchmarks.bench_{name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.bench_{name}").main([])
        except (Exception, SystemExit):  # report and go on: one broken benchmark (or its
            # argument parser's exit) must not hide the others
            traceback.print_exc()
            failed.append(name)
        print(f"--- {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(
        f"\n{len(names) - len(failed)}/{len(names)} benchmarks done in "
        f"{time.perf_counter() - start:.0f} s; results in {here / 'results'}"
    )
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
