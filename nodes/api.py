"""API-proxy nodes: the HunyuanVideo jobs of WaveSpeedAI, fal.ai and Segmind, run remotely.

Every parameter a provider documents is a widget with its documented default and range; the
engine (`pipelines/providers`) validates again before any request. Keys never come from a
widget: they come from the environment or `<user directory>/hunyuan_video_suite/api_keys.json`.

Re-queuing: a job is identified by its inputs (provider, model, every parameter, the image's
pixels). Queuing the same inputs again never pays twice: a finished job is served from the local
cache, an unfinished one is resumed. This holds for seed -1 ("provider picks") too; a new video
needs a new seed, which the seed widget's "randomize" control gives on every queue.

Prices: every node's DESCRIPTION states its endpoint's price rule from the pack's one price table
(`pipelines/providers/pricing.py`, with the day it was read). The price for the chosen settings shows under
the node before it is queued (the pack's frontend extension, `api_price.py`), in the progress text from the
moment it is queued (before anything is sent, and on every update while the job runs), and in the `info`
output after the run, which also says what this run cost by the table: a fresh job its price, a cache hit or
a resumed job $0 (paid once, at the earlier submit).
"""

from __future__ import annotations

import json

from ..pipelines.providers import errors as E
from ..pipelines.providers import fal, pricing, segmind, wavespeed
from ..pipelines.providers.base import fingerprint
from ..pipelines.providers.keys import PROVIDER_NAMES, REDACT
from ..pipelines.providers.runner import Callbacks, Outcome
from ..pipelines.providers.service import config_from_env, run_job
from ..pipelines.video.video_io import read_video_frames
from . import host

CATEGORY = "HunyuanVideo Suite/API"
DATA_FOLDER = "hunyuan_video_suite"
_KEY_NOTE = " The API key comes from the environment ({var}) or the server's api_keys.json, never from a widget."


def _price_note(*models: str) -> str:
    """The DESCRIPTION's price sentence, from the pack's price table."""
    texts = {pricing.rule_for(model).rule_text() for model in models}
    if len(texts) == 1:
        text = texts.pop()
    else:
        text = "; ".join(f"{model.rsplit('-', 1)[-1]}: {pricing.rule_for(model).rule_text()}" for model in models)
    return (f" Price, from the pack's table of the providers' published prices (read {pricing.READ}): {text}. The "
            "price for your settings shows under the node as you change them; the info output says what the run cost.")


def _prompt(tooltip: str, default: str = "") -> tuple:
    return ("STRING", {"multiline": True, "default": default, "tooltip": tooltip})


def _seed(default: int, low: int, high: int, tooltip: str) -> tuple:
    return ("INT", {"default": default, "min": low, "max": high, "control_after_generate": True, "tooltip": tooltip})


def _safety() -> tuple:
    return ("BOOLEAN", {"default": True, "tooltip": "Let the provider's safety checker flag NSFW output."})


_IMAGE = ("IMAGE", {"tooltip": "The input image (the first of a batch is used); sent as a PNG data URI, "
                              "downscaled to at most 2048 px on its longest side."})
_TIMEOUT = ("INT", {"default": 30, "min": 1, "max": 1440, "tooltip": (
    "Minutes the whole job may take (waits, retries, the download). On timeout the job keeps running at the "
    "provider; queue the same job again to resume it without paying twice.")})


class _ApiNode:
    """Shared run logic. Subclasses set PROVIDER, KEY_VAR, INPUTS (widget specs in order) and build_job."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("VIDEO", "IMAGE", "STRING")
    RETURN_NAMES = ("video", "frames", "info")
    OUTPUT_TOOLTIPS = (
        "The generated video (a file in the local API cache), for core Save Video.",
        "The same video decoded as IMAGE frames [F,H,W,C] in 0..1.",
        "Provider, model, request id, seed, timings and what the run cost by the pack's price table "
        "(a cache hit or a resumed job: $0); never the key.",
    )
    FUNCTION = "generate"
    PROVIDER = ""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**cls.inputs(), "timeout_minutes": _TIMEOUT}, "hidden": {"unique_id": "UNIQUE_ID"}}

    @classmethod
    def inputs(cls) -> dict:
        raise NotImplementedError

    @classmethod
    def build_job(cls, **params):
        raise NotImplementedError

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        """A stable fingerprint of the widget values (links such as the image are tracked by ComfyUI itself)."""
        widgets = {k: v for k, v in kwargs.items() if k != "unique_id" and isinstance(v, (str, int, float, bool))}
        return fingerprint(cls.PROVIDER, cls.__name__, json.loads(json.dumps(widgets, default=str)))

    def generate(self, timeout_minutes: int = 30, unique_id=None, **params):
        job = self.build_job(**params)  # validates every input before anything is sent
        price_line = pricing.before_line(job)
        host.send_progress_text(price_line, unique_id)  # before anything is sent
        progress = host.Progress(1000, node_id=unique_id)
        callbacks = Callbacks(
            text=lambda text: host.send_progress_text(f"{text}\n{price_line}", unique_id),
            fraction=lambda value: progress.set(int(value * 1000)),
            interrupted=host.interrupt_requested,
        )
        data_dir = host.user_directory() / DATA_FOLDER
        try:
            config = config_from_env(timeout_s=timeout_minutes * 60, config_dir=data_dir)
            outcome = run_job(job, data_dir, config=config, callbacks=callbacks)
        except E.Interrupted:
            host.check_interrupt()  # inside ComfyUI: raise ComfyUI's own interrupt exception
            raise
        frames, fps = read_video_frames(outcome.video_path)
        video = host.video_from_file(str(outcome.video_path), fps=float(fps))
        return (video, frames, _info(outcome, frames.shape, float(fps), job))


def _info(outcome: Outcome, shape, fps: float, job=None) -> str:
    lines = [
        f"provider: {PROVIDER_NAMES[outcome.provider]}",
        f"model: {outcome.model}",
        f"request id: {outcome.request_id}",
        f"seed: {outcome.seed if outcome.seed is not None else 'chosen by the provider'}",
        f"video: {shape[0]} frames, {shape[2]}x{shape[1]}, {fps:g} fps",
        f"served from cache: {'yes' if outcome.from_cache else 'no'}" + (" (resumed)" if outcome.resumed and not outcome.from_cache else ""),
        "timings: " + ", ".join(f"{k} {v}" for k, v in outcome.timings.items()),
        *([pricing.cost_line(job, from_cache=outcome.from_cache, resumed=outcome.resumed)] if job is not None else []),
        *outcome.notes,
    ]
    return REDACT("\n".join(lines))  # the request id and notes come from outside: never let a key through


# ----------------------------------------------------------------------------- WaveSpeedAI

_HV15_DURATION = ("INT", {"default": 5, "min": 5, "max": 8, "tooltip": (
    "Video length in seconds: 5 or 8 (other values are refused before anything is sent).")})


class HYVSWaveSpeedT2V(_ApiNode):
    PROVIDER = "wavespeed"
    DESCRIPTION = ("HunyuanVideo text-to-video on WaveSpeedAI (wavespeed-ai/hunyuan-video/t2v)."
                   + _price_note(wavespeed.T2V_MODEL) + _KEY_NOTE.format(var="WAVESPEED_API_KEY"))

    @classmethod
    def inputs(cls):
        return {
            "prompt": _prompt("What the video shows (required)."),
            "size": (list(wavespeed.SIZES), {"default": "1280*720", "tooltip": "Output size, width*height."}),
            "num_inference_steps": ("INT", {"default": 30, "min": 2, "max": 30, "tooltip": "Denoising steps (2..30)."}),
            "seed": _seed(-1, -1, wavespeed.SEED_MAX, "-1 lets the provider pick a random seed."),
            "enable_safety_checker": _safety(),
        }

    @classmethod
    def build_job(cls, **params):
        return wavespeed.t2v_job(**params)


class HYVSWaveSpeedI2V(_ApiNode):
    PROVIDER = "wavespeed"
    DESCRIPTION = ("HunyuanVideo image-to-video on WaveSpeedAI (wavespeed-ai/hunyuan-video/i2v)."
                   + _price_note(wavespeed.I2V_MODEL) + _KEY_NOTE.format(var="WAVESPEED_API_KEY"))

    @classmethod
    def inputs(cls):
        return {
            "image": _IMAGE,
            "prompt": _prompt("What happens in the video (optional)."),
            "size": (list(wavespeed.SIZES), {"default": "1280*720", "tooltip": "Output size, width*height."}),
            "num_inference_steps": ("INT", {"default": 30, "min": 1, "max": 30, "tooltip": "Denoising steps (1..30)."}),
            "duration": ("INT", {"default": 5, "min": 5, "max": 10, "tooltip": "Video length in seconds (5..10)."}),
            "seed": _seed(-1, -1, wavespeed.SEED_MAX, "-1 lets the provider pick a random seed."),
            "enable_safety_checker": _safety(),
        }

    @classmethod
    def build_job(cls, **params):
        return wavespeed.i2v_job(**params)


class HYVSWaveSpeedCustomRef2V(_ApiNode):
    PROVIDER = "wavespeed"
    DESCRIPTION = ("HunyuanCustom reference-to-video on WaveSpeedAI (hunyuan-custom-ref2v-720p / -480p): the subject of "
                   "the reference image in a new video." + _price_note(*wavespeed.CUSTOM_MODELS.values())
                   + _KEY_NOTE.format(var="WAVESPEED_API_KEY"))

    @classmethod
    def inputs(cls):
        sizes = [s for r in ("720p", "480p") for s in wavespeed.CUSTOM_SIZES[r]]
        return {
            "image": ("IMAGE", {"tooltip": "The reference image of the subject (the first of a batch is used)."}),
            "prompt": _prompt("What the subject does (required)."),
            "negative_prompt": _prompt("What to avoid."),
            "resolution": (list(wavespeed.CUSTOM_MODELS), {"default": "720p", "tooltip": "Chooses the 720p or the 480p model."}),
            "size": (sizes, {"default": "1280*720", "tooltip": "width*height; 720p: 1280*720 or 720*1280, 480p: 832*480 or 480*832."}),
            "guidance_scale": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 10.0, "step": 0.1, "tooltip": "Classifier-free guidance (1..10)."}),
            "flow_shift": ("FLOAT", {"default": 13.0, "min": 1.0, "max": 20.0, "step": 0.1, "tooltip": "Shift of the sampling schedule (1..20)."}),
            "seed": _seed(-1, -1, wavespeed.CUSTOM_SEED_MAX, "-1 lets the provider pick a random seed."),
            "enable_safety_checker": _safety(),
        }

    @classmethod
    def build_job(cls, **params):
        return wavespeed.custom_ref2v_job(**params)


class HYVSWaveSpeedHV15T2V(_ApiNode):
    PROVIDER = "wavespeed"
    DESCRIPTION = ("HunyuanVideo 1.5 text-to-video on WaveSpeedAI (wavespeed-ai/hunyuan-video-1.5/text-to-video). "
                   "Its fields follow third-party clients (no official schema was found)."
                   + _price_note(wavespeed.HV15_T2V_MODEL) + _KEY_NOTE.format(var="WAVESPEED_API_KEY"))

    @classmethod
    def inputs(cls):
        return {
            "prompt": _prompt("What the video shows (required)."),
            "negative_prompt": _prompt("What to avoid (optional)."),
            "size": (list(wavespeed.HV15_SIZES), {"default": "1280*720", "tooltip": (
                "Output size, width*height: 1280*720 / 720*1280 (720p) or 832*480 / 480*832 (480p).")}),
            "duration": _HV15_DURATION,
            "seed": _seed(-1, -1, wavespeed.SEED_MAX, "-1 lets the provider pick a random seed."),
        }

    @classmethod
    def build_job(cls, **params):
        return wavespeed.hv15_t2v_job(**params)


class HYVSWaveSpeedHV15I2V(_ApiNode):
    PROVIDER = "wavespeed"
    DESCRIPTION = ("HunyuanVideo 1.5 image-to-video on WaveSpeedAI (wavespeed-ai/hunyuan-video-1.5/image-to-video)."
                   + _price_note(wavespeed.HV15_I2V_MODEL) + _KEY_NOTE.format(var="WAVESPEED_API_KEY"))

    @classmethod
    def inputs(cls):
        return {
            "image": _IMAGE,
            "prompt": _prompt("What happens in the video (optional)."),
            "resolution": (list(wavespeed.HV15_RESOLUTIONS), {"default": "720p", "tooltip": "Output resolution, 720p or 480p."}),
            "duration": _HV15_DURATION,
            "seed": _seed(-1, -1, wavespeed.SEED_MAX, "-1 lets the provider pick a random seed."),
        }

    @classmethod
    def build_job(cls, **params):
        return wavespeed.hv15_i2v_job(**params)


# ----------------------------------------------------------------------------- fal.ai

_ASPECT = (list(fal.ASPECT_RATIOS), {"default": "16:9", "tooltip": "Landscape 16:9 or portrait 9:16."})
_FAL_SEED = _seed(-1, -1, fal.SEED_MAX, "-1 lets fal pick a random seed (reported in the info output).")


class HYVSFalT2V(_ApiNode):
    PROVIDER = "fal"
    DESCRIPTION = ("HunyuanVideo text-to-video on fal.ai (fal-ai/hunyuan-video)."
                   + _price_note(fal.T2V_MODEL) + _KEY_NOTE.format(var="FAL_KEY"))

    @classmethod
    def inputs(cls):
        return {
            "prompt": _prompt("What the video shows (required)."),
            "seed": _FAL_SEED,
            "pro_mode": ("BOOLEAN", {"default": False, "tooltip": (
                "55 steps instead of 35 for higher quality, at twice the price: "
                + pricing.rule_for(fal.T2V_MODEL).rule_text() + ".")}),
            "aspect_ratio": _ASPECT,
            "resolution": (list(fal.T2V_RESOLUTIONS), {"default": "720p", "tooltip": "Output resolution."}),
            "num_frames": (list(fal.T2V_NUM_FRAMES), {"default": "129", "tooltip": "Frames in the video (sent as text, as fal expects)."}),
            "enable_safety_checker": _safety(),
        }

    @classmethod
    def build_job(cls, **params):
        return fal.t2v_job(**params)


class HYVSFalI2V(_ApiNode):
    PROVIDER = "fal"
    DESCRIPTION = ("HunyuanVideo image-to-video on fal.ai (fal-ai/hunyuan-video-image-to-video)."
                   + _price_note(fal.I2V_MODEL) + _KEY_NOTE.format(var="FAL_KEY"))

    @classmethod
    def inputs(cls):
        return {
            "image": _IMAGE,
            "prompt": _prompt("What happens in the video (required)."),
            "seed": _FAL_SEED,
            "aspect_ratio": _ASPECT,
            "resolution": (list(fal.I2V_RESOLUTIONS), {"default": "720p", "tooltip": "Output resolution (fal offers 720p)."}),
            "num_frames": (list(fal.I2V_NUM_FRAMES), {"default": "129", "tooltip": "Frames in the video (fal offers 129)."}),
            "i2v_stability": ("BOOLEAN", {"default": False, "tooltip": "Less hallucination, but less motion."}),
        }

    @classmethod
    def build_job(cls, **params):
        return fal.i2v_job(**params)


def _fal_hv15_inputs() -> dict:
    return {
        "prompt": _prompt("What the video shows (required)."),
        "negative_prompt": _prompt("What to avoid (optional)."),
        "num_inference_steps": ("INT", {"default": 28, "min": fal.HV15_STEPS[0], "max": fal.HV15_STEPS[1],
                                        "tooltip": "Denoising steps (1..50)."}),
        "seed": _FAL_SEED,
        "aspect_ratio": _ASPECT,
        "resolution": (list(fal.HV15_RESOLUTIONS), {"default": "480p", "tooltip": "Output resolution (fal offers 480p only)."}),
        "num_frames": ("INT", {"default": 121, "min": fal.HV15_NUM_FRAMES[0], "max": fal.HV15_NUM_FRAMES[1],
                               "tooltip": "Frames in the video (1..121; 121 is about 5 s at 24 fps)."}),
        "enable_prompt_expansion": ("BOOLEAN", {"default": True, "tooltip": (
            "Let fal rewrite the prompt into a more detailed one before generating.")}),
    }


class HYVSFalHV15T2V(_ApiNode):
    PROVIDER = "fal"
    DESCRIPTION = ("HunyuanVideo 1.5 text-to-video on fal.ai (fal-ai/hunyuan-video-v1.5/text-to-video), 480p."
                   + _price_note(fal.HV15_T2V_MODEL) + _KEY_NOTE.format(var="FAL_KEY"))

    @classmethod
    def inputs(cls):
        return _fal_hv15_inputs()

    @classmethod
    def build_job(cls, **params):
        return fal.hv15_t2v_job(**params)


class HYVSFalHV15I2V(_ApiNode):
    PROVIDER = "fal"
    DESCRIPTION = ("HunyuanVideo 1.5 image-to-video on fal.ai (fal-ai/hunyuan-video-v1.5/image-to-video), 480p."
                   + _price_note(fal.HV15_I2V_MODEL) + _KEY_NOTE.format(var="FAL_KEY"))

    @classmethod
    def inputs(cls):
        inputs = _fal_hv15_inputs()
        inputs["prompt"] = _prompt("What happens in the video (required).")
        return {"image": _IMAGE, **inputs}

    @classmethod
    def build_job(cls, **params):
        return fal.hv15_i2v_job(**params)


# ----------------------------------------------------------------------------- Segmind

class HYVSSegmindT2V(_ApiNode):
    PROVIDER = "segmind"
    DESCRIPTION = ("HunyuanVideo text-to-video on Segmind (hunyuan-video), about 211 s a run."
                   + _price_note(segmind.MODEL) + _KEY_NOTE.format(var="SEGMIND_API_KEY"))

    @classmethod
    def inputs(cls):
        return {
            "prompt": _prompt("What the video shows (required)."),
            "negative_prompt": _prompt("What to avoid.", segmind.DEFAULT_NEGATIVE_PROMPT),
            "seed": _seed(segmind.DEFAULT_SEED, -1, segmind.SEED_MAX, "-1 draws a random seed (reported in the info output)."),
            "width": ("INT", {"default": 854, "min": 1, "max": 1280, "tooltip": "Width in pixels (1..1280)."}),
            "height": ("INT", {"default": 480, "min": 1, "max": 1280, "tooltip": "Height in pixels (1..1280)."}),
            "video_length": ("INT", {"default": 77, "min": 1, "max": 129, "tooltip": "Frames in the video (1..129)."}),
            "infer_steps": ("INT", {"default": 40, "min": 1, "max": 70, "tooltip": "Denoising steps (1..70)."}),
            "flow_shift": ("INT", {"default": 7, "min": 1, "max": 15, "tooltip": "Shift of the sampling schedule (1..15)."}),
            "embedded_guidance_scale": ("FLOAT", {"default": 6.0, "min": 1.0, "max": 10.0, "step": 0.1, "tooltip": "Embedded guidance (1..10)."}),
        }

    @classmethod
    def build_job(cls, **params):
        return segmind.t2v_job(**params)


_NODES = {
    "HYVS_WaveSpeedT2V": (HYVSWaveSpeedT2V, "HunyuanVideo Suite: WaveSpeedAI Text to Video"),
    "HYVS_WaveSpeedI2V": (HYVSWaveSpeedI2V, "HunyuanVideo Suite: WaveSpeedAI Image to Video"),
    "HYVS_WaveSpeedCustomRef2V": (HYVSWaveSpeedCustomRef2V, "HunyuanVideo Suite: WaveSpeedAI Custom Reference to Video"),
    "HYVS_WaveSpeedHV15T2V": (HYVSWaveSpeedHV15T2V, "HunyuanVideo Suite: WaveSpeedAI HunyuanVideo 1.5 T2V"),
    "HYVS_WaveSpeedHV15I2V": (HYVSWaveSpeedHV15I2V, "HunyuanVideo Suite: WaveSpeedAI HunyuanVideo 1.5 I2V"),
    "HYVS_FalT2V": (HYVSFalT2V, "HunyuanVideo Suite: fal.ai Text to Video"),
    "HYVS_FalI2V": (HYVSFalI2V, "HunyuanVideo Suite: fal.ai Image to Video"),
    "HYVS_FalHV15T2V": (HYVSFalHV15T2V, "HunyuanVideo Suite: fal.ai HunyuanVideo 1.5 T2V"),
    "HYVS_FalHV15I2V": (HYVSFalHV15I2V, "HunyuanVideo Suite: fal.ai HunyuanVideo 1.5 I2V"),
    "HYVS_SegmindT2V": (HYVSSegmindT2V, "HunyuanVideo Suite: Segmind Text to Video"),
}
NODE_CLASS_MAPPINGS = {name: cls for name, (cls, _) in _NODES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {name: title for name, (_, title) in _NODES.items()}
