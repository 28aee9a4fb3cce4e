"""The I2V nodes end to end on tiny checkpoints saved under the file names users have."""

import pytest
import torch
from conftest import node_function as _node
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.image_prompt import MissingVisionError
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError

FILES = {
    "i2v_v1": "hunyuan_video_image_to_video_720p_bf16.safetensors",
    "i2v_v2": "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors",
}


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    encoders = tiny.tiny_text_encoders(seed=0, llava=True)
    files = tiny.save_text_encoders(encoders, root, layout="comfy", fp8=True)
    files["vae"] = tiny.save_vae(tiny.tiny_vae(seed=0), root / "hunyuan_video_vae_bf16.safetensors", layout="comfy")
    for variant, name in FILES.items():
        model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, 16, variant=variant)
        files[variant] = save_transformer(model, root / name, prefix="model.diffusion_model.")
    return files


@pytest.fixture(scope="module")
def loaded(model_files):
    tokenizers = model_files["folder"]
    encoders = _node("HYVS_TextEncoderLoader")(str(model_files["llm"]), str(model_files["clip"]), "fp32", str(tokenizers))[0]
    with_vision = _node("HYVS_LoadLlavaVision")(encoders, str(model_files["vision"]))[0]
    vae = _node("HYVS_VAELoader")(str(model_files["vae"]), "fp32")[0]
    return encoders, with_vision, vae


@pytest.mark.parametrize("variant,label", [("i2v_v2", "v2 (token replace)"), ("i2v_v1", "v1 (concat)")])
def test_i2v_chain_of_nodes_gives_the_authors_frame_count(model_files, loaded, variant, label):
    _, encoders, vae = loaded
    transformer = _node("HYVS_TransformerLoader")(str(model_files[variant]), "auto", "fp32")[0]
    assert transformer.variant == variant
    picture = torch.rand(1, 90, 160, 3, generator=torch.Generator().manual_seed(0))
    conditioning, width, height = _node("HYVS_I2VConditioning")(
        picture, vae, encoders, "a cat walks", "bad", label, "custom", 64, 32, 0
    )
    assert (width, height) == (64, 32)
    latent = _node("HYVS_I2VSampler")(transformer, conditioning, 9, 2, "stability", 0.0, 6.0, 1.0, 3)[0]
    frames, video = _node("HYVS_Decode")(vae, latent, 24.0, False, 256, 64, False, 16, 4)
    assert frames.shape == (9 if variant == "i2v_v2" else 5, 32, 64, 3)  # v1 drops its first 4, as the authors
    assert 0.0 <= frames.min() and frames.max() <= 1.0


def test_the_bucket_size_comes_out_of_the_node(loaded):
    _, encoders, vae = loaded
    picture = torch.rand(1, 27, 48, 3)
    _, width, height = _node("HYVS_I2VConditioning")(picture, vae, encoders, "x", "", "v2 (token replace)", "360p", 0, 0, 0)
    assert width > height and width % 32 == 0 and height % 32 == 0


def test_a_text_only_setup_says_what_is_missing(loaded):
    encoders, _, vae = loaded
    with pytest.raises(MissingVisionError, match="Load LLaVA Vision"):
        _node("HYVS_I2VConditioning")(torch.rand(1, 32, 32, 3), vae, encoders, "x", "", "v2 (token replace)", "custom",
                                      32, 32, 0)


def test_conditioning_and_transformer_must_match(model_files, loaded):
    _, encoders, vae = loaded
    conditioning = _node("HYVS_I2VConditioning")(torch.rand(1, 32, 32, 3), vae, encoders, "x", "", "v1 (concat)",
                                                 "custom", 32, 32, 0)[0]
    v2 = _node("HYVS_TransformerLoader")(str(model_files["i2v_v2"]), "auto", "fp32")[0]
    with pytest.raises(ValueError, match="made for image-to-video v1 \\(latent concat\\) but the transformer is image-to-video v2"):
        _node("HYVS_I2VSampler")(v2, conditioning, 5, 1, "dynamic", 0.0, 6.0, 1.0, 0)
    t2v_sampler = NODE_CLASS_MAPPINGS["HYVS_T2VSampler"]
    with pytest.raises(ValueError, match="image-to-video model"):
        getattr(t2v_sampler(), t2v_sampler.FUNCTION)(v2, conditioning.positive, 32, 32, 5, 1, 6.0, 1.0, 7.0, 0)


def test_vision_loader_names_a_wrong_file(model_files, loaded):
    encoders = loaded[0]
    with pytest.raises(CheckpointError, match="clip_l.safetensors: expected the LLaVA vision tower .* holds a CLIP text encoder"):
        _node("HYVS_LoadLlavaVision")(encoders, str(model_files["clip"]))


def test_sizes_are_checked_when_comfyui_validates_the_prompt():
    conditioning = NODE_CLASS_MAPPINGS["HYVS_I2VConditioning"]
    assert conditioning.VALIDATE_INPUTS(resolution="720p", width=1280, height=720) is True
    assert conditioning.VALIDATE_INPUTS(resolution="custom", width=1000, height=720).startswith("width must be a positive multiple of 16")
    sampler = NODE_CLASS_MAPPINGS["HYVS_I2VSampler"]
    assert sampler.VALIDATE_INPUTS(num_frames=129, steps=50, flow_shift=0.0) is True
    assert sampler.VALIDATE_INPUTS(num_frames=128, steps=50, flow_shift=0.0).startswith("num_frames must be 4k+1")


def test_vision_file_and_llava_folder_read_images_alike(tmp_path):
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.image_prompt import image_tokens, vision_pixels
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.text_encoder_loading import load_text_encoders_from_folder
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.vision_loading import load_vision

    encoders = tiny.tiny_text_encoders(seed=1, llava=True)
    picture = torch.rand(2, 40, 50, 3, generator=torch.Generator().manual_seed(1))
    expected = encoders.llava.model.get_image_features(
        pixel_values=vision_pixels(picture, 56),
        vision_feature_layer=-2, vision_feature_select_strategy="default",
    ).pooler_output
    from_file = encoders.with_vision(load_vision(tiny.save_vision(encoders.vision, tmp_path / "v.safetensors"), torch.float32))
    tiny.save_text_encoders(encoders, tmp_path / "folder", layout="diffusers")
    from_folder = load_text_encoders_from_folder(tmp_path / "folder", dtype=torch.float32)
    for loaded in (from_file, from_folder):
        torch.testing.assert_close(image_tokens(loaded, picture, "cpu"), torch.stack(list(expected)))
