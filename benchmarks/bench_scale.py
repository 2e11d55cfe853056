"""NSD-scale run: peak memory and throughput of loading, feature extraction and one training epoch.

The ``datasets/sim/nsd-scale.yaml`` world has NSD subj01's volume (81 x 104 x 83, 15,587
nsdgeneral voxels in a cortical shell; NSD: 15,724) and trial count (30,000 trials in 40 sessions
of 750), about 1 GB of int16 betas per session file (whole volumes, as NSD ships them): ~42 GB for
all 40 sessions, more than this machine's free disk. So the world is the first ``--sessions``
sessions' worth of trials: the simulator's own config with the image counts scaled by the same
fraction (NSD's 1:9 shared:unique ratio kept), written by the real simulator::

    neurodecode simulate fmri --config datasets/sim/nsd-scale.yaml --out DIR \
        --set n_shared=250 --set n_train_per_subject=2250        # 10 of 40 sessions

and the fraction is stated in the JSON. What does not depend on the number of sessions
(per-session streaming memory, voxels per trial, throughput) is measured directly; what does (the
size of the loaded trial matrix) is measured at the fraction and projected to 40 sessions by its
formula. A world already at ``--data`` is reused when its recorded config digest is the scaled
config's.

Each stage runs in a fresh interpreter so that its peak resident memory (``ru_maxrss``) is its own:

- ``stream``: ``read_nsd_betas`` one session at a time (what a streaming consumer holds);
- ``load``: ``read_nsd_betas`` of every session at once (the datamodule's path);
- ``extract``: sim-clip (tiny) image embeddings of every stimulus into a FeatureStore;
- ``train``: one Lightning epoch of the retrieval head + prior of
  ``experiments/sim_retrieval.yaml`` (MindEye1-style, hidden 1024) on the loaded trials.

Run: ``.venv/bin/python -m benchmarks.bench_scale [--sessions 4] [--data DIR]``. Writes
``benchmarks/results/scale.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
FULL_SESSIONS = 40
BUDGET_GIB = 24.0
GIB = 1024**3


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is KiB


def scaled_config(sessions: int):
    """The nsd-scale simulation config cut to ``sessions`` sessions of trials, all voxels."""
    from neurodecode.sim.fmri import FMRISimConfig

    config = FMRISimConfig.from_yaml(REPO / "datasets/sim/nsd-scale.yaml")
    fraction = sessions / FULL_SESSIONS
    n_images = sessions * config.trials_per_session // config.n_repeats
    config.n_shared = max(1, round(config.n_shared * fraction))
    config.n_train_per_subject = n_images - config.n_shared
    return config


def write_scale_world(root: Path, sessions: int) -> dict:
    """Write the scaled nsd-scale world with ``neurodecode simulate`` in a child process.

    Returns the write's wall time and the child's peak resident memory; also saved beside the
    world as ``bench_world.json``.
    """
    config = scaled_config(sessions)
    command = [
        sys.executable,
        "-m",
        "neurodecode.cli.main",
        "simulate",
        "fmri",
        "--config",
        str(REPO / "datasets/sim/nsd-scale.yaml"),
        "--out",
        str(root),
        "--set",
        f"n_shared={config.n_shared}",
        "--set",
        f"n_train_per_subject={config.n_train_per_subject}",
        "--quiet",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"simulate failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / GIB
    info = {
        "writer": "neurodecode simulate fmri (the real simulator)",
        "command": " ".join(command[2:]),
        "write_s": round(time.perf_counter() - start, 1),
        "write_peak_rss_gib": round(peak, 3),
    }
    (root / "bench_world.json").write_text(json.dumps(info, indent=2) + "\n")
    return {**info, "reused": False}


def _ensure_world(data: Path, sessions: int) -> dict:
    from neurodecode.sim.ground_truth import read_ground_truth

    truth = data / "ground_truth.h5"
    if truth.is_file():
        digest = read_ground_truth(truth).config_digest
        if digest != scaled_config(sessions).digest():
            raise SystemExit(
                f"{data} holds another world (config digest {digest!r}); choose another --data."
            )
        info = data / "bench_world.json"
        return {**(json.loads(info.read_text()) if info.is_file() else {}), "reused": True}
    return write_scale_world(data, sessions)


# ----------------------------------------------------------------------------- stages


def stage_stream(data: Path) -> dict:
    from neurodecode.data.nsd import read_nsd_betas, session_files

    files = session_files(data, "subj01")
    seconds, trials, voxels = [], 0, 0
    for session in files:
        start = time.perf_counter()
        block = read_nsd_betas(data, "subj01", sessions=[session], progress=False)
        seconds.append(time.perf_counter() - start)
        trials += len(block)
        voxels = block.data.shape[1]
        del block
    file_bytes = sum(p.stat().st_size for p in files.values())
    return {
        "sessions": len(files),
        "trials": trials,
        "voxels": voxels,
        "seconds": round(sum(seconds), 2),
        "trials_per_s": round(trials / sum(seconds), 1),
        "file_mb_per_s": round(file_bytes / 1e6 / sum(seconds), 1),
        "betas_file_gb": round(file_bytes / 1e9, 2),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
    }


def stage_load(data: Path) -> dict:
    from neurodecode.data.nsd import read_nsd_betas

    start = time.perf_counter()
    trials = read_nsd_betas(data, "subj01", progress=False)
    seconds = time.perf_counter() - start
    return {
        "trials": len(trials),
        "voxels": trials.data.shape[1],
        "seconds": round(seconds, 2),
        "trials_per_s": round(len(trials) / seconds, 1),
        "array_gib": round(trials.data.nbytes / GIB, 3),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
    }


def _store_path(data: Path) -> Path:
    return data.with_name(data.name + "-features.h5")


def stage_extract(data: Path) -> dict:
    import h5py
    import torch

    from neurodecode.data.nsd import read_stimuli
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.features.store import FeatureStore

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    encoder = get_sim_clip("tiny", progress=False)
    with h5py.File(data / "nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5", "r") as f:
        n_images = f["imgBrick"].shape[0]
    store_path = _store_path(data)
    store_path.unlink(missing_ok=True)

    def compute(ids: list[str]) -> np.ndarray:
        return encoder.encode_image(read_stimuli(data, [int(i) for i in ids])).cpu().numpy()

    settings = {**encoder.settings, "output": "pooled"}
    start = time.perf_counter()
    done = FeatureStore(store_path).fill(
        "sim-clip-tiny",
        "image",
        np.arange(n_images),
        compute,
        settings,
        batch_size=256,
        progress=False,
    )
    seconds = time.perf_counter() - start
    return {
        "images": done,
        "seconds": round(seconds, 2),
        "images_per_s": round(done / seconds, 1),
        "store_mb": round(store_path.stat().st_size / 1e6, 2),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
    }


def stage_train(data: Path, train_batches: int | None = None) -> dict:
    import lightning as L
    import torch
    import yaml

    from neurodecode.datamodules.nsd import NSDDataModule
    from neurodecode.models.retrieval import RetrievalModule

    torch.set_num_threads(max(1, (os.cpu_count() or 1)))
    experiment = yaml.safe_load((REPO / "experiments/sim_retrieval.yaml").read_text())
    model_args = dict(experiment["model"]["init_args"])
    start = time.perf_counter()
    datamodule = NSDDataModule(
        str(data),
        str(_store_path(data)),
        feature_model="sim-clip-tiny",
        feature_layer="image",
        batch_size=int(experiment["data"]["init_args"]["batch_size"]),
    )
    datamodule.setup("fit")
    setup_s = time.perf_counter() - start
    L.seed_everything(0, verbose=False)
    model = RetrievalModule(datamodule.geometry, **model_args)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        limit_train_batches=train_batches,
        default_root_dir=str(data.parent / "bench-scale-run"),
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    n_train = len(datamodule.train_set)
    n_batches = len(datamodule.train_dataloader())
    ran = min(n_batches, train_batches or n_batches)
    seen = ran * datamodule.hparams.batch_size
    return {
        "train_trials": n_train,
        "batches_run": f"{ran}/{n_batches}",
        "full_epoch": ran == n_batches,
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": {k: v for k, v in model_args.items() if k in ("hidden_dim", "n_blocks", "prior")},
        "setup_s": round(setup_s, 2),
        "fit_s": round(seconds, 2),
        "samples_per_s": round(seen / seconds, 1),
        "epoch_s": round(n_train / (seen / seconds), 1),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
    }


STAGES = {
    "stream": stage_stream,
    "load": stage_load,
    "extract": stage_extract,
    "train": stage_train,
}


def _run_stage(name: str, data: Path, train_batches: int) -> dict:
    """Run one stage in a fresh interpreter; return its JSON result."""
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--stage", name, "--data", str(data)]
    done = subprocess.run(
        [*command, "--train-batches", str(train_batches)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10, help="sessions of trials to simulate")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument(
        "--train-batches",
        type=int,
        default=40,
        help="training batches timed (0 = the whole epoch; ~200 at 10/40 sessions)",
    )
    parser.add_argument("--stage", choices=sorted(STAGES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data = args.data or REPO / f"data/sim/nsd-scale-sim-{args.sessions}of{FULL_SESSIONS}"
    if args.stage is not None:  # child process: one stage, JSON on the last stdout line
        if args.stage == "train":
            result = stage_train(data, args.train_batches or None)
        else:
            result = STAGES[args.stage](data)
        print(json.dumps(result))
        return result

    world = _ensure_world(data, args.sessions)
    config = scaled_config(args.sessions)
    stages = {
        name: _run_stage(name, data, args.train_batches)
        for name in ("stream", "load", "extract", "train")
    }
    voxels, per_session = stages["load"]["voxels"], config.trials_per_session
    full_trials = FULL_SESSIONS * per_session
    full_array_gib = full_trials * voxels * 4 / GIB
    peak = max(s["peak_rss_gib"] for s in stages.values())
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "world": {
            "config": "datasets/sim/nsd-scale.yaml",
            "fraction_of_sessions": f"{args.sessions}/{FULL_SESSIONS}",
            "sessions": args.sessions,
            "trials": stages["load"]["trials"],
            "images": config.n_images,
            "volume_xyz": config.grid,
            "nsdgeneral_voxels": voxels,
            "all_voxels": True,
            **world,
        },
        "stages": stages,
        "peak_rss_gib": peak,
        "budget_gib": BUDGET_GIB,
        "within_budget": peak < BUDGET_GIB,
        "projection_full_40_sessions": {
            "note": "by formula from the measured voxel count; not measured",
            "trials": full_trials,
            "loaded_array_gib": round(full_array_gib, 2),
            "betas_file_gb": round(
                stages["stream"]["betas_file_gb"] * FULL_SESSIONS / args.sessions, 1
            ),
            "stream_peak_rss_gib": stages["stream"]["peak_rss_gib"],
            "load_seconds": round(full_trials / stages["load"]["trials_per_s"], 0),
            "epoch_seconds": round(
                full_trials
                * stages["train"]["train_trials"]
                / stages["load"]["trials"]
                / stages["train"]["samples_per_s"],
                0,
            ),
        },
        "notes": [
            "stream/load read session files just written, so mostly from the page cache",
            "train: samples_per_s over the timed batches; epoch_s = train_trials / samples_per_s",
        ],
        "machine": {"cpus": os.cpu_count(), "note": "2 cores shared with other jobs"},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"nsd-scale ({args.sessions}/{FULL_SESSIONS} sessions, {voxels} voxels, all voxels)")
    print(f"{'stage':<8} {'seconds':>9} {'throughput':>22} {'peak RSS GiB':>13}")
    rows = [
        ("stream", stages["stream"]["seconds"], f"{stages['stream']['trials_per_s']} trials/s"),
        ("load", stages["load"]["seconds"], f"{stages['load']['trials_per_s']} trials/s"),
        ("extract", stages["extract"]["seconds"], f"{stages['extract']['images_per_s']} img/s"),
        ("train", stages["train"]["fit_s"], f"{stages['train']['samples_per_s']} samples/s"),
    ]
    for name, seconds, rate in rows:
        print(f"{name:<8} {seconds:>9} {rate:>22} {stages[name]['peak_rss_gib']:>13}")
    print(
        f"peak {peak:.2f} GiB of {BUDGET_GIB} GiB; 40-session trial matrix "
        f"{full_array_gib:.2f} GiB (projected); wrote {RESULTS}"
    )
    return result


if __name__ == "__main__":
    main()
