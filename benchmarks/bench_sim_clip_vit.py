"""The recipe search behind sim-clip's ``vit`` preset: ViT image towers trained like sim-clip.

Each candidate is a sim-clip recipe (:data:`neurodecode.embedded.clip.PRESETS` keys) on a ViT
model config — the 32 px ``sim-clip-vit-tiny`` (4 x 4 patches of 8 px), the same width and depth
on 64 px images (``sim-clip-vit-64``, 8 x 8 patches), 4 px patches at 32 px, or 4 blocks at 64 px —
trained by :func:`neurodecode.embedded.clip.train_sim_clip` into a temporary folder (the cache is
not touched). The choice is made on the zero-shot scores of a **validation** stream of 600 scenes
(stimulus seed ``TRAIN_SEED + 1``, rendered at 64 px like the simulated world, resized by each
model's own preprocessing); each candidate's own held-out scenes (``metrics.json``) are reported
beside it, and nothing here scores the SAE analysis that uses the preset. One thread; seconds are
the whole ``train_sim_clip`` call (scene generation, training, held-out scoring).

Run: ``.venv/bin/python -m benchmarks.bench_sim_clip_vit [--candidates vit-tiny vit]``
(default: the 32 px baseline and the chosen recipe; ``--candidates all`` runs every one, about
half an hour on one core). Writes ``benchmarks/results/sim_clip_vit.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "sim_clip_vit.json"

#: Model configs of the candidates not shipped in neurodecode/embedded/model_configs/.
_EXTRA_CONFIGS = {
    "sim-clip-vit-bench-x32p4": {"image_size": 32, "patch_size": 4, "layers": 2},
    "sim-clip-vit-bench-x64l4": {"image_size": 64, "patch_size": 8, "layers": 4},
}
_SHORT = {"n_train": 6000, "n_eval": 300, "steps": 1500, "lr": 1e-3, "warmup": 150}
#: name -> changes to the chosen ``vit`` recipe.
CANDIDATES: dict[str, dict[str, Any]] = {
    "vit-tiny-300": {
        "model_name": "sim-clip-vit-tiny",
        "image_size": 32,
        "n_train": 1500,
        "n_eval": 300,
        "steps": 300,
        "lr": 3e-3,
        "warmup": 20,
        "shift_pixels": 0,
    },
    "vit-tiny-1500-lr3e-3": {
        "model_name": "sim-clip-vit-tiny",
        "image_size": 32,
        **_SHORT,
        "lr": 3e-3,
        "shift_pixels": 0,
    },
    "vit-tiny-1500": {
        "model_name": "sim-clip-vit-tiny",
        "image_size": 32,
        **_SHORT,
        "shift_pixels": 0,
    },
    "x32-p4-1500": {
        "model_name": "sim-clip-vit-bench-x32p4",
        "image_size": 32,
        **_SHORT,
        "shift_pixels": 0,
    },
    "x64-4blocks-1500": {"model_name": "sim-clip-vit-bench-x64l4", **_SHORT, "shift_pixels": 0},
    "x64-1500": {**_SHORT, "shift_pixels": 0},
    "x64-1500-shift4": {**_SHORT},
    "x64-1500-shift4-lr2e-3": {**_SHORT, "lr": 2e-3, "warmup": 300},
    "x64-3000-shift4-lr1e-3": {"n_eval": 300, "lr": 1e-3},
    "x64-3000-lr2e-3": {"n_eval": 300, "shift_pixels": 0},
    "vit": {},
}
DEFAULT_CANDIDATES = ("vit-tiny-1500", "vit")


def _register_extra_configs(folder: Path) -> None:
    import open_clip

    base = open_clip.get_model_config("sim-clip-vit-tiny")
    for name, vision in _EXTRA_CONFIGS.items():
        config = json.loads(json.dumps(base))
        config["vision_cfg"].update(vision)
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)


def bench_candidates(names: list[str], n_val: int = 600) -> list[dict[str, Any]]:
    """Train each named candidate and score it on the validation stream."""
    from neurodecode.embedded import clip as sim_clip
    from neurodecode.features.clip import load_clip
    from neurodecode.sim.stimuli import generate_stimuli

    validation = generate_stimuli(n_val, size=64, seed=sim_clip.TRAIN_SEED + 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _register_extra_configs(Path(tmp))
        for name in names:
            recipe = {**sim_clip.PRESETS["vit"], **CANDIDATES[name]}
            sim_clip.PRESETS["bench-candidate"] = recipe
            try:
                start = time.perf_counter()
                folder = sim_clip.train_sim_clip(
                    "bench-candidate", Path(tmp) / name, progress=False
                )
                seconds = time.perf_counter() - start
            finally:
                del sim_clip.PRESETS["bench-candidate"]
            held_out = json.loads((folder / "metrics.json").read_text())
            encoder = load_clip(recipe["model_name"], folder / "open_clip_model.safetensors")
            val = sim_clip.zero_shot_metrics(
                encoder, validation.images, validation.captions, validation.category
            )
            row = {
                "candidate": name,
                "recipe": recipe,
                "seconds": round(seconds, 1),
                "validation": val,
                "held_out": held_out,
            }
            rows.append(row)
            print(
                f"{name}: validation category {val['category_accuracy']:.3f}, caption top-1 "
                f"{val['caption_top1']:.3f}; held-out category {held_out['category_accuracy']:.3f}; "
                f"{seconds:.0f} s",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--candidates", nargs="+", default=list(DEFAULT_CANDIDATES), help="names, or 'all'"
    )
    args = parser.parse_args(argv)
    names = list(CANDIDATES) if args.candidates == ["all"] else args.candidates
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; expected some of {sorted(CANDIDATES)}")
    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "candidates": bench_candidates(names),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
