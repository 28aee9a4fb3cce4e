"""Video: tiled VAE decoding and MP4 in and out. Imports no family."""
