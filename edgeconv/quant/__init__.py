"""Quantization analysis around the `quantize` pass: the parameters a quantized program carries
(qparams), per-layer int8 sensitivity, automatic float fallback (`--max-drop`), quantization-aware
training, and cross-format divergence. Stages and commands import these; passes do not."""
