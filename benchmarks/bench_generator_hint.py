"""The generator with a low-level hint vs without, on the demo's validation images.

The embedded default generator can be trained with a *low-level hint* (``hint_size``: the blurry
image conditions every denoising step, see :class:`neurodecode.embedded.generator.
SimGeneratorConfig`). This benchmark asks whether that helps the demo's reconstructions, on the
demo's 50 *validation* images only (never the test trials): for each generator (without hint;
each ``--hints`` recipe) and img2img strength, the same reconstruction as ``make demo`` (decoded
embedding projected onto the training images, each of the 4 samples conditioned on one of the
nearest training images, classifier-free guidance ``--guidance``, best of 4 by sim-clip, blend
chosen by ``choose_blend``), and the same from the validation images' *true* embeddings (the
generator's ceiling). Reported at blend 0 (the generated image alone) and at the chosen blend.
Also: how the decoded blurry images relate to the stimuli (the contrast slope and residual that
the hint's training degradation imitates), and sim-clip 2-way of the stimuli themselves shrunk
to 32 / 16 / 8 px (what a perfect generator at that size could reach).

Reuses the demo's world and fit (``runs/demo``; fits it, about 3 min, when absent).

Run: ``.venv/bin/python -m benchmarks.bench_generator_hint [--hints 16 16:hint_dropout=0.5]``
Writes ``benchmarks/results/generator_hint.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "generator_hint.json"
METRICS = ("pixcorr", "ssim", "clip_2way")


def parse_hint(spec: str, defaults) -> dict:
    """``"16:hint_dropout=0.5"`` -> ``{"hint_size": 16, "hint_dropout": 0.5}``."""
    size, *extra = spec.split(":")
    recipe = {"hint_size": int(size)}
    for item in extra:
        key, value = item.split("=")
        recipe[key] = type(getattr(defaults, key))(value)
    return recipe


def main(argv: list[str] | None = None) -> dict:
    from neurodecode.cli.demo import REPO, fit_demo_decoder
    from neurodecode.data.nsd import read_stimuli
    from neurodecode.demo.reconstruction import choose_blend, choose_temperature, fit_lowlevel
    from neurodecode.embedded.clip import get_sim_clip
    from neurodecode.embedded.generator import PRESETS, get_sim_generator
    from neurodecode.evaluate.image_metrics import two_way_identification
    from neurodecode.reconstruct.conditioning import ImageManifoldProjection
    from neurodecode.reconstruct.generators import images_to_tensor, resize_images
    from neurodecode.reconstruct.reconstructor import Reconstructor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/sim/default"))
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="the demo's run")
    parser.add_argument(
        "--hints",
        nargs="*",
        default=["16"],
        help="hint recipes: SIZE[:FIELD=VALUE...] (SimGeneratorConfig fields)",
    )
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.45, 0.7, 1.0])
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, dm, _, _ = fit_demo_decoder(
        REPO / "experiments/sim_retrieval_rich_both.yaml",
        args.data,
        REPO / "datasets/sim/default.yaml",
        "default",
        args.run,
    )
    model.eval()
    encoder = get_sim_clip("default", progress=False)

    def embed(images: np.ndarray) -> torch.Tensor:
        return encoder.encode_image(images)

    def clip_fn(images: torch.Tensor) -> torch.Tensor:
        uint8 = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return encoder.encode_image(uint8)

    subject, k = dm.eval_subject, dm.eval_index
    train = dm.train_set.trials[k]
    averaged = train.average_repeats()
    lowlevel = fit_lowlevel(averaged.data, read_stimuli(args.data, averaged.stimulus_id))
    val = dm.val_set.trials[0]
    stimuli = read_stimuli(args.data, val.stimulus_id)
    truth = torch.as_tensor(embed(stimuli)).float()
    brain = torch.as_tensor(val.data, dtype=torch.float32)
    with torch.no_grad():
        low = lowlevel.decode(brain)
    stimuli_tensor = images_to_tensor(stimuli)

    # the decoded blurry images against the stimuli at their size: per image, slope of the
    # decoded deviation from its mean on the stimulus' deviation, and the residual's std
    small = resize_images(stimuli_tensor, low.shape[-1])
    dev_true = small - small.mean((1, 2, 3), keepdim=True)
    dev_low = low - low.mean((1, 2, 3), keepdim=True)
    slope = (dev_low * dev_true).sum((1, 2, 3)) / dev_true.pow(2).sum((1, 2, 3))
    residual = dev_low - slope.view(-1, 1, 1, 1) * dev_true
    decoded_lowlevel = {
        "contrast_slope_median": float(slope.median()),
        "contrast_slope_q10_q90": [float(slope.quantile(0.1)), float(slope.quantile(0.9))],
        "residual_std": float(residual.std()),
    }
    resolution_ceiling = {
        str(side): two_way_identification(
            clip_fn(resize_images(resize_images(stimuli_tensor, side), stimuli.shape[1])).numpy(),
            truth.numpy(),
        )
        for side in (32, 16, 8)
    }

    pool_ids, first = np.unique(train.stimulus_id, return_index=True)
    pool = np.asarray(dm.train_set.targets[k])[first]
    values = embed(read_stimuli(args.data, pool_ids)).cpu().numpy()
    with torch.no_grad():
        decoded_val = model.embed(brain, subject)
    temperature, _ = choose_temperature(decoded_val, truth, pool, values)
    projection = ImageManifoldProjection.from_pool(pool, temperature, values=values)
    mean_image = images_to_tensor(
        read_stimuli(args.data, np.unique(train.stimulus_id)[:500]), size=32
    ).mean(0)

    def decoder_embed(rows: torch.Tensor) -> torch.Tensor:
        return projection(model.embed(rows, subject))

    def nearest(rows: torch.Tensor) -> torch.Tensor:
        return projection.sample_conditions(
            model.embed(rows, subject), args.num_samples, sampling="nearest"
        )

    generators, train_seconds = {}, {}
    key = str(encoder.settings)
    for name, recipe in [("no hint", {})] + [
        (f"hint {spec}", parse_hint(spec, PRESETS["default"])) for spec in args.hints
    ]:
        t0 = time.perf_counter()
        generators[name] = get_sim_generator(embed, "default", embed_key=key, **recipe)
        train_seconds[name] = time.perf_counter() - t0  # ~0 when it was cached

    rows = {}
    index = torch.arange(len(val), dtype=torch.float32)[:, None]
    for name, generator in generators.items():
        for strength in args.strengths:
            for condition in ("ours", "true embedding"):
                common = dict(
                    strength=strength,
                    num_samples=args.num_samples,
                    select_with=embed,
                    guidance_scale=args.guidance,
                )
                if condition == "ours":
                    reconstructor = Reconstructor(
                        decoder_embed,
                        generator,
                        lowlevel=lowlevel.decode,
                        sample_conditions=nearest,
                        **common,
                    )
                    inputs = brain
                else:  # trial index -> its true embedding and its decoded blurry image
                    reconstructor = Reconstructor(
                        lambda r: truth[r[:, 0].long()],
                        generator,
                        lowlevel=lambda r: low[r[:, 0].long()],
                        **common,
                    )
                    inputs = index
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = reconstructor.reconstruct(
                        inputs, generator=torch.Generator().manual_seed(0)
                    )
                weight, scores = choose_blend(
                    out.images, out.lowlevel, stimuli, clip_fn, mean_image
                )
                label = f"{name}, strength {strength:g}, {condition}"
                rows[label] = {
                    "blend": weight,
                    "blend_0": scores[0.0],
                    "chosen": scores[weight],
                    "seconds": time.perf_counter() - t0,
                }
                print(
                    f"{label}: blend 0 "
                    + " / ".join(f"{scores[0.0][m]:.3f}" for m in METRICS)
                    + f"; chosen blend {weight:g} "
                    + " / ".join(f"{scores[weight][m]:.3f}" for m in METRICS),
                    flush=True,
                )
    result = {
        "split": f"the demo's {len(val)} validation images (subject {subject})",
        "metrics": "PixCorr / SSIM / sim-clip 2-way",
        "guidance": args.guidance,
        "num_samples": args.num_samples,
        "control_mean_image": scores["control"],
        "decoded_lowlevel": decoded_lowlevel,
        "stimuli_resized_clip_2way": resolution_ceiling,
        "generator_train_seconds": train_seconds,
        "rows": rows,
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"decoded low-level vs stimuli: {decoded_lowlevel}")
    print(f"stimuli shrunk, sim-clip 2-way: {resolution_ceiling}")
    return result


if __name__ == "__main__":
    main()
