"""A process that dies between the submit and the result: the next run resumes the recorded job, one billing."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import PACK_ROOT
from hunyuan_video_suite.pipelines.providers import fal
from hunyuan_video_suite.pipelines.providers import journal as J
from hunyuan_video_suite.pipelines.providers import segmind, wavespeed
from provider_fakes.fixtures import *  # noqa: F401,F403 - fixtures
from provider_fakes.fixtures import journal_row, run

# name -> the job's code (run in the crashing process), the same job built here. The image jobs use a fixed
# image: the fingerprint covers its pixels, so both processes must build the very same one.
JOBS = {
    "fal": "fal.t2v_job(prompt='crash test', seed=3)",
    "wavespeed": "wavespeed.t2v_job(prompt='crash test', seed=3)",
    "segmind": "segmind.t2v_job(prompt='crash test', seed=3)",
    "fal-hv15-t2v": "fal.hv15_t2v_job(prompt='crash test', seed=3, num_frames=61)",
    "fal-hv15-i2v": "fal.hv15_i2v_job(image=torch.linspace(0, 1, 48).reshape(1, 4, 4, 3), prompt='crash test', seed=3)",
    "wavespeed-hv15-t2v": "wavespeed.hv15_t2v_job(prompt='crash test', size='832*480', duration=8, seed=3)",
    "wavespeed-hv15-i2v": "wavespeed.hv15_i2v_job(image=torch.linspace(0, 1, 48).reshape(1, 4, 4, 3), seed=3)",
}

SCRIPT = textwrap.dedent("""
    import importlib.util, os, sys
    root = sys.argv[1]
    spec = importlib.util.spec_from_file_location("crash_pipelines", os.path.join(root, "pipelines", "__init__.py"),
                                                  submodule_search_locations=[os.path.join(root, "pipelines")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_pipelines"] = module
    spec.loader.exec_module(module)
    import torch
    from crash_pipelines.providers import fal, segmind, wavespeed
    from crash_pipelines.providers.runner import Callbacks, RunnerConfig
    from crash_pipelines.providers.service import run_job

    def die_after_submit(text):
        if "submitted, request id" in text:
            os._exit(3)  # a hard crash: no cleanup, no exception handling

    run_job({job}, sys.argv[2], config=RunnerConfig(poll_interval_s=0.01), callbacks=Callbacks(text=die_after_submit))
""")


@pytest.mark.parametrize("provider", sorted(JOBS))
def test_crash_after_submit_then_rerun_resumes_with_one_billing(provider, provider_env, data_dir, fast):
    fake = provider_env(provider.split("-")[0], queue_polls=3, run_polls=1)
    code = JOBS[provider]
    result = subprocess.run([sys.executable, "-c", SCRIPT.replace("{job}", code), str(PACK_ROOT), str(data_dir)],
                            env=os.environ.copy(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    build = lambda: eval(code, {"fal": fal, "segmind": segmind, "wavespeed": wavespeed, "torch": torch})  # noqa: E731
    row = journal_row(data_dir, build())
    assert row.phase == J.PENDING and row.request_id in fake.jobs and fake.billed == 1
    outcome = run(build(), data_dir, fast)
    assert outcome.resumed and outcome.request_id == row.request_id and outcome.video_path.is_file()
    assert fake.billed == 1 and len(fake.requests("POST")) == 1
