"""The README's main command: writes a playable video, says when it ran the tiny demo model, checks
every option before loading anything (one line, status 2), and survives Ctrl-C cleanly."""

import re
import signal
import subprocess
import sys

import pytest
from conftest import PACK_ROOT
from hunyuan_video_suite.pipelines.cli import options as render_options
from hunyuan_video_suite.pipelines.cli.render import DEMO_NOTICE, main
from hunyuan_video_suite.pipelines.demo import tiny
from hunyuan_video_suite.pipelines.demo.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.hunyuan_video_13b.rope import RIFLEX_CHOICES
from hunyuan_video_suite.pipelines.hunyuan_video_13b.t2v import MAX_SEED
from hunyuan_video_suite.pipelines.hunyuan_video_13b.transformer_loading import DTYPES, VARIANTS
from hunyuan_video_suite.pipelines.speed.attention import BACKENDS
from hunyuan_video_suite.pipelines.speed.step_cache import CACHE_PRESETS
from hunyuan_video_suite.pipelines.video.video_io import read_video_frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny models in ComfyUI's single-file layouts, plus an I2V v1 transformer."""
    root = tmp_path_factory.mktemp("models")
    encoders = tiny.tiny_text_encoders(seed=1)
    vae = tiny.tiny_vae(seed=1)
    dims = (encoders.llm.config.hidden_size, encoders.clip.config.hidden_size, vae.config.latent_channels)
    text = tiny.save_text_encoders(encoders, root, layout="comfy")
    encoders.llm_tokenizer.save_pretrained(root / "tok" / "llama_tokenizer")
    encoders.clip_tokenizer.save_pretrained(root / "tok" / "clip_tokenizer")
    return {
        "transformer": save_transformer(tiny_transformer(*dims, seed=1), root / "t2v.safetensors"),
        "i2v": save_transformer(tiny_transformer(*dims, variant="i2v_v1", seed=1), root / "i2v.safetensors"),
        "vae": tiny.save_vae(vae, root / "vae.safetensors", layout="authors"),
        "llm": text["llm"],
        "clip": text["clip"],
        "tokenizers": root / "tok",
    }


def _model_args(files, **override):
    chosen = {name: files[name] for name in ("transformer", "vae", "llm", "clip", "tokenizers")} | override
    return [arg for name, path in chosen.items() for arg in (f"--{name}", str(path))]


def test_demo_render_writes_a_playable_mp4(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "demo.mp4"), "--frames", "9", "--steps", "2"]) == 0
    frames, rate = read_video_frames(tmp_path / "demo.mp4")
    assert frames.shape == (9, 128, 128, 3) and rate == 24
    assert DEMO_NOTICE in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["demo.mp4"]  # the temporary name is gone


def test_render_from_files_on_disk(files, tmp_path, capsys):
    out = tmp_path / "new" / "real.mp4"  # a missing folder is made
    main([*_model_args(files), "--dtype", "fp32", "--device", "cpu", "--width", "64", "--height", "32",
          "--frames", "5", "--steps", "1", "--fps", "8", "--output", str(out)])
    frames, rate = read_video_frames(out)
    assert frames.shape == (5, 32, 64, 3) and rate == 8
    assert DEMO_NOTICE not in capsys.readouterr().out


def _error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("argv, expected", [
    (["--width", "0"], "--width: must be a multiple of 16 from 16 to 2048, got 0"),
    (["--height", "100"], "--height: must be a multiple of 16"),
    (["--frames", "0"], "--frames: must be 4k+1"),
    (["--frames", "12"], "--frames: must be 4k+1"),
    (["--steps", "0"], "--steps: must be a whole number from 1 to 200"),
    (["--fps", "0"], "--fps: must be a frame rate from 1 to 120"),
    (["--fps", "nan"], "--fps: must be a frame rate from 1 to 120"),
    (["--cfg", "0.5"], "--cfg: must be from 1 (off) to 30"),
    (["--seed", "-1"], "--seed: must be from 0 to"),
    (["--width", "wide"], "--width: must be a multiple of 16 from 16 to 2048, got 'wide'"),
    (["--dtype", "fp8"], "--dtype: invalid choice: 'fp8'"),
    (["--variant", "i2v"], "--variant: invalid choice: 'i2v'"),
    (["--output", "clip.gif"], "--output must end in .mp4, .mov, .mkv"),
    (["--vae", "v.safetensors", "--llm", "l.safetensors"], "--vae, --llm need --transformer (or --diffusers)"),
    (["--dtype", "fp16"], "--dtype needs --transformer (or --diffusers)"),
    (["--transformer", "t.safetensors"], "missing: --vae, --llm, --clip, --tokenizers"),
    (["--diffusers", "d", "--vae", "v.safetensors"], "--diffusers holds every component: give it alone, not with --vae"),
    (["--device", "banana"], "--device must be cpu, cuda, cuda:N"),
])
def test_a_bad_option_is_one_line_and_status_2(argv, expected, capsys, tmp_path):
    assert expected in _error_line(capsys, [*argv, "--output", str(tmp_path / "x.mp4")] if "--output" not in argv else argv)


def test_output_must_be_a_video_file_in_a_folder(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    assert "is a file, not a folder" in _error_line(capsys, ["--output", str(tmp_path / "file" / "x.mp4")])
    (tmp_path / "dir.mp4").mkdir()
    assert "is a folder" in _error_line(capsys, ["--output", str(tmp_path / "dir.mp4")])


def test_every_model_path_is_checked_from_its_header(files, capsys, tmp_path):
    out = ["--output", str(tmp_path / "x.mp4")]
    err = _error_line(capsys, [*_model_args(files, vae=files["clip"]), *out])
    assert re.search(r"--vae: .*clip.* holds a CLIP text encoder; expected the HunyuanVideo VAE", err), err
    err = _error_line(capsys, [*_model_args(files, transformer=files["vae"]), *out])
    assert "--transformer: vae.safetensors holds a HunyuanVideo VAE" in err
    err = _error_line(capsys, [*_model_args(files, llm=files["clip"]), *out])
    assert "--llm:" in err and "expected a Llama-3 text encoder" in err
    err = _error_line(capsys, [*_model_args(files, clip=tmp_path / "none.safetensors"), *out])
    assert "--clip:" in err and "does not exist" in err
    (tmp_path / "cut.safetensors").write_bytes(files["clip"].read_bytes()[:200])
    assert "--clip:" in _error_line(capsys, [*_model_args(files, clip=tmp_path / "cut.safetensors"), *out])
    err = _error_line(capsys, [*_model_args(files, tokenizers=tmp_path), *out])
    assert "--tokenizers:" in err and "llama_tokenizer/ and clip_tokenizer/" in err


def test_an_image_to_video_transformer_without_an_image_is_refused_before_loading(files, capsys, tmp_path):
    err = _error_line(capsys, [*_model_args(files, transformer=files["i2v"]), "--output", str(tmp_path / "x.mp4")])
    assert ("--transformer: i2v.safetensors is image-to-video v1 (latent concat): give --image PATH (the first frame), "
            "or a text-to-video transformer") in err


def test_option_choices_match_the_engine():
    assert render_options.DTYPE_CHOICES == tuple(DTYPES)
    assert render_options.VARIANT_CHOICES == ("auto", *VARIANTS)
    assert render_options.ATTENTION_CHOICES == BACKENDS
    assert render_options.CACHE_CHOICES == CACHE_PRESETS
    assert render_options.RIFLEX_CHOICES == RIFLEX_CHOICES
    assert render_options.MAX_SEED == MAX_SEED


def test_help_shows_defaults_and_choices_without_importing_torch():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipelines.render", "--help"],
                            cwd=PACK_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps to the terminal width
    assert "{bf16,fp16,fp32}" in text and "(default: 24)" in text
    assert "(default: 960 with a model, 128 for the demo)" in text
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "diffusers", "transformers"}


def test_ctrl_c_exits_130_and_leaves_no_partial_video(tmp_path):
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"an earlier render")
    # Ctrl-C as from a terminal: a runner that started the tests in the background (SIGINT ignored, which
    # a child inherits and Python then keeps) must not turn the signal into a no-op.
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.render", "--output", str(out), "--steps", "200", "--frames", "33"],
        cwd=PACK_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in process.stdout:
        if line.strip().startswith("step 1/"):
            process.send_signal(signal.SIGINT)
            break
    process.stdout.read()
    assert process.wait(timeout=120) == 130
    assert process.stderr.read().strip().splitlines()[-1] == "python3 -m pipelines.render: interrupted; no video written"
    assert out.read_bytes() == b"an earlier render"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_the_readme_command_runs_from_any_folder(tmp_path):
    """`bash .ci/render` takes relative paths from where it is run, like any command."""
    result = subprocess.run(["bash", str(PACK_ROOT / ".ci" / "render"), "--output", "clip.gif"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("python3 -m pipelines.render: error: --output must end in .mp4, .mov, .mkv, "
                                     "got 'clip.gif' (see --help)")


def test_speed_flags_reach_the_sampler(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "fast.mp4"), "--frames", "5", "--steps", "4", "--attention", "flash",
                 "--cache", "first_block", "--cache-threshold", "1e6"]) == 0
    out = capsys.readouterr().out
    assert "attention 'flash' is not available" in out
    assert "cache first_block 1e+06: 3 of 4 transformer calls skipped" in out
    assert "--cache: invalid choice: 'magic'" in _error_line(capsys, ["--output", str(tmp_path / "x.mp4"), "--cache", "magic"])
