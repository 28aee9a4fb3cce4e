"""The README's model table, generated from the workflows' own model manifests.

Each local workflow lists the files it needs in `properties.models` of the node that loads them
(`{name, url, directory}`, which is also what makes ComfyUI offer the download). This script
collects those lists from `workflows/*.json` and writes them as one Markdown table between

    <!-- models-table:begin -->
    <!-- models-table:end -->

in README.md, so the README can never drift from what the workflows ask for.

    python3 tests/comfy_check/models_table.py              # print the table
    python3 tests/comfy_check/models_table.py --check README.md
    python3 tests/comfy_check/models_table.py --write README.md

Standard library only, no imports from the pack: it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

BEGIN = "<!-- models-table:begin -->"
END = "<!-- models-table:end -->"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ModelFile:
    name: str
    directory: str
    url: str
    workflows: set[str] = field(default_factory=set)


def manifest_entries(workflow: dict) -> list[dict]:
    """Every `{name, url, directory}` a workflow lists: on its nodes and at the top level."""
    entries = []
    for node in workflow.get("nodes", []):
        entries += (node.get("properties") or {}).get("models") or []
    entries += workflow.get("models") or []
    return entries


def collect(workflows_dir: Path) -> list[ModelFile]:
    """One row per (directory, name) over all workflows, sorted by folder then name."""
    rows: dict[tuple[str, str], ModelFile] = {}
    for path in sorted(workflows_dir.glob("*.json")):
        workflow = json.loads(path.read_text(encoding="utf-8"))
        for entry in manifest_entries(workflow):
            key = (entry.get("directory", ""), entry.get("name", ""))
            row = rows.setdefault(key, ModelFile(key[1], key[0], entry.get("url", "")))
            if row.url != entry.get("url", ""):
                raise ValueError(f"{path.name}: {key[0]}/{key[1]} has url {entry.get('url')!r}, another workflow says {row.url!r}")
            row.workflows.add(path.name)
    return [rows[key] for key in sorted(rows)]


def render(rows: list[ModelFile]) -> str:
    lines = [
        "| File | Put it in | Download | Used by |",
        "|---|---|---|---|",
    ]
    for row in rows:
        used_by = ", ".join(f"`{name}`" for name in sorted(row.workflows))
        lines.append(f"| `{row.name}` | `ComfyUI/models/{row.directory}/` | [link]({row.url}) | {used_by} |")
    if not rows:
        lines.append("| (no workflow needs a model file) | | | |")
    return "\n".join(lines)


def replace_between_markers(text: str, table: str) -> str:
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise ValueError(f"the README has no '{BEGIN}' ... '{END}' section for the model table")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workflows", type=Path, default=REPO_ROOT / "workflows")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", type=Path, metavar="README", help="exit 1 if the README's table is not up to date")
    group.add_argument("--write", type=Path, metavar="README", help="rewrite the table in the README")
    args = parser.parse_args(argv)

    table = render(collect(args.workflows))
    if args.check is None and args.write is None:
        print(table)
        return 0
    target = args.check or args.write
    text = target.read_text(encoding="utf-8")
    updated = replace_between_markers(text, table)
    if args.write is not None:
        target.write_text(updated, encoding="utf-8")
        return 0
    if updated != text:
        print(f"{target}: the model table is out of date; run: python3 tests/comfy_check/models_table.py --write {target}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
