"""Brain maps of per-voxel analysis results: R², noise ceiling, ROI selectivity, latent alignment.

Per-voxel values (ordered as the reader's ``voxel_ijk``) are put back into the subject's volume
(:func:`values_to_volume`, :func:`values_to_nifti`) and drawn two ways:

- :func:`plot_slice_mosaic`: axial slices of the subject grid (simulated worlds, or any native
  space without a template) through :func:`neurodecode.plotting.retrieval.plot_volume_mosaic`;
- :func:`plot_surface_map`: the volume sampled onto nilearn's fsaverage5 pial surface
  (``vol_to_surf``) and drawn with ``plot_surf_stat_map``, both hemispheres (MNI-space maps).

nilearn's fsaverage5 meshes are part of the installed package: nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurodecode.validation import InvalidInputError, check_array


def values_to_volume(
    values: np.ndarray, voxel_ijk: np.ndarray, shape: tuple[int, int, int], fill: float = np.nan
) -> np.ndarray:
    """Scatter per-voxel values into an (X, Y, Z) volume.

    Parameters
    ----------
    values : array, shape (n_voxels,)
    voxel_ijk : int array, shape (n_voxels, 3)
        (x, y, z) indices, as ``TrialSet.info["voxel_ijk"]``.
    shape : (X, Y, Z)
    fill : float
        Value outside the voxels (NaN draws as transparent).

    Returns
    -------
    ndarray, shape (X, Y, Z), float64
    """
    values = check_array("values", np.asarray(values, dtype=np.float64), ndim=1)
    ijk = check_array("voxel_ijk", np.asarray(voxel_ijk), shape=(len(values), 3), kind="iu")
    if np.any(ijk < 0) or np.any(ijk >= np.asarray(shape)):
        raise InvalidInputError(f"voxel_ijk has indices outside the volume shape {tuple(shape)}.")
    volume = np.full(tuple(int(s) for s in shape), fill, dtype=np.float64)
    volume[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
    return volume


def values_to_nifti(
    values: np.ndarray, voxel_ijk: np.ndarray, shape: tuple[int, int, int], affine: np.ndarray
):
    """Per-voxel values as a ``nibabel.Nifti1Image`` (float32, 0 outside the voxels)."""
    import nibabel as nib

    volume = values_to_volume(values, voxel_ijk, shape, fill=0.0).astype(np.float32)
    return nib.Nifti1Image(volume, np.asarray(affine, dtype=np.float64))


def plot_slice_mosaic(
    values: np.ndarray,
    voxel_ijk: np.ndarray,
    shape: tuple[int, int, int],
    path: str | Path | None = None,
    title: str = "",
    cmap: str = "viridis",
    n_slices: int = 8,
):
    """Axial slice mosaic of a per-voxel map on the subject grid (no template needed)."""
    from neurodecode.plotting.retrieval import plot_volume_mosaic

    volume = values_to_volume(values, voxel_ijk, shape)
    return plot_volume_mosaic(volume, path=path, title=title, cmap=cmap, n_slices=n_slices)


def plot_surface_map(
    image, path: str | Path | None = None, title: str = "", threshold: float | None = None
):
    """A map in MNI space sampled onto fsaverage5 and drawn on both inflated hemispheres."""
    from matplotlib.figure import Figure
    from nilearn import datasets, plotting, surface

    fsaverage = datasets.fetch_surf_fsaverage("fsaverage5")
    fig = Figure(figsize=(8, 3.5))
    axes = fig.subplots(1, 2, subplot_kw={"projection": "3d"})
    for ax, hemi in zip(axes, ("left", "right")):
        texture = surface.vol_to_surf(image, fsaverage[f"pial_{hemi}"])
        plotting.plot_surf_stat_map(
            fsaverage[f"infl_{hemi}"],
            texture,
            hemi=hemi,
            bg_map=fsaverage[f"sulc_{hemi}"],
            threshold=threshold,
            axes=ax,
            figure=fig,
            colorbar=hemi == "right",
        )
    fig.suptitle(title, fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def box_to_mni_affine(brain: np.ndarray) -> np.ndarray:
    """A display affine that stretches a brain mask's bounding box onto MNI152's brain.

    For volumes without a template registration (the simulated worlds' ellipsoid brains, whose
    grid axes run left->right, posterior->anterior, inferior->superior): voxel centres at the
    mask's extreme indices land on the extremes of nilearn's MNI152 brain mask, so that
    :func:`plot_surface_map` can draw them on fsaverage. It places maps for viewing only; it is
    no registration.

    Parameters
    ----------
    brain : bool array, shape (X, Y, Z)
        Voxels inside the brain.

    Returns
    -------
    ndarray, shape (4, 4)
        Voxel (i, j, k) -> MNI millimetres.
    """
    from nilearn import datasets

    brain = np.asarray(brain, dtype=bool)
    if brain.ndim != 3 or not brain.any():
        raise InvalidInputError(
            f"brain has shape {brain.shape} and {int(brain.sum())} voxels; expected a 3-D mask "
            "with voxels."
        )
    template = datasets.load_mni152_brain_mask(resolution=2)
    ijk = np.argwhere(template.get_fdata() > 0)
    xyz = ijk @ template.affine[:3, :3].T + template.affine[:3, 3]
    lo_mm, hi_mm = xyz.min(0), xyz.max(0)
    inside = np.argwhere(brain)
    lo, hi = inside.min(0).astype(float), inside.max(0).astype(float)
    scale = (hi_mm - lo_mm) / np.maximum(hi - lo, 1.0)
    affine = np.diag([*scale, 1.0])
    affine[:3, 3] = lo_mm - scale * lo
    return affine
