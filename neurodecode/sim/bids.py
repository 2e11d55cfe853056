"""Simulated BIDS fMRI data set with planted single-trial betas.

Writes a small, valid-looking BIDS tree for a rapid event-related image task::

    <out_dir>/dataset_description.json
    <out_dir>/task-images_bold.json                       (RepetitionTime, TaskName)
    <out_dir>/sub-01/func/sub-01_task-images_run-1_bold.nii.gz    (4D float32, TR in zooms[3])
    <out_dir>/sub-01/func/sub-01_task-images_run-1_events.tsv     (onset, duration, trial_type,
                                                                    stimulus_id, split)
    <out_dir>/derivatives/simulation/sub-01/func/sub-01_task-images_desc-brain_mask.nii.gz
    <out_dir>/derivatives/simulation/sub-01/sub-01_task-images_desc-truth.npz

The BOLD signal of voxel ``v`` is ``baseline[v] + sum_t beta[t, v] * r_t(time) + drift + noise``,
where ``r_t`` is trial ``t``'s 1-s box convolved with nilearn's Glover HRF (unit-sum kernel, so a
beta is in the same units as nilearn's effect sizes) and the baseline is 100 inside the brain, so
that betas read as percent signal change. Trials are rapid (ISI jittered uniformly), so
neighbouring responses overlap and least-squares-all and -separate estimates differ.

Ground truth (``*_desc-truth.npz``), in voxel (x, y, z) order of the NIfTI arrays:

``betas`` (n_trials, X, Y, Z) float32, planted amplitudes, zero outside the brain;
``run`` (n_trials,) 1-based run; ``stimulus_id`` (n_trials,) int; ``onset`` (n_trials,) s;
``gain`` (X, Y, Z) per-voxel response gain (signal scale); ``mask`` (X, Y, Z) bool brain mask;
``marker_ijk`` (3,) the (x, y, z) of the voxel with the largest gain; ``hrf`` the kernel sampled
every ``hrf_dt`` s; ``tr`` (s); ``noise`` (noise standard deviation, BOLD units).

Everything is drawn from ``numpy.random.default_rng`` seeded by ``(seed, subject index)``, so the
same arguments give the same data: NIfTI and events files byte-for-byte (gzip headers carry no time
stamp); the ``.npz`` holds the same arrays (its zip entries carry the write time).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn.glm.first_level import glover_hrf

from neurodecode.validation import InvalidInputError

TASK = "images"
_OVERSAMPLING = 50
_TRIAL_DURATION = 1.0
_LEAD_IN = 6.0
_TAIL = 18.0
_BASELINE = 100.0
_OUTSIDE = 5.0


def _brain_mask(grid: tuple[int, int, int]) -> np.ndarray:
    """Ellipsoid filling the grid (x, y, z) -> bool."""
    axes = [np.arange(n) - (n - 1) / 2 for n in grid]
    xx, yy, zz = np.meshgrid(*axes, indexing="ij")
    r2 = sum((a / (n / 2)) ** 2 for a, n in zip((xx, yy, zz), grid))
    return r2 <= 1.0


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, tr: float | None) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    if tr is not None:
        img.header.set_zooms((*img.header.get_zooms()[:3], tr))
    # Write through gzip with mtime=0 so that files are deterministic.
    with gzip.GzipFile(path, "wb", mtime=0) as handle:
        handle.write(img.to_bytes())


def _simulate_subject(
    rng: np.random.Generator,
    grid: tuple[int, int, int],
    n_runs: int,
    n_trials_per_run: int,
    tr: float,
    noise: float,
    isi_range: tuple[float, float],
) -> dict:
    mask = _brain_mask(grid)
    n_vox = mask.size
    # Gain: a smooth blob centred off-centre (so axis swaps change which voxels respond) plus a
    # small floor; the maximum is the marker voxel.
    centre = np.array([0.3, 0.35, 0.6]) * (np.array(grid) - 1)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in grid], indexing="ij"), axis=-1)
    dist2 = (((ijk - centre) / (np.array(grid) / 3.0)) ** 2).sum(-1)
    gain = (0.2 + 2.8 * np.exp(-dist2)) * mask
    marker = np.unravel_index(np.argmax(gain), grid)
    gain[marker] = 3.5

    n_stimuli = n_trials_per_run
    patterns = rng.normal(1.0, 1.0, size=(n_stimuli, n_vox))  # per-stimulus response pattern
    baseline = np.where(mask, _BASELINE + rng.normal(0, 5.0, size=grid), _OUTSIDE).ravel()

    hrf = glover_hrf(tr, oversampling=_OVERSAMPLING, time_length=32.0, onset=0.0)
    dt = tr / _OVERSAMPLING
    runs = []
    for _ in range(n_runs):
        stimuli = rng.permutation(n_stimuli)
        isis = rng.uniform(*isi_range, size=n_trials_per_run)
        onsets = _LEAD_IN + np.concatenate([[0.0], np.cumsum(isis[:-1])])
        onsets = np.round(onsets, 3)
        n_scans = int(np.ceil((onsets[-1] + _TAIL) / tr))
        n_hr = n_scans * _OVERSAMPLING
        regressors = np.zeros((n_trials_per_run, n_scans))
        for t, onset in enumerate(onsets):
            box = np.zeros(n_hr)
            start = int(np.round(onset / dt))
            box[start : start + int(np.round(_TRIAL_DURATION / dt))] = 1.0
            regressors[t] = np.convolve(box, hrf)[:n_hr][::_OVERSAMPLING]
        trial_noise = rng.normal(0.0, 0.5, size=(n_trials_per_run, n_vox))
        betas = (patterns[stimuli] + trial_noise) * gain.ravel()
        signal = regressors.T @ betas  # (n_scans, n_vox)
        times = np.arange(n_scans) * tr
        span = max(times[-1], tr)
        drift_amp = rng.normal(0.0, 1.0, size=(2, n_vox)) * (baseline / _BASELINE)
        drift = np.outer(times / span - 0.5, drift_amp[0]) + np.outer(
            np.cos(np.pi * times / span), drift_amp[1]
        )
        white = rng.normal(0.0, noise, size=(n_scans, n_vox))
        ar = np.empty_like(white)
        ar[0] = white[0]
        for k in range(1, n_scans):  # AR(1), rho = 0.3, variance kept at noise**2
            ar[k] = 0.3 * ar[k - 1] + np.sqrt(1 - 0.3**2) * white[k]
        bold = baseline + signal + (drift + ar) * mask.ravel()
        runs.append(
            {
                "bold": bold.T.reshape(*grid, n_scans).astype(np.float32),
                "onsets": onsets,
                "stimuli": stimuli,
                "betas": betas.reshape(n_trials_per_run, *grid).astype(np.float32),
            }
        )
    return {"mask": mask, "gain": gain, "marker": np.array(marker), "hrf": hrf, "runs": runs}


def simulate_bids_fmri(
    out_dir: str | Path,
    n_subjects: int = 1,
    n_runs: int = 2,
    n_trials_per_run: int = 20,
    tr: float = 1.0,
    grid: tuple[int, int, int] = (8, 8, 6),
    seed: int = 0,
    noise: float = 0.3,
    isi_range: tuple[float, float] = (2.0, 6.0),
    n_test_stimuli: int = 4,
) -> dict:
    """Write a simulated BIDS fMRI tree with planted single-trial betas.

    Parameters
    ----------
    out_dir : path
        Root of the BIDS tree (created; existing files are overwritten).
    n_subjects : int
        Subjects ``sub-01`` ... .
    n_runs : int
        Runs per subject; each run shows every stimulus once, in its own random order.
    n_trials_per_run : int
        Trials per run (= number of distinct stimuli, ids ``0 .. n_trials_per_run - 1``).
    tr : float
        Repetition time in seconds (written to the NIfTI zooms and ``task-images_bold.json``).
    grid : tuple of 3 int
        Volume shape (X, Y, Z) in voxels (3-mm isotropic).
    seed : int
        Seed; subject ``s`` uses ``default_rng([seed, s])``.
    noise : float
        Standard deviation of the AR(1) (rho 0.3) noise, in BOLD units (baseline 100).
    isi_range : (float, float)
        Onset-to-onset interval, drawn uniformly, in seconds.
    n_test_stimuli : int
        Stimuli ``0 .. n_test_stimuli - 1`` get ``split == "test"`` in ``events.tsv``.

    Returns
    -------
    dict
        ``root`` (Path), ``task`` (str), ``subjects`` (list of labels without ``sub-``), and per
        subject label: ``bold`` / ``events`` (lists of Paths, one per run), ``mask`` and ``truth``
        (Paths).
    """
    if len(grid) != 3 or min(grid) < 2:
        raise InvalidInputError(f"grid={grid!r}; expected three sizes >= 2 (X, Y, Z).")
    if tr <= 0 or noise < 0 or n_trials_per_run < 2 or n_runs < 1 or n_subjects < 1:
        raise InvalidInputError(
            "simulate_bids_fmri expects tr > 0, noise >= 0, n_trials_per_run >= 2, n_runs >= 1 "
            f"and n_subjects >= 1; got tr={tr}, noise={noise}, n_trials_per_run="
            f"{n_trials_per_run}, n_runs={n_runs}, n_subjects={n_subjects}."
        )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "neurodecode simulated image task",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "GeneratedBy": [{"Name": "neurodecode.sim.bids"}],
            },
            indent=2,
        )
    )
    (root / f"task-{TASK}_bold.json").write_text(
        json.dumps({"RepetitionTime": tr, "TaskName": TASK}, indent=2)
    )
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = -1.5 * (np.array(grid) - 1)
    result: dict = {"root": root, "task": TASK, "subjects": []}
    for s in range(n_subjects):
        label = f"{s + 1:02d}"
        sub = f"sub-{label}"
        sim = _simulate_subject(
            np.random.default_rng([seed, s]),
            tuple(grid),
            n_runs,
            n_trials_per_run,
            tr,
            noise,
            isi_range,
        )
        func = root / sub / "func"
        func.mkdir(parents=True, exist_ok=True)
        deriv = root / "derivatives" / "simulation" / sub
        (deriv / "func").mkdir(parents=True, exist_ok=True)
        bolds, events = [], []
        for run, data in enumerate(sim["runs"], start=1):
            stem = f"{sub}_task-{TASK}_run-{run}"
            bold_path = func / f"{stem}_bold.nii.gz"
            _write_nifti(bold_path, data["bold"], affine, tr)
            lines = ["onset\tduration\ttrial_type\tstimulus_id\tsplit"]
            for onset, stim in zip(data["onsets"], data["stimuli"]):
                split = "test" if stim < n_test_stimuli else "train"
                lines.append(f"{onset:.3f}\t{_TRIAL_DURATION:.1f}\timage\t{stim}\t{split}")
            events_path = func / f"{stem}_events.tsv"
            events_path.write_text("\n".join(lines) + "\n")
            bolds.append(bold_path)
            events.append(events_path)
        mask_path = deriv / "func" / f"{sub}_task-{TASK}_desc-brain_mask.nii.gz"
        _write_nifti(mask_path, sim["mask"].astype(np.uint8), affine, None)
        truth_path = deriv / f"{sub}_task-{TASK}_desc-truth.npz"
        runs = sim["runs"]
        np.savez_compressed(
            truth_path,
            betas=np.concatenate([r["betas"] for r in runs]),
            run=np.concatenate([np.full(len(r["onsets"]), i + 1) for i, r in enumerate(runs)]),
            stimulus_id=np.concatenate([r["stimuli"] for r in runs]),
            onset=np.concatenate([r["onsets"] for r in runs]),
            gain=sim["gain"].astype(np.float32),
            mask=sim["mask"],
            marker_ijk=sim["marker"],
            hrf=sim["hrf"],
            hrf_dt=tr / _OVERSAMPLING,
            tr=tr,
            noise=noise,
        )
        result["subjects"].append(label)
        result[label] = {"bold": bolds, "events": events, "mask": mask_path, "truth": truth_path}
    return result
