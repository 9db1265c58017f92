"""sam2_edge.quantization: int8 / fp16 / palettized bundles with a measured fidelity report.

Not built yet: this package only reserves the import path (`sam2_edge.quantization`).
"""
