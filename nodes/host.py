"""The one place where the pack touches ComfyUI's services.

Every node reaches folder_paths, ProgressBar, interrupts, model management, the VIDEO
types and the prompt server through this module. Each service has a fallback so the
nodes import and run in tests and scripts without ComfyUI.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import torch

from ..pipelines.memory.sampling_memory import (
    fit_decode_tiling,
    plan_sampling,
    text_encoders_on_device,
    transformer_on_device,
)
from ..pipelines.memory.vram_planner import ENCODER_TOKENS
from .types import LocalVideo

log = logging.getLogger("hunyuan_video_suite")

try:  # ComfyUI's modules exist only inside a running ComfyUI.
    import folder_paths as _folder_paths
except ImportError:
    _folder_paths = None

try:
    import comfy.model_management as _mm
    import comfy.utils as _comfy_utils
except ImportError:
    _mm = None
    _comfy_utils = None

try:  # ComfyUI's live previews (the user's --preview-method); absent outside ComfyUI
    import latent_preview as _latent_preview
except ImportError:
    _latent_preview = None

try:
    from comfy_api.input_impl import VideoFromComponents as _VideoFromComponents
    from comfy_api.input_impl import VideoFromFile as _VideoFromFile
    from comfy_api.util import VideoComponents as _VideoComponents
except ImportError:
    _VideoFromComponents = _VideoFromFile = _VideoComponents = None


class Interrupted(Exception):
    """Raised when the user pressed Cancel (outside ComfyUI: when `request_interrupt` was called)."""


_interrupt_flag = False


def in_comfy() -> bool:
    return _folder_paths is not None


# ----------------------------------------------------------------------------- model files

# Model folders that ComfyUI versions the pack supports may lack (`latent_upscale_models` came with 0.3.71): on
# those the pack registers the folder as newer ComfyUI does (models/<folder>, its weight file extensions).
LATE_MODEL_FOLDERS = ("latent_upscale_models",)
WEIGHT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


def register_model_folder(folder: str) -> None:
    """Make ComfyUI know `folder` (one of LATE_MODEL_FOLDERS) when it does not yet; nothing outside ComfyUI."""
    known = getattr(_folder_paths, "folder_names_and_paths", None)
    models_dir = getattr(_folder_paths, "models_dir", None)
    if folder not in LATE_MODEL_FOLDERS or known is None or models_dir is None or folder in known:
        return
    extensions = set(getattr(_folder_paths, "supported_pt_extensions", WEIGHT_EXTENSIONS))
    known[folder] = ([os.path.join(models_dir, folder)], extensions)
    log.info("registered ComfyUI model folder %s (this ComfyUI predates it)", folder)


def model_files(folder: str) -> list[str]:
    """Names of the files in one of ComfyUI's model folders (`diffusion_models`, `vae`, ...)."""
    if _folder_paths is None:
        return []
    register_model_folder(folder)
    try:
        return list(_folder_paths.get_filename_list(folder))
    except KeyError:
        return []


def model_folders(folder: str) -> list[str]:
    """Sub-folders (diffusers layouts) directly inside ComfyUI's model folder `folder`."""
    return [name for root in _folder_roots(folder) for name in sorted(e.name for e in os.scandir(root) if e.is_dir())]


def saved_model_folders(folder: str) -> list[str]:
    """Folders at any depth inside ComfyUI's model folder `folder` that hold a `config.json` (a model saved with
    its config, as the authors ship theirs), as paths relative to the model folder."""
    names = []
    for root in _folder_roots(folder):
        for path, dirs, files in os.walk(root, followlinks=True):
            dirs.sort()
            if path != root and "config.json" in files:
                names.append(Path(os.path.relpath(path, root)).as_posix())
                dirs.clear()
    return names


def _folder_roots(folder: str) -> list[str]:
    if _folder_paths is None:
        return []
    register_model_folder(folder)
    try:
        return [root for root in _folder_paths.get_folder_paths(folder) if os.path.isdir(root)]
    except KeyError:
        return []


def resolve_model_path(folder: str, name: str) -> str:
    """The full path of `name`: a file or folder known to ComfyUI's `folder`, else a plain path."""
    name = name.strip()
    if os.path.isabs(name) or _folder_paths is None:
        return name
    register_model_folder(folder)
    full = _folder_paths.get_full_path(folder, name)
    if full is not None:
        return full
    for root in _folder_roots(folder):
        candidate = os.path.join(root, name)
        if os.path.exists(candidate):
            return candidate
    return name


DIFFUSERS_PREFIX = "diffusers/"  # a combo value naming a folder of ComfyUI's models/diffusers


def model_choices(folder: str, with_diffusers: bool, with_saved_folders: bool = False) -> list[str]:
    """A loader's combo: the files of ComfyUI's `folder`, and (`with_diffusers`) the diffusers folders;
    `with_saved_folders`: the folders inside `folder` that hold a config.json, in place of the files in them."""
    names = model_files(folder)
    if with_saved_folders:
        saved = saved_model_folders(folder)
        names = [n for n in names if not any(n.replace("\\", "/").startswith(s + "/") for s in saved)] + saved
    if with_diffusers:
        names += [DIFFUSERS_PREFIX + name for name in model_folders("diffusers")]
    return names


def resolve_choice(folder: str, name: str) -> str:
    """The path behind a combo value: `diffusers/<folder>` or a file of ComfyUI's `folder` (or a plain path)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"no model chosen: pick a file from ComfyUI's '{folder}' folder")
    if name.startswith(DIFFUSERS_PREFIX):
        return resolve_model_path("diffusers", name[len(DIFFUSERS_PREFIX):])
    return resolve_model_path(folder, name)


def user_directory() -> Path:
    """ComfyUI's user directory, or a per-user cache folder outside ComfyUI."""
    if _folder_paths is not None:
        return Path(_folder_paths.get_user_directory())
    base = os.environ.get("HYVS_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "hunyuan_video_suite"
    )
    return Path(base)


def temp_directory() -> Path:
    if _folder_paths is not None:
        path = Path(_folder_paths.get_temp_directory())
    else:
        path = Path(tempfile.gettempdir()) / "hunyuan_video_suite"
    path.mkdir(parents=True, exist_ok=True)
    return path


def comfy_package_directory() -> Path | None:
    """The folder of ComfyUI's `comfy` package (it ships tokenizer files), when running inside ComfyUI."""
    if _comfy_utils is None:
        return None
    return Path(_comfy_utils.__file__).resolve().parent


# ----------------------------------------------------------------------------- progress and interrupts

def request_interrupt(value: bool = True) -> None:
    """Outside ComfyUI: make the next `check_interrupt` raise (used by tests and scripts)."""
    global _interrupt_flag
    _interrupt_flag = value


def interrupt_requested() -> bool:
    if _mm is not None:
        return bool(_mm.processing_interrupted())
    return _interrupt_flag


def check_interrupt() -> None:
    """Raise if the user cancelled. Inside ComfyUI this raises ComfyUI's own InterruptProcessingException."""
    if _mm is not None:
        _mm.throw_exception_if_processing_interrupted()
    elif _interrupt_flag:
        raise Interrupted("interrupted by the user")


class Progress:
    """A step counter shown as ComfyUI's progress bar; every update also checks for Cancel."""

    def __init__(self, total: int, node_id: str | None = None):
        self.total = max(int(total), 1)
        self.node_id = node_id
        self.done = 0
        self._bar = _comfy_utils.ProgressBar(self.total, node_id=node_id) if _comfy_utils is not None else None

    def update(self, steps: int = 1) -> None:
        self.set(self.done + steps)

    def set(self, done: int, preview=None) -> None:
        self.done = min(int(done), self.total)
        if self._bar is not None:
            self._bar.update_absolute(self.done, self.total, preview)  # runs ComfyUI's interrupt check too
        check_interrupt()


def latent_previewer(latent_format):
    """ComfyUI's previewer for `latent_format` and the user's preview method; None: previews off, or no ComfyUI."""
    if _latent_preview is None:
        return None
    return _latent_preview.get_previewer(torch_device(), latent_format)


def comfy_latent_format(name: str):
    """comfy.latent_formats.<name> (None where this ComfyUI lacks it) and the video TAEs its previews can load."""
    formats = sys.modules.get("comfy.latent_formats") if _comfy_utils is not None else None
    return getattr(formats, name, None), tuple(getattr(_latent_preview, "VIDEO_TAES", ()))


def _prompt_server():
    """ComfyUI's running PromptServer, or None (outside ComfyUI)."""
    try:
        from server import PromptServer
    except ImportError:
        return None
    return getattr(PromptServer, "instance", None)


def send_progress_text(text: str, node_id: str | None) -> None:
    """Text under the node in the UI; the console log outside ComfyUI."""
    instance = _prompt_server()
    if instance is None or node_id is None:
        log.info("%s", text)
        return
    instance.send_progress_text(text, node_id)


def add_json_route(path: str, answer) -> bool:
    """Serve POST `path` on ComfyUI's server: the JSON body in, `answer(body)` out as JSON. False outside ComfyUI."""
    instance = _prompt_server()
    if instance is None:
        return False

    async def route(request):
        from aiohttp import web  # ComfyUI's own web server library

        return web.json_response(answer(await request.json()))

    instance.routes.post(path)(route)
    return True


# ----------------------------------------------------------------------------- devices and memory

def torch_device() -> torch.device:
    if _mm is not None:
        return _mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def offload_device() -> torch.device:
    if _mm is not None:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def free_memory_for_sampling() -> None:
    """Ask ComfyUI to unload its own models before we put ours on the GPU."""
    if _mm is not None:
        _mm.unload_all_models()
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def release_memory() -> None:
    if _mm is not None:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def on_compute_device(*modules: torch.nn.Module):
    """Move `modules` to the GPU for the block's work and back to the offload device after, even on errors."""
    device = torch_device()
    if device.type != "cpu":
        free_memory_for_sampling()
    for module in modules:
        module.to(device)
    try:
        yield device
    finally:
        for module in modules:
            module.to(offload_device())
        release_memory()


@contextmanager
def transformer_on_compute_device(transformer, width: int, height: int, frames: int, batch: int = 1, node_id=None):
    """`on_compute_device` for a HunyuanVideo transformer: the VRAM planner decides, before anything
    moves, how many blocks stay on the GPU (the rest stream in from CPU memory) and says so in one
    line under the node; a request that cannot fit is refused here, before sampling."""
    device = torch_device()
    if device.type != "cpu":
        free_memory_for_sampling()
    plan = plan_sampling(transformer, width, height, frames, batch, device)
    if plan is not None:
        log.info("%s", plan.describe())
        send_progress_text(plan.describe(), node_id)
    try:
        with transformer_on_device(transformer, device, plan, offload_device()):
            yield device
    finally:
        release_memory()


@contextmanager
def text_encoders_on_compute_device(encoders, tokens: int = ENCODER_TOKENS):
    """Both text encoders on the GPU for encoding (Llama layers streamed if they do not fit), then off it."""
    device = torch_device()
    if device.type != "cpu":
        free_memory_for_sampling()
    try:
        with text_encoders_on_device(encoders, device, home=offload_device(), tokens=tokens):
            yield device
    finally:
        release_memory()


@contextmanager
def hv15_text_encoders_on_compute_device(encoders):
    """`text_encoders_on_compute_device` for HunyuanVideo 1.5: Qwen2.5-VL in the LLM's place (its layers streamed
    when they do not all fit), byT5 whole."""
    pair = SimpleNamespace(llm=encoders.qwen, clip=encoders.byt5)
    with text_encoders_on_compute_device(pair, tokens=encoders.tokens_per_prompt) as device:
        yield device


@contextmanager
def vae_on_compute_device(vae, latents_shape, tiling, node_id=None):
    """The VAE on the GPU with tiles the free memory allows (never larger than the user's); yields the tiling."""
    device = torch_device()
    if device.type != "cpu":
        free_memory_for_sampling()
    vae.to(device)
    try:
        tiling, note = fit_decode_tiling(tiling, latents_shape, vae, device)
        if note:
            log.info("%s", note)
            send_progress_text(note, node_id)
        yield tiling
    finally:
        vae.to(offload_device())
        release_memory()


# ----------------------------------------------------------------------------- VIDEO values

def video_from_frames(frames: torch.Tensor, fps: float):
    """IMAGE frames `[F,H,W,C]` in 0..1 as a VIDEO value."""
    if _VideoFromComponents is not None:
        rate = Fraction(fps).limit_denominator(1001)
        return _VideoFromComponents(_VideoComponents(images=frames, audio=None, frame_rate=rate))
    return LocalVideo(frames=frames, fps=fps)


def video_from_file(path: str, fps: float = 24.0):
    if _VideoFromFile is not None:
        return _VideoFromFile(path)
    return LocalVideo(path=path, fps=fps)
