"""Our nodes' `/object_info` entries, built from the V1 classes the way ComfyUI's server builds them.

ComfyUI's `server.py` (`node_info`) reads each class attribute into one JSON object; the browser
and `execution.validate_prompt` both work from that information. We rebuild it here from the same
attributes, key for key, and pass it through JSON so tuples become lists exactly as on the wire.

ComfyUI's model folders do not exist in tests; `model_folders()` stands in a small `folder_paths`
so that the loaders' combo lists hold the files a user who followed `properties.models` has.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import tempfile
from pathlib import Path

PACK_NAME = "hunyuan_video_suite"
CORE_OBJECT_INFO = Path(__file__).resolve().parents[3] / "shared" / "comfy" / "object_info_core.json"


def node_info(node_id: str, cls, display_names: dict | None = None, python_module: str | None = None) -> dict:
    """One `/object_info` entry for the V1 node class `cls` registered as `node_id`."""
    display_names = display_names or {}
    info = {
        "input": cls.INPUT_TYPES(),
        "input_order": {category: list(specs.keys()) for category, specs in cls.INPUT_TYPES().items()},
        "output": cls.RETURN_TYPES,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": node_id,
        "display_name": display_names.get(node_id, node_id),
        "description": getattr(cls, "DESCRIPTION", ""),
        # ComfyUI sets RELATIVE_PYTHON_MODULE = "custom_nodes.<folder>" when it loads a pack.
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", python_module or f"custom_nodes.{PACK_NAME}"),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(cls, "EXPERIMENTAL", False):
        info["experimental"] = True
    if hasattr(cls, "API_NODE"):
        info["api_node"] = cls.API_NODE
    return json.loads(json.dumps(info))


def pack_object_info(class_mappings: dict | None = None, display_names: dict | None = None) -> dict:
    """`/object_info` for every node of the pack (or of the given mappings, e.g. fakes in tests)."""
    if class_mappings is None:
        class_mappings, display_names = _pack_mappings()
    return {node_id: node_info(node_id, cls, display_names) for node_id, cls in class_mappings.items()}


def core_object_info() -> dict:
    """`/object_info` of a real ComfyUI 0.3.64 (the core nodes only)."""
    return json.loads(CORE_OBJECT_INFO.read_text(encoding="utf-8"))


def full_object_info(class_mappings: dict | None = None, display_names: dict | None = None) -> dict:
    """What a ComfyUI with this pack installed answers on `/object_info`: core, then ours.

    Core node ids win over custom ones in ComfyUI, so a clash keeps the core entry.
    """
    info = core_object_info()
    for node_id, entry in pack_object_info(class_mappings, display_names).items():
        info.setdefault(node_id, entry)
    return info


def validated_inputs(class_mappings: dict | None = None) -> dict[str, set[str]]:
    """Per node id, the inputs its VALIDATE_INPUTS takes: ComfyUI skips its own range/list checks for those."""
    if class_mappings is None:
        class_mappings, _ = _pack_mappings()
    out = {}
    for node_id, cls in class_mappings.items():
        fn = getattr(cls, "VALIDATE_INPUTS", None)
        if fn is None:
            continue
        spec = inspect.getfullargspec(fn)
        names = set(spec.args) - {"cls", "s", "self"}
        if spec.varkw is not None:
            names.add("*")
        out[node_id] = names
    return out


def _pack_mappings():
    """The mappings the pack's root `__init__` re-exports (it lives in `nodes`)."""
    import importlib

    nodes = importlib.import_module(f"{PACK_NAME}.nodes")
    return nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS


PROBE_SUFFIX = ".probe.safetensors"


class _FakeFolderPaths:
    """The few `folder_paths` functions our host adapter calls, over real (empty) files in a temp dir.

    With `probe`, every folder asked for also holds `<folder>.probe.safetensors` and a diffusers
    folder `<folder>.probe/`: a combo whose options contain them lists that model folder.
    """

    def __init__(self, root: Path, probe: bool = False):
        self.root = root
        self.probe = probe

    def _dir(self, folder: str) -> Path:
        path = self.root / "models" / folder
        if self.probe and not (path / f"{folder}{PROBE_SUFFIX}").exists():
            (path / f"{folder}.probe").mkdir(parents=True, exist_ok=True)
            (path / f"{folder}.probe" / "model_index.json").write_text("{}", encoding="utf-8")
            (path / f"{folder}{PROBE_SUFFIX}").touch()
        return path

    def get_folder_paths(self, folder: str) -> list[str]:
        return [str(self._dir(folder))]

    def get_filename_list(self, folder: str) -> list[str]:
        base = self._dir(folder)
        if not base.is_dir():
            return []
        names = [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file() and p.name != "model_index.json"]
        return sorted(names)

    def get_full_path(self, folder: str, name: str):
        path = self._dir(folder) / name
        return str(path) if path.exists() else None

    def get_full_path_or_raise(self, folder: str, name: str) -> str:
        full = self.get_full_path(folder, name)
        if full is None:
            raise FileNotFoundError(f"Model in folder '{folder}' with filename '{name}' not found.")
        return full

    def get_user_directory(self) -> str:
        return str(self.root / "user")

    def get_temp_directory(self) -> str:
        return str(self.root / "temp")

    def get_input_directory(self) -> str:
        return str(self.root / "input")

    def get_output_directory(self) -> str:
        return str(self.root / "output")


@contextlib.contextmanager
def model_folders(files: dict[str, list[str]], probe: bool = False):
    """Make the pack see ComfyUI model folders holding `files` ({folder: [name, ...]}).

    A name ending in "/" is a diffusers folder (made with a model_index.json inside).
    `probe` adds a marker file to every folder the pack lists (see `model_inputs`).
    """
    import importlib

    host = importlib.import_module(f"{PACK_NAME}.nodes.host")
    with tempfile.TemporaryDirectory(prefix="hyvs_models_") as tmp:
        root = Path(tmp)
        for folder, names in files.items():
            for name in names:
                path = root / "models" / folder / name
                if name.endswith("/"):
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "model_index.json").write_text("{}", encoding="utf-8")
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
        saved = host._folder_paths
        host._folder_paths = _FakeFolderPaths(root, probe)
        try:
            yield root
        finally:
            host._folder_paths = saved


def model_inputs(class_mappings: dict | None = None, display_names: dict | None = None) -> dict[str, dict[str, list]]:
    """{node id: {input: [(prefix, folder), ...]}} for our combos that list ComfyUI model folders.

    A value `prefix + name` of such an input is the file (or diffusers folder) `name` in `folder`;
    files come with prefix "", folders with whatever the node puts before them.
    """
    with model_folders({}, probe=True):
        info = pack_object_info(class_mappings, display_names)
    found: dict[str, dict[str, list]] = {}
    for node_id, entry in info.items():
        for category in ("required", "optional"):
            for name, spec in (entry["input"].get(category) or {}).items():
                options = spec[0] if isinstance(spec[0], list) else []
                if spec[0] == "COMBO" and len(spec) > 1:
                    options = spec[1].get("options", [])
                sources = []
                for option in options:
                    if not isinstance(option, str):
                        continue
                    if option.endswith(PROBE_SUFFIX):
                        sources.append((option[: -len(PROBE_SUFFIX)].rpartition("/")[0], option.rpartition("/")[2][: -len(PROBE_SUFFIX)]))
                    elif option.endswith(".probe"):
                        prefix, _, base = option.rpartition("/")
                        sources.append((prefix + "/" if prefix else "", base[: -len(".probe")]))
                if sources:
                    found.setdefault(node_id, {})[name] = sorted(sources, key=lambda s: -len(s[0]))
    return found


def manifest_files(workflows) -> dict[str, list[str]]:
    """{folder: [file names]} from the `properties.models` manifests of the given workflows (UI format)."""
    files: dict[str, set[str]] = {}
    for workflow in workflows:
        for node in workflow.get("nodes", []):
            for model in (node.get("properties") or {}).get("models", []) or []:
                if model.get("directory") and model.get("name"):
                    files.setdefault(model["directory"], set()).add(model["name"])
        for model in (workflow.get("models") or []):
            if model.get("directory") and model.get("name"):
                files.setdefault(model["directory"], set()).add(model["name"])
    return {folder: sorted(names) for folder, names in files.items()}


__all__ = [
    "node_info",
    "pack_object_info",
    "core_object_info",
    "full_object_info",
    "validated_inputs",
    "model_folders",
    "model_inputs",
    "manifest_files",
]
