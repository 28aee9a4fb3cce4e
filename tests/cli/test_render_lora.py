"""--lora FILE[:STRENGTH] (repeatable) and --lora-blocks FILTER on the render command.

LoRA files are written here, independently of the pack's readers: kohya/musubi `lora_unet_*` names with alpha on
every linear weight of the authors' layout (13B fused qkv and linear1 included), and PEFT/diffusers names for the
demo. A render with a LoRA must give the same latents as a render of a transformer file whose weights were merged
by hand (W + strength x alpha / rank x B A, in the file's own layout), stacked LoRAs add, a block filter keeps only
its blocks, strength 0 is the base. Bad values are refused with one line naming the flag (status 2): the syntax
and the files before any weight loads, a LoRA of the other family or a file that is not a LoRA before sampling.
"""

import pytest
import torch
from hunyuan_video_suite.pipelines.cli import hv15_jobs, jobs, lora_options, render
from hunyuan_video_suite.pipelines.cli.lora_options import LoraOption, parse_lora
from hunyuan_video_suite.pipelines.cli.render import main, parse_args, run
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo import tiny_transformer as demo_transformer
from hunyuan_video_suite.pipelines.demo.hv15_text import save_text_encoders15, tiny_siglip, tiny_text_encoders15
from hunyuan_video_suite.pipelines.demo.hv15_transformer import save_transformer15, tiny_transformer15
from hunyuan_video_suite.pipelines.demo.hv15_vae import save_vae15, tiny_vae15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b import lora_keys as lora_keys13
from hunyuan_video_suite.pipelines.hunyuan_video_13b import transformer_loading as transformer13
from hunyuan_video_suite.pipelines.hunyuan_video_15 import lora_keys as lora_keys15
from hunyuan_video_suite.pipelines.hunyuan_video_15 import transformer_loading as transformer15
from hunyuan_video_suite.pipelines.lora import formats
from hunyuan_video_suite.pipelines.weights import checkpoints
from safetensors.torch import load_file, save_file
from torch import nn

RANK = 4
HV15_T2V = "hunyuanvideo1.5_480p_t2v_fp16.safetensors"
TEXT_ENCODER_KEYS = 3  # a kohya text-encoder module (down, up, alpha): keys that name no transformer module
SIZE = ["--width", "32", "--height", "32", "--frames", "5", "--steps", "2", "--seed", "7"]


def _factors(state: dict, seed: int, only: str = "") -> dict:
    """{module: (A [r, in], B [out, r], alpha)} for every linear weight (2-D `.weight`) of an authors'-layout state
    dict whose name starts with `only`."""
    gen = torch.Generator().manual_seed(seed)
    return {key[: -len(".weight")]: (torch.randn(RANK, v.shape[1], generator=gen) * 0.3,
                                     torch.randn(v.shape[0], RANK, generator=gen) * 0.3, 1.0 + (n % 3))
            for n, (key, v) in enumerate(sorted(state.items()))
            if key.endswith(".weight") and v.ndim == 2 and key.startswith(only) and "embedding" not in key}


def _kohya_file(path, factors: dict, text_encoder: bool = False):
    """kohya/musubi: `lora_unet_<module with underscores>.lora_down/lora_up.weight` and `.alpha`; `text_encoder`
    adds a text-encoder module, whose keys name nothing in the transformer."""
    tensors = {}
    for module, (down, up, alpha) in factors.items():
        stem = "lora_unet_" + module.replace(".", "_")
        tensors |= {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
                    f"{stem}.alpha": torch.tensor(alpha)}
    if text_encoder:
        stem = "lora_te1_text_model_encoder_layers_0_mlp_fc1"
        tensors |= {f"{stem}.lora_down.weight": torch.ones(RANK, 8), f"{stem}.lora_up.weight": torch.ones(8, RANK),
                    f"{stem}.alpha": torch.tensor(1.0)}
    save_file(tensors, str(path))
    return path


def _merged_file(base, path, *loras):
    """The base file with each (factors, strength, only) merged by hand into the weights it names."""
    state = load_file(str(base))
    for factors, strength, only in loras:
        for module, (down, up, alpha) in factors.items():
            if module.startswith(only):
                state[f"{module}.weight"] = state[f"{module}.weight"] + strength * alpha / RANK * (up @ down)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny 13B and 1.5 models on disk (ComfyUI's 13B single files, the authors' 1.5 file), and kohya LoRAs for
    each written from the transformer files' own weights."""
    root = tmp_path_factory.mktemp("lora")
    encoders, vae = tiny.tiny_text_encoders(seed=1), tiny.tiny_vae(seed=1)
    dims = (encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, vae.config.latent_channels)
    text = tiny.save_text_encoders(encoders, root, layout="comfy")
    encoders.llm_tokenizer.save_pretrained(root / "tok" / "llama_tokenizer")
    encoders.clip_tokenizer.save_pretrained(root / "tok" / "clip_tokenizer")
    paths = {"transformer": save_transformer(tiny_transformer(*dims, seed=1), root / "t2v.safetensors"),
             "vae": tiny.save_vae(vae, root / "vae.safetensors", layout="authors"), "llm": text["llm"],
             "clip": text["clip"], "tokenizers": root / "tok"}
    state = load_file(str(paths["transformer"]))
    paths["a13"] = _kohya_file(root / "style.safetensors", _factors(state, 11), text_encoder=True)
    paths["b13"] = _kohya_file(root / "other.safetensors", _factors(state, 12))
    paths["double13"] = _kohya_file(root / "double_only.safetensors", _factors(state, 13, only="double_blocks."))
    paths["merged13"] = _merged_file(paths["transformer"], root / "merged" / "t2v.safetensors",
                                     (_factors(state, 11), 0.7, ""), (_factors(state, 12), -0.4, "double_blocks."))

    hv15 = root / "hv15"
    encoders15 = tiny_text_encoders15(seed=3)
    paths |= {f"{k}15": v for k, v in save_text_encoders15(encoders15, hv15).items()}
    dims15 = (encoders15.qwen.config.hidden_size, encoders15.byt5.config.d_model,
              tiny_siglip(seed=3).config.hidden_size)
    paths["hv15"] = save_transformer15(tiny_transformer15(*dims15, seed=3, layers=1), hv15 / HV15_T2V,
                                       layout="authors_file")
    paths["vae15"] = save_vae15(tiny_vae15(seed=3), hv15 / "hunyuanvideo15_vae_fp16.safetensors")
    state15 = load_file(str(paths["hv15"]))
    paths["a15"] = _kohya_file(hv15 / "style15.safetensors", _factors(state15, 21))
    paths["merged15"] = _merged_file(paths["hv15"], hv15 / "merged" / HV15_T2V, (_factors(state15, 21), -1.5, ""))
    return paths


def _args13(files, transformer="transformer", *extra):
    chosen = {name: files[name] for name in ("vae", "llm", "clip", "tokenizers")} | {"transformer": files[transformer]}
    argv = [arg for name, path in chosen.items() for arg in (f"--{name}", str(path))]
    return [*argv, "--dtype", "fp32", "--device", "cpu", *SIZE, *map(str, extra)]


def _args15(files, transformer="hv15", *extra):
    argv = ["--transformer", files[transformer], "--vae", files["vae15"], "--llm", files["qwen15"], "--byt5",
            files["byt515"], "--tokenizers", files["folder15"], "--cfg", "1"]
    return [*map(str, argv), "--dtype", "fp32", "--device", "cpu", *SIZE, *map(str, extra)]


@pytest.fixture
def sampled(monkeypatch):
    """The transformer and the latents of every sampler run the command makes (13B T2V and 1.5)."""
    runs = []

    def spy(real):
        def sample(transformer, *args, **kwargs):
            latents = real(transformer, *args, **kwargs)
            runs.append((transformer, latents.clone()))
            return latents
        return sample

    monkeypatch.setattr(jobs, "generate_t2v", spy(jobs.generate_t2v))
    monkeypatch.setattr(hv15_jobs, "generate", spy(hv15_jobs.generate))
    return runs


def _render(argv, tmp_path, runs):
    assert main([*argv, "--output", str(tmp_path / f"clip{len(runs)}.mp4")]) == 0
    return runs[-1][1]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, path, strength", [
    ("style.safetensors", "style.safetensors", 1.0),
    ("style.safetensors:0.8", "style.safetensors", 0.8),
    ("style.safetensors:-1.5", "style.safetensors", -1.5),
    ("style.safetensors:+.5", "style.safetensors", 0.5),
    ("style.safetensors:1e1", "style.safetensors", 10.0),
    ("style.safetensors:0", "style.safetensors", 0.0),
    ("C:\\loras\\style.safetensors", "C:\\loras\\style.safetensors", 1.0),  # a drive colon stays in the path
    ("C:\\loras\\style.safetensors:0.25", "C:\\loras\\style.safetensors", 0.25),
    ("D:/loras/v1:2/style.safetensors:-2", "D:/loras/v1:2/style.safetensors", -2.0),
    ("style.safetensors:nan", "style.safetensors:nan", 1.0),  # not a plain number: part of the name
    ("style.safetensors:0.5x", "style.safetensors:0.5x", 1.0),
])
def test_file_and_strength_split_on_the_last_colon_only_before_a_number(text, path, strength):
    assert parse_lora(text) == LoraOption(path, strength)


def test_repeated_loras_keep_their_order_strengths_and_filters(files, tmp_path):
    windows = tmp_path / "C:\\loras\\style.safetensors"  # a file name with a drive colon and backslashes
    windows.write_bytes(files["a13"].read_bytes())
    args = parse_args([*_args13(files), "--lora", f"{files['a13']}:0.5", "--lora-blocks", "double:0 single",
                       "--lora", str(windows), "--lora", f"{windows}:-3", "--lora-blocks", "all",
                       "--lora", str(files["b13"]), "--lora-blocks", "double;single:0"])
    assert args.lora == [LoraOption(str(files["a13"]), 0.5, "double:0 single"), LoraOption(str(windows), 1.0, ""),
                         LoraOption(str(windows), -3.0, ""), LoraOption(str(files["b13"]), 1.0, "double;single:0")]
    assert parse_args(_args13(files)).lora is None


# ----------------------------------------------------------------------------- refused before any weight loads

def _refused(capsys, argv, call=main) -> str:
    if call is main:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert call(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def no_loading(monkeypatch):
    """Every transformer loader and LoRA reader of both families fails the test if reached."""
    for module, name in ((transformer13, "load_transformer"), (transformer15, "load_transformer"),
                         (lora_keys13, "read_lora"), (lora_keys15, "read_lora"), (render, "_demo_models")):
        monkeypatch.setattr(module, name, lambda *a, _n=name, **k: pytest.fail(f"{_n} was reached"))


def test_bad_values_are_refused_before_anything_loads(files, tmp_path, capsys, no_loading):
    folder, notes, model = tmp_path / "loras", tmp_path / "notes.txt", files["transformer"]
    folder.mkdir()
    notes.write_text("not a LoRA")
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(files["a13"].read_bytes()[:100])
    out = ["--output", str(tmp_path / "x.mp4")]
    cases = [
        (["--lora", f"{files['a13']}:10.5"], "argument --lora: the strength of style.safetensors must be from -10 to "
                                             "10, got 10.5"),
        (["--lora", f"{files['a13']}:-11"], "argument --lora: the strength of style.safetensors must be from -10"),
        (["--lora", ":0.5"], "argument --lora: must be FILE or FILE:STRENGTH, got ':0.5'"),
        (["--lora-blocks", "double"], "argument --lora-blocks: give it after the --lora FILE it restricts"),
        (["--lora", files["a13"], "--lora-blocks", "double", "--lora-blocks", "single"],
         "argument --lora-blocks: style.safetensors already has --lora-blocks 'double'"),
        (["--lora", files["a13"], "--lora-blocks", "doubles:0"], "argument --lora-blocks: block filter term "
                                                                 "'doubles:0' not understood"),
        (["--lora", files["a13"], "--lora-blocks", "double:3-1"], "range 3-1 runs backwards"),
        (["--lora", tmp_path / "missing.safetensors"], f"--lora: {tmp_path / 'missing.safetensors'} does not exist"),
        (["--lora", f"{files['a13']}:0.5x"], "does not exist (the text after the last colon is a strength only when "
                                             "it is a number, got '0.5x')"),
        (["--lora", folder], f"--lora: {folder} is a folder"),
        (["--lora", notes], "--lora: notes.txt has an extension no LoRA file has"),
        (["--lora", model], "--lora: t2v.safetensors is not a LoRA: it holds a HunyuanVideo transformer"),
        (["--lora", truncated], "--lora: cut.safetensors: file is truncated"),
    ]
    for extra, expected in cases:
        for argv in ([*map(str, extra), *out], [*_args13(files), *map(str, extra), *out]):  # demo and a model
            assert expected in _refused(capsys, argv), (extra, expected)


def test_a_broken_lora_is_refused_before_the_models_load(files, tmp_path, capsys, monkeypatch):
    """A file the family's reader refuses (here DoRA, whose delta needs the base weight) stops the command before
    the transformer is read."""
    dora = tmp_path / "dora.safetensors"
    save_file({"lora_unet_double_blocks_0_img_attn_proj.lora_down.weight": torch.ones(RANK, 20),
               "lora_unet_double_blocks_0_img_attn_proj.lora_up.weight": torch.ones(20, RANK),
               "lora_unet_double_blocks_0_img_attn_proj.dora_scale": torch.ones(1, 20)}, str(dora))
    monkeypatch.setattr(transformer13, "load_transformer", lambda *a, **k: pytest.fail("the transformer loaded"))
    err = _refused(capsys, [*_args13(files), "--lora", str(dora), "--output", str(tmp_path / "x.mp4")], run)
    assert "--lora: dora.safetensors: lora_unet_double_blocks_0_img_attn_proj.dora_scale is DoRA" in err


# ----------------------------------------------------------------------------- refused before sampling

def test_a_lora_that_does_not_fit_the_model_is_refused_before_sampling(files, tmp_path, capsys, sampled):
    not_a_lora = tmp_path / "model.pt"
    torch.save({"some.layer.weight": torch.ones(2, 2)}, not_a_lora)
    out = ["--output", str(tmp_path / "x.mp4")]
    cases = [
        (_args13(files, "transformer", "--lora", files["a15"]),  # a 1.5 LoRA with a 13B model
         "--lora: style15.safetensors does not fit this HunyuanVideoTransformer3DModel (hunyuan_video_13b)"),
        (_args15(files, "hv15", "--lora", files["a13"]),  # and the other way round
         "--lora: style.safetensors does not fit this HunyuanVideo15Transformer3DModel (hunyuan_video_15)"),
        (_args13(files, "transformer", "--lora", not_a_lora), "--lora: model.pt is not a LoRA: it holds an "
                                                             "unrecognised set of 1 tensors (e.g. some.layer.weight)"),
        (_args13(files, "transformer", "--lora", files["a13"], "--lora-blocks", "double:1"),
         "--lora-blocks (of style.safetensors): block filter 'double:1': double block 1 does not exist (the model "
         "has 1: 0-0)"),
        (_args15(files, "hv15", "--lora", files["a15"], "--lora-blocks", "single"),
         "block filter 'single': this model has no single blocks"),
        (_args13(files, "transformer", "--lora", files["double13"], "--lora-blocks", "single"),
         "--lora-blocks 'single': double_only.safetensors has no module in those blocks"),
    ]
    for argv, expected in cases:
        assert expected in _refused(capsys, [*map(str, argv), *out], run), expected
    assert sampled == []


# ----------------------------------------------------------------------------- the LoRAs as rendered

def test_13b_loras_render_as_the_weights_merged_by_hand(files, tmp_path, capsys, sampled):
    """Two stacked kohya LoRAs (one on the double blocks only) equal the merged file; strength 0 is the base."""
    loras = ["--lora", f"{files['a13']}:0.7", "--lora", f"{files['b13']}:-0.4", "--lora-blocks", "double"]
    with_loras = _render(_args13(files, "transformer", *loras), tmp_path, sampled)
    printed = capsys.readouterr().out
    transformer = sampled[-1][0]
    assert [(c.lora.name, c.strength, c.block_filter) for c in transformer.loras] == [
        ("style.safetensors", 0.7, ""), ("other.safetensors", -0.4, "double")]
    assert "LoRA style.safetensors x0.7: 40 modules; 3 keys not loaded (e.g. lora_te1_text_model" in printed
    assert "LoRA other.safetensors x-0.4, blocks double: 14 modules\n" in printed
    merged = _render(_args13(files, "merged13"), tmp_path, sampled)
    _close(with_loras, merged)
    base = _render(_args13(files), tmp_path, sampled)
    assert (with_loras - base).abs().max() > 1e-2  # the LoRAs change the clip
    zero = _render(_args13(files, "transformer", "--lora", f"{files['a13']}:0"), tmp_path, sampled)
    _close(zero, base)


def test_hv15_lora_renders_as_the_weights_merged_by_hand(files, tmp_path, capsys, sampled):
    with_lora = _render(_args15(files, "hv15", "--lora", f"{files['a15']}:-1.5"), tmp_path, sampled)
    assert "LoRA style15.safetensors x-1.5: " in capsys.readouterr().out
    _close(with_lora, _render(_args15(files, "merged15"), tmp_path, sampled))
    base = _render(_args15(files), tmp_path, sampled)
    assert (with_lora - base).abs().max() > 1e-2
    _close(_render(_args15(files, "hv15", "--lora", f"{files['a15']}:0"), tmp_path, sampled), base)


def test_the_demo_takes_a_lora_made_for_its_tiny_model(tmp_path, capsys, monkeypatch, sampled):
    """A PEFT/diffusers-named LoRA on every linear layer of the demo's model equals those weights merged by hand."""
    make = demo_transformer.tiny_transformer
    linears = {name: m for name, m in render._demo_models("t2v").transformer.model.named_modules()
               if isinstance(m, nn.Linear)}
    gen = torch.Generator().manual_seed(5)
    factors = {name: (torch.randn(RANK, m.in_features, generator=gen) * 0.3,
                      torch.randn(m.out_features, RANK, generator=gen) * 0.3) for name, m in linears.items()}
    path = tmp_path / "demo_lora.safetensors"
    save_file({f"transformer.{name}.lora_{ab}.weight": t for name, (down, up) in factors.items()
               for ab, t in (("A", down), ("B", up))}, str(path))

    def merged(*args, **kwargs):
        model = make(*args, **kwargs)
        with torch.no_grad():
            for name, (down, up) in factors.items():
                model.get_submodule(name).weight += 0.5 * up @ down
        return model

    with_lora = _render(["--lora", f"{path}:0.5", *SIZE], tmp_path, sampled)
    assert f"LoRA demo_lora.safetensors x0.5: {len(factors)} modules\n" in capsys.readouterr().out
    base = _render(SIZE, tmp_path, sampled)
    _close(_render(["--lora", f"{path}:0", *SIZE], tmp_path, sampled), base)
    monkeypatch.setattr(demo_transformer, "tiny_transformer", merged)
    _close(with_lora, _render(SIZE, tmp_path, sampled))


def test_the_lora_checks_match_the_engine():
    """The header check knows every key kind the LoRA reader reads, and the suffixes are the checkpoint reader's."""
    assert lora_options.LORA_SUFFIXES == (".safetensors", *checkpoints.PICKLE_SUFFIXES)
    for suffix in formats._PARTS:
        assert lora_options._LORA_KEY.search(f"lora_unet_double_blocks_0_img_attn_qkv{suffix}"), suffix
    assert not lora_options._LORA_KEY.search("double_blocks.0.img_attn_qkv.weight")
