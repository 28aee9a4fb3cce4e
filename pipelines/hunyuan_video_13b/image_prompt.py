"""Prompts with a picture in them: LLaVA image tokens spliced into the Llama-3 prompt.

The I2V and HunyuanCustom text paths both run the Llama over a template with one `<image>`
placeholder whose single token is replaced by the vision tower's 576 image tokens, as
`LlavaModel.forward` does. It is done here on the Llama's input embeddings rather than through
a transformers LLaVA because ComfyUI users keep the language model (`text_encoders/`) and the
vision tower (`clip_vision/`) in separate files; a diffusers LLaVA folder goes the same way.
What each job then crops out of the hidden states differs (`encode_i2v_prompt` here, Custom's
recipe in its own module).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .prompt_encoding import (
    LLM_LAYERS_SKIPPED,
    MAX_PROMPT_TOKENS,
    TextEmbeds,
    encode_clip,
    ensure_pad_token,
    template_crop_start,
)
from .vision_loading import vision_constants

IMAGE_TOKEN = "<image>"
I2V_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following aspects "
    "according to the reference image: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
I2V_NEGATIVE_PROMPT = "deformation, a poor composition and deformed video, bad teeth, bad eyes, bad limbs"
ASSISTANT_HEADER_TOKENS = 4  # <|eot_id|> <|start_header_id|> assistant <|end_header_id|>, cut by the authors
END_HEADER = "<|end_header_id|>"


class MissingVisionError(ValueError):
    """The text encoders have no vision tower, so they cannot read an image prompt."""


@dataclass
class ImagePromptStates:
    """Llama hidden states of a prompt whose `<image>` token became the image tokens.

    `states`/`mask` run over the expanded sequence; `image_start` is where the image tokens begin
    and `token_ids` are the tokenizer's ids before expansion (the crops are counted on them).
    """

    states: torch.Tensor  # [1, L + N - 1, D]
    mask: torch.Tensor  # [1, L + N - 1]
    image_start: int
    num_image_tokens: int
    token_ids: torch.Tensor  # [L]

    def expanded(self, index: int) -> int:
        """Where token `index` of the unexpanded prompt sits in the expanded sequence."""
        return index if index <= self.image_start else index + self.num_image_tokens - 1


def require_vision(encoders):
    vision = getattr(encoders, "vision", None)
    if vision is None:
        raise MissingVisionError(
            "text_encoders have no LLaVA vision tower, which image prompts need: put llava_llama3_vision.safetensors "
            "in ComfyUI's models/clip_vision folder and add a 'HunyuanVideo Suite: Load LLaVA Vision' node after the "
            "text encoder loader (or load a diffusers HunyuanVideo-I2V folder, whose text_encoder is a whole LLaVA)"
        )
    return vision


def image_processor(size: int):
    """CLIP's preprocessing (shortest side to `size`, bicubic; centre crop; CLIP mean/std) from transformers.

    The PIL backend is asked for by name so the pixels do not depend on whether torchvision is installed.
    """
    try:
        from transformers import CLIPImageProcessorPil as processor_class
    except ImportError:
        from transformers import CLIPImageProcessor as processor_class
    c = vision_constants()
    return processor_class(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, do_center_crop=True,
        do_resize=True, do_rescale=True, do_normalize=True, image_mean=c["image_mean"], image_std=c["image_std"],
        do_convert_rgb=True,
    )


def to_uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    """ComfyUI IMAGE `[B, H, W, 3]` in 0..1 as 8-bit RGB arrays, as a saved PNG would hold them."""
    return [(frame.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy() for frame in images]


def vision_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """IMAGE `[B, H, W, 3]` in 0..1 to the vision tower's input `[B, 3, size, size]`."""
    from PIL import Image

    pil = [Image.fromarray(array) for array in to_uint8_images(images)]
    return image_processor(size)(pil, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def image_tokens(encoders, images: torch.Tensor, device) -> torch.Tensor:
    """The LLaVA image tokens `[B, 576, D]` of IMAGE `images`."""
    vision = require_vision(encoders)
    return vision(vision_pixels(images, vision.image_size).to(device))


@torch.no_grad()
def llm_states_with_image(encoders, text: str, tokens: torch.Tensor, device, max_length: int,
                          zero_padding: bool = False) -> ImagePromptStates:
    """Run the Llama over `text` (one `<image>`, padded to `max_length` tokens) with `tokens` in its place.

    `zero_padding`: the pad tokens' input embeddings are zeros, as the legacy LLaVA merge of the
    transformers HunyuanCustom pins (4.41.2, `_merge_input_ids_with_image_features`) leaves them. Only
    HunyuanCustom reads the states at those positions (its mask quirk, `custom_prompt`); I2V masks them."""
    tokenizer = encoders.llm_tokenizer
    ensure_pad_token(tokenizer)
    encoded = tokenizer(text, max_length=max_length, padding="max_length", truncation=True, return_tensors="pt")
    ids, mask = encoded["input_ids"][0], encoded["attention_mask"][0]
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    where = (ids == image_id).nonzero().flatten().tolist()
    if len(where) != 1:
        raise ValueError(f"an image prompt needs exactly one {IMAGE_TOKEN} token within {max_length} tokens, found {len(where)}")
    start, count = where[0], tokens.shape[1]
    llm = encoders.llm
    embeds = llm.get_input_embeddings()(ids.to(device)).unsqueeze(0)
    if zero_padding:
        embeds = embeds.masked_fill((ids == tokenizer.pad_token_id).to(device)[None, :, None], 0.0)
    embeds = torch.cat([embeds[:, :start], tokens.to(device=device, dtype=embeds.dtype), embeds[:, start + 1:]], dim=1)
    full_mask = torch.cat([mask[:start], mask.new_ones(count), mask[start + 1:]]).unsqueeze(0).to(device)
    # Positions as LLaVA's HunyuanVideo pipelines pass them: counted over real tokens, padding at 1.
    positions = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 1)
    hidden = llm(inputs_embeds=embeds, attention_mask=full_mask, position_ids=positions, output_hidden_states=True)
    return ImagePromptStates(hidden.hidden_states[-(LLM_LAYERS_SKIPPED + 1)], full_mask, start, count, ids)


def _assistant_start(prompt: ImagePromptStates, tokenizer) -> int:
    """Index just past the assistant header (the end of the ids when truncation cut it off, as the authors do)."""
    end_header = tokenizer.convert_tokens_to_ids(END_HEADER)
    found = (prompt.token_ids == end_header).nonzero().flatten().tolist()
    return found[-1] + 1 if len(found) >= 3 else len(prompt.token_ids)


@torch.no_grad()
def encode_i2v_prompt(encoders, prompt: str, image: torch.Tensor, interleave: int, device="cpu",
                      template: str = I2V_TEMPLATE) -> TextEmbeds:
    """The authors' I2V text embedding: image tokens (every `interleave`-th) before the cropped prompt tokens.

    The prompt is stripped of surrounding whitespace first (the authors' `hyvideo/inference.py`); the
    template up to the prompt is cropped as for T2V, and so is the assistant header after it; the
    attention mask follows (ones for the image tokens).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be text, got {type(prompt).__name__}")
    prompt = prompt.strip()
    if interleave < 1:
        raise ValueError(f"image_interleave must be 1 or more, got {interleave}")
    tokenizer = encoders.llm_tokenizer
    crop = template_crop_start(tokenizer, template)
    tokens = image_tokens(encoders, image, device)
    states = llm_states_with_image(encoders, template.format(prompt), tokens, device, MAX_PROMPT_TOKENS + crop)
    assistant = _assistant_start(states, tokenizer)
    keep = [*range(states.expanded(crop), states.expanded(assistant - ASSISTANT_HEADER_TOKENS)),
            *range(states.expanded(assistant), states.states.shape[1])]
    image_part = states.states[:, states.image_start: states.image_start + states.num_image_tokens][:, ::interleave]
    embeds = torch.cat([image_part, states.states[:, keep]], dim=1)
    mask = torch.cat([states.mask.new_ones(1, image_part.shape[1]), states.mask[:, keep]], dim=1)
    return TextEmbeds(embeds, mask, encode_clip(encoders, prompt, device))
