"""FeatureStore: an HDF5 cache of activations keyed by stimulus id, one entry per (model, layer).

Layout of the file::

    /<model>/<layer>/features       float32 (or float16, see ``fill(dtype=)``), shape
                                    (n, *feature_shape), rows in insertion order
    /<model>/<layer>/stimulus_ids   str, shape (n,), the stimulus id of each row
    attributes of /<model>/<layer>: model_name, layer (the names as given), settings (JSON)

``<model>`` and ``<layer>`` are the names with every character outside ``[A-Za-z0-9._@=+-]``
replaced by ``_``. Stimulus ids are stored as strings; ints are accepted everywhere and converted
with :func:`str`.

Writes are atomic: :meth:`FeatureStore.fill` copies the store to a temporary file in the same
folder, appends a chunk of rows there and moves it over the store with :func:`os.replace`. A kill at
any moment leaves either the previous or the next complete store, never a corrupt one, and loses at
most the chunk being computed. Because every checkpoint copies the file, checkpoints are spaced by
``checkpoint_every`` batches; raise it for stores of many gigabytes. A lock file keeps two processes
from filling the same store at once.

Sharded filling (several processes or GPUs): rank ``r`` of ``w`` fills its own shard store
(:meth:`FeatureStore.shard`) with the ids :func:`shard_ids` gives it, then one process merges the
shards into the store with :meth:`FeatureStore.merge`, in one atomic commit. A killed rank resumes
its shard; the store itself only ever holds complete merges.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from neurodecode._version import __version__
from neurodecode.validation import InvalidInputError

_UNSAFE = re.compile(r"[^A-Za-z0-9._@=+-]")


def _safe(name: str, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"{what} must be a non-empty string; got {name!r}.")
    return _UNSAFE.sub("_", name)


def _as_ids(stimulus_ids: Sequence[int | str] | np.ndarray) -> np.ndarray:
    """Stimulus ids as a 1-D array of Python-``str`` objects (ints converted with ``str``)."""
    ids = np.asarray(stimulus_ids, dtype=object).reshape(-1)
    return np.array([str(i) for i in ids], dtype=object)


def _canonical(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings after a JSON round trip (tuples -> lists, keys sorted), as they will be stored."""
    try:
        return json.loads(json.dumps(settings, sort_keys=True))
    except TypeError as err:
        raise InvalidInputError(f"settings must be JSON-serialisable: {err}.") from None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the features: torch, open_clip, neurodecode, numpy.

    Read from the installed distributions' metadata, so that nothing heavy is imported.
    """
    from importlib.metadata import PackageNotFoundError, version

    versions = {"neurodecode": __version__, "numpy": np.__version__}
    for key, dist in (("torch", "torch"), ("open_clip", "open_clip_torch")):
        try:
            versions[key] = version(dist)
        except PackageNotFoundError:  # pragma: no cover - both are dependencies
            versions[key] = "absent"
    return versions


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


class FeatureStore:
    """Activations of models at layers, keyed by stimulus id, in one HDF5 file.

    Parameters
    ----------
    path : str or Path
        The HDF5 file. It need not exist yet; :meth:`fill` creates it.

    Examples
    --------
    >>> store = FeatureStore("features.h5")
    >>> store.fill("sim-clip-default", "pooled", ids, compute, settings=encoder.settings)
    >>> x = store.read("sim-clip-default", "pooled", ids[:10])  # (10, 128) float32
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise InvalidInputError(f"FeatureStore path {self.path} exists and is not a file.")

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, entries={len(self.keys())})"

    # ------------------------------------------------------------------ reading

    @contextlib.contextmanager
    def _open(self) -> Iterator[h5py.File]:
        if not self.path.is_file():
            raise InvalidInputError(
                f"FeatureStore not found: expected an HDF5 file at {self.path}."
            )
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise InvalidInputError(
                f"FeatureStore {self.path} is not a readable HDF5 file ({err})."
            ) from None
        try:
            yield f
        finally:
            f.close()

    def _group(self, f: h5py.File, model_name: str, layer: str) -> h5py.Group:
        key = f"{_safe(model_name, 'model_name')}/{_safe(layer, 'layer')}"
        if key not in f:
            known = ", ".join(f"{m}/{la}" for m, la in self._keys(f)) or "none"
            raise InvalidInputError(
                f"FeatureStore {self.path} has no entry for model {model_name!r}, layer {layer!r}; "
                f"entries: {known}."
            )
        return f[key]

    @staticmethod
    def _keys(f: h5py.File) -> list[tuple[str, str]]:
        keys = []
        for model_group in f.values():
            for group in model_group.values():
                if isinstance(group, h5py.Group) and "features" in group:
                    keys.append((str(group.attrs["model_name"]), str(group.attrs["layer"])))
        return sorted(keys)

    def keys(self) -> list[tuple[str, str]]:
        """The ``(model_name, layer)`` entries in the store (empty if the file does not exist)."""
        if not self.path.is_file():
            return []
        with self._open() as f:
            return self._keys(f)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return tuple(key) in self.keys()

    def stimulus_ids(self, model_name: str, layer: str) -> np.ndarray:
        """The stimulus ids held for ``(model_name, layer)``, shape (n,), str, in row order."""
        with self._open() as f:
            group = self._group(f, model_name, layer)
            return group["stimulus_ids"].asstr()[...].astype(str)

    def settings(self, model_name: str, layer: str) -> dict[str, Any]:
        """The settings recorded when ``(model_name, layer)`` was first filled."""
        with self._open() as f:
            return json.loads(self._group(f, model_name, layer).attrs["settings"])

    def feature_shape(self, model_name: str, layer: str) -> tuple[int, ...]:
        """The shape of one row of ``(model_name, layer)``."""
        with self._open() as f:
            return tuple(self._group(f, model_name, layer)["features"].shape[1:])

    def read(
        self,
        model_name: str,
        layer: str,
        stimulus_ids: Sequence[int | str] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Read features, in the order of ``stimulus_ids`` (all rows in store order if ``None``).

        Returns
        -------
        ndarray, shape (n, *feature_shape), float32

        Raises
        ------
        InvalidInputError
            If some ids are not in the store (the message says how many and names the first few).
        """
        with self._open() as f:
            group = self._group(f, model_name, layer)
            data = group["features"]
            if stimulus_ids is None:
                return np.asarray(data[...], dtype=np.float32)
            stored = group["stimulus_ids"].asstr()[...]
            row_of = {sid: row for row, sid in enumerate(stored)}
            wanted = _as_ids(stimulus_ids)
            missing = [sid for sid in wanted if sid not in row_of]
            if missing:
                raise InvalidInputError(
                    f"FeatureStore {self.path} ({model_name}/{layer}) lacks {len(missing)} of the "
                    f"{len(wanted)} stimulus ids asked for (first: {missing[:5]}); fill it first."
                )
            rows = np.array([row_of[sid] for sid in wanted], dtype=np.int64)
            if len(rows) == 0:
                return np.empty((0, *data.shape[1:]), dtype=np.float32)
            if len(rows) > data.shape[0] // 4:  # many rows: one sequential read is fastest
                return np.asarray(data[...], dtype=np.float32)[rows]
            unique, inverse = np.unique(rows, return_inverse=True)
            return np.asarray(data[unique], dtype=np.float32)[inverse]

    # ------------------------------------------------------------------ writing

    def _check_settings(
        self, f: h5py.File | None, model_name: str, layer: str, settings: dict[str, Any]
    ) -> None:
        if f is None:
            return
        key = f"{_safe(model_name, 'model_name')}/{_safe(layer, 'layer')}"
        if key not in f:
            return
        group = f[key]
        if (group.attrs["model_name"], group.attrs["layer"]) != (model_name, layer):
            raise InvalidInputError(
                f"FeatureStore {self.path}: ({model_name!r}, {layer!r}) maps to the same group "
                f"{key!r} as ({group.attrs['model_name']!r}, {group.attrs['layer']!r}); rename one."
            )
        recorded = json.loads(group.attrs["settings"])
        differing = sorted(
            k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k)
        )
        if differing:
            detail = "; ".join(
                f"{k}: stored {recorded.get(k, '<absent>')!r}, given {settings.get(k, '<absent>')!r}"
                for k in differing[:6]
            )
            raise InvalidInputError(
                f"FeatureStore {self.path} ({model_name}/{layer}) was filled with different "
                f"settings; refusing to mix them. Differing keys: {differing} ({detail}). Use "
                "another store path or layer name, or delete the entry first."
            )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InvalidInputError(
                    f"FeatureStore {self.path} is being written by another process "
                    f"(lock {lock_path}); wait for it to finish."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_stale_temporaries(self) -> None:
        for tmp in self.path.parent.glob(f".{self.path.name}.tmp-*"):
            match = re.search(r"\.tmp-(\d+)-", tmp.name)
            if match and not _pid_alive(int(match.group(1))):
                tmp.unlink(missing_ok=True)

    def _commit(self, write: Callable[[h5py.File], None]) -> None:
        """Copy the store to a temporary file, apply ``write`` to it, and replace the store."""
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{self.path.name}.tmp-{os.getpid()}-", dir=self.path.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if self.path.is_file():
                shutil.copyfile(self.path, tmp)
                mode = "r+"
            else:
                mode = "w"
            with h5py.File(tmp, mode) as f:
                write(f)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, model_name: str, layer: str) -> None:
        """Remove the entry ``(model_name, layer)`` (atomically, by rewriting the file)."""
        key = f"{_safe(model_name, 'model_name')}/{_safe(layer, 'layer')}"
        with self._lock():
            with self._open() as f:
                self._group(f, model_name, layer)

            def write(f: h5py.File) -> None:
                del f[key]

            self._commit(write)
            # HDF5 does not give back the space of deleted datasets; rewrite compactly.
            fd, tmp_name = tempfile.mkstemp(
                prefix=f".{self.path.name}.tmp-{os.getpid()}-", dir=self.path.parent
            )
            os.close(fd)
            try:
                with h5py.File(self.path, "r") as src, h5py.File(tmp_name, "w") as dst:
                    for name in src:
                        src.copy(src[name], dst, name=name)
                os.replace(tmp_name, self.path)
            finally:
                Path(tmp_name).unlink(missing_ok=True)

    def fill(
        self,
        model_name: str,
        layer: str,
        stimulus_ids: Sequence[int | str] | np.ndarray,
        compute: Callable[[list[str]], np.ndarray | Any],
        settings: dict[str, Any],
        batch_size: int = 64,
        progress: bool = True,
        checkpoint_every: int = 16,
        dtype: str = "float32",
    ) -> int:
        """Compute and store the features of the ids the store lacks; return how many were computed.

        Parameters
        ----------
        model_name, layer : str
            The entry to fill.
        stimulus_ids : sequence of int or str
            The ids wanted. Ids already stored are skipped (the fill is resumable); duplicates are
            computed once.
        compute : callable
            ``compute(ids) -> array`` of shape (len(ids), *feature_shape) for a list of string ids
            (a torch tensor is accepted too). It must give the same feature shape for every batch.
        settings : dict
            What determines the features: model name, weights tag or checkpoint hash,
            preprocessing, image size, ... (JSON-serialisable). The versions of
            :func:`library_versions` are added under ``"versions"``. An existing entry whose
            recorded settings differ is refused.
        batch_size : int
            Ids per ``compute`` call.
        progress : bool
            Show a tqdm progress bar.
        checkpoint_every : int
            Batches per atomic checkpoint; a kill loses at most this many batches. At most this
            many computed batches are held in memory at once (MindEye2's 256 x 1664 tokens are
            0.85 MB per image in float16), so memory is bounded by ``checkpoint_every *
            batch_size`` rows, never by the number of ids.
        dtype : {"float32", "float16"}
            Storage type of the rows (``read`` always returns float32). ``float16`` halves the
            file for token-level targets; it is recorded in the settings as ``storage_dtype``,
            so an entry is never filled with both.

        Returns
        -------
        int
            Number of rows computed and written.
        """
        if batch_size < 1 or checkpoint_every < 1:
            raise InvalidInputError(
                f"batch_size and checkpoint_every must be >= 1; got {batch_size}, "
                f"{checkpoint_every}."
            )
        if not isinstance(settings, dict):
            raise InvalidInputError(f"settings must be a dict; got {type(settings).__name__}.")
        if dtype not in ("float32", "float16"):
            raise InvalidInputError(f"dtype={dtype!r}; expected 'float32' or 'float16'.")
        if dtype != "float32":  # float32 stores keep the settings they were written with
            settings = {**settings, "storage_dtype": dtype}
        settings = _canonical({**settings, "versions": library_versions()})
        key = f"{_safe(model_name, 'model_name')}/{_safe(layer, 'layer')}"
        wanted = list(dict.fromkeys(_as_ids(stimulus_ids)))  # unique, order kept

        with self._lock():
            self._remove_stale_temporaries()
            have: set[str] = set()
            if self.path.is_file():
                with self._open() as f:
                    self._check_settings(f, model_name, layer, settings)
                    if key in f:
                        have = set(f[key]["stimulus_ids"].asstr()[...])
            todo = [sid for sid in wanted if sid not in have]
            if not todo:
                return 0

            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(todo),
                desc=f"{model_name}/{layer}",
                unit="stim",
                disable=not progress,
                initial=0,
            )
            pending_ids: list[str] = []
            pending_rows: list[np.ndarray] = []
            shape: tuple[int, ...] | None = None
            done = 0
            try:
                for start in range(0, len(todo), batch_size):
                    batch = todo[start : start + batch_size]
                    rows = compute(list(batch))
                    rows = _to_numpy(rows)
                    if rows.ndim < 1 or rows.shape[0] != len(batch):
                        raise InvalidInputError(
                            f"compute returned shape {rows.shape} for {len(batch)} ids; expected "
                            f"({len(batch)}, *feature_shape)."
                        )
                    if shape is None:
                        shape = tuple(rows.shape[1:])
                    elif tuple(rows.shape[1:]) != shape:
                        raise InvalidInputError(
                            f"compute returned rows of shape {rows.shape[1:]} after {shape}; every "
                            "batch must have the same feature shape."
                        )
                    if dtype == "float16" and np.any(np.abs(rows) > np.finfo(np.float16).max):
                        raise InvalidInputError(
                            f"compute returned features beyond the float16 range for ids "
                            f"{batch[:5]}...; store them with dtype='float32'."
                        )
                    if not np.all(np.isfinite(rows)):
                        raise InvalidInputError(
                            f"compute returned NaN/inf features for ids {batch[:5]}...; refusing "
                            "to store them."
                        )
                    pending_ids.extend(batch)
                    pending_rows.append(rows.astype(dtype, copy=False))
                    bar.update(len(batch))
                    if len(pending_rows) >= checkpoint_every:
                        self._append(key, model_name, layer, settings, pending_ids, pending_rows)
                        done += len(pending_ids)
                        pending_ids, pending_rows = [], []
                if pending_rows:
                    self._append(key, model_name, layer, settings, pending_ids, pending_rows)
                    done += len(pending_ids)
            finally:
                bar.close()
            return done

    def _append(
        self,
        key: str,
        model_name: str,
        layer: str,
        settings: dict[str, Any],
        ids: list[str],
        rows: list[np.ndarray],
    ) -> None:
        block = np.concatenate(rows, axis=0)

        def write(f: h5py.File) -> None:
            self._write_rows(f, key, model_name, layer, settings, ids, block)

        self._commit(write)

    def _write_rows(
        self,
        f: h5py.File,
        key: str,
        model_name: str,
        layer: str,
        settings: dict[str, Any],
        ids: list[str],
        block: np.ndarray,
    ) -> None:
        """Append ``block`` (len(ids), *feature_shape) to the entry ``key`` of the open file."""
        if key not in f:
            group = f.require_group(key)
            group.attrs["model_name"] = model_name
            group.attrs["layer"] = layer
            group.attrs["settings"] = json.dumps(settings, sort_keys=True)
            for name, value in settings.items():  # readable with h5ls/h5dump as well
                if isinstance(value, str | int | float | bool):
                    group.attrs[f"setting.{name}"] = value
            row_bytes = max(1, int(np.prod(block.shape[1:])) * block.dtype.itemsize)
            chunk_rows = int(max(1, min(1024, (1 << 20) // row_bytes)))
            group.create_dataset(
                "features",
                shape=(0, *block.shape[1:]),
                maxshape=(None, *block.shape[1:]),
                dtype=np.float16 if block.dtype == np.float16 else np.float32,
                chunks=(chunk_rows, *block.shape[1:]),
            )
            group.create_dataset(
                "stimulus_ids",
                shape=(0,),
                maxshape=(None,),
                dtype=h5py.string_dtype(),
                chunks=(4096,),
            )
        group = f[key]
        data, sids = group["features"], group["stimulus_ids"]
        if tuple(data.shape[1:]) != tuple(block.shape[1:]):
            raise InvalidInputError(
                f"FeatureStore {self.path} ({model_name}/{layer}) holds rows of shape "
                f"{data.shape[1:]}; compute returned {block.shape[1:]}."
            )
        n = data.shape[0]
        data.resize(n + len(block), axis=0)
        data[n:] = block
        sids.resize(n + len(ids), axis=0)
        sids[n:] = np.array(ids, dtype=object)

    # ------------------------------------------------------------------ sharded filling

    def shard(self, rank: int, world_size: int) -> FeatureStore:
        """The store that rank ``rank`` of ``world_size`` fills before :meth:`merge`.

        A hidden sibling file ``.<name>.shard-<rank>-of-<world_size>.h5``: filling it is atomic
        and resumable like any store, and no two ranks write the same file.
        """
        _check_rank(rank, world_size)
        name = f".{self.path.name}.shard-{rank}-of-{world_size}.h5"
        return FeatureStore(self.path.with_name(name))

    def shard_files(self) -> list[Path]:
        """Shard files of this store left in its folder (any world size), sorted."""
        return sorted(self.path.parent.glob(f".{self.path.name}.shard-*-of-*.h5"))

    def merge(
        self,
        shards: Sequence[str | Path],
        order: Sequence[int | str] | np.ndarray | None = None,
        remove: bool = True,
    ) -> dict[tuple[str, str], int]:
        """Move the rows of shard stores into this store in one atomic commit.

        The shards are streamed: a first pass reads only their ids and settings; then rows are
        copied in blocks of at most ``_MERGE_BLOCK_BYTES`` (and the rows an id has in two shards
        compared in such blocks), so memory is bounded by one block, never by the shards' size.

        Parameters
        ----------
        shards : sequence of path
            Shard stores (see :meth:`shard`); missing files are an error.
        order : sequence of int or str, optional
            Stimulus ids in the order new rows are appended (ids not listed follow in shard
            order). With the ids given to a 1-process :meth:`fill`, the merged store has the rows
            of that fill, in its order.
        remove : bool
            Delete the shard files once the merged store is in place.

        Returns
        -------
        dict of (model_name, layer) -> int
            Rows added per entry.

        Raises
        ------
        InvalidInputError
            A shard is missing or unreadable, its settings or row shape differ from another
            shard's or from the store's, or one stimulus id has different features in two
            shards. The store is then left as it was.
        """
        paths = [Path(p) for p in shards]
        rank_of = {} if order is None else {sid: i for i, sid in enumerate(_as_ids(order))}
        with self._lock():
            self._remove_stale_temporaries()
            have: dict[str, set[str]] = {}
            if self.path.is_file():
                with self._open() as f:
                    for model_name, layer in self._keys(f):
                        group = self._group(f, model_name, layer)
                        have[group.name.lstrip("/")] = set(group["stimulus_ids"].asstr()[...])
            entries = self._plan_merge(paths, have)
            with contextlib.ExitStack() as stack:
                files = [stack.enter_context(FeatureStore(p)._open()) for p in paths]
                for key, entry in entries.items():
                    self._compare_duplicates(files, paths, key, entry)
                added = {entry["name"]: len(entry["source"]) for entry in entries.values()}
                if any(added.values()):

                    def write(f: h5py.File) -> None:
                        for key, entry in entries.items():
                            ids = sorted(
                                entry["source"], key=lambda sid: rank_of.get(sid, len(rank_of))
                            )
                            step = _block_rows(entry["shape"], entry["dtype"])
                            for start in range(0, len(ids), step):
                                chunk = ids[start : start + step]
                                where = [entry["source"][sid] for sid in chunk]
                                block = _gather_rows(files, key, where, entry)
                                self._write_rows(
                                    f, key, *entry["name"], entry["settings"], chunk, block
                                )

                    self._commit(write)
            if remove:
                for path in paths:
                    path.unlink(missing_ok=True)
            return added

    def _plan_merge(self, paths: list[Path], have: dict[str, set[str]]) -> dict[str, dict]:
        """First pass of :meth:`merge`, over ids and settings only: per entry key, ``name``,
        ``settings``, row ``shape`` and ``dtype``, ``source`` ({new id: (shard, row)}, first
        occurrence) and ``duplicates`` ([(id, (shard, row) kept, (shard, row) also seen)])."""
        entries: dict[str, dict[str, Any]] = {}
        for index, path in enumerate(paths):
            shard = FeatureStore(path)
            with shard._open() as f:
                for model_name, layer in shard._keys(f):
                    group = shard._group(f, model_name, layer)
                    key = group.name.lstrip("/")
                    settings = json.loads(group.attrs["settings"])
                    if self.path.is_file():
                        with self._open() as main:
                            self._check_settings(main, model_name, layer, settings)
                    data = group["features"]
                    entry = entries.setdefault(
                        key,
                        {
                            "name": (model_name, layer),
                            "settings": settings,
                            "shape": tuple(data.shape[1:]),
                            "dtype": data.dtype,  # float16 stays float16
                            "source": {},
                            "duplicates": [],
                        },
                    )
                    if entry["settings"] != settings:
                        raise InvalidInputError(
                            f"shard {path} ({model_name}/{layer}) was filled with other "
                            f"settings than the shards before it; refusing to merge."
                        )
                    if (tuple(data.shape[1:]), data.dtype) != (entry["shape"], entry["dtype"]):
                        raise InvalidInputError(
                            f"shard {path} ({model_name}/{layer}) holds {data.dtype} rows of "
                            f"shape {data.shape[1:]}; the shards before it hold "
                            f"{entry['dtype']} {entry['shape']}. Refusing to merge."
                        )
                    known = have.get(key, set())
                    source, duplicates = entry["source"], entry["duplicates"]
                    for row, sid in enumerate(group["stimulus_ids"].asstr()[...]):
                        if sid in known:
                            continue
                        if sid in source:
                            duplicates.append((sid, source[sid], (index, row)))
                        else:
                            source[sid] = (index, row)
        return entries

    @staticmethod
    def _compare_duplicates(
        files: list[h5py.File], paths: list[Path], key: str, entry: dict[str, Any]
    ) -> None:
        """Refuse the merge if an id's rows in two shards differ (compared block by block)."""
        duplicates = entry["duplicates"]
        step = _block_rows(entry["shape"], entry["dtype"])
        for start in range(0, len(duplicates), step):
            chunk = duplicates[start : start + step]
            kept = _gather_rows(files, key, [d[1] for d in chunk], entry)
            seen = _gather_rows(files, key, [d[2] for d in chunk], entry)
            for (sid, _, (index, _)), a, b in zip(chunk, kept, seen):
                if not np.array_equal(a, b):
                    model_name, layer = entry["name"]
                    raise InvalidInputError(
                        f"stimulus id {sid!r} has different {model_name}/{layer} "
                        f"features in two shards (one is {paths[index]}); refusing to merge."
                    )


# rows of shards held at once by FeatureStore.merge (per block read and written)
_MERGE_BLOCK_BYTES = 64 * 2**20


def _block_rows(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Rows of ``shape`` and ``dtype`` in one merge block (at least 1)."""
    return max(1, _MERGE_BLOCK_BYTES // max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize))


def _gather_rows(
    files: list[h5py.File], key: str, where: list[tuple[int, int]], entry: dict[str, Any]
) -> np.ndarray:
    """Rows ``[(shard, row), ...]`` of entry ``key`` of open shard files, in that order:
    (len(where), *shape) in the entry's dtype. Each shard's rows are read in one go, as one
    contiguous slice when they are dense in it (shards' rows mostly come in runs)."""
    block = np.empty((len(where), *entry["shape"]), dtype=entry["dtype"])
    if not where:
        return block
    shard_of = np.array([w[0] for w in where])
    row_of = np.array([w[1] for w in where], dtype=np.int64)
    for index in np.unique(shard_of):
        at = np.flatnonzero(shard_of == index)
        rows = row_of[at]
        data = files[index][key]["features"]
        lo, hi = int(rows.min()), int(rows.max()) + 1
        if hi - lo <= 2 * len(rows):
            block[at] = data[lo:hi][rows - lo]
        else:  # h5py reads increasing row lists
            unique, inverse = np.unique(rows, return_inverse=True)
            block[at] = data[unique][inverse]
    return block


def shard_ids(
    stimulus_ids: Sequence[int | str] | np.ndarray, rank: int, world_size: int, batch_size: int
) -> list[str]:
    """The ids rank ``rank`` of ``world_size`` computes: every ``world_size``-th batch.

    The unique ids (order kept) are cut into batches of ``batch_size`` as a 1-process fill cuts
    them, and batch ``k`` goes to rank ``k % world_size``; so each batch is computed on the very
    inputs a 1-process fill would use, and the merged features are bit-identical to it.

    Returns
    -------
    list of str
        This rank's ids, in order. Over all ranks, each unique id exactly once.
    """
    _check_rank(rank, world_size)
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1; got {batch_size}.")
    wanted = list(dict.fromkeys(_as_ids(stimulus_ids)))
    mine: list[str] = []
    for k, start in enumerate(range(0, len(wanted), batch_size)):
        if k % world_size == rank:
            mine.extend(wanted[start : start + batch_size])
    return mine


def _check_rank(rank: int, world_size: int) -> None:
    if not (isinstance(world_size, int) and world_size >= 1):
        raise InvalidInputError(f"world_size must be an integer >= 1; got {world_size!r}.")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise InvalidInputError(f"rank must be an integer in [0, {world_size}); got {rank!r}.")


def _to_numpy(rows: Any) -> np.ndarray:
    if hasattr(rows, "detach"):  # a torch tensor, without importing torch here
        rows = rows.detach().float().cpu().numpy()
    return np.asarray(rows)
