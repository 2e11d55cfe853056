"""Extraction sharded by rank: shards cover every id once and merge into the 1-process store.

The end-to-end test runs rank 1 of 2 as a separate ``neurodecode extract`` process (``RANK`` and
``WORLD_SIZE`` in its environment, as ``torchrun`` sets them) while rank 0 runs in this process,
waits for rank 1's done mark and merges; the merged store must equal a 1-process extraction bit
for bit (same ids in the same row order, same features, same settings).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from neurodecode.cli.extract import load_extract_config, run_extraction
from neurodecode.cli.main import main
from neurodecode.features.extract import resolve_rank
from neurodecode.features.store import FeatureStore, shard_ids
from neurodecode.validation import InvalidInputError

from ..conftest import REPO
from .test_command import nsd_root, write_config  # noqa: F401  (fixture)

SETTINGS = {"model": "planted", "dim": 3}


def planted(ids: list[str]) -> np.ndarray:
    """Features that depend on the id only: (len(ids), 3)."""
    x = np.array([int(i) for i in ids], dtype=np.float64)
    return np.column_stack([x, np.sin(x), x**0.5]).astype(np.float32)


def test_shard_ids_cover_every_id_once_in_whole_batches():
    ids = [5, 3, 5, *range(10, 30)]  # a duplicate: computed once
    unique = list(dict.fromkeys(str(i) for i in ids))
    shards = [shard_ids(ids, rank, 3, batch_size=4) for rank in range(3)]
    flat = [sid for shard in shards for sid in shard]
    assert sorted(flat) == sorted(unique) and len(flat) == len(unique)
    batches = [unique[i : i + 4] for i in range(0, len(unique), 4)]
    assert shards[1] == batches[1] + batches[4]  # every 3rd batch, as a 1-process fill cuts them
    with pytest.raises(InvalidInputError, match="rank"):
        shard_ids(ids, 3, 3, batch_size=4)


def test_merge_of_shards_equals_one_process_fill(tmp_path):
    ids = list(range(40, 3, -1))
    single = FeatureStore(tmp_path / "single.h5")
    single.fill("m", "l", ids, planted, SETTINGS, batch_size=5, progress=False)
    store = FeatureStore(tmp_path / "merged.h5")
    store.fill("m", "l", ids[:7], planted, SETTINGS, batch_size=5, progress=False)  # earlier run
    todo = ids[7:]
    for rank in range(2):
        shard = store.shard(rank, 2)
        shard.fill("m", "l", shard_ids(todo, rank, 2, 5), planted, SETTINGS, progress=False)
    assert len(store.shard_files()) == 2
    added = store.merge(store.shard_files(), order=todo)
    assert added == {("m", "l"): len(todo)}
    assert store.shard_files() == []
    assert store.stimulus_ids("m", "l").tolist() == single.stimulus_ids("m", "l").tolist()
    assert np.array_equal(store.read("m", "l"), single.read("m", "l"))
    assert store.settings("m", "l") == single.settings("m", "l")


def test_merge_refuses_conflicts_and_leaves_the_store(tmp_path):
    store = FeatureStore(tmp_path / "store.h5")
    store.fill("m", "l", [1, 2], planted, SETTINGS, progress=False)
    before = (tmp_path / "store.h5").read_bytes()
    other = store.shard(0, 2)
    other.fill("m", "l", [3], planted, {**SETTINGS, "dim": 4}, progress=False)
    with pytest.raises(InvalidInputError, match="different settings"):
        store.merge([other.path])
    a, b = store.shard(0, 2), store.shard(1, 2)
    a.path.unlink()
    a.fill("m", "l", [5], planted, SETTINGS, progress=False)
    b.fill("m", "l", [5], lambda ids: planted(ids) + 1, SETTINGS, progress=False)
    with pytest.raises(InvalidInputError, match="different m/l features in two shards"):
        store.merge([a.path, b.path])
    with pytest.raises(InvalidInputError, match="not found"):
        store.merge([tmp_path / "absent.h5"])
    assert (tmp_path / "store.h5").read_bytes() == before
    assert a.path.is_file() and b.path.is_file()  # nothing removed when the merge failed


def test_resolve_rank_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert resolve_rank() == (1, 4)
    assert resolve_rank(rank=0, world_size=1) == (0, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InvalidInputError, match="rank 4 of world size 4"):
        resolve_rank()


def test_two_ranks_merge_into_the_one_process_store(tmp_path, nsd_root, tiny_clip):  # noqa: F811
    root, _ = nsd_root
    common = dict(
        stimuli=str(root),
        model={"name": "sim-clip", "preset": "tiny"},
        outputs=["image", "text"],
        batch_size=2,
        device="cpu",
    )
    sharded = write_config(tmp_path / "sharded.yaml", store=str(tmp_path / "sharded.h5"), **common)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels in both processes: bit-identical features
    try:
        # rank 1 is "killed" before it starts: rank 0 gives up with an error naming it
        with pytest.raises(InvalidInputError, match=r"ranks \[1\] of 2"):
            run_extraction(
                load_extract_config(sharded), progress=False, rank=0, world_size=2, wait_timeout=0
            )
        assert not (tmp_path / "sharded.h5").exists()  # nothing merged, nothing partial
        env = {
            **os.environ,
            "RANK": "1",
            "WORLD_SIZE": "2",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        rank1 = subprocess.Popen(
            [sys.executable, "-m", "neurodecode.cli.main", "extract", "--config", str(sharded)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # rank 0 resumes: its shard is complete, it waits for rank 1 and merges
        computed = run_extraction(
            load_extract_config(sharded), progress=False, rank=0, world_size=2
        )
        out, err = rank1.communicate(timeout=120)
        assert rank1.returncode == 0, err[-2000:]
        assert computed == {"image": 0, "text": 0}
        assert "image: 6 stimuli computed" in out  # 12 ids in batches of 2: 3 batches each

        single = write_config(tmp_path / "single.yaml", store=str(tmp_path / "single.h5"), **common)
        assert main(["extract", "--config", str(single), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    merged, one = FeatureStore(tmp_path / "sharded.h5"), FeatureStore(tmp_path / "single.h5")
    assert merged.keys() == one.keys()
    for model, layer in one.keys():
        ids = one.stimulus_ids(model, layer)
        assert ids.tolist() == [str(i) for i in range(12)]  # nothing missing or duplicated
        assert merged.stimulus_ids(model, layer).tolist() == ids.tolist()
        assert np.array_equal(merged.read(model, layer), one.read(model, layer)), layer
        assert merged.settings(model, layer) == one.settings(model, layer)
    assert merged.shard_files() == []
    assert not list(tmp_path.glob(".sharded.h5.shard-*.done"))
