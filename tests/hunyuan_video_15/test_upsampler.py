"""HunyuanVideo 1.5's latent upsamplers: both file layouts load the same weights, the kind is read from the keys,
wrong files are refused from their header, and the forward equals the authors' formulation restated here as plain
functions over the state dict (hyvideo/models/transformers/modules/upsample.py:55-169 with the VAE's
CausalConv3d, RMS_norm and ResnetBlock), independent of the modules under test."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipelines.demo.hv15_upsampler import save_upsampler, tiny_upsampler
from pipelines.hunyuan_video_15.upsampler import load_upsampler, resize_latents, upsample, upsampler_kind
from pipelines.weights.checkpoints import CheckpointError

KINDS = ("720p", "1080p")


def _latents(seed=1, frames=3, height=6, width=10):
    return torch.randn(1, 32, frames, height, width, generator=torch.Generator().manual_seed(seed))


def _conv(sd, name, x):
    """The authors' CausalConv3d: replicate-pad W and H by 1 each side, T by 2 in front, then the convolution."""
    x = F.pad(x, (1, 1, 1, 1, 2, 0), mode="replicate")
    return F.conv3d(x, sd[f"{name}.conv.weight"], sd[f"{name}.conv.bias"])


def _rms(sd, name, x):
    return F.normalize(x, dim=1) * x.shape[1] ** 0.5 * sd[f"{name}.gamma"]


def _reference_720p(sd, x):
    y = _conv(sd, "in_conv", x)
    n = 0
    while f"blocks.{n}.block.0.conv.weight" in sd:
        h = F.silu(_conv(sd, f"blocks.{n}.block.0", y))
        h = F.silu(_conv(sd, f"blocks.{n}.block.2", h))
        y, n = y + _conv(sd, f"blocks.{n}.block.4", h), n + 1
    return _conv(sd, "out_conv", y)  # global_residual is False in ComfyUI and in the tiny folders


def _reference_1080p(sd, z):
    h = _conv(sd, "conv_in", z) + z.repeat_interleave(sd["conv_in.conv.weight"].shape[0] // z.shape[1], dim=1)
    level = 0
    while f"up.{level}.block.0.conv1.conv.weight" in sd:
        j = 0
        while f"up.{level}.block.{j}.conv1.conv.weight" in sd:
            p = f"up.{level}.block.{j}"
            r = _conv(sd, f"{p}.conv1", F.silu(_rms(sd, f"{p}.norm1", h)))
            r = _conv(sd, f"{p}.conv2", F.silu(_rms(sd, f"{p}.norm2", r)))
            if f"{p}.nin_shortcut.weight" in sd:
                h = F.conv3d(h, sd[f"{p}.nin_shortcut.weight"], sd[f"{p}.nin_shortcut.bias"])
            h, j = h + r, j + 1
        level += 1
    return _conv(sd, "conv_out", F.silu(_rms(sd, "norm_out", h)))


@pytest.mark.parametrize("kind", KINDS)
def test_both_layouts_load_the_same_weights_and_give_the_authors_output(kind, tmp_path):
    model = tiny_upsampler(kind)
    single = load_upsampler(save_upsampler(model, tmp_path / f"hunyuanvideo15_latent_upsampler_{kind}.safetensors"))
    folder = load_upsampler(save_upsampler(model, tmp_path / "upsampler" / f"{kind}_sr_distilled", layout="folder"))
    expected = model.state_dict()
    for loaded in (single, folder):
        assert loaded.kind == kind and not loaded.training
        assert all(p.dtype == torch.float32 for p in loaded.parameters())
        assert loaded.state_dict().keys() == expected.keys()
        assert all(torch.equal(loaded.state_dict()[k], expected[k]) for k in expected)
    x = _latents()
    reference = (_reference_720p if kind == "720p" else _reference_1080p)(expected, x)
    out = upsample(single, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(upsample(folder, x), out)


def test_upsample_runs_in_fp32_and_returns_the_input_dtype(tmp_path):
    model = load_upsampler(save_upsampler(tiny_upsampler("1080p"), tmp_path / "up.safetensors"))
    x = _latents().to(torch.bfloat16)
    out = upsample(model, x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, _reference_1080p(model.state_dict(), x.float()).to(torch.bfloat16))


def test_resize_latents_is_the_authors_per_frame_bilinear_resize():
    x = _latents(frames=2, height=5, width=8)
    out = resize_latents(x, (10, 15))
    assert out.shape == (1, 32, 2, 10, 15)
    for t in range(2):
        torch.testing.assert_close(out[:, :, t], F.interpolate(x[:, :, t], size=(10, 15), mode="bilinear",
                                                               align_corners=False))


def test_the_kind_is_told_by_the_keys():
    assert upsampler_kind(tiny_upsampler("720p").state_dict()) == "720p"
    assert upsampler_kind(tiny_upsampler("1080p").state_dict()) == "1080p"
    assert upsampler_kind({"encoder.conv_in.conv.weight": None}) is None


def test_a_folder_config_naming_the_other_class_is_refused(tmp_path):
    folder = save_upsampler(tiny_upsampler("720p"), tmp_path / "720p_sr_distilled", layout="folder")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "_class_name": "SRTo1080pUpsampler"}))
    with pytest.raises(CheckpointError, match="SRTo1080pUpsampler"):
        load_upsampler(folder)


def test_a_wrong_file_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "hunyuanvideo15_vae_fp16.safetensors"
    save_file({"decoder.mid.block_1.norm1.gamma": torch.ones(4, 1, 1, 1),
               "decoder.up.0.block.0.conv1.conv.weight": torch.zeros(2, 2, 3, 3, 3)}, str(path))
    monkeypatch.setattr("pipelines.hunyuan_video_15.upsampler.load_state_dict",
                        lambda *a, **k: pytest.fail("weights were read"))
    with pytest.raises(CheckpointError, match=r"hunyuanvideo15_vae_fp16\.safetensors.*HunyuanVideo 1\.5 VAE"):
        load_upsampler(path)


def test_an_incomplete_upsampler_is_refused(tmp_path):
    state = tiny_upsampler("1080p").state_dict()
    path = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in state.items() if k != "norm_out.gamma"}, str(path))
    with pytest.raises(CheckpointError, match=r"cut\.safetensors.*norm_out\.gamma"):
        load_upsampler(path)
