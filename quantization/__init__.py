"""sam2_edge.quantization: int8 / int8-dynamic ONNX bundles with a measured fidelity report.

    sam2-edge quantize --checkpoint CKPT --precision int8 --out DIR [--calib VIDEO] [--analyze]
    from sam2_edge.quantization.pipeline import quantize

* `onnx_quant`  -- one stage graph through onnxruntime.quantization under a per-stage policy (export layer)
* `fidelity`    -- cosine / SQNR / max abs error vs the fp32 graph (numpy)
* `calibration` -- real frames, automatic prompts, the stage inputs recorded from the fp32 tracker (app layer)
* `pipeline`    -- export -> calibrate -> quantise -> measure -> bundle + quantization.json (app layer)
* `cli`         -- `sam2-edge quantize` (and `sam2-edge export --precision int8...`)

See quantization/README.md for the policy and the measured numbers.
"""
