"""Distributed training on the CPU (gloo): 2 processes give the metrics of 1; FSDP trains as DDP.

One subprocess runs fit + test with ``strategy="ddp"``, ``devices=2`` on the tiny world (Lightning
re-executes the script for rank 1). The test set is split across the ranks by the datamodule's
rank-aware batch sampler and gathered back by :class:`RetrievalModule` before scoring, so the
DDP test of the DDP-trained weights must equal a 1-process test of the same weights exactly; and
the DDP-trained model must score like a 1-process fit within binomial noise.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import REPO
from .test_bad_inputs import build_feature_store

EPOCHS = 6
SCRIPT = textwrap.dedent(
    f"""
    import json
    import sys

    import lightning as L
    import torch

    from neurodecode.datamodules.nsd import NSDDataModule
    from neurodecode.cli.lightning import register_strategies
    from neurodecode.models.retrieval import RetrievalModule

    root, store, out, devices = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    strategy = sys.argv[5] if len(sys.argv) > 5 else "ddp"
    register_strategies()
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    data = NSDDataModule(root, store, feature_model="gt-projection", val_images=10, batch_size=32)
    model = RetrievalModule(
        data.geometry, hidden_dim=32, n_blocks=1, projector_dim=32, lr=3e-3, test_n_draws=5
    )
    trainer = L.Trainer(
        strategy=strategy if devices > 1 else "auto", devices=devices, accelerator="cpu",
        max_epochs={EPOCHS}, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
    )
    trainer.fit(model, datamodule=data)
    metrics = {{}}
    if not strategy.startswith("fsdp"):
        metrics = trainer.test(model, datamodule=data, verbose=False)[0]
    trainer.save_checkpoint(out + "/final.ckpt")  # collective: every rank calls it
    if trainer.global_rank == 0:
        result = {{"metrics": metrics, "global_step": trainer.global_step,
                  "world_size": trainer.world_size}}
        with open(out + "/result.json", "w") as handle:
            json.dump(result, handle)
    """
)


@pytest.fixture(scope="module")
def feature_store(tiny_nsd, tmp_path_factory) -> Path:
    return build_feature_store(tiny_nsd, tmp_path_factory.mktemp("features") / "features.h5")


def _fit_two_processes(tiny_nsd, feature_store, folder: Path, strategy: str) -> dict:
    """Run SCRIPT on 2 CPU processes with ``strategy``; its output folder and rank 0's result."""
    script = folder / "fit_and_test.py"
    script.write_text(SCRIPT)
    out = folder / strategy
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_nsd), str(feature_store), str(out), "2", strategy],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {"out": out, "script": script, **json.loads((out / "result.json").read_text())}


@pytest.fixture(scope="module")
def ddp_run(tiny_nsd, feature_store, tmp_path_factory) -> dict:
    return _fit_two_processes(tiny_nsd, feature_store, tmp_path_factory.mktemp("ddp"), "ddp")


def _run_in_process(script: Path, *argv: str) -> None:
    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved


def test_sampler_shards_batches_by_rank():
    from torch.utils.data import DistributedSampler

    from neurodecode.datamodules.nsd import SubjectBatchSampler

    subject_of = np.array([0] * 37 + [1] * 21)
    for drop_last in (False, True):
        shards = []
        for rank in (0, 1):
            ranks = DistributedSampler(range(58), num_replicas=2, rank=rank, shuffle=False)
            sampler = SubjectBatchSampler(subject_of, 8, drop_last=drop_last, seed=3, sampler=ranks)
            sampler.set_epoch(4)
            shards.append(list(sampler))
        assert len(shards[0]) == len(shards[1]), "ranks must run the same number of steps"
        single = SubjectBatchSampler(subject_of, 8, drop_last=drop_last, seed=3)
        single.set_epoch(4)
        everything = list(single)
        seen = [i for shard in shards for batch in shard for i in batch]
        if drop_last:  # 6 full batches, 3 per rank, no repeats
            assert sorted(seen) == sorted(i for b in everything for i in b)
        else:  # 8 batches (5 + 3), 4 per rank: every index at least once, nothing invented
            assert set(seen) == set(range(58))
        for shard in shards:
            assert all(len(set(subject_of[b])) == 1 for b in shard)


def test_ddp_two_processes_match_one(tiny_nsd, feature_store, ddp_run, tmp_path):
    ddp, ddp_out, script = ddp_run, ddp_run["out"], ddp_run["script"]
    single_out = tmp_path / "single"
    single_out.mkdir()
    assert ddp["world_size"] == 2

    _run_in_process(script, str(tiny_nsd), str(feature_store), str(single_out), "1")
    single = json.loads((single_out / "result.json").read_text())
    # each rank ran half of the training batches per epoch (the sampler shards by rank)
    assert ddp["global_step"] * 2 == single["global_step"]

    # the test set was gathered: all 60 shared images scored, as with one process
    assert ddp["metrics"]["test/subj01/n_way"] == single["metrics"]["test/subj01/n_way"] == 60.0

    # the DDP-trained weights tested by one process give exactly the DDP test metrics
    import lightning as L

    from neurodecode.datamodules.nsd import NSDDataModule
    from neurodecode.models.retrieval import RetrievalModule

    checkpoint = torch.load(ddp_out / "final.ckpt", map_location="cpu", weights_only=True)
    data = NSDDataModule(
        str(tiny_nsd),
        str(feature_store),
        feature_model="gt-projection",
        val_images=10,
        batch_size=32,
    )
    model = RetrievalModule(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path / "retest",
    )
    retest = trainer.test(model, datamodule=data, verbose=False)[0]
    for key, value in ddp["metrics"].items():
        assert retest[key] == pytest.approx(value, abs=1e-6), key

    # and the DDP fit scores like the 1-process fit within binomial noise (60 test images)
    for key in ("test/brain_to_image_top5", "test/image_to_brain_top5"):
        p = (ddp["metrics"][key] + single["metrics"][key]) / 2
        noise = 3 * np.sqrt(2 * max(p * (1 - p), 0.05) / 60)
        assert abs(ddp["metrics"][key] - single["metrics"][key]) <= noise, (key, ddp, single)


def test_fsdp_two_processes_train_the_ddp_weights(tiny_nsd, feature_store, ddp_run, tmp_path):
    from torch.distributed.fsdp import FullyShardedDataParallel  # noqa: F401  (FSDP available)

    from neurodecode.models.retrieval import RetrievalModule

    fsdp = _fit_two_processes(tiny_nsd, feature_store, tmp_path, "fsdp_linear_cpu")
    assert fsdp["world_size"] == 2
    assert fsdp["global_step"] == ddp_run["global_step"]
    sharded = torch.load(fsdp["out"] / "final.ckpt", map_location="cpu", weights_only=True)
    reference = torch.load(ddp_run["out"] / "final.ckpt", map_location="cpu", weights_only=True)
    # the full (gathered) state dict: every parameter at its full shape, no FSDP prefixes
    assert sharded["state_dict"].keys() == reference["state_dict"].keys()
    # same trajectory up to float summation order (Adam magnifies it on near-zero gradients:
    # ~5e-5 after 6 epochs here, on weights of ~0.1)
    difference, norm = 0.0, 0.0
    for key, value in reference["state_dict"].items():
        assert sharded["state_dict"][key].shape == value.shape, key
        torch.testing.assert_close(sharded["state_dict"][key], value, atol=5e-4, rtol=0)
        difference += float((sharded["state_dict"][key] - value).double().pow(2).sum())
        norm += float(value.double().pow(2).sum())
    assert difference**0.5 < 1e-3 * norm**0.5
    model = RetrievalModule(**sharded["hyper_parameters"])
    model.load_state_dict(sharded["state_dict"])  # strict: loads into an unwrapped model


def test_fsdp_experiment_parses_and_wraps_every_linear(capsys):
    from lightning.pytorch.strategies import FSDPStrategy, StrategyRegistry
    from torch import nn

    from neurodecode.cli.lightning import CPUFSDPStrategy, register_strategies
    from neurodecode.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", "-c", str(REPO / "experiments/sim_retrieval_fsdp.yaml"), "--print_config"])
    assert exit_.value.code == 0
    assert "strategy: fsdp_linear" in capsys.readouterr().out
    register_strategies()
    register_strategies()  # idempotent
    for name, kind in (("fsdp_linear", FSDPStrategy), ("fsdp_linear_cpu", CPUFSDPStrategy)):
        strategy = StrategyRegistry.get(name)
        assert type(strategy) is kind
        policy = strategy.kwargs["auto_wrap_policy"]
        assert set(policy._module_classes) == {nn.Linear}
    assert StrategyRegistry.get("fsdp_linear_cpu").process_group_backend == "gloo"
