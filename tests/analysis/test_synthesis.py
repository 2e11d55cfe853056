"""BrainDiVE guided sampling: the guidance raises the objective, on diffusers and sim generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurodecode.embedded.clip  # noqa: F401  (registers the sim-clip-* configs with open_clip)
from neurodecode.analysis.encoding import VoxelEncoder
from neurodecode.analysis.synthesis import (
    braindive,
    denoiser_from_diffusers,
    differentiable_clip_embed,
    embedding_objective,
    guided_sample,
    image_manifold_projection,
    roi_objective,
)
from neurodecode.embedded.category_judge import (
    CategoryJudge,
    _blur,
    simulated_category_judge,
    train_category_judge,
    zero_shot_categories,
)
from neurodecode.embedded.generator import denoiser_from_sim_generator
from neurodecode.sim.stimuli import CATEGORIES
from neurodecode.validation import InvalidInputError


def redness(images: torch.Tensor) -> torch.Tensor:
    return images[:, 0].mean((1, 2)) - images[:, 1:].mean((1, 2, 3))


@pytest.fixture(scope="module")
def tiny_unet_denoiser():
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    scheduler = DDIMScheduler(num_train_timesteps=100, prediction_type="epsilon")
    return denoiser_from_diffusers(unet, scheduler)


@pytest.mark.parametrize(
    ("through_denoiser", "normalize", "scale"),
    [(True, False, 20.0), (False, False, 20.0), (True, True, 2.0)],
)
def test_guidance_raises_the_objective(tiny_unet_denoiser, through_denoiser, normalize, scale):
    seed = 0
    plain, plain_scores = guided_sample(
        tiny_unet_denoiser, redness, 6, 0.0, 5, torch.Generator().manual_seed(seed)
    )
    guided, guided_scores = guided_sample(
        tiny_unet_denoiser,
        redness,
        6,
        scale,
        5,
        torch.Generator().manual_seed(seed),
        through_denoiser=through_denoiser,
        normalize_gradient=normalize,
    )
    assert guided.shape == plain.shape == (6, 3, 8, 8)
    assert guided.min() >= 0 and guided.max() <= 1
    assert torch.allclose(plain_scores, redness(plain))
    assert guided_scores.mean() > plain_scores.mean() + 0.05
    # same noise, same unguided images: sampling is deterministic given the seed
    again, _ = guided_sample(tiny_unet_denoiser, None, 6, 0.0, 5, torch.Generator().manual_seed(0))
    assert torch.equal(again, plain)


def test_roi_objective_through_sim_generator_and_braindive():
    from neurodecode.embedded.generator import PRESETS, ConditionedUNet, SimGenerator

    torch.manual_seed(0)
    config = PRESETS["tiny"]
    generator = SimGenerator(ConditionedUNet(4, config), config)
    denoiser = denoiser_from_sim_generator(generator)
    assert denoiser.prediction_type == config.prediction_type
    assert denoiser.sample_shape == (3, config.image_size, config.image_size)

    def mean_colour(images: torch.Tensor) -> torch.Tensor:  # a differentiable "embedding"
        return images.mean((2, 3))

    # voxel 0 likes red, voxel 1 likes blue; the region is voxel 0
    weights = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    encoder = VoxelEncoder(weights, np.zeros(2), np.zeros(3), np.ones(3), np.ones(2), np.ones(2))
    objective = roi_objective(mean_colour, encoder, np.array([True, False]))
    result = braindive(denoiser, objective, 8, 30.0, keep_fraction=0.25, num_inference_steps=3)
    plain = braindive(denoiser, objective, 8, 0.0, keep_fraction=1.0, num_inference_steps=3)
    assert result.images.shape == (2, 3, config.image_size, config.image_size)
    assert torch.all(result.scores[:-1] >= result.scores[1:])  # best first
    assert torch.equal(result.scores, result.all_scores[result.kept])
    assert result.all_scores.mean() > plain.all_scores.mean()
    red = result.images[:, 0].mean()
    assert red > plain.images[:, 0].mean()
    # conditioning on an embedding also works
    cond = denoiser_from_sim_generator(generator, torch.ones(1, 4))
    images, _ = guided_sample(cond, objective, 2, 1.0, 2, torch.Generator().manual_seed(1))
    assert images.shape == (2, 3, config.image_size, config.image_size)


@pytest.fixture(scope="module")
def tiny_sim_generator():
    from neurodecode.embedded.generator import PRESETS, ConditionedUNet, SimGenerator

    torch.manual_seed(0)
    config = PRESETS["tiny"]
    return SimGenerator(ConditionedUNet(4, config), config)


def test_condition_guidance_raises_the_objective_and_stays_on_the_sphere(tiny_sim_generator):
    denoiser = denoiser_from_sim_generator(tiny_sim_generator, torch.tensor([[1.0, 0.0, 0, 0]]))
    start = denoiser.condition
    assert torch.allclose(start.norm(), torch.tensor(2.0))  # normalised: sqrt(D)
    moved = denoiser.project_condition(start + torch.tensor([[0.0, 5.0, 0, 0]]))
    assert torch.allclose(moved.norm(dim=-1), torch.tensor([2.0]), atol=1e-5)
    assert moved[0, 1] > moved[0, 0] > 0

    seed = 3
    _, plain = guided_sample(denoiser, redness, 6, 0.0, 4, torch.Generator().manual_seed(seed))
    for space in ("condition", "both"):
        _, guided = guided_sample(
            denoiser,
            redness,
            6,
            2.0,
            4,
            torch.Generator().manual_seed(seed),
            normalize_gradient=True,
            guidance_space=space,
            condition_scale=1.0,
        )
        assert torch.all(guided > plain), space  # same noise: every sample gains
    # the denoiser's own condition is left untouched
    assert torch.equal(denoiser.condition, start)


def test_embedding_objective_is_the_encoder_on_the_unit_condition():
    # voxel 0 likes embedding axis 1, voxel 1 likes axis 2; the region is voxel 0
    weights = np.zeros((4, 2))
    weights[1, 0], weights[2, 1] = 1.0, 1.0
    encoder = VoxelEncoder(weights, np.zeros(2), np.zeros(4), np.ones(4), np.ones(2), np.ones(2))
    objective = embedding_objective(encoder, np.array([True, False]))
    cond = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
    assert torch.allclose(objective(cond), torch.tensor([0.8, 0.0]))  # 4 / |(3, 4)| = 0.8


def test_condition_guided_by_the_encoder_ends_on_the_preferred_real_embedding(tiny_sim_generator):
    # four real "image embeddings" (axes); the region prefers axis 1; samples start on axes 0, 2, 3
    weights = np.zeros((4, 1))
    weights[1, 0] = 1.0
    encoder = VoxelEncoder(weights, np.zeros(1), np.zeros(4), np.ones(4), np.ones(1), np.ones(1))
    pool = torch.eye(4)
    denoiser = denoiser_from_sim_generator(tiny_sim_generator, pool[:1])
    radius = float(denoiser.condition.norm())  # the generator's conditioning norm, sqrt(D) = 2
    nearest = image_manifold_projection(pool.numpy(), None, radius=radius)
    seen: list[torch.Tensor] = []

    def spy(cond: torch.Tensor) -> torch.Tensor:
        seen.append(nearest(cond))
        return seen[-1]

    denoiser.project_condition = spy
    starts = pool[[0, 2, 3]] * radius
    images, _ = guided_sample(
        denoiser,
        lambda x: x.mean((1, 2, 3)),  # the image objective plays no part here
        3,
        1.0,
        3,
        torch.Generator().manual_seed(0),
        through_denoiser=False,
        normalize_gradient=True,
        guidance_space="condition",
        condition_scale=3.0,
        condition=starts,
        condition_objective=embedding_objective(encoder, [0]),
    )
    size = tiny_sim_generator.image_size
    assert images.shape == (3, 3, size, size)
    assert len(seen) == 3  # one projection per step
    for cond in seen:  # exactly the preferred real embedding, from the first step on
        assert torch.equal(cond, pool[[1, 1, 1]] * radius)
    # a small step stays nearest to where each sample started
    seen.clear()
    guided_sample(
        denoiser,
        lambda x: x.mean((1, 2, 3)),
        3,
        1.0,
        2,
        guidance_space="condition",
        normalize_gradient=True,
        condition_scale=0.1,
        condition=starts,
        condition_objective=embedding_objective(encoder, [0]),
    )
    assert all(torch.equal(cond, starts) for cond in seen) and len(seen) == 2


def test_image_manifold_projection_softmax_and_nearest():
    pool = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cond = torch.tensor([[2.0, 0.3], [0.1, 5.0]])
    nearest = image_manifold_projection(pool, None, radius=3.0)(cond)
    assert torch.allclose(nearest, torch.tensor([[3.0, 0.0], [0.0, 3.0]]))
    sharp = image_manifold_projection(pool, 1e-3)(cond)
    assert torch.allclose(sharp, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), atol=1e-4)
    soft = image_manifold_projection(pool, 10.0)(cond)  # near the pool's mean direction
    assert torch.allclose(soft.norm(dim=1), torch.ones(2))
    assert torch.allclose(soft[0], soft[1], atol=0.05)
    with pytest.raises(InvalidInputError, match="temperature"):
        image_manifold_projection(pool, 0.0)
    with pytest.raises(InvalidInputError, match="n_pool, D"):
        image_manifold_projection(np.ones(3), None)


def test_condition_guidance_needs_a_condition(tiny_unet_denoiser):
    with pytest.raises(InvalidInputError, match="conditioned denoiser"):
        guided_sample(tiny_unet_denoiser, redness, 2, 1.0, 2, guidance_space="condition")
    with pytest.raises(InvalidInputError, match="guidance_space"):
        guided_sample(tiny_unet_denoiser, redness, 2, 1.0, 2, guidance_space="latent")


def test_blur_keeps_flat_images_and_sigma_zero():
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(_blur(flat, torch.tensor([0.0, 1.5])), flat, atol=1e-6)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(_blur(x, torch.zeros(2)), x, atol=1e-6)
    blurred = _blur(x, torch.full((2,), 1.5))
    assert blurred.std() < x.std()  # smoothing lowers pixel variance


def test_category_judge_learns_a_planted_rule():
    # "warm" images have a red square on the left, "cool" ones a blue square on the right
    gen = torch.Generator().manual_seed(0)

    def scenes(n: int) -> tuple[torch.Tensor, np.ndarray]:
        x = torch.rand(n, 3, 16, 16, generator=gen) * 0.3
        labels = np.where(torch.arange(n).numpy() % 2 == 0, "warm", "cool")
        x[labels == "warm", 0, 4:12, 1:7] = 1.0
        x[labels == "cool", 2, 4:12, 9:15] = 1.0
        return x, labels

    images, labels = scenes(64)
    judge = train_category_judge(
        images, labels, ["cool", "warm"], image_size=16, steps=40, batch_size=16, width=4
    )
    assert isinstance(judge, CategoryJudge) and judge.categories == ("cool", "warm")
    test_images, test_labels = scenes(32)
    assert np.mean(judge.predict(test_images) == test_labels) >= 0.9
    with pytest.raises(InvalidInputError, match="not among categories"):
        train_category_judge(images, labels, ["cool"], steps=1)
    with pytest.raises(InvalidInputError, match="expected"):
        train_category_judge(images[:3], labels, steps=1)


def test_simulated_category_judge_is_cached(tmp_path):
    options = dict(image_size=16, n_stimuli=24, stimulus_size=16, steps=2, width=4, batch_size=8)
    first = simulated_category_judge(cache_dir=tmp_path, **options)
    assert first.categories == tuple(CATEGORIES)
    assert len(list((tmp_path / "category-judge").iterdir())) == 1
    again = simulated_category_judge(cache_dir=tmp_path, **options)
    for (k, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    labels = again.predict(torch.rand(5, 3, 32, 32))  # any input size is resized
    assert labels.shape == (5,) and set(labels) <= set(CATEGORIES)


def test_clip_objective_is_differentiable_and_zero_shot_labels():
    from neurodecode.features.clip import load_clip

    clip = load_clip("sim-clip-tiny", None)
    embed = differentiable_clip_embed(clip)
    images = torch.rand(3, 3, 16, 16, requires_grad=True)
    out = embed(images)
    assert out.shape == (3, clip.embed_dim)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    out[:, 0].sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # the tensor path matches open_clip's own preprocessing at the native size
    uint8 = (np.random.default_rng(0).random((2, 32, 32, 3)) * 255).astype(np.uint8)
    native = clip.encode_image(uint8, normalize=True)
    ours = embed(torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255)
    assert torch.allclose(native, ours.detach(), atol=1e-4)
    labels = zero_shot_categories(clip, torch.rand(4, 3, 32, 32))
    assert labels.shape == (4,) and set(labels) <= set(CATEGORIES)


def test_errors(tiny_unet_denoiser):
    encoder = VoxelEncoder(
        np.zeros((3, 2)), np.zeros(2), np.zeros(3), np.ones(3), np.ones(2), np.ones(2)
    )
    with pytest.raises(InvalidInputError, match="no voxel"):
        roi_objective(lambda x: x, encoder, np.array([False, False]))
    with pytest.raises(InvalidInputError, match="expected \\(2,\\)"):
        roi_objective(lambda x: x, encoder, np.array([True, False, True]))
    with pytest.raises(InvalidInputError, match="the encoder has 2"):
        roi_objective(lambda x: x, encoder, [5])
    with pytest.raises(InvalidInputError, match="guidance_scale"):
        guided_sample(tiny_unet_denoiser, redness, 2, -1.0)
    with pytest.raises(InvalidInputError, match="keep_fraction"):
        braindive(tiny_unet_denoiser, redness, 2, keep_fraction=0.0)


def test_synthesis_runner_on_the_tiny_world(tiny_nsd, tmp_path):
    import json

    import yaml

    from neurodecode.cli.analyze_cortex import run_synthesis
    from neurodecode.cli.main import main

    config = {
        "run_dir": str(tmp_path / "run"),
        "data": {"root": str(tiny_nsd), "subject": "subj01"},
        "features": {"source": "sim_clip", "preset": "tiny"},
        "synthesis": {
            "generator_preset": "tiny",
            "rois": ["PPA"],
            "n_images": 4,
            "num_inference_steps": 2,
            "judge": "sim_clip",
        },
    }
    path = tmp_path / "synthesis.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["analyze", "synthesis", "--config", str(path)]) == 0
    out = json.loads((tmp_path / "run" / "synthesis.json").read_text())
    assert out["condition_projection"] == "nearest" and out["n_images"] == 4
    ppa = out["PPA"]
    assert ppa["category"] == "place"
    assert len(ppa["guided_labels"]) == len(ppa["unguided_labels"]) == 4
    assert ppa["guided_rate"] == np.mean(np.asarray(ppa["guided_labels"]) == "place")
    assert 0.0 <= ppa["sign_test_p"] <= 1.0
    assert (tmp_path / "run" / "braindive_PPA.png").is_file()
    bad = {**config, "synthesis": {**config["synthesis"], "condition_projection": "ball"}}
    with pytest.raises(InvalidInputError, match="condition_projection"):
        run_synthesis(bad)


def test_score_against_unguided_by_hand():
    from neurodecode.analysis.synthesis import score_against_unguided

    guided = np.array(["face", "face", "face", "body", "face"])
    unguided = np.array(["body", "word", "face", "body", "body"])
    scores_g = np.array([0.1, 0.9, 0.2, 0.5, 0.3])
    scores_u = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.4])
    out = score_against_unguided("face", guided, scores_g, unguided, scores_u, keep_fraction=0.4)
    assert out["guided_rate"] == 0.8 and out["unguided_rate"] == 0.2
    assert out["guided_rate_top"] == 0.5  # top 2 by score: samples 1 (face) and 3 (body)
    assert out["unguided_rate_top"] == 0.0  # samples 0 and 4: body, body
    # paired: 3 samples gained the category, none lost it: P(X >= 3 | n=3, p=1/2) = 1/8
    assert out["sign_test_p"] == pytest.approx(0.125)
    assert out["mean_predicted_guided"] == pytest.approx(0.4)
    with pytest.raises(InvalidInputError, match="shape"):
        score_against_unguided("face", guided[:3], scores_g, unguided, scores_u)
