"""The code's shape: the import graph drawn from the code matches the README's code map, with no cycle,
engine folders that import no family, a short top level and small modules."""

import ast
import re
from pathlib import Path

from conftest import PACK_ROOT

MAX_TOP_LEVEL_MODULES = 10
MAX_MODULE_LINES = 400
LONG_MODULES_KEPT = {"pipelines/providers/runner.py"}  # providers/ stays as it is (the layout issue)
ENGINE = ("pipelines/weights/", "pipelines/memory/", "pipelines/speed/", "pipelines/denoise/", "pipelines/video/",
          "pipelines/lora/", "pipelines/parallel/",
          "pipelines/prompt_cache.py")


def _code_map() -> dict[str, set[str]]:
    """README rows: folder (or module) -> what it may import."""
    text = (PACK_ROOT / "README.md").read_text()
    table = text.split("<!-- code-map:begin -->")[1].split("<!-- code-map:end -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = set(re.findall(r"`([^`]+)`", cells[2]))
    return rows


def _modules() -> list[Path]:
    return sorted(p for top in ("pipelines", "nodes") for p in (PACK_ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> tuple[str, ...]:
    parts = path.relative_to(PACK_ROOT).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> set[tuple[str, ...]]:
    """Every module or package of the pack that `path` imports (lazy imports inside functions too)."""
    own = _dotted(path)
    package = own if path.name == "__init__.py" else own[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1] + tuple(node.module.split(".") if node.module else ())
            found |= {base + (alias.name,) for alias in node.names} if node.module is None else {base}
    return found


def _row(dotted: tuple[str, ...], rows) -> str:
    """The code-map row a module belongs to: its own file's row, else the deepest folder row holding it."""
    as_file = "/".join(dotted) + ".py"
    if as_file in rows:
        return as_file
    for depth in range(len(dotted), 0, -1):
        folder = "/".join(dotted[:depth]) + "/"
        if folder in rows:
            return folder
    raise AssertionError(f"{'/'.join(dotted)} is in no row of the README's code map")


def test_the_import_graph_is_the_code_maps():
    rows = _code_map()
    edges = set()
    for path in _modules():
        if path.name == "__init__.py" and path.parent.name == "pipelines":
            continue
        source = _row(_dotted(path), rows)
        for target in _imports(path):
            if (PACK_ROOT.joinpath(*target)).is_dir() or (PACK_ROOT.joinpath(*target).with_suffix(".py")).is_file():
                edges.add((source, _row(target, rows), "/".join(_dotted(path))))
    wrong = sorted(f"{module} ({source}) imports {target}" for source, target, module in edges
                   if target != source and target not in rows[source])
    assert not wrong, "imports the code map does not allow:\n" + "\n".join(wrong)
    used = {(source, target) for source, target, _ in edges if source != target}
    unused = sorted(f"{source} -> {target}" for source, allowed in rows.items() for target in allowed
                    if (source, target) not in used)
    assert not unused, "code map entries the code does not use (update the README):\n" + "\n".join(unused)


def test_engine_folders_import_no_family_and_families_no_other():
    rows = _code_map()
    families = [row for row in rows if row.startswith("pipelines/hunyuan_video")]
    assert families
    for row in ENGINE:
        assert not any(family in rows[row] for family in families), row
    for family in families:
        assert not [other for other in families if other != family and other in rows[family]], family


def test_no_import_cycle():
    graph = {_dotted(path): _imports(path) for path in _modules()}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", "import cycle: " + " -> ".join(".".join(n) for n in trail + [node])
        state[node] = "open"
        for target in graph.get(node, ()):
            visit(target, trail + [node])
        state[node] = "done"

    for node in graph:
        visit(node, [])


def test_top_level_is_short_and_modules_are_small():
    top = [p.name for p in (PACK_ROOT / "pipelines").glob("*.py")]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    long = {str(p.relative_to(PACK_ROOT)): len(p.read_text().splitlines()) for p in _modules()}
    long = {name: lines for name, lines in long.items() if lines > MAX_MODULE_LINES and name not in LONG_MODULES_KEPT}
    assert not long, long


def test_every_package_says_what_it_holds():
    for init in (PACK_ROOT / "pipelines").rglob("__init__.py"):
        if "__pycache__" not in init.parts:
            assert ast.get_docstring(ast.parse(init.read_text())), init
    for init in (PACK_ROOT / "nodes").rglob("__init__.py"):
        assert ast.get_docstring(ast.parse(init.read_text())), init
