"""The preview watcher's protocol side: ComfyUI's binary websocket events as its server packs them (protocol.py
BinaryEventTypes, server.py send_image / send_image_with_metadata / send_progress_text), the Preview Options node
put before every sampler, and `--set` values."""

import json
import struct

import pytest
from comfy_check.object_info import full_object_info
from comfy_check.validator import ui_to_api
from comfy_check.watch_previews import decode_binary, insert_preview_options, parse_override
from conftest import PACK_ROOT


def test_preview_events_as_comfyui_packs_them():
    jpeg = b"\xff\xd8jpeg"
    plain = struct.pack(">I", 1) + struct.pack(">I", 1) + jpeg  # PREVIEW_IMAGE: event, image type, bytes
    assert decode_binary(plain) == ("preview", (None, jpeg))
    metadata = json.dumps({"node_id": "5", "display_node_id": "5", "prompt_id": "p"}).encode()
    with_metadata = struct.pack(">I", 4) + struct.pack(">I", len(metadata)) + metadata + jpeg
    assert decode_binary(with_metadata) == ("preview", ("5", jpeg))
    text = struct.pack(">I", 3) + struct.pack(">I", 2) + b"12" + "sampling: step 2/4, 0.50 s/step, 1s left".encode()
    assert decode_binary(text) == ("text", ("12", "sampling: step 2/4, 0.50 s/step, 1s left"))
    assert decode_binary(struct.pack(">I", 9) + b"x") == ("other", 9)


def test_preview_options_go_before_every_sampler():
    workflow = PACK_ROOT / "workflows" / "hunyuan15_480p_to_720p_t2v_sr_local.json"
    prompt, problems = ui_to_api(json.loads(workflow.read_text()), full_object_info())
    assert not problems
    samplers = {key: node["inputs"]["transformer"] for key, node in prompt.items()
                if node["class_type"] in ("HYVS_HV15Sampler", "HYVS_HV15SuperResolution")}
    insert_preview_options(prompt, "HYVS_HV15PreviewOptions", "strip (first, middle, last)")
    options = {key: node for key, node in prompt.items() if node["class_type"] == "HYVS_HV15PreviewOptions"}
    assert len(options) == 2
    for key, loader_link in samplers.items():
        option_id = prompt[key]["inputs"]["transformer"][0]
        assert options[option_id]["inputs"] == {"transformer": loader_link, "preview": "strip (first, middle, last)"}


def test_set_values():
    assert parse_override("5.width=320") == ("5", "width", 320)
    assert parse_override('7.filename_prefix="video/x"') == ("7", "filename_prefix", "video/x")
    assert parse_override("2.tokenizer_folder=/tmp/tok") == ("2", "tokenizer_folder", "/tmp/tok")
    with pytest.raises(SystemExit, match="NODE.INPUT=VALUE"):
        parse_override("width=320")
