"""FeatureStore.merge streams its shards: block by block it gives what reading every shard whole
gives, with memory bounded by a block, not by the shards."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import neurodecode.features.store as store_module
from neurodecode.features.store import FeatureStore, shard_ids
from neurodecode.validation import InvalidInputError


def planted(width: int, dtype=np.float32):
    """Features that depend on the id only: (len(ids), 2, width)."""

    def compute(ids: list[str]) -> np.ndarray:
        x = np.array([int(i) for i in ids], dtype=np.float64)[:, None, None]
        grid = np.arange(2 * width).reshape(1, 2, width)
        return np.sin(x * 0.37 + grid).astype(dtype)

    return compute


def whole_read_merge(store_path, shard_paths, order):
    """The reference: every shard read whole, first occurrence kept, ordered as merge orders."""
    import h5py

    result = {}
    with h5py.File(store_path, "r") as f:
        have = {k: set(f[k]["stimulus_ids"].asstr()[...]) for k in ("m/a", "m/b") if k in f}
    for path in shard_paths:
        with h5py.File(path, "r") as f:
            for key in ("m/a", "m/b"):
                if key not in f:
                    continue
                rows = result.setdefault(key, {})
                ids, data = f[key]["stimulus_ids"].asstr()[...], f[key]["features"][...]
                for sid, row in zip(ids, data):
                    if sid not in have.get(key, set()) and sid not in rows:
                        rows[sid] = row
    rank = {str(sid): i for i, sid in enumerate(order)}
    return {
        key: sorted(rows.items(), key=lambda item: rank.get(item[0], len(rank)))
        for key, rows in result.items()
    }


def _shards(tmp_path, name):
    """A store with earlier rows and three shards: two entries (float32, float16), ids in
    interleaved batches, and ids held by two shards (equal rows)."""
    store = FeatureStore(tmp_path / name)
    ids = list(range(200, 60, -1))
    store.fill("m", "a", ids[:9], planted(5), {"e": "a"}, progress=False)
    todo = ids[9:]
    for rank in range(3):
        shard = store.shard(rank, 3)
        mine = shard_ids(todo, rank, 3, batch_size=7)
        shard.fill("m", "a", mine, planted(5), {"e": "a"}, batch_size=7, progress=False)
        shard.fill(
            "m", "b", mine, planted(3, np.float16), {"e": "b"}, progress=False, dtype="float16"
        )
        if rank == 2:  # also holds some of rank 0's and 1's ids, and unlisted ones
            extra = [*shard_ids(todo, 0, 3, 7)[:10], 7, 3, 5]
            shard.fill("m", "a", extra, planted(5), {"e": "a"}, progress=False)
    return store, todo[: len(todo) // 2]  # half the ids listed in order, the rest follow


@pytest.mark.parametrize("block_rows", [1, 3, 16, None])
def test_streamed_merge_equals_the_whole_read_merge(tmp_path, monkeypatch, block_rows):
    store, order = _shards(tmp_path, "store.h5")
    shards = store.shard_files()
    expected = whole_read_merge(store.path, shards, order)
    earlier = store.stimulus_ids("m", "a").tolist()
    if block_rows is not None:  # rows of entry a are 2 x 5 float32 = 40 bytes
        monkeypatch.setattr(store_module, "_MERGE_BLOCK_BYTES", 40 * block_rows)
    added = store.merge(shards, order=order)
    assert added == {("m", "a"): len(expected["m/a"]), ("m", "b"): len(expected["m/b"])}
    assert store.stimulus_ids("m", "a").tolist() == earlier + [sid for sid, _ in expected["m/a"]]
    tail = store.read("m", "a")[len(earlier) :]
    assert np.array_equal(tail, np.stack([row for _, row in expected["m/a"]]).astype(np.float32))
    assert store.stimulus_ids("m", "b").tolist() == [sid for sid, _ in expected["m/b"]]
    import h5py

    with h5py.File(store.path, "r") as f:  # float16 entries are copied as float16, bit for bit
        assert f["m/b/features"].dtype == np.float16
        assert np.array_equal(f["m/b/features"][...], np.stack([r for _, r in expected["m/b"]]))
    assert store.shard_files() == []


def test_conflict_in_a_later_block_is_found_and_leaves_the_store(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_MERGE_BLOCK_BYTES", 40 * 2)
    store = FeatureStore(tmp_path / "store.h5")
    store.fill("m", "a", [1], planted(5), {"e": "a"}, progress=False)
    before = store.path.read_bytes()
    a, b = store.shard(0, 2), store.shard(1, 2)
    a.fill("m", "a", list(range(10, 20)), planted(5), {"e": "a"}, progress=False)

    def equal_then_not(ids: list[str]) -> np.ndarray:  # differs at id 18 only
        return planted(5)(ids) + (np.array([int(i) for i in ids]) == 18)[:, None, None]

    b.fill("m", "a", list(range(10, 20)), equal_then_not, {"e": "a"}, progress=False)
    with pytest.raises(InvalidInputError, match="stimulus id '18' has different m/a features"):
        store.merge([a.path, b.path])
    assert store.path.read_bytes() == before and a.path.is_file() and b.path.is_file()
    c = store.shard(0, 3)
    c.fill("m", "a", [30], planted(4), {"e": "a"}, progress=False)
    with pytest.raises(InvalidInputError, match="rows of shape"):
        store.merge([a.path, c.path])


def test_merge_memory_is_bounded_by_a_block(tmp_path, monkeypatch):
    """16 MB of shard rows merged in 256 kB blocks: numpy's traced peak stays under a quarter of it
    (the whole-read merge's was twice the rows: 32 MiB)."""
    store = FeatureStore(tmp_path / "big.h5")
    ids = list(range(2000))
    width = 1024  # rows of 2 x 1024 float32 = 8 kB
    for rank in range(2):
        shard = store.shard(rank, 2)
        shard.fill("m", "a", shard_ids(ids, rank, 2, 50), planted(width), {}, progress=False)
    monkeypatch.setattr(store_module, "_MERGE_BLOCK_BYTES", 2**18)
    tracemalloc.start()
    try:
        store.merge(store.shard_files(), order=ids)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = len(ids) * 2 * width * 4
    assert peak < total / 4, f"peak {peak / 2**20:.1f} MiB for {total / 2**20:.0f} MiB of rows"
    assert np.array_equal(store.read("m", "a"), planted(width)([str(i) for i in ids]))
