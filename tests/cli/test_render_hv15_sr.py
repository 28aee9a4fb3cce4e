"""The render command's HunyuanVideo 1.5 super-resolution stage (--sr-model, --sr-upsampler): tiny models in
ComfyUI's layout render text-to-video and image-to-video lifted by the SR DiT, and every bad SR input is refused
with one line naming the flag and status 2 before any weight is read (a guard on the loaders and on tensor reads
fails the test if one is reached)."""

import json

import numpy as np
import pytest
from hunyuan_video_suite.pipelines.cli import hv15_jobs, hv15_sr_options
from hunyuan_video_suite.pipelines.cli.render import main, parse_args
from hunyuan_video_suite.pipelines.demo.hv15_text import (
    save_siglip,
    save_text_encoders15,
    tiny_siglip,
    tiny_text_encoders15,
)
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_upsampler import save_upsampler, tiny_upsampler
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_15 import (
    image_conditioning,
    super_resolution,
    text_encoder_loading,
    transformer_loading,
    upsampler,
    vae_loading,
    variants,
    vision_loading,
)
from hunyuan_video_suite.pipelines.video.video_io import read_video_frames
from hunyuan_video_suite.pipelines.weights import streaming_load
from PIL import Image

T2V, I2V, T2V_720P = ("hunyuanvideo1.5_480p_t2v_fp16.safetensors", "hunyuanvideo1.5_480p_i2v_fp16.safetensors",
                      "hunyuanvideo1.5_720p_t2v_fp16.safetensors")
SR_720P, SR_1080P = (f"hunyuanvideo1.5_{r}_sr_distilled_fp16.safetensors" for r in ("720p", "1080p"))
UP_720P, UP_1080P = (f"hunyuanvideo15_latent_upsampler_{r}.safetensors" for r in ("720p", "1080p"))
SR_SIZE = (128, 96)  # stands in for the SR bucket (a real 720p one decodes for minutes on a CPU)
LOADERS = [(transformer_loading, "load_transformer"), (vae_loading, "load_vae"), (vision_loading, "load_vision"),
           (text_encoder_loading, "load_text_encoders15_from_files"), (upsampler, "load_upsampler")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny 1.5 base and SR models and upsamplers under ComfyUI's file names and layout, a 48x64 picture."""
    root = tmp_path_factory.mktemp("hv15_sr")
    encoders, vision = tiny_text_encoders15(seed=3), tiny_siglip(seed=3)
    paths = save_text_encoders15(encoders, root)  # qwen, byt5, and the tokenizer folders in root
    dims = (encoders.qwen.config.hidden_size, encoders.byt5.config.d_model, vision.config.hidden_size)
    for name in (T2V, I2V, T2V_720P, "my_model.safetensors"):
        paths[name] = save_transformer15(tiny_transformer15(*dims, seed=3, layers=1), root / name,
                                         prefix="model.diffusion_model.")
    for name in (SR_720P, SR_1080P, "my_sr.safetensors"):
        paths[name] = save_transformer15(tiny_transformer15(*dims, seed=4, layers=1, sr=True), root / name,
                                         prefix="model.diffusion_model.")
    paths[UP_720P] = save_upsampler(tiny_upsampler("720p", seed=3), root / UP_720P)
    paths[UP_1080P] = save_upsampler(tiny_upsampler("1080p", seed=3), root / UP_1080P)
    paths["up_folder"] = save_upsampler(tiny_upsampler("720p", seed=3), root / "upsampler" / "720p_sr_distilled",
                                        layout="folder")
    paths["vae"] = save_vae15(tiny_vae15(seed=3), root / "hunyuanvideo15_vae_fp16.safetensors")
    paths["vision"] = save_siglip(vision, root / "sigclip_vision_patch14_384.safetensors")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "frame.png")
    paths["picture"] = root / "frame.png"
    paths["13b"] = save_transformer(tiny_transformer(32, 16, 16, seed=3),
                                    root / "hunyuan_video_t2v_720p_bf16.safetensors")
    return paths


def _args(files, transformer=T2V, **extra):
    """A 1.5 render from `files` with `extra` (--name value; None leaves an option out); --vision with --image."""
    chosen = {"transformer": files.get(transformer, transformer), "vae": files["vae"], "llm": files["qwen"],
              "byt5": files["byt5"], "tokenizers": files["folder"]}
    chosen |= {"vision": files["vision"]} if "image" in extra else {}
    chosen |= {name: files.get(value, value) for name, value in extra.items()}
    argv = [arg for name, value in chosen.items() if value is not None
            for arg in (f"--{name.replace('_', '-')}", str(value))]
    return [*argv, "--dtype", "fp32", "--device", "cpu"]


class Loaded(Exception):
    """A model loader was reached."""


@pytest.fixture
def no_loading(monkeypatch):
    """Every 1.5 loader raises Loaded, and reading any tensor's data fails the test."""
    for module, name in LOADERS:
        def refuse(*args, _name=name, **kwargs):
            raise Loaded(_name)
        monkeypatch.setattr(module, name, refuse)
    for method in ("get", "read"):
        monkeypatch.setattr(streaming_load.TensorSource, method,
                            lambda *a, _m=method: pytest.fail(f"{_m}: a weight was read"))


@pytest.fixture
def small_sr(monkeypatch):
    """The SR bucket is SR_SIZE; every base size asked for is recorded. The SR stage's calls are recorded too."""
    asked, calls = [], {}

    def size(width, height, resolution):
        asked.append((width, height, resolution))
        return SR_SIZE

    monkeypatch.setattr(hv15_jobs, "sr_size", size)
    monkeypatch.setattr(super_resolution, "sr_size", size)
    real_generate, real_prepare = hv15_jobs.generate_sr, hv15_jobs.prepare_sr_image

    def generate(transformer, upsampler, positive, latents, request, image=None, **run):
        calls["generate"] = (transformer.variant.name, upsampler.kind, tuple(latents.shape), request, image)
        return real_generate(transformer, upsampler, positive, latents, request, image, **run)

    def prepare(vae, vision, image, width, height, resolution):
        calls["prepare"] = (tuple(image.shape), width, height, resolution)
        return real_prepare(vae, vision, image, width, height, resolution)

    monkeypatch.setattr(hv15_jobs, "generate_sr", generate)
    monkeypatch.setattr(hv15_jobs, "prepare_sr_image", prepare)
    return asked, calls


def _refused(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- renders

def test_text_to_video_is_lifted_by_the_sr_stage(files, tmp_path, capsys, small_sr):
    asked, calls = small_sr
    out = tmp_path / "t2v_sr.mp4"
    argv = _args(files, width=64, height=48, frames=5, steps=2, sr_model=SR_720P, sr_upsampler=UP_720P, seed=7)
    assert main([*argv, "--output", str(out)]) == 0
    assert read_video_frames(out)[0].shape == (5, *SR_SIZE[::-1], 3)
    assert asked[0] == (64, 48, "720p")  # the base size, mapped to the 720p bucket
    variant, kind, shape, request, image = calls["generate"]
    assert (variant, kind, shape, image) == ("720p_sr_distilled", "720p", (1, 32, 2, 3, 4), None)
    assert (request.steps, request.flow_shift, request.noise_augmentation, request.seed) == (6, 2.0, 0.7, 7)
    printed = capsys.readouterr().out
    loaded = f"loaded {files[T2V]} (480p_t2v), {files[SR_720P]} (720p_sr_distilled) and {files[UP_720P]} (720p "
    assert loaded in printed
    assert "HunyuanVideo 1.5 480p text-to-video 64x48, 5 frames, 2 steps" in printed
    assert ("HunyuanVideo 1.5 480p -> 720p super-resolution 128x96, 5 frames, 6 steps, shift 2, noise augmentation "
            "0.7") in printed


def test_image_to_video_passes_the_picture_to_the_sr_stage(files, tmp_path, capsys, monkeypatch, small_sr):
    asked, calls = small_sr
    monkeypatch.setattr(hv15_jobs, "nearest_bucket", lambda height, width, resolution: (48, 64))
    monkeypatch.setattr(image_conditioning, "nearest_bucket", lambda height, width, resolution: (48, 64))
    out = tmp_path / "i2v_sr.mp4"
    argv = _args(files, I2V, image="picture", frames=5, steps=2, cfg=1, sr_model="my_sr.safetensors",
                 sr_upsampler="up_folder", sr_steps=2, sr_shift=3, sr_noise_augmentation=0.5)
    assert main([*argv, "--output", str(out)]) == 0
    assert read_video_frames(out)[0].shape == (5, *SR_SIZE[::-1], 3)
    assert calls["prepare"] == ((1, 48, 64, 3), *SR_SIZE, "720p")  # the picture, at the SR stage's size
    variant, _, _, request, image = calls["generate"]
    assert variant == "720p_sr_distilled"  # an SR DiT whose name does not say: the one a 480p base needs
    assert (image.width, image.height, image.resolution) == (*SR_SIZE, "720p")
    assert (request.steps, request.flow_shift, request.noise_augmentation) == (2, 3.0, 0.5)
    assert "480p -> 720p super-resolution 128x96, 5 frames, 2 steps, shift 3, noise augmentation 0.5" in (
        capsys.readouterr().out)


# ----------------------------------------------------------------------------- checks, before any weight is read

@pytest.mark.parametrize("transformer, sr_model, expected", [
    (T2V, "my_sr.safetensors", "720p_sr_distilled"),
    (T2V_720P, "my_sr.safetensors", "1080p_sr_distilled"),
    (T2V_720P, SR_1080P, "1080p_sr_distilled"),
])
def test_the_sr_dit_is_read_from_its_header_and_name(files, no_loading, transformer, sr_model, expected):
    upsampler = UP_720P if expected.startswith("720p") else UP_1080P
    args = parse_args(_args(files, transformer, sr_model=sr_model, sr_upsampler=upsampler))
    assert args.sr_variant == expected


def test_the_load_guard_sees_an_sr_command_that_passes_the_checks(files, tmp_path, no_loading):
    with pytest.raises(Loaded, match="^load_transformer$"):
        main([*_args(files, sr_model=SR_720P, sr_upsampler="up_folder"), "--output", str(tmp_path / "x.mp4")])


@pytest.mark.parametrize("transformer, extra, expected", [
    (T2V, {"sr_upsampler": UP_720P}, "--sr-upsampler is for the super-resolution stage: give --sr-model PATH too"),
    (T2V, {"sr_steps": 4}, "--sr-steps is for the super-resolution stage: give --sr-model PATH too"),
    (T2V, {"sr_model": SR_720P}, f"--sr-model needs --sr-upsampler PATH too: the 720p latent upsampler ({UP_720P})"),
    (T2V, {"sr_model": "missing.safetensors", "sr_upsampler": UP_720P}, "missing.safetensors does not exist"),
    (T2V, {"sr_model": SR_1080P, "sr_upsampler": UP_1080P},
     f"--sr-model: {SR_1080P} is the HunyuanVideo 1.5 720p -> 1080p super-resolution DiT, but the base transformer is "
     f"480p: a 480p clip needs {SR_720P} (the 480p -> 720p stage)"),
    (T2V_720P, {"sr_model": SR_720P, "sr_upsampler": UP_720P},
     f"--sr-model: {SR_720P} is the HunyuanVideo 1.5 480p -> 720p super-resolution DiT, but the base transformer is "
     f"720p: a 720p clip needs {SR_1080P} (the 720p -> 1080p stage)"),
    (T2V, {"sr_model": T2V, "sr_upsampler": UP_720P},
     f"--sr-model: {T2V} is HunyuanVideo 1.5 480p text-to-video, not a super-resolution DiT; a 480p clip needs "
     f"{SR_720P}"),
    (T2V, {"sr_model": "my_model.safetensors", "sr_upsampler": UP_720P},
     "--sr-model: my_model.safetensors: it holds a T2V/I2V transformer (65 input channels), not the super-resolution "
     "DiT (98)"),
    (T2V, {"sr_model": "vae", "sr_upsampler": UP_720P},
     "--sr-model: hunyuanvideo15_vae_fp16.safetensors: expected a HunyuanVideo 1.5 transformer"),
    (T2V, {"sr_model": "13b", "sr_upsampler": UP_720P},
     "--sr-model: hunyuan_video_t2v_720p_bf16.safetensors is a HunyuanVideo 13B transformer; a 480p clip needs"),
    (T2V, {"sr_model": SR_720P, "sr_upsampler": UP_1080P},
     f"--sr-upsampler: {UP_1080P} is the 1080p latent upsampler, but the SR DiT is the 720p one: it needs {UP_720P}"),
    (T2V_720P, {"sr_model": SR_1080P, "sr_upsampler": "up_folder"},
     f"--sr-upsampler: diffusion_pytorch_model.safetensors is the 720p latent upsampler, but the SR DiT is the 1080p "
     f"one: it needs {UP_1080P}"),
    (T2V, {"sr_model": SR_720P, "sr_upsampler": "vae"},
     "--sr-upsampler: hunyuanvideo15_vae_fp16.safetensors: expected a HunyuanVideo 1.5 latent upsampler"),
    (T2V, {"sr_model": SR_720P, "sr_upsampler": "gone.safetensors"}, "gone.safetensors does not exist"),
    (SR_720P, {}, f"--transformer: {SR_720P} is the HunyuanVideo 1.5 480p -> 720p super-resolution DiT, which "
                  "lifts a base clip: give a 480p or 720p text- or image-to-video transformer, and this one as "
                  "--sr-model"),
    (T2V, {"sr_model": SR_720P, "sr_upsampler": UP_720P, "sr_noise_augmentation": 1.5},
     "--sr-noise-augmentation: must be from 0 to 1, got 1.5"),
    (T2V, {"sr_model": SR_720P, "sr_upsampler": UP_720P, "sr_steps": 101}, "--sr-steps: must be from 0 to 100"),
    (T2V, {"sr_model": SR_720P, "sr_upsampler": UP_720P, "sr_shift": 0}, "--sr-shift: must be from 0.1 to 100"),
])
def test_a_bad_sr_stage_is_refused_before_loading(files, capsys, tmp_path, no_loading, transformer, extra, expected):
    argv = _args(files, transformer, **{k: v if v in files or not str(v).endswith(".safetensors") else
                                        str(tmp_path / v) for k, v in extra.items()})
    assert expected in _refused(capsys, [*argv, "--output", str(tmp_path / "x.mp4")])


def test_an_upsampler_folder_naming_the_other_class_is_refused(files, capsys, tmp_path, no_loading):
    folder = save_upsampler(tiny_upsampler("720p", seed=3), tmp_path / "upsampler" / "720p_sr_distilled",
                            layout="folder")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"_class_name": "SRTo1080pUpsampler"}))
    argv = _args(files, sr_model=SR_720P, sr_upsampler=folder)
    assert ("--sr-upsampler: 720p_sr_distilled/config.json names SRTo1080pUpsampler, but "
            "diffusion_pytorch_model.safetensors holds the 720p upsampler (SRTo720pUpsampler)") in _refused(
        capsys, [*argv, "--output", str(tmp_path / "x.mp4")])


@pytest.mark.parametrize("argv, expected", [
    (["--transformer", "13b", "--sr-steps", "6"],
     "--sr-steps is for HunyuanVideo 1.5, but hunyuan_video_t2v_720p_bf16.safetensors is a HunyuanVideo 13B "
     "transformer (the super-resolution stage, --sr-model, lifts a HunyuanVideo 1.5 clip)"),
    (["--sr-model", SR_720P], "--sr-model needs --transformer (or --diffusers)"),
    (["--sr-noise-augmentation", "0.5"], "--sr-noise-augmentation is for HunyuanVideo 1.5, but with no model the tiny "
                                         "demo is the 13B model"),
])
def test_sr_options_are_refused_with_a_13b_model_or_the_demo(files, capsys, tmp_path, no_loading, argv, expected):
    argv = [str(files.get(arg, arg)) for arg in argv]
    assert expected in _refused(capsys, [*argv, "--output", str(tmp_path / "x.mp4")])


def test_sr_choices_match_the_engine():
    assert hv15_sr_options.SR_FOR_BASE == {base: sr for sr, base in variants.SR_BASE_RESOLUTION.items()}
    assert hv15_sr_options.DEFAULT_NOISE_AUGMENTATION == super_resolution.DEFAULT_NOISE_AUGMENTATION
    assert {f"{resolution}_sr_distilled" for resolution in hv15_sr_options.SR_FILES} == set(variants.SR_VARIANTS)
    assert set(hv15_sr_options.SR_OPTIONS) <= set(vars(parse_args([])))
