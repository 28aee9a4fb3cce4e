"""The pack's one price table: what each provider publishes for the endpoints the API nodes call.

Every row names the page the price was read from, what that page says, and the day it was read
(`READ`). A price the provider does not publish is recorded as not published, never guessed.
`price_of(job)` turns a job's settings (resolution, duration, frames, pro mode) into a `Price`;
`cost_line(outcome, job)` says, after a run, what the job cost by this table and whether it was
served from the cache (no charge) or resumed (paid once, at its earlier submit).

The providers bill by their own rules and may change their prices: the table is a reading of their
pages on `READ`, not an invoice. Check the provider's dashboard for what was actually charged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

READ = "2026-12-04"  # the day every source below was read

PER_VIDEO = "per video"            # one price a video, whatever the settings (pro mode may multiply it)
PER_SECOND = "per second"          # a price per second of output video, by resolution
GPU_TIME = "per GPU-second"        # billed by the provider's GPU time: no price per settings published
NOT_PUBLISHED = "not published"    # no price found on the provider's pages

HV15_FPS = 24  # HunyuanVideo 1.5 renders 24 fps: fal's frames -> seconds (how fal rounds is not published)


@dataclass(frozen=True)
class Rule:
    """One endpoint's published price rule."""

    model: str
    kind: str
    usd: float | None = None                           # per video (PER_VIDEO) or per second (PER_SECOND)
    by_resolution: dict = field(default_factory=dict)  # PER_SECOND: {"480p": usd/s, "720p": usd/s}
    pro_mode_factor: float = 1.0                       # fal T2V pro mode: 2x billing units
    source: str = ""
    says: str = ""                                     # what the source says, quoted or closely paraphrased
    note: str = ""
    read: str = READ

    def rule_text(self) -> str:
        """The rule in a few words: "$0.40 per video, pro mode 2x ($0.80)", "$0.02/s at 480p, ..."."""
        if self.kind == PER_VIDEO:
            text = f"{_usd(self.usd)} per video"
            if self.pro_mode_factor != 1.0:
                text += f", pro mode {self.pro_mode_factor:g}x ({_usd(self.usd * self.pro_mode_factor)})"
        elif self.kind == PER_SECOND:
            text = "per second of video: " + ", ".join(f"{_usd(v)} at {r}" for r, v in self.by_resolution.items())
            if self.note:
                text += f" ({self.note})"
        elif self.kind == GPU_TIME:
            text = "billed by GPU time; " + self.note
        else:
            text = "price not published" + (f" ({self.note})" if self.note else "")
        return text

    def summary(self) -> str:
        """The rule in one line with the day it was read, for a node's DESCRIPTION."""
        return f"{self.rule_text()} (the provider's published price, read {self.read})"


@dataclass(frozen=True)
class Price:
    """The table's price for one job's settings. `usd` is None where no price per settings is published."""

    usd: float | None
    text: str           # e.g. "$0.20 (5 s x $0.04/s at 720p)" or "price not published (...)"
    rule: Rule

    @property
    def published(self) -> bool:
        return self.usd is not None


# ----------------------------------------------------------------------------- the table

_FAL = "https://fal.ai/models/"
_WS = "https://wavespeed.ai/docs/docs-api/wavespeed-ai/"

RULES: dict[str, Rule] = {rule.model: rule for rule in (
    Rule("wavespeed-ai/hunyuan-video/t2v", PER_VIDEO, 0.40,
         source=_WS + "hunyuan-video-t2v", says='Pricing: "Per video $0.40"',
         note="steps and size do not change it"),
    Rule("wavespeed-ai/hunyuan-video/i2v", PER_VIDEO, 0.40,
         source=_WS + "hunyuan-video-i2v", says='Pricing: "Per run $0.40"',
         note="duration, steps and size do not change it"),
    Rule("wavespeed-ai/hunyuan-custom-ref2v-720p", NOT_PUBLISHED,
         source="https://wavespeed.ai/docs-api/hunyuan-custom-ref2v-720p", says="no price on the page",
         note="WaveSpeedAI's page for this model shows none"),
    Rule("wavespeed-ai/hunyuan-custom-ref2v-480p", NOT_PUBLISHED,
         source="https://wavespeed.ai/docs-api/hunyuan-custom-ref2v-480p", says="no price on the page",
         note="WaveSpeedAI's page for this model shows none"),
    Rule("wavespeed-ai/hunyuan-video-1.5/text-to-video", PER_SECOND, by_resolution={"480p": 0.02, "720p": 0.04},
         source=_WS + "hunyuan-video-1.5/text-to-video",
         says='Pricing: "480p $0.02 / s", "720p $0.04 / s" (price per second)'),
    Rule("wavespeed-ai/hunyuan-video-1.5/image-to-video", NOT_PUBLISHED,
         source="https://wavespeed.ai/models/wavespeed-ai/hunyuan-video-1.5/image-to-video/llms.txt",
         says="no price in the published schema",
         note="WaveSpeedAI's T2V of the same model: $0.02/s at 480p, $0.04/s at 720p"),
    Rule("fal-ai/hunyuan-video", PER_VIDEO, 0.40, pro_mode_factor=2.0,
         source=_FAL + "fal-ai/hunyuan-video/llms.txt",
         says='"Price: $0.4 per videos"; pro_mode: "55 steps ... cost 2x more billing units"',
         note="resolution and frames do not change it"),
    Rule("fal-ai/hunyuan-video-image-to-video", PER_VIDEO, 0.40,
         source=_FAL + "fal-ai/hunyuan-video-image-to-video/llms.txt", says='"Price: $0.4 per videos"'),
    Rule("fal-ai/hunyuan-video-v1.5/text-to-video", PER_SECOND, by_resolution={"480p": 0.075},
         source=_FAL + "fal-ai/hunyuan-video-v1.5/text-to-video/llms.txt",
         says='"Current pricing is 0.075 cents/s of video" (sic; the I2V page says "$0.075 per seconds")',
         note=f"seconds = num_frames / {HV15_FPS} fps; how fal rounds them is not published"),
    Rule("fal-ai/hunyuan-video-v1.5/image-to-video", PER_SECOND, by_resolution={"480p": 0.075},
         source=_FAL + "fal-ai/hunyuan-video-v1.5/image-to-video/llms.txt", says='"Price: $0.075 per seconds"',
         note=f"seconds = num_frames / {HV15_FPS} fps; how fal rounds them is not published"),
    Rule("hunyuan-video", GPU_TIME,
         source="https://www.segmind.com/models/hunyuan-video/api (and docs.segmind.com/readme/pricing-and-billing)",
         says='model page: "~211.32s", "~$1.464" for its example (854x480, 77 frames, 40 steps); billing docs: '
              '"charged either on per GPU-second basis or per Generation basis"',
         note="Segmind's page estimates about $1.464 for 854x480, 77 frames, 40 steps; no price for other "
              "settings is published"),
)}

SEGMIND_EXAMPLE = {"width": 854, "height": 480, "video_length": 77, "infer_steps": 40, "usd": 1.464}


def rule_for(model: str) -> Rule:
    try:
        return RULES[model]
    except KeyError:
        return Rule(model, NOT_PUBLISHED, note="the endpoint is not in the pack's price table")


# ----------------------------------------------------------------------------- price for settings

def price(model: str, settings: dict) -> Price:
    """The table's price for an endpoint and the settings a job sends (its payload)."""
    rule = rule_for(model)
    if rule.kind == PER_VIDEO:
        factor = rule.pro_mode_factor if settings.get("pro_mode") else 1.0
        usd = rule.usd * factor
        how = f"pro mode, {factor:g}x {_usd(rule.usd)}" if factor != 1.0 else "per video"
        return Price(usd, f"{_usd(usd)} ({how})", rule)
    if rule.kind == PER_SECOND:
        resolution = _resolution(settings)
        rate = rule.by_resolution.get(resolution)
        seconds, exact = _seconds(settings)
        if rate is None or seconds is None:
            return Price(None, f"price not published for {resolution or 'these settings'}", rule)
        usd = rate * seconds
        sec = f"{seconds:g} s" if exact else f"{seconds:.2f} s ({settings.get('num_frames')} frames at {HV15_FPS} fps)"
        about = "" if exact else "about "
        return Price(usd, f"{about}{_usd(usd)} ({sec} x {_usd(rate)}/s at {resolution})", rule)
    if rule.kind == GPU_TIME:
        ex = SEGMIND_EXAMPLE
        if all(settings.get(k) == ex[k] for k in ("width", "height", "video_length", "infer_steps")):
            return Price(ex["usd"], f"about {_usd(ex['usd'])} (Segmind's estimate for these settings; billed by GPU "
                                    "time)", rule)
        return Price(None, f"price not published for these settings (billed by GPU time; Segmind estimates about "
                           f"{_usd(ex['usd'])} for 854x480, 77 frames, 40 steps)", rule)
    return Price(None, "price not published" + (f" ({rule.note})" if rule.note else ""), rule)


def price_of(job) -> Price:
    """`price` for a built job (provider job of `pipelines.providers.base.Job`)."""
    return price(job.model, job.basis if job.basis is not None else job.payload)


def _resolution(settings: dict) -> str | None:
    if isinstance(settings.get("resolution"), str):
        return settings["resolution"]
    size = settings.get("size")
    if isinstance(size, str) and "*" in size:
        w, _, h = size.partition("*")
        if w.isdigit() and h.isdigit():
            return f"{min(int(w), int(h))}p"
    return None


def _seconds(settings: dict) -> tuple[float | None, bool]:
    """(seconds of video, exact?): `duration` in seconds, else fal's `num_frames` at 24 fps."""
    duration = settings.get("duration")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool):
        return float(duration), True
    frames = settings.get("num_frames")
    if isinstance(frames, (int, float)) and not isinstance(frames, bool):
        return float(frames) / HV15_FPS, False
    return None, False


def _usd(value: float) -> str:
    cents = value * 100
    return f"${value:.2f}" if abs(cents - round(cents)) < 1e-9 else f"${value:.3f}"


# ----------------------------------------------------------------------------- before and after a run

def before_line(job) -> str:
    """What the node shows before and while it pays: the price for these settings."""
    return f"price by the pack's table (read {READ}): {price_of(job).text}"


def cost_line(job, *, from_cache: bool, resumed: bool) -> str:
    """After a run: what this run cost by the table. Cache hits and resumed jobs add no charge."""
    quote = price_of(job)
    paid = _usd(quote.usd) if quote.published else quote.text
    if from_cache:
        return f"served from the cache: $0 (paid earlier: {paid}, by the pack's price table read {READ})"
    if resumed:
        return (f"resumed a job submitted earlier: $0 now (its submit cost {paid}, by the pack's price table "
                f"read {READ})")
    if quote.published:
        return f"cost by the pack's price table (read {READ}): {quote.text}"
    return f"cost by the pack's price table (read {READ}): {quote.text}; see the provider's dashboard"


def table_markdown() -> str:
    """The README's table, generated from RULES (the test keeps the README in step with it)."""
    rows = ["| Endpoint | Rule | Source (what it says) | Read |", "|---|---|---|---|"]
    for rule in RULES.values():
        rows.append(f"| `{rule.model}` | {rule.rule_text()} | {rule.source} ({rule.says}) "
                    f"| {rule.read} |")
    return "\n".join(rows)
