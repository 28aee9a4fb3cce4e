"""Every local node runs through its public function, on tiny checkpoints in the users' file layouts."""

import pytest
import torch
from conftest import node_function as _node
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS, host
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.video.video_io import read_video_frames
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Tiny models saved under the file names users have, in the layouts those files use."""
    root = tmp_path_factory.mktemp("models")
    encoders = tiny.tiny_text_encoders(seed=0)
    vae = tiny.tiny_vae(seed=0)
    transformer = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size,
                                   vae.config.latent_channels, seed=0)
    files = {
        "transformer": save_transformer(transformer, root / "hunyuan_video_t2v_720p_bf16.safetensors",
                                        prefix="model.diffusion_model."),
        "vae": tiny.save_vae(vae, root / "hunyuan_video_vae_bf16.safetensors", layout="authors"),
    }
    written = tiny.save_text_encoders(encoders, root, layout="comfy", fp8=True)
    files.update(written)
    encoders.llm_tokenizer.save_pretrained(root / "tokenizers" / "llama_tokenizer")
    encoders.clip_tokenizer.save_pretrained(root / "tokenizers" / "clip_tokenizer")
    files["tokenizers"] = root / "tokenizers"
    return files


@pytest.fixture(scope="module")
def loaded(model_files):
    transformer = _node("HYVS_TransformerLoader")(str(model_files["transformer"]), "auto", "fp32")[0]
    vae = _node("HYVS_VAELoader")(str(model_files["vae"]), "fp32")[0]
    encoders = _node("HYVS_TextEncoderLoader")(
        str(model_files["llm"]), str(model_files["clip"]), "fp32", str(model_files["tokenizers"])
    )[0]
    return transformer, vae, encoders


def test_t2v_chain_of_nodes_renders_a_video(loaded, tmp_path):
    transformer, vae, encoders = loaded
    assert transformer.variant == "t2v"
    positive = _node("HYVS_TextEncode")(encoders, "a lighthouse in a storm")[0]
    latent = _node("HYVS_T2VSampler")(transformer, positive, 64, 48, 9, 2, 6.0, 1.0, 7.0, 5)[0]
    assert latent["samples"].shape == (1, vae.config.latent_channels, 3, 6, 8)
    frames, video = _node("HYVS_Decode")(vae, latent, 12.0, True, 256, 64, True, 16, 4)
    assert frames.shape == (9, 48, 64, 3) and frames.dtype == torch.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    video.save_to(str(tmp_path / "clip.mp4"))
    decoded, rate = read_video_frames(tmp_path / "clip.mp4")
    assert decoded.shape == (9, 48, 64, 3) and rate == 12
    assert (decoded - frames).abs().mean() < 0.08  # H.264 is lossy, but it is the same picture


def test_negative_prompt_with_cfg_changes_the_latent(loaded):
    transformer, _, encoders = loaded
    encode = _node("HYVS_TextEncode")
    positive, negative = encode(encoders, "a lighthouse")[0], encode(encoders, "fog")[0]
    sample = _node("HYVS_T2VSampler")
    plain = sample(transformer, positive, 32, 32, 5, 2, 6.0, 1.0, 7.0, 1)[0]["samples"]
    guided = sample(transformer, positive, 32, 32, 5, 2, 6.0, 4.0, 7.0, 1, negative=negative)[0]["samples"]
    assert not torch.allclose(plain, guided)


def _cancel_at_second_update(monkeypatch, record):
    """Progress updates as `record(progress, done)` gives them; Cancel is pressed at the second one."""
    seen = []
    original = host.Progress.set

    def spy(self, done):
        seen.append(record(self, done))
        if done == 2:
            host.request_interrupt()
        original(self, done)

    monkeypatch.setattr(host.Progress, "set", spy)
    return seen


def test_sampler_reports_each_step_and_stops_on_interrupt(loaded, monkeypatch):
    transformer, _, encoders = loaded
    positive = _node("HYVS_TextEncode")(encoders, "x")[0]
    seen = _cancel_at_second_update(monkeypatch, lambda progress, done: done)
    try:
        with pytest.raises(host.Interrupted):
            _node("HYVS_T2VSampler")(transformer, positive, 32, 32, 5, 4, 6.0, 1.0, 7.0, 1)
    finally:
        host.request_interrupt(False)
    assert seen == [1, 2]
    assert next(transformer.model.parameters()).device == host.offload_device()


def test_sampler_names_bad_inputs_before_sampling(loaded):
    transformer, _, encoders = loaded
    positive = _node("HYVS_TextEncode")(encoders, "x")[0]
    with pytest.raises(ValueError, match="num_frames must be 4k\\+1"):
        _node("HYVS_T2VSampler")(transformer, positive, 32, 32, 6, 2, 6.0, 1.0, 7.0, 1)


def test_decode_reports_each_chunk_and_stops_on_interrupt(loaded, monkeypatch):
    _, vae, _ = loaded
    latent = {"samples": torch.randn(1, vae.config.latent_channels, 9, 4, 4, generator=torch.Generator().manual_seed(0))}
    seen = _cancel_at_second_update(monkeypatch, lambda progress, done: (done, progress.total))
    try:
        with pytest.raises(host.Interrupted):
            _node("HYVS_Decode")(vae, latent, 24.0, False, 256, 64, True, 8, 4)
    finally:
        host.request_interrupt(False)
    assert seen == [(1, 9), (2, 9)]  # 9 latent frames, 8-frame tiles with a 4-frame overlap: one chunk per latent frame


def test_decode_refuses_a_latent_of_another_vae(loaded):
    _, vae, _ = loaded
    wrong = {"samples": torch.zeros(1, vae.config.latent_channels + 1, 2, 4, 4)}
    with pytest.raises(ValueError, match="channels but this VAE decodes"):
        _node("HYVS_Decode")(vae, wrong, 24.0, False, 256, 64, False, 16, 4)


def test_loaders_name_the_wrong_file(model_files):
    with pytest.raises(CheckpointError, match="hunyuan_video_vae_bf16.safetensors"):
        _node("HYVS_TransformerLoader")(str(model_files["vae"]), "auto", "auto")
    with pytest.raises(ValueError, match="no model chosen"):
        _node("HYVS_TransformerLoader")("", "auto", "auto")
    with pytest.raises(ValueError, match="tokenizer_folder"):
        _node("HYVS_TextEncoderLoader")(str(model_files["llm"]), str(model_files["clip"]), "fp32", "/nonexistent")


def test_every_input_has_a_tooltip_and_every_node_a_description():
    for name, cls in NODE_CLASS_MAPPINGS.items():
        assert cls.DESCRIPTION, name
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for input_name, entry in spec.get(section, {}).items():
                assert len(entry) > 1 and entry[1].get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_bad_sizes_are_refused_when_comfyui_validates_the_prompt():
    sampler = NODE_CLASS_MAPPINGS["HYVS_T2VSampler"]
    assert sampler.VALIDATE_INPUTS(width=960, height=544, num_frames=129) is True
    assert sampler.VALIDATE_INPUTS(width=72, height=544, num_frames=129) == "width must be a positive multiple of 16, got 72"
    assert sampler.VALIDATE_INPUTS(width=960, height=544, num_frames=6).startswith("num_frames must be 4k+1")
    assert sampler.VALIDATE_INPUTS(width=4096, height=544, num_frames=129) == "width must be at most 2048, got 4096"
    assert sampler.VALIDATE_INPUTS(width=None, height=544, num_frames=129) is True  # linked: checked at run time
    decode = NODE_CLASS_MAPPINGS["HYVS_Decode"]
    assert decode.VALIDATE_INPUTS(tile_size=256, tile_overlap=64, tile_frames=16, frame_overlap=4) is True
    assert decode.VALIDATE_INPUTS(tile_size=256, tile_overlap=256, tile_frames=16, frame_overlap=4).startswith(
        "tile_overlap must be a multiple of 8 below tile_size")


def test_speed_options_node_attaches_options_and_the_sampler_reports_skipped_calls(loaded, monkeypatch):
    transformer, _, encoders = loaded
    sent = []
    monkeypatch.setattr(host, "send_progress_text",  # the time estimates of the steps are test_previews.py's
                        lambda text, node_id: None if text.startswith("sampling:") else sent.append((text, node_id)))
    fast = _node("HYVS_SpeedOptions")(transformer, "auto", "teacache", 1e3, False, unique_id="6")[0]
    assert sent.pop() == ("attention: sdpa, mask-free", "6")  # probed when the node runs: SDPA on this CPU
    assert transformer.speed.attention == "auto" and transformer.speed.cache == "off"  # the input is left alone
    assert (fast.speed.attention, fast.speed.cache, fast.speed.cache_threshold) == ("auto", "teacache", 1e3)
    assert fast.model is transformer.model and fast.variant == transformer.variant
    positive = _node("HYVS_TextEncode")(encoders, "a lighthouse in a storm")[0]
    plain = _node("HYVS_T2VSampler")(transformer, positive, 32, 32, 5, 5, 6.0, 1.0, 7.0, 3, unique_id="7")[0]
    cached = _node("HYVS_T2VSampler")(fast, positive, 32, 32, 5, 5, 6.0, 1.0, 7.0, 3, unique_id="8")[0]
    assert sent[0] == ("speed: attention sdpa, mask-free", "7")  # the default: mask-free, no cache
    assert sent[1][1] == "8" and "cache teacache 1000: 3 of 5 transformer calls skipped" in sent[1][0]
    assert not torch.allclose(plain["samples"], cached["samples"])
    preset = _node("HYVS_SpeedOptions")(transformer, "sdpa", "first_block", 0.0, False)[0]
    assert preset.speed.cache_threshold is None  # 0: the preset's published threshold
    with pytest.raises(ValueError, match="attention must be one of"):
        _node("HYVS_SpeedOptions")(transformer, "fastest", "off", 0.0, False)
    _node("HYVS_SpeedOptions")(transformer, "flash", "off", 0.0, False, unique_id="9")
    assert sent.pop()[0].startswith("attention 'flash' is not available")
