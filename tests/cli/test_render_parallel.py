"""The render command on several ranks: `torchrun` on 2 CPU processes (gloo) renders the frames of one process,
rank 0 alone decodes, writes and reports, the other rank is silent; misuse exits 2 with one line before a process
group is joined or a weight loads; under a launcher of one rank nothing changes.

One launch for the whole file (two processes importing torch and diffusers are most of its cost); the refusals run
in this process with the launcher's variables set."""

import contextlib
import inspect
import os
import subprocess
import sys

import pytest
import torch
from conftest import PACK_ROOT
from hunyuan_video_suite.pipelines.cli import parallel_options
from hunyuan_video_suite.pipelines.cli import render as render_command
from hunyuan_video_suite.pipelines.cli.render import run
from hunyuan_video_suite.pipelines.demo.tiny_transformer import TINY_HEADS
from hunyuan_video_suite.pipelines.parallel import ranks
from hunyuan_video_suite.pipelines.video import video_io
from hunyuan_video_suite.pipelines.video.video_io import read_video_frames
from PIL import Image

WORLD = 2
TIMEOUT_S = 300
# The demo T2V at a small size: 64x64, 5 frames, 2 steps (32 video tokens, 16 per rank), real CFG (a negative
# prompt encoded on every rank).
RENDER = ["--width", "64", "--height", "64", "--frames", "5", "--steps", "2", "--seed", "3", "--prompt", "A red fox",
          "--cfg", "2"]
LAUNCH = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999", "RANK": "0", "LOCAL_RANK": "0"}


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*ranks.LAUNCH_VARIABLES, "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    return env | {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(PACK_ROOT)}


# The command as `-m pipelines.render` runs it, with the frames handed to the video writer also saved, per rank: the
# frames are compared before H.264, which turns one 8-bit value rounded the other way into blocks of difference
# that motion prediction carries on (measured: HunyuanVideo 1.5 I2V frames within 1e-3 of a grey level gave videos
# 3 levels apart on average).
KEEP_FRAMES = """
import os
import sys

import torch
from pipelines.cli.render import run
from pipelines.video import video_io

write_mp4 = video_io.write_mp4


def keep(frames, path, fps, **options):
    torch.save(frames, f"{sys.argv[1]}.rank{os.environ['RANK']}")
    return write_mp4(frames, path, fps, **options)


video_io.write_mp4 = keep
sys.exit(run(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The command on 2 ranks: the video, the frames each rank gave the writer, each rank's stdout and stderr."""
    root = tmp_path_factory.mktemp("launch")
    out, logs, script = root / "video" / "fox.mp4", root / "logs", root / "keep_frames.py"
    script.write_text(KEEP_FRAMES)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
         "--log-dir", str(logs), "--redirects", "3", str(script), str(root / "frames"), *RENDER, "--output", str(out)],
        cwd=PACK_ROOT, env=_clean_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    streams = {(int(path.parent.name), path.stem): path.read_text() for path in logs.rglob("std*.log")}
    assert result.returncode == 0, f"{result.stderr[-3000:]}\n{streams}"
    frames = {int(path.suffix.removeprefix(".rank")): torch.load(path) for path in root.glob("frames.rank*")}
    return out, frames, streams


@pytest.fixture
def never_joins(monkeypatch):
    """Joining a process group or building the demo model fails the test: a refusal must come before both."""
    def joined(*args, **kwargs):
        pytest.fail("a process group was joined")

    monkeypatch.setattr(torch.distributed, "init_process_group", joined)
    monkeypatch.setattr(render_command, "_demo_models", lambda *a, **k: pytest.fail("the demo model was built"))


def test_two_ranks_render_the_frames_of_one_process(launched, tmp_path, monkeypatch, capsys):
    """The reference runs under a launcher of one rank (torchrun --nproc_per_node 1), which changes nothing: no
    process group, the command's usual output."""
    out, frames, _ = launched
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda *a, **k: pytest.fail("joined a group"))
    for name, value in (LAUNCH | {"WORLD_SIZE": "1"}).items():
        monkeypatch.setenv(name, value)
    written, write_mp4 = [], video_io.write_mp4

    def keep(frames, *args, **options):
        written.append(frames)
        return write_mp4(frames, *args, **options)

    monkeypatch.setattr(video_io, "write_mp4", keep)
    assert run([*RENDER, "--output", str(tmp_path / "single.mp4")]) == 0
    assert "several GPUs" not in capsys.readouterr().out
    assert list(frames) == [0]  # rank 1 never decodes nor writes
    assert frames[0].shape == written[0].shape == (5, 64, 64, 3)
    # The ranks sum attention in another order than one process, in float32: the frames (0..1) measured up to 5e-6
    # apart (the demo T2V and I2V, HunyuanVideo 1.5 T2V and I2V). Wrong wiring (a rank with another seed or prompt)
    # moves them by whole grey levels (4e-3 and more).
    torch.testing.assert_close(frames[0], written[0], atol=2e-5, rtol=0)
    got, rate = read_video_frames(out)
    assert got.shape == (5, 64, 64, 3) and rate == 24


def test_rank_0_alone_writes_and_reports(launched):
    out, _, streams = launched
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # one file, no temporary left
    assert streams[(1, "stdout")] == "" and streams[(1, "stderr")] == ""
    said = streams[(0, "stdout")]
    assert "several GPUs: ulysses over 2 ranks (cpu, cpu:gloo); rank 0 writes the video" in said
    assert "step 2/2" in said and f"wrote {out} (5 frames, 64x64) in" in said and "on 2 ranks" in said


def _refused(capsys, argv, env: dict | None = None, monkeypatch=None) -> str:
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    try:
        code = run(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "subject.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


@pytest.mark.parametrize("world, argv, expected", [
    (None, ["--parallel", "ulysses"], "--parallel splits one video over several processes, but no launcher started "
                                      "this process: start it with torchrun --nproc_per_node N -m pipelines.render"),
    (1, ["--cfg-parallel"], "--cfg-parallel splits one video over several processes, but this launch has 1 rank"),
    (3, [], "--parallel ulysses shares the attention heads among the ranks of a sequence, and the demo's tiny "
            "model has 2, too few for 3 ranks: launch at most 2 ranks"),
    (2, ["--attention", "masked"], "--attention masked runs diffusers' padded path, which cannot be split over ranks"),
    (2, ["--compile"], "--compile: torch.compile cannot trace diffusers' sequence-parallel exchange"),
    (2, ["--parallel", "ring"], "--parallel ring needs a GPU attention kernel that returns softmax statistics"),
    (2, ["--cfg-parallel", "--cfg-batching", "sequential"], "--cfg-batching sequential runs them one call at a time"),
    (2, ["--cfg-parallel", "--image", "PICTURE"], "--cfg-parallel splits the two CFG branches, but CFG is off (scale "
                                                  "1) for this job"),
    (3, ["--cfg-parallel", "--reference", "PICTURE"], "--cfg-parallel puts the two CFG branches on two halves of the "
                                                      "ranks: 3 ranks do not halve"),
    (2, ["--cfg-parallel", "--reference", "PICTURE", "--cfg-batching", "sequential"],
     "--cfg-batching sequential runs them one call at a time"),
    (2, ["--cfg-parallel", "--reference", "PICTURE", "--cfg", "1"], "--cfg-parallel splits the two CFG branches, but "
                                                                    "CFG is off (scale 1) for this job"),
])
def test_misuse_is_refused_before_joining_or_loading(world, argv, expected, capsys, monkeypatch, never_joins, picture,
                                                     tmp_path):
    env = None if world is None else LAUNCH | {"WORLD_SIZE": str(world)}
    argv = [str(picture) if a == "PICTURE" else a for a in argv]
    assert expected in _refused(capsys, [*argv, "--output", str(tmp_path / "x.mp4")], env, monkeypatch)


@pytest.mark.parametrize("argv", [["--parallel", "ring"], ["--cfg-parallel", "--cfg-batching", "sequential"]])
def test_only_rank_0_says_why(argv, capsys, monkeypatch, never_joins, tmp_path):
    """Every rank refuses the same way; rank 0 says it, the others exit 2 without a word."""
    for name, value in (LAUNCH | {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}).items():
        monkeypatch.setenv(name, value)
    try:
        code = run([*argv, "--output", str(tmp_path / "x.mp4")])
    except SystemExit as e:
        code = e.code
    assert code == 2
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("extra, request_type", [([], "T2VRequest"), (["--image", "PICTURE"], "I2VRequest"),
                                                   (["--reference", "PICTURE"], "CustomRequest")])
def test_cfg_parallel_batches_the_cfg_branches_of_every_13b_job(extra, request_type, monkeypatch, picture, tmp_path):
    """Each half of the ranks runs one branch of the job's batched call: 13B T2V and I2V, one call at a time by
    default, batch them as HunyuanCustom does."""
    rendered = []
    monkeypatch.setattr(render_command, "rank_session", lambda args, device: contextlib.nullcontext())
    monkeypatch.setattr(render_command, "_render", lambda args, job, request, *rest: rendered.append(request) or 0)
    for name, value in (LAUNCH | {"WORLD_SIZE": "2"}).items():
        monkeypatch.setenv(name, value)
    argv = [str(picture) if a == "PICTURE" else a for a in extra]
    assert run([*argv, "--cfg-parallel", "--cfg", "4", "--output", str(tmp_path / "x.mp4")]) == 0
    assert [(type(r).__name__, r.cfg_batching) for r in rendered] == [(request_type, "batched")]


@pytest.mark.parametrize("device, nccl, gpus, extra, expected", [
    ("cuda:1", True, 2, [], "--device cuda:1: each rank takes its own GPU (number LOCAL_RANK); give --device cuda"),
    ("cuda", False, 2, [], "several GPUs talk over NCCL, which this torch"),
    ("cuda", True, 1, [], "2 ranks on this machine but 1 GPU(s): launch at most one rank per GPU"),
    ("cuda", True, 2, ["--parallel", "ring", "--attention", "sdpa"], "--attention sdpa has none, give flash or sage"),
])
def test_a_launch_the_gpus_cannot_run_is_refused(device, nccl, gpus, extra, expected, capsys, monkeypatch,
                                                  never_joins, tmp_path):
    """GPUs as torch would report them: gloo cannot carry GPU tensors, and one rank per GPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: nccl)
    env = LAUNCH | {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
    argv = ["--device", device, *extra, "--output", str(tmp_path / "x.mp4")]
    assert expected in _refused(capsys, argv, env, monkeypatch)


def test_the_checks_match_the_engine():
    """The modes, the launcher's variables, and the head counts: the demo's, and diffusers' defaults, which are the
    released models' (24 for 13B, 16 for 1.5)."""
    from diffusers import HunyuanVideo15Transformer3DModel, HunyuanVideoTransformer3DModel
    from hunyuan_video_suite.pipelines.parallel.mesh import MODES

    def heads(model_class):
        return inspect.signature(model_class.__init__).parameters["num_attention_heads"].default

    assert parallel_options.HEADS == {"13b": heads(HunyuanVideoTransformer3DModel),
                                      "hv15": heads(HunyuanVideo15Transformer3DModel)}
    assert parallel_options.PARALLEL_CHOICES == MODES
    assert parallel_options.LAUNCH_VARIABLES == ranks.LAUNCH_VARIABLES
    assert parallel_options.DEMO_HEADS == TINY_HEADS
