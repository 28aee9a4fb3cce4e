"""The text encoders and tokenizers load from a diffusers folder and from ComfyUI's single files:
tiny models round-trip (fp8 within fp8 tolerance), the real layouts give the real configs (on the
meta device), ComfyUI's tokenizer folders are found, and wrong files fail clearly."""

import json

import pytest
import torch
from conftest import SHARED
from hunyuan_video_suite.pipelines.demo.tiny import save_text_encoders, save_vae, tiny_text_encoders, tiny_vae
from hunyuan_video_suite.pipelines.hunyuan_video_13b.text_encoder_loading import (
    clip_from_state_dict,
    find_comfy_tokenizers,
    llama_from_state_dict,
    load_text_encoders_from_files,
    load_text_encoders_from_folder,
)
from hunyuan_video_suite.pipelines.weights.checkpoints import CheckpointError
from safetensors import safe_open
from safetensors.torch import save_file

LAYOUTS = json.loads((SHARED / "comfy" / "checkpoint_layouts.json").read_text())["files"]
PROMPTS = ["A cat walks on the beach at sunset.", "A red car"]
TEMPLATE = "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"


def meta_state(layout: dict, dtype=torch.float32) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device="meta", dtype=dtype) for name, shape in layout.items()}


def encode(te):
    """All Llama hidden states (padded batch, with the Llama-3 template) and the pooled CLIP vectors."""
    llm_tokens = te.llm_tokenizer([TEMPLATE.format(p) for p in PROMPTS], padding="max_length", max_length=64,
                                  truncation=True, return_tensors="pt")
    clip_tokens = te.clip_tokenizer(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = te.llm(input_ids=llm_tokens["input_ids"], attention_mask=llm_tokens["attention_mask"],
                        output_hidden_states=True).hidden_states
        pooled = te.clip(clip_tokens["input_ids"]).pooler_output
    return llm_tokens["input_ids"], clip_tokens["input_ids"], torch.stack(hidden), pooled


@pytest.fixture(scope="module")
def encoders():
    return tiny_text_encoders(seed=0)


@pytest.fixture(scope="module")
def reference(encoders):
    return encode(encoders)


def assert_same(loaded, reference):
    llm_ids, clip_ids, hidden, pooled = encode(loaded)
    assert torch.equal(llm_ids, reference[0])
    assert torch.equal(clip_ids, reference[1])
    assert torch.equal(hidden, reference[2])
    assert torch.equal(pooled, reference[3])


def test_tiny_encoders_have_the_real_shape_of_things(encoders, reference):
    llm_ids, clip_ids, hidden, pooled = reference
    tokenizer = encoders.llm_tokenizer
    assert llm_ids[0, 0] == tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    for special in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        assert tokenizer.convert_tokens_to_ids(special) in llm_ids[0]
    assert llm_ids[1, -1] == tokenizer.pad_token_id  # padded on the right
    assert hidden.shape[0] == encoders.llm.config.num_hidden_layers + 1 >= 3  # skip-2 layer exists
    assert pooled.shape == (2, encoders.clip.config.hidden_size)
    assert encoders.clip_tokenizer.model_max_length == 77
    assert clip_ids[0, 0] == encoders.clip_tokenizer.bos_token_id


def test_tiny_llama_tokenizer_tokenizes_the_template_alike_with_or_without_a_prompt(encoders):
    tokenizer = encoders.llm_tokenizer
    prefix = TEMPLATE[: TEMPLATE.index("{}")]
    head = tokenizer(prefix)["input_ids"]
    full = tokenizer(TEMPLATE.format("hello world"))["input_ids"]
    assert full[: len(head)] == head
    assert tokenizer.decode(full[len(head):]) == "hello world<|eot_id|>"


def test_tiny_encoders_are_deterministic(encoders):
    again, other = tiny_text_encoders(seed=0), tiny_text_encoders(seed=1)
    key = "layers.0.self_attn.q_proj.weight"
    assert torch.equal(again.llm.state_dict()[key], encoders.llm.state_dict()[key])
    assert not torch.equal(other.llm.state_dict()[key], encoders.llm.state_dict()[key])
    assert again.llm_tokenizer.get_vocab() == encoders.llm_tokenizer.get_vocab()


def test_diffusers_folder_round_trips(tmp_path, encoders, reference):
    save_text_encoders(encoders, tmp_path, layout="diffusers")
    assert_same(load_text_encoders_from_folder(tmp_path, dtype=torch.float32), reference)


def test_llava_folder_gives_its_language_model(tmp_path):
    llava = tiny_text_encoders(seed=0, llava=True)
    save_text_encoders(llava, tmp_path, layout="diffusers")
    loaded = load_text_encoders_from_folder(tmp_path, dtype=torch.float32)
    assert type(loaded.llava).__name__ == "LlavaForConditionalGeneration"
    assert type(loaded.llm).__name__ == "LlamaModel"
    assert_same(loaded, encode(llava))


def test_comfy_files_round_trip(tmp_path, encoders, reference):
    paths = save_text_encoders(encoders, tmp_path, layout="comfy")
    assert paths["llm"].name == "llava_llama3.safetensors" and paths["clip"].name == "clip_l.safetensors"
    loaded = load_text_encoders_from_files(paths["llm"], paths["clip"], paths["llm_tokenizer"], paths["clip_tokenizer"],
                                           dtype=torch.float32)
    assert loaded.llava is None
    assert_same(loaded, reference)


def test_comfy_fp8_file_is_close(tmp_path, encoders, reference):
    paths = save_text_encoders(encoders, tmp_path, layout="comfy", fp8=True)
    assert paths["llm"].name == "llava_llama3_fp8_scaled.safetensors"
    with safe_open(str(paths["llm"]), "pt") as f:
        assert f.get_tensor("model.layers.0.mlp.gate_proj.weight").dtype == torch.float8_e4m3fn
        assert f.get_tensor("model.layers.0.mlp.gate_proj.scale_weight").numel() == 1
        assert "scaled_fp8" in f.keys()
    loaded = load_text_encoders_from_files(paths["llm"], paths["clip"], paths["llm_tokenizer"], paths["clip_tokenizer"],
                                           dtype=torch.float32)
    _, _, hidden, pooled = encode(loaded)
    # Each fp8 weight keeps 3 mantissa bits (<= 6% error); through 4 layers the states stay within ~10%.
    error = (hidden[1:] - reference[2][1:]).norm() / reference[2][1:].norm()
    assert 0 < error < 0.1
    assert torch.equal(pooled, reference[3])


def test_clip_file_in_transformers_4_naming(tmp_path, encoders, reference):
    paths = save_text_encoders(encoders, tmp_path, layout="comfy")
    with safe_open(str(paths["clip"]), "pt") as f:
        state = {("" if k == "text_projection.weight" else "text_model.") + k: f.get_tensor(k) for k in f.keys()}
    save_file(state, str(paths["clip"]))
    loaded = load_text_encoders_from_files(paths["llm"], paths["clip"], paths["llm_tokenizer"], paths["clip_tokenizer"],
                                           dtype=torch.float32)
    assert_same(loaded, reference)


def test_bf16_is_honoured(tmp_path, encoders):
    paths = save_text_encoders(encoders, tmp_path, layout="comfy", fp8=True)
    loaded = load_text_encoders_from_files(paths["llm"], paths["clip"], paths["llm_tokenizer"], paths["clip_tokenizer"])
    assert loaded.llm.dtype == torch.bfloat16 and loaded.clip.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- the real layouts, on meta

@pytest.mark.parametrize("fp8", [False, True])
def test_real_llava_llama3_file_gives_llama3_8b(fp8):
    state = meta_state(LAYOUTS["llava_llama3_text_comfy_layout"], torch.float8_e4m3fn if fp8 else torch.bfloat16)
    if fp8:
        state.update({k[: -len(".weight")] + ".scale_weight": torch.empty((), device="meta")
                      for k in list(state) if k.endswith("_proj.weight")})
        state["scaled_fp8"] = torch.empty(0, device="meta", dtype=torch.float8_e4m3fn)
    config = llama_from_state_dict(state, device="meta").config
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (4096, 32, 14336)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (32, 8, 128320)
    rope_theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    assert rope_theta == 500000.0
    assert config.rms_norm_eps == 1e-5


def test_real_clip_l_file_gives_clip_l():
    config = clip_from_state_dict(meta_state(LAYOUTS["clip_l_comfy_layout"]), device="meta").config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.intermediate_size, config.vocab_size, config.max_position_embeddings) == (3072, 49408, 77)
    assert config.hidden_act == "quick_gelu"
    assert (config.bos_token_id, config.eos_token_id) == (49406, 49407)


@pytest.mark.parametrize("name, loader, kind", [
    ("hunyuan_video_vae_authors_layout", llama_from_state_dict, "VAE"),
    ("clip_l_comfy_layout", llama_from_state_dict, "CLIP"),
    ("hunyuan_video_t2v_720p_bf16", llama_from_state_dict, "transformer"),
    ("llava_llama3_text_comfy_layout", clip_from_state_dict, "Llama"),
    ("hunyuan_video_vae_comfy_layout", clip_from_state_dict, "VAE"),
])
def test_real_files_of_another_kind_are_refused(name, loader, kind):
    expected = "Llama-3" if loader is llama_from_state_dict else "CLIP-L"
    with pytest.raises(CheckpointError, match=rf"{name}: expected a {expected} text encoder.*{kind}"):
        loader(meta_state(LAYOUTS[name]), device="meta", name=name)


# ----------------------------------------------------------------------------- ComfyUI's tokenizer files

def fake_comfy(root):
    package = root / "ComfyUI" / "comfy"
    (package / "text_encoders" / "llama_tokenizer").mkdir(parents=True)
    (package / "text_encoders" / "llama_tokenizer" / "tokenizer.json").write_text("{}")
    (package / "sd1_tokenizer").mkdir()
    (package / "sd1_tokenizer" / "vocab.json").write_text("{}")
    return package


def test_comfy_tokenizers_are_found_from_package_or_root(tmp_path):
    package = fake_comfy(tmp_path)
    expected = (package / "text_encoders" / "llama_tokenizer", package / "sd1_tokenizer")
    assert find_comfy_tokenizers(package) == expected
    assert find_comfy_tokenizers(package.parent) == expected


def test_comfy_tokenizers_missing(tmp_path):
    with pytest.raises(CheckpointError, match="llama_tokenizer.*sd1_tokenizer"):
        find_comfy_tokenizers(tmp_path)


# ----------------------------------------------------------------------------- bad files

@pytest.fixture(scope="module")
def comfy_files(tmp_path_factory, encoders):
    return save_text_encoders(encoders, tmp_path_factory.mktemp("comfy"), layout="comfy")


def test_vae_given_as_llm(tmp_path, comfy_files):
    vae = save_vae(tiny_vae(), tmp_path / "hunyuan_video_vae_bf16.safetensors", layout="authors")
    with pytest.raises(CheckpointError, match=r"hunyuan_video_vae_bf16\.safetensors: expected a Llama-3 text encoder.*VAE"):
        load_text_encoders_from_files(vae, comfy_files["clip"], comfy_files["llm_tokenizer"], comfy_files["clip_tokenizer"])


def test_files_swapped(comfy_files):
    with pytest.raises(CheckpointError, match=r"clip_l\.safetensors: expected a Llama-3 text encoder.*CLIP"):
        load_text_encoders_from_files(comfy_files["clip"], comfy_files["llm"], comfy_files["llm_tokenizer"],
                                      comfy_files["clip_tokenizer"])


def test_truncated_llm_file(tmp_path, comfy_files):
    cut = tmp_path / "llava_llama3_fp8_scaled.safetensors"
    data = comfy_files["llm"].read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CheckpointError, match=r"llava_llama3_fp8_scaled\.safetensors.*truncated"):
        load_text_encoders_from_files(cut, comfy_files["clip"], comfy_files["llm_tokenizer"], comfy_files["clip_tokenizer"])


def test_junk_clip_file(tmp_path, comfy_files):
    junk = tmp_path / "clip_l.safetensors"
    junk.write_bytes(b"\x00\x01 not safetensors" * 50)
    with pytest.raises(CheckpointError, match=r"clip_l\.safetensors"):
        load_text_encoders_from_files(comfy_files["llm"], junk, comfy_files["llm_tokenizer"], comfy_files["clip_tokenizer"])


def test_llm_with_a_layer_missing(tmp_path, comfy_files):
    with safe_open(str(comfy_files["llm"]), "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("model.layers.1.mlp.")}
    save_file(state, str(tmp_path / "llm.safetensors"))
    with pytest.raises(CheckpointError, match=r"llm\.safetensors: an unknown Llama layout.*missing.*layers\.1\.mlp"):
        load_text_encoders_from_files(tmp_path / "llm.safetensors", comfy_files["clip"], comfy_files["llm_tokenizer"],
                                      comfy_files["clip_tokenizer"])


def test_tokenizer_that_does_not_fit_the_model(comfy_files):
    # The tiny CLIP tokenizer has more tokens than the tiny LLM's vocabulary.
    with pytest.raises(CheckpointError, match=r"clip_tokenizer: the tokenizer has \d+ tokens but llava_llama3"):
        load_text_encoders_from_files(comfy_files["llm"], comfy_files["clip"], comfy_files["clip_tokenizer"],
                                      comfy_files["clip_tokenizer"])


def test_missing_tokenizer_folder(tmp_path, comfy_files):
    with pytest.raises(CheckpointError, match=r"nowhere: no such tokenizer folder"):
        load_text_encoders_from_files(comfy_files["llm"], comfy_files["clip"], tmp_path / "nowhere",
                                      comfy_files["clip_tokenizer"])


def test_folder_without_clip(tmp_path, encoders):
    save_text_encoders(encoders, tmp_path, layout="diffusers")
    (tmp_path / "text_encoder_2" / "config.json").rename(tmp_path / "text_encoder_2" / "other.json")
    (tmp_path / "text_encoder_2").rename(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match=r"has no text_encoder_2/ folder"):
        load_text_encoders_from_folder(tmp_path)


def test_folder_with_a_vae_as_text_encoder(tmp_path, encoders):
    save_text_encoders(encoders, tmp_path, layout="diffusers")
    (tmp_path / "text_encoder" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLHunyuanVideo"}))
    with pytest.raises(CheckpointError, match=r"text_encoder: holds a model of unknown type, expected a Llama or LLaVA"):
        load_text_encoders_from_folder(tmp_path)
