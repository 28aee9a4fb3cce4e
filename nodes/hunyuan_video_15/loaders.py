"""The HunyuanVideo 1.5 transformer loader node."""

from __future__ import annotations

from ...pipelines.hunyuan_video_15.transformer_loading import WEIGHT_DTYPES, load_transformer
from ...pipelines.hunyuan_video_15.variants import VARIANTS
from .. import host
from ..types import HV15_TRANSFORMER

CATEGORY = "HunyuanVideo Suite/HunyuanVideo 1.5"


class HYVSHV15TransformerLoader:
    DESCRIPTION = ("Loads a HunyuanVideo 1.5 transformer (T2V or I2V, 480p or 720p, CFG- or step-distilled) from "
                   "ComfyUI's repackaged file, the authors' folder or a diffusers folder; fp8 files stay fp8.")
    CATEGORY = CATEGORY
    RETURN_TYPES = (HV15_TRANSFORMER,)
    RETURN_NAMES = ("transformer",)
    OUTPUT_TOOLTIPS = ("The HunyuanVideo 1.5 transformer; the sampler takes the variant's recipe from it.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (host.model_choices("diffusion_models", with_diffusers=True), {"tooltip": "A file in models/diffusion_models (e.g. hunyuanvideo1.5_720p_t2v_fp16, "
                                                  "hunyuanvideo1.5_480p_i2v_step_distilled_fp8_scaled) or a folder in models/diffusers "
                                                  "(the authors' transformer/<version> folder or a diffusers pipeline)."}),
                "variant": (["auto", *VARIANTS], {"default": "auto", "tooltip": "Which 1.5 model this is. The weights tell only "
                                                  "the step-distilled model apart; auto reads the rest (480p/720p, T2V/I2V, "
                                                  "CFG-distilled, sparse) from the file or folder name or config.json. Set it "
                                                  "when a renamed file says nothing."}),
                "weight_dtype": (list(WEIGHT_DTYPES), {"default": "auto", "tooltip": "Precision the weights are kept in. auto: as "
                                                       "stored (fp8 files stay fp8 and compute in bf16). fp8_e4m3fn: store a "
                                                       "16-bit file's block weights in fp8 too. bf16/fp16/fp32: cast everything."}),
            }
        }

    def load(self, model, variant, weight_dtype):
        path = host.resolve_choice("diffusion_models", model)
        loaded = load_transformer(path, variant=variant, dtype=weight_dtype, device=host.offload_device())
        if loaded.notice:
            host.log.warning("%s", loaded.notice)
        return (loaded,)


NODE_CLASS_MAPPINGS = {"HYVS_HV15TransformerLoader": HYVSHV15TransformerLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"HYVS_HV15TransformerLoader": "HunyuanVideo Suite: HV1.5 Transformer Loader"}
