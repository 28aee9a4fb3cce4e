"""Inside ComfyUI the nodes use ComfyUI's services: checked in a subprocess whose `folder_paths`,
`comfy.*`, `comfy_api.*` and `server` modules record how they are called, with ComfyUI's signatures."""

import subprocess
import sys
import textwrap

from conftest import PACK_ROOT

HOST_MODULES = {
    "folder_paths.py": """
        import os
        ROOT = os.environ["FAKE_COMFY_MODELS"]
        def get_folder_paths(name):
            return [os.path.join(ROOT, name)]
        def get_filename_list(name):
            folder = os.path.join(ROOT, name)
            return sorted(f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f)))
        def get_full_path(name, filename):
            path = os.path.join(ROOT, name, filename)
            return path if os.path.isfile(path) else None
        def get_user_directory():
            return os.path.join(ROOT, "user")
        def get_temp_directory():
            return os.path.join(ROOT, "temp")
    """,
    "comfy/__init__.py": "",
    "comfy/model_management.py": """
        import torch
        CALLS = []
        INTERRUPT = False
        class InterruptProcessingException(Exception):
            pass
        def processing_interrupted():
            return INTERRUPT
        def throw_exception_if_processing_interrupted():
            if INTERRUPT:
                raise InterruptProcessingException()
        def get_torch_device():
            return torch.device("cpu")
        def unet_offload_device():
            return torch.device("cpu")
        def unload_all_models():
            CALLS.append("unload_all_models")
        def soft_empty_cache(force=False):
            CALLS.append("soft_empty_cache")
    """,
    "comfy/utils.py": """
        UPDATES = []
        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.node_id = total, node_id
            def update_absolute(self, value, total=None, preview=None):
                UPDATES.append((self.node_id, value, total))
    """,
    "comfy_api/__init__.py": "",
    "comfy_api/util.py": """
        from dataclasses import dataclass
        from fractions import Fraction
        @dataclass
        class VideoComponents:
            images: object
            audio: object = None
            frame_rate: Fraction = Fraction(24)
    """,
    "comfy_api/input_impl.py": """
        class VideoFromComponents:
            def __init__(self, components):
                self.components = components
        class VideoFromFile:
            def __init__(self, file):
                self.file = file
    """,
    "server.py": """
        class _Routes:
            def __init__(self):
                self.posts = {}
            def post(self, path):
                def add(handler):
                    self.posts[path] = handler
                    return handler
                return add
        class _Instance:
            def __init__(self):
                self.texts = []
                self.routes = _Routes()
            def send_progress_text(self, text, node_id, sid=None):
                self.texts.append((node_id, text))
        class PromptServer:
            instance = _Instance()
    """,
}

SCRIPT = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("hunyuan-video-suite", r"{root}/__init__.py",
                                              submodule_search_locations=[r"{root}"])
pack = importlib.util.module_from_spec(spec); sys.modules[spec.name] = pack; spec.loader.exec_module(pack)
host = sys.modules["hunyuan-video-suite.nodes.host"]
import comfy.model_management as mm, comfy.utils as cu, server

assert host.in_comfy()
loader = pack.NODE_CLASS_MAPPINGS["HYVS_TransformerLoader"]
choices = loader.INPUT_TYPES()["required"]["model"][0]
assert choices == ["hunyuan_video_t2v_720p_bf16.safetensors", "diffusers/HunyuanVideo"], choices
assert host.resolve_model_path("diffusion_models", choices[0]).endswith("diffusion_models/" + choices[0])

progress = host.Progress(3, node_id="17")
progress.update(); progress.update()
assert cu.UPDATES == [("17", 1, 3), ("17", 2, 3)], cu.UPDATES
mm.INTERRUPT = True
try:
    progress.update()
    raise SystemExit("no interrupt")
except mm.InterruptProcessingException:
    pass
mm.INTERRUPT = False

layer = torch.nn.Linear(2, 2)
with host.on_compute_device(layer):
    pass
assert mm.CALLS == ["soft_empty_cache"], mm.CALLS  # on a CPU device nothing is unloaded, caches are trimmed after

video = host.video_from_frames(torch.zeros(3, 8, 8, 3), 12.0)
assert type(video).__name__ == "VideoFromComponents" and video.components.frame_rate == 12
host.send_progress_text("queued", "17")
assert server.PromptServer.instance.texts == [("17", "queued")]
assert list(server.PromptServer.instance.routes.posts) == ["/hyvs/price"]  # the API nodes' price line
print("HOST-OK")
"""


def test_nodes_use_comfyui_services_when_present(tmp_path):
    fakes = tmp_path / "host"
    for name, body in HOST_MODULES.items():
        path = fakes / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body))
    models = tmp_path / "models"
    for folder in ("diffusion_models", "vae", "text_encoders", "diffusers/HunyuanVideo", "user", "temp"):
        (models / folder).mkdir(parents=True)
    (models / "diffusion_models" / "hunyuan_video_t2v_720p_bf16.safetensors").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=PACK_ROOT)],
        env={"PYTHONPATH": str(fakes), "FAKE_COMFY_MODELS": str(models), "PATH": "/usr/bin:/bin",
             "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=300,
    )
    assert "HOST-OK" in result.stdout, result.stderr[-3000:]
