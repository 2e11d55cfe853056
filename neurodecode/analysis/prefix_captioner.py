"""A CLIP-prefix captioner (ClipCap) for voxel captions: image embedding -> text.

Mokady et al. (2021), "ClipCap: CLIP Prefix for Image Captioning": an MLP maps a CLIP image
embedding to ``prefix_length`` token embeddings that a GPT-2 language model continues into a
caption. BrainSCUBA decodes its projected voxel embeddings this way (beam search, 5 beams).

:class:`ClipPrefixCaptioner` is the model (a ``transformers`` GPT-2 plus the mapping MLP) and
implements :class:`~neurodecode.analysis.captioning.PrefixCaptioner`, so it can be passed to
:func:`~neurodecode.analysis.captioning.caption_voxels`. It is a model folder of
:mod:`neurodecode.pretrained` (``config.json`` with the mapping's settings and the language
model's ``transformers`` config, one ``model.safetensors`` with the mapping and the language model)
plus its tokenizer in ``tokenizer/`` (``transformers``' own files); ``load_pretrained`` reads it
offline (no pickle, no hub).

:func:`train_prefix_captioner` fits one from scratch (a small GPT-2 and a byte-level BPE tokenizer
trained on the given captions); the simulated world's captioner is
:func:`neurodecode.embedded.prefix_captioner.get_sim_prefix_captioner`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neurodecode.pretrained import PretrainedMixin
from neurodecode.validation import InvalidInputError, check_keys

log = logging.getLogger(__name__)

_SPECIAL = {"bos": "<|bos|>", "eos": "<|eos|>", "pad": "<|pad|>"}


@dataclass(frozen=True)
class PrefixMappingConfig:
    """The mapping from an image embedding to the language model's prefix.

    Attributes
    ----------
    embed_dim : int
        Length ``D`` of the CLIP image embedding (unit-normalised before mapping).
    prefix_length : int
        Number of prefix tokens.
    hidden_dim : int
        Hidden width of the two-layer MLP (ClipCap's MLP mapping).
    max_new_tokens : int
        Longest caption generated (tokens).
    num_beams : int
        Beam width at generation (BrainSCUBA: 5).
    """

    embed_dim: int
    prefix_length: int = 4
    hidden_dim: int = 256
    max_new_tokens: int = 24
    num_beams: int = 5


class ClipPrefixCaptioner(PretrainedMixin, nn.Module):
    """ClipCap: ``(N, D)`` image embeddings -> ``N`` captions.

    Parameters
    ----------
    config : PrefixMappingConfig
    language_model : transformers.GPT2LMHeadModel
        Any decoder-only model with ``inputs_embeds`` works; its hidden size sets the prefix width.
    tokenizer : transformers.PreTrainedTokenizerFast or None
        Needs ``eos_token`` and ``pad_token``; ``None`` only while loading a saved folder.
    """

    def __init__(self, config: PrefixMappingConfig, language_model, tokenizer):
        super().__init__()
        if tokenizer is not None and (
            tokenizer.eos_token_id is None or tokenizer.pad_token_id is None
        ):
            raise InvalidInputError("the tokenizer needs an eos_token and a pad_token.")
        self.config = config
        self.language_model = language_model
        self.tokenizer = tokenizer
        width = language_model.config.hidden_size
        self.mapping = nn.Sequential(
            nn.Linear(config.embed_dim, config.hidden_dim),
            nn.Tanh(),
            nn.Linear(config.hidden_dim, config.prefix_length * width),
        )

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prefix(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Prefix token embeddings: ``(N, D) -> (N, prefix_length, hidden_size)``."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.config.embed_dim:
            raise InvalidInputError(
                f"embeddings have shape {tuple(embeddings.shape)}; expected "
                f"(N, {self.config.embed_dim})."
            )
        if not torch.isfinite(embeddings).all():
            raise InvalidInputError("embeddings contain NaN or inf; expected finite values.")
        unit = nn.functional.normalize(embeddings.float().to(self.device), dim=-1)
        width = self.language_model.config.hidden_size
        return self.mapping(unit).view(len(unit), self.config.prefix_length, width)

    def loss(self, embeddings: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """Mean next-token cross-entropy of ``captions`` (each ending in EOS) after the prefix."""
        tok = self.tokenizer(
            [c + self.tokenizer.eos_token for c in captions], return_tensors="pt", padding=True
        ).to(self.device)
        ids, mask = tok["input_ids"], tok["attention_mask"]
        prefix = self.prefix(embeddings)
        tokens = self.language_model.get_input_embeddings()(ids)
        inputs = torch.cat([prefix, tokens], dim=1)
        n, p = len(ids), prefix.shape[1]
        full_mask = torch.cat([mask.new_ones(n, p), mask], dim=1)
        labels = torch.cat([ids.new_full((n, p), -100), ids.masked_fill(mask == 0, -100)], dim=1)
        return self.language_model(
            inputs_embeds=inputs, attention_mask=full_mask, labels=labels
        ).loss

    @torch.no_grad()
    def generate(self, embeddings: torch.Tensor, num_beams: int | None = None) -> list[str]:
        """Captions for ``embeddings`` (N, D), beam search (default ``config.num_beams``)."""
        embeddings = torch.as_tensor(embeddings)
        if len(embeddings) == 0:
            return []
        prefix = self.prefix(embeddings)
        out = self.language_model.generate(
            inputs_embeds=prefix,
            attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=self.device),
            max_new_tokens=self.config.max_new_tokens,
            num_beams=num_beams or self.config.num_beams,
            do_sample=False,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def get_config(self) -> dict:
        """The mapping's settings and the language model's ``transformers`` config (JSON)."""
        return {
            "mapping": asdict(self.config),
            "language_model": self.language_model.config.to_dict(),
        }

    @classmethod
    def from_config(cls, config: dict) -> ClipPrefixCaptioner:
        """An untrained captioner of the saved architecture (tokenizer set when loading)."""
        from transformers import AutoConfig, AutoModelForCausalLM

        check_keys(
            "captioner config", config["mapping"], list(PrefixMappingConfig.__dataclass_fields__)
        )
        lm_config = dict(config["language_model"])
        lm_config = AutoConfig.for_model(lm_config.pop("model_type"), **lm_config)
        language_model = AutoModelForCausalLM.from_config(lm_config)
        return cls(PrefixMappingConfig(**config["mapping"]), language_model, None)

    def save_extra_files(self, folder: Path) -> None:
        """The tokenizer, in ``transformers``' own files under ``tokenizer/``."""
        self.tokenizer.save_pretrained(folder / "tokenizer")

    def load_extra_files(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        if not (folder / "tokenizer").is_dir():
            raise InvalidInputError(f"{folder} has no tokenizer/ folder; expected a captioner.")
        self.tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)


def _train_tokenizer(captions: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer fitted on ``captions``, with BOS/EOS/PAD tokens."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        list(captions),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(_SPECIAL.values()),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        bos_token=_SPECIAL["bos"],
        eos_token=_SPECIAL["eos"],
        pad_token=_SPECIAL["pad"],
        padding_side="right",
    )


def train_prefix_captioner(
    embeddings: np.ndarray | torch.Tensor,
    captions: Sequence[str],
    config: PrefixMappingConfig | None = None,
    n_layer: int = 2,
    n_embd: int = 128,
    n_head: int = 4,
    vocab_size: int = 400,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> ClipPrefixCaptioner:
    """Fit a ClipCap captioner from scratch on ``(embedding, caption)`` pairs.

    Parameters
    ----------
    embeddings : array, shape (N, D)
        CLIP image embeddings (any norm).
    captions : sequence of str, length N
    config : PrefixMappingConfig, optional
        Default ``PrefixMappingConfig(embed_dim=D)``.
    n_layer, n_embd, n_head : int
        The GPT-2's depth, width and heads.
    vocab_size : int
        BPE vocabulary fitted on ``captions``.
    steps, batch_size, lr, seed
        AdamW steps (cosine decay after 5 % warm-up), batch size, peak learning rate, seed.
    progress : bool
        Show a progress bar with the running loss.

    Returns
    -------
    ClipPrefixCaptioner
        On the CPU, in eval mode.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    captions = list(captions)
    if emb.ndim != 2 or len(emb) != len(captions) or len(captions) == 0:
        raise InvalidInputError(
            f"embeddings have shape {tuple(emb.shape)} and there are {len(captions)} captions; "
            "expected (N, D) and N captions, N >= 1."
        )
    config = config or PrefixMappingConfig(embed_dim=emb.shape[1])
    if config.embed_dim != emb.shape[1]:
        raise InvalidInputError(
            f"config.embed_dim={config.embed_dim} but the embeddings have {emb.shape[1]} columns."
        )
    torch.manual_seed(seed)
    tokenizer = _train_tokenizer(captions, vocab_size)
    lm = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=config.prefix_length + config.max_new_tokens + 16,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model = ClipPrefixCaptioner(config, lm, tokenizer)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, factor)
    rng = torch.Generator().manual_seed(seed)
    from tqdm.auto import tqdm

    model.train()
    bar = tqdm(range(steps), desc="prefix captioner", disable=not progress, leave=False)
    for step in bar:
        pick = torch.randint(len(emb), (min(batch_size, len(emb)),), generator=rng)
        loss = model.loss(emb[pick], [captions[i] for i in pick.tolist()])
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    log.info("prefix captioner: %d steps, final loss %.3f", steps, float(loss.detach()))
    return model.eval()
