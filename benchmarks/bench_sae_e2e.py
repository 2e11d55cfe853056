"""End-to-end SAEs (Braun et al. 2024) against a local SAE on sim-clip, at equal L0.

The network is the sim-clip ``tiny`` image tower (a CNN); the hooked layer its pooled features
(``visual.trunk.head``, 64 wide), the downstream output the zero-shot category logits (image
embedding against the six category prompts' text embeddings, logit scale 100), as in the
pathology row of ``bench_sae_analyses``. Three TopK SAEs of the same size and ``k`` (so the same
L0 by construction), from the same initialisation seed:

- ``local``: trained on the layer's rows by MSE (``train_sae``);
- ``e2e``: trained on KL(clean logits ‖ logits with the layer replaced) (``train_e2e_sae``);
- ``e2e+ds``: the same plus the normalised MSE of the output embedding (``visual``'s output).

Scored on held-out images (another stimulus seed; nothing is chosen on them): downstream KL,
zero-shot accuracy clean and patched, FVU, L0 and dead fraction at the layer, and for scale the KL
with the layer replaced by its training mean. Learning rate and steps are fixed
in advance (not tuned).

Run: ``.venv/bin/python -m benchmarks.bench_sae_e2e [--steps 1000] [--k 4 8] [--n-train 1600]``.
Writes ``benchmarks/results/sae_e2e.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "sae_e2e.json"
LAYER = "visual.trunk.head"


def _pixels(encoder, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from neurodecode.sim.stimuli import CATEGORIES, generate_stimuli

    stimuli = generate_stimuli(n, size=encoder.image_size, seed=seed)
    pixels = torch.cat(
        [encoder.preprocess_images(stimuli.images[i : i + 250]) for i in range(0, n, 250)]
    )
    labels = torch.tensor([CATEGORIES.index(c) for c in stimuli.category])
    return pixels, labels


def bench_e2e(
    steps: int, ks: list[int], n_train: int, n_held: int, n_latents: int
) -> dict[str, Any]:
    from neurodecode.analysis.sae.core import create_sae
    from neurodecode.analysis.sae.e2e import capture_layer_rows, e2e_evaluation, train_e2e_sae
    from neurodecode.analysis.sae.pathology import kl_divergence, replaced_activations
    from neurodecode.analysis.sae.training import ArrayActivationDataModule, train_sae
    from neurodecode.embedded.clip import CATEGORY_PROMPTS, get_sim_clip
    from neurodecode.sim.stimuli import CATEGORIES

    encoder = get_sim_clip("tiny", progress=False)
    network = encoder.model.eval()
    train_pixels, _ = _pixels(encoder, n_train, seed=11)
    held_pixels, held_labels = _pixels(encoder, n_held, seed=12)
    text = encoder.encode_text([CATEGORY_PROMPTS[c] for c in CATEGORIES], normalize=True)

    def logits(model, pixels):
        image = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
        return 100.0 * image @ text.T

    rows = capture_layer_rows(network, LAYER, train_pixels, forward=logits)
    # the scale of the KL: the layer replaced by its training mean (no information)
    mean_row = rows.mean(0)
    with torch.no_grad():
        clean = logits(network, held_pixels)
        with replaced_activations(network, LAYER, lambda r: mean_row.expand_as(r).to(r)):
            ablated = logits(network, held_pixels)
    mean_ablation_kl = float(kl_divergence(clean, ablated).mean())
    out: dict[str, Any] = {
        "model": "sim-clip-tiny",
        "layer": LAYER,
        "d": int(rows.shape[1]),
        "n_latents": n_latents,
        "train_images": n_train,
        "held_images": n_held,
        "later_layer_for_ds": "visual",
        "lr": 1e-3,
        "kl_mean_ablation": mean_ablation_kl,
    }
    print(f"  KL with the layer mean-ablated: {mean_ablation_kl:.4f}", flush=True)
    for k in ks:
        for kind in ("local", "e2e", "e2e+ds"):
            torch.manual_seed(0)
            sae = create_sae("topk", rows.shape[1], n_latents, k=k, dead_window=50_000)
            t0 = time.perf_counter()
            if kind == "local":
                data = ArrayActivationDataModule(rows, batch_size=256, eval_fraction=0.0)
                trained = train_sae(
                    sae, data, steps=steps, lr=1e-3, decay_fraction=0.2, accelerator="cpu"
                ).sae
            else:
                ds = {"later_layers": ["visual"], "ds_coefficient": 1.0} if kind == "e2e+ds" else {}
                trained = train_e2e_sae(
                    sae,
                    network,
                    LAYER,
                    train_pixels,
                    steps=steps,
                    forward=logits,
                    batch_size=128,
                    lr=1e-3,
                    decay_fraction=0.2,
                    accelerator="cpu",
                    **ds,
                ).sae
            seconds = time.perf_counter() - t0
            scores = e2e_evaluation(
                trained.cpu().eval(), network, LAYER, held_pixels, held_labels, forward=logits
            )
            scores["train_seconds"] = seconds
            out[f"topk_k{k}/{kind}"] = scores
            print(
                f"  k={k} {kind:7s} KL={scores['kl']:.4f} FVU={scores['fvu']:.3f} "
                f"L0={scores['l0']:.2f} dead={scores['dead_fraction']:.2f} acc {scores['accuracy_clean']:.3f}->"
                f"{scores['accuracy_patched']:.3f} ({seconds:.0f} s)",
                flush=True,
            )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--n-train", type=int, default=1600)
    parser.add_argument("--n-held", type=int, default=400)
    parser.add_argument("--n-latents", type=int, default=256)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "steps": args.steps,
    }
    results["e2e"] = bench_e2e(args.steps, args.k, args.n_train, args.n_held, args.n_latents)
    results["total_seconds"] = time.perf_counter() - start
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
