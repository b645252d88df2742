"""Deployment of trained runs: `python -m export.onnx` and `python -m export.separate`.

Both report bad input like `main.py` (`aur_tf.cli`). Their absl flags are defined only when the
command runs (`run()`), so both modules can be imported together (e.g. by tests) without clashing
flag names.
"""
