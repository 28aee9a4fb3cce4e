"""The render command with HunyuanVideo 1.5 files (the family read from the transformer's header): tiny models in
ComfyUI's layout render text-to-video and image-to-video (--image), and every bad input, including a file or an
option of the other family, is refused with one line and status 2 before any weight is read (a guard on the
loaders and on tensor reads fails the test if one is reached)."""

import json

import numpy as np
import pytest
import torch
from hunyuan_video_suite.pipelines.cli import hv15_jobs, hv15_options, options
from hunyuan_video_suite.pipelines.cli.render import main, parse_args
from hunyuan_video_suite.pipelines.demo.hv15_text import (
    save_siglip,
    save_text_encoders15,
    tiny_siglip,
    tiny_text_encoders15,
)
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b import text_encoder_loading as text13
from hunyuan_video_suite.pipelines.hunyuan_video_13b import transformer_loading as transformer13
from hunyuan_video_suite.pipelines.hunyuan_video_13b import vae_loading as vae13
from hunyuan_video_suite.pipelines.hunyuan_video_13b import vision_loading as vision13
from hunyuan_video_suite.pipelines.hunyuan_video_15 import (
    image_conditioning,
    sizes,
    text_encoder_loading,
    transformer_loading,
    vae_loading,
    variants,
    vision_loading,
)
from hunyuan_video_suite.pipelines.video.video_io import read_video_frames
from hunyuan_video_suite.pipelines.weights import streaming_load
from PIL import Image
from safetensors.torch import save_file

T2V, I2V = "hunyuanvideo1.5_480p_t2v_fp16.safetensors", "hunyuanvideo1.5_480p_i2v_fp16.safetensors"
LOADERS = [(transformer_loading, "load_transformer"), (vae_loading, "load_vae"), (vision_loading, "load_vision"),
           (text_encoder_loading, "load_text_encoders15_from_files"),
           (text_encoder_loading, "load_text_encoders15_from_folder"), (transformer13, "load_transformer"),
           (vae13, "load_vae"), (vision13, "load_vision"), (text13, "load_text_encoders_from_files")]


def _fake(path, shapes: dict):
    """A safetensors file with these tensor names and shapes (zeros): enough for a header check."""
    save_file({key: torch.zeros(shape) for key, shape in shapes.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny 1.5 models under ComfyUI's file names and layout, a 48x64 picture, and 13B files (tiny or header-only)."""
    root = tmp_path_factory.mktemp("hv15")
    encoders, vision = tiny_text_encoders15(seed=3), tiny_siglip(seed=3)
    paths = save_text_encoders15(encoders, root)  # qwen, byt5, and the tokenizer folders in root
    dims = (encoders.qwen.config.hidden_size, encoders.byt5.config.d_model, vision.config.hidden_size)
    for name in (T2V, I2V):
        save_transformer15(tiny_transformer15(*dims, seed=3, layers=1), root / name, prefix="model.diffusion_model.")
        paths[name] = root / name
    paths["unnamed"] = save_transformer15(tiny_transformer15(*dims, seed=3, layers=1), root / "my_model.safetensors")
    paths["vae"] = save_vae15(tiny_vae15(seed=3), root / "hunyuanvideo15_vae_fp16.safetensors")
    paths["vision"] = save_siglip(vision, root / "sigclip_vision_patch14_384.safetensors")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "frame.png")
    paths["picture"] = root / "frame.png"
    old = root / "13b"
    old.mkdir()
    paths["13b"] = save_transformer(tiny_transformer(32, 16, 16, seed=3), old / "hunyuan_video_t2v_720p_bf16.safetensors")
    paths["13b_i2v"] = save_transformer(tiny_transformer(32, 16, 16, variant="i2v_v2", seed=3),
                                        old / "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors")
    paths["13b_vae"] = _fake(old / "hunyuan_video_vae_bf16.safetensors",
                             {"decoder.conv_in.conv.weight": (8, 16, 3, 3, 3), "encoder.down_blocks.0.x.weight": (1,)})
    paths["llama"] = _fake(old / "llava_llama3.safetensors", {"model.embed_tokens.weight": (64, 32),
                                                              "model.layers.0.self_attn.o_proj.weight": (32, 32)})
    paths["clip"] = _fake(old / "clip_l.safetensors", {"text_model.embeddings.token_embedding.weight": (64, 16),
                                                       "text_model.encoder.layers.0.self_attn.out_proj.weight": (1,)})
    paths["llava_vision"] = _fake(old / "llava_llama3_vision.safetensors", {
        "vision_model.embeddings.class_embedding": (8,), "vision_model.embeddings.patch_embedding.weight": (8, 3, 14, 14),
        "vision_model.post_layernorm.weight": (8,), "multi_modal_projector.linear_2.weight": (32, 8)})
    paths["t5xxl"] = _fake(old / "t5xxl_fp16.safetensors", {"shared.weight": (32128, 8),
                                                            "encoder.block.0.layer.0.SelfAttention.q.weight": (8, 8)})
    for sub in ("llama_tokenizer", "clip_tokenizer"):
        (old / "tok" / sub).mkdir(parents=True)
    paths["13b_tokenizers"] = old / "tok"
    return paths


def _args(files, transformer=T2V, **extra):
    """A 1.5 render from `files` with `extra` (--name value; None leaves an option out); --vision with --image."""
    chosen = {"transformer": files.get(transformer, transformer), "vae": files["vae"], "llm": files["qwen"],
              "byt5": files["byt5"], "tokenizers": files["folder"]} | ({"vision": files["vision"]} if "image" in extra else {})
    chosen |= {name: files.get(value, value) for name, value in extra.items()}
    argv = [arg for name, value in chosen.items() if value is not None for arg in (f"--{name.replace('_', '-')}", str(value))]
    return [*argv, "--dtype", "fp32", "--device", "cpu"]


class Loaded(Exception):
    """A model loader was reached."""


@pytest.fixture
def no_loading(monkeypatch):
    """Every loader of both families raises Loaded, and reading any tensor's data fails the test."""
    for module, name in LOADERS:
        def refuse(*args, _name=name, **kwargs):
            raise Loaded(_name)
        monkeypatch.setattr(module, name, refuse)
    for method in ("get", "read"):
        monkeypatch.setattr(streaming_load.TensorSource, method, lambda *a, _m=method: pytest.fail(f"{_m}: a weight was read"))


def _refused(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- renders

def test_text_to_video_renders_from_comfyui_files(files, tmp_path, capsys):
    out = tmp_path / "t2v.mp4"
    assert main([*_args(files, width=64, height=48, frames=5, steps=2), "--output", str(out)]) == 0
    frames, rate = read_video_frames(out)
    assert frames.shape == (5, 48, 64, 3) and rate == variants.DEFAULT_FPS
    printed = capsys.readouterr().out
    assert f"loaded {files[T2V]} (480p_t2v)" in printed
    assert "HunyuanVideo 1.5 480p text-to-video 64x48, 5 frames, 2 steps, cfg 6, shift 5" in printed  # the recipe


def test_image_to_video_renders_at_the_pictures_bucket(files, tmp_path, capsys, monkeypatch):
    """The bucket nearest the picture at the model's resolution; stood in for by 64x48 here (a real 480p bucket
    decodes for half a minute on a CPU)."""
    asked = []

    def bucket(height, width, resolution):
        asked.append((height, width, resolution))
        return 48, 64

    monkeypatch.setattr(hv15_jobs, "nearest_bucket", bucket)
    monkeypatch.setattr(image_conditioning, "nearest_bucket", bucket)
    out = tmp_path / "i2v.mp4"
    assert main([*_args(files, I2V, image="picture", frames=5, steps=2, cfg=1), "--output", str(out)]) == 0
    assert read_video_frames(out)[0].shape == (5, 48, 64, 3)
    assert asked == [(48, 64, "480p")] * 2  # the request's size, then the conditioning's: the same bucket
    assert f"loaded {files[I2V]} (480p_i2v)" in capsys.readouterr().out


def test_defaults_follow_the_variant(files):
    """Unset options take the variant's recipe, 121 frames and the 16:9 bucket; --aspect-ratio picks another."""
    request = hv15_jobs.request15(parse_args(_args(files, "unnamed", variant="720p_t2v_distilled")))
    assert (request.width, request.height, request.num_frames) == (1280, 720, variants.DEFAULT_FRAMES)
    assert (request.steps, request.cfg, request.flow_shift) == (50, 1.0, 9.0)
    request = hv15_jobs.request15(parse_args(_args(files, aspect_ratio="9:16", steps=8, cfg=3, shift=4)))
    assert (request.width, request.height) == sizes.size_for_aspect("9:16", "480p")[:2]
    assert (request.steps, request.cfg, request.flow_shift) == (8, 3.0, 4.0)


# ----------------------------------------------------------------------------- refusals, before any weight is read

def test_the_load_guard_sees_a_command_that_passes_the_checks(files, tmp_path, no_loading):
    with pytest.raises(Loaded, match="^load_transformer$"):
        main([*_args(files, "unnamed", variant="480p_i2v", image="picture"), "--output", str(tmp_path / "x.mp4")])


@pytest.mark.parametrize("transformer, extra, expected", [
    (I2V, {}, f"--transformer: {I2V} is HunyuanVideo 1.5 480p image-to-video: give --image PATH (the first frame), "
              "or a text-to-video transformer"),
    (T2V, {"image": "picture"}, f"--image needs a HunyuanVideo 1.5 image-to-video transformer, but {T2V} is "
                                "HunyuanVideo 1.5 480p text-to-video; an I2V file whose name does not say so needs "
                                "--variant (e.g. 720p_i2v)"),
    (I2V, {"image": "picture", "vision": None}, "--image needs --vision FILE too: the SigLIP vision encoder"),
    (I2V, {"image": "picture", "vision": "llava_vision"}, "--vision: llava_llama3_vision.safetensors holds a CLIP "
                                                          "vision tower (e.g. LLaVA's llava_llama3_vision, the 13B "
                                                          "models'), not SigLIP; expected the SigLIP vision encoder"),
    (T2V, {"vision": "vision"}, "--vision reads the picture of --image: give --image PATH"),
    ("unnamed", {}, "--transformer: my_model.safetensors: cannot tell the variant (480p/720p, T2V/I2V, distilled) "
                    "from the weights, config or file name: give --variant (480p_t2v, 720p_i2v, ...)"),
    ("unnamed", {"variant": "480p_i2v_step_distilled"}, "--variant 480p_i2v_step_distilled does not fit "
                                                        "my_model.safetensors: the file lacks the step-distilled"),
    (T2V, {"variant": "i2v_v2"}, f"--variant i2v_v2 is a HunyuanVideo 13B variant, but {T2V} is HunyuanVideo 1.5: "
                                 "give one of 480p_t2v,"),
    (T2V, {"clip": "clip"}, f"--clip is for the HunyuanVideo 13B models, but {T2V} is HunyuanVideo 1.5: it reads the "
                            "prompt's quoted text with --byt5 FILE, not CLIP"),
    (T2V, {"guidance": 6}, "--guidance is for the HunyuanVideo 13B models, but hunyuanvideo1.5_480p_t2v_fp16"
                           ".safetensors is HunyuanVideo 1.5: it has no guidance embedding"),
    (T2V, {"resolution": "720p"}, "--resolution is for the HunyuanVideo 13B models, but hunyuanvideo1.5_480p_t2v_fp16"
                                  ".safetensors is HunyuanVideo 1.5: its size bucket follows the model"),
    (I2V, {"image": "picture", "mode": "dynamic"}, "--mode is for the HunyuanVideo 13B models"),
    (I2V, {"reference": "picture"}, "--reference is for the HunyuanVideo 13B models, but hunyuanvideo1.5_480p_i2v"
                                    "_fp16.safetensors is HunyuanVideo 1.5: HunyuanCustom is a 13B model"),
    (T2V, {"riflex": "off"}, "--riflex is for the HunyuanVideo 13B models"),
    (T2V, {"byt5": None}, f"--transformer {T2V} is HunyuanVideo 1.5: it needs --vae --llm --byt5 --tokenizers too "
                          "(missing: --byt5)"),
    (T2V, {"llm": "llama"}, "--llm: llava_llama3.safetensors holds a Llama language model; expected the Qwen2.5-VL-7B "
                            "text encoder"),
    (T2V, {"vae": "13b_vae"}, "--vae: hunyuan_video_vae_bf16.safetensors: expected the HunyuanVideo 1.5 VAE (e.g. "
                              "hunyuanvideo15_vae_fp16.safetensors, in the authors'/ComfyUI or diffusers key names, or "
                              "a diffusers folder), but it holds the HunyuanVideo 13B VAE (16 latent channels"),
    (T2V, {"byt5": "clip"}, "--byt5: clip_l.safetensors holds a CLIP text encoder; expected the byT5 glyph encoder"),
    (T2V, {"byt5": "t5xxl"}, "--byt5: t5xxl_fp16.safetensors holds a T5 text encoder with a 32128-token vocabulary "
                             "(byT5's is bytes)"),
    (T2V, {"tokenizers": "13b_tokenizers"}, "tok must be a folder holding qwen25_tokenizer/ (and byt5_tokenizer/) as "
                                            "ComfyUI's comfy/text_encoders/ does"),
    (T2V, {"width": 64}, "--width and --height go together for HunyuanVideo 1.5"),
    (T2V, {"width": 64, "height": 48, "aspect_ratio": "1:1"}, "--aspect-ratio picks a size bucket, --width and "
                                                              "--height set the size: give one or the other"),
    (I2V, {"image": "picture", "aspect_ratio": "1:1"}, "--aspect-ratio: HunyuanVideo 1.5 image-to-video renders at "
                                                       "the bucket nearest the picture's shape"),
    (T2V, {"aspect_ratio": "16x9"}, "--aspect-ratio: must be W:H, two whole numbers from 1 to 100"),
    (T2V, {"variant": "720p_t2v_x"}, "--variant: invalid choice: '720p_t2v_x'"),
    ("missing.safetensors", {"byt5": "b.safetensors"}, "missing.safetensors does not exist"),
])
def test_a_bad_hv15_render_is_refused_before_loading(files, capsys, tmp_path, no_loading, transformer, extra,
                                                     expected):
    argv = _args(files, transformer if transformer in files else str(tmp_path / transformer), **extra)
    assert expected in _refused(capsys, [*argv, "--output", str(tmp_path / "x.mp4")])


@pytest.mark.parametrize("argv, expected", [
    (["--transformer", "13b", "--vae", "13b_vae", "--llm", "llama", "--clip", "clip", "--tokenizers",
      "13b_tokenizers", "--byt5", "byt5"], "--byt5 is for HunyuanVideo 1.5, but hunyuan_video_t2v_720p_bf16"
                                           ".safetensors is a HunyuanVideo 13B transformer"),
    (["--transformer", "13b", "--vae", "13b_vae", "--llm", "llama", "--clip", "clip", "--tokenizers",
      "13b_tokenizers", "--variant", "720p_t2v"], "--variant 720p_t2v is a HunyuanVideo 1.5 variant, but "
                                                  "hunyuan_video_t2v_720p_bf16.safetensors is a HunyuanVideo 13B"),
    (["--transformer", "13b", "--vae", "vae", "--llm", "llama", "--clip", "clip", "--tokenizers", "13b_tokenizers"],
     "--vae: hunyuanvideo15_vae_fp16.safetensors holds a HunyuanVideo 1.5 VAE; expected the HunyuanVideo VAE"),
    (["--transformer", "13b", "--vae", "13b_vae", "--llm", "qwen", "--clip", "clip", "--tokenizers",
      "13b_tokenizers"], "--llm: qwen_2.5_vl_7b.safetensors holds a Qwen2.5 language model; expected a Llama-3"),
    (["--transformer", "13b_i2v", "--vae", "13b_vae", "--llm", "llama", "--clip", "clip", "--tokenizers",
      "13b_tokenizers", "--image", "picture", "--vision", "vision"],
     "--vision: sigclip_vision_patch14_384.safetensors holds a vision tower without LLaVA's projector (SigLIP, "
     "HunyuanVideo 1.5's?)"),
    (["--aspect-ratio", "1:1"], "--aspect-ratio is for HunyuanVideo 1.5, but with no model the tiny demo is the 13B "
                                "model"),
    (["--byt5", "byt5"], "--byt5 needs --transformer (or --diffusers)"),
])
def test_a_file_or_option_of_the_other_family_is_refused_with_a_13b_model(files, capsys, tmp_path, no_loading, argv,
                                                                           expected):
    argv = [str(files.get(arg, arg)) for arg in argv]
    assert expected in _refused(capsys, [*argv, "--output", str(tmp_path / "x.mp4")])


def test_a_diffusers_folder_is_read_from_its_configs(files, capsys, tmp_path, no_loading):
    folder = tmp_path / "HunyuanVideo-1.5-Diffusers-480p_t2v"
    for sub in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        (folder / sub).mkdir(parents=True)
    save_transformer15(tiny_transformer15(128, 64, 144, seed=3, layers=1), folder / "transformer", layout="diffusers")
    configs = {"vae": {"_class_name": "AutoencoderKLHunyuanVideo15"}, "text_encoder": {"model_type": "llama"},
               "text_encoder_2": {"model_type": "t5"}}
    for sub, config in configs.items():
        (folder / sub / "config.json").write_text(json.dumps(config))
    out = ["--diffusers", str(folder), "--output", str(tmp_path / "x.mp4")]
    assert "--diffusers: the text_encoder/ of HunyuanVideo-1.5-Diffusers-480p_t2v holds llama, not a Qwen2.5-VL" in (
        _refused(capsys, out))
    (folder / "text_encoder" / "config.json").write_text('{"model_type": "qwen2_5_vl_text"}')
    assert "--image needs a HunyuanVideo 1.5 image-to-video transformer" in _refused(
        capsys, [*out, "--image", str(files["picture"])])
    with pytest.raises(Loaded, match="^load_transformer$"):
        main([*out, "--cfg-batching", "sequential"])


# ----------------------------------------------------------------------------- the help's names are the engine's

def test_hv15_choices_match_the_engine():
    assert hv15_options.HV15_VARIANT_CHOICES == variants.BASE_VARIANTS
    assert hv15_options.DEFAULT_ASPECT_RATIO == sizes.ASPECT_RATIOS[0]
    assert set(options.FILE_OPTIONS) >= {*hv15_options.HV15_NEEDED, "vision"}
    assert set(hv15_options.HV13_ONLY) | set(hv15_options.HV15_ONLY) <= set(vars(parse_args([])))
