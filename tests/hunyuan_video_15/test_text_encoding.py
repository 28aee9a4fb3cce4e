"""HunyuanVideo 1.5 text encoding: the tiny Qwen2.5-VL + byT5 encoders load from every layout users keep them in
(ComfyUI's files in bf16/fp16, fp8-scaled kept fp8, a diffusers folder) to the same weights; wrong files are
refused from their header; the positive prompt encodes exactly as diffusers' `HunyuanVideo15Pipeline`
(with crop_start computed as the authors do, where diffusers hard-codes 108), and the negative differs from
diffusers' only in byT5, which the authors leave empty."""

import pytest
import torch
from diffusers import HunyuanVideo15Pipeline
from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import extract_glyph_texts
from hunyuan_video_suite.pipelines.demo.hv15_text import (
    comfy_qwen_state,
    save_text_encoders15,
    tiny_byt5,
    tiny_text_encoders15,
)
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15
from hunyuan_video_suite.pipelines.demo.tiny import save_text_encoders, tiny_text_encoders
from hunyuan_video_suite.pipelines.hunyuan_video_15 import text_encoder_loading as loading
from hunyuan_video_suite.pipelines.hunyuan_video_15.prompt_encoding import (
    SYSTEM_PROMPT,
    chat,
    encode_glyphs,
    encode_pair,
    glyph_prompt,
    glyph_texts,
    video_crop_start,
)
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from hunyuan_video_suite.pipelines.weights.fp8_linear import ScaledFp8Linear
from safetensors.torch import save_file

PROMPT = 'A neon sign that reads "OPEN", a poster saying “SALE” and again "OPEN".'
NEGATIVE = 'blurry, the word "WATERMARK"'


@pytest.fixture(scope="module")
def encoders():
    return tiny_text_encoders15(seed=0)


@pytest.fixture(scope="module")
def pipe(encoders):
    pipe = HunyuanVideo15Pipeline(text_encoder=encoders.qwen, tokenizer=encoders.qwen_tokenizer, transformer=None,
                                  vae=tiny_vae15(), scheduler=None, text_encoder_2=encoders.byt5,
                                  tokenizer_2=encoders.byt5_tokenizer, guider=None)
    pipe.prompt_template_encode_start_idx = encoders.crop_start  # diffusers' 108 is the real tokenizer's
    return pipe


@pytest.fixture(scope="module")
def pair(encoders):
    return encode_pair(encoders, PROMPT, NEGATIVE)


@pytest.fixture(scope="module")
def files(encoders, tmp_path_factory):
    root = tmp_path_factory.mktemp("hv15_text")
    out = {name: save_text_encoders15(encoders, root / name, dtype=dtype, fp8=fp8)
           for name, dtype, fp8 in (("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
                                    ("fp8", torch.bfloat16, True))}
    out["diffusers"] = save_text_encoders15(encoders, root / "diffusers", layout="diffusers")["folder"]
    return out


def diffusers_embeds(pipe, prompt):
    return pipe.encode_prompt(prompt, device="cpu", dtype=torch.float32)


def assert_close(ours, theirs):
    for mine, reference in zip((ours.qwen, ours.qwen_mask, ours.byt5, ours.byt5_mask), theirs):
        assert mine.shape == reference.shape
        assert torch.allclose(mine.float(), reference.float(), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- the authors' formulation

def test_system_prompt_is_the_authors_byte_for_byte():
    default = HunyuanVideo15Pipeline._get_mllm_prompt_embeds.__defaults__
    assert SYSTEM_PROMPT in default  # diffusers' restatement of the authors' string
    assert SYSTEM_PROMPT.count(" " * 9) == 5 and "\n" not in SYSTEM_PROMPT and " " * 10 not in SYSTEM_PROMPT
    assert chat("")[1]["content"] == " " and chat("a cat")[1]["content"] == "a cat"


def test_crop_start_is_the_authors_marker_position(encoders):
    tokenizer, crop = encoders.qwen_tokenizer, encoders.crop_start
    # The authors' rule restated: the tokens of the rendered template up to and including "<|im_start|>user\n".
    rendered = tokenizer.apply_chat_template([chat("a photo of a cat")], add_generation_prompt=True, tokenize=False)[0]
    head = rendered[: rendered.index("<|im_start|>user\n") + len("<|im_start|>user\n")]
    assert crop == len(tokenizer(head, add_special_tokens=False)["input_ids"]) == video_crop_start(tokenizer)
    assert crop != 108  # the tiny vocabulary splits the template differently: a hard-coded 108 would be wrong
    tokens = tokenizer.apply_chat_template([chat("hello world")], add_generation_prompt=True, return_dict=True)
    ids = tokens["input_ids"][0]
    assert tokenizer.decode(ids[crop:]) == "hello world<|im_end|>\n<|im_start|>assistant\n"


def test_a_tokenizer_without_the_chat_markers_is_refused(encoders):
    tokenizer = encoders.qwen_tokenizer
    template = tokenizer.chat_template
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    try:
        with pytest.raises(CheckpointError, match="not the Qwen2.5-VL tokenizer"):
            video_crop_start(tokenizer)
    finally:
        tokenizer.chat_template = template


@pytest.mark.parametrize("prompt, texts", [
    ('a sign "OPEN"', ["OPEN"]),
    ('"A" then “B” then "A"', ["A", "B"]),  # deduplicated, order kept
    ('twice "A" "A"', ["A"]),
    ('an empty quote ""', [""]),
    ("single ‘quotes’ and 'these' are not glyph text", []),
    ('unclosed "quote', []),
])
def test_glyph_texts_follow_the_authors_regex_dedupe_and_format(prompt, texts):
    assert glyph_texts(prompt) == texts
    expected = "".join(f'Text "{t}". ' for t in texts) or None
    assert glyph_prompt(texts) == expected == extract_glyph_texts(prompt)


def test_glyph_encoding_is_zeros_without_quotes_and_256_tokens_with(encoders):
    states, mask = encode_glyphs(encoders, glyph_prompt(glyph_texts("no quoted text here")))
    assert states.shape == (1, 256, encoders.byt5.config.d_model) and states.abs().sum() == 0 and mask.sum() == 0
    states, mask = encode_glyphs(encoders, glyph_prompt(glyph_texts(f'"{"x" * 300}"')))
    assert int(mask.sum()) == 256 and states.abs().sum() > 0  # truncated to 256 tokens, as the authors


# ----------------------------------------------------------------------------- against diffusers

def test_positive_prompt_equals_diffusers(encoders, pipe, pair):
    ours = pair[0]
    assert_close(ours, diffusers_embeds(pipe, PROMPT))
    assert ours.qwen.shape == (1, 1000, encoders.qwen.config.hidden_size) and ours.qwen.dtype == torch.float32
    assert ours.byt5.shape == (1, 256, encoders.byt5.config.d_model)
    text = 'Text "OPEN". Text "SALE". '
    assert int(ours.byt5_mask.sum()) == len(text.encode()) + 1  # bytes and </s>
    assert 0 < int(ours.qwen_mask.sum()) < 1000 and ours.image is None


def test_negative_differs_from_diffusers_only_in_byt5(encoders, pipe, pair):
    positive, negative = pair
    qwen, qwen_mask, byt5, byt5_mask = diffusers_embeds(pipe, NEGATIVE)
    assert torch.allclose(negative.qwen, qwen, atol=1e-5, rtol=0) and torch.equal(negative.qwen_mask, qwen_mask.long())
    assert int(byt5_mask.sum()) > 0 and byt5.abs().sum() > 0  # diffusers encodes the negative's "WATERMARK"
    assert int(negative.byt5_mask.sum()) == 0 and negative.byt5.abs().sum() == 0  # the authors: no glyph text
    assert negative.byt5.shape == positive.byt5.shape and negative.byt5_mask.dtype == torch.int64
    assert int(positive.byt5_mask.sum()) > 0


# ----------------------------------------------------------------------------- loading

def assert_same_weights(loaded, encoders, qwen_dtype):
    reference = {k: v.to(qwen_dtype) for k, v in encoders.qwen.state_dict().items()}
    for key, value in loaded.qwen.state_dict().items():
        assert torch.equal(value, reference[key]), key
    for key, value in loaded.byt5.state_dict().items():  # byT5 runs in float32 whatever the file stores
        assert value.dtype == torch.float32 and torch.equal(value, encoders.byt5.state_dict()[key].half().float()), key


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_comfy_files_load_to_the_same_weights(encoders, files, name, dtype):
    paths = files[name]
    loaded = loading.load_text_encoders15_from_files(paths["qwen"], paths["byt5"], paths["qwen_tokenizer"],
                                                     paths["byt5_tokenizer"], dtype=dtype)
    assert_same_weights(loaded, encoders, dtype)
    assert loaded.crop_start == encoders.crop_start
    messages = [chat(PROMPT)]
    ids = loaded.qwen_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)
    assert ids["input_ids"] == encoders.qwen_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert loaded.byt5_tokenizer(PROMPT)["input_ids"] == encoders.byt5_tokenizer(PROMPT)["input_ids"]


def test_fp8_scaled_file_stays_fp8(encoders, files):
    paths = files["fp8"]
    loaded = loading.load_text_encoders15_from_files(paths["qwen"], paths["byt5"], paths["qwen_tokenizer"],
                                                     dtype=torch.bfloat16)
    layers = [m for m in loaded.qwen.modules() if isinstance(m, ScaledFp8Linear)]
    assert len(layers) == 7 * encoders.qwen.config.num_hidden_layers
    stored = comfy_qwen_state(encoders.qwen, torch.bfloat16, fp8=True)
    attention = loaded.qwen.layers[0].self_attn.q_proj
    assert attention.weight.dtype == torch.float8_e4m3fn
    file_bytes = stored["model.layers.0.self_attn.q_proj.weight"].view(torch.uint8)
    assert torch.equal(attention.weight.view(torch.uint8), file_bytes)
    assert torch.equal(attention.scale_weight, stored["model.layers.0.self_attn.q_proj.scale_weight"])
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        ours = loaded.qwen(input_ids=ids, output_hidden_states=True).hidden_states[-3].float()
        reference = encoders.qwen(input_ids=ids, output_hidden_states=True).hidden_states[-3]
    assert (ours - reference).norm() / reference.norm() < 0.05  # fp8 rounding of the weights, bf16 compute
    as_fp32 = loading.qwen_from_file(paths["qwen"], dtype=torch.float32)  # asked for fp32: dequantized
    assert not any(isinstance(m, ScaledFp8Linear) for m in as_fp32.modules())


def test_diffusers_folder_loads_to_the_same_weights(encoders, files):
    loaded = loading.load_text_encoders15_from_folder(files["diffusers"], dtype=torch.float32)
    for key, value in loaded.qwen.state_dict().items():
        assert torch.equal(value, encoders.qwen.state_dict()[key]), key
    for key, value in loaded.byt5.state_dict().items():
        assert torch.equal(value, encoders.byt5.state_dict()[key]), key
    assert loaded.crop_start == encoders.crop_start
    assert "<color-0>" in loaded.byt5_tokenizer.get_vocab()  # the folder's glyph tokens come along


def test_real_shapes_give_the_real_configs():
    shapes = {"embed_tokens.weight": (152064, 3584), "layers.0.self_attn.q_proj.weight": (3584, 3584),
              "layers.0.self_attn.k_proj.weight": (512, 3584), "layers.0.mlp.gate_proj.weight": (18944, 3584),
              **{f"layers.{i}.input_layernorm.weight": (3584,) for i in range(28)}}
    qwen = loading.derive_qwen_config(shapes)
    assert (qwen.num_attention_heads, qwen.num_key_value_heads, qwen.num_hidden_layers) == (28, 4, 28)
    assert qwen.intermediate_size == 18944 and qwen.rms_norm_eps == 1e-6 and qwen.bos_token_id == 151643
    attention = "encoder.block.0.layer.0.SelfAttention."
    byt5 = loading.derive_byt5_config({"shared.weight": (1510, 1472), attention + "q.weight": (384, 1472),
                                       attention + "relative_attention_bias.weight": (32, 6),
                                       "encoder.block.0.layer.1.DenseReluDense.wi_0.weight": (3584, 1472),
                                       **{f"encoder.block.{i}.layer.0.layer_norm.weight": (1472,) for i in range(12)}})
    assert (byt5.d_model, byt5.num_heads, byt5.d_ff, byt5.num_layers, byt5.vocab_size) == (1472, 6, 3584, 12, 1510)
    assert byt5.is_gated_act and byt5.dense_act_fn == "gelu_new"


# ----------------------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def wrong_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("wrong")
    written = save_text_encoders(tiny_text_encoders(seed=0), root, layout="comfy")
    t5 = tiny_byt5(5000)
    save_file({k: v.contiguous() for k, v in t5.state_dict().items() if k != "encoder.embed_tokens.weight"},
              str(root / "t5xxl_fp16.safetensors"))
    return {
        "llava_llama3.safetensors": (written["llm"], "a Llama language model"),
        "clip_l.safetensors": (written["clip"], "a CLIP text encoder"),
        "hunyuanvideo15_vae_fp16.safetensors": (save_vae15(tiny_vae15(), root / "hunyuanvideo15_vae_fp16.safetensors"),
                                                "a HunyuanVideo 1.5 VAE"),
        "hunyuanvideo1.5_720p_t2v_fp16.safetensors": (save_transformer15(
            tiny_transformer15(32, 16, 24), root / "hunyuanvideo1.5_720p_t2v_fp16.safetensors"),
            "a HunyuanVideo transformer"),
        "t5xxl_fp16.safetensors": (root / "t5xxl_fp16.safetensors", "a T5 text encoder"),
    }


def test_wrong_files_in_the_qwen_slot_are_refused_from_their_header(files, wrong_files, monkeypatch):
    monkeypatch.setattr(loading, "stream_into", None)  # reading any weight would fail differently
    candidates = {**wrong_files, "byt5_small_glyphxl_fp16.safetensors": (files["bf16"]["byt5"], "a T5 text encoder")}
    for name, (path, held) in candidates.items():
        with pytest.raises(CheckpointError, match=rf"^{name}: expected the Qwen2.5-VL-7B text encoder.*holds {held}"):
            loading.qwen_from_file(path)


def test_wrong_files_in_the_byt5_slot_are_refused_from_their_header(files, wrong_files, monkeypatch):
    monkeypatch.setattr(loading, "load_state_dict", None)
    candidates = {"qwen_2.5_vl_7b.safetensors": (files["bf16"]["qwen"], "a Qwen2.5 language model"),
                  "t5xxl_fp16.safetensors": (wrong_files["t5xxl_fp16.safetensors"][0], "a 5000-token vocabulary"),
                  "clip_l.safetensors": wrong_files["clip_l.safetensors"]}
    for name, (path, held) in candidates.items():
        with pytest.raises(CheckpointError, match=rf"^{name}: expected the byT5 glyph encoder.*{held}"):
            loading.byt5_from_file(path)


def test_comfys_tokenizer_folders_are_found(tmp_path):
    comfy = tmp_path / "ComfyUI" / "comfy"
    (comfy / "text_encoders" / "qwen25_tokenizer").mkdir(parents=True)
    (comfy / "text_encoders" / "qwen25_tokenizer" / "vocab.json").write_text("{}")
    (comfy / "text_encoders" / "byt5_tokenizer").mkdir()
    expected = (comfy / "text_encoders" / "qwen25_tokenizer", comfy / "text_encoders" / "byt5_tokenizer")
    assert loading.find_comfy_tokenizers(comfy) == expected == loading.find_comfy_tokenizers(comfy.parent)
    with pytest.raises(CheckpointError, match="ComfyUI's tokenizer files were not found"):
        loading.find_comfy_tokenizers(tmp_path)
    with pytest.raises(CheckpointError, match="no such tokenizer folder"):
        loading.load_qwen_tokenizer(tmp_path / "missing")
