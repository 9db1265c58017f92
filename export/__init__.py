"""sam2_edge.export: the four tracker stages as static-shape graphs in ONNX, ExecuTorch and
CoreML, written with a manifest into one bundle folder."""
