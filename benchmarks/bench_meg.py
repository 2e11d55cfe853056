"""MEG decoding on the default simulated THINGS-MEG world: brain module vs ridge, and time course.

Run: ``.venv/bin/python -m benchmarks.bench_meg`` (simulates ``data/sim/meg-default`` first if it
is absent). Writes ``benchmarks/results/meg.json`` and prints a table.

Protocol: both subjects; training = single trials of the training images (``exp``), test = the
shared test images averaged over their repeats, per subject; retrieval is n-way top-1 (cosine,
30 random draws), per subject, averaged over subjects. Targets are the simulation's 24-D
generating features (``ground_truth.h5``: low-level image statistics, category, colour, count,
size) as stored, the targets ``experiments/sim_meg.yaml`` trains on. Ridge: flattened epochs
(channels x times), one model per subject, per-target CV alphas. Brain module: one model for both
subjects (subject layers), CLIP + MSE, with the optimisation of ``experiments/sim_meg.yaml``
(one-cycle AdamW peaking at 3e-3, CLIP temperature 0.2, spatial-attention init scale 4, MSE
weight 1, 15 epochs). Time course: decoders trained and tested on 200 ms sliding windows (step 150 ms); the
best ridge window is also reported as a stronger, optimistic linear baseline (its window is
picked on the test trials).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from neurodecode.datamodules.meg import MEGDataModule
from neurodecode.models.meg import (
    MEGBrainModule,
    embed_trials,
    fit_brain_module,
    retrieval_per_subject,
    ridge_retrieval,
    time_resolved_retrieval,
)

REPO = Path(__file__).resolve().parents[1]
SIM_CONFIG = REPO / "datasets/sim/meg-default.yaml"
SIM_ROOT = REPO / "data/sim/meg-default"
RESULTS = REPO / "benchmarks/results/meg.json"

N_WAY = 50
WINDOW = (-0.1, 1.0)
# The settings of experiments/sim_meg.yaml (see its header for why they win).
MODEL = dict(
    hidden=64,
    n_blocks=2,
    spatial_channels=64,
    n_freqs=8,
    out_channels=128,
    spatial_init_scale=4.0,
    lr=3e-3,
    lr_schedule="onecycle",
    mse_weight=1.0,
    temperature=0.2,
)
EPOCHS = 15
CURVE_MODEL = dict(MODEL, hidden=32, spatial_channels=32, out_channels=64, n_blocks=1)
CURVE_EPOCHS = 10


def _arrays(dm: MEGDataModule, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = dm.dataset(split)
    return ds.brain.numpy(), ds.target.numpy(), ds.subject.numpy()


def main() -> dict:
    """Run the benchmark, write ``benchmarks/results/meg.json`` and return the results."""
    torch.manual_seed(0)
    start = time.perf_counter()
    timing: dict[str, float] = {}
    if not (SIM_ROOT / "ground_truth.h5").is_file():
        from neurodecode.sim.meg import MEGSimConfig, simulate_meg

        print(f"simulating {SIM_ROOT} ...", flush=True)
        simulate_meg(MEGSimConfig.from_yaml(SIM_CONFIG), SIM_ROOT)
    timing["simulate_s"] = time.perf_counter() - start

    t = time.perf_counter()
    full = MEGDataModule(root=str(SIM_ROOT), window=(-0.1, 1.3), val_fraction=0.0)
    full.setup("fit")
    geometry_full = full.geometry
    brain_tr, target_tr, subject_tr = _arrays(full, "train")
    brain_te, target_te, subject_te = _arrays(full, "test")
    times = full.times
    timing["load_s"] = time.perf_counter() - t
    print(
        f"loaded {len(brain_tr)} training trials, {len(brain_te)} averaged test trials, "
        f"{brain_tr.shape[1]} channels, {brain_tr.shape[2]} samples at 120 Hz",
        flush=True,
    )

    window = (times >= WINDOW[0] - 1e-9) & (times <= WINDOW[1] + 1e-9)
    x_tr, x_te = brain_tr[:, :, window], brain_te[:, :, window]

    t = time.perf_counter()
    ridge = ridge_retrieval(x_tr, target_tr, subject_tr, x_te, target_te, subject_te, n_way=N_WAY)
    timing["ridge_s"] = time.perf_counter() - t
    print(f"ridge  top-1 {ridge['brain_to_image_top1']:.3f}", flush=True)

    t = time.perf_counter()
    model = MEGBrainModule({**geometry_full, "n_times": int(window.sum())}, **MODEL)
    fit_brain_module(model, x_tr, target_tr, subject_tr, max_epochs=EPOCHS, batch_size=64)
    timing["model_fit_s"] = time.perf_counter() - t
    timing["model_samples_per_s"] = EPOCHS * len(x_tr) / timing["model_fit_s"]
    brain_module = retrieval_per_subject(
        embed_trials(model, x_te, subject_te), target_te, subject_te, N_WAY, 30, 0
    )
    print(f"module top-1 {brain_module['brain_to_image_top1']:.3f}", flush=True)

    t = time.perf_counter()
    curve = time_resolved_retrieval(
        brain_tr,
        target_tr,
        subject_tr,
        brain_te,
        target_te,
        subject_te,
        times,
        geometry=geometry_full,
        decoders=("ridge", "model"),
        window_s=0.2,
        step_s=0.15,
        n_way=N_WAY,
        model_kwargs=CURVE_MODEL,
        max_epochs=CURVE_EPOCHS,
    )
    timing["time_course_s"] = time.perf_counter() - t
    centres = np.array(curve["window_centre_s"])
    model_curve = np.array(curve["model"]["brain_to_image_top1"])
    ridge_curve = np.array(curve["ridge"]["brain_to_image_top1"])
    best = int(np.argmax(ridge_curve))
    # a stronger (and optimistic: the window is picked on the test trials) linear baseline
    ridge_best_window = {
        "window_centre_s": float(centres[best]),
        "brain_to_image_top1": float(ridge_curve[best]),
        "image_to_brain_top1": float(curve["ridge"]["image_to_brain_top1"][best]),
    }
    timing["total_s"] = time.perf_counter() - start

    results = {
        "data": {
            "root": str(SIM_ROOT.relative_to(REPO)),
            "config": str(SIM_CONFIG.relative_to(REPO)),
            "targets": "simulation generating features (ground_truth.h5 'features', 24-D, as stored)",
            "n_train_trials": len(x_tr),
            "n_test_items": len(x_te),
            "window_s": list(WINDOW),
            "sfreq": 120.0,
        },
        "retrieval": {
            "n_way": N_WAY,
            "chance_top1": 1 / N_WAY,
            "brain_module": brain_module,
            "ridge": ridge,
            "ridge_best_window": ridge_best_window,
            "ratio_top1": brain_module["brain_to_image_top1"]
            / max(ridge["brain_to_image_top1"], 1e-9),
            "beats_ridge_both_directions": bool(
                brain_module["brain_to_image_top1"] > ridge["brain_to_image_top1"]
                and brain_module["image_to_brain_top1"] > ridge["image_to_brain_top1"]
            ),
        },
        "time_course": {
            **curve,
            "model_peak_s": float(centres[np.argmax(model_curve)]),
            "ridge_peak_s": float(centres[np.argmax(ridge_curve)]),
            "model_max_before_onset": float(model_curve[centres < 0].max(initial=0.0)),
            "model_peaks_after_onset": bool(centres[np.argmax(model_curve)] > 0),
        },
        "model": {
            "full": MODEL,
            "epochs": EPOCHS,
            "curve": CURVE_MODEL,
            "curve_epochs": CURVE_EPOCHS,
        },
        "timing": timing,
        "torch_threads": torch.get_num_threads(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))

    print(f"\nMEG retrieval, {N_WAY}-way top-1 (chance {1 / N_WAY:.3f}), window {WINDOW} s")
    print(f"{'decoder':<14}{'brain->image':>14}{'image->brain':>14}{'top-5':>8}")
    for name, r in (("brain module", brain_module), ("ridge", ridge)):
        print(
            f"{name:<14}{r['brain_to_image_top1']:>14.3f}{r['image_to_brain_top1']:>14.3f}"
            f"{r['brain_to_image_top5']:>8.3f}"
        )
    best_name = f"ridge@{ridge_best_window['window_centre_s']:+.2f}s"
    print(
        f"{best_name:<14}{ridge_best_window['brain_to_image_top1']:>14.3f}"
        f"{ridge_best_window['image_to_brain_top1']:>14.3f}{'-':>8}"
        "   (best 200 ms window, picked on the test trials)"
    )
    print(f"brain module fit: {timing['model_fit_s']:.0f} s ({EPOCHS} epochs)")
    print("\ntime course (200 ms windows): centre s | module | ridge")
    for c, m, r in zip(centres, model_curve, ridge_curve):
        print(f"  {c:+.2f} | {m:.3f} | {r:.3f}")
    print(f"\nwrote {RESULTS} in {timing['total_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
