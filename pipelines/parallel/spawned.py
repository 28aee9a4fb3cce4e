"""The first code a pool worker runs: `pool.py` starts each worker as `runpy.run_path(<this file>)` in a fresh
interpreter (multiprocessing's spawn).

ComfyUI imports the pack under its folder's name from custom_nodes/, a name a fresh interpreter cannot import, so
the worker's entry cannot be named by its module. This file registers the pack's package under the same name as in
ComfyUI's process (so that pickled jobs name the same modules) without running its `__init__` (which would load
every node, and ComfyUI with them), then hands over to `worker.serve`. Only the standard library is used before.
"""

import importlib
import importlib.util
import sys


def boot(pack: str, root: str, *serve_args) -> None:
    if pack not in sys.modules:
        spec = importlib.util.spec_from_file_location(pack, f"{root}/__init__.py", submodule_search_locations=[root])
        sys.modules[pack] = importlib.util.module_from_spec(spec)
    importlib.import_module(f"{pack}.pipelines.parallel.worker").serve(*serve_args)


if __name__ == "__hyvs_worker__":
    boot(*globals()["WORKER_ARGS"])  # given by the pool through runpy's init_globals
