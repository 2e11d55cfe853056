"""The one reader (and writer) of a simulated NSD world's ``ground_truth.h5``.

Layout (h5py paths)::

    attrs: config (JSON of the settings), config_digest
    generating_features        (n_images, n_features) float32; attrs blocks (JSON), energy_grid,
                               semantic_axes, attribute_names (JSON, worlds from 2027 on)
    category                   (n_images,) bytes
    sharedix                   (n_shared,) 0-based 73k ids
    subjXX/                    one group per subject, attrs volume_shape_xyz
        voxel_ijk              (V, 3) int32 (x, y, z), the order of every per-voxel array
        roi, kind              (V,) bytes: ROI name ("" none), "early" / "category" / "other"
        linear, exponent       (V,) every source the voxel sees is linear; 1 or 0.3
        weights                (V, n_features) float32: psc per standardised feature (exact for
                               linear voxels; for others the mix of the sources' pre-exponent
                               weights)
        prf                    (V, 3) pRF centre x, y and size (NaN without a pRF)
        amplitude, baseline    (V,) signal SD and mean over images, psc
        noise_sd, ncsnr        (V,) total single-trial noise SD; amplitude / noise_sd
        noise_ceiling          (V,) NSD's formula, percent, for n_repeats averaged trials
        stimulus_ids           (n,) the 73k ids this subject saw (subjectim order)
        responses              (n, V) float32 noise-free responses to them, psc
        drift_offset           (n_sessions, V); drift_gain (n_sessions,): a written beta is
                               gain * (response + noise) + offset
        noise/                 the noise model (:class:`neurodecode.sim.noise.NoiseModel`):
            mixing_data, mixing_indices, mixing_indptr   CSR point-spread mixing, attrs shape
            source_sd          (K,) neural noise SD of each source
            global_factors     (V, G) global noise loadings
            independent_sd     (V,) thermal noise SD
        sources/               the cortical sources: ijk, roi, kind, weights, exponent, prf,
                               amplitude, baseline, noise_sd

Worlds written before the noise model existed have no ``noise/`` or ``sources/`` group; for them
:attr:`SubjectTruth.noise` is independent noise of SD ``noise_sd`` and ``sources`` is None.
Everything inside :mod:`neurodecode.sim` reads the file through this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse

from neurodecode.sim.brain import GeneratingFeatures, VoxelPopulation, standardise_features
from neurodecode.sim.noise import NoiseModel
from neurodecode.validation import InvalidInputError, check_file

FILE_NAME = "ground_truth.h5"
_STRINGS = {"roi": "S12", "kind": "S8"}


def ground_truth_path(root_or_file: str | Path) -> Path:
    """``ROOT/ground_truth.h5`` for a data set root, or the file itself; checked to exist."""
    path = Path(root_or_file)
    if path.is_dir():
        path = path / FILE_NAME
    return check_file(path, "simulation ground truth (ground_truth.h5)")


@dataclass
class SubjectTruth:
    """What was planted in one simulated subject (arrays in ``voxel_ijk`` order).

    Attributes
    ----------
    subject : str
        ``"subj01"`` ...
    voxels : VoxelPopulation
        Per-voxel ``ijk``, ``roi``, ``kind``, ``weights``, ``exponent``, ``prf``, ``amplitude``,
        ``baseline`` and ``noise_sd`` (total single-trial noise SD).
    ncsnr, noise_ceiling : ndarray, shape (V,)
        True noise-ceiling SNR and NSD-formula noise ceiling (percent, ``n_repeats`` averaged).
    stimulus_ids : ndarray, shape (n,)
        The 73k ids this subject saw.
    responses : ndarray or None, shape (n, V)
        Noise-free responses to ``stimulus_ids`` (None when read without them).
    drift_offset : ndarray, shape (n_sessions, V)
    drift_gain : ndarray, shape (n_sessions,)
        A written beta is ``drift_gain[s] * (response + noise) + drift_offset[s]``.
    noise : NoiseModel
        The single-trial noise (point-spread neural noise, global factors, thermal noise).
    sources : VoxelPopulation or None
        The cortical sources the voxels see (None for worlds written before them).
    volume_shape : tuple of int
        (X, Y, Z) of the subject's volume.
    """

    subject: str
    voxels: VoxelPopulation
    ncsnr: np.ndarray
    noise_ceiling: np.ndarray
    stimulus_ids: np.ndarray
    responses: np.ndarray | None
    drift_offset: np.ndarray
    drift_gain: np.ndarray
    noise: NoiseModel
    sources: VoxelPopulation | None = None
    volume_shape: tuple[int, int, int] = field(default=(0, 0, 0))

    @property
    def voxel_ijk(self) -> np.ndarray:
        """(V, 3) (x, y, z) of the nsdgeneral voxels."""
        return self.voxels.ijk

    @property
    def roi(self) -> np.ndarray:
        """ROI name per voxel (``""`` for none; the planted ``food`` cluster included)."""
        return self.voxels.roi

    @property
    def kind(self) -> np.ndarray:
        """``"early"``, ``"category"`` or ``"other"`` per voxel."""
        return self.voxels.kind

    @property
    def linear(self) -> np.ndarray:
        """True where the voxel's response is linear in the generating features."""
        return self.voxels.linear

    @property
    def noise_sd(self) -> np.ndarray:
        """Total single-trial noise SD per voxel, percent signal change."""
        return self.voxels.noise_sd

    def responses_to(self, stimulus_ids: np.ndarray) -> np.ndarray:
        """Noise-free responses to the given 73k ids, shape (len(ids), V).

        Raises
        ------
        InvalidInputError
            If the responses were not read or an id is not one this subject saw.
        """
        if self.responses is None:
            raise InvalidInputError(
                f"{self.subject}: responses were not read (read_subject_truth(..., "
                "responses=True))."
            )
        row_of = {int(i): r for r, i in enumerate(self.stimulus_ids)}
        missing = [int(i) for i in stimulus_ids if int(i) not in row_of]
        if missing:
            raise InvalidInputError(
                f"{self.subject} never saw stimulus ids {missing[:5]} (of {len(missing)})."
            )
        return self.responses[[row_of[int(i)] for i in stimulus_ids]]


@dataclass
class WorldTruth:
    """The world-level part of ``ground_truth.h5`` (subjects are read on demand).

    Attributes
    ----------
    path : Path
        The file.
    config : dict
        The simulation settings (:meth:`neurodecode.sim.fmri.FMRISimConfig.settings`).
    config_digest : str
    features : GeneratingFeatures
        Raw generating features of every image (blocks and pooling grid).
    category : ndarray of str, shape (n_images,)
    sharedix : ndarray, shape (n_shared,)
        0-based 73k ids of the shared (test) images.
    subjects : list of str
    semantic_axes, attribute_names : tuple of str
        Column names of the ``semantic`` and ``attributes`` blocks (empty for old worlds).
    """

    path: Path
    config: dict
    config_digest: str
    features: GeneratingFeatures
    category: np.ndarray
    sharedix: np.ndarray
    subjects: list[str]
    semantic_axes: tuple[str, ...] = ()
    attribute_names: tuple[str, ...] = ()

    @property
    def n_repeats(self) -> int:
        """Presentations of each image per subject."""
        return int(self.config["n_repeats"])

    def standardised_features(self) -> np.ndarray:
        """:func:`neurodecode.sim.brain.standardise_features` of :attr:`features`."""
        return standardise_features(self.features)

    def block_features(self, standardised: bool = True) -> dict[str, np.ndarray]:
        """The feature blocks by name, ``{block: (n_images, width)}``."""
        values = self.standardised_features() if standardised else self.features.values
        return {k: values[:, a:b] for k, (a, b) in self.features.blocks.items()}

    def subject(self, subject: str, responses: bool = True) -> SubjectTruth:
        """One subject's truth (see :func:`read_subject_truth`)."""
        return read_subject_truth(self.path, subject, responses=responses)


def read_ground_truth(root_or_file: str | Path) -> WorldTruth:
    """Read the world-level ground truth of a simulated NSD data set (root or file path)."""
    path = ground_truth_path(root_or_file)
    with h5py.File(path, "r") as gt:
        for key in ("generating_features", "category", "sharedix"):
            if key not in gt:
                raise InvalidInputError(
                    f"{path} has no {key!r}; expected an fMRI simulation ground truth "
                    "(neurodecode simulate fmri)."
                )
        gf = gt["generating_features"]
        blocks = {k: tuple(v) for k, v in json.loads(gf.attrs["blocks"]).items()}
        features = GeneratingFeatures(
            gf[:].astype(np.float64), blocks, int(gf.attrs["energy_grid"])
        )
        return WorldTruth(
            path=path,
            config=json.loads(gt.attrs["config"]),
            config_digest=str(gt.attrs.get("config_digest", "")),
            features=features,
            category=gt["category"][:].astype(str),
            sharedix=gt["sharedix"][:].astype(np.int64),
            subjects=sorted(k for k in gt if k.startswith("subj")),
            semantic_axes=tuple(json.loads(gf.attrs.get("semantic_axes", "[]"))),
            attribute_names=tuple(json.loads(gf.attrs.get("attribute_names", "[]"))),
        )


def _population(group: h5py.Group, ijk_name: str) -> VoxelPopulation:
    return VoxelPopulation(
        ijk=group[ijk_name][:].astype(np.int64),
        roi=group["roi"][:].astype(str),
        kind=group["kind"][:].astype(str),
        weights=group["weights"][:],
        exponent=group["exponent"][:],
        prf=group["prf"][:],
        amplitude=group["amplitude"][:],
        baseline=group["baseline"][:],
        noise_sd=group["noise_sd"][:],
    )


def read_subject_truth(
    root_or_file: str | Path, subject: str, responses: bool = True
) -> SubjectTruth:
    """Read one subject's ground truth.

    Parameters
    ----------
    root_or_file : path
        The data set root or its ``ground_truth.h5``.
    subject : str
        ``"subj01"`` ...
    responses : bool
        Also read the noise-free responses (``(n_images_seen, V)`` float32).
    """
    path = ground_truth_path(root_or_file)
    with h5py.File(path, "r") as gt:
        if subject not in gt:
            found = sorted(k for k in gt if k.startswith("subj"))
            raise InvalidInputError(f"{path} has no subject {subject!r}; it has {found}.")
        g = gt[subject]
        voxels = _population(g, "voxel_ijk")
        if "noise" in g:
            n = g["noise"]
            mixing = scipy.sparse.csr_matrix(
                (n["mixing_data"][:], n["mixing_indices"][:], n["mixing_indptr"][:]),
                shape=tuple(n.attrs["mixing_shape"]),
            )
            noise = NoiseModel(
                mixing, n["source_sd"][:], n["global_factors"][:], n["independent_sd"][:]
            )
        else:  # independent noise only (worlds written before the noise model)
            noise = NoiseModel(
                scipy.sparse.csr_matrix((len(voxels.ijk), 0)),
                np.zeros(0),
                np.zeros((len(voxels.ijk), 0)),
                voxels.noise_sd.astype(np.float64),
            )
        sources = _population(g["sources"], "ijk") if "sources" in g else None
        return SubjectTruth(
            subject=subject,
            voxels=voxels,
            ncsnr=g["ncsnr"][:],
            noise_ceiling=g["noise_ceiling"][:],
            stimulus_ids=g["stimulus_ids"][:].astype(np.int64),
            responses=g["responses"][:] if responses else None,
            drift_offset=g["drift_offset"][:],
            drift_gain=g["drift_gain"][:],
            noise=noise,
            sources=sources,
            volume_shape=tuple(int(v) for v in g.attrs.get("volume_shape_xyz", (0, 0, 0))),
        )


# ----------------------------------------------------------------------------- writer


def write_world(
    gt: h5py.File,
    settings: dict,
    digest: str,
    features: GeneratingFeatures,
    category: np.ndarray,
    sharedix: np.ndarray,
    semantic_axes: tuple[str, ...],
    attribute_names: tuple[str, ...],
) -> None:
    """Write the world-level part of the layout (see module docstring) into an open file."""
    gt.attrs["config"] = json.dumps(settings, sort_keys=True)
    gt.attrs["config_digest"] = digest
    d = gt.create_dataset("generating_features", data=features.values.astype(np.float32))
    d.attrs["blocks"] = json.dumps(features.blocks)
    d.attrs["energy_grid"] = features.grid
    d.attrs["semantic_axes"] = json.dumps(list(semantic_axes))
    d.attrs["attribute_names"] = json.dumps(list(attribute_names))
    gt.create_dataset("category", data=np.asarray(category).astype("S8"))
    gt.create_dataset("sharedix", data=sharedix)


def _write_population(group: h5py.Group, pop: VoxelPopulation, ijk_name: str) -> None:
    for name, value in {
        ijk_name: pop.ijk.astype(np.int32),
        "weights": pop.weights.astype(np.float32),
        "exponent": pop.exponent,
        "prf": pop.prf,
        "amplitude": pop.amplitude,
        "baseline": pop.baseline,
        "noise_sd": pop.noise_sd,
    }.items():
        group.create_dataset(name, data=value)
    for name, dtype in _STRINGS.items():
        group.create_dataset(name, data=getattr(pop, name).astype(dtype))


def write_subject(gt: h5py.File, truth: SubjectTruth) -> None:
    """Write one subject's group (see module docstring) into an open file."""
    g = gt.create_group(truth.subject)
    _write_population(g, truth.voxels, "voxel_ijk")
    for name, value in {
        "linear": truth.voxels.linear,
        "ncsnr": truth.ncsnr,
        "noise_ceiling": truth.noise_ceiling,
        "stimulus_ids": truth.stimulus_ids.astype(np.int64),
        "responses": np.asarray(truth.responses, dtype=np.float32),
        "drift_offset": truth.drift_offset,
        "drift_gain": truth.drift_gain,
    }.items():
        g.create_dataset(name, data=value)
    g.attrs["volume_shape_xyz"] = truth.volume_shape
    n = g.create_group("noise")
    mixing = truth.noise.mixing.tocsr()
    n.create_dataset("mixing_data", data=mixing.data)
    n.create_dataset("mixing_indices", data=mixing.indices.astype(np.int32))
    n.create_dataset("mixing_indptr", data=mixing.indptr.astype(np.int64))
    n.attrs["mixing_shape"] = mixing.shape
    n.create_dataset("source_sd", data=truth.noise.source_sd)
    n.create_dataset("global_factors", data=truth.noise.global_factors)
    n.create_dataset("independent_sd", data=truth.noise.independent_sd)
    if truth.sources is not None:
        _write_population(g.create_group("sources"), truth.sources, "ijk")
