"""A real pretrained model from a package: rapidocr's text-orientation classifier, in torch.

    PYTHONPATH=. edgeconv analyze --model examples.rapidocr_cls:classifier --calib random

`rapidocr==3.10.0` ships `models/ch_ppocr_mobile_v2.0_cls_mobile.onnx` (0.6 MB, opset 11): a
MobileNetV3-style net (53 Conv, 35 unfolded BatchNorm, depthwise, hard-swish, squeeze-excite) that
says whether a text line is upright (class 0) or rotated 180 degrees (class 1).

`onnx2torch` would convert it but imports torchvision, which does not load beside the CPU torch
this project pins; so `OnnxModule` below is a small ONNX -> torch interpreter for exactly the ops
this file uses. Conv and BatchNormalization become nn.Conv2d / nn.BatchNorm2d (so edgeconv's fold
and quantize passes meet real modules), MatMul with a constant becomes nn.Linear, and everything
that only depends on constants or static shapes is computed once at build time.

The metric is accuracy on text lines rendered with Pillow's built-in font, half of them rotated
180 degrees, preprocessed exactly as rapidocr does (height 48, width up to 192, (x/255 - 0.5)/0.5,
zero padding on the right).
"""
from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from edgeconv.calib.data import DataSet
    from edgeconv.models import ModelSpec

INPUT_SHAPE = (1, 3, 48, 192)
EVAL_SEED, CALIB_SEED = 0, 1


def onnx_path() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr")
    if spec is None or spec.origin is None:
        raise ImportError("rapidocr is needed for this example: pip install --no-deps rapidocr==3.10.0")
    return Path(spec.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"


def _module_class() -> type:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class OnnxModule(nn.Module):
        """Runs an ONNX graph with torch ops; supports the op set of rapidocr's classifier."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            from onnx import helper, numpy_helper

            g = model.graph
            consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in g.initializer}
            self.input_name = g.input[0].name
            self.output_name = g.output[0].name
            self.steps: list[tuple[str, str, tuple[str, ...], tuple[str, ...], dict]] = []
            self.layers = nn.ModuleDict()
            self._n = 0
            for n in g.node:
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                if n.op_type == "Constant":
                    consts[n.output[0]] = numpy_helper.to_array(attrs["value"])
                    continue
                if all(i in consts for i in n.input if i) and n.op_type not in ("Shape",):
                    consts[n.output[0]] = self._fold(n.op_type, [consts[i] for i in n.input if i], attrs)
                    continue
                self._add(n, attrs, consts)
            # tensors read at run time (e.g. SE biases added after a conv) become buffers
            used = {i for _, _, ins, _, _ in self.steps for i in ins}
            self._const_names: dict[str, str] = {}
            # integer constants (shapes, indices) stay numpy: they are static under torch.export
            self._int_consts = {k: consts[k] for k in used & consts.keys() if consts[k].dtype.kind in "iu"}
            for name in sorted(used & consts.keys() - self._int_consts.keys()):
                key = f"c{len(self._const_names)}"
                self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(consts[name])))
                self._const_names[name] = key

        def _layer(self, module: nn.Module) -> str:
            key = f"l{self._n}"
            self._n += 1
            self.layers[key] = module
            return key

        def _add(self, n: Any, attrs: dict, consts: dict) -> None:
            op, ins, outs = n.op_type, tuple(n.input), tuple(n.output)
            extra: dict = {}
            if op == "Conv":
                w = consts[ins[1]]
                pads = list(attrs.get("pads", [0] * 4))
                conv = nn.Conv2d(w.shape[1] * attrs.get("group", 1), w.shape[0], tuple(w.shape[2:]),
                                 stride=tuple(attrs.get("strides", (1, 1))), dilation=tuple(attrs.get("dilations", (1, 1))),
                                 groups=attrs.get("group", 1), bias=len(ins) > 2,
                                 padding=(pads[0], pads[1]) if pads[:2] == pads[2:] else 0)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(w))
                    if len(ins) > 2:
                        conv.bias.copy_(torch.from_numpy(consts[ins[2]]))
                extra = {"layer": self._layer(conv), "pad": None if pads[:2] == pads[2:] else (pads[1], pads[3], pads[0], pads[2])}
                ins = ins[:1]
            elif op == "BatchNormalization":
                bn = nn.BatchNorm2d(len(consts[ins[1]]), eps=attrs.get("epsilon", 1e-5))
                with torch.no_grad():
                    bn.weight.copy_(torch.from_numpy(consts[ins[1]]))
                    bn.bias.copy_(torch.from_numpy(consts[ins[2]]))
                    bn.running_mean.copy_(torch.from_numpy(consts[ins[3]]))
                    bn.running_var.copy_(torch.from_numpy(consts[ins[4]]))
                extra = {"layer": self._layer(bn.eval())}
                ins = ins[:1]
            elif op == "MatMul" and ins[1] in consts:
                w = consts[ins[1]]  # (in, out)
                fc = nn.Linear(w.shape[0], w.shape[1], bias=False)
                with torch.no_grad():
                    fc.weight.copy_(torch.from_numpy(w.T.copy()))
                extra = {"layer": self._layer(fc)}
                ins = ins[:1]
            elif op == "Clip":
                extra = {"min": float(consts[ins[1]]) if len(ins) > 1 and ins[1] else None,
                         "max": float(consts[ins[2]]) if len(ins) > 2 and ins[2] else None}
                ins = ins[:1]
            elif op == "Reshape":
                extra = {"shape": tuple(int(v) for v in consts[ins[1]])} if ins[1] in consts else {}
                ins = ins[:1] if extra else ins
            elif op in ("Add", "Mul", "Div", "Sub"):
                # a scalar constant operand stays a Python number (exported as a scalar op)
                extra = {k: float(consts[i]) for k, i in zip(("a", "b"), ins) if i in consts and consts[i].size == 1}
                ins = tuple(i for i in ins if not (i in consts and consts[i].size == 1))
            elif op not in ("Relu", "HardSigmoid", "GlobalAveragePool", "MaxPool", "Softmax", "Identity",
                            "Shape", "Slice", "Concat", "Cast", "Flatten"):
                raise NotImplementedError(f"ONNX op {op} is not supported by this converter")
            self.steps.append((op, n.name, ins, outs, {**attrs, **extra}))

        @staticmethod
        def _fold(op: str, vals: list[np.ndarray], attrs: dict) -> np.ndarray:
            if op == "Reshape":
                return vals[0].reshape(vals[1].astype(int))
            if op == "Cast":
                return vals[0]
            if op == "Concat":
                return np.concatenate(vals, axis=attrs.get("axis", 0))
            if op == "Slice":
                return _slice(vals)
            if op in _BINARY:
                return _BINARY[op](*vals)
            raise NotImplementedError(f"constant ONNX op {op} is not supported by this converter")

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            env: dict[str, Any] = {self.input_name: x}

            def get(name: str) -> Any:
                if name in env:
                    return env[name]
                if name in self._int_consts:
                    return self._int_consts[name]
                return getattr(self, self._const_names[name])

            for op, _, ins, outs, a in self.steps:
                v = [get(i) for i in ins if i]
                if op == "Conv":
                    y = self.layers[a["layer"]](F.pad(v[0], a["pad"]) if a["pad"] else v[0])
                elif op in ("BatchNormalization", "MatMul"):
                    y = self.layers[a["layer"]](v[0])
                elif op == "Relu":
                    y = F.relu(v[0])
                elif op == "Clip":
                    y = torch.clamp(v[0], a["min"], a["max"])
                elif op == "HardSigmoid":
                    y = torch.clamp(v[0] * a.get("alpha", 0.2) + a.get("beta", 0.5), 0.0, 1.0)
                elif op == "GlobalAveragePool":
                    y = F.adaptive_avg_pool2d(v[0], 1)
                elif op == "MaxPool":
                    p = list(a.get("pads", [0] * 4))
                    y = F.max_pool2d(v[0], tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])),
                                     (p[0], p[1]), ceil_mode=bool(a.get("ceil_mode", 0)))
                elif op in _BINARY:
                    lhs = a["a"] if "a" in a else v.pop(0)
                    rhs = a["b"] if "b" in a else v.pop(0)
                    y = _BINARY[op](lhs, rhs)  # tensor op tensor, or with a Python scalar on either side
                elif op == "Reshape":
                    y = v[0].reshape(a["shape"] if "shape" in a else tuple(int(s) for s in v[1]))
                elif op == "Flatten":
                    y = torch.flatten(v[0], a.get("axis", 1))
                elif op == "Softmax":
                    y = F.softmax(v[0], dim=a.get("axis", -1))
                elif op == "Identity":
                    y = v[0]
                elif op == "Shape":  # static under torch.export: plain ints
                    y = np.asarray(v[0].shape, dtype=np.int64)
                elif op == "Slice":
                    y = _slice([np.asarray(t) if not torch.is_tensor(t) else t.numpy() for t in v])
                elif op == "Concat":
                    y = np.concatenate([np.asarray(t) if not torch.is_tensor(t) else t.numpy() for t in v],
                                       axis=a.get("axis", 0))
                elif op == "Cast":
                    y = v[0]
                else:  # pragma: no cover - rejected in _add
                    raise NotImplementedError(op)
                env[outs[0]] = y
            return env[self.output_name]

    return OnnxModule


_BINARY = {"Add": operator.add, "Mul": operator.mul, "Div": operator.truediv, "Sub": operator.sub}


def _slice(vals: list[np.ndarray]) -> np.ndarray:
    data, starts, ends = vals[0], vals[1].astype(int), vals[2].astype(int)
    axes = vals[3].astype(int) if len(vals) > 3 else np.arange(len(starts))
    steps = vals[4].astype(int) if len(vals) > 4 else np.ones(len(starts), int)
    idx = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        idx[ax] = slice(int(s), int(min(e, np.iinfo(np.int32).max)), int(st))
    return data[tuple(idx)]


def load_classifier() -> "torch.nn.Module":
    import onnx

    return _module_class()(onnx.load(str(onnx_path()))).eval()


def classifier() -> "ModelSpec":
    """The `--model examples.rapidocr_cls:classifier` factory."""
    import torch

    from edgeconv.models import ModelSpec, file_sha256

    return ModelSpec(module=load_classifier(), example_inputs=(torch.zeros(INPUT_SHAPE),),
                     name="rapidocr-cls", sha256=file_sha256(onnx_path()),
                     data=lambda: dataset(EVAL_SEED))


# --- data --------------------------------------------------------------------------------------

WORDS = ("invoice total amount date number account payment customer address order receipt price "
         "quantity description shipping tax balance due reference station report summary edge model "
         "convert quantize layer channel scale kernel stride depth width height image text line").split()


def render_line(rng: np.random.Generator) -> np.ndarray:
    """A random line of words and digits, black on a light background, as RGB uint8 (h, w, 3)."""
    from PIL import Image, ImageDraw, ImageFont

    words = [str(rng.integers(1, 9999)) if rng.random() < 0.2 else str(rng.choice(WORDS)) for _ in range(rng.integers(2, 6))]
    text = " ".join(words).upper() if rng.random() < 0.3 else " ".join(words)
    size = int(rng.integers(20, 36))
    font = ImageFont.load_default(size=size)  # Pillow's built-in font: no system font needed
    left, top, right, bottom = font.getbbox(text)
    pad = int(rng.integers(2, 8))
    img = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad),
                    tuple(int(v) for v in rng.integers(200, 256, 3)))
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font,
                             fill=tuple(int(v) for v in rng.integers(0, 60, 3)))
    return np.asarray(img)


def preprocess(img: np.ndarray) -> np.ndarray:
    """rapidocr's resize_norm_img for the classifier: (3, 48, 192) float32."""
    from PIL import Image

    _, c, h, w = INPUT_SHAPE
    ratio = img.shape[1] / float(img.shape[0])
    rw = w if math.ceil(h * ratio) > w else int(math.ceil(h * ratio))
    resized = np.asarray(Image.fromarray(img).resize((rw, h), Image.BILINEAR), dtype=np.float32)
    x = (resized.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5
    out = np.zeros((c, h, w), np.float32)
    out[:, :, :rw] = x
    return out


def dataset(seed: int = EVAL_SEED, n: int = 200) -> "DataSet":
    """`n` rendered lines, every other one rotated 180 degrees (label 1), as an edgeconv DataSet."""
    from edgeconv.calib.data import DataSet

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        img = render_line(rng)
        label = i % 2
        if label:
            img = img[::-1, ::-1].copy()
        xs.append(preprocess(img))
        ys.append(label)
    return DataSet(np.stack(xs), np.asarray(ys, np.int64),
                   source=f"rapidocr-cls: {n} rendered text lines (half rotated 180), seed {seed}")
