"""``neurodecode convert mindeye1 CHECKPOINT --out DIR``: a peer's released weights as our decoder.

``mindeye1``: MindEye1's ``last.pth`` (``{"model_state_dict": BrainDiffusionPrior state dict,
...}``, or a bare ``BrainNetwork`` state dict) becomes a :class:`~neurodecode.models.retrieval.
RetrievalModule` folder that :func:`neurodecode.load_pretrained` opens; its ``embed(brain,
output="retrieval" | "backbone")`` gives MindEye1's projector and ``lin1`` outputs for the same
voxels (the mapping is in :mod:`neurodecode.models.mindeye1`). The checkpoint is read with
``torch.load(..., weights_only=True)``: no pickled code runs.

MindEye1's diffusion prior (``net.*`` + ``noise_scheduler.*``, their
``VersatileDiffusionPriorNetwork``) is converted too, into a ``prior/`` sub-model of the folder
(:class:`~neurodecode.models.mindeye1_prior.MindEye1Prior`, opened with
``load_pretrained(DIR / "prior")``; ``.sample(backbone_tokens)`` is their DDPM sampling).
``--drop-prior`` converts the brain network alone; the folder's ``metadata`` records which.
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
        help="convert the BrainNetwork alone, leaving out the checkpoint's diffusion prior",
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
    from neurodecode.models.mindeye1_prior import mindeye1_prior_from_state

    check_subject_name(subject)
    state = read_torch_checkpoint(checkpoint)
    brain, prior = split_mindeye1_state(state, source=str(checkpoint))
    model = retrieval_module_from_mindeye1(brain, subject=subject, source=str(checkpoint))
    prior_model = None
    if prior and not drop_prior:  # checked in full before anything is written
        try:
            prior_model = mindeye1_prior_from_state(prior, source=str(checkpoint))
        except InvalidInputError as err:
            raise InvalidInputError(
                f"{err} Pass --drop-prior to convert the BrainNetwork (voxel2clip.*) alone."
            ) from None
        if tuple(prior_model.get_config()[k] for k in ("num_tokens", "dim")) != tuple(
            model.geometry["target_shape"]
        ):
            raise InvalidInputError(
                f"{checkpoint}: the prior's tokens ({prior_model.num_tokens} x "
                f"{prior_model.dim}) do not match the BrainNetwork's output "
                f"{tuple(model.geometry['target_shape'])}; expected one checkpoint of both."
            )
    metadata = {
        "converted_from": "mindeye1",
        "checkpoint": checkpoint.name,
        "prior": "converted (prior/)" if prior_model else ("dropped" if prior else "absent"),
        "n_prior_tensors": len(prior),
        "target": "OpenAI CLIP ViT-L/14 hidden states, ln_post + projection on all 257 tokens",
    }
    folder = model.save_pretrained(out, metadata=metadata)
    stale = folder / "prior"
    if prior_model is not None:
        prior_model.save_pretrained(stale, metadata={**metadata, "condition": "backbone"})
    elif stale.is_dir() and (stale / "config.json").is_file():
        import shutil

        shutil.rmtree(stale)  # an older conversion's prior would not belong to these weights
    return folder


def run(args: argparse.Namespace) -> int:
    """Entry point of ``neurodecode convert``."""
    out = convert_mindeye1(args.checkpoint, args.out, args.subject, args.drop_prior)
    print(f"mindeye1 {args.checkpoint} -> {out}")
    return 0
