"""BIDS fMRI: 4D BOLD runs + ``events.tsv`` -> single-trial betas as a :class:`TrialSet`.

Owns finding a subject's runs of one task in a BIDS tree, reading and validating the BOLD series,
events, repetition time and brain mask, and estimating one beta map per trial with nilearn's
first-level GLM (:class:`nilearn.glm.first_level.FirstLevelModel`):

- **least-squares-all** (``method="lsa"``): one model per run with a regressor per trial;
- **least-squares-separate** (``method="lss"``, Mumford et al. 2012): one model per trial, with
  that trial as one regressor and all other trials of the run as a second one.

Both add the drift model and one regressor per nuisance event type (``exclude_trial_types``).
Betas are nilearn effect sizes of the signal-scaled data (percent signal change of each voxel's
mean), optionally z-scored per run. Voxels are the mask's non-zero voxels in C order of the (x, y, z)
array; their indices are ``info["voxel_ijk"]``.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.glm.first_level import FirstLevelModel, make_first_level_design_matrix
from nilearn.masking import compute_multi_epi_mask
from tqdm.auto import tqdm

from neurodecode.data.trials import SPLITS, TrialSet
from neurodecode.validation import InvalidInputError, check_file, check_option

logger = logging.getLogger(__name__)

METHODS = ("lss", "lsa")
_TARGET = "trial"
_OTHERS = "other_trials"
_NUISANCE_PREFIX = "nuisance_"


def _entities(path: Path) -> tuple[dict[str, str], str]:
    """BIDS entities (key -> value) and suffix of a file name, e.g. ``sub-01_run-1_bold.nii.gz``."""
    stem = re.sub(r"(\.nii(\.gz)?|\.tsv|\.json)$", "", path.name)
    parts = stem.split("_")
    entities = dict(p.split("-", 1) for p in parts[:-1] if "-" in p)
    return entities, parts[-1]


def _find_runs(root: Path, subject: str, task: str) -> list[tuple[Path, dict[str, str]]]:
    """All BOLD runs of ``subject`` and ``task``, sorted by (session, run)."""
    sub_dir = root / f"sub-{subject}"
    if not sub_dir.is_dir():
        found = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
        raise InvalidInputError(
            f"subject directory not found: expected {sub_dir} (subjects present: {found})."
        )
    runs, tasks = [], set()
    for path in sorted(sub_dir.rglob(f"sub-{subject}_*_bold.nii*")):
        entities, suffix = _entities(path)
        if suffix != "bold" or path.parent.name != "func":
            continue
        tasks.add(entities.get("task"))
        if entities.get("sub") == subject and entities.get("task") == task:
            runs.append((path, entities))
    if not runs:
        raise InvalidInputError(
            f"no BOLD runs for task {task!r} under {sub_dir}: expected files "
            f"sub-{subject}[_ses-X]_task-{task}[_run-N]_bold.nii[.gz] in a func/ folder "
            f"(tasks present: {sorted(t for t in tasks if t)})."
        )

    def key(item: tuple[Path, dict[str, str]]) -> tuple[str, int]:
        ent = item[1]
        run = ent.get("run", "1")
        return (ent.get("ses", ""), int(run) if run.isdigit() else 0)

    runs.sort(key=key)
    keys = Counter(key(r) for r in runs)
    duplicated = [str(p) for p, e in runs if keys[key((p, e))] > 1]
    if duplicated:
        raise InvalidInputError(
            f"several BOLD files share a session and run for task {task!r}: {duplicated}; "
            "expected one per (ses, run) — remove or move the other variants (acq/echo/space)."
        )
    return runs


def _read_tr(bold_path: Path, img: nib.spatialimages.SpatialImage, root: Path) -> float:
    """Repetition time (s): the sidecar JSON (BIDS inheritance), else the NIfTI header."""
    entities, _ = _entities(bold_path)
    task = entities.get("task")
    candidates = [
        bold_path.with_name(re.sub(r"\.nii(\.gz)?$", ".json", bold_path.name)),
        root / f"sub-{entities.get('sub')}" / f"sub-{entities.get('sub')}_task-{task}_bold.json",
        root / f"task-{task}_bold.json",
    ]
    header_tr = None
    zooms = img.header.get_zooms()
    if len(zooms) >= 4 and zooms[3] > 0:
        header_tr = float(zooms[3])
        if img.header.get_xyzt_units()[1] == "msec":
            header_tr /= 1000.0
    for sidecar in candidates:
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text())
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"{sidecar} is not valid JSON ({err}).") from None
            if "RepetitionTime" in meta:
                tr = meta["RepetitionTime"]
                if not isinstance(tr, int | float) or tr <= 0:
                    raise InvalidInputError(
                        f"RepetitionTime in {sidecar} is {tr!r}; expected a positive number (s)."
                    )
                if header_tr is not None and abs(header_tr - tr) > 1e-3:
                    logger.warning(
                        "TR %.4g s in %s differs from %.4g s in the header of %s; using the sidecar.",
                        tr,
                        sidecar,
                        header_tr,
                        bold_path,
                    )
                return float(tr)
    if header_tr is None:
        raise InvalidInputError(
            f"no repetition time for {bold_path}: expected RepetitionTime in a sidecar JSON "
            "or a positive 4th zoom (TR) in the NIfTI header."
        )
    return header_tr


def _read_events(
    path: Path, n_scans: int, tr: float, exclude: set[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Read and validate one ``events.tsv``: rows sorted by onset, and which rows are trials."""
    try:
        events = pd.read_csv(
            path,
            sep="\t",
            na_values=["n/a"],
            dtype={"trial_type": str, "stimulus_id": str, "split": str},
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InvalidInputError(
            f"{path} is not a readable tab-separated events file ({err})."
        ) from None
    missing = [c for c in ("onset", "duration") if c not in events.columns]
    if missing or not {"trial_type", "stimulus_id"} & set(events.columns):
        raise InvalidInputError(
            f"{path} has columns {list(events.columns)}; expected 'onset', 'duration' and "
            "'trial_type' or 'stimulus_id' (tab-separated, BIDS events)."
        )
    if len(events) == 0:
        raise InvalidInputError(f"{path} has no events; expected one row per trial.")
    for column in ("onset", "duration"):
        values = pd.to_numeric(events[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            rows = np.flatnonzero(bad)[:5].tolist()
            raise InvalidInputError(
                f"{path} has non-numeric or missing {column!r} on rows {rows}; expected seconds."
            )
        events[column] = values.astype(float)
    if (events["duration"] < 0).any():
        raise InvalidInputError(f"{path} has negative durations; expected durations >= 0 s.")
    end = n_scans * tr
    late = events["onset"] >= end
    if late.any():
        raise InvalidInputError(
            f"{path} has {int(late.sum())} onsets at or after the end of its run ({end:g} s = "
            f"{n_scans} scans x TR {tr:g} s); expected onsets inside the run."
        )
    if "trial_type" in events.columns:
        is_trial = ~events["trial_type"].isin(exclude).to_numpy()
    else:
        is_trial = np.ones(len(events), dtype=bool)
    if not is_trial.any():
        raise InvalidInputError(
            f"{path} has no trials left after exclude_trial_types={sorted(exclude)}."
        )
    id_column = "stimulus_id" if "stimulus_id" in events.columns else "trial_type"
    missing_id = events[id_column].isna().to_numpy() & is_trial
    if missing_id.any():
        rows = np.flatnonzero(missing_id)[:5].tolist()
        raise InvalidInputError(
            f"{path} has missing (n/a) {id_column!r} on trial rows {rows} (0-based); expected an "
            "id for every trial (list non-trial event types in exclude_trial_types)."
        )
    order = np.argsort(events["onset"].to_numpy(), kind="stable")
    return events.iloc[order].reset_index(drop=True), is_trial[order]


def _load_bold(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise InvalidInputError(f"{path} is not a readable NIfTI image ({err}).") from None
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise InvalidInputError(
            f"{path} has shape {img.shape}; expected a 4D BOLD series (X, Y, Z, time) with at "
            "least 2 volumes."
        )
    return img


def _find_mask(root: Path, subject: str, task: str) -> Path | None:
    """A unique ``desc-brain_mask`` for the subject (and task, if named) in the tree or derivatives."""
    patterns = [f"sub-{subject}/**/sub-{subject}_*desc-brain_mask.nii*"]
    patterns.append(f"derivatives/**/sub-{subject}/**/sub-{subject}_*desc-brain_mask.nii*")
    found = set()
    for pattern in patterns:
        for path in root.glob(pattern):
            entities, _ = _entities(path)
            if entities.get("task", task) == task:
                found.add(path)
    if len(found) > 1:
        raise InvalidInputError(
            f"several brain masks for sub-{subject} task {task!r}: {sorted(map(str, found))}; "
            "expected one — pass mask= explicitly."
        )
    return found.pop() if found else None


def _resolve_mask(
    mask: str | Path | nib.spatialimages.SpatialImage | None,
    root: Path,
    subject: str,
    task: str,
    bold_paths: list[Path],
) -> tuple[nib.Nifti1Image, str]:
    """Mask image and a description of where it came from."""
    if mask is None:
        mask = _find_mask(root, subject, task)
    if mask is None:
        logger.info("no brain mask found for sub-%s; computing one from the BOLD runs", subject)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty result is reported below
            img = compute_multi_epi_mask([str(p) for p in bold_paths])
        source = (
            f"computed from {len(bold_paths)} BOLD runs by nilearn.masking.compute_multi_epi_mask "
            "(no sub-*_desc-brain_mask found; pass mask= to choose one)"
        )
    elif isinstance(mask, str | Path):
        path = check_file(mask, "brain mask")
        try:
            img = nib.load(path)
        except Exception as err:
            raise InvalidInputError(f"{path} is not a readable NIfTI mask ({err}).") from None
        source = str(path)
    elif isinstance(mask, nib.spatialimages.SpatialImage):
        img, source = mask, "mask image given in memory"
    else:
        raise InvalidInputError(
            f"mask is a {type(mask).__name__}; expected a path, a NIfTI image or None."
        )
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInputError(f"brain mask ({source}) has shape {data.shape}; expected 3D.")
    data = np.nan_to_num(np.asarray(data, dtype=float)) != 0
    if not data.any():
        raise InvalidInputError(f"brain mask ({source}) has no non-zero voxel.")
    return nib.Nifti1Image(data.astype(np.uint8), img.affine), source


def _check_mask_against_bold(
    mask_img: nib.Nifti1Image, mask_source: str, bold: nib.Nifti1Image, bold_path: Path
) -> None:
    if mask_img.shape[:3] != bold.shape[:3]:
        raise InvalidInputError(
            f"brain mask ({mask_source}) has shape {mask_img.shape[:3]} but {bold_path} has "
            f"volumes of shape {bold.shape[:3]}; expected the same (X, Y, Z) grid."
        )
    if not np.allclose(mask_img.affine, bold.affine, atol=1e-3):
        raise InvalidInputError(
            f"brain mask ({mask_source}) has affine\n{mask_img.affine}\nbut {bold_path} has\n"
            f"{bold.affine}\nexpected the same voxel-to-world mapping (resample the mask first)."
        )


def _design(
    events: pd.DataFrame,
    labels: Sequence[str],
    frame_times: np.ndarray,
    hrf_model: str,
    drift_model: str | None,
    high_pass: float,
) -> pd.DataFrame:
    table = pd.DataFrame(
        {"onset": events["onset"], "duration": events["duration"], "trial_type": list(labels)}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. "events with null duration"
        return make_first_level_design_matrix(
            frame_times, table, hrf_model=hrf_model, drift_model=drift_model, high_pass=high_pass
        )


def _fit_effects(
    bold: nib.Nifti1Image,
    design: pd.DataFrame,
    columns: Sequence[str],
    mask_img: nib.Nifti1Image,
    mask: np.ndarray,
    noise_model: str,
    n_jobs: int,
) -> np.ndarray:
    """Fit one FirstLevelModel; effect sizes of ``columns`` -> (len(columns), n_voxels)."""
    model = FirstLevelModel(
        mask_img=mask_img,
        noise_model=noise_model,
        signal_scaling=0,
        minimize_memory=True,
        n_jobs=n_jobs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.filterwarnings(
            "ignore", message=".*Given mask will be used", category=RuntimeWarning
        )
        model.fit(bold, design_matrices=[design])
    effects = np.empty((len(columns), int(mask.sum())), dtype=np.float32)
    names = list(design.columns)
    for row, column in enumerate(columns):
        contrast = np.zeros(len(names))
        contrast[names.index(column)] = 1.0
        img = model.compute_contrast(contrast, stat_type="t", output_type="effect_size")
        effects[row] = np.asarray(img.get_fdata(dtype=np.float32))[mask]
    return effects


def _run_betas(
    bold: nib.Nifti1Image,
    events: pd.DataFrame,
    is_trial: np.ndarray,
    tr: float,
    mask_img: nib.Nifti1Image,
    mask: np.ndarray,
    method: str,
    hrf_model: str,
    drift_model: str | None,
    high_pass: float,
    noise_model: str,
    n_jobs: int,
    bar: tqdm | None,
) -> np.ndarray:
    """Single-trial betas of one run, (n_trials, n_voxels) in onset order."""
    frame_times = np.arange(bold.shape[3]) * tr
    nuisance = [
        f"{_NUISANCE_PREFIX}{t}" for t in events.get("trial_type", pd.Series(dtype=str)).astype(str)
    ]
    trial_rows = np.flatnonzero(is_trial)
    if method == "lsa":
        labels = list(nuisance) if nuisance else [""] * len(events)
        names = [f"trial_{i:05d}" for i in range(len(trial_rows))]
        for name, row in zip(names, trial_rows):
            labels[row] = name
        design = _design(events, labels, frame_times, hrf_model, drift_model, high_pass)
        return _fit_effects(bold, design, names, mask_img, mask, noise_model, n_jobs)

    def one_trial(target: int) -> np.ndarray:
        labels = list(nuisance) if nuisance else [""] * len(events)
        for row in trial_rows:
            labels[row] = _TARGET if row == target else _OTHERS
        design = _design(events, labels, frame_times, hrf_model, drift_model, high_pass)
        return _fit_effects(bold, design, [_TARGET], mask_img, mask, noise_model, 1)[0]

    if n_jobs == 1:
        out = []
        for target in trial_rows:
            out.append(one_trial(target))
            if bar is not None:
                bar.update()
        return np.stack(out)
    from joblib import Parallel, delayed

    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(one_trial)(t) for t in trial_rows
    )
    out = []
    for beta in results:
        out.append(beta)
        if bar is not None:
            bar.update()
    return np.stack(out)


def _stimulus_ids(values: list[str]) -> np.ndarray:
    """Integer ids when every id is a plain integer (no leading zeros), else strings."""
    if all(re.fullmatch(r"-?(0|[1-9]\d*)", v) for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array(values, dtype=str)


def read_bids_fmri(
    root: str | Path,
    subject: str,
    task: str,
    mask: str | Path | nib.spatialimages.SpatialImage | None = None,
    method: str = "lss",
    hrf_model: str = "glover",
    drift_model: str | None = "cosine",
    high_pass: float = 0.01,
    noise_model: str = "ar1",
    exclude_trial_types: Iterable[str] = (),
    test_stimuli: Iterable[int | str] | None = None,
    zscore_runs: bool = False,
    n_jobs: int = 1,
    progress: bool = True,
) -> TrialSet:
    """Single-trial betas of one subject and task from a BIDS tree.

    Reads every run ``sub-<subject>/[ses-*/]func/sub-<subject>_[ses-*_]task-<task>[_run-N]_bold
    .nii[.gz]`` with its ``..._events.tsv`` beside it, fits nilearn first-level GLMs per run and
    returns one row per trial.

    Parameters
    ----------
    root : path
        BIDS root (the folder holding ``dataset_description.json`` and ``sub-*``).
    subject : str
        Subject label, with or without ``sub-`` (``"01"`` or ``"sub-01"``).
    task : str
        Task label as in ``task-<label>``.
    mask : path, NIfTI image or None
        Brain mask on the BOLD grid (non-zero = in). ``None``: the unique
        ``sub-<subject>_*desc-brain_mask.nii[.gz]`` under the subject folder or ``derivatives/``;
        if there is none, one computed from the runs with
        :func:`nilearn.masking.compute_multi_epi_mask`.
    method : {"lss", "lsa"}
        Least-squares-separate (one GLM per trial: the trial vs all other trials of its run) or
        least-squares-all (one GLM per run, one regressor per trial).
    hrf_model, drift_model, high_pass, noise_model
        Passed to nilearn (:func:`~nilearn.glm.first_level.make_first_level_design_matrix` and
        :class:`~nilearn.glm.first_level.FirstLevelModel`); ``high_pass`` in Hz.
    exclude_trial_types : iterable of str
        ``trial_type`` values that are not trials (e.g. ``"fixation"``, ``"response"``): modelled as
        one nuisance regressor per type, not returned. Their count is logged.
    test_stimuli : iterable of int or str, optional
        Stimulus ids whose trials get ``split == "test"`` (the rest ``"train"``); takes precedence
        over a ``split`` column in the events. Without either, every trial is ``"train"``.
    zscore_runs : bool
        Z-score each voxel over the trials of each run (after estimation).
    n_jobs : int
        Parallel GLM fits (LSS: trials in parallel with joblib; LSA: nilearn's ``n_jobs``).
    progress : bool
        Show a tqdm bar over the LSS fits.

    Returns
    -------
    TrialSet
        ``data`` (n_trials, n_voxels) float32 betas (percent signal change, or z-scores with
        ``zscore_runs``); ``subject`` ``"sub-<label>"``; ``session`` the 1-based position of the
        run in (ses, run) order (the run number for single-session data); ``stimulus_id`` from the
        ``stimulus_id`` column (else ``trial_type``), int when every id is an integer;
        ``repeat`` 0-based count per stimulus in presentation order; ``split``. ``info`` holds
        ``voxel_ijk`` ((n_voxels, 3) int, (x, y, z) voxel indices of the columns), ``affine``
        (4, 4), ``shape`` (X, Y, Z), ``method``, ``hrf_model``, ``mask_source``, ``runs`` (one dict
        per session: ``bold``, ``events``, ``tr``, ``n_scans``, ``n_trials``, ``ses``, ``run``)
        and ``units``.

    Raises
    ------
    InvalidInputError
        Missing subject, runs, events or mask file; events without ``onset``/``duration`` and
        ``trial_type`` or ``stimulus_id``; a BOLD file that is not 4D; a mask whose grid differs
        from the BOLD's; NaN voxels in the mask; betas that are not finite (constant voxels).
        The message names the file and what was expected.
    """
    check_option("method", method, METHODS)
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"BIDS root not found: expected a directory at {root}.")
    subject = subject.removeprefix("sub-")
    exclude = set(map(str, exclude_trial_types))
    runs = _find_runs(root, subject, task)
    bold_paths = [p for p, _ in runs]
    bold_imgs = [_load_bold(p) for p in bold_paths]  # validates 4D before any mask computation
    mask_img, mask_source = _resolve_mask(mask, root, subject, task, bold_paths)
    mask_bool = np.asarray(mask_img.dataobj) != 0

    # Read and validate every run before the (slow) fits.
    prepared = []
    for (path, entities), bold in zip(runs, bold_imgs):
        _check_mask_against_bold(mask_img, mask_source, bold, path)
        tr = _read_tr(path, bold, root)
        events_path = path.with_name(re.sub(r"_bold\.nii(\.gz)?$", "_events.tsv", path.name))
        check_file(events_path, f"events file for {path.name} (onset, duration, trial_type)")
        events, is_trial = _read_events(events_path, bold.shape[3], tr, exclude)
        if (~is_trial).any():
            logger.info(
                "%s: %d non-trial events modelled as nuisance", events_path, (~is_trial).sum()
            )
        data = np.asarray(bold.dataobj, dtype=np.float32)
        voxels = data[mask_bool]  # (n_voxels, n_scans)
        bad = ~np.isfinite(voxels).all(axis=1)
        if bad.any():
            first = np.argwhere(mask_bool)[np.flatnonzero(bad)[0]].tolist()
            raise InvalidInputError(
                f"{path} has {int(bad.sum())} voxels inside the brain mask with NaN/inf values "
                f"(first at (x, y, z) = {first}); expected finite BOLD in every masked voxel."
            )
        bold = nib.Nifti1Image(data, bold.affine, bold.header)  # in memory for the repeated fits
        prepared.append((path, entities, bold, tr, events_path, events, is_trial))

    n_total = sum(int(p[6].sum()) for p in prepared)
    bar = None
    if method == "lss":
        bar = tqdm(total=n_total, desc=f"LSS sub-{subject}", unit="trial", disable=not progress)
    betas, sessions, stimuli, splits, run_info = [], [], [], [], []
    try:
        for session, (path, entities, bold, tr, events_path, events, is_trial) in enumerate(
            prepared, start=1
        ):
            run_betas = _run_betas(
                bold,
                events,
                is_trial,
                tr,
                mask_img,
                mask_bool,
                method,
                hrf_model,
                drift_model,
                high_pass,
                noise_model,
                n_jobs,
                bar,
            )
            if not np.isfinite(run_betas).all():
                n_bad = int((~np.isfinite(run_betas)).any(axis=0).sum())
                raise InvalidInputError(
                    f"{path}: {n_bad} masked voxels gave non-finite betas; expected voxels with a "
                    "non-zero mean and varying signal (constant or empty voxels inside the mask?)."
                )
            if zscore_runs:
                std = run_betas.std(axis=0)
                run_betas = (run_betas - run_betas.mean(axis=0)) / np.where(std > 0, std, 1.0)
            trials = events[is_trial]
            ids = trials["stimulus_id"] if "stimulus_id" in trials else trials["trial_type"]
            stimuli.extend(ids.astype(str).tolist())
            if "split" in trials.columns:
                values = trials["split"].astype(str)
                bad_split = sorted(set(values) - set(SPLITS))
                if bad_split and test_stimuli is None:
                    raise InvalidInputError(
                        f"{events_path} has split values {bad_split}; expected {SPLITS}."
                    )
                splits.extend(values.tolist())
            else:
                splits.extend(["train"] * len(trials))
            betas.append(run_betas.astype(np.float32))
            sessions.extend([session] * len(trials))
            run_info.append(
                {
                    "bold": str(path),
                    "events": str(events_path),
                    "tr": tr,
                    "n_scans": int(bold.shape[3]),
                    "n_trials": len(trials),
                    "ses": entities.get("ses"),
                    "run": entities.get("run"),
                }
            )
    finally:
        if bar is not None:
            bar.close()

    stimulus_id = _stimulus_ids(stimuli)
    seen: Counter = Counter()
    repeat = np.empty(len(stimuli), dtype=np.int64)
    for i, key in enumerate(stimuli):
        repeat[i] = seen[key]
        seen[key] += 1
    if test_stimuli is not None:
        test = {str(s) for s in test_stimuli}
        split = np.where(np.isin(np.array(stimuli), list(test)), "test", "train")
    else:
        split = np.array(splits)
    return TrialSet(
        data=np.concatenate(betas),
        subject=np.full(len(stimuli), f"sub-{subject}"),
        session=np.array(sessions, dtype=np.int64),
        stimulus_id=stimulus_id,
        repeat=repeat,
        split=split,
        info={
            "voxel_ijk": np.argwhere(mask_bool).astype(np.int64),
            "affine": np.asarray(mask_img.affine, dtype=float),
            "shape": tuple(int(n) for n in mask_bool.shape),
            "method": method,
            "hrf_model": hrf_model,
            "mask_source": mask_source,
            "runs": run_info,
            "units": "z-score per run" if zscore_runs else "percent signal change",
        },
    )
