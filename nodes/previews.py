"""Live previews and time estimates for the local samplers, drawn as ComfyUI's own samplers draw theirs.

Each step's predicted clean latent goes through ComfyUI's `latent_preview` with the user's preview method and the
family's latent format, and the picture rides on the progress update. The progress text says the steps done, the
seconds a step takes and the time left. Outside ComfyUI there is no previewer: nothing is computed or sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace

from . import host

FIRST_FRAME = "first frame"
STRIP = "strip (first, middle, last)"
PREVIEW_FRAMES = (FIRST_FRAME, STRIP)

clock = time.perf_counter  # tests replace it


@dataclass(frozen=True)
class LatentFormatSpec:
    comfy_name: str  # the class in comfy/latent_formats.py
    channels: int
    scale_factor: float
    rgb_factors: tuple
    rgb_bias: tuple
    tae: str  # the TAEHV decoder in models/vae_approx/ newer ComfyUI previews with


# HunyuanVideo (13B): comfy/latent_formats.py `HunyuanVideo`, as ComfyUI 0.3.64 has it.
HV13_FORMAT = LatentFormatSpec("HunyuanVideo", 16, 0.476986, (
    (-0.0395, -0.0331, 0.0445), (0.0696, 0.0795, 0.0518), (0.0135, -0.0945, -0.0282), (0.0108, -0.0250, -0.0765),
    (-0.0209, 0.0032, 0.0224), (-0.0804, -0.0254, -0.0639), (-0.0991, 0.0271, -0.0669), (-0.0646, -0.0422, -0.0400),
    (-0.0696, -0.0595, -0.0894), (-0.0799, -0.0208, -0.0375), (0.1166, 0.1627, 0.0962), (0.1165, 0.0432, 0.0407),
    (-0.2315, -0.1920, -0.1355), (-0.0270, 0.0401, -0.0821), (-0.0616, -0.0997, -0.0727), (0.0249, -0.0469, -0.1703),
), (0.0259, -0.0192, -0.0761), "taehv")

# HunyuanVideo 1.5: comfy/latent_formats.py `HunyuanVideo15` of ComfyUI 0.3.71 and later (Comfy-Org/ComfyUI at
# 9a9a69fd745de98e89b0f1a629cd3bc43d513a42); restated here for the ComfyUI versions that predate it.
HV15_FORMAT = LatentFormatSpec("HunyuanVideo15", 32, 1.03682, (
    (0.0568, -0.0521, -0.0131), (0.0014, 0.0735, 0.0326), (0.0186, 0.0531, -0.0138), (-0.0031, 0.0051, 0.0288),
    (0.0110, 0.0556, 0.0432), (-0.0041, -0.0023, -0.0485), (0.0530, 0.0413, 0.0253), (0.0283, 0.0251, 0.0339),
    (0.0277, -0.0372, -0.0093), (0.0393, 0.0944, 0.1131), (0.0020, 0.0251, 0.0037), (-0.0017, 0.0012, 0.0234),
    (0.0468, 0.0436, 0.0203), (0.0354, 0.0439, -0.0233), (0.0090, 0.0123, 0.0346), (0.0382, 0.0029, 0.0217),
    (0.0261, -0.0300, 0.0030), (-0.0088, -0.0220, -0.0283), (-0.0272, -0.0121, -0.0363), (-0.0664, -0.0622, 0.0144),
    (0.0414, 0.0479, 0.0529), (0.0355, 0.0612, -0.0247), (0.0147, 0.0264, 0.0174), (0.0438, 0.0038, 0.0542),
    (0.0431, -0.0573, -0.0033), (-0.0162, -0.0211, -0.0406), (-0.0487, -0.0295, -0.0393), (0.0005, -0.0109, 0.0253),
    (0.0296, 0.0591, 0.0353), (0.0119, 0.0181, -0.0306), (-0.0085, -0.0362, 0.0229), (0.0005, -0.0106, 0.0242),
), (0.0456, -0.0202, -0.0644), "lighttaehy1_5")

FORMATS = {"hunyuan_video_13b": HV13_FORMAT, "hunyuan_video_15": HV15_FORMAT}


def latent_format(family: str):
    """The latent format ComfyUI previews `family` with: ComfyUI's own class where it has one with latent-to-RGB
    factors (it names the TAEHV decoder where this ComfyUI can load one), else the same values restated."""
    spec = FORMATS[family]
    comfy_class, video_taes = host.comfy_latent_format(spec.comfy_name)
    if comfy_class is not None and getattr(comfy_class, "latent_rgb_factors", None) is not None:
        return comfy_class()
    return SimpleNamespace(
        latent_channels=spec.channels, latent_dimensions=3, scale_factor=spec.scale_factor,
        latent_rgb_factors=[list(row) for row in spec.rgb_factors], latent_rgb_factors_bias=list(spec.rgb_bias),
        latent_rgb_factors_reshape=None, taesd_decoder_name=spec.tae if spec.tae in video_taes else None,
    )


def preview_mode(transformer) -> str:
    """The frames the transformer's live previews show (set by the Preview Options node)."""
    return getattr(transformer, "preview", FIRST_FRAME)


def preview_frames(latent_frames: int, mode: str) -> list[int]:
    """The latent frames a preview shows: the first, or the first, middle and last."""
    if mode == STRIP:
        return sorted({0, latent_frames // 2, latent_frames - 1})
    return [0]


def preview_image(previewer, x0, mode: str = FIRST_FRAME):
    """ComfyUI's preview tuple (format, PIL image, max size) for the latent `x0` [B, C, T, H, W]; a strip puts
    its frames side by side."""
    pictures = [previewer.decode_latent_to_preview_image("JPEG", x0[:1, :, i:i + 1])
                for i in preview_frames(x0.shape[2], mode)]
    if len(pictures) == 1:
        return pictures[0]
    from PIL import Image

    kind, first, max_size = pictures[0]
    images = [picture[1] for picture in pictures]
    strip = Image.new("RGB", (sum(image.width for image in images), max(image.height for image in images)))
    left = 0
    for image in images:
        strip.paste(image, (left, 0))
        left += image.width
    return kind, strip, max_size * len(images)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


class StepTimer:
    """Seconds per unit of work, timed from the end of the first unit (it carries warm-up and compiles); from the
    second unit on, `tick` gives the text: done of total, s/unit and the time left."""

    def __init__(self, total: int, stage: str = "sampling", unit: str = "step"):
        self.total, self.stage, self.unit = max(int(total), 1), stage, unit
        self.first = None  # (units done, time) at the first tick

    def tick(self, done: int) -> str | None:
        now = clock()
        if self.first is None:
            self.first = (done, now)
            return None
        if done <= self.first[0]:
            return None
        rate = (now - self.first[1]) / (done - self.first[0])
        if done >= self.total:
            return f"{self.stage}: {done}/{self.total} {self.unit}s, {rate:.2f} s/{self.unit}, done"
        left = duration(rate * (self.total - done))
        return f"{self.stage}: {self.unit} {done}/{self.total}, {rate:.2f} s/{self.unit}, {left} left"


class SamplingProgress:
    """One sampler run's progress bar, live previews and time estimate.

    Give `on_step` and `on_preview` to the pipeline: `on_preview` is None when ComfyUI shows no previews (none
    there, or outside ComfyUI), so the sampler computes no clean latent then."""

    def __init__(self, total: int, node_id, family: str, mode: str = FIRST_FRAME, stage: str = "sampling"):
        self.node_id, self.mode = node_id, mode
        self.progress = host.Progress(total, node_id=node_id)
        self.previewer = host.latent_previewer(latent_format(family))
        self.timer = StepTimer(total, stage)
        self._picture = None

    @property
    def on_preview(self):
        return self._preview if self.previewer is not None else None

    def _preview(self, done: int, total: int, x0) -> None:
        self._picture = preview_image(self.previewer, x0, self.mode)

    def on_step(self, done: int, total: int) -> None:
        picture, self._picture = self._picture, None
        if picture is None:
            self.progress.set(done)
        else:
            self.progress.set(done, preview=picture)
        text = self.timer.tick(done)
        if text:
            host.send_progress_text(text, self.node_id)


class StageProgress:
    """`(done, total)` progress of a stage whose size is known once it starts (decode tiles): the bar, and from the
    second unit on the time estimate under the node."""

    def __init__(self, node_id, stage: str, unit: str):
        self.node_id, self.stage, self.unit = node_id, stage, unit
        self.progress = self.timer = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            self.progress, self.timer = host.Progress(total, node_id=self.node_id), StepTimer(total, self.stage, self.unit)
        self.progress.set(done)  # also checks for Cancel
        text = self.timer.tick(done)
        if text:
            host.send_progress_text(text, self.node_id)
