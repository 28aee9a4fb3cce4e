"""Many GPUs, one video: Ulysses sequence parallel on diffusers' context parallelism (`ranks`, `ulysses`)."""
