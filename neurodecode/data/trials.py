"""Trials: one presentation of one stimulus, and columnar sets of them.

Every loader (NSD, BIDS fMRI, THINGS-MEG) returns a :class:`TrialSet`; models and evaluation never
see file paths. A :class:`TrialSet` is columnar (one array per field) so that tens of thousands of
trials cost no Python objects; indexing it with an int gives one typed :class:`Trial`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from neurodecode.validation import InvalidInputError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Trial:
    """One presentation.

    Attributes
    ----------
    subject : str
        Subject label, e.g. ``"subj01"`` or ``"P1"``.
    session : int
        1-based session number.
    stimulus_id : int or str
        Stable stimulus key across the data set (NSD: 0-based 73k index).
    repeat : int
        0-based repeat index of this stimulus for this subject.
    split : str
        ``"train"`` or ``"test"`` (NSD: test = the shared images).
    data : ndarray
        fMRI: (n_voxels,) after masking, z-scored units; MEG: (n_channels, n_times).
    """

    subject: str
    session: int
    stimulus_id: int | str
    repeat: int
    split: str
    data: np.ndarray


@dataclass
class TrialSet:
    """A columnar set of trials of one modality.

    Attributes
    ----------
    data : ndarray, shape (n_trials, ...)
        float32 brain data; (n_trials, n_voxels) for fMRI, (n_trials, n_channels, n_times) for MEG.
    subject, session, stimulus_id, repeat, split : ndarray, shape (n_trials,)
        Per-trial fields as in :class:`Trial`.
    info : dict
        Shared metadata: for fMRI ``voxel_ijk`` ((n_voxels, 3) int (x, y, z) indices), ``roi``,
        ``affine``; for MEG ``ch_names``, ``sfreq`` (Hz), ``times`` (s), ``sensor_xy``.
    """

    data: np.ndarray
    subject: np.ndarray
    session: np.ndarray
    stimulus_id: np.ndarray
    repeat: np.ndarray
    split: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.data)
        for name in ("subject", "session", "stimulus_id", "repeat", "split"):
            value = np.asarray(getattr(self, name))
            if value.shape != (n,):
                raise InvalidInputError(
                    f"TrialSet.{name} has shape {value.shape}; expected ({n},) to match data."
                )
            setattr(self, name, value)
        bad = set(np.unique(self.split)) - set(SPLITS)
        if bad:
            raise InvalidInputError(f"TrialSet.split has values {sorted(bad)}; expected {SPLITS}.")

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Trial:
        return Trial(
            subject=str(self.subject[index]),
            session=int(self.session[index]),
            stimulus_id=self.stimulus_id[index].item(),
            repeat=int(self.repeat[index]),
            split=str(self.split[index]),
            data=self.data[index],
        )

    def select(self, mask: np.ndarray) -> TrialSet:
        """Trials where ``mask`` (bool, shape (n_trials,), or integer indices) holds."""
        return replace(
            self,
            data=self.data[mask],
            subject=self.subject[mask],
            session=self.session[mask],
            stimulus_id=self.stimulus_id[mask],
            repeat=self.repeat[mask],
            split=self.split[mask],
        )

    def average_repeats(self) -> TrialSet:
        """Average all repeats of each (subject, stimulus) pair, as for evaluation.

        Returns a TrialSet with one row per pair in first-appearance order; ``repeat`` holds the
        number of repeats averaged and ``session`` the first session the stimulus was seen in.
        """
        keys = np.array([f"{s}\x00{i}" for s, i in zip(self.subject, self.stimulus_id)])
        _, first, inverse, counts = np.unique(
            keys, return_index=True, return_inverse=True, return_counts=True
        )
        order = np.argsort(first)
        sums = np.zeros((len(first), *self.data.shape[1:]), dtype=np.float64)
        np.add.at(sums, inverse, self.data)
        means = (sums / counts.reshape(-1, *([1] * (self.data.ndim - 1)))).astype(np.float32)
        pick = first[order]
        return replace(
            self,
            data=means[order],
            subject=self.subject[pick],
            session=self.session[pick],
            stimulus_id=self.stimulus_id[pick],
            repeat=counts[order],
            split=self.split[pick],
        )

    @staticmethod
    def concatenate(sets: list[TrialSet]) -> TrialSet:
        """Stack trial sets with the same data shape; ``info`` is taken from the first."""
        if not sets:
            raise InvalidInputError("TrialSet.concatenate got no trial sets.")
        shapes = {s.data.shape[1:] for s in sets}
        if len(shapes) > 1:
            raise InvalidInputError(f"cannot concatenate trial sets with data shapes {shapes}.")
        cat = {
            name: np.concatenate([getattr(s, name) for s in sets])
            for name in ("data", "subject", "session", "stimulus_id", "repeat", "split")
        }
        return TrialSet(**cat, info=dict(sets[0].info))


def zscore_sessions(
    data: np.ndarray, session: np.ndarray | None = None, dtype: np.dtype | type = np.float32
) -> np.ndarray:
    """Z-score every column (voxel) within each session, NSD's standard practice.

    The one per-session z-scoring of the project (readers, noise ceilings, reconstruction input).

    Parameters
    ----------
    data : ndarray, shape (n_trials, n_voxels)
    session : ndarray, shape (n_trials,), optional
        Session label of each row; ``None``: all rows are one session.
    dtype : numpy dtype
        Of the result; statistics are accumulated in float64 whatever it is.

    Returns
    -------
    ndarray, shape (n_trials, n_voxels)
        Mean 0 and standard deviation 1 (ddof 0) per column and session; a column that is
        constant within a session is 0 there.
    """
    data = np.asarray(data)
    out = np.empty(data.shape, dtype=dtype)
    labels = np.zeros(len(data), dtype=int) if session is None else np.asarray(session)
    if len(labels) != len(data):
        raise InvalidInputError(
            f"session has {len(labels)} labels for {len(data)} rows; expected one per row."
        )
    for s in np.unique(labels):
        rows = np.flatnonzero(labels == s)
        block = data[rows].astype(np.float64)
        mean, sd = block.mean(axis=0), block.std(axis=0)
        out[rows] = (block - mean) / np.where(sd > 0, sd, np.inf)
    return out
