"""LoRA files of every convention, written here from one random (A, B, alpha) set with this file's own name
tables, read back: the delta per target module of the pack's diffusers models must equal the hand-computed one
(fused rows split right, alpha / rank applied once). Also unmatched keys, the other family refused, LoHa/LoKr,
and parity with diffusers' own HunyuanVideo LoRA converter on the formats it reads."""

import pytest
import torch
from hunyuan_video_suite.pipelines.demo.hv15_transformer import tiny_transformer15
from hunyuan_video_suite.pipelines.demo.tiny_transformer import tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.lora_keys import read_lora as read_lora_13b
from hunyuan_video_suite.pipelines.hunyuan_video_15.lora_keys import read_lora as read_lora_15
from hunyuan_video_suite.pipelines.lora.fit import LoraMismatchError, check_against
from hunyuan_video_suite.pipelines.lora.formats import LoraFormatError
from safetensors.torch import save_file

RANK = 4


def _rows(*spans):
    return torch.cat([torch.arange(a, b) for a, b in spans])


def _modules_13b(h, mlp):
    """authors' name, ComfyUI's name, (out, in), [(diffusers target, rows of the authors' weight)]."""
    d, s, r = "transformer_blocks.0.", "single_transformer_blocks.0.", "context_embedder.token_refiner.refiner_blocks.0."
    qkv = lambda names: [(n, _rows((i * h, (i + 1) * h))) for i, n in enumerate(names)]  # noqa: E731
    whole = lambda name, out: [(name, _rows((0, out)))]  # noqa: E731
    return [
        ("double_blocks.0.img_attn_qkv", "double_blocks.0.img_attn.qkv", (3 * h, h),
         qkv([d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"])),
        ("double_blocks.0.txt_attn_qkv", "double_blocks.0.txt_attn.qkv", (3 * h, h),
         qkv([d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"])),
        ("double_blocks.0.img_attn_proj", "double_blocks.0.img_attn.proj", (h, h), whole(d + "attn.to_out.0", h)),
        ("double_blocks.0.txt_attn_proj", "double_blocks.0.txt_attn.proj", (h, h), whole(d + "attn.to_add_out", h)),
        ("double_blocks.0.img_mlp.fc1", "double_blocks.0.img_mlp.0", (mlp, h), whole(d + "ff.net.0.proj", mlp)),
        ("double_blocks.0.img_mlp.fc2", "double_blocks.0.img_mlp.2", (h, mlp), whole(d + "ff.net.2", h)),
        ("double_blocks.0.txt_mlp.fc1", "double_blocks.0.txt_mlp.0", (mlp, h), whole(d + "ff_context.net.0.proj", mlp)),
        ("double_blocks.0.txt_mlp.fc2", "double_blocks.0.txt_mlp.2", (h, mlp), whole(d + "ff_context.net.2", h)),
        ("double_blocks.0.img_mod.linear", "double_blocks.0.img_mod.lin", (6 * h, h), whole(d + "norm1.linear", 6 * h)),
        ("double_blocks.0.txt_mod.linear", "double_blocks.0.txt_mod.lin", (6 * h, h),
         whole(d + "norm1_context.linear", 6 * h)),
        ("single_blocks.0.linear1", "single_blocks.0.linear1", (3 * h + mlp, h),
         qkv([s + "attn.to_q", s + "attn.to_k", s + "attn.to_v"]) + [(s + "proj_mlp", _rows((3 * h, 3 * h + mlp)))]),
        ("single_blocks.0.linear2", "single_blocks.0.linear2", (h, h + mlp), whole(s + "proj_out", h)),
        ("single_blocks.0.modulation.linear", "single_blocks.0.modulation.lin", (3 * h, h), whole(s + "norm.linear", 3 * h)),
        ("txt_in.individual_token_refiner.blocks.0.self_attn_qkv", "txt_in.individual_token_refiner.blocks.0.self_attn.qkv",
         (3 * h, h), qkv([r + "attn.to_q", r + "attn.to_k", r + "attn.to_v"])),
        ("txt_in.individual_token_refiner.blocks.0.mlp.fc1", "txt_in.individual_token_refiner.blocks.0.mlp.0",
         (4 * h, h), whole(r + "ff.net.0.proj", 4 * h)),
        ("final_layer.adaLN_modulation.1", "final_layer.adaLN_modulation.1", (2 * h, h),
         [("norm_out.linear", _rows((h, 2 * h), (0, h)))]),  # authors (shift, scale), diffusers (scale, shift)
    ]


def _modules_15(h, mlp):
    """musubi's (authors') name, (out, in), diffusers target; q/k/v are split in this family."""
    d = "transformer_blocks.0."
    names = [("img_attn_q", "attn.to_q"), ("img_attn_k", "attn.to_k"), ("img_attn_v", "attn.to_v"),
             ("txt_attn_q", "attn.add_q_proj"), ("txt_attn_k", "attn.add_k_proj"), ("txt_attn_v", "attn.add_v_proj"),
             ("img_attn_proj", "attn.to_out.0"), ("txt_attn_proj", "attn.to_add_out")]
    out = [(f"double_blocks.0.{a}", (h, h), d + t) for a, t in names]
    return out + [
        ("double_blocks.0.img_mlp.fc1", (mlp, h), d + "ff.net.0.proj"), ("double_blocks.0.img_mlp.fc2", (h, mlp), d + "ff.net.2"),
        ("double_blocks.0.txt_mlp.fc1", (mlp, h), d + "ff_context.net.0.proj"),
        ("double_blocks.0.txt_mlp.fc2", (h, mlp), d + "ff_context.net.2"),
        ("double_blocks.0.img_mod.linear", (6 * h, h), d + "norm1.linear"),
        ("double_blocks.0.txt_mod.linear", (6 * h, h), d + "norm1_context.linear"),
    ]


def _random_set(shapes, seed):
    """{name: (A [r, in], B [out, r], alpha)}, one alpha per module so a wrong pairing shows."""
    gen = torch.Generator().manual_seed(seed)
    return {name: (torch.randn(RANK, i, generator=gen), torch.randn(o, RANK, generator=gen), 1.0 + n)
            for n, (name, (o, i)) in enumerate(shapes)}


def _kohya(name):
    return "lora_unet_" + name.replace(".", "_")


def _assert_deltas(lora, expected):
    """`expected`: target -> (scale, B, A)."""
    assert sorted(lora.targets) == sorted(expected)
    for target, (scale, b, a) in expected.items():
        torch.testing.assert_close(lora.targets[target].delta(), scale * b @ a, rtol=1e-5, atol=1e-5, msg=target)
    assert lora.unmatched == []


H13, MLP13 = 20, 80  # tiny_transformer: 2 heads x 10, mlp_ratio 4
MODULES_13B = _modules_13b(H13, MLP13)
SET_13B = _random_set([(m[0], m[2]) for m in MODULES_13B], seed=1)


def _expected_13b(modules=MODULES_13B, lora_set=SET_13B):
    """target -> (scale, B rows, A): the delta is scale * B @ A."""
    out = {}
    for name, _, _, targets in modules:
        a, b, alpha = lora_set[name]
        for target, rows in targets:
            out[target] = (alpha / RANK, b[rows], a)
    return out


def _file_13b(convention, prefix="", modules=MODULES_13B, lora_set=SET_13B):
    state = {}
    for name, comfy, _, targets in modules:
        a, b, alpha = lora_set[name]
        if convention == "original":  # no alpha key: trainers bake alpha / rank into the weights
            state[f"{prefix}{name}.lora_A.weight"], state[f"{prefix}{name}.lora_B.weight"] = a, b * (alpha / RANK)
        elif convention == "diffusers":
            for target, rows in targets:
                state[f"transformer.{target}.lora_A.weight"] = a
                state[f"transformer.{target}.lora_B.weight"] = b[rows] * (alpha / RANK)
        else:
            stem = _kohya(name) if convention == "kohya" else f"diffusion_model.{comfy}"
            state[f"{stem}.lora_down.weight"], state[f"{stem}.lora_up.weight"] = a, b
            state[f"{stem}.alpha"] = torch.tensor(alpha)
    return state


def _save(tmp_path, state, name="lora.safetensors"):
    path = tmp_path / name
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def model_13b():
    return tiny_transformer(text_dim=16, pooled_dim=8)


@pytest.fixture(scope="module")
def model_15():
    return tiny_transformer15(text_dim=16, byt5_dim=8, image_dim=12, layers=1)


@pytest.mark.parametrize("convention,prefix", [("original", "transformer."), ("original", "diffusion_model."),
                                               ("kohya", ""), ("comfy", ""), ("diffusers", "")])
def test_13b_every_convention_gives_the_hand_computed_delta(tmp_path, model_13b, convention, prefix):
    lora = read_lora_13b(_save(tmp_path, _file_13b(convention, prefix)))
    _assert_deltas(lora, _expected_13b())
    assert lora.family == "hunyuan_video_13b" and lora.name == "lora.safetensors"
    assert check_against(lora, model_13b) == []


def test_13b_comfy_bias_and_dense_deltas_split_by_rows(tmp_path, model_13b):
    gen = torch.Generator().manual_seed(2)
    qkv_b, linear1_b = torch.randn(3 * H13, generator=gen), torch.randn(3 * H13 + MLP13, generator=gen)
    proj, norm = torch.randn(H13, H13, generator=gen), torch.randn(H13, generator=gen)
    state = {
        "diffusion_model.double_blocks.0.img_attn.qkv.diff_b": qkv_b,
        "diffusion_model.single_blocks.0.linear1.diff_b": linear1_b,
        "diffusion_model.single_blocks.0.linear1.lora_down.weight": SET_13B["single_blocks.0.linear1"][0],
        "diffusion_model.single_blocks.0.linear1.lora_up.weight": SET_13B["single_blocks.0.linear1"][1],
        "diffusion_model.double_blocks.0.img_attn.proj.diff": proj,
        "diffusion_model.txt_in.individual_token_refiner.blocks.0.norm1.diff": norm,
    }
    lora = read_lora_13b(_save(tmp_path, state))
    d, s = "transformer_blocks.0.attn.", "single_transformer_blocks.0."
    for i, target in enumerate([d + "to_q", d + "to_k", d + "to_v"]):
        torch.testing.assert_close(lora.targets[target].bias, qkv_b[i * H13:(i + 1) * H13])
    a, b, _ = SET_13B["single_blocks.0.linear1"]
    mlp = lora.targets[s + "proj_mlp"]
    torch.testing.assert_close(mlp.bias, linear1_b[3 * H13:])
    torch.testing.assert_close(mlp.delta(), b[3 * H13:] @ a)  # no alpha key: scale 1
    torch.testing.assert_close(lora.targets[d + "to_out.0"].delta(), proj)
    torch.testing.assert_close(lora.targets["context_embedder.token_refiner.refiner_blocks.0.norm1"].weight, norm)
    assert check_against(lora, model_13b) == []


def test_unmatched_keys_are_reported_by_name(tmp_path, model_13b):
    state = _file_13b("kohya")
    stray = ["lora_unet_double_blocks_0_img_attn_nonsense.lora_down.weight",
             "lora_unet_double_blocks_0_img_attn_nonsense.lora_up.weight", "text_encoder.something.weight",
             "lora_unet_double_blocks_0_img_mlp_fc1.orphan"]
    for key in stray:
        state[key] = torch.zeros(RANK, RANK)
    lora = read_lora_13b(_save(tmp_path, state))
    assert sorted(lora.unmatched) == sorted(stray)
    assert len(lora.targets) == len(_expected_13b())
    messages = check_against(lora, model_13b)
    assert all(any(key in m for m in messages) for key in stray)


def test_a_target_of_another_shape_is_skipped_with_a_message(tmp_path, model_13b):
    state = _file_13b("kohya")
    gen = torch.Generator().manual_seed(3)
    state["lora_unet_img_in_proj.lora_down.weight"] = torch.randn(RANK, 33, 1, 2, 2, generator=gen)  # I2V v1 channels
    state["lora_unet_img_in_proj.lora_up.weight"] = torch.randn(H13, RANK, 1, 1, 1, generator=gen)
    lora = read_lora_13b(_save(tmp_path, state))
    messages = check_against(lora, model_13b)
    assert len(messages) == 1 and "x_embedder.proj" in messages[0] and "(20, 132)" in messages[0], messages
    assert "x_embedder.proj" not in lora.targets and len(lora.targets) == len(_expected_13b())


def test_a_conv_lora_on_img_in_is_flattened(tmp_path, model_13b):
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randn(RANK, 16, 1, 2, 2, generator=gen), torch.randn(H13, RANK, 1, 1, 1, generator=gen)
    lora = read_lora_13b(_save(tmp_path, {"img_in.proj.lora_A.weight": a, "img_in.proj.lora_B.weight": b}))
    expected = (b.flatten(1) @ a.flatten(1)).reshape(model_13b.x_embedder.proj.weight.shape)
    torch.testing.assert_close(lora.targets["x_embedder.proj"].delta().reshape(expected.shape), expected)
    assert check_against(lora, model_13b) == []


H15, MLP15 = 48, 192  # tiny_transformer15: 2 heads x 24, mlp_ratio 4
MODULES_15 = _modules_15(H15, MLP15)
SET_15 = _random_set([(m[0], m[1]) for m in MODULES_15], seed=5)
EXPECTED_15 = {target: (SET_15[name][2] / RANK, SET_15[name][1], SET_15[name][0]) for name, _, target in MODULES_15}
COMFY_15 = {"img_mlp_fc1": "img_mlp_0", "img_mlp_fc2": "img_mlp_2", "img_mod_linear": "img_mod_lin",
            "txt_mlp_fc1": "txt_mlp_0", "txt_mlp_fc2": "txt_mlp_2", "txt_mod_linear": "txt_mod_lin"}


def _musubi_15():
    state = {}
    for name, _, _ in MODULES_15:
        a, b, alpha = SET_15[name]
        stem = _kohya(name)
        state.update({f"{stem}.lora_down.weight": a, f"{stem}.lora_up.weight": b, f"{stem}.alpha": torch.tensor(alpha)})
    return state


def _comfy_15(dotted):
    """As musubi's HV1.5 -> ComfyUI converter writes it: q/k/v fused with a block-diagonal up and alpha x 3."""
    state = {}
    for name, _, _ in MODULES_15:
        a, b, alpha = SET_15[name]
        inner = name.split(".", 2)[2].replace(".", "_")
        if inner[-2:] in ("_q", "_k", "_v"):
            continue
        stem = _kohya(name).replace(inner, COMFY_15.get(inner, inner))
        state.update({f"{stem}.lora_down.weight": a, f"{stem}.lora_up.weight": b, f"{stem}.alpha": torch.tensor(alpha)})
    for side in ("img", "txt"):
        parts = [SET_15[f"double_blocks.0.{side}_attn_{x}"] for x in "qkv"]
        up = torch.zeros(3 * H15, 3 * RANK)
        for i, (_, b, _) in enumerate(parts):
            up[i * H15:(i + 1) * H15, i * RANK:(i + 1) * RANK] = b
        stem = f"lora_unet_double_blocks_0_{side}_attn_qkv"
        state.update({f"{stem}.lora_down.weight": torch.cat([p[0] for p in parts]), f"{stem}.lora_up.weight": up,
                      f"{stem}.alpha": torch.tensor(parts[0][2] * 3)})
    if dotted:  # ComfyUI's own module names instead of kohya's underscores
        state = {k.replace("lora_unet_double_blocks_0_", "diffusion_model.double_blocks.0.")
                 .replace("attn_qkv", "attn.qkv").replace("mlp_0", "mlp.0").replace("mlp_2", "mlp.2")
                 .replace("mod_lin", "mod.lin").replace("attn_proj", "attn.proj"): v for k, v in state.items()}
    return state


def test_15_musubi_split_qkv(tmp_path, model_15):
    lora = read_lora_15(_save(tmp_path, _musubi_15()))
    _assert_deltas(lora, EXPECTED_15)
    assert lora.family == "hunyuan_video_15"
    assert check_against(lora, model_15) == []


@pytest.mark.parametrize("dotted", [False, True])
def test_15_comfy_fused_block_diagonal_qkv_splits_to_rank_r(tmp_path, model_15, dotted):
    lora = read_lora_15(_save(tmp_path, _comfy_15(dotted)))
    expected = dict(EXPECTED_15)
    for name, _, target in MODULES_15:  # the converter's one alpha (q's) serves k and v as well
        if name[-2:] in ("_k", "_v"):
            q = name[:-1] + "q"
            a, b, _ = SET_15[name]
            expected[target] = (SET_15[q][2] / RANK, b, a)
    _assert_deltas(lora, expected)
    assert lora.targets["transformer_blocks.0.attn.to_k"].down.shape[0] == RANK  # unused rank columns dropped
    assert check_against(lora, model_15) == []


def test_15_diffusers_names(tmp_path, model_15):
    state = {}
    for name, _, target in MODULES_15:
        a, b, alpha = SET_15[name]
        state[f"transformer.{target}.lora_A.weight"], state[f"transformer.{target}.lora_B.weight"] = a, b * (alpha / RANK)
    lora = read_lora_15(_save(tmp_path, state))
    _assert_deltas(lora, EXPECTED_15)
    assert check_against(lora, model_15) == []


def test_a_lora_of_the_other_family_is_refused_naming_the_file(tmp_path, model_13b, model_15):
    lora = read_lora_13b(_save(tmp_path, _musubi_15(), "hv15_style.safetensors"))
    with pytest.raises(LoraMismatchError, match=r"hv15_style\.safetensors does not fit .*hunyuan_video_13b"):
        check_against(lora, model_13b)
    lora = read_lora_15(_save(tmp_path, _file_13b("kohya"), "hv13_style.safetensors"))
    with pytest.raises(LoraMismatchError, match=r"hv13_style\.safetensors does not fit .*hunyuan_video_15"):
        check_against(lora, model_15)
    lora = read_lora_15(_save(tmp_path, {"lora_unet_single_blocks_0_linear1.alpha": torch.tensor(1.0)}, "x.safetensors"))
    with pytest.raises(LoraMismatchError, match="no module of the hunyuan_video_15 family"):
        check_against(lora, model_15)


def test_loha_and_lokr_become_their_dense_delta(tmp_path, model_13b):
    gen = torch.Generator().manual_seed(6)
    w1a, w1b, w2a, w2b = (torch.randn(3 * H13, 2, generator=gen), torch.randn(2, H13, generator=gen),
                          torch.randn(3 * H13, 2, generator=gen), torch.randn(2, H13, generator=gen))
    k1, k2a, k2b = torch.randn(7, 4, generator=gen), torch.randn(20, 3, generator=gen), torch.randn(3, 5, generator=gen)
    qkv, linear1 = "lora_unet_double_blocks_0_img_attn_qkv", "lora_unet_single_blocks_0_linear1"
    state = {f"{qkv}.hada_w1_a": w1a, f"{qkv}.hada_w1_b": w1b, f"{qkv}.hada_w2_a": w2a, f"{qkv}.hada_w2_b": w2b,
             f"{qkv}.alpha": torch.tensor(1.0), f"{linear1}.lokr_w1": k1, f"{linear1}.lokr_w2_a": k2a,
             f"{linear1}.lokr_w2_b": k2b, f"{linear1}.alpha": torch.tensor(6.0), "lokr_factor": torch.tensor(-1)}
    lora = read_lora_13b(_save(tmp_path, state))
    loha = (w1a @ w1b) * (w2a @ w2b) * (1.0 / 2)  # ComfyUI: alpha / rank of w1_b
    lokr = torch.kron(k1, k2a @ k2b) * (6.0 / 3)  # ComfyUI: alpha / rank of the decomposed w2
    d, s = "transformer_blocks.0.attn.", "single_transformer_blocks.0."
    for i, target in enumerate([d + "to_q", d + "to_k", d + "to_v"]):
        torch.testing.assert_close(lora.targets[target].delta(), loha[i * H13:(i + 1) * H13])
    for target, rows in [(s + "attn.to_q", (0, H13)), (s + "attn.to_v", (2 * H13, 3 * H13)), (s + "proj_mlp", (60, 140))]:
        torch.testing.assert_close(lora.targets[target].delta(), lokr[rows[0]:rows[1]])
    assert lora.unmatched == [] and check_against(lora, model_13b) == []


@pytest.mark.parametrize("suffix,kind", [("hada_t1", "Tucker"), ("lokr_t2", "Tucker"), ("dora_scale", "DoRA")])
def test_variants_that_need_more_are_refused_by_name(tmp_path, suffix, kind):
    state = _file_13b("kohya")
    state[f"lora_unet_double_blocks_0_img_attn_qkv.{suffix}"] = torch.zeros(2, 2)
    with pytest.raises(LoraFormatError, match=rf"lora\.safetensors: lora_unet_double_blocks_0_img_attn_qkv\.{suffix}.*{kind}"):
        read_lora_13b(_save(tmp_path, state))


@pytest.mark.parametrize("convention", ["original", "diffusers"])
def test_parity_with_diffusers_converter(tmp_path, convention):
    """diffusers' HunyuanVideo LoRA converter hard-codes width 3072 (SPEC-lora §1c), so this file is 3072 wide;
    deltas are compared on probe vectors (dense 3072-wide deltas would cost seconds and gigabytes). Left out: the
    refiner's self_attn_qkv and the final modulation, where diffusers also chunks or swaps A (SPEC-lora §1c)."""
    from diffusers.loaders.lora_pipeline import HunyuanVideoLoraLoaderMixin

    modules = [m for m in _modules_13b(3072, 3072) if not m[0].startswith(("txt_in", "final_layer"))]
    lora_set = _random_set([(m[0], m[2]) for m in modules], seed=7)
    _save(tmp_path, _file_13b(convention, "transformer.", modules, lora_set), "f.safetensors")
    expected = _expected_13b(modules, lora_set)
    ours = read_lora_13b(tmp_path / "f.safetensors")
    theirs = HunyuanVideoLoraLoaderMixin.lora_state_dict(str(tmp_path), weight_name="f.safetensors")
    theirs = {k[len("transformer."):-len(".lora_A.weight")]: (1.0, theirs[k.replace("lora_A", "lora_B")], v)
              for k, v in theirs.items() if k.endswith(".lora_A.weight")}
    assert sorted(theirs) == sorted(ours.targets) == sorted(expected)
    probe = torch.randn(3072 * 2, 3, generator=torch.Generator().manual_seed(8))
    for target, (scale, b, a) in expected.items():
        low, x = ours.targets[target], probe[: a.shape[1]]
        want = scale * b @ (a @ x)
        torch.testing.assert_close(low.scale * low.up @ (low.down @ x), want, rtol=1e-5, atol=1e-4, msg=target)
        _, b_d, a_d = theirs[target]
        torch.testing.assert_close(b_d @ (a_d @ x), want, rtol=1e-5, atol=1e-4, msg=target)
