"""HunyuanCustom's text path: the T2V template, a sentence naming the subject, and the reference's image tokens.

As the authors' code does it (hymm_sp/text_encoder and the Custom pipeline's encode_prompt):
- the Llama reads `T2V_TEMPLATE.format(prompt) + "\\nThe {subject} looks like<image>"` (at most 256
  tokens after the template, as for T2V), the `<image>` token replaced by all the image tokens of
  the reference padded white to a square;
- the hidden states are cropped after the template (95 tokens with the real tokenizer), image
  tokens included where they sit;
- the mask is the tokenizer's (one entry for `<image>`) with the N - 1 extra image tokens' ones
  appended at the *end* rather than where those tokens sit. The joint attention only counts the
  ones, but the token refiner reads the mask position by position, so this quirk is kept: the model
  was trained with it;
- the pad tokens' input embeddings are zeros (the legacy LLaVA merge of their transformers 4.41.2);
  through the mask quirk the refiner reads those positions when the prompt is short;
- the subject defaults to "object", as their dataset loader and demo;
- the negative branch reads an all-white image, and its mask is shortened by N - 1 tokens;
  its sentence names the text encoder's own default subject, "person", whatever the positive one
  says (their negative call does not pass the subject on).
"""

from __future__ import annotations

import torch

from .image_prompt import IMAGE_TOKEN, image_tokens, llm_states_with_image, require_vision
from .prompt_encoding import MAX_PROMPT_TOKENS, T2V_TEMPLATE, TextEmbeds, encode_clip, template_crop_start

SUBJECT_SENTENCE = "\nThe {} looks like" + IMAGE_TOKEN
DEFAULT_SUBJECT = "object"  # the authors' positive default (data_kits/video_dataset.py, the gradio demo)
NEGATIVE_SUBJECT = "person"  # their negative call never passes the subject on
CUSTOM_NEGATIVE_PROMPT = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, bad teeth, "
    "bad eyes, bad limbs, distortion, blurring, text, subtitles, static, picture, black border."
)


def custom_text(prompt: str, subject: str) -> str:
    """What the Llama reads: the T2V template around `prompt`, then the sentence naming `subject`."""
    return T2V_TEMPLATE.format(prompt) + SUBJECT_SENTENCE.format(subject)


def check_subject(subject: str) -> str:
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError('subject must be a word naming what the reference shows, e.g. "person", "man", "dog", "object"')
    if IMAGE_TOKEN in subject or "\n" in subject:
        raise ValueError(f"subject must be plain words on one line without {IMAGE_TOKEN}, got {subject!r}")
    return subject.strip()


@torch.no_grad()
def encode_custom_text(encoders, prompt: str, subject: str, square_image: torch.Tensor, device,
                       name: str = "prompt") -> tuple[TextEmbeds, int]:
    """One branch's embeds with the authors' (quirky) mask, and the number N of image tokens.

    `square_image` is IMAGE `[1, S, S, 3]` at the vision tower's size (already padded).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"{name} must be text, got {type(prompt).__name__}")
    tokenizer = encoders.llm_tokenizer
    crop = template_crop_start(tokenizer, T2V_TEMPLATE)
    text = custom_text(prompt, subject)
    length = len(tokenizer(text)["input_ids"])
    if length > MAX_PROMPT_TOKENS + crop:
        raise ValueError(
            f"{name} is too long for HunyuanCustom: with the sentence naming the subject it takes {length - crop} tokens, "
            f"at most {MAX_PROMPT_TOKENS} fit (the authors' limit); shorten it"
        )
    tokens = image_tokens(encoders, square_image, device)
    states = llm_states_with_image(encoders, text, tokens, device, MAX_PROMPT_TOKENS + crop, zero_padding=True)
    count = states.num_image_tokens
    start = states.image_start
    tokenizer_mask = torch.cat([states.mask[:, : start + 1], states.mask[:, start + count:]], dim=1)
    authors_mask = torch.cat([tokenizer_mask, tokenizer_mask.new_ones(1, count - 1)], dim=1)
    embeds = TextEmbeds(states.states[:, crop:], authors_mask[:, crop:], encode_clip(encoders, prompt, device))
    return embeds, count


def shorten_mask(mask: torch.Tensor, by: int) -> torch.Tensor:
    """The authors' negative mask: as many leading ones as `mask` has ones less `by`, then zeros."""
    kept = int(mask.sum()) - by
    if kept <= 0:
        return mask
    return torch.cat([mask.new_ones(1, kept), mask.new_zeros(1, mask.shape[1] - kept)], dim=1)


def encode_custom_prompts(encoders, prompt: str, negative_prompt: str, subject: str, reference_square: torch.Tensor,
                          device="cpu") -> tuple[TextEmbeds, TextEmbeds]:
    """Positive (reference image) and negative (white image) embeds of a HunyuanCustom job."""
    require_vision(encoders)
    subject = check_subject(subject)
    positive, _ = encode_custom_text(encoders, prompt, subject, reference_square, device)
    white = torch.ones_like(reference_square)
    negative, count = encode_custom_text(encoders, negative_prompt, NEGATIVE_SUBJECT, white, device, "negative_prompt")
    negative = TextEmbeds(negative.prompt_embeds, shorten_mask(negative.attention_mask, count - 1), negative.pooled)
    return positive, negative
