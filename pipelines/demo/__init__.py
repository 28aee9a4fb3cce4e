"""Tiny random-weight models of the real architectures and writers of every file layout, for the demo and the tests; uses a family."""
