"""The flow-matching denoise loop every sampler runs, and the encoded prompt it takes. Imports no family."""
