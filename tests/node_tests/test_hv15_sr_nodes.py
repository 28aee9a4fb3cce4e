"""HunyuanVideo 1.5's super-resolution stage as ComfyUI runs it, on tiny files: the latent upsampler loader lists and
loads ComfyUI's single files and the authors' folder from `latent_upscale_models` (registered on a ComfyUI that
predates it); the SR node lifts a base sampler's LATENT to the authors' bucket at the SR resolution with the SR
variant's recipe (T2V, and I2V with the first frame encoded again), which HV1.5 Decode decodes; refusals name
the input at fault, before sampling; the widgets are as the shipped workflows expect them."""

import os

import numpy as np
import pytest
import torch
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from hunyuan_video_suite.nodes.hunyuan_video_15 import loaders, sampler, super_resolution, text, vae, vision
from hunyuan_video_suite.nodes.types import HV15_EMBEDS, HV15_TRANSFORMER, HV15_UPSAMPLER, HV15_VAE, HV15_VISION
from hunyuan_video_suite.pipelines.demo.hv15_text import (
    save_siglip,
    save_text_encoders15,
    tiny_siglip,
    tiny_text_encoders15,
)
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_upsampler import save_upsampler, tiny_upsampler
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15
from hunyuan_video_suite.pipelines.hunyuan_video_15.sampling import MAX_SEED

UPSAMPLERS = {"hunyuanvideo15_latent_upsampler_720p.safetensors": ("720p", "comfy"),
              "hunyuanvideo15_latent_upsampler_1080p.safetensors": ("1080p", "comfy"),
              "upsampler/720p_sr_distilled": ("720p", "folder")}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hv15_sr")
    encoders, siglip = tiny_text_encoders15(), tiny_siglip()
    dims = dict(text_dim=encoders.qwen.config.hidden_size, byt5_dim=encoders.byt5.config.d_model,
                image_dim=siglip.config.hidden_size)
    paths = save_text_encoders15(encoders, root / "text_encoders")
    paths["base"] = save_transformer15(tiny_transformer15(**dims, seed=1),
                                       root / "hunyuanvideo1.5_480p_t2v_cfg_distilled_fp16.safetensors")
    paths["sr"] = save_transformer15(tiny_transformer15(**dims, seed=3, sr=True),
                                     root / "hunyuanvideo1.5_720p_sr_distilled_fp16.safetensors")
    paths["vae"] = save_vae15(tiny_vae15(), root / "hunyuanvideo15_vae_fp16.safetensors")
    paths["siglip"] = save_siglip(siglip, root / "sigclip_vision_patch14_384.safetensors")
    models = root / "models"
    for name, (kind, layout) in UPSAMPLERS.items():
        save_upsampler(tiny_upsampler(kind, seed=4), models / "latent_upscale_models" / name, layout=layout)
    (models / "diffusion_models").mkdir()
    paths["models"] = models
    return paths


@pytest.fixture(scope="module")
def shared(files):
    encoders = text.HYVSHV15TextEncoderLoader().load(str(files["qwen"]), str(files["byt5"]), "folder", "fp32",
                                                      str(files["folder"]))[0]
    positive, negative = text.HYVSHV15TextEncode().encode(encoders, "a cat walks on the grass", "")
    load = loaders.HYVSHV15TransformerLoader().load
    base, sr = load(str(files["base"]), "auto", "auto")[0], load(str(files["sr"]), "auto", "auto")[0]
    base_latent = sampler.HYVSHV15Sampler().sample(base, positive, negative, "16:9", 848, 480, 1, 1, 0.0, 0.0, 1,
                                                   "auto")[0]
    upsampler = super_resolution.HYVSHV15UpsamplerLoader().load(
        str(files["models"] / "latent_upscale_models" / "hunyuanvideo15_latent_upsampler_720p.safetensors"))[0]
    return dict(positive=positive, negative=negative, base=base, sr=sr, latent=base_latent, upsampler=upsampler,
                vae=vae.HYVSHV15VAELoader().load(str(files["vae"]), "auto")[0])


class OldComfyFolders:
    """ComfyUI 0.3.64's `folder_paths` as far as the host calls it: no `latent_upscale_models` yet."""

    supported_pt_extensions = {".ckpt", ".pt", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

    def __init__(self, models_dir):
        self.models_dir = str(models_dir)
        self.folder_names_and_paths = {"diffusion_models": ([os.path.join(self.models_dir, "diffusion_models")],
                                                            self.supported_pt_extensions)}

    def get_folder_paths(self, folder):
        return self.folder_names_and_paths[folder][0][:]

    def get_filename_list(self, folder):
        roots, extensions = self.folder_names_and_paths[folder]
        return sorted(os.path.relpath(os.path.join(path, name), root).replace(os.sep, "/")
                      for root in roots for path, _, names in os.walk(root) for name in names
                      if os.path.splitext(name)[1].lower() in extensions)

    def get_full_path(self, folder, name):
        for root in self.folder_names_and_paths.get(folder, ([], None))[0]:
            if os.path.isfile(os.path.join(root, name)):
                return os.path.join(root, name)
        return None


def _upscale(shared, **changes):
    inputs = dict(transformer=shared["sr"], upsampler=shared["upsampler"], positive=shared["positive"],
                  latent=shared["latent"], noise_augmentation=0.7, steps=1, flow_shift=0.0, seed=5)
    return super_resolution.HYVSHV15SuperResolution().upscale(**{**inputs, **changes})[0]["samples"]


def test_the_loader_lists_and_loads_both_layouts_on_a_comfyui_without_the_folder(files, monkeypatch):
    old = OldComfyFolders(files["models"])
    monkeypatch.setattr(host, "_folder_paths", old)
    choices = super_resolution.HYVSHV15UpsamplerLoader.INPUT_TYPES()["required"]["upsampler"][0]
    assert sorted(choices) == sorted(UPSAMPLERS)  # the authors' folder as one entry, not the files inside it
    assert old.folder_names_and_paths["latent_upscale_models"][0] == [str(files["models"] / "latent_upscale_models")]
    for name, (kind, _) in UPSAMPLERS.items():
        loaded = super_resolution.HYVSHV15UpsamplerLoader().load(name)[0]
        assert loaded.kind == kind and next(loaded.parameters()).dtype == torch.float32
        assert next(loaded.parameters()).device.type == "cpu"
    elsewhere = files["models"].parent / "elsewhere"  # a newer ComfyUI's (or extra_model_paths') folder stays
    old.folder_names_and_paths["latent_upscale_models"] = ([str(elsewhere)], old.supported_pt_extensions)
    assert super_resolution.HYVSHV15UpsamplerLoader.INPUT_TYPES()["required"]["upsampler"][0] == []
    assert old.folder_names_and_paths["latent_upscale_models"][0] == [str(elsewhere)]


def test_t2v_super_resolution_through_the_nodes(shared):
    assert shared["latent"]["samples"].shape == (1, 32, 1, 480 // 16, 848 // 16)
    calls = []
    hook = shared["sr"].model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append(kwargs["hidden_states"][:, 97].mean().item()), with_kwargs=True)
    try:
        latents = _upscale(shared, steps=0)
    finally:
        hook.remove()
    assert latents.shape == (1, 32, 1, 720 // 16, 1280 // 16)  # 848x480 -> 1280x720, the authors' bucket map
    assert latents.device.type == "cpu" and torch.isfinite(latents).all()
    # steps 0: the 720p SR recipe's 6 steps, one call each (CFG 1); the LQ latent's ones channel is zeroed from
    # the first step below t = 1000 x 0.7.
    assert len(calls) == 6 and calls[0] == 1.0 and calls[-1] == 0.0
    once = _upscale(shared)
    assert torch.equal(once, _upscale(shared)) and not torch.equal(once, _upscale(shared, seed=6))  # seed -> video
    # HV1.5 Decode takes the LATENT as it comes (a corner of it: the tiny VAE needs 20 s for the whole 1280x720).
    corner = {"samples": latents[..., :3, :4]}
    frames, video = vae.HYVSHV15Decode().decode(shared["vae"], corner, 24.0, True, 256, 32, True, 16)
    assert frames.shape == (1, 48, 64, 3) and video is not None


def test_i2v_super_resolution_encodes_the_first_frame_at_the_output_size(files, shared):
    siglip = vision.HYVSHV15VisionLoader().load(str(files["siglip"]), "fp32")[0]
    picture = torch.tensor(np.random.default_rng(0).random((1, 54, 96, 3)), dtype=torch.float32)
    seen = {}

    def record(module, args, kwargs):
        seen["input"], seen["image"] = kwargs["hidden_states"], kwargs["image_embeds"]

    hook = shared["sr"].model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        latents = _upscale(shared, image=picture, vae=shared["vae"], vision=siglip)
    finally:
        hook.remove()
    assert latents.shape == (1, 32, 1, 720 // 16, 1280 // 16)
    first_frame, mask = seen["input"][:, 32:64], seen["input"][:, 64]
    assert first_frame.shape[-2:] == (45, 80) and first_frame.abs().sum() > 0 and bool((mask == 1).all())
    assert seen["image"].abs().sum() > 0  # SigLIP tokens, not T2V's zeros
    for missing, kwargs in (("vae", dict(vision=siglip)), ("vision", dict(vae=shared["vae"])),
                            ("vae and vision", {})):
        with pytest.raises(ValueError, match=f"image needs {missing} too"):
            _upscale(shared, image=picture, **kwargs)


def test_wrong_models_are_refused_naming_the_input(files, shared):
    with pytest.raises(ValueError, match="the transformer is HunyuanVideo 1.5 480p text-to-video.*super-resolution"):
        _upscale(shared, transformer=shared["base"])
    large = super_resolution.HYVSHV15UpsamplerLoader().load(
        str(files["models"] / "latent_upscale_models" / "hunyuanvideo15_latent_upsampler_1080p.safetensors"))[0]
    with pytest.raises(ValueError, match="the upsampler is the 1080p one.*hunyuanvideo15_latent_upsampler_720p"):
        _upscale(shared, upsampler=large)
    with pytest.raises(ValueError, match="latent must be a HunyuanVideo 1.5 video latent"):
        _upscale(shared, latent={"samples": torch.zeros(1, 16, 1, 30, 53)})
    with pytest.raises(ValueError, match="the transformer is the HunyuanVideo 1.5 480p -> 720p super-resolution DiT"):
        sampler.HYVSHV15Sampler().sample(shared["sr"], shared["positive"], shared["negative"], "16:9", 848, 480, 1,
                                         1, 0.0, 0.0, 1, "auto")


def test_the_nodes_are_registered_with_the_workflows_inputs():
    loader, node = NODE_CLASS_MAPPINGS["HYVS_HV15UpsamplerLoader"], NODE_CLASS_MAPPINGS["HYVS_HV15SuperResolution"]
    assert NODE_DISPLAY_NAME_MAPPINGS["HYVS_HV15UpsamplerLoader"] == "HunyuanVideo Suite: HV1.5 Latent Upsampler Loader"
    assert NODE_DISPLAY_NAME_MAPPINGS["HYVS_HV15SuperResolution"] == "HunyuanVideo Suite: HV1.5 Super-Resolution"
    for cls in (loader, node):
        assert cls.CATEGORY == "HunyuanVideo Suite/HunyuanVideo 1.5"
    assert loader.RETURN_TYPES == (HV15_UPSAMPLER,) and loader.RETURN_NAMES == ("upsampler",)
    assert HV15_UPSAMPLER == "HYVS_HV15_UPSAMPLER" and list(loader.INPUT_TYPES()["required"]) == ["upsampler"]
    assert node.RETURN_TYPES == ("LATENT",) and node.RETURN_NAMES == ("latent",)
    spec = node.INPUT_TYPES()
    required = spec["required"]
    assert [(name, value[0]) for name, value in required.items()][:4] == [
        ("transformer", HV15_TRANSFORMER), ("upsampler", HV15_UPSAMPLER), ("positive", HV15_EMBEDS),
        ("latent", "LATENT")]
    widgets = {name: {k: v for k, v in entry[1].items() if k != "tooltip"} for name, entry in list(required.items())[4:]}
    assert widgets == {
        "noise_augmentation": {"default": 0.7, "min": 0.0, "max": 1.0, "step": 0.01},
        "steps": {"default": 0, "min": 0, "max": 100},
        "flow_shift": {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1},
        "seed": {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True},
    }
    assert [(name, value[0]) for name, value in spec["optional"].items()] == [
        ("image", "IMAGE"), ("vae", HV15_VAE), ("vision", HV15_VISION)]
    assert spec["hidden"] == {"unique_id": "UNIQUE_ID"}
    assert all(value[1]["tooltip"] for part in ("required", "optional") for value in spec[part].values())


def test_widgets_are_checked_when_queued():
    check = super_resolution.HYVSHV15SuperResolution.VALIDATE_INPUTS
    assert check(noise_augmentation=0.7, steps=0, flow_shift=0.0) is True
    assert check(noise_augmentation=None, steps=0, flow_shift=0.0) is True  # linked: checked when it runs
    assert "noise_augmentation must be at most 1" in check(noise_augmentation=1.5, steps=0, flow_shift=0.0)
    assert "steps must be at least 0" in check(noise_augmentation=0.7, steps=-1, flow_shift=0.0)
    assert "flow_shift must be at most 100" in check(noise_augmentation=0.7, steps=0, flow_shift=101.0)
