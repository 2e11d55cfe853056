"""SAE analyses of the literature on planted truth (and the pathology check on sim-clip).

1. **Meta-SAE** (``meta``): a TopK SAE trained on sparse combinations of composed atoms (512 unit
   atoms in d=64, each the normalised sum of 3 of 48 shared parts); a BatchTopK meta-SAE (k=3,
   96 meta-latents) on its decoder rows. Reported: recovery of the atoms by the SAE, of the
   planted parts by the meta-SAE (cosine >= 0.9) against a random dictionary of the same size,
   meta FVU and L0.
2. **Stitching** (``stitching``): TopK SAEs of 128 and 512 latents (k=5) on the planted dictionary
   of ``bench_sae`` (256 atoms, d=64); FVU/L0 at both ends and whether the path is monotone.
3. **Pathology** (``pathology``): TopK SAEs (k = 8 and 32) on the pooled features
   (``visual.trunk.head``, 64 wide) of the sim-clip ``tiny`` image tower (a CNN); KL of the
   zero-shot category logits with the layer replaced by the reconstruction vs an equal-norm
   random error.
4. **Absorption** (``absorption``): SAEBench's absorption fraction on a planted hierarchy (4
   parents x 12 children, d=64) for the planted dictionary and trained TopK / ReLU-L1 SAEs.
5. **Feature suppression** (``suppression``): ReLU-L1 and ProLU SAEs (λ=3) on ``bench_sae``'s
   planted problem (d=64, 256 atoms, 5 active, 512 latents, 60k rows, 10 % held out), then both
   fixes of Wright & Sharkey on copies — the closed-form rescale and the fine-tune (encoder
   frozen, scales + decoder on MSE alone, ``steps // 3`` steps) — with both shrinkage closed forms,
   FVU and L0 on the held-out rows before and after.

Run: ``.venv/bin/python -m benchmarks.bench_sae_analyses [--steps 1500] [--no-clip]``.
Writes ``benchmarks/results/sae_analyses.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode.analysis.sae.absorption import planted_absorption
from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.meta import train_meta_sae
from neurodecode.analysis.sae.planted import (
    dictionary_recovery,
    make_composed_atoms,
    make_planted_activations,
    make_planted_hierarchy,
)
from neurodecode.analysis.sae.stitching import stitch_path
from neurodecode.analysis.sae.training import ArrayActivationDataModule, train_sae

RESULTS = Path(__file__).resolve().parent / "results" / "sae_analyses.json"


def _train(architecture: str, inputs: np.ndarray, n_latents: int, steps: int, **kw: Any):
    torch.manual_seed(0)
    data = ArrayActivationDataModule(inputs, batch_size=512, eval_fraction=0.1)
    sae = create_sae(architecture, inputs.shape[1], n_latents, dead_window=50_000, **kw)
    module = train_sae(sae, data, steps=steps, lr=1e-3, decay_fraction=0.2, accelerator="cpu")
    return module.sae.cpu().eval(), data


def bench_meta(steps: int) -> dict[str, Any]:
    composed = make_composed_atoms(n_atoms=512, n_parts=48, d=64, parts_per_atom=3, seed=0)
    rng = np.random.default_rng(1)
    n, n_active = 40_000, 4
    chosen = np.argpartition(rng.random((n, 512)), n_active - 1, axis=1)[:, :n_active]
    codes = np.zeros((n, 512), np.float32)
    np.put_along_axis(codes, chosen, rng.uniform(0.5, 1.5, (n, n_active)), axis=1)
    sae, _ = _train("topk", codes @ composed.atoms, 1024, steps, k=4)
    meta = train_meta_sae(sae, 96, k=3, steps=steps)
    direct = train_meta_sae(composed.atoms, 96, k=3, steps=steps)
    random = torch.randn(96, 64, generator=torch.Generator().manual_seed(0))
    return {
        "sae_atom_recovery": dictionary_recovery(composed.atoms, sae.W_dec),
        "meta_part_recovery": dictionary_recovery(composed.parts, meta.meta_sae.W_dec),
        "meta_on_planted_atoms_part_recovery": dictionary_recovery(
            composed.parts, direct.meta_sae.W_dec
        ),
        "random_dictionary_part_recovery": dictionary_recovery(composed.parts, random),
        "meta_fvu": meta.fvu,
        "meta_l0": meta.l0,
        "shared_meta_latent_fraction": float(meta.shared_meta_latents().mean()),
    }


def bench_stitching(steps: int) -> dict[str, Any]:
    planted = make_planted_activations(60_000, d=64, n_atoms=256, n_active=5, seed=0)
    small, data = _train("topk", planted.inputs, 128, steps, k=5)
    large, _ = _train("topk", planted.inputs, 512, steps, k=5)
    path = stitch_path(small, large, data.eval_inputs, threshold=0.7)
    fvu_rises = np.diff(path.fvu)
    return {
        "n_steps": len(path.kinds) - 1,
        "n_novel": path.kinds.count("novel"),
        "n_swaps": path.kinds.count("swap"),
        "fvu_small": float(path.fvu[0]),
        "fvu_large": float(path.fvu[-1]),
        "l0_small": float(path.l0[0]),
        "l0_large": float(path.l0[-1]),
        "monotone": path.is_monotone(1e-6),
        "largest_fvu_rise": float(fvu_rises.max()),
        "l0_path": [float(v) for v in path.l0[:: max(1, len(path.l0) // 20)]],
        "fvu_path": [float(v) for v in path.fvu[:: max(1, len(path.fvu) // 20)]],
    }


def bench_pathology(steps: int, n_images: int = 1000) -> dict[str, Any]:
    from neurodecode.analysis.sae.pathology import pathology_check
    from neurodecode.analysis.sae.training import HookedActivationStream
    from neurodecode.embedded.clip import CATEGORY_PROMPTS, get_sim_clip
    from neurodecode.sim.stimuli import CATEGORIES, generate_stimuli

    encoder = get_sim_clip("tiny", progress=False)
    layer = "visual.trunk.head"  # pooled CNN features (N, 64) before the projection
    stimuli = generate_stimuli(n_images, size=encoder.image_size, seed=11)
    pixels = torch.cat(
        [encoder.preprocess_images(stimuli.images[i : i + 250]) for i in range(0, n_images, 250)]
    )
    stream = HookedActivationStream(
        encoder.model, layer, lambda i: None, forward=lambda m, p: m.encode_image(p)
    )
    train = pixels[:800]  # the SAE never sees the 200 images the check scores
    rows = torch.cat([stream.capture_batch(train[i : i + 250])[0] for i in range(0, 800, 250)])
    text = encoder.encode_text([CATEGORY_PROMPTS[c] for c in CATEGORIES], normalize=True)

    def logits(model, p):
        image = torch.nn.functional.normalize(model.encode_image(p), dim=-1)
        return 100.0 * image @ text.T

    out: dict[str, Any] = {"model": "sim-clip-tiny", "layer": layer, "rows": len(rows)}
    for k in (8, 32):
        sae, _ = _train("topk", rows.numpy(), 8 * rows.shape[1], steps, k=k)
        result = pathology_check(
            encoder.model.eval(), layer, pixels[800:], sae, forward=logits, n_random=4
        )
        out[f"topk_k{k}"] = result.as_dict()
        print(f"  pathology topk k={k}: ratio={result.ratio:.2f}", flush=True)
    return out


def bench_absorption(steps: int) -> dict[str, Any]:
    h = make_planted_hierarchy(30_000, d=64, n_parents=4, children_per_parent=12, seed=0)
    clean = planted_absorption(
        h,
        latents=np.concatenate([h.parent_codes, h.child_codes], 1),
        decoder=np.concatenate([h.parents, h.children]),
    )
    out: dict[str, Any] = {
        "planted_dictionary": {k: v for k, v in clean.items() if k != "per_parent"}
    }
    for name, arch, kw in (
        ("topk_k2", "topk", {"k": 2}),
        ("topk_k4", "topk", {"k": 4}),
        ("relu_l1", "relu_l1", {"l1_coefficient": 3.0}),
    ):
        sae, _ = _train(arch, h.inputs, 128, steps, **kw)
        scores = planted_absorption(h, sae=sae)
        out[name] = {k: v for k, v in scores.items() if k != "per_parent"}
        print(f"  absorption {name}: {out[name]}", flush=True)
    return out


def bench_suppression(steps: int) -> dict[str, Any]:
    import copy

    from neurodecode.analysis.sae.suppression import (
        finetune_feature_suppression,
        fix_feature_suppression,
        shrinkage_report,
    )

    planted = make_planted_activations(60_000, d=64, n_atoms=256, n_active=5, seed=0)
    out: dict[str, Any] = {"finetune_steps": max(1, steps // 3), "finetune_lr": 3e-3}
    for arch in ("relu_l1", "prolu"):
        sae, data = _train(arch, planted.inputs, 512, steps, l1_coefficient=3.0)
        held = list(data.eval_batches())
        closed, tuned = copy.deepcopy(sae), copy.deepcopy(sae)
        fix_feature_suppression(closed, [data.train_inputs])
        t0 = time.perf_counter()
        result = finetune_feature_suppression(
            tuned, data, steps=out["finetune_steps"], lr=3e-3, eval_batches=held
        )
        out[arch] = {
            "before": result.before,
            "closed_form": shrinkage_report(closed, held),
            "finetune": result.after,
            "finetune_seconds": time.perf_counter() - t0,
        }
        print(f"  suppression {arch}: {json.dumps(out[arch])}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--no-clip", action="store_true", help="skip the sim-clip pathology check")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
        "steps": args.steps,
    }
    for name, bench in (
        ("meta", bench_meta),
        ("stitching", bench_stitching),
        ("absorption", bench_absorption),
        ("suppression", bench_suppression),
    ):
        t0 = time.perf_counter()
        results[name] = bench(args.steps)
        results[name]["seconds"] = time.perf_counter() - t0
        print(f"{name}: {json.dumps(results[name])[:400]}", flush=True)
    if not args.no_clip:
        results["pathology"] = bench_pathology(args.steps)
    results["total_seconds"] = time.perf_counter() - start
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS}")
    return results


if __name__ == "__main__":
    main()
