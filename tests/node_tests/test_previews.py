"""Live previews and time estimates: with a fake ComfyUI `latent_preview` and `ProgressBar` in the host, every local
sampler node sends one preview per step, drawn with its family's latent format; outside ComfyUI nothing changes."""

import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import node_function as _node
from hunyuan_video_suite.nodes import host, previews
from hunyuan_video_suite.nodes.hunyuan_video_13b import t2v as t2v_nodes
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.custom_prompt import CUSTOM_NEGATIVE_PROMPT
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the fixtures of the sampler tests beside this file
from test_hv15_sr_nodes import files, shared  # noqa: E402,F401  # isort: skip  (1.5 base, SR DiT, upsampler, prompt)
from test_i2v_nodes import loaded, model_files  # noqa: E402,F401  # isort: skip  (13B encoders, VAE, I2V models)


class FakeBar:
    """comfy.utils.ProgressBar as the host calls it; records every update."""

    updates = []

    def __init__(self, total, node_id=None):
        self.total, self.node_id = total, node_id

    def update_absolute(self, value, total=None, preview=None):
        FakeBar.updates.append((self.node_id, value, total, preview))


class Latent2RGB:
    """latent_preview.Latent2RGBPreviewer of ComfyUI 0.3.64: the first frame of the first batch row."""

    def __init__(self, factors, bias):
        self.factors, self.bias = torch.tensor(factors).T, torch.tensor(bias)

    def decode_latent_to_preview_image(self, preview_format, x0):
        rgb = torch.nn.functional.linear(x0[0, :, 0].movedim(0, -1), self.factors, self.bias)
        pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).to(torch.uint8)
        return "JPEG", Image.fromarray(pixels.numpy()), 512


class FakeLatentPreview:
    def __init__(self, method):
        self.method, self.formats = method, []

    def get_previewer(self, device, latent_format):
        self.formats.append(latent_format)
        if self.method == "none":  # --preview-method none
            return None
        return Latent2RGB(latent_format.latent_rgb_factors, latent_format.latent_rgb_factors_bias)


@pytest.fixture
def comfy(monkeypatch):
    """A ComfyUI with previews by latent2rgb (`comfy.method = "none"` turns them off); a clock 2 s a tick."""
    FakeBar.updates = []
    fake = FakeLatentPreview("latent2rgb")
    texts = []
    monkeypatch.setattr(host, "_comfy_utils", SimpleNamespace(ProgressBar=FakeBar))
    monkeypatch.setattr(host, "_latent_preview", fake)
    monkeypatch.setattr(host, "send_progress_text", lambda text, node_id: texts.append((text, node_id)))
    monkeypatch.setattr(previews, "clock", itertools.count(0.0, 2.0).__next__)
    fake.texts = texts
    return fake


def _previews(node_id):
    return [(value, total, preview) for node, value, total, preview in FakeBar.updates if node == node_id]


@pytest.fixture(scope="module")
def widths():
    encoders = tiny.tiny_text_encoders(seed=0, llava=True)  # as test_i2v_nodes' files
    return encoders.llm.config.hidden_size, encoders.clip.config.hidden_size


@pytest.fixture(scope="module")
def t2v_transformer(widths, tmp_path_factory):
    root = tmp_path_factory.mktemp("t2v_preview")
    model = tiny_transformer(*widths, 16, seed=0)
    path = save_transformer(model, root / "hunyuan_video_t2v_720p_bf16.safetensors", prefix="model.diffusion_model.")
    return _node("HYVS_TransformerLoader")(str(path), "auto", "fp32")[0]


@pytest.fixture(scope="module")
def custom_transformer(widths, tmp_path_factory):
    root = tmp_path_factory.mktemp("custom_preview")
    model = tiny_transformer(*widths, 16, variant="custom", seed=0)
    path = save_transformer(model, root / "hunyuan_video_custom_720p_bf16.safetensors", prefix="model.diffusion_model.")
    return _node("HYVS_TransformerLoader")(str(path), "auto", "fp32")[0]


def _t2v(transformer, encoders, frames=5, steps=3, node_id="1"):
    positive = _node("HYVS_TextEncode")(encoders, "a lighthouse in a storm")[0]
    return _node("HYVS_T2VSampler")(transformer, positive, 64, 48, frames, steps, 6.0, 1.0, 7.0, 5, unique_id=node_id)[0]


def test_13b_samplers_send_one_latent2rgb_preview_a_step(loaded, model_files, t2v_transformer, custom_transformer,  # noqa: F811
                                                        comfy):
    _, encoders, vae = loaded
    _t2v(t2v_transformer, encoders, steps=3, node_id="t2v")
    picture = torch.rand(1, 90, 160, 3, generator=torch.Generator().manual_seed(0))
    i2v = _node("HYVS_TransformerLoader")(str(model_files["i2v_v2"]), "auto", "fp32")[0]
    conditioning = _node("HYVS_I2VConditioning")(picture, vae, encoders, "a cat walks", "bad", "v2 (token replace)",
                                                 "custom", 64, 32, 0)[0]
    _node("HYVS_I2VSampler")(i2v, conditioning, 5, 2, "stability", 0.0, 6.0, 1.0, 3, unique_id="i2v")
    custom = _node("HYVS_CustomConditioning")(encoders, vae, picture, "a cat walks", CUSTOM_NEGATIVE_PROMPT, "cat",
                                              64, 48)[0]
    _node("HYVS_CustomSampler")(custom_transformer, custom, 5, 2, 7.5, 13.0, 0.0, True, "auto", 3, unique_id="custom")
    for node_id, steps, size in (("t2v", 3, (8, 6)), ("i2v", 2, (8, 4)), ("custom", 2, (8, 6))):
        sent = _previews(node_id)
        assert [(value, total) for value, total, _ in sent] == [(step, steps) for step in range(1, steps + 1)]
        assert all(kind == "JPEG" and image.size == size for _, _, (kind, image, _) in sent), node_id
    assert len(comfy.formats) == 3
    assert all(f.latent_rgb_factors == [list(r) for r in previews.HV13_FORMAT.rgb_factors] for f in comfy.formats)
    assert all(len(f.latent_rgb_factors) == 16 and f.taesd_decoder_name is None for f in comfy.formats)  # no TAEHV here


def test_the_preview_is_the_predicted_clean_latent(loaded, t2v_transformer, comfy, monkeypatch):  # noqa: F811
    seen = []
    original = previews.preview_image
    monkeypatch.setattr(previews, "preview_image", lambda previewer, x0, mode: seen.append(x0) or original(
        previewer, x0, mode))
    latent = _t2v(t2v_transformer, loaded[1], steps=3)
    assert len(seen) == 3
    # the last Euler step goes to sigma 0, so its x0 = x_t - sigma_t * v is the result (in the model's scaled space)
    torch.testing.assert_close(seen[-1], latent["samples"] * previews.HV13_FORMAT.scale_factor, rtol=1e-5, atol=1e-5)


def test_strip_mode_puts_first_middle_and_last_frames_side_by_side(loaded, t2v_transformer, comfy):  # noqa: F811
    strip = _node("HYVS_PreviewOptions")(t2v_transformer, previews.STRIP)[0]
    assert strip.preview == previews.STRIP and t2v_transformer.preview == previews.FIRST_FRAME
    _t2v(strip, loaded[1], frames=9, steps=2, node_id="strip")
    sent = _previews("strip")
    assert len(sent) == 2 and all(image.size == (3 * 8, 6) for _, _, (_, image, _) in sent)
    _, _, (_, image, max_size) = sent[-1]
    assert max_size == 3 * 512


def test_previews_off_send_none_and_compute_no_clean_latent(loaded, t2v_transformer, comfy, monkeypatch):  # noqa: F811
    comfy.method = "none"
    given = []
    original = t2v_nodes.generate_t2v
    monkeypatch.setattr(t2v_nodes, "generate_t2v", lambda *a, **k: given.append(k["on_preview"]) or original(*a, **k))
    _t2v(t2v_transformer, loaded[1], steps=2, node_id="off")
    assert given == [None]  # the sampler is given no preview callback: it computes no x0
    assert [preview for _, _, preview in _previews("off")] == [None, None]


def test_outside_comfyui_nothing_changes(loaded, t2v_transformer, monkeypatch):  # noqa: F811
    assert host._latent_preview is None and host.latent_previewer(previews.latent_format("hunyuan_video_13b")) is None
    calls = []
    original = host.Progress.set
    monkeypatch.setattr(host.Progress, "set", lambda self, done, **kw: calls.append(kw) or original(self, done, **kw))
    given = []
    generate = t2v_nodes.generate_t2v
    monkeypatch.setattr(t2v_nodes, "generate_t2v", lambda *a, **k: given.append(k["on_preview"]) or generate(*a, **k))
    _t2v(t2v_transformer, loaded[1], steps=2)
    assert given == [None] and calls == [{}, {}]


def test_the_progress_text_gives_s_per_step_and_time_left_after_the_first_step(loaded, t2v_transformer, comfy):  # noqa: F811
    _t2v(t2v_transformer, loaded[1], steps=4, node_id="eta")
    texts = [text for text, node_id in comfy.texts if node_id == "eta" and text.startswith("sampling")]
    assert texts == ["sampling: step 2/4, 2.00 s/step, 4s left", "sampling: step 3/4, 2.00 s/step, 2s left",
                     "sampling: 4/4 steps, 2.00 s/step, done"]


def test_decode_reports_its_time_left():
    timer = previews.StepTimer(40, "decoding", "tile")
    ticks = iter([0.0, 3.0, 4.5, 6.0])
    original, previews.clock = previews.clock, ticks.__next__
    try:
        assert [timer.tick(done) for done in (1, 3, 4, 40)] == [
            None, "decoding: tile 3/40, 1.50 s/tile, 56s left", "decoding: tile 4/40, 1.50 s/tile, 54s left",
            "decoding: 40/40 tiles, 0.15 s/tile, done"]
    finally:
        previews.clock = original
    assert previews.duration(3725) == "1h02m" and previews.duration(61) == "1m01s"


def test_hv15_sampler_and_super_resolution_preview_with_the_1_5_format(shared, comfy):  # noqa: F811
    from hunyuan_video_suite.nodes.hunyuan_video_15 import sampler, super_resolution

    sampler.HYVSHV15Sampler().sample(shared["base"], shared["positive"], shared["negative"], "custom", 64, 48, 5, 2,
                                     0.0, 0.0, 1, "auto", unique_id="hv15")
    super_resolution.HYVSHV15SuperResolution().upscale(shared["sr"], shared["upsampler"], shared["positive"],
                                                       shared["latent"], 0.7, 2, 0.0, 5, unique_id="sr")
    base, sr = _previews("hv15"), _previews("sr")
    assert [v for v, _, _ in base] == [1, 2] and all(p[1].size == (4, 3) for _, _, p in base)
    assert [v for v, _, _ in sr] == [1, 2] and all(p[1].size == (1280 // 16, 720 // 16) for _, _, p in sr)
    assert all(len(f.latent_rgb_factors) == 32 for f in comfy.formats)
    assert comfy.formats[0].latent_rgb_factors[0] == [0.0568, -0.0521, -0.0131]  # ComfyUI's HunyuanVideo15 factors
    assert any(text.startswith("super-resolution: ") for text, node_id in comfy.texts if node_id == "sr")
