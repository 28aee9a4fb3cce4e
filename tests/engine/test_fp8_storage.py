"""fp8 files stay fp8 in memory and compute like their dequantized bf16 form; bf16 files can be stored in fp8."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import PACK_ROOT
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import load_transformer
from hunyuan_video_suite.pipelines.weights.fp8_linear import (
    ScaledFp8Linear,
    dequantize_fp8,
    fp8_matmul_available,
    quantize_fp8,
    set_fp8_compute,
)


def _inputs(model, seed=0, frames=2, size=4):
    g = torch.Generator().manual_seed(seed)
    config = model.config
    return dict(
        hidden_states=torch.randn(1, config.in_channels, frames, size, size, generator=g),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 7, config.text_embed_dim, generator=g),
        encoder_attention_mask=torch.tensor([[1, 1, 1, 1, 1, 0, 0]]),
        pooled_projections=torch.randn(1, config.pooled_projection_dim, generator=g),
        guidance=torch.tensor([6000.0]),
    )


def _run(model, inputs, dtype=torch.bfloat16):
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()}
    with torch.no_grad():
        return model(**cast, return_dict=False)[0].float()


def test_fp8_file_is_kept_in_fp8_and_computes_like_its_dequantized_bf16_form(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, seed=11)
    path = save_transformer(model, tmp_path / "t2v_fp8_scaled.safetensors", fp8=True)
    kept = load_transformer(path)  # auto: fp8 stays fp8
    expanded = load_transformer(path, dtype="bf16")  # the old behaviour: the whole file in bf16
    layers = [m for m in kept.model.modules() if isinstance(m, ScaledFp8Linear)]
    assert layers and all(layer.weight.dtype == torch.float8_e4m3fn for layer in layers)
    assert kept.storage_dtype == torch.float8_e4m3fn and kept.dtype == torch.bfloat16
    assert not any(isinstance(m, ScaledFp8Linear) for m in expanded.model.modules())
    weight_bytes = lambda m: sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
    assert weight_bytes(kept.model) < 0.6 * weight_bytes(expanded.model)
    inputs = _inputs(kept.model)
    torch.testing.assert_close(_run(kept.model, inputs), _run(expanded.model, inputs), rtol=1.6e-2, atol=1e-2)


def test_bf16_file_stored_in_fp8_on_request(tmp_path):
    model = tiny_transformer(text_dim=24, pooled_dim=12, latent_channels=4, seed=12).to(torch.bfloat16)
    path = save_transformer(model, tmp_path / "t2v_bf16.safetensors")
    stored = load_transformer(path, dtype="fp8_e4m3fn")
    names = {n for n, m in stored.model.named_modules() if isinstance(m, ScaledFp8Linear)}
    assert names and all(n.startswith(("transformer_blocks.", "single_transformer_blocks.")) for n in names)
    assert stored.model.x_embedder.proj.weight.dtype == torch.bfloat16  # outside the blocks: as stored
    # The blocks' weights are their fp8 quantization; the model's output follows within fp8 accuracy.
    reference = load_transformer(path)
    for name in names:
        layer = stored.model.get_submodule(name)
        original = reference.model.get_submodule(name).weight.float()
        assert (dequantize_fp8(layer.weight, layer.scale_weight, torch.float32) - original).abs().max() <= (
            0.07 * original.abs().max()
        )
    inputs = _inputs(stored.model, seed=1)
    out, ref = _run(stored.model, inputs), _run(reference.model, inputs)
    assert (out - ref).abs().max() <= 0.1 * ref.abs().max()


def test_fp8_matmul_is_opt_in_and_agrees_with_bf16_compute():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32).to(torch.bfloat16)
    layer = ScaledFp8Linear.like(linear, torch.bfloat16)
    layer.weight, layer.scale_weight = quantize_fp8(linear.weight)
    layer.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)
    bf16_out = layer(x)
    assert set_fp8_compute(layer, True, device="cpu") is False  # no fp8 kernels on this device: stays bf16
    assert not layer.fp8_compute
    assert fp8_matmul_available("cpu") is False
    set_fp8_compute(layer, True)  # forced: torch implements _scaled_mm on CPU too, so the path is checked here
    fp8_out = layer(x)
    assert fp8_out.shape == bf16_out.shape == (3, 5, 32)
    assert (fp8_out.float() - bf16_out.float()).abs().max() <= 0.08 * bf16_out.float().abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp8_matmul_of_an_all_zero_input_gives_the_bias(dtype):
    """Its activation scale must not round to zero (0/0) in half precision."""
    linear = torch.nn.Linear(32, 16).to(dtype)
    layer = ScaledFp8Linear.like(linear, dtype)
    layer.weight, layer.scale_weight = quantize_fp8(linear.weight)
    layer.bias = torch.nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
    set_fp8_compute(layer, True)
    out = layer(torch.zeros(4, 32, dtype=dtype))
    torch.testing.assert_close(out, linear.bias.detach().expand(4, 16), rtol=0, atol=0)


LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    import conftest, torch, psutil
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import load_transformer
    import diffusers.models.transformers.transformer_hunyuan_video  # imports before the baseline
    def status(field):  # VmHWM: this process's peak RSS (ru_maxrss survives exec); RssFile: mapped file pages
        return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) * 1024
    base, file_base = psutil.Process().memory_info().rss, status("RssFile")
    loaded = load_transformer({path!r}, dtype={dtype!r})
    # every weight read once, so the file's mapped pages count too
    tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
    touched = sum(int(t.reshape(-1).view(torch.uint8).max()) for t in tensors)
    kept = sum(t.numel() * t.element_size() for t in tensors if t.dtype != torch.float8_e4m3fn)
    print(json.dumps({{"peak_over_base": status("VmHWM") - base, "mapped_over_base": status("RssFile") - file_base,
                      "not_fp8": kept, "storage": str(loaded.storage_dtype)}}))
    """
)


@pytest.mark.parametrize("fp8,dtype", [(True, "auto"), (False, "auto"), (False, "fp8_e4m3fn")],
                         ids=["fp8_file", "bf16_file", "bf16_file_stored_fp8"])
def test_loader_never_holds_a_second_copy_of_the_file(tmp_path, fp8, dtype):
    """Measured in a fresh process on a slice at the real head width (1 double + 2 single blocks, about
    90 MB in fp8; a bf16 copy of it would add twice that): peak RSS while loading stays within 1.25x
    the file size for fp8 and within 64 MB beyond the (mapped) file for bf16. A bf16 file stored as
    fp8 reads its cast weights instead of mapping them: the only file pages mapped are those of the
    weights kept bf16 (plus libraries loaded meanwhile), and the peak stays within 64 MB beyond the
    file (it was 1.6-2.5x the file with every weight read through the map)."""
    from diffusers import HunyuanVideoTransformer3DModel
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import rope_axes_for

    wide = HunyuanVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=8, attention_head_dim=128, num_layers=1,
        num_single_layers=2, num_refiner_layers=1, mlp_ratio=4.0, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=64, pooled_projection_dim=32, rope_axes_dim=rope_axes_for(128),
    )
    name = "slice_fp8_scaled.safetensors" if fp8 else "slice_bf16.safetensors"
    path = save_transformer(wide.to(torch.float32 if fp8 else torch.bfloat16), tmp_path / name, fp8=fp8)
    del wide
    size = path.stat().st_size
    script = LOAD_SCRIPT.format(tests=str(PACK_ROOT / "tests"), path=str(path), dtype=dtype)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=PACK_ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if fp8:
        assert report["storage"] == "torch.float8_e4m3fn"
        assert report["peak_over_base"] <= 1.25 * size, (report, size)
    elif dtype == "auto":
        assert report["storage"] == "torch.bfloat16"
        assert report["peak_over_base"] <= size + 64 * 2**20, (report, size)
    else:
        assert report["storage"] == "torch.float8_e4m3fn"
        assert report["mapped_over_base"] <= report["not_fp8"] + 16 * 2**20, report
        assert report["peak_over_base"] <= size + 64 * 2**20, (report, size)


def test_llava_llama3_fp8_file_stays_fp8_and_encodes_like_its_dequantized_form(tmp_path):
    from hunyuan_video_suite.pipelines.demo import tiny
    from hunyuan_video_suite.pipelines.hunyuan_video_13b.text_encoder_loading import llama_from_file

    encoders = tiny.tiny_text_encoders(seed=3)
    paths = tiny.save_text_encoders(encoders, tmp_path, layout="comfy", fp8=True)
    kept = llama_from_file(paths["llm"], torch.bfloat16)
    expanded = llama_from_file(paths["llm"], torch.float32).to(torch.bfloat16)
    layers = [m for m in kept.modules() if isinstance(m, ScaledFp8Linear)]
    assert len(layers) == 7 * kept.config.num_hidden_layers  # q, k, v, o, gate, up, down in every layer
    assert kept.dtype == torch.bfloat16
    ids = torch.tensor([[1, 5, 9, 40, 7, 3]])
    with torch.no_grad():
        a = kept(input_ids=ids, output_hidden_states=True).hidden_states[-3].float()
        b = expanded(input_ids=ids, output_hidden_states=True).hidden_states[-3].float()
    torch.testing.assert_close(a, b, rtol=1.6e-2, atol=2e-2)
