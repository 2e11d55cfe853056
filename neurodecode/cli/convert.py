"""``neurodecode convert mindeye1 CHECKPOINT --out DIR``: a peer's released weights as our decoder.

``mindeye1``: MindEye1's ``last.pth`` (``{"model_state_dict": BrainDiffusionPrior state dict,
...}``, or a bare ``BrainNetwork`` state dict) becomes a :class:`~neurodecode.models.retrieval.
RetrievalModule` folder that :func:`neurodecode.load_pretrained` opens; its ``embed(brain,
output="retrieval" | "backbone")`` gives MindEye1's projector and ``lin1`` outputs for the same
voxels (the mapping is in :mod:`neurodecode.models.mindeye1`). The checkpoint is read with
``torch.load(..., weights_only=True)``: no pickled code runs.

MindEye1's diffusion prior (``net.*``, dalle2-pytorch's transformer) has no counterpart here, so a
checkpoint that holds it is refused unless ``--drop-prior`` says to convert the brain network
alone; the folder's ``metadata`` then records that the prior was dropped.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from neurodecode.validation import InvalidInputError

FORMATS = ("mindeye1",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``neurodecode convert``."""
    parser.description = "Convert a peer's released checkpoint into a neurodecode model folder."
    parser.add_argument("format", choices=FORMATS, help="checkpoint family")
    parser.add_argument("checkpoint", type=Path, help="the checkpoint file (e.g. last.pth)")
    parser.add_argument("--out", required=True, type=Path, help="model folder to write")
    parser.add_argument(
        "--subject", default="subj01", help="subject name in the decoder (default: subj01)"
    )
    parser.add_argument(
        "--drop-prior",
        action="store_true",
        help="convert the BrainNetwork alone when the checkpoint also holds the diffusion prior",
    )


def read_torch_checkpoint(path: Path) -> dict[str, Any]:
    """The state dict inside a ``torch.save`` file, loaded with ``weights_only=True``.

    A dict with ``model_state_dict`` (MindEye's training scripts) or ``state_dict`` gives that
    entry; a dict of tensors is returned as is.
    """
    import pickle

    import torch

    if not path.is_file():
        raise InvalidInputError(f"checkpoint not found: expected a file at {path}.")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        message = " ".join(str(err).split())[:300]
        raise InvalidInputError(
            f"{path} cannot be read as a torch checkpoint with weights_only=True ({message}); "
            "expected a torch.save file of tensors. If it holds pickled objects (an old "
            "lr_scheduler state, say), re-save only its 'model_state_dict' with "
            "torch.save(torch.load(path)['model_state_dict'], new_path) where you trust the file."
        ) from None
    if isinstance(loaded, dict):
        for key in ("model_state_dict", "state_dict"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise InvalidInputError(
            f"{path} holds no state dict; expected a dict of tensors or a dict with "
            "'model_state_dict' (as MindEye's training scripts save)."
        )
    return loaded


def convert_mindeye1(
    checkpoint: Path, out: Path, subject: str = "subj01", drop_prior: bool = False
) -> Path:
    """Convert MindEye1's checkpoint at ``checkpoint`` into a model folder at ``out``."""
    from neurodecode.models.base import check_subject_name
    from neurodecode.models.mindeye1 import retrieval_module_from_mindeye1, split_mindeye1_state

    check_subject_name(subject)
    state = read_torch_checkpoint(checkpoint)
    brain, prior = split_mindeye1_state(state, source=str(checkpoint))
    if prior and not drop_prior:
        first = sorted(prior)[0]
        raise InvalidInputError(
            f"{checkpoint} holds MindEye1's diffusion prior ({len(prior)} tensors, e.g. {first!r}),"
            " which has no neurodecode counterpart; pass --drop-prior to convert the BrainNetwork "
            "(voxel2clip.*) alone."
        )
    model = retrieval_module_from_mindeye1(brain, subject=subject, source=str(checkpoint))
    metadata = {
        "converted_from": "mindeye1",
        "checkpoint": checkpoint.name,
        "prior": "dropped" if prior else "absent",
        "n_prior_tensors": len(prior),
        "target": "OpenAI CLIP ViT-L/14 hidden states, ln_post + projection on all 257 tokens",
    }
    return model.save_pretrained(out, metadata=metadata)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``neurodecode convert``."""
    out = convert_mindeye1(args.checkpoint, args.out, args.subject, args.drop_prior)
    print(f"mindeye1 {args.checkpoint} -> {out}")
    return 0
