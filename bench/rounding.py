"""How much a net's own fp32 output moves when only its input is rounded to an int8 grid.

An int8 model rounds every activation; its input is only the first of them. When the fp32 net,
fed nothing but its input rounded to 256 levels, already moves its output by tens of percent, the
net amplifies rounding (deep random-init nets do; trained nets seldom): no int8 model of it can
stay near fp32, however faithful the file. The catalog bench (bench/coverage.py) records this per
net beside the verdicts, so that a failed fp32 floor reads as the net's or the quantizer's.

The samples are the ones the verdict judges (edgeconv's own split of the calibration folder), the
grid the int8 program's input grid under min-max calibration: per tensor, asymmetric, over the
calibration inputs' range.
"""
from __future__ import annotations

from pathlib import Path


def rounding_sensitivity(ref: str, calib_dir: Path, calib_samples: int, eval_samples: int) -> dict:
    """{rel_l2, cosine, top1_decisive, decisive} of fp32(round(x)) against fp32(x) on the held-out samples."""
    import numpy as np
    import torch

    from edgeconv import parity
    from edgeconv.config import CalibSpec, ExportOptions, QuantOptions
    from edgeconv.models import load_model
    from edgeconv.pipeline import split_data

    spec = load_model(ref)
    opts = ExportOptions(calib=CalibSpec(source=str(calib_dir)), quant=QuantOptions(samples=calib_samples),
                         eval_samples=eval_samples)
    calib, evalset = split_data(spec, opts, True)
    lo, hi = min(float(calib.x.min()), 0.0), max(float(calib.x.max()), 0.0)
    scale = (hi - lo) / 255.0
    zero = np.round(-128 - lo / scale)
    rounded = ((np.clip(np.round(evalset.x / scale) + zero, -128, 127) - zero) * scale).astype(np.float32)
    net = spec.module.eval()
    with torch.no_grad():
        ref_out = np.concatenate([_first(net(torch.from_numpy(x[None]))) for x in evalset.x])
        out = np.concatenate([_first(net(torch.from_numpy(x[None]))) for x in rounded])
    mask = parity.decisive(ref_out, 0.02 * parity.value_range(ref_out))
    agree = None
    if mask is not None and mask.any():
        agree = float((parity.top1(out)[mask] == parity.top1(ref_out)[mask]).mean())
    return {"rel_l2": round(parity.rel_l2(out, ref_out), 5), "cosine": round(parity.cosine(out, ref_out), 5),
            "top1_decisive": agree, "decisive": int(mask.sum()) if mask is not None else 0,
            "input_scale": scale, "samples": len(evalset.x)}


def _first(out):
    import torch

    t = out[0] if isinstance(out, (tuple, list)) else out
    return t.detach().float().numpy() if isinstance(t, torch.Tensor) else t
