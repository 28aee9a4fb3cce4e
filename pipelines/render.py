"""`python3 -m pipelines.render`, the render command `.ci/render` runs; the command itself is `cli/render.py`."""

import sys

from .cli.render import run

if __name__ == "__main__":
    sys.exit(run())
