"""LoRA: every circulating file format read into one form, checked against a loaded transformer, and applied to it
(side path or per-call weight patch, fp8 too; strengths changed in place). Imports no family."""
