"""The render command's image jobs: --image renders image-to-video with the loaded I2V v1 (4 frames fewer) or v2
transformer, --reference renders HunyuanCustom, and every bad input is refused with one line and status 2 before
any model loads (a guard on the loaders fails the test if one is reached)."""

import inspect
import shutil
import subprocess

import numpy as np
import pytest
import torch
from conftest import PACK_ROOT
from hunyuan_video_suite.pipelines.cli import job_options, jobs
from hunyuan_video_suite.pipelines.cli.options import MODEL_DEFAULTS
from hunyuan_video_suite.pipelines.cli.render import DEMO_NOTICE, main, run
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b import (
    custom,
    i2v,
    t2v,
    text_encoder_loading,
    transformer_loading,
    vae_loading,
    vision_loading,
)
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_keys import diffusers_to_authors
from hunyuan_video_suite.pipelines.video.video_io import read_video_frames
from PIL import Image
from safetensors.torch import save_file

NAMES = {
    "t2v": "hunyuan_video_t2v_720p_bf16.safetensors",
    "i2v_v1": "hunyuan_video_image_to_video_720p_bf16.safetensors",
    "i2v_v2": "hunyuan_video_v2_replace_image_to_video_720p_bf16.safetensors",
    "custom": "hunyuan_video_custom_720p_bf16.safetensors",
}
LOADERS = [(transformer_loading, "load_transformer"), (vae_loading, "load_vae"), (vision_loading, "load_vision"),
           (text_encoder_loading, "load_text_encoders_from_files"),
           (text_encoder_loading, "load_text_encoders_from_folder"), (tiny, "tiny_text_encoders")]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny models under the file names users have, a LLaVA vision file beside the text encoders, and a picture."""
    root = tmp_path_factory.mktemp("models")
    encoders = tiny.tiny_text_encoders(seed=2, llava=True)
    vae = tiny.tiny_vae(seed=2)
    dims = (encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, vae.config.latent_channels)
    paths = tiny.save_text_encoders(encoders, root, layout="comfy")  # llm, clip, vision; tokenizers in root
    for variant, name in NAMES.items():
        model = tiny_transformer(*dims, variant=variant, seed=2)
        paths[variant] = save_transformer(model, root / name, prefix="model.diffusion_model.")
    paths["unnamed_v2"] = shutil.copy(paths["i2v_v2"], root / "my_model.safetensors")  # nothing says I2V v2
    paths["vae"] = tiny.save_vae(vae, root / "hunyuan_video_vae_bf16.safetensors", layout="authors")
    pixels = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "picture.png")
    paths["picture"] = root / "picture.png"
    return paths


def _args(files, transformer, vision=None, **extra):
    """The options of a render from `files` with the transformer of `transformer` and `extra` (--name value); the
    vision tower is given with --image or --reference unless `vision` says otherwise."""
    vision = ("image" in extra or "reference" in extra) if vision is None else vision
    chosen = {"transformer": files[transformer], "vae": files["vae"], "llm": files["llm"], "clip": files["clip"],
              "tokenizers": files["folder"]} | ({"vision": files["vision"]} if vision else {})
    argv = [arg for name, path in chosen.items() for arg in (f"--{name}", str(path))]
    argv += [arg for name, value in extra.items() for arg in (f"--{name.replace('_', '-')}", str(value))]
    return [*argv, "--dtype", "fp32", "--device", "cpu"]


class Loaded(Exception):
    """A model loader was reached."""


@pytest.fixture
def no_loading(monkeypatch):
    """Every loader of the command (and the demo's model builder) raises Loaded: a check that ran after loading
    started fails the test instead of passing."""
    for module, name in LOADERS:
        def refuse(*args, _name=name, **kwargs):
            raise Loaded(_name)
        monkeypatch.setattr(module, name, refuse)


def _refused(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- renders

def test_image_renders_i2v_v1_without_its_first_4_frames(files, tmp_path, capsys):
    out = tmp_path / "v1.mp4"
    assert main([*_args(files, "i2v_v1", image=files["picture"], width=64, height=48, frames=9, steps=2),
                 "--output", str(out)]) == 0
    assert read_video_frames(out)[0].shape == (5, 48, 64, 3)  # 9 - 4: the authors drop v1's first 4 decoded frames
    assert f"loaded {files['i2v_v1']} (i2v_v1)" in capsys.readouterr().out


def test_image_renders_i2v_v2_in_the_720p_bucket_by_default(files, tmp_path, capsys, monkeypatch):
    """Without --width/--height the size is the authors' 720p bucket nearest the image; the bucket itself is
    stood in for by 64x48 here, as a real 720p decode takes minutes on a CPU."""
    asked = []

    def bucket(image, resolution, width=0, height=0):
        asked.append((tuple(image.shape), resolution))
        return 64, 48

    monkeypatch.setattr(jobs, "choose_size", bucket)
    out = tmp_path / "v2.mp4"
    assert main([*_args(files, "i2v_v2", image=files["picture"], frames=9, steps=2), "--output", str(out)]) == 0
    assert read_video_frames(out)[0].shape == (9, 48, 64, 3)
    assert asked == [((1, 48, 64, 3), "720p")]
    assert f"loaded {files['i2v_v2']} (i2v_v2)" in capsys.readouterr().out


def test_reference_renders_hunyuan_custom(files, tmp_path, capsys):
    out = tmp_path / "custom.mp4"
    assert main([*_args(files, "custom", reference=files["picture"], width=64, height=48, frames=9, steps=2,
                        subject="dog", ip_cfg_scale=2), "--output", str(out)]) == 0
    frames, _ = read_video_frames(out)
    assert frames.shape == (9, 48, 64, 3)
    assert "(custom)" in capsys.readouterr().out


def test_the_demo_renders_image_to_video_without_a_model(files, tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main(["--image", str(files["picture"]), "--frames", "5", "--steps", "1", "--output", str(out)]) == 0
    assert read_video_frames(out)[0].shape == (5, 128, 128, 3)
    assert DEMO_NOTICE in capsys.readouterr().out


# ----------------------------------------------------------------------------- refusals, before any model loads

def test_the_load_guard_sees_a_command_that_passes_the_checks(files, tmp_path, no_loading):
    """The guard is real: the same kind of command with nothing wrong reaches a loader."""
    with pytest.raises(Loaded):
        main([*_args(files, "unnamed_v2", image=files["picture"], variant="i2v_v2"), "--output",
              str(tmp_path / "x.mp4")])
    with pytest.raises(Loaded):
        main(["--reference", str(files["picture"]), "--output", str(tmp_path / "x.mp4")])


@pytest.mark.parametrize("transformer, extra, expected", [
    ("t2v", {"image": "picture"}, "--image needs an I2V v1 or v2 transformer, but hunyuan_video_t2v_720p_bf16"
                                  ".safetensors is text-to-video; an I2V v2 file whose name does not say so needs "
                                  "--variant i2v_v2"),
    ("unnamed_v2", {"image": "picture"}, "but my_model.safetensors is text-to-video; an I2V v2 file"),
    ("custom", {"image": "picture"}, "is HunyuanCustom ref2v, which takes --reference"),
    ("i2v_v2", {"reference": "picture"}, "--reference needs the HunyuanCustom transformer (e.g. hunyuan_video_custom_"
                                         "720p_fp8_scaled.safetensors), but hunyuan_video_v2_replace_image_to_video"
                                         "_720p_bf16.safetensors is image-to-video v2 (token replace), which takes "
                                         "--image"),
    ("t2v", {"reference": "picture"}, "--reference needs the HunyuanCustom transformer"),
    ("custom", {}, "--transformer: hunyuan_video_custom_720p_bf16.safetensors is HunyuanCustom ref2v: give --reference "
                   "PATH (a picture of the subject), or a text-to-video transformer"),
    ("i2v_v2", {"image": "picture", "reference": "picture"}, "--image and --reference are two jobs"),
    ("i2v_v2", {"image": "missing.png"}, "missing.png does not exist; expected a picture file (PNG, JPEG, WebP, ...)"),
    ("i2v_v2", {"image": "llm"}, "llava_llama3.safetensors is not a picture file"),
    ("i2v_v2", {"image": "folder"}, "is a folder; expected a picture file"),
    ("i2v_v1", {"image": "picture", "frames": 1}, "--frames: I2V v1 drops its first 4 frames, as the authors': give 5"),
    ("i2v_v1", {"image": "picture", "guidance": 6}, "--guidance: I2V v1 has no guidance embedding"),
    ("i2v_v2", {"image": "picture", "width": 64}, "--width and --height go together for image-to-video"),
    ("i2v_v2", {"image": "picture", "width": 64, "height": 48, "resolution": "720p"},
     "--resolution picks a size bucket"),
    ("i2v_v2", {"image": "picture", "subject": "dog"}, "--subject is for HunyuanCustom: give --reference PATH"),
    ("custom", {"reference": "picture", "mode": "dynamic"}, "--mode is for image-to-video: give --image PATH"),
    ("t2v", {"ip_cfg_scale": 2, "step_cache": "off"}, "--ip-cfg-scale, --step-cache are for HunyuanCustom"),
    ("custom", {"reference": "picture", "guidance": 6}, "--guidance: HunyuanCustom has no guidance embedding"),
    ("custom", {"reference": "picture", "cfg": 1, "ip_cfg_scale": 2}, "--ip-cfg-scale adds a third branch"),
    ("custom", {"reference": "picture", "cache": "teacache"}, "--cache teacache and HunyuanCustom's own cache at 30"),
    ("custom", {"reference": "picture", "subject": "a <image>"}, "--subject: subject must be plain words"),
    ("t2v", {"variant": "i2v_v1"}, "--variant i2v_v1: the tensor shapes of hunyuan_video_t2v_720p_bf16.safetensors "
                                   "fit t2v or i2v_v2 only"),
])
def test_a_bad_image_job_is_refused_before_loading(files, capsys, tmp_path, no_loading, transformer, extra, expected):
    where = {"picture": files["picture"], "llm": files["llm"], "folder": tmp_path,
             "missing.png": tmp_path / "missing.png"}
    extra = {name: where.get(value, value) for name, value in extra.items()}
    assert expected in _refused(capsys, [*_args(files, transformer, **extra), "--output", str(tmp_path / "x.mp4")])


def test_the_vision_tower_is_checked_before_loading(files, capsys, tmp_path, no_loading):
    out = ["--output", str(tmp_path / "x.mp4"), "--image", str(files["picture"])]
    err = _refused(capsys, [*_args(files, "i2v_v2", vision=False), *out])
    assert "--image needs --vision FILE too: the LLaVA vision tower (e.g. llava_llama3_vision.safetensors)" in err
    err = _refused(capsys, [*_args(files, "i2v_v2", vision=False), "--vision", str(files["clip"]), *out])
    assert "--vision: clip_l.safetensors holds a CLIP text encoder; expected the LLaVA vision tower" in err
    other = tmp_path / "other_vision.safetensors"
    save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(1),
               "multi_modal_projector.linear_2.weight": torch.zeros(8, 4)}, str(other))
    err = _refused(capsys, [*_args(files, "i2v_v2", vision=False), "--vision", str(other), *out])
    assert "--vision: other_vision.safetensors projects to width 8 but the --llm file is 256 wide" in err
    err = _refused(capsys, [*_args(files, "t2v", vision=True), "--output", str(tmp_path / "x.mp4")])
    assert "--vision reads the picture of --image or --reference into the prompt" in err


def test_a_diffusers_folder_is_checked_from_its_configs(files, capsys, tmp_path, no_loading):
    folder = tmp_path / "HunyuanVideo-I2V"
    for sub in ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        (folder / sub).mkdir(parents=True)
    tiny_transformer(256, 128, 16, variant="i2v_v2").save_config(folder / "transformer")
    (folder / "text_encoder" / "config.json").write_text('{"model_type": "llama"}')
    out = ["--diffusers", str(folder), "--output", str(tmp_path / "x.mp4")]
    err = _refused(capsys, out)
    assert "--diffusers: HunyuanVideo-I2V is image-to-video v2 (token replace): give --image PATH" in err
    err = _refused(capsys, [*out, "--image", str(files["picture"])])
    assert "--image: the text_encoder of" in err and "is a llama, not a LLaVA" in err
    assert "--variant custom: the transformer of HunyuanVideo-I2V is configured as image-to-video v2" in _refused(
        capsys, [*out, "--variant", "custom"])
    (folder / "text_encoder" / "config.json").write_text('{"model_type": "llava"}')
    with pytest.raises(Loaded):
        main([*out, "--image", str(files["picture"])])


def test_a_pickled_transformer_is_checked_once_loaded_before_the_rest(files, capsys, tmp_path, monkeypatch):
    """A .pt file has no header to read first: it loads, is refused as a bad option (status 2), and nothing else
    loads."""
    pickled = tmp_path / "mp_rank_00_model_states.pt"
    model = tiny_transformer(256, 128, 16, variant="t2v", seed=2)
    torch.save(diffusers_to_authors(dict(model.state_dict())), pickled)
    monkeypatch.setitem(files, "pickled", pickled)
    for module, name in LOADERS[1:]:
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} ran after the refusal"))
    assert run([*_args(files, "pickled", image=files["picture"]), "--output", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith("--image needs an I2V v1 or v2 transformer, but mp_rank_00_model_states.pt is "
                                "text-to-video; an I2V v2 file whose name does not say so needs --variant i2v_v2 "
                                "(see --help)"), err


def test_the_readme_command_refuses_a_missing_image_from_any_folder(tmp_path):
    """`bash .ci/render` checks the picture (a relative path, from where it is run) before anything loads."""
    result = subprocess.run(["bash", str(PACK_ROOT / ".ci" / "render"), "--image", "first_frame.png"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("python3 -m pipelines.render: error: --image: first_frame.png does not exist; "
                                     "expected a picture file (PNG, JPEG, WebP, ...) (see --help)")


# ----------------------------------------------------------------------------- the help's numbers are the engine's

def test_job_choices_and_defaults_match_the_engine():
    assert job_options.RESOLUTION_CHOICES == tuple(i2v.RESOLUTION_BASES)
    assert job_options.MODE_CHOICES == i2v.MODES
    assert job_options.MAX_INTERLEAVE == i2v.MAX_INTERLEAVE
    assert job_options.V1_DROPPED_FRAMES == i2v.V1_DROPPED_FRAMES
    assert job_options.CFG_BATCHING_CHOICES == custom.CFG_BATCHING
    assert job_options.CUSTOM_CACHE_STEPS == custom.CACHE_STEPS
    request, size = custom.CustomRequest(), inspect.signature(custom.prepare_custom).parameters
    assert job_options.CUSTOM_DEFAULTS == {"width": size["width"].default, "height": size["height"].default,
                                           "steps": request.steps, "cfg": request.cfg, "shift": request.flow_shift}
    request = t2v.T2VRequest()
    assert MODEL_DEFAULTS == {"width": request.width, "height": request.height, "frames": request.num_frames,
                              "steps": request.steps}
    assert set(job_options.DEMO_VARIANTS.values()) | {"i2v_v1"} == set(transformer_loading.VARIANTS)


@pytest.mark.parametrize("variant", transformer_loading.VARIANTS)
def test_a_diffusers_config_names_the_variant_the_loader_reads(tmp_path, variant):
    tiny_transformer(256, 128, 16, variant=variant).save_config(tmp_path / "transformer")
    assert job_options.folder_variant(tmp_path) == variant
