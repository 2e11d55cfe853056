"""MEG datamodule: THINGS-MEG(-layout) epochs joined with image embeddings by stimulus id.

This module owns the MEG side of the datamodule contract (DESIGN.md §4): single trials for
training, a held-out set of training images for validation, and repeat-averaged shared test images
for testing; a selectable time window; per-subject indices for subject layers. Targets come from a
:class:`~neurodecode.features.store.FeatureStore` (``feature_store`` + ``feature_model`` +
``feature_layer``), from an in-memory ``{stimulus_id: vector}`` dict, or - for simulated data - from
the generating features in ``ROOT/ground_truth.h5``.

Batches are dicts::

    brain        (B, C, T) float32   robust-scaled MEG, C channels, T samples in the window
    target       (B, D)    float32   the image embedding
    subject      (B,)      int64     index into geometry["subjects"]
    stimulus_id  list of B str
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from neurodecode.data.trials import TrialSet
from neurodecode.validation import InvalidInputError, check_file


class MEGTrialDataset(Dataset):
    """Trials as dict samples (see the module docstring); holds tensors in memory.

    Parameters
    ----------
    brain : ndarray, shape (n, C, T)
    target : ndarray, shape (n, D)
    subject : ndarray of int, shape (n,)
    stimulus_id : ndarray of str, shape (n,)
    """

    def __init__(
        self, brain: np.ndarray, target: np.ndarray, subject: np.ndarray, stimulus_id: np.ndarray
    ) -> None:
        self.brain = torch.as_tensor(np.ascontiguousarray(brain), dtype=torch.float32)
        self.target = torch.as_tensor(np.ascontiguousarray(target), dtype=torch.float32)
        self.subject = torch.as_tensor(subject, dtype=torch.long)
        self.stimulus_id = [str(s) for s in stimulus_id]

    def __len__(self) -> int:
        return len(self.brain)

    def __getitem__(self, i: int) -> dict:
        return {
            "brain": self.brain[i],
            "target": self.target[i],
            "subject": self.subject[i],
            "stimulus_id": self.stimulus_id[i],
        }


def read_ground_truth_features(path: str | Path) -> dict[str, np.ndarray]:
    """Generating features of a simulated MEG data set, ``{stimulus_id: (D,) float32}``."""
    import h5py

    path = check_file(path, "simulation ground truth (ground_truth.h5)")
    with h5py.File(path, "r") as f:
        if "features" not in f or "stimulus_id" not in f:
            raise InvalidInputError(
                f"{path} lacks 'features' or 'stimulus_id'; expected a MEG simulation ground truth."
            )
        ids = f["stimulus_id"].asstr()[...]
        features = np.asarray(f["features"][...], dtype=np.float32)
    return dict(zip(ids, features))


class MEGDataModule(LightningDataModule):
    """THINGS-MEG trials with image-embedding targets.

    Parameters
    ----------
    root : str, optional
        THINGS-MEG(-layout) root (see :func:`neurodecode.data.things_meg.read_things_meg`).
    subjects : list of int or str, optional
        Subjects to use (default: all found).
    sfreq : float
        Resampling rate of the preprocessing (Hz).
    window : (float, float)
        Time window in s relative to image onset, both ends included, cut after preprocessing.
    feature_store : str, optional
        FeatureStore HDF5 holding the targets.
    feature_model, feature_layer : str
        Which (model, layer) of the store.
    targets : dict, optional
        ``{stimulus_id: vector}`` used instead of a store (tests, notebooks).
    trials : TrialSet, optional
        Already-loaded trials used instead of ``root``.
    val_fraction : float
        Fraction of the training images held out (all their trials) for validation.
    average_test : bool
        Average the repeats of each test image per subject (True, as the papers evaluate).
    batch_size, num_workers, seed
        Loader settings; ``seed`` picks the validation images.

    If neither ``feature_store`` nor ``targets`` is given, the targets are the generating features
    in ``root/ground_truth.h5`` (simulated data only).
    """

    def __init__(
        self,
        root: str | None = None,
        subjects: list[int | str] | None = None,
        sfreq: float = 120.0,
        window: tuple[float, float] = (-0.1, 1.0),
        feature_store: str | None = None,
        feature_model: str = "sim-clip",
        feature_layer: str = "image_embeds",
        targets: dict | None = None,
        trials: TrialSet | None = None,
        val_fraction: float = 0.1,
        average_test: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if root is None and trials is None:
            raise InvalidInputError("MEGDataModule needs root= (a THINGS-MEG folder) or trials=.")
        if not 0 <= val_fraction < 1:
            raise InvalidInputError(f"val_fraction={val_fraction}; expected 0 <= value < 1.")
        if window[1] <= window[0]:
            raise InvalidInputError(f"window={window}; expected (start, end) with end > start (s).")
        self.root, self.subjects_arg, self.sfreq = root, subjects, sfreq
        self.window = (float(window[0]), float(window[1]))
        self.feature_store, self.feature_model, self.feature_layer = (
            feature_store,
            feature_model,
            feature_layer,
        )
        self._targets_arg, self._trials_arg = targets, trials
        self.val_fraction, self.average_test = val_fraction, average_test
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self._loaded = False

    # ------------------------------------------------------------------ loading

    def _read_trials(self) -> TrialSet:
        if self._trials_arg is not None:
            return self._trials_arg
        from neurodecode.data.things_meg import read_things_meg

        return read_things_meg(self.root, subjects=self.subjects_arg, sfreq=self.sfreq)

    def _read_targets(self, ids: np.ndarray) -> np.ndarray:
        unique = np.unique(ids)
        if self._targets_arg is not None:
            missing = [s for s in unique if s not in self._targets_arg]
            if missing:
                raise InvalidInputError(
                    f"targets lacks {len(missing)} of {len(unique)} stimulus ids "
                    f"(first: {missing[:5]}); expected a vector for every trial's stimulus."
                )
            table = np.stack([np.asarray(self._targets_arg[s], np.float32) for s in unique])
        elif self.feature_store is not None:
            from neurodecode.features.store import FeatureStore

            table = FeatureStore(self.feature_store).read(
                self.feature_model, self.feature_layer, list(unique)
            )
        else:
            if self.root is None:
                raise InvalidInputError(
                    "MEGDataModule has no targets: give feature_store=, targets= or a simulated "
                    "root with ground_truth.h5."
                )
            lookup = read_ground_truth_features(Path(self.root) / "ground_truth.h5")
            missing = [s for s in unique if s not in lookup]
            if missing:
                raise InvalidInputError(
                    f"{Path(self.root) / 'ground_truth.h5'} lacks stimulus ids {missing[:5]}."
                )
            table = np.stack([lookup[s] for s in unique])
        table = np.asarray(table, dtype=np.float32).reshape(len(unique), -1)
        return table[np.searchsorted(unique, ids)]

    def _load(self) -> None:
        if self._loaded:
            return
        trials = self._read_trials()
        times = np.asarray(trials.info["times"])
        keep = (times >= self.window[0] - 1e-9) & (times <= self.window[1] + 1e-9)
        if keep.sum() < 2:
            raise InvalidInputError(
                f"window={self.window} s keeps {int(keep.sum())} samples of the epochs "
                f"({times[0]:.3f}..{times[-1]:.3f} s); expected a window inside the epoch."
            )
        self.subjects: list[str] = list(dict.fromkeys(trials.subject.tolist()))
        self.times = times[keep]
        self.sensor_xy = np.asarray(trials.info["sensor_xy"], dtype=np.float32)
        self.ch_names = list(trials.info.get("ch_names", []))
        data = trials.data[:, :, keep]
        trials = TrialSet(
            data=data,
            subject=trials.subject,
            session=trials.session,
            stimulus_id=trials.stimulus_id.astype(str),
            repeat=trials.repeat,
            split=trials.split,
            info=trials.info,
        )
        train = trials.select(trials.split == "train")
        test = trials.select(trials.split == "test")
        rng = np.random.default_rng(self.seed)
        train_images = np.unique(train.stimulus_id)
        n_val = round(len(train_images) * self.val_fraction)
        val_images = rng.choice(train_images, size=n_val, replace=False) if n_val else []
        is_val = np.isin(train.stimulus_id, val_images)
        self.train_trials = train.select(~is_val)
        self.val_trials = train.select(is_val)
        self.test_trials = test.average_repeats() if self.average_test and len(test) else test
        if len(self.train_trials) == 0:
            raise InvalidInputError("MEGDataModule found no training trials (trial_type 'exp').")
        self._datasets = {
            name: self._dataset(t)
            for name, t in (
                ("train", self.train_trials),
                ("val", self.val_trials),
                ("test", self.test_trials),
            )
        }
        self._target_dim = self._datasets["train"].target.shape[1]
        self._loaded = True

    def _dataset(self, trials: TrialSet) -> MEGTrialDataset:
        index = {s: i for i, s in enumerate(self.subjects)}
        subject = np.array([index[s] for s in trials.subject], dtype=np.int64)
        target = (
            self._read_targets(trials.stimulus_id) if len(trials) else np.zeros((0, 1), np.float32)
        )
        return MEGTrialDataset(trials.data, target, subject, trials.stimulus_id)

    # ------------------------------------------------------------------ Lightning API

    @property
    def geometry(self) -> dict:
        """Input/output geometry for :class:`~neurodecode.models.meg.MEGBrainModule`.

        Keys: ``n_channels``, ``n_times``, ``sfreq`` (Hz), ``subjects`` (list, index order of
        ``batch["subject"]``), ``sensor_xy`` ((n_channels, 2) as lists, in [0, 1]),
        ``target_shape`` ([D]).
        """
        self._load()
        return {
            "n_channels": int(self.sensor_xy.shape[0]),
            "n_times": len(self.times),
            "sfreq": float(self.sfreq),
            "subjects": list(self.subjects),
            "sensor_xy": [[float(x), float(y)] for x, y in self.sensor_xy],
            "target_shape": [int(self._target_dim)],
        }

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def dataset(self, split: str) -> MEGTrialDataset:
        """The dataset of ``split`` (``"train"``, ``"val"``, ``"test"``)."""
        self._load()
        return self._datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            drop_last=shuffle and len(self.dataset(split)) > self.batch_size,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
