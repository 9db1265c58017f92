"""sam2_edge.export: the four tracker stages as static-shape graphs in ONNX, ExecuTorch and
CoreML, written with a manifest into one bundle folder.

    from sam2_edge.export import export_bundle
    export_bundle("sam2.1_hiera_tiny.pt", "bundles/tiny-onnx", format="onnx")

Importing this package does not import torch; exporting does (the `export-onnx`,
`executorch` or `coreml` extra).
"""

from .bundle import FORMATS, example_inputs, export_bundle

__all__ = ["export_bundle", "example_inputs", "FORMATS"]
