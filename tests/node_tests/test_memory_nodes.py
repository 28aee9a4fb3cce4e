"""Memory choices through the nodes: fp8 weight storage, the Memory Options node, the prompt cache,
and the planner's refusal before sampling (with a simulated small GPU)."""

import pytest
import torch
from conftest import node_function as _node
from hunyuan_video_suite.nodes import NODE_CLASS_MAPPINGS
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.memory import sampling_memory
from hunyuan_video_suite.pipelines.memory.vram_planner import DoesNotFit, GiB
from hunyuan_video_suite.pipelines.prompt_cache import PROMPTS
from hunyuan_video_suite.pipelines.weights.fp8_linear import ScaledFp8Linear


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    encoders = tiny.tiny_text_encoders(seed=0)
    vae = tiny.tiny_vae(seed=0)
    model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size,
                             vae.config.latent_channels, seed=0)
    path = save_transformer(model, root / "hunyuan_video_t2v_720p_bf16.safetensors")
    return path, encoders


def test_loader_offers_fp8_storage_and_memory_options_attach_without_copying(parts):
    path, encoders = parts
    choices = NODE_CLASS_MAPPINGS["HYVS_TransformerLoader"].INPUT_TYPES()["required"]["weight_dtype"][0]
    assert choices == ["auto", "bf16", "fp16", "fp32", "fp8_e4m3fn"]
    transformer = _node("HYVS_TransformerLoader")(str(path), "auto", "fp8_e4m3fn")[0]
    assert any(isinstance(m, ScaledFp8Linear) for m in transformer.model.modules())
    assert transformer.memory.offload == "auto"  # default: the planner decides
    fixed = _node("HYVS_MemoryOptions")(transformer, "resident blocks", 1, "auto")[0]
    assert fixed.memory.offload == 1 and fixed.memory.fp8_compute == "auto"
    assert fixed.model is transformer.model and transformer.memory.offload == "auto"
    with pytest.raises(ValueError, match="offload must be one of auto, off, resident blocks"):
        _node("HYVS_MemoryOptions")(transformer, "some", 1, "off")
    positive = _node("HYVS_TextEncode")(encoders, "a red car")[0]
    latent = _node("HYVS_T2VSampler")(fixed, positive, 32, 32, 5, 2, 6.0, 1.0, 7.0, 1)[0]
    assert torch.isfinite(latent["samples"]).all()
    assert not fixed.model.transformer_blocks[0].norm1.linear.fp8_compute  # switched off again after sampling


def test_same_prompt_is_encoded_once_while_encoders_are_unchanged(parts, monkeypatch):
    _, encoders = parts
    PROMPTS.clear()
    calls = []
    forward = encoders.llm.forward
    monkeypatch.setattr(encoders.llm, "forward", lambda *a, **k: (calls.append(1), forward(*a, **k))[1])
    first = _node("HYVS_TextEncode")(encoders, "a cat on the beach")[0]
    again = _node("HYVS_TextEncode")(encoders, "a cat on the beach")[0]
    other = _node("HYVS_TextEncode")(encoders, "a dog in the city")[0]
    assert len(calls) == 2 and again is first
    assert not torch.equal(first.prompt_embeds, other.prompt_embeds)


def test_a_request_that_cannot_fit_is_refused_before_sampling(parts, monkeypatch):
    path, encoders = parts
    transformer = _node("HYVS_TransformerLoader")(str(path), "auto", "bf16")[0]
    positive = _node("HYVS_TextEncode")(encoders, "x")[0]
    monkeypatch.setattr(sampling_memory, "free_bytes", lambda device: int(1.0 * GiB))  # a tiny GPU, simulated
    steps = []
    node = NODE_CLASS_MAPPINGS["HYVS_T2VSampler"]()
    monkeypatch.setattr("hunyuan_video_suite.nodes.host.Progress.set", lambda self, done: steps.append(done))
    with pytest.raises(DoesNotFit, match=r"needs about \d+\.\d GB .* only 1\.0 GB is free"):
        node.sample(transformer, positive, 1280, 720, 129, 2, 6.0, 1.0, 7.0, 1)
    assert steps == []  # refused before the first step


def test_cli_exposes_the_same_choices(capsys):
    from hunyuan_video_suite.pipelines.cli import options as render_options
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import WEIGHT_DTYPES
    from hunyuan_video_suite.pipelines.memory.offload import parse_offload

    parser = render_options.build_parser("render", "")
    args = parser.parse_args(["--offload", "12", "--weight-dtype", "fp8_e4m3fn", "--fp8-matmul", "auto"])
    assert (args.offload, args.weight_dtype, args.fp8_matmul) == (12, "fp8_e4m3fn", "auto")
    assert parser.parse_args([]).offload == "auto"
    assert render_options.WEIGHT_DTYPE_CHOICES == WEIGHT_DTYPES
    for text in ("auto", "off", "0", "12", " Auto "):
        assert render_options._offload(text) == parse_offload(text)
    with pytest.raises(SystemExit):
        parser.parse_args(["--offload", "half"])
    assert "--offload" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a storage choice means nothing for the built-in demo model
        render_options.check_options(parser, parser.parse_args(["--weight-dtype", "fp8_e4m3fn"]))
    assert "--weight-dtype needs --transformer" in capsys.readouterr().err
