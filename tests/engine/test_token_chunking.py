"""Feed-forwards over token chunks give the model's own output, and lower the counted peak."""

import torch
from diffusers import HunyuanVideoTransformer3DModel
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import rope_axes_for
from hunyuan_video_suite.pipelines.memory import token_chunking
from hunyuan_video_suite.pipelines.memory.live_bytes import PeakTensorBytes


def _model():
    torch.manual_seed(0)
    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2, num_single_layers=2,
        num_refiner_layers=1, mlp_ratio=4.0, patch_size=2, patch_size_t=1, guidance_embeds=True, text_embed_dim=24,
        pooled_projection_dim=12, rope_axes_dim=rope_axes_for(10),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 4, 3, 16, 16, generator=g), timestep=torch.tensor([400.0]),
        encoder_hidden_states=torch.randn(1, 7, 24, generator=g), encoder_attention_mask=torch.tensor([[1] * 5 + [0] * 2]),
        pooled_projections=torch.randn(1, 12, generator=g), guidance=torch.tensor([6000.0]),
    )


def test_chunked_feed_forwards_give_the_same_output_and_can_be_switched_off():
    model = _model()
    with torch.no_grad(), PeakTensorBytes() as whole_count:
        whole = model(**_inputs(), return_dict=False)[0]
    token_chunking.enable(model, chunk_tokens=37)  # 199 tokens: chunks of 37 leave a ragged last one
    with torch.no_grad(), PeakTensorBytes() as chunked_count:
        chunked = model(**_inputs(), return_dict=False)[0]
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    assert chunked_count.peak < whole_count.peak
    token_chunking.disable(model)
    assert "forward" not in model.single_transformer_blocks[0].__dict__
    assert "forward" not in model.transformer_blocks[0].ff.__dict__
    with torch.no_grad():
        again = model(**_inputs(), return_dict=False)[0]
    torch.testing.assert_close(again, whole, rtol=0, atol=0)
