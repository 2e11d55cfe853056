"""SAEs on a planted dictionary, transcoders on sim-clip, and TopK training throughput.

1. **Planted dictionary** (``planted.<architecture>``): activations are sparse non-negative
   combinations of 5 of 256 random unit atoms in 64 dimensions (superposition: 4x more atoms than
   dimensions, coefficients uniform in [0.5, 1.5]). Every architecture is trained with Lightning on
   the same rows (512 latents) with its sparsity set for an L0 near the planted 5 (TopK/BatchTopK:
   k = 5; ReLU-L1, JumpReLU, Gated, ProLU: penalty coefficients chosen once for L0 ≈ 4-8;
   Matryoshka BatchTopK k = 5 with prefixes 64/128/256/512; Switch 8 TopK experts of 64 latents,
   k = 5). Reported on held-out rows: ``recovery`` (fraction of planted atoms matched at cosine
   ≥ 0.9 by a decoder row), ``fvu``, ``l0``, ``dead_fraction``, both shrinkage γ, the FVU of the
   first 64 latents alone (``prefix_fvu``), forward FLOPs per input (TopK, BatchTopK, Switch),
   the metrics after the feature-suppression fix (ReLU-L1, Gated, ProLU), seconds and rows/s.
2. **Transcoders on sim-clip** (``transcoders``): an MLP block of the sim-clip ``tiny`` vision
   tower (trained and cached on first use, seconds), its (input, output) captured by a forward
   hook over simulated scenes; a TopK transcoder and a TopK skip transcoder at the same k.
3. **Throughput** (``throughput``): TopK training rows/s here — the default ``train_sae`` (plain
   loop), the same through the Lightning Trainer, and with ``selection_precision="bfloat16"``
   (``OUR_VARIANTS``) — and ``eai-sparsify``'s TopK ``SparseCoder`` on the same rows and k with
   FVU side by side when that package is installed (the ``bench`` extra, never a runtime
   dependency; skipped otherwise), all alternated.

Run: ``.venv/bin/python -m benchmarks.bench_sae [--steps 1500] [--no-clip]``; 4-7 minutes on
one core of a busy machine (sim-clip tiny trains on first use). Writes ``benchmarks/results/sae.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurodecode.analysis.sae.core import create_sae
from neurodecode.analysis.sae.matryoshka import prefix_reconstruction
from neurodecode.analysis.sae.metrics import (
    evaluate_reconstruction,
    fraction_of_variance_unexplained,
)
from neurodecode.analysis.sae.planted import dictionary_recovery, make_planted_activations
from neurodecode.analysis.sae.suppression import RESCALABLE, fix_feature_suppression
from neurodecode.analysis.sae.switch import topk_forward_flops
from neurodecode.analysis.sae.training import ArrayActivationDataModule, train_sae

RESULTS = Path(__file__).resolve().parent / "results" / "sae.json"

#: architecture -> hyperparameters for the planted problem (L0 near the planted 5).
PLANTED_SETTINGS: dict[str, dict[str, Any]] = {
    "topk": {"k": 5},
    "batchtopk": {"k": 5},  # trained at PLANTED_LR["batchtopk"]
    "relu_l1": {"l1_coefficient": 3.0},
    "jumprelu": {"l0_coefficient": 4.0, "bandwidth": 0.05, "initial_threshold": 0.5},
    "gated": {"l1_coefficient": 4.0},
    "matryoshka_batchtopk": {"k": 5, "matryoshka_widths": [64, 128, 256]},
    "switch": {"k": 5, "n_experts": 8},  # 8 experts of 64 latents: same 512 latents as TopK
    "prolu": {"l1_coefficient": 3.0},
}

#: width of the dictionary prefix scored on its own (Matryoshka's first prefix).
PREFIX_WIDTH = 64

#: learning rate per architecture (default 1e-3); BatchTopK reaches 0.93 recovery at 2e-3 and
#: 0.895 at 1e-3 in 1500 steps.
PLANTED_LR: dict[str, float] = {"batchtopk": 2e-3, "matryoshka_batchtopk": 2e-3}


def bench_planted(
    architectures: list[str], steps: int, n_samples: int, seed: int = 0
) -> dict[str, Any]:
    planted = make_planted_activations(n_samples, d=64, n_atoms=256, n_active=5, seed=seed)
    data = ArrayActivationDataModule(planted.inputs, batch_size=512, eval_fraction=0.1, seed=seed)
    results: dict[str, Any] = {
        "problem": {
            "d": 64,
            "n_atoms": 256,
            "n_active": 5,
            "magnitude": [0.5, 1.5],
            "n_samples": n_samples,
            "n_latents": 512,
            "steps": steps,
            "batch_size": 512,
        },
    }
    for architecture in architectures:
        torch.manual_seed(seed)
        settings = PLANTED_SETTINGS[architecture]
        sae = create_sae(architecture, 64, 512, dead_window=50_000, **settings)
        start = time.perf_counter()
        lr = PLANTED_LR.get(architecture, 1e-3)
        module = train_sae(
            sae, data, steps=steps, lr=lr, decay_fraction=0.2, accelerator="cpu", seed=seed
        )
        seconds = time.perf_counter() - start
        metrics = evaluate_reconstruction(module.sae, data.eval_batches())
        results[architecture] = {
            "recovery": dictionary_recovery(planted.atoms, module.sae.W_dec),
            "fvu": metrics["fvu"],
            "l0": metrics["l0"],
            "dead_fraction": metrics["dead_fraction"],
            "gamma_rescale_reconstruction": metrics["gamma_rescale_reconstruction"],
            "gamma_rescale_input": metrics["gamma_rescale_input"],
            "settings": settings,
            "lr": lr,
            "train_seconds": seconds,
            "rows_per_second": steps * 512 / seconds,
        }
        held = data.eval_inputs
        results[architecture]["prefix_fvu"] = {
            "width": PREFIX_WIDTH,
            "fvu": fraction_of_variance_unexplained(
                held, prefix_reconstruction(module.sae, held, PREFIX_WIDTH)
            ),
        }
        if architecture == "switch":
            results[architecture]["forward_flops"] = module.sae.forward_flops()
        elif architecture in ("topk", "batchtopk"):
            results[architecture]["forward_flops"] = topk_forward_flops(64, 512, settings["k"])
        if architecture in RESCALABLE:  # the feature-suppression fix, on a copy
            fixed = copy.deepcopy(module.sae)
            fix_feature_suppression(fixed, [data.train_inputs])
            after = evaluate_reconstruction(fixed, data.eval_batches())
            results[architecture]["suppression_fix"] = {
                key: after[key]
                for key in ("fvu", "l0", "gamma_rescale_reconstruction", "gamma_rescale_input")
            }
        r = results[architecture]
        print(
            f"  {architecture:<10} recovery={r['recovery']:.3f} fvu={r['fvu']:.4f} "
            f"l0={r['l0']:.2f} dead={r['dead_fraction']:.2f} ({seconds:.0f} s)",
            flush=True,
        )
    return results


def bench_clip_transcoders(steps: int, k: int = 8, n_images: int = 1000) -> dict[str, Any]:
    from neurodecode.analysis.sae.training import HookedActivationStream
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.sim.stimuli import generate_stimuli

    encoder = get_sim_clip("tiny", progress=False)
    layer = "visual.trunk.head"  # as experiments/sae_clip.yaml (tested on the tiny preset)
    stimuli = generate_stimuli(n_images, size=encoder.image_size, seed=11)
    stream = HookedActivationStream(
        encoder.model,
        layer,
        lambda i: None,
        capture="io",
        forward=lambda model, pixels: model.encode_image(pixels),
    )
    inputs, outputs = [], []
    for start in range(0, n_images, 250):
        x, y = stream.capture_batch(encoder.preprocess_images(stimuli.images[start : start + 250]))
        inputs.append(x.numpy())
        outputs.append(y.numpy())
    inputs, outputs = np.concatenate(inputs), np.concatenate(outputs)
    data = ArrayActivationDataModule(inputs, outputs, batch_size=512, eval_fraction=0.1)
    d = inputs.shape[1]
    results: dict[str, Any] = {
        "model": "sim-clip-tiny",
        "layer": layer,
        "rows": len(inputs),
        "d": d,
        "n_latents": 8 * d,
        "k": k,
        "steps": steps,
    }
    for name, skip in (("transcoder", False), ("skip_transcoder", True)):
        torch.manual_seed(0)
        sae = create_sae(
            "topk", d, 8 * d, k=k, transcoder=True, skip_connection=skip, dead_window=50_000
        )
        module = train_sae(sae, data, steps=steps, lr=1e-3, decay_fraction=0.2, accelerator="cpu")
        metrics = evaluate_reconstruction(module.sae, data.eval_batches())
        results[name] = {
            "fvu": metrics["fvu"],
            "l0": metrics["l0"],
            "dead_fraction": metrics["dead_fraction"],
        }
        print(f"  {name:<16} fvu={metrics['fvu']:.4f} l0={metrics['l0']:.2f}", flush=True)
    return results


#: the two training sizes compared with eai-sparsify: (d, latents, k, batch, steps, rows,
#: planted atoms, planted active atoms per row).
THROUGHPUT_SIZES: dict[str, dict[str, int]] = {
    "planted": {
        "d": 64,
        "latents": 512,
        "k": 8,
        "batch": 1024,
        "steps": 300,
        "rows": 60_000,
        "atoms": 256,
        "active": 5,
    },
    "clip_width": {
        "d": 768,
        "latents": 16_384,
        "k": 32,
        "batch": 1024,
        "steps": 40,
        "rows": 20_000,
        "atoms": 3072,
        "active": 16,
    },
}


def _import_sparse_coder() -> tuple[Any, Any]:
    """(SparseCoder, SparseCoderConfig) from eai-sparsify; raises ImportError if absent.

    ``sparsify/__init__`` also imports its Trainer (datasets, transformers, schedulefree), which
    the SparseCoder does not need; if that import fails the two modules are loaded on their own.
    """
    import importlib
    import importlib.util
    import os
    import sys
    import types

    if not torch.cuda.is_available():  # its Triton kernels need a GPU; the CPU path is torch's
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    try:
        from sparsify import SparseCoder, SparseCoderConfig

        return SparseCoder, SparseCoderConfig
    except ImportError:
        spec = importlib.util.find_spec("sparsify")
        if spec is None or not spec.submodule_search_locations:
            raise
        for name in [m for m in sys.modules if m == "sparsify" or m.startswith("sparsify.")]:
            del sys.modules[name]
        package = types.ModuleType("sparsify")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["sparsify"] = package
        coder = importlib.import_module("sparsify.sparse_coder")
        config = importlib.import_module("sparsify.config")
        return coder.SparseCoder, config.SparseCoderConfig


def _epoch_batches(rows: torch.Tensor, batch: int, seed: int) -> Any:
    """Endless batches: contiguous slices of a freshly shuffled copy of ``rows`` per epoch."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        shuffled = rows[torch.randperm(rows.shape[0], generator=generator)]
        for start in range(0, rows.shape[0] - batch + 1, batch):
            yield shuffled[start : start + batch]


def _train_sparsify(
    coder_cls: Any,
    config_cls: Any,
    train: torch.Tensor,
    size: dict[str, int],
    lr: float,
    seed: int,
) -> tuple[Any, float]:
    """eai-sparsify's plain loop (as its Trainer, one device): fvu + auxk/32, decoder-parallel
    gradient removed, Adam, unit-norm decoder, dead latents after 10M rows. Returns (coder, s)."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    coder = coder_cls(size["d"], config_cls(num_latents=size["latents"], k=size["k"]), device="cpu")
    optimizer = torch.optim.Adam(coder.parameters(), lr=lr)
    since_fired = torch.zeros(size["latents"], dtype=torch.long)
    batches = _epoch_batches(train, size["batch"], seed)
    for _step in range(size["steps"]):
        x = next(batches)
        out = coder(x, dead_mask=since_fired > 10_000_000)
        loss = out.fvu + out.auxk_loss / 32
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        coder.set_decoder_norm_to_unit_norm()
        since_fired += x.shape[0]
        since_fired[out.latent_indices.flatten()] = 0
    return coder, time.perf_counter() - start


#: our TopK training variants timed against eai-sparsify: name -> (train_sae engine, TopK options).
OUR_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "neurodecode": ("auto", {}),  # the default: plain loop (no logger), exact selection
    "neurodecode_lightning": ("lightning", {}),  # the same steps through the Lightning Trainer
    "neurodecode_bf16_selection": ("auto", {"selection_precision": "bfloat16"}),
}


def _pick_agreement(sae: Any, rows: torch.Tensor, k: int) -> float:
    """Fraction of rows whose bfloat16-selected k latents (2k re-scored) are the exact top k."""
    with torch.no_grad():
        centred = rows * sae.input_scale - sae.b_dec
        pre = torch.addmm(sae.b_enc, centred, sae.W_enc)
        rough = torch.addmm(sae.b_enc.bfloat16(), centred.bfloat16(), sae.W_enc.bfloat16())
        index, _ = sae._select(centred, rough, k)
        exact = pre.topk(k, dim=-1).indices
    return float((index.sort(-1).values == exact.sort(-1).values).all(-1).float().mean())


def bench_throughput(
    sizes: dict[str, dict[str, int]],
    repeats: int = 3,
    lr: float = 1e-3,
    seed: int = 0,
    variants: list[str] | None = None,
) -> dict[str, Any]:
    """TopK training activations/s, ours (``train_sae``) vs eai-sparsify's SparseCoder.

    Same planted rows, d, latents, k, batch, steps and lr; every variant timed over its whole
    training call, all variants alternated within each of ``repeats`` rounds (median reported;
    the machine is shared); FVU on the same held-out rows (10%, never trained on).
    """
    from importlib.metadata import PackageNotFoundError, version

    variants = list(OUR_VARIANTS) if variants is None else variants
    try:
        coder_cls, config_cls = _import_sparse_coder()
        theirs_version = version("eai-sparsify")
    except (ImportError, PackageNotFoundError) as err:
        coder_cls = None
        theirs_version = f"unavailable ({type(err).__name__}: {err})"
    results: dict[str, Any] = {
        "versions": {"neurodecode": _own_version(), "eai-sparsify": theirs_version},
        "repeats": repeats,
        "lr": lr,
        "threads": torch.get_num_threads(),
        "variants": {name: {"engine": e, "options": o} for name, (e, o) in OUR_VARIANTS.items()},
        "differences": (
            "ours clips the gradient norm at 1 and initialises input scale and b_dec "
            "(geometric median of 8192 rows) inside the timed train_sae call; theirs has no "
            "clipping and b_dec = 0; both count dead latents after 10M rows, so AuxK is "
            "inactive over these runs"
        ),
    }
    for name, size in sizes.items():
        planted = make_planted_activations(
            size["rows"], d=size["d"], n_atoms=size["atoms"], n_active=size["active"], seed=seed
        )
        data = ArrayActivationDataModule(planted.inputs, batch_size=size["batch"], seed=seed)
        held = data.eval_inputs
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        seconds["sparsify"] = []
        fvu: dict[str, float] = {}
        agreement = None
        for _repeat in range(repeats):
            for variant in variants:
                engine, options = OUR_VARIANTS[variant]
                torch.manual_seed(seed)
                sae = create_sae("topk", size["d"], size["latents"], k=size["k"], **options)
                start = time.perf_counter()
                module = train_sae(
                    sae,
                    data,
                    steps=size["steps"],
                    lr=lr,
                    accelerator="cpu",
                    seed=seed,
                    engine=engine,
                )
                seconds[variant].append(time.perf_counter() - start)
                fvu[variant] = evaluate_reconstruction(module.sae, data.eval_batches())["fvu"]
                if options.get("selection_precision") == "bfloat16":
                    agreement = _pick_agreement(module.sae, held, size["k"])
            if coder_cls is not None:
                coder, theirs_s = _train_sparsify(
                    coder_cls, config_cls, data.train_inputs, size, lr, seed
                )
                seconds["sparsify"].append(theirs_s)
                with torch.no_grad():
                    fvu["sparsify"] = fraction_of_variance_unexplained(held, coder(held).sae_out)
        rows = size["steps"] * size["batch"]
        entry: dict[str, Any] = dict(size)
        for variant, times in seconds.items():
            if not times:
                continue
            entry[variant] = {
                "seconds": times,
                "activations_per_second": rows / float(np.median(times)),
                "fvu": fvu[variant],
            }
        if agreement is not None:
            entry["neurodecode_bf16_selection"]["held_out_pick_agreement"] = agreement
        line = f"  {name:<11}"
        for variant in seconds:
            if variant in entry:
                line += (
                    f" {variant} {entry[variant]['activations_per_second']:>8.0f}/s "
                    f"fvu={entry[variant]['fvu']:.4f};"
                )
        if seconds["sparsify"]:
            entry["speed_ratio"] = {
                variant: float(np.median(seconds["sparsify"]) / np.median(seconds[variant]))
                for variant in variants
            }
            line += " ratios " + ", ".join(f"{v}={r:.2f}" for v, r in entry["speed_ratio"].items())
        results[name] = entry
        print(line, flush=True)
    return results


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neurodecode")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--n-samples", type=int, default=60_000)
    parser.add_argument("--architectures", nargs="+", default=list(PLANTED_SETTINGS))
    parser.add_argument("--no-clip", action="store_true", help="skip the sim-clip transcoders")
    parser.add_argument("--no-planted", action="store_true", help="skip the planted sweep")
    parser.add_argument("--sizes", nargs="+", default=list(THROUGHPUT_SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="alternated timing repeats")
    parser.add_argument("--throughput-steps", type=int, default=0, help="0: per-size default")
    parser.add_argument(
        "--variants", nargs="+", default=list(OUR_VARIANTS), help="our TopK variants to time"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(
        "planted dictionary (d=64, 256 atoms, 5 active, 512 latents):" * (not args.no_planted),
        flush=True,
    )
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1},
    }
    if not args.no_planted:
        results["planted"] = bench_planted(args.architectures, args.steps, args.n_samples)
    if not args.no_clip:
        print("transcoders on sim-clip-tiny (TopK, same k):", flush=True)
        results["transcoders"] = bench_clip_transcoders(steps=min(args.steps, 600))
    print("TopK training throughput vs eai-sparsify:", flush=True)
    sizes = {name: dict(size) for name, size in THROUGHPUT_SIZES.items() if name in args.sizes}
    if args.throughput_steps:
        for size in sizes.values():
            size["steps"] = args.throughput_steps
    throughput = bench_throughput(sizes, repeats=args.repeats, variants=args.variants)
    results["throughput"] = throughput
    results["total_seconds"] = time.perf_counter() - start
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(f"\n{'architecture':<12} {'recovery':>9} {'fvu':>8} {'l0':>6} {'dead':>6} {'rows/s':>8}")
    for name in args.architectures if "planted" in results else []:
        r = results["planted"][name]
        print(
            f"{name:<12} {r['recovery']:>9.3f} {r['fvu']:>8.4f} {r['l0']:>6.2f} "
            f"{r['dead_fraction']:>6.2f} {r['rows_per_second']:>8.0f}"
        )
    if "transcoders" in results:
        t = results["transcoders"]
        print(
            f"sim-clip transcoder FVU {t['transcoder']['fvu']:.4f} vs skip transcoder "
            f"{t['skip_transcoder']['fvu']:.4f} (k={t['k']})"
        )
    print(f"wrote {RESULTS} in {results['total_seconds']:.0f} s")
    return results


if __name__ == "__main__":
    main()
