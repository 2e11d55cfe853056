"""Kill-and-resume: a SIGKILLed feature extraction or training run resumes to the same result.

The killed work runs in a forked child process (no re-import, so each test stays within seconds);
the parent checks that what the kill left on disk is readable, resumes, and compares with an
uninterrupted run of the same seeded job on the CPU.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from .test_bad_inputs import build_feature_store

N_STIMULI, FEATURE_DIM = 96, 6


def _features(ids: list[str]) -> np.ndarray:
    """The 'network': a deterministic function of the stimulus id."""
    rows = [np.random.default_rng(int(i)).normal(size=FEATURE_DIM) for i in ids]
    return np.asarray(rows, dtype=np.float32)


def _slow_features(ids: list[str]) -> np.ndarray:
    time.sleep(0.1)
    return _features(ids)


def _fill(path: Path, compute) -> int:
    from neurodecode.features.store import FeatureStore

    return FeatureStore(path).fill(
        "net",
        "layer",
        np.arange(N_STIMULI),
        compute,
        {"net": "test"},
        batch_size=4,
        progress=False,
        checkpoint_every=1,
    )


def _rows_in(path: Path) -> int:
    try:
        with h5py.File(path, "r") as f:
            return int(f["net/layer/features"].shape[0])
    except (OSError, KeyError):
        return 0


def _fork(target, *args) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    process.start()
    return process


def test_feature_extraction_killed_resumes_to_the_same_store(tmp_path):
    store = tmp_path / "features.h5"
    child = _fork(_fill, store, _slow_features)
    deadline = time.monotonic() + 30
    while _rows_in(store) < 12 and time.monotonic() < deadline and child.is_alive():
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL, "the extraction finished before it was killed"

    # what the kill left is a complete, readable store holding a prefix of the work
    done = _rows_in(store)
    assert 12 <= done < N_STIMULI
    from neurodecode.features.store import FeatureStore

    kept = FeatureStore(store).stimulus_ids("net", "layer")
    np.testing.assert_array_equal(FeatureStore(store).read("net", "layer", kept), _features(kept))

    # the rerun computes only what is missing; the result equals an uninterrupted fill
    asked: list[str] = []

    def counting(ids):
        asked.extend(ids)
        return _features(ids)

    assert _fill(store, counting) == N_STIMULI - done
    assert not set(asked) & set(kept)
    reference = tmp_path / "reference.h5"
    _fill(reference, _features)
    ids = np.arange(N_STIMULI)
    np.testing.assert_array_equal(
        FeatureStore(store).read("net", "layer", ids),
        FeatureStore(reference).read("net", "layer", ids),
    )
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert not leftovers, f"temporary files left behind: {leftovers}"


# ----------------------------------------------------------------------------- training

EPOCHS = 4


def _train(run_dir: Path, root: Path, store: Path, kill_at_epoch: int | None = None) -> dict:
    """Fit the retrieval head on the tiny world for EPOCHS epochs, checkpointing every epoch;
    resume from ``last.ckpt`` when the run folder has one."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    from neurodecode.datamodules.nsd import NSDDataModule
    from neurodecode.models.retrieval import RetrievalModule

    class EpochSeed(Callback):
        """Reseed at each epoch's first batch: Lightning does not checkpoint the global RNG, so
        this is what makes a resumed run draw the same dropout/MixCo numbers."""

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if batch_idx == 0:
                L.seed_everything(1000 + trainer.current_epoch, verbose=False)

    class Kill(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if trainer.current_epoch == kill_at_epoch and batch_idx == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    data = NSDDataModule(
        str(root), str(store), feature_model="gt-projection", val_images=10, batch_size=32
    )
    model = RetrievalModule(
        data.geometry, hidden_dim=16, n_blocks=1, projector_dim=16, test_n_draws=2
    )
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, every_n_epochs=1)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        deterministic=True,
        callbacks=[checkpoint, EpochSeed(), Kill()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    resume = "last" if (run_dir / "checkpoints/last.ckpt").is_file() else None
    trainer.fit(model, datamodule=data, ckpt_path=resume)
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "metrics": metrics,
        "steps_per_epoch": trainer.num_training_batches,
    }


@pytest.fixture(scope="module")
def feature_store(tiny_nsd, tmp_path_factory) -> Path:
    return build_feature_store(tiny_nsd, tmp_path_factory.mktemp("features") / "features.h5")


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_training_killed_resumes_to_the_same_weights(tiny_nsd, feature_store, tmp_path):
    reference = _train(tmp_path / "uninterrupted", tiny_nsd, feature_store)

    run = tmp_path / "killed"
    child = _fork(_train, run, tiny_nsd, feature_store, 2)
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL, "training was not killed"

    # the kill (in epoch 2) left a complete checkpoint of the end of epoch 1, nothing half-written
    last = run / "checkpoints/last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    step = 2 * reference["steps_per_epoch"]
    assert names == [f"epoch=1-step={step}.ckpt", "last.ckpt"], names

    resumed = _train(run, tiny_nsd, feature_store)
    assert resumed["state"].keys() == reference["state"].keys()
    for key, value in reference["state"].items():
        torch.testing.assert_close(resumed["state"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    final = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert final["epoch"] == EPOCHS - 1
