"""Embedded-default reconstruction: train times, images/s and MindEye's metric table vs controls.

Trains the default sim VAE and sim generator from scratch (into a temporary cache, so the train
times are real), then scores images generated from the *true* image embeddings of held-out
simulated stimuli — the generator's ceiling, before any brain decoder — against two controls: the
same generator given shuffled embeddings, and the mean training image. A blurred-stimulus VAE
round trip stands in for the low-level pathway's output as the img2img init (the brain decoders
supply the real one in the demo).

With the demo's world present (``data/sim/default`` and its feature store, as ``make demo`` leaves
them), it also scores the real low-level pathway from brain activity *alone* (ridge from the eval
subject's repeat-averaged training trials to a 16 px image, on its averaged test trials) against
the mean training image: the part of the reconstruction that carries PixCorr and SSIM.

Run: ``.venv/bin/python -m benchmarks.bench_reconstruct [--embed sim-clip|sim-clip-tiny|random-conv]``
Writes ``benchmarks/results/reconstruction.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurodecode.embedded.generator import get_sim_generator, training_stimuli
from neurodecode.embedded.vae import get_sim_vae
from neurodecode.evaluate.image_metrics import compare_methods, feature_networks, metric_table
from neurodecode.reconstruct.generators import images_to_tensor, tensor_to_images
from neurodecode.reconstruct.lowlevel import decode_latents, encode_images
from neurodecode.reconstruct.reconstructor import Reconstructor
from neurodecode.sim.stimuli import generate_stimuli

RESULTS = Path(__file__).resolve().parent / "results" / "reconstruction.json"
TEST_SEED = 424242  # held out from every training stream


def random_conv_embedder(dim: int = 64, seed: int = 0):
    """A fixed random conv net on 32 px images: uint8 (N, H, W, 3) -> (N, dim)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(3, 16, 5, 2, 2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(512, dim),
        ).eval()

    @torch.no_grad()
    def embed(images: np.ndarray) -> torch.Tensor:
        x = images_to_tensor(np.asarray(images), size=32)
        return net(x * 2 - 1)

    return embed


def make_embed_fn(name: str):
    if name == "random-conv":
        return random_conv_embedder(), "random conv net (fixed seed)"
    from neurodecode.embedded.clip import get_sim_clip

    preset = "tiny" if name == "sim-clip-tiny" else "default"
    encoder = get_sim_clip(preset, progress=False)
    return (lambda images: encoder.encode_image(np.asarray(images))), f"sim-clip ({preset})"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embed", default="sim-clip", choices=["sim-clip", "sim-clip-tiny", "random-conv"]
    )
    parser.add_argument("--preset", default="default", choices=["default", "tiny"])
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--size", type=int, default=425, help="common side for PixCorr/SSIM")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--world", type=Path, default=Path("data/sim/default"), help="demo world for the brain part"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    embed_fn, embed_name = make_embed_fn(args.embed)
    cache = Path(tempfile.mkdtemp(prefix="bench-reconstruct-"))

    t0, c0 = time.perf_counter(), time.process_time()
    vae = get_sim_vae(args.preset, cache_dir=cache)
    vae_train = (time.perf_counter() - t0, time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    generator = get_sim_generator(embed_fn, args.preset, cache_dir=cache)
    gen_train = (time.perf_counter() - t0, time.process_time() - c0)

    stimuli = generate_stimuli(args.n_test, size=64, seed=TEST_SEED)
    truth = images_to_tensor(stimuli.images)
    embeds = torch.as_tensor(embed_fn(stimuli.images)).float()
    size = generator.image_size
    # stand-in for the low-level pathway: VAE round trip of an 8 px version of the stimulus
    vae_size = vae.config.sample_size
    tiny = F.interpolate(truth, size=(8, 8), mode="bilinear", antialias=True)
    blurred = F.interpolate(tiny, size=(vae_size, vae_size), mode="bilinear")
    lowlevel = decode_latents(vae, encode_images(vae, blurred)).detach()

    seed = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    plain = generator.generate(embeds, generator=seed)[:, 0]
    plain_rate = len(embeds) / (time.perf_counter() - t0)
    with_init = generator.generate(
        embeds,
        init_images=lowlevel,
        strength=args.strength,
        generator=torch.Generator().manual_seed(0),
    )[:, 0]
    reconstructor = Reconstructor(  # "brain" = the true embedding; one batch of every trial
        lambda e: e,
        generator,
        lowlevel=lambda e: lowlevel,
        strength=args.strength,
        num_samples=args.num_samples,
        select_with=embed_fn,
        batch_size=len(embeds),
    )
    t0 = time.perf_counter()
    best = reconstructor.reconstruct(embeds, generator=torch.Generator().manual_seed(0)).images
    best_rate = len(embeds) / (time.perf_counter() - t0)
    shuffled = generator.generate(
        embeds.roll(1, dims=0),
        init_images=lowlevel.roll(1, dims=0),
        strength=args.strength,
        generator=torch.Generator().manual_seed(0),
    )[:, 0]
    shuffled_plain = generator.generate(
        embeds.roll(1, dims=0), generator=torch.Generator().manual_seed(0)
    )[:, 0]
    _, train_images = training_stimuli(generator.config)
    mean_image = train_images.mean(0, keepdim=True).expand(len(embeds), 3, size, size)

    def clip_fn(images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(embed_fn(tensor_to_images(images))).float()

    networks = feature_networks(clip_fn=clip_fn, clip_source=embed_name)
    methods = {
        "embedding -> image": plain,
        f"+ low-level init (strength {args.strength})": with_init,
        f"+ best of {args.num_samples}": best,
        "low-level init alone": lowlevel,
        "control: shuffled embeddings": shuffled_plain,
        "control: shuffled (with init)": shuffled,
        "control: mean training image": mean_image,
    }
    t0 = time.perf_counter()
    scores = compare_methods(methods, truth, networks, size=args.size)
    metric_seconds = time.perf_counter() - t0
    table = metric_table(scores)
    result = {
        "embed": embed_name,
        "preset": args.preset,
        "n_test": args.n_test,
        "vae_train_seconds": {"wall": vae_train[0], "cpu": vae_train[1]},
        "generator_train_seconds": {"wall": gen_train[0], "cpu": gen_train[1]},
        "generator_params": sum(p.numel() for p in generator.model.parameters()),
        "images_per_second": {"generate": plain_rate, f"best_of_{args.num_samples}": best_rate},
        "metric_seconds": metric_seconds,
        "metrics": {name: m.to_dict() for name, m in scores.items()},
        "table": table,
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    shutil.rmtree(cache, ignore_errors=True)
    t0 = time.perf_counter()
    result["brain_lowlevel"] = brain_lowlevel(args.world, embed_fn, embed_name)
    result["brain_lowlevel_seconds"] = time.perf_counter() - t0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"embedding: {embed_name}; preset {args.preset}; {args.n_test} held-out stimuli")
    print(
        f"VAE train {vae_train[0]:.1f} s wall ({vae_train[1]:.1f} s CPU); generator train "
        f"{gen_train[0]:.1f} s wall ({gen_train[1]:.1f} s CPU)"
    )
    print(f"images/s: generate {plain_rate:.1f}, best-of-{args.num_samples} {best_rate:.1f}")
    print(table)
    if "table" in result["brain_lowlevel"]:
        print(f"\nlow-level pathway from brain activity alone ({args.world}):")
        print(result["brain_lowlevel"]["table"])
    else:
        print(f"\nbrain low-level pathway skipped: {result['brain_lowlevel']['skipped']}")
    return result


def brain_lowlevel(world: Path, embed_fn, embed_name: str) -> dict:
    """Low-level pathway alone on the demo world's test trials vs the mean training image."""
    import yaml

    from neurodecode.data.nsd import read_stimuli
    from neurodecode.datamodules.nsd import NSDDataModule
    from neurodecode.demo.reconstruction import fit_lowlevel

    store = world.with_name(world.name + "-features.h5")
    experiment = Path(__file__).resolve().parents[1] / "experiments/sim_retrieval.yaml"
    if not (world / "ground_truth.h5").is_file() or not store.is_file():
        return {"skipped": f"no demo world at {world} (run make demo first)"}
    data_args = dict(yaml.safe_load(experiment.read_text())["data"]["init_args"])
    data_args.update(root=str(world), feature_store=str(store))
    datamodule = NSDDataModule(**data_args)
    datamodule.setup("fit")
    train = datamodule.train_set.trials[datamodule.eval_index].average_repeats()
    test = datamodule.test_trials
    t0 = time.perf_counter()
    pathway = fit_lowlevel(train.data, read_stimuli(world, train.stimulus_id))
    fit_seconds = time.perf_counter() - t0
    stimuli = read_stimuli(world, test.stimulus_id)
    ids = np.unique(train.stimulus_id)[:500]  # as the demo
    mean_image = images_to_tensor(read_stimuli(world, ids), size=32).mean(0)

    def clip_fn(images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(embed_fn(tensor_to_images(images))).float()

    networks = feature_networks(clip_fn=clip_fn, clip_source=embed_name, random_fallback=False)
    scores = compare_methods(
        {
            "low-level alone (brain)": pathway.decode(torch.as_tensor(test.data)),
            "control: mean training image": mean_image[None].expand(len(test), -1, -1, -1),
        },
        stimuli,
        networks,
        size=int(stimuli.shape[1]),
    )
    return {
        "n_test": len(test),
        "fit_seconds": fit_seconds,
        "metrics": {name: m.to_dict() for name, m in scores.items()},
        "table": metric_table(scores),
    }


if __name__ == "__main__":
    main()
