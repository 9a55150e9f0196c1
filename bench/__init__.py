"""facebank benchmarks: `python -m bench [--quick]` from the repository root."""
