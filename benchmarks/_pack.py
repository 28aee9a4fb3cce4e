"""Import the pack from a benchmark script the way the tests do (under a name of our choosing, so a
checkout folder with dashes works), without running the root `__init__` (no ComfyUI nodes needed)."""

import importlib
import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "hunyuan_video_suite"
LAYOUTS = PACK_ROOT.parent / "shared" / "comfy" / "checkpoint_layouts.json"


def register_pack() -> None:
    if PACK_NAME in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)])
    sys.modules[PACK_NAME] = importlib.util.module_from_spec(spec)


def cpu_benchmark_args(doc: str, argv=None):
    """The CPU benchmarks' options, `--quick` and `--threads` (torch's CPU threads, set here)."""
    import argparse

    import torch

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def pipelines(name: str):
    """The pack's `pipelines.<name>` module."""
    register_pack()
    return importlib.import_module(f"{PACK_NAME}.pipelines.{name}")


def peak_rss_reset() -> None:
    """Reset this process's peak-RSS counter (VmHWM), so one process can measure several loads in turn."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def rss_now() -> int:
    return _status("VmRSS")


def peak_rss() -> int:
    return _status("VmHWM")


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(text.split(field + ":")[1].split()[0]) * 1024


register_pack()
