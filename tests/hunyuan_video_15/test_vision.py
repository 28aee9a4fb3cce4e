"""The SigLIP vision encoder of HunyuanVideo 1.5's I2V: ComfyUI's clip_vision file and a diffusers image_encoder/
load to the same weights, wrong files are refused from their header, the preprocessing is the authors' (bicubic
PIL resize of the uint8 picture, mean/std 0.5), and the tokens equal diffusers' I2V pipeline's image encoding."""

import numpy as np
import pytest
import torch
from diffusers import HunyuanVideo15ImageToVideoPipeline
from hunyuan_video_suite.pipelines.demo.hv15_text import (
    save_siglip,
    save_text_encoders15,
    tiny_siglip,
    tiny_text_encoders15,
)
from hunyuan_video_suite.pipelines.demo.tiny import save_vision, tiny_text_encoders
from hunyuan_video_suite.pipelines.hunyuan_video_15 import vision_loading as vision_module
from hunyuan_video_suite.pipelines.hunyuan_video_15.vision_loading import (
    derive_siglip_config,
    encode_image,
    image_processor,
    load_vision,
    to_uint8,
)
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from PIL import Image


@pytest.fixture(scope="module")
def vision():
    return tiny_siglip(seed=0)


@pytest.fixture(scope="module")
def picture():
    """A bucket-cropped first frame as ComfyUI holds it: 8-bit values as floats in 0..1, [1, H, W, 3]."""
    pixels = torch.randint(0, 256, (1, 48, 80, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return pixels.float() / 255


def test_comfy_file_and_diffusers_folder_load_to_the_same_weights(vision, tmp_path):
    comfy = load_vision(save_siglip(vision, tmp_path / "sigclip_vision_patch14_384.safetensors"), dtype=torch.float32)
    folder = save_siglip(vision, tmp_path / "pipeline" / "image_encoder", layout="diffusers")
    for loaded, cast in ((comfy, torch.float16), (load_vision(folder.parent, dtype=torch.float32), None)):
        assert loaded.config.image_size == 48 and loaded.config.num_attention_heads == 2
        for key, value in loaded.state_dict().items():
            reference = vision.state_dict()[key]
            assert torch.equal(value, reference if cast is None else reference.to(cast).float()), key
    assert load_vision(folder, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_real_shapes_give_so400m_at_384():
    shapes = {"embeddings.patch_embedding.weight": (1152, 3, 14, 14),
              "embeddings.position_embedding.weight": (729, 1152),
              "encoder.layers.0.mlp.fc1.weight": (4304, 1152), "post_layernorm.weight": (1152,),
              **{f"encoder.layers.{i}.layer_norm1.weight": (1152,) for i in range(27)}}
    config = derive_siglip_config(shapes)
    sizes = (config.image_size, config.patch_size, config.num_attention_heads, config.num_hidden_layers)
    assert sizes == (384, 14, 16, 27)
    assert config.hidden_act == "gelu_pytorch_tanh" and not config.vision_use_head


def test_wrong_files_are_refused_from_their_header(tmp_path, monkeypatch):
    encoders = tiny_text_encoders(seed=0, llava=True)
    llava_vision = save_vision(encoders.vision, tmp_path / "llava_llama3_vision.safetensors")
    comfy_text = save_text_encoders15(tiny_text_encoders15(seed=0), tmp_path / "hv15")
    monkeypatch.setattr(vision_module, "load_state_dict", None)  # reading any weight would fail differently
    for path, held in ((llava_vision, "a CLIP vision tower"), (comfy_text["qwen"], "a Qwen2.5 language model"),
                       (comfy_text["byt5"], "a T5 text encoder")):
        with pytest.raises(CheckpointError, match=rf"^{path.name}: expected the SigLIP vision encoder.*holds {held}"):
            load_vision(path)
    with pytest.raises(CheckpointError, match="no such file or folder"):
        load_vision(tmp_path / "missing.safetensors")


def test_preprocessing_is_the_authors(vision, picture):
    frames = to_uint8(picture)
    assert frames[0].dtype == np.uint8 and np.array_equal(frames[0], (picture[0] * 255).round().byte().numpy())
    pixels = image_processor(vision)(images=frames, return_tensors="pt")["pixel_values"]
    # restated: PIL bicubic to the model's square size, /255, then (x - 0.5) / 0.5
    resized = np.asarray(Image.fromarray(frames[0]).resize((48, 48), Image.Resampling.BICUBIC), dtype=np.float32)
    expected = torch.from_numpy((resized / 255 - 0.5) / 0.5).permute(2, 0, 1)
    assert pixels.shape == (1, 3, 48, 48) and torch.allclose(pixels[0], expected, atol=1e-6)


def test_tokens_equal_diffusers_i2v_image_encoding(vision, picture):
    ours = encode_image(vision, picture.repeat(2, 1, 1, 1))
    frame = Image.fromarray(to_uint8(picture)[0])
    theirs = HunyuanVideo15ImageToVideoPipeline._get_image_embeds(vision, image_processor(vision), frame, "cpu")
    assert ours.shape == (2, 9, vision.config.hidden_size) and ours.dtype == torch.float32
    assert torch.allclose(ours[:1], theirs, atol=1e-5, rtol=0) and torch.equal(ours[0], ours[1])
    with pytest.raises(ValueError, match=r"ComfyUI IMAGE \[B, H, W, 3\]"):
        encode_image(vision, picture[0])
