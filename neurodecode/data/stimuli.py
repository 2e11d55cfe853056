"""Stimulus images by id, read lazily from an NSD-layout brick or an image folder.

:func:`open_stimuli` accepts

- an NSD-layout root (``nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5`` under it) or that HDF5 file
  itself: dataset ``imgBrick`` (N, H, W, 3) uint8; the stimulus id of row ``i`` is ``i`` (NSD's
  0-based 73k id); captions come from ``nsd_captions.csv`` beside it (columns ``nsdId``,
  ``caption``) when present;
- MindEye2's ``coco_images_224_float16.hdf5`` (or a folder holding it): dataset ``images``
  (73000, 3, 224, 224) float16 in [0, 1]; the id of row ``i`` is ``i`` (the 73k id); images come
  back as (n, 224, 224, 3) uint8 (``round(255 x value)``);
- MindEye1's ``webdataset_avg_split/`` (or the folder holding it): every shard's ``KEY.jpg`` by
  its ``KEY.coco73k.npy`` id (:func:`neurodecode.data.mindeye.index_mindeye1_images`); images are
  decoded from the shards when asked for;
- a folder of images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.webp``, not recursive): the id of
  an image is its file name without the extension, ids sorted by name; captions from a
  ``captions.csv`` (columns ``id``, ``caption``) in the folder when present.

Only the rows asked for are read, so a 73k-image brick never has to fit in memory.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurodecode.validation import InvalidInputError

NSD_STIMULI = Path("nsddata_stimuli/stimuli/nsd/nsd_stimuli.hdf5")
NSD_CAPTIONS_NAME = "nsd_captions.csv"
MINDEYE2_IMAGES = "coco_images_224_float16.hdf5"
MINDEYE1_FOLDER = "webdataset_avg_split"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class StimulusSource:
    """Where stimulus images live and how their ids map to them.

    Attributes
    ----------
    path : Path
        The HDF5 brick or the image folder.
    kind : {"nsd", "mindeye2", "tar", "folder"}
    ids : ndarray of str, shape (n,)
        Every stimulus id the source holds, in order.
    captions : dict or None
        ``{id: caption}`` if a captions file was found.
    """

    path: Path
    kind: str
    ids: np.ndarray
    captions: dict[str, str] | None = None
    _files: dict[str, Path] | None = None
    _members: dict | None = None  # kind "tar": id -> ShardMember (shard, offset, size)

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, stimulus_ids: list[str] | np.ndarray) -> np.ndarray | list[np.ndarray]:
        """Images for ``stimulus_ids``, in that order.

        Returns
        -------
        ndarray (n, H, W, 3) uint8 for an NSD brick or MindEye2's images; a list of (H, W, 3)
        uint8 arrays for a folder or MindEye1's shards (images may differ in size).
        """
        wanted = [str(i) for i in stimulus_ids]
        if self.kind in ("nsd", "mindeye2"):
            import h5py

            name = "imgBrick" if self.kind == "nsd" else "images"
            n = len(self.ids)
            rows = []
            for sid in wanted:
                if not sid.isdigit() or int(sid) >= n:
                    raise InvalidInputError(
                        f"stimulus id {sid!r} is not a row of {name} in {self.path} "
                        f"(expected 0..{n - 1})."
                    )
                rows.append(int(sid))
            rows_arr = np.asarray(rows, dtype=np.int64)
            unique, inverse = np.unique(rows_arr, return_inverse=True)
            with h5py.File(self.path, "r") as f:
                images = np.asarray(f[name][unique] if len(unique) else f[name][:0])
            if self.kind == "mindeye2":  # (n, 3, H, W) float in [0, 1] -> (n, H, W, 3) uint8
                pixels = images.astype(np.float32).transpose(0, 2, 3, 1)  # float16 x 255 rounds
                images = np.rint(np.clip(pixels, 0, 1) * 255)
                images = images.astype(np.uint8)
            return images[inverse]
        from PIL import Image

        if self.kind == "tar":
            missing = [sid for sid in wanted if sid not in self._members]
            if missing:
                raise InvalidInputError(
                    f"{len(missing)} stimulus ids have no image in the MindEye1 shards under "
                    f"{self.path} (first: {missing[:5]})."
                )
            out = []
            for sid in wanted:
                member = self._members[sid]
                with open(member.shard, "rb") as handle:
                    handle.seek(member.offset)
                    payload = handle.read(member.size)
                try:
                    out.append(np.asarray(Image.open(io.BytesIO(payload)).convert("RGB")))
                except Exception as err:
                    raise InvalidInputError(
                        f"{member.shard}: {member.name} is not a readable image ({err})."
                    ) from err
            return out

        missing = [sid for sid in wanted if sid not in self._files]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} stimulus ids have no image in {self.path} (first: {missing[:5]})."
            )
        return [np.asarray(Image.open(self._files[sid]).convert("RGB")) for sid in wanted]

    def caption_list(self, stimulus_ids: list[str] | np.ndarray) -> list[str]:
        """Captions for ``stimulus_ids``, in order (raises if there is no captions file)."""
        if self.captions is None:
            raise InvalidInputError(
                f"no captions found for the stimuli in {self.path}; expected "
                f"{NSD_CAPTIONS_NAME if self.kind == 'nsd' else 'captions.csv'} beside them."
            )
        wanted = [str(i) for i in stimulus_ids]
        missing = [sid for sid in wanted if sid not in self.captions]
        if missing:
            raise InvalidInputError(
                f"{len(missing)} stimulus ids have no caption (first: {missing[:5]})."
            )
        return [self.captions[sid] for sid in wanted]


def _read_caption_csv(path: Path, id_column: str) -> dict[str, str] | None:
    if not path.is_file():
        return None
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {id_column, "caption"} <= set(reader.fieldnames):
            raise InvalidInputError(
                f"{path} has columns {reader.fieldnames}; expected {id_column!r} and 'caption'."
            )
        return {str(row[id_column]).strip(): row["caption"] for row in reader}


def open_stimuli(source: str | Path) -> StimulusSource:
    """Open a stimulus source (see the module docstring); nothing but the ids is read."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / NSD_STIMULI).is_file():
        path = path / NSD_STIMULI
    elif path.is_dir() and (path / MINDEYE2_IMAGES).is_file():
        path = path / MINDEYE2_IMAGES
    elif path.is_dir() and (path.name == MINDEYE1_FOLDER or (path / MINDEYE1_FOLDER).is_dir()):
        from neurodecode.data.mindeye import index_mindeye1_images

        members = index_mindeye1_images(path)
        ids = np.array(sorted(members, key=int), dtype=str)
        return StimulusSource(path=path, kind="tar", ids=ids, _members=members)
    if path.is_file():
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "imgBrick" not in f and "images" in f:
                    shape, dtype = f["images"].shape, f["images"].dtype
                    if len(shape) != 4 or shape[1] != 3 or dtype.kind != "f":
                        raise InvalidInputError(
                            f"images in {path} have shape {shape} and dtype {dtype}; expected "
                            "MindEye2's (N, 3, H, W) float16 in [0, 1]."
                        )
                    ids = np.arange(shape[0]).astype(str)
                    return StimulusSource(path=path, kind="mindeye2", ids=ids)
                if "imgBrick" not in f:
                    raise InvalidInputError(
                        f"{path} has no dataset 'imgBrick'; found {list(f)} (expected NSD's "
                        "nsd_stimuli.hdf5 layout or MindEye2's 'images')."
                    )
                shape, dtype = f["imgBrick"].shape, f["imgBrick"].dtype
        except OSError as err:
            raise InvalidInputError(f"{path} is not a readable HDF5 file ({err}).") from None
        if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8:
            raise InvalidInputError(
                f"imgBrick in {path} has shape {shape} and dtype {dtype}; expected (N, H, W, 3) "
                "uint8."
            )
        captions = _read_caption_csv(path.with_name(NSD_CAPTIONS_NAME), "nsdId")
        ids = np.arange(shape[0]).astype(str)
        return StimulusSource(path=path, kind="nsd", ids=ids, captions=captions)
    if path.is_dir():
        files = {p.stem: p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        if not files:
            raise InvalidInputError(
                f"stimulus folder {path} holds no images (expected files ending in "
                f"{', '.join(IMAGE_SUFFIXES)}) and no {NSD_STIMULI}."
            )
        captions = _read_caption_csv(path / "captions.csv", "id")
        ids = np.array(sorted(files), dtype=str)
        return StimulusSource(path=path, kind="folder", ids=ids, captions=captions, _files=files)
    raise InvalidInputError(
        f"stimulus source not found: expected an NSD-layout root (with {NSD_STIMULI}), an "
        f"nsd_stimuli.hdf5 file or an image folder at {path}."
    )
