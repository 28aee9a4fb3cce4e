"""Prompt templates and text encoding: Llama-3 hidden states (template cropped) plus pooled CLIP-L."""

from __future__ import annotations

import torch

from ..denoise.text_embeds import TextEmbeds

T2V_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
# The authors' default negative prompt for T2V (hyvideo/constants.py), used where theirs is: an empty one.
T2V_NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, bad teeth, "
    "bad eyes, bad limbs, distortion"
)
MAX_PROMPT_TOKENS = 256
CLIP_MAX_TOKENS = 77
LLM_LAYERS_SKIPPED = 2  # the authors use the third-to-last hidden state


def template_crop_start(tokenizer, template: str) -> int:
    """Tokens of the template before the prompt (95 with the real Llama-3 tokenizer).

    Counted with the tokenizer in use rather than hard-coded, so the crop stays right for any
    tokenizer: the template without its placeholder and closing `<|eot_id|>`.
    """
    prefix = template[: template.index("{}")]
    return len(tokenizer(prefix, add_special_tokens=True)["input_ids"])


def ensure_pad_token(tokenizer) -> None:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.convert_ids_to_tokens(0)


@torch.no_grad()
def encode_llm(encoders, prompt: str, device, template: str = T2V_TEMPLATE, max_tokens: int = MAX_PROMPT_TOKENS):
    tokenizer = encoders.llm_tokenizer
    ensure_pad_token(tokenizer)
    crop = template_crop_start(tokenizer, template)
    tokens = tokenizer(
        template.format(prompt),
        max_length=max_tokens + crop,
        padding="max_length",
        truncation=True,
        return_tensors="pt",
    )
    ids = tokens["input_ids"].to(device)
    mask = tokens["attention_mask"].to(device)
    hidden = encoders.llm(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    states = hidden[-(LLM_LAYERS_SKIPPED + 1)]
    return states[:, crop:], mask[:, crop:]


@torch.no_grad()
def encode_clip(encoders, prompt: str, device) -> torch.Tensor:
    tokens = encoders.clip_tokenizer(
        prompt, max_length=CLIP_MAX_TOKENS, padding="max_length", truncation=True, return_tensors="pt"
    )
    return encoders.clip(tokens["input_ids"].to(device), output_hidden_states=False).pooler_output


def encode_prompt(encoders, prompt: str, device="cpu", template: str = T2V_TEMPLATE) -> TextEmbeds:
    """Encode one prompt the way the authors' T2V pipeline does, surrounding whitespace stripped first as
    their `hyvideo/inference.py` does (a ComfyUI text box often ends in a newline)."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    embeds, mask = encode_llm(encoders, prompt, device, template)
    pooled = encode_clip(encoders, prompt, device)
    return TextEmbeds(embeds, mask, pooled)
