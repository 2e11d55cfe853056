"""Real pipelines: local files only with one clear error otherwise; adapters on tiny random parts.

The adapter tests need ``transformers`` (the pipelines' CLIP encoders) and are skipped without it.
"""

from __future__ import annotations

import json

import pytest
import torch

from neurodecode.reconstruct.diffusers_pipelines import (
    ImageVariationGenerator,
    UnCLIPGenerator,
    VersatileDiffusionGenerator,
    WeightsNotFoundError,
    load_generator,
    load_pipeline,
)
from neurodecode.validation import InvalidInputError


@pytest.mark.parametrize("kind", ["unclip", "versatile-diffusion", "image-variations"])
def test_missing_local_folder_says_how_to_provide_weights(kind, tmp_path):
    with pytest.raises(WeightsNotFoundError) as error:
        load_generator(kind, tmp_path / "nothing")
    message = str(error.value)
    assert str(tmp_path / "nothing") in message
    assert "huggingface-cli download" in message and "Nothing is downloaded" in message


def test_uncached_repo_id_fails_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError, match="not in the local Hugging Face cache"):
        load_pipeline("unclip", "nobody/not-a-cached-model")


def test_unknown_kind_is_named():
    with pytest.raises(InvalidInputError, match="kind='dalle'"):
        load_pipeline("dalle")


def _tiny_unet(**kwargs):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=8,
        **kwargs,
    )


def _tiny_parts(embed_dim: int, image_size: int = 32):
    transformers = pytest.importorskip("transformers")
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
    )
    encoder = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(
            hidden_size=32,
            projection_dim=embed_dim,
            num_hidden_layers=1,
            num_attention_heads=4,
            image_size=image_size,
            intermediate_size=37,
            patch_size=4,
        )
    )
    processor = transformers.CLIPImageProcessor(crop_size=image_size, size=image_size)
    return transformers, vae, encoder, processor


def _tiny_tokenizer(transformers, folder):
    (folder / "vocab.json").write_text(
        json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3})
    )
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8
    )


def _tiny_text_config(transformers, **kwargs):
    return transformers.CLIPTextConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        vocab_size=4,
        max_position_embeddings=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **kwargs,
    )


def test_image_variations_adapter_runs_one_step_on_tiny_random_pipeline():
    _, vae, encoder, processor = _tiny_parts(32)
    from diffusers import DDIMScheduler, StableDiffusionImageVariationPipeline

    pipe = StableDiffusionImageVariationPipeline(
        vae=vae,
        image_encoder=encoder,
        unet=_tiny_unet(),
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=processor,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    generator = ImageVariationGenerator(pipe)
    assert (generator.embed_dim, generator.image_size) == (32, 32)
    out = generator.generate(
        torch.randn(2, 32),
        num_samples=2,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.shape == (2, 2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert "_encode_image" not in vars(pipe)  # the pipeline is left as it was


def test_unclip_adapter_runs_one_step_on_tiny_random_pipeline(tmp_path):
    transformers, vae, encoder, processor = _tiny_parts(16)
    from diffusers import DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    tokenizer = _tiny_tokenizer(transformers, tmp_path)
    text = transformers.CLIPTextModel(_tiny_text_config(transformers))
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=processor,
        image_encoder=encoder,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=16),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tokenizer,
        text_encoder=text,
        vae=vae,
        scheduler=DDIMScheduler(),
        unet=_tiny_unet(class_embed_type="projection", projection_class_embeddings_input_dim=32),
    )
    pipe.set_progress_bar_config(disable=True)
    generator = UnCLIPGenerator(pipe)
    with pytest.warns(UserWarning, match="init_images and strength are ignored"):
        out = generator.generate(
            torch.randn(2, 16),
            init_images=torch.zeros(2, 3, 8, 8),
            num_inference_steps=1,
            generator=torch.Generator().manual_seed(0),
        )
    assert out.shape == (2, 1, 3, 32, 32)


def _tiny_versatile_diffusion(tmp_path):
    # Versatile Diffusion splits the conditioning at 257 image tokens (hard-coded in diffusers):
    # a 64-pixel image in 4-pixel patches gives 16 * 16 + 1 = 257 tokens.
    transformers, vae, encoder, processor = _tiny_parts(32, image_size=64)
    from diffusers import DDIMScheduler, VersatileDiffusionDualGuidedPipeline
    from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import (
        UNetFlatConditionModel,
    )

    text_unet = UNetFlatConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        down_block_types=("DownBlockFlat", "CrossAttnDownBlockFlat"),
        up_block_types=("CrossAttnUpBlockFlat", "UpBlockFlat"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=8,
    )
    pipe = VersatileDiffusionDualGuidedPipeline(
        tokenizer=_tiny_tokenizer(transformers, tmp_path),
        image_feature_extractor=processor,
        text_encoder=transformers.CLIPTextModelWithProjection(
            _tiny_text_config(transformers, projection_dim=32)
        ),
        image_encoder=encoder,
        image_unet=_tiny_unet(),
        text_unet=text_unet,
        vae=vae,
        scheduler=DDIMScheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_versatile_diffusion_adapter_runs_one_step_on_tiny_random_pipeline(tmp_path):
    pipe = _tiny_versatile_diffusion(tmp_path)
    generator = VersatileDiffusionGenerator(pipe)
    assert (generator.tokens, generator.token_dim, generator.image_size) == (257, 32, 32)
    assert generator.embed_dim == 257 * 32
    embeds = torch.randn(2, 257 * 32, generator=torch.Generator().manual_seed(1))

    def run(embeds, seed=0):
        return generator.generate(
            embeds,
            num_samples=2,
            num_inference_steps=1,
            generator=torch.Generator().manual_seed(seed),
        )

    out = run(embeds)
    assert out.shape == (2, 2, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    from diffusers.models import DualTransformer2DModel

    dual = [m for m in pipe.image_unet.modules() if isinstance(m, DualTransformer2DModel)]
    assert dual and not any("forward" in vars(m) for m in dual)  # the pipeline is left as it was
    assert "_encode_image_prompt" not in vars(pipe)
    torch.testing.assert_close(run(embeds), out)  # same seed, same images
    assert not torch.allclose(run(embeds, seed=1), out)  # another seed, other noise
    # tokens are normalised by the pooled token's norm: a global scale changes nothing ...
    torch.testing.assert_close(run(3.0 * embeds), out, atol=1e-5, rtol=1e-4)
    # ... but the embeddings do steer the images
    assert not torch.allclose(run(embeds.flip(0)), out)
