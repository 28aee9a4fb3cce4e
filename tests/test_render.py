"""The README's main command writes a playable .mp4 and says plainly when it ran the tiny demo model."""

import pytest

from hunyuan_video_suite.pipelines import tiny
from hunyuan_video_suite.pipelines.render import DEMO_NOTICE, main
from hunyuan_video_suite.pipelines.tiny_transformer import save_transformer, tiny_transformer
from hunyuan_video_suite.pipelines.video_io import read_video_frames


def test_demo_render_writes_a_playable_mp4(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "demo.mp4"), "--frames", "9", "--steps", "2"]) == 0
    frames, rate = read_video_frames(tmp_path / "demo.mp4")
    assert frames.shape == (9, 128, 128, 3) and rate == 24
    assert DEMO_NOTICE in capsys.readouterr().out


def test_render_from_files_on_disk(tmp_path, capsys):
    encoders = tiny.tiny_text_encoders(seed=1)
    vae = tiny.tiny_vae(seed=1)
    model = tiny_transformer(encoders.llm.config.hidden_size, encoders.clip.config.hidden_size,
                             vae.config.latent_channels, seed=1)
    transformer = save_transformer(model, tmp_path / "t2v.safetensors")
    vae_file = tiny.save_vae(vae, tmp_path / "vae.safetensors", layout="authors")
    files = tiny.save_text_encoders(encoders, tmp_path, layout="comfy")
    encoders.llm_tokenizer.save_pretrained(tmp_path / "tok" / "llama_tokenizer")
    encoders.clip_tokenizer.save_pretrained(tmp_path / "tok" / "clip_tokenizer")
    out = tmp_path / "real.mp4"
    main(["--transformer", str(transformer), "--vae", str(vae_file), "--llm", str(files["llm"]), "--clip",
          str(files["clip"]), "--tokenizers", str(tmp_path / "tok"), "--dtype", "fp32", "--device", "cpu",
          "--width", "64", "--height", "32", "--frames", "5", "--steps", "1", "--fps", "8", "--output", str(out)])
    frames, rate = read_video_frames(out)
    assert frames.shape == (5, 32, 64, 3) and rate == 8
    assert DEMO_NOTICE not in capsys.readouterr().out


def test_render_names_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="missing: --vae, --llm, --clip, --tokenizers"):
        main(["--transformer", str(tmp_path / "t.safetensors"), "--output", str(tmp_path / "x.mp4")])


def test_speed_flags_reach_the_sampler(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "fast.mp4"), "--frames", "5", "--steps", "4", "--attention", "flash",
                 "--cache", "first_block", "--cache-threshold", "1e6"]) == 0
    out = capsys.readouterr().out
    assert "attention 'flash' is not available" in out
    assert "cache first_block 1e+06: 3 of 4 transformer calls skipped" in out
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "x.mp4"), "--cache", "magic"])
