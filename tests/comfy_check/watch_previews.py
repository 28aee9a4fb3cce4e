"""Queue a shipped workflow on a running ComfyUI and watch its websocket for the live previews.

Each binary preview message (ComfyUI's PREVIEW_IMAGE or PREVIEW_IMAGE_WITH_METADATA event) is kept with the
progress and progress-text messages around it; the tool prints a JSON summary (previews per node, the steps they
came with, the progress texts) and can write the previews as an animated GIF, which is how the README's preview
picture was made. Run it with the Python ComfyUI runs in (it has aiohttp and Pillow), ComfyUI started with a
preview method (`--preview-method auto`):

    python tests/comfy_check/watch_previews.py --server http://127.0.0.1:8188 \\
        --workflow workflows/hunyuan_t2v_local.json --set 5.width=320 --set 5.height=192 --set 5.frames=9 \\
        --set 5.steps=12 --preview-node HYVS_PreviewOptions --preview "strip (first, middle, last)" \\
        --gif workflows/screenshots/preview_13b_t2v.gif

`--set NODE.INPUT=VALUE` changes one input of the queued prompt (VALUE read as JSON when it parses); `--preview-node`
puts that Preview Options node between the sampler and its transformer. Exits 1 when the run fails or sends no
preview.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import struct
import sys
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfy_check.validator import ui_to_api

PREVIEW_IMAGE, TEXT, PREVIEW_IMAGE_WITH_METADATA = 1, 3, 4  # ComfyUI protocol.py BinaryEventTypes
SAMPLERS = ("Sampler", "SuperResolution")


def parse_override(text: str) -> tuple[str, str, object]:
    target, _, raw = text.partition("=")
    node_id, _, name = target.partition(".")
    if not (node_id and name and raw):
        raise SystemExit(f"--set wants NODE.INPUT=VALUE, got '{text}'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node_id, name, value


def insert_preview_options(prompt: dict, node_class: str, preview: str) -> None:
    """Route every sampler's transformer through one `node_class` node showing `preview`."""
    next_id = str(max(int(key) for key in prompt) + 1)
    for node in list(prompt.values()):
        link = node["inputs"].get("transformer")
        if any(word in node["class_type"] for word in SAMPLERS) and isinstance(link, list):
            prompt[next_id] = {"class_type": node_class, "inputs": {"transformer": link, "preview": preview}}
            node["inputs"]["transformer"] = [next_id, 0]
            next_id = str(int(next_id) + 1)


def decode_binary(data: bytes) -> tuple[str, object]:
    """("preview", (node id or None, JPEG/PNG bytes)) or ("text", (node id, text)) or ("other", event)."""
    (event,) = struct.unpack(">I", data[:4])
    if event == PREVIEW_IMAGE:
        return "preview", (None, data[8:])
    if event == PREVIEW_IMAGE_WITH_METADATA:
        (size,) = struct.unpack(">I", data[4:8])
        metadata = json.loads(data[8:8 + size])
        return "preview", (metadata.get("node_id") or metadata.get("display_node_id"), data[8 + size:])
    if event == TEXT:
        (size,) = struct.unpack(">I", data[4:8])
        return "text", (data[8:8 + size].decode(), data[8 + size:].decode(errors="replace"))
    return "other", event


async def watch(server: str, prompt: dict, timeout: float) -> dict:
    import aiohttp

    client_id = uuid.uuid4().hex
    log = {"previews": [], "texts": [], "progress": [], "status": None, "error": None}
    current_node = None
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.replace('http', 'ws', 1)}/ws?clientId={client_id}") as ws:
            async with session.post(f"{server}/prompt", json={"prompt": prompt, "client_id": client_id}) as reply:
                queued = await reply.json()
            if "prompt_id" not in queued:
                log["status"], log["error"] = "refused", queued
                return log
            prompt_id = queued["prompt_id"]
            while log["status"] is None:
                message = await ws.receive(timeout=timeout)
                if message.type == aiohttp.WSMsgType.BINARY:
                    kind, payload = decode_binary(message.data)
                    if kind == "preview":
                        step = log["progress"][-1]["value"] if log["progress"] else None
                        log["previews"].append({"node": payload[0] or current_node, "step": step, "image": payload[1]})
                    elif kind == "text":
                        log["texts"].append({"node": payload[0], "text": payload[1]})
                    continue
                if message.type != aiohttp.WSMsgType.TEXT:
                    log["status"], log["error"] = "closed", str(message.type)
                    continue
                event = json.loads(message.data)
                data = event.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if event["type"] == "executing":
                    current_node = data.get("node")
                elif event["type"] == "progress":
                    log["progress"].append({"node": data.get("node"), "value": data["value"], "max": data["max"]})
                elif event["type"] == "execution_success":
                    log["status"] = "success"
                elif event["type"] in ("execution_error", "execution_interrupted"):
                    log["status"], log["error"] = event["type"], data.get("exception_message")
    return log


def write_gif(previews: list[dict], path: Path, width: int, frame_ms: int) -> None:
    """The previews as an animated GIF `width` pixels wide (latent-sized pictures scaled up, blocky as ComfyUI shows
    them before smoothing)."""
    from PIL import Image

    frames = []
    for preview in previews:
        image = Image.open(io.BytesIO(preview["image"])).convert("RGB")
        height = max(1, round(image.height * width / image.width))
        frames.append(image.resize((width, height), Image.NEAREST))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=frame_ms, loop=0, optimize=True)


def summary(log: dict) -> dict:
    per_node: dict = {}
    for preview in log["previews"]:
        per_node.setdefault(str(preview["node"]), []).append(preview["step"])
    return {
        "status": log["status"], "error": log["error"], "previews_per_node": per_node,
        "preview_bytes": [len(p["image"]) for p in log["previews"]][:3],
        "progress_texts": [f"{t['node']}: {t['text']}" for t in log["texts"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--workflow", type=Path, required=True)
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE")
    parser.add_argument("--preview-node", help="a Preview Options node class to put before the sampler")
    parser.add_argument("--preview", default="strip (first, middle, last)")
    parser.add_argument("--gif", type=Path)
    parser.add_argument("--gif-width", type=int, default=480)
    parser.add_argument("--frame-ms", type=int, default=250)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for one message")
    args = parser.parse_args(argv)

    import urllib.request

    with urllib.request.urlopen(f"{args.server}/object_info") as reply:
        object_info = json.load(reply)
    prompt, problems = ui_to_api(json.loads(args.workflow.read_text()), object_info)
    if problems:
        print("\n".join(str(problem) for problem in problems), file=sys.stderr)
        return 1
    for node_id, name, value in map(parse_override, args.set):
        prompt[node_id]["inputs"][name] = value
    if args.preview_node:
        insert_preview_options(prompt, args.preview_node, args.preview)
    log = asyncio.run(watch(args.server, prompt, args.timeout))
    print(json.dumps(summary(log), indent=1))
    if args.gif and log["previews"]:
        write_gif(log["previews"], args.gif, args.gif_width, args.frame_ms)
    return 0 if log["status"] == "success" and log["previews"] else 1


if __name__ == "__main__":
    sys.exit(main())
