"""Multi-process (gloo) tests of the sequence-parallel engine."""
