"""The process group's backend names the CPU half: diffusers gathers Ulysses' sizes on the CPU only when the backend
string says "cpu", else on `torch.accelerator.current_accelerator()`, which a CUDA build of torch reports even on a
machine without a GPU (a CPU-only ComfyUI then failed with "Found no NVIDIA driver")."""

from hunyuan_video_suite.pipelines.parallel.ranks import default_backend


def test_every_backend_names_the_cpu_half():
    assert default_backend("cpu") == "cpu:gloo"
    assert default_backend("cuda") == "cpu:gloo,cuda:nccl"
