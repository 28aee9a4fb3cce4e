"""Speed: attention backends (mask-free), step caches, regional compile and the options object. Imports no family."""
