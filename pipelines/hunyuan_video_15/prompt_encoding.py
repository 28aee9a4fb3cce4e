"""Encoding a HunyuanVideo 1.5 prompt exactly as the authors' pipeline does (SPEC-hv15 §4).

Qwen2.5-VL: the video system prompt in a chat with the user's prompt (" " when empty), the generation
prompt appended, tokenized to 1000 + crop_start tokens (right padding, truncated), the third-to-last hidden
state without the final norm, the template's tokens before the prompt cropped off. crop_start is computed
with the tokenizer in use as the authors do (108 with the real one; diffusers hard-codes 108).

byT5: the quoted text of the prompt ("..." or “...”), deduplicated when there is more than one, formatted
`Text "A". Text "B". `, 256 tokens; zeros with an all-zero mask when nothing is quoted.

Where this differs from diffusers: the negative prompt. The authors encode it with the same Qwen template
but always with the empty byT5 input (`_process_single_byt5_prompt("")`); diffusers runs the quote regex on
the negative prompt too. `encode_pair` follows the authors. Unlike the 13B pipeline, the authors do not
strip the prompt, so neither does this.

`encoders` is a `text_encoder_loading.TextEncoders15` (not imported: that module computes its crop_start here).
"""

from __future__ import annotations

import re

import torch

from ..weights.checkpoints import CheckpointError
from .text_embeds import TextEmbeds15

# The authors' video system prompt (hyvideo/models/text_encoders/__init__.py PROMPT_TEMPLATE_ENCODE_VIDEO_JSON):
# written with backslash line continuations, so each numbered aspect follows a run of 9 spaces; no newlines.
_ASPECTS = (
    "1. The main content and theme of the video.",
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects.",
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects.",
    "4. background environment, light, style and atmosphere.",
    "5. camera angles, movements, and transitions used in the video.",
)
SYSTEM_PROMPT = "You are a helpful assistant. Describe the video by detailing the following aspects:" + "".join(
    " " * 9 + aspect for aspect in _ASPECTS)
MAX_QWEN_TOKENS = 1000  # prompt tokens after the crop
QWEN_LAYERS_SKIPPED = 2  # hidden_states[-3]
BYT5_MAX_TOKENS = 256
USER_MARKER = "<|im_start|>user\n"  # the prompt starts right after it
CROP_PROBE = "a photo of a cat"  # what the authors tokenize to find crop_start
CROP_PROBE_TOKENS = 256  # their first pass's max_length
GLYPH_PATTERN = re.compile(r"\"(.*?)\"|“(.*?)”")


def chat(prompt: str) -> list[dict[str, str]]:
    """The authors' video template filled in; an empty prompt becomes " " (their `prevent_empty_text`)."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt if prompt else " "}]


def _tokenize_chat(tokenizer, prompt: str, max_length: int) -> dict[str, torch.Tensor]:
    return tokenizer.apply_chat_template(
        [chat(prompt)], add_generation_prompt=True, tokenize=True, return_dict=True, padding="max_length",
        max_length=max_length, truncation=True, return_tensors="pt",
    )


def video_crop_start(tokenizer) -> int:
    """Template tokens before the prompt, found as the authors' `calculate_crop_start`: tokenize the template
    around "a photo of a cat" (256 tokens) and return the position after the tokens of `<|im_start|>user\\n`.
    The authors fall back to 0 (no crop) when the marker is missing; a tokenizer without it is not Qwen2.5's,
    so this refuses it instead."""
    ids = _tokenize_chat(tokenizer, CROP_PROBE, CROP_PROBE_TOKENS)["input_ids"][0].tolist()
    marker = tokenizer(USER_MARKER, add_special_tokens=False)["input_ids"]
    for start in range(len(ids) - len(marker) + 1):
        if ids[start:start + len(marker)] == marker:
            return start + len(marker)
    raise CheckpointError(f"the tokenizer's chat template has no {USER_MARKER!r} within {CROP_PROBE_TOKENS} tokens: "
                          "it is not the Qwen2.5-VL tokenizer")


def glyph_texts(prompt: str) -> list[str]:
    """The quoted texts, in order; duplicates dropped only when there is more than one (as the authors)."""
    found = [double or curly for double, curly in GLYPH_PATTERN.findall(prompt)]
    return list(dict.fromkeys(found)) if len(found) > 1 else found


def glyph_prompt(texts: list[str]) -> str | None:
    """The authors' `MultilingualPromptFormat.format_prompt` with no colour or font: `Text "A". Text "B". `."""
    return "".join(f'Text "{text}". ' for text in texts) or None


@torch.no_grad()
def encode_qwen(encoders, prompt: str, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """[1, 1000, hidden] states of the tokens after the template's start, and their mask."""
    crop = encoders.crop_start
    tokens = _tokenize_chat(encoders.qwen_tokenizer, prompt, MAX_QWEN_TOKENS + crop)
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    hidden = encoders.qwen(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    return hidden[-(QWEN_LAYERS_SKIPPED + 1)][:, crop:], mask[:, crop:]


@torch.no_grad()
def encode_glyphs(encoders, text: str | None, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """[1, 256, d_model] byT5 states of the formatted glyph text and their mask; zeros and a zero mask for None."""
    if text is None:
        width = encoders.byt5.config.d_model
        return (torch.zeros(1, BYT5_MAX_TOKENS, width, device=device),
                torch.zeros(1, BYT5_MAX_TOKENS, dtype=torch.int64, device=device))
    tokens = encoders.byt5_tokenizer(text, padding="max_length", max_length=BYT5_MAX_TOKENS, truncation=True,
                                     add_special_tokens=True, return_tensors="pt")
    ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
    return encoders.byt5(ids, attention_mask=mask.float())[0], mask


def encode_prompt(encoders, prompt: str, *, glyphs: bool = True, device="cpu") -> TextEmbeds15:
    """One prompt as the authors encode it (T2V and I2V alike: both use the video template). `glyphs=False`
    gives the empty byT5 input the authors use for the negative branch whatever it quotes."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be text, got {type(prompt).__name__}")
    qwen, qwen_mask = encode_qwen(encoders, prompt, device)
    byt5, byt5_mask = encode_glyphs(encoders, glyph_prompt(glyph_texts(prompt)) if glyphs else None, device)
    return TextEmbeds15(qwen=qwen, qwen_mask=qwen_mask, byt5=byt5, byt5_mask=byt5_mask)


def encode_pair(encoders, prompt: str, negative_prompt: str = "", device="cpu"
                ) -> tuple[TextEmbeds15, TextEmbeds15]:
    """(positive, negative) for classifier-free guidance, the negative built as the authors do: the Qwen
    template around `negative_prompt` (their default is "", encoded as " "), and no glyph text."""
    return (encode_prompt(encoders, prompt, device=device),
            encode_prompt(encoders, negative_prompt, glyphs=False, device=device))
