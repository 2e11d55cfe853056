"""LightningDataModule joining NSD-layout fMRI trials with stimulus features by stimulus id.

Training uses single repeats (one trial per step, as MindEye does); validation and test use
repeat-averaged trials. Each subject keeps its own voxel count: every batch holds trials of one
subject only (:class:`SubjectBatchSampler`), and multi-subject models route them through per-subject
adapters. Batches are dicts::

    brain        (B, n_voxels_of_that_subject) float32, session-z-scored
    target       (B, *target_shape) float32 features of the stimulus (e.g. CLIP image embedding)
    subject      (B,) long, index into ``geometry["n_voxels"]``'s subject order
    stimulus_id  (B,) long, NSD 73k id
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from neurodecode.data.nsd import count_roi_voxels, read_nsd_betas
from neurodecode.data.nsd_cache import cache_voxel_count, find_nsd_cache, open_nsd_cache
from neurodecode.data.trials import TrialSet
from neurodecode.validation import InvalidInputError, check_array

logger = logging.getLogger(__name__)


class BrainFeatureDataset(Dataset):
    """Trials of several subjects paired with their stimulus features.

    Parameters
    ----------
    trials : list of TrialSet
        One per subject (data (n_i, V_i)).
    targets : list of ndarray
        Per subject, (n_i, *target_shape) float32 aligned with the trials.
    subject_indices : list of int
        The subject index of each entry (position in the model's subject order).
    repeat_average : float in [0, 1]
        Probability that an item's brain data is the average of all of its subject's trials of
        the same stimulus in this set instead of the single trial (a training augmentation that
        shows the network the less noisy, repeat-averaged input it is evaluated on; 0: never).
        The draws are a function of ``(seed, epoch)``, so an epoch's items are the same when a
        run is resumed.
    seed : int
    epoch_source : callable, optional
        Returns the current epoch (default: 0).
    """

    def __init__(
        self,
        trials: list[TrialSet],
        targets: list[np.ndarray],
        subject_indices: list[int],
        repeat_average: float = 0.0,
        seed: int = 0,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        if not 0.0 <= repeat_average <= 1.0:
            raise InvalidInputError(f"repeat_average={repeat_average!r}; expected [0, 1].")
        self.trials, self.targets, self.subject_indices = trials, targets, subject_indices
        self.offsets = np.cumsum([0] + [len(t) for t in trials])
        self.subject_of = (
            np.concatenate([np.full(len(t), k) for k, t in enumerate(trials)])
            if trials
            else np.array([], dtype=int)
        )
        self.repeat_average = float(repeat_average)
        self.seed = int(seed)
        self.epoch_source = epoch_source
        self._averages: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._draws: tuple[int, np.ndarray] | None = None  # (epoch, one uniform draw per item)

    def _averaged(self, k: int, i: int) -> np.ndarray:
        """The mean of subject ``k``'s trials of trial ``i``'s stimulus (computed once)."""
        if self._averages is None:
            self._averages = []
            for trials in self.trials:  # one subject each
                averaged = trials.average_repeats()
                order = np.argsort(averaged.stimulus_id)
                found = np.searchsorted(averaged.stimulus_id, trials.stimulus_id, sorter=order)
                self._averages.append((averaged.data, order[found]))
        means, row_of = self._averages[k]
        return means[row_of[i]]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k = int(self.subject_of[index])
        i = index - int(self.offsets[k])
        brain = self.trials[k].data[i]
        if self.repeat_average > 0:
            epoch = self.epoch_source() if self.epoch_source is not None else 0
            if self._draws is None or self._draws[0] != epoch:
                self._draws = (epoch, np.random.default_rng((self.seed, epoch)).random(len(self)))
            if self._draws[1][index] < self.repeat_average:
                brain = self._averaged(k, i)
        return {
            "brain": torch.from_numpy(np.asarray(brain, dtype=np.float32)),
            "target": torch.from_numpy(np.asarray(self.targets[k][i], dtype=np.float32)),
            "subject": torch.tensor(self.subject_indices[k], dtype=torch.long),
            "stimulus_id": torch.tensor(int(self.trials[k].stimulus_id[i]), dtype=torch.long),
        }


class _EpochSampler(Sampler[int]):
    """Indices ``0..n-1`` in order; holds the epoch that Lightning sets with :meth:`set_epoch`."""

    def __init__(self, n: int) -> None:
        self.n, self.epoch = n, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class SubjectBatchSampler(BatchSampler):
    """Batches that never mix subjects; subjects' batches interleave in random order.

    The batch list depends only on ``(seed, epoch)``, so a run resumed from a checkpoint sees the
    same batches as an uninterrupted one, and every process of a distributed run computes the same
    list and keeps its own share (``batches[rank::num_replicas]``, equal counts on every rank).

    Parameters
    ----------
    subject_of : ndarray, shape (n,)
        Which entry (subject) each dataset index belongs to.
    batch_size : int
    shuffle : bool
        Shuffle within subjects and the batch order (reseeded each epoch via :meth:`set_epoch`).
    drop_last : bool
        Drop each subject's last incomplete batch; in a distributed run, also drop the batches
        that do not divide evenly among ranks. Otherwise those are padded by repeating the first
        batches (evaluation de-duplicates by stimulus id).
    seed : int
    sampler : Sampler, optional
        Lightning injects a ``DistributedSampler`` here under DDP; its ``num_replicas``, ``rank``
        and ``epoch`` are used (its indices are not: batches stay subject-pure). Lightning calls
        ``set_epoch`` on this sampler each epoch.
    epoch_source : callable, optional
        Returns the current epoch (e.g. the trainer's), read when iteration starts; preferred over
        ``sampler.epoch`` because Lightning creates a resumed run's first iterator before it calls
        ``set_epoch``.
    """

    def __init__(
        self,
        subject_of: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        sampler: Sampler | None = None,
        epoch_source: Callable[[], int] | None = None,
    ) -> None:
        self.subject_of = np.asarray(subject_of)
        if self.subject_of.ndim != 1:
            raise InvalidInputError(
                f"subject_of has shape {self.subject_of.shape}; expected (n,) subject indices."
            )
        super().__init__(
            sampler if sampler is not None else _EpochSampler(len(self.subject_of)),
            batch_size,
            drop_last,
        )
        self.shuffle, self.seed, self.epoch_source = shuffle, seed, epoch_source

    @property
    def epoch(self) -> int:
        """The epoch that seeds the shuffling: ``epoch_source()`` if given, else the epoch set by
        Lightning through ``sampler.set_epoch``."""
        if self.epoch_source is not None:
            return int(self.epoch_source())
        return int(getattr(self.sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffling seed (for loops without Lightning)."""
        self.sampler.set_epoch(epoch)

    def _replicas(self) -> tuple[int, int]:
        replicas = getattr(self.sampler, "num_replicas", None)
        if replicas is not None:
            return int(replicas), int(self.sampler.rank)
        return 1, 0

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = []
        for k in np.unique(self.subject_of):
            index = np.nonzero(self.subject_of == k)[0]
            if self.shuffle:
                index = rng.permutation(index)
            for start in range(0, len(index), self.batch_size):
                chunk = index[start : start + self.batch_size]
                if len(chunk) == self.batch_size or (not self.drop_last and len(chunk)):
                    batches.append(chunk.tolist())
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        replicas, rank = self._replicas()
        if replicas > 1:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % replicas]
            elif batches and len(batches) % replicas:
                pad = replicas - len(batches) % replicas
                batches = batches + [batches[i % len(batches)] for i in range(pad)]
            batches = batches[rank::replicas]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def _empty_trials(n_voxels: int) -> TrialSet:
    """A training set with no trials for a subject that is not trained on."""
    return TrialSet(
        data=np.zeros((0, n_voxels), np.float32),
        subject=np.zeros(0, dtype=str),
        session=np.zeros(0, dtype=int),
        stimulus_id=np.zeros(0, dtype=int),
        repeat=np.zeros(0, dtype=int),
        split=np.zeros(0, dtype=str),
    )


class NSDDataModule(L.LightningDataModule):
    """NSD-layout trials joined with a FeatureStore's features.

    Trials come from a raw NSD-layout root, or from caches written by ``neurodecode prepare nsd``
    (masked, session-z-scored float16 trials; see :mod:`neurodecode.data.nsd_cache`): the same
    trials, ids, repeats and split, opened after verifying each cache's subject, ROI,
    completeness and checksums, and without reading any raw betas.

    Parameters
    ----------
    root : str, optional
        NSD root (real or simulated). A folder holding a cache's ``manifest.json`` (or one cache
        per subject in ``root/<subject>/``) is read as ``prepared``. Not needed with ``prepared``.
    feature_store : str
        HDF5 FeatureStore holding features of the stimuli (``neurodecode extract``); required.
    feature_model, feature_layer : str
        Which store entry is the target.
    subjects : list of str
        Subjects to train on (``"subj01"`` ...); their order is the model's subject order.
    eval_subject : str, optional
        Subject whose shared images are the validation/test set (default: the first).
    train_subjects : list of str, optional
        Subjects whose training trials are loaded (default: all of ``subjects``). The others
        still define the subject order and geometry, so a model pretrained on them can be
        fine-tuned on a new subject alone with unchanged subject indices (MindEye2's new-subject
        step; see :func:`neurodecode.models.retrieval.fit_new_subject`).
    roi : str
        ROI file that masks the voxels (``nsdgeneral``).
    max_train_sessions : int or dict, optional
        Use only the first N sessions' training trials (per subject if a dict) — the
        "new subject with little data" setting. Test trials come from all sessions.
    val_images : int
        Training images of the eval subject held out (all their repeats, averaged) for validation.
    batch_size, num_workers, seed : int
    repeat_average : float in [0, 1]
        Training augmentation: the probability that a training item is the average of its
        image's repeats instead of one trial (:class:`BrainFeatureDataset`); 0 (default) trains
        on single trials only, as MindEye does. ``train_set.trials`` keep the single trials.
    prepared : str or dict of str, optional
        Train from ``neurodecode prepare nsd`` caches instead of ``root``: a cache folder (one
        subject), a folder holding ``<subject>/`` cache folders, or ``{subject: cache folder}``.
    """

    def __init__(
        self,
        root: str | None = None,
        feature_store: str | None = None,
        feature_model: str = "sim-clip-default",
        feature_layer: str = "image",
        subjects: list[str] | None = None,
        eval_subject: str | None = None,
        train_subjects: list[str] | None = None,
        roi: str = "nsdgeneral",
        max_train_sessions: int | dict[str, int] | None = None,
        val_images: int = 50,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        prepared: str | dict[str, str] | None = None,
        repeat_average: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= repeat_average <= 1.0:
            raise InvalidInputError(f"repeat_average={repeat_average!r}; expected [0, 1].")
        self.save_hyperparameters()
        self.root = None if root is None else Path(root)
        self.store_path = None if feature_store is None else Path(feature_store)
        self.subjects = list(subjects or ["subj01"])
        self.eval_subject = eval_subject or self.subjects[0]
        if self.eval_subject not in self.subjects:
            raise InvalidInputError(
                f"eval_subject={self.eval_subject!r} is not in subjects={self.subjects}."
            )
        self.train_subjects = list(self.subjects if train_subjects is None else train_subjects)
        unknown = [s for s in self.train_subjects if s not in self.subjects]
        if unknown or not self.train_subjects:
            raise InvalidInputError(
                f"train_subjects={self.train_subjects}; expected a non-empty subset of "
                f"subjects={self.subjects}."
            )
        self._caches_found: dict[str, Path | None] | None = None
        self._geometry: dict | None = None
        self._loaded = False
        self._resume_epoch = 0

    def _sources(self) -> dict[str, Path | None]:
        """Per subject, the cache folder it is read from (``None``: the raw root). Resolved on
        first use, not in ``__init__``, so that under LightningCLI a bad path is one clear
        error rather than a failed instantiation."""
        if self._caches_found is None:
            if self.store_path is None:
                raise InvalidInputError("NSDDataModule needs feature_store (a FeatureStore path).")
            prepared = self.hparams.prepared
            if self.root is None and prepared is None:
                raise InvalidInputError(
                    "NSDDataModule needs root (an NSD root or cache folder) or prepared (caches "
                    "written by `neurodecode prepare nsd`)."
                )
            self._caches_found = {s: self._cache_of(s, prepared) for s in self.subjects}
        return self._caches_found

    def _cache_of(self, subject: str, prepared: str | dict[str, str] | None) -> Path | None:
        """The cache folder ``subject`` is read from, or ``None`` for the raw root."""
        if isinstance(prepared, dict):
            if subject not in prepared:
                raise InvalidInputError(
                    f"prepared has caches of {sorted(prepared)}; {subject!r} has none."
                )
            base = Path(prepared[subject])
        elif prepared is not None:
            base = Path(prepared)
        else:  # a root holding caches is read as such
            return find_nsd_cache(self.root, subject)
        folder = find_nsd_cache(base, subject)
        if folder is None:
            raise InvalidInputError(
                f"no NSD cache of {subject} at {base}: expected {base}/manifest.json or "
                f"{base}/{subject}/manifest.json (run `neurodecode prepare nsd --out {base}`)."
            )
        return folder

    def _n_voxels(self, subject: str) -> int:
        cache = self._sources()[subject]
        if cache is None:
            return count_roi_voxels(self.root, subject, self.hparams.roi)
        return cache_voxel_count(cache)

    def _read_trials(self, subject: str) -> TrialSet:
        """All trials of ``subject`` (data float32 session z-scores), from its cache or raw."""
        cache = self._sources()[subject]
        if cache is None:
            return read_nsd_betas(self.root, subject, roi=self.hparams.roi, progress=False)
        logger.info("%s: reading the prepared cache %s", subject, cache)
        return open_nsd_cache(cache, subject=subject, roi=self.hparams.roi)

    # ------------------------------------------------------------------ geometry
    @property
    def geometry(self) -> dict:
        """``{"n_voxels": {subject: V}, "target_shape": [...]}`` read from ROI and store headers."""
        if self._geometry is None:
            from neurodecode.features.store import FeatureStore

            self._sources()  # checks the paths before anything is read

            store = FeatureStore(self.store_path)
            shape = store.feature_shape(self.hparams.feature_model, self.hparams.feature_layer)
            self._geometry = {
                "n_voxels": {s: self._n_voxels(s) for s in self.subjects},
                "target_shape": list(shape),
            }
        return self._geometry

    # ------------------------------------------------------------------ data
    def targets_of(self, ids: np.ndarray) -> np.ndarray:
        """The target features of stimulus ids, (len(ids), *target_shape) float32."""
        from neurodecode.features.store import FeatureStore

        store = FeatureStore(self.store_path)
        features = store.read(self.hparams.feature_model, self.hparams.feature_layer, ids)
        name = f"features {self.hparams.feature_model}/{self.hparams.feature_layer}"
        return check_array(name, features, finite=True, source=self.store_path)

    def setup(self, stage: str | None = None) -> None:
        """Read every subject's trials and join them with their features (once)."""
        if self._loaded:
            return
        self._sources()  # checks the paths before anything is read
        hp = self.hparams
        limit = hp.max_train_sessions
        rng = np.random.default_rng(hp.seed)
        train_sets, train_targets, val_sets, val_targets = [], [], [], []
        for k, subject in enumerate(self.subjects):
            if subject not in self.train_subjects and subject != self.eval_subject:
                # keeps ``train_set.trials[k]`` = subject k; nothing of it is read
                n_voxels = self.geometry["n_voxels"][subject]
                train_sets.append(_empty_trials(n_voxels))
                train_targets.append(np.zeros((0, *self.geometry["target_shape"]), np.float32))
                continue
            trials = self._read_trials(subject)
            train = trials.select(trials.split == "train")
            n_max = limit.get(subject) if isinstance(limit, dict) else limit
            if n_max is not None:
                train = train.select(train.session <= n_max)
                logger.info(
                    "%s: training on sessions <= %d (%d trials)", subject, n_max, len(train)
                )
            if subject == self.eval_subject:
                ids = np.unique(train.stimulus_id)
                held = rng.choice(ids, size=min(hp.val_images, len(ids) // 10), replace=False)
                is_val = np.isin(train.stimulus_id, held)
                val = train.select(is_val).average_repeats()
                train = train.select(~is_val)
                val_sets.append(val)
                val_targets.append(self.targets_of(val.stimulus_id))
                test = trials.select(trials.split == "test").average_repeats()
                self.test_trials = test
                self.test_targets = self.targets_of(test.stimulus_id)
                self.eval_index = k
            if train.data.shape[1] != self.geometry["n_voxels"][subject]:
                raise InvalidInputError(
                    f"{subject}: read {train.data.shape[1]} voxels but the geometry says "
                    f"{self.geometry['n_voxels'][subject]}."
                )
            if subject not in self.train_subjects:  # evaluated on, not trained on
                train = train.select(np.zeros(len(train), dtype=bool))
                train_targets.append(np.zeros((0, *self.geometry["target_shape"]), np.float32))
            else:
                train_targets.append(self.targets_of(train.stimulus_id))
            train_sets.append(train)
        self.train_set = BrainFeatureDataset(
            train_sets,
            train_targets,
            list(range(len(train_sets))),
            repeat_average=hp.repeat_average,
            seed=hp.seed,
            epoch_source=self._current_epoch,
        )
        self.val_set = BrainFeatureDataset(val_sets, val_targets, [self.eval_index])
        self.test_set = BrainFeatureDataset(
            [self.test_trials], [self.test_targets], [self.eval_index]
        )
        self._loaded = True

    def _current_epoch(self) -> int:
        """The epoch that seeds the training batches: the one Lightning gives ``set_epoch``
        (``fit_loop.epoch_progress.current.processed``), or, before the loops are restored, the
        epoch recorded in the checkpoint being resumed (:meth:`load_state_dict`). Lightning makes
        a resumed run's first iterator before restoring its loops (``estimated_stepping_batches``
        sets up the data), so without the latter a resumed epoch would replay epoch 0's batches."""
        if self.trainer is None:
            return self._resume_epoch
        return max(self._resume_epoch, int(self.trainer.fit_loop.epoch_progress.current.processed))

    def state_dict(self) -> dict[str, int]:
        """Saved in Lightning checkpoints: the epoch the batches of a resumed run start from."""
        return {"epoch": self._current_epoch()}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Restore :meth:`state_dict` (Lightning calls this before the loops are restored)."""
        self._resume_epoch = int(state_dict.get("epoch", 0))

    def _loader(self, dataset: BrainFeatureDataset, shuffle: bool) -> DataLoader:
        sampler = SubjectBatchSampler(
            dataset.subject_of,
            self.hparams.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            seed=self.hparams.seed,
            epoch_source=self._current_epoch,
        )
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.hparams.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
