"""Mutation suite for the parity verdict (issue 19): plant known defects by hand in copies of the
demo's int8 artifacts and ask `edgeconv.check.check` whether it catches each one, and where.

    python bench/mutants.py [--out bench/results/mutants.json] [--work DIR] [--calib default weak aiq]

The demo is exported once per calibration (default options; `--calib-samples 2`, a weak one); `aiq`
plants the TFLite defects in ai-edge-quantizer's static int8 of litert-torch's fp32 demo file, a file
edgeconv did not write, checked against the simulation at the file's own scales.
Every mutant is its own file beside its source artifact (the same folder, so the manifest's model
and options apply), and each calibration's mutants are checked in one `check()` call, so the torch
programs are rebuilt once per batch. For each mutant the runtime's accuracy on the labelled held-out
split and its top-1 agreement with the unmutated artifact say how much the defect matters; the
verdict says whether it was caught, by which criterion, and at which layer.

Editing is format-neutral above one small editor per format (`OnnxFile`, `TfliteFile`,
`CoremlFile`): each exposes, per weight layer in execution order, the int8 weight in torch layout
(O, I, kh, kw) / (O, I), its scale vector, its stored bias (and the bias's real value per stored
unit) and the (scale, zero point) of the layer's output activation. The defects are written once,
against that interface, so the same defect lands at the same place in all three files.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

# The demo's weight layers in execution order: the order in which every format lists its conv /
# linear ops (checked against the torch module's weight shapes in `layer_index`).
LAYERS = ("stem.0", "blocks.0.depthwise.0", "blocks.0.pointwise.0", "blocks.1.depthwise.0",
          "blocks.1.pointwise.0", "blocks.2.depthwise.0", "blocks.2.pointwise.0", "fc")
TARGETS = {"onnx": "onnx-int8", "tflite": "tflite-int8", "coreml": "coreml-w8a8"}
CALIBS = {"default": (), "weak": ("--calib-samples", "2")}
# "aiq": a TFLite int8 file edgeconv did not write — ai-edge-quantizer's static int8 of litert-torch's
# fp32 file — judged against the simulation at its own scales (edgeconv.quant.rebase)
FOREIGN = "aiq"
SEED = 19  # the number: one fixed draw of the mutated elements


# --- per-format editors ----------------------------------------------------------------------------

class OnnxFile:
    """A QDQ ONNX file: weights are int8 initializers behind DequantizeLinear, biases float."""

    def __init__(self, src: Path) -> None:
        import onnx
        from onnx import numpy_helper

        self.np = numpy_helper
        self.model = onnx.load(str(src))
        g = self.model.graph
        self.inits = {i.name: i for i in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.users: dict[str, list[Any]] = {}
        for n in g.node:
            for i in n.input:
                self.users.setdefault(i, []).append(n)
        self.ops = [n for n in g.node if n.op_type in ("Conv", "Gemm")]

    def _get(self, name: str) -> np.ndarray:
        return self.np.to_array(self.inits[name]).copy()

    def _set(self, name: str, a: np.ndarray) -> None:
        self.inits[name].CopyFrom(self.np.from_array(np.asarray(a), name))

    def _dq(self, i: int) -> Any:
        return self.producer[self.ops[i].input[1]]

    def get(self, i: int, key: str) -> np.ndarray:
        if key == "w":
            return self._get(self._dq(i).input[0])
        if key == "ws":
            return self._get(self._dq(i).input[1])
        if key == "b":
            return self._get(self.ops[i].input[2])
        if key == "bu":  # a float bias: one stored unit is one real unit
            return np.ones(self._get(self.ops[i].input[2]).shape, np.float64)
        raise KeyError(key)

    def set(self, i: int, key: str, a: np.ndarray) -> None:
        name = {"w": self._dq(i).input[0], "ws": self._dq(i).input[1], "b": self.ops[i].input[2]}.get(key)
        if name is not None:
            self._set(name, a.astype(self._get(name).dtype))

    def _out_q(self, i: int) -> Any:
        n = self.ops[i]
        while n.op_type != "QuantizeLinear":  # Conv -> (Clip) -> QuantizeLinear
            n = self.users[n.output[0]][0]
        return n

    def act(self, i: int) -> tuple[float, int]:
        q = self._out_q(i)
        return float(self._get(q.input[1])), int(self._get(q.input[2]))

    def set_act(self, i: int, scale: float, zp: int) -> None:
        """The activation's stored scale and zero point, in its QuantizeLinear and every
        DequantizeLinear that reads it: fresh initializers, since several tensors share them."""
        q = self._out_q(i)
        s_dtype, z_dtype = self._get(q.input[1]).dtype, self._get(q.input[2]).dtype
        names = (f"{q.name}_mut_scale", f"{q.name}_mut_zp")
        for name, v in zip(names, (np.asarray(scale, s_dtype), np.asarray(zp, z_dtype))):
            init = self.np.from_array(v, name)
            self.model.graph.initializer.append(init)
            self.inits[name] = self.model.graph.initializer[-1]
        for n in [q] + [d for d in self.users[q.output[0]] if d.op_type == "DequantizeLinear"]:
            n.input[1], n.input[2] = names

    def save(self, dst: Path) -> None:
        import onnx

        onnx.save(self.model, str(dst))


class TfliteFile:
    """A .tflite flatbuffer: OHWI conv / 1HWC depthwise / (O, I) FC weights, int32 biases whose
    real value per unit is the bias tensor's own scale (input scale × weight scale)."""

    KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")

    def __init__(self, src: Path) -> None:
        from edgeconv.exporters.tflite.flatbuffer import builtin, op_names, read_tflite

        self.model = read_tflite(src)
        names = op_names()
        self.sg = self.model.subgraphs[0]
        self.kinds = [builtin(self.model, op, names) for op in self.sg.operators]
        self.ops = [op for op, k in zip(self.sg.operators, self.kinds) if k in self.KINDS]
        self.op_kind = [k for k in self.kinds if k in self.KINDS]

    def _tensor(self, i: int, key: str) -> Any:
        return self.sg.tensors[self.ops[i].inputs[{"w": 1, "ws": 1, "b": 2, "bu": 2}[key]]]

    def get(self, i: int, key: str) -> np.ndarray:
        from edgeconv.exporters.tflite.flatbuffer import const_array

        t = self._tensor(i, key)
        if key in ("ws", "bu"):
            return np.asarray(t.quantization.scale, np.float64).copy()
        a = const_array(self.model, t).copy()
        return self._to_torch(i, a) if key == "w" else a

    def _to_torch(self, i: int, a: np.ndarray) -> np.ndarray:
        kind = self.op_kind[i]
        if kind == "CONV_2D":
            return a.transpose(0, 3, 1, 2)
        if kind == "DEPTHWISE_CONV_2D":
            return a.transpose(3, 0, 1, 2)
        return a

    def _from_torch(self, i: int, a: np.ndarray) -> np.ndarray:
        kind = self.op_kind[i]
        if kind == "CONV_2D":
            return a.transpose(0, 2, 3, 1)
        if kind == "DEPTHWISE_CONV_2D":
            return a.transpose(1, 2, 3, 0)
        return a

    def set(self, i: int, key: str, a: np.ndarray) -> None:
        from edgeconv.exporters.tflite.sparse import _own_buffer

        t = self._tensor(i, key)
        if key in ("ws", "bu"):
            t.quantization.scale = np.asarray(a, np.float32)
            return
        data = self._from_torch(i, a) if key == "w" else a
        dtype = np.int8 if key == "w" else np.int32
        _own_buffer(self.model, t).data = np.frombuffer(np.ascontiguousarray(data.astype(dtype)).tobytes(), np.uint8).copy()

    def act(self, i: int) -> tuple[float, int]:
        q = self.sg.tensors[self.ops[i].outputs[0]].quantization
        return float(q.scale[0]), int(q.zeroPoint[0])

    def set_act(self, i: int, scale: float, zp: int) -> None:
        """The output tensor's scale and zero point, and those of the copies that layout ops (PAD,
        RESHAPE) make of it with the same parameters: one stored activation, everywhere it is read."""
        tensors = [self.ops[i].outputs[0]]
        before = self.act(i)
        for op, kind in zip(self.sg.operators, self.kinds):
            if kind in ("PAD", "RESHAPE", "MEAN") and op.inputs[0] in tensors:
                q = self.sg.tensors[op.outputs[0]].quantization
                if (float(q.scale[0]), int(q.zeroPoint[0])) == before and kind != "MEAN":
                    tensors.append(op.outputs[0])
        for t in tensors:
            q = self.sg.tensors[t].quantization
            q.scale, q.zeroPoint = np.asarray([scale], np.float32), np.asarray([zp], np.int64)

    def save(self, dst: Path) -> None:
        from edgeconv.exporters.tflite.sparse import pack

        dst.write_bytes(pack(self.model))


class CoremlFile:
    """An mlprogram .mlpackage: constexpr_affine_dequantize weights, float biases, quantize /
    dequantize activation pairs. Consts are edited in the copy's protobuf (immediate values) or in
    its weight.bin (blob values, rewritten in place: every edit keeps dtype and size)."""

    def __init__(self, src: Path) -> None:
        from edgeconv.exporters.coreml.mil.program import load_program

        self.src = src
        self.prog = load_program(src)
        self.ops = [s for s in self.prog.steps if s.op_type in ("conv", "linear")]
        self.edits: dict[str, np.ndarray] = {}

    def _const(self, name: str) -> np.ndarray:
        return np.asarray(self.edits.get(name, self.prog.consts[name])).copy()

    def _names(self, i: int) -> dict[str, str]:
        s = self.ops[i]
        dq = self.prog.producer(s.inputs["weight"])
        return {"w": dq.inputs["quantized_data"], "ws": dq.inputs["scale"], "b": s.inputs["bias"]}

    def get(self, i: int, key: str) -> np.ndarray:
        if key == "bu":
            return np.ones(self._const(self._names(i)["b"]).shape, np.float64)
        return self._const(self._names(i)[key])

    def set(self, i: int, key: str, a: np.ndarray) -> None:
        name = self._names(i).get(key)
        if name is not None:
            self.edits[name] = np.asarray(a).astype(self._const(name).dtype)

    def _pair(self, i: int) -> tuple[Any, list[Any]]:
        out = self.ops[i].outputs[0]
        step = next(s for s in self.prog.steps if out in s.inputs.values())
        if step.op_type == "clip":
            step = next(s for s in self.prog.steps if step.outputs[0] in s.inputs.values())
        dqs = [s for s in self.prog.steps if s.op_type == "dequantize" and s.inputs["input"] == step.outputs[0]]
        return step, dqs

    def act(self, i: int) -> tuple[float, int]:
        q, _ = self._pair(i)
        return float(self._const(q.inputs["scale"])), int(self._const(q.inputs["zero_point"]))

    def set_act(self, i: int, scale: float, zp: int) -> None:
        q, dqs = self._pair(i)
        for s in [q] + dqs:
            self.edits[s.inputs["scale"]] = np.asarray(scale, np.float32)
            self.edits[s.inputs["zero_point"]] = np.asarray(zp, self._const(s.inputs["zero_point"]).dtype)

    def save(self, dst: Path) -> None:
        import coremltools as ct

        shutil.copytree(self.src, dst)
        data = dst / "Data" / "com.apple.CoreML"
        spec = ct.models.MLModel(str(dst), skip_model_load=True).get_spec()
        fn = spec.mlProgram.functions["main"]
        vals = {}
        for op in fn.block_specializations[fn.opset].operations:
            if op.type == "const":
                vals[op.outputs[0].name] = op.attributes["val"]
            elif op.type.startswith("constexpr_"):  # values held as the op's attributes, which
                for k, v in op.attributes.items():  # coremltools' loader names op_attr_N (N: a counter)
                    vals[f"{op.outputs[0].name}_{k}"] = v
        blob = bytearray((data / "weights" / "weight.bin").read_bytes())
        for name, a in self.edits.items():
            _write_const(vals[name] if name in vals else vals[name.rsplit("_", 1)[0]], a, blob)
        (data / "weights" / "weight.bin").write_bytes(bytes(blob))
        (data / "model.mlmodel").write_bytes(spec.SerializeToString())


def _write_const(val: Any, a: np.ndarray, blob: bytearray) -> None:
    """One const's value, same dtype and size: in the blob (metadata at `offset`: sentinel u32,
    dtype u32, size u64, data offset u64) or in the immediate tensor."""
    raw = np.ascontiguousarray(a).tobytes()
    if val.HasField("blobFileValue"):
        meta = val.blobFileValue.offset
        size, start = (int(np.frombuffer(blob, np.uint64, 1, meta + k)[0]) for k in (8, 16))
        assert size == len(raw), (size, len(raw))
        blob[start:start + size] = raw
        return
    t = val.immediateValue.tensor
    kind = t.WhichOneof("value")
    if kind == "floats":
        t.floats.values[:] = np.asarray(a, np.float32).ravel().tolist()
    elif kind == "ints":
        t.ints.values[:] = np.asarray(a, np.int64).ravel().tolist()
    elif kind == "bytes":
        t.bytes.values = raw
    else:
        raise ValueError(f"cannot write a {kind} const")


EDITORS = {"onnx": OnnxFile, "tflite": TfliteFile, "coreml": CoremlFile}


def layer_index(name: str) -> int:
    return LAYERS.index(name)


def check_layout(ed: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Each editor's i-th weight has the torch layer's shape: the name mapping is right."""
    for i, name in enumerate(LAYERS):
        got = tuple(ed.get(i, "w").shape)
        assert got == shapes[name], f"{type(ed).__name__} layer {i}: {got} != {name} {shapes[name]}"


# --- the defects --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Defect:
    name: str
    layer: str  # the planted layer (the one the verdict should name)
    params: dict[str, Any]
    apply: Callable[[Any, "Context_"], None]
    benign: bool = False  # same function: must pass


@dataclasses.dataclass(frozen=True)
class Context_:
    """What some defects need beyond the file: the refit delta (computed once per calibration)."""

    fc_delta: np.ndarray | None = None


def _weights_steps(layer: str, k: int, share: float) -> Callable:
    def apply(ed: Any, _: Context_) -> None:
        i = layer_index(layer)
        w = ed.get(i, "w").astype(np.int32)
        rng = np.random.default_rng(SEED)
        n = max(1, round(share * w.size))
        idx = rng.choice(w.size, n, replace=False)
        sign = rng.choice((-1, 1), n)
        flat = w.reshape(-1)
        flat[idx] = np.clip(flat[idx] + k * sign, -127, 127)
        ed.set(i, "w", flat.reshape(w.shape))
    return apply


def _zero_channel(layer: str) -> Callable:
    def apply(ed: Any, _: Context_) -> None:
        i = layer_index(layer)
        w = ed.get(i, "w")
        c = int(np.abs(w.reshape(len(w), -1).astype(np.int64)).sum(1).argmax())  # the channel that matters most
        w[c] = 0
        ed.set(i, "w", w)
    return apply


def _act(layer: str, scale_factor: float = 1.0, zp_shift: int = 0) -> Callable:
    def apply(ed: Any, _: Context_) -> None:
        i = layer_index(layer)
        s, z = ed.act(i)
        ed.set_act(i, s * scale_factor, z + zp_shift)
    return apply


def _scaled(layer: str, key: str, factor: float) -> Callable:
    def apply(ed: Any, _: Context_) -> None:
        i = layer_index(layer)
        a = ed.get(i, key)
        ed.set(i, key, np.round(a * factor) if key == "b" and a.dtype.kind == "i" else a * factor)
    return apply


def _transpose_kernel(layer: str) -> Callable:
    def apply(ed: Any, _: Context_) -> None:
        i = layer_index(layer)
        ed.set(i, "w", ed.get(i, "w").transpose(0, 1, 3, 2))
    return apply


def _refit(ed: Any, ctx: Context_) -> None:
    i = layer_index("fc")
    ed.set(i, "w", np.clip(ed.get(i, "w").astype(np.int32) + ctx.fc_delta, -127, 127))


def _logit_bias(cls: int) -> Callable:
    def apply(ed: Any, _: Context_) -> None:
        i = layer_index("fc")
        b, unit = ed.get(i, "b"), ed.get(i, "bu")
        b[cls] = b[cls] + (np.round(1.0 / unit[cls]) if b.dtype.kind == "i" else 1.0)
        ed.set(i, "b", b)
    return apply


def _permute(layer: str) -> Callable:
    """Permute `layer`'s output channels and the next weight layer's input channels alike (with the
    scales and biases): the same function, stored in another order."""
    def apply(ed: Any, _: Context_) -> None:
        i = layer_index(layer)
        perm = np.random.default_rng(SEED).permutation(len(ed.get(i, "w")))
        for key in ("w", "ws", "b", "bu"):
            ed.set(i, key, ed.get(i, key)[perm])
        ed.set(i + 1, "w", ed.get(i + 1, "w")[:, perm])
    return apply


def _nothing(ed: Any, _: Context_) -> None:
    """Re-encoding only: the editor writes the file back as it read it."""


def defects() -> list[Defect]:
    mid = "blocks.1.pointwise.0"
    out = []
    weight_layers = ("stem.0", mid, "fc")
    for j, (k, share) in enumerate((k, s) for k in (1, 2, 5) for s in (0.01, 0.1)):
        layer = weight_layers[j % 3]
        out.append(Defect(f"weights ±{k} on {share:.0%}", layer, {"k": k, "share": share},
                          _weights_steps(layer, k, share)))
    out.append(Defect("zeroed output channel", mid, {"channel": "largest |w| sum"}, _zero_channel(mid)))
    for p in (0.02, 0.1):
        out.append(Defect(f"activation scale -{p:.0%}", "stem.0", {"factor": 1 - p}, _act("stem.0", scale_factor=1 - p)))
    for p in (0.02, 0.1):
        out.append(Defect(f"weight scale +{p:.0%}", mid, {"factor": 1 + p}, _scaled(mid, "ws", 1 + p)))
    out.append(Defect("activation zero point +1", "blocks.0.pointwise.0", {"shift": 1},
                      _act("blocks.0.pointwise.0", zp_shift=1)))
    out.append(Defect("bias +5%", mid, {"factor": 1.05}, _scaled(mid, "b", 1.05)))
    out.append(Defect("transposed kernel", "stem.0", {"swap": "kh<->kw"}, _transpose_kernel("stem.0")))
    out.append(Defect("refitted classifier", "fc", {"flip": "3 smallest-margin held-out samples"}, _refit))
    out.append(Defect("logit bias +1", "fc", {"class": 0, "delta": 1.0}, _logit_bias(0)))
    out.append(Defect("channel permutation", "", {"layer": "blocks.2.pointwise.0 -> fc"},
                      _permute("blocks.2.pointwise.0"), benign=True))
    out.append(Defect("re-encoded", "", {"how": "read and written back by the format's editor"}, _nothing, benign=True))
    return out


# --- refit: the classifier change that flips the smallest-margin samples ---------------------------

def refit_delta(onnx_path: Path, x: np.ndarray, n_flip: int = 3) -> tuple[np.ndarray, list[int]]:
    """int8 steps to add to the fc weight so that the `n_flip` held-out samples with the smallest
    top-1 margin (in the ONNX artifact) move to their runner-up class: +1/-1 steps on the features
    each sample leans on most, until its runner-up leads by two output steps."""
    from edgeconv.exporters.formats import format_for

    fmt = format_for(onnx_path)
    ed = OnnxFile(onnx_path)
    i = layer_index("fc")
    feats = next(t for t in reversed(fmt.int8_tensors(onnx_path, x)) if t.values.reshape(len(x), -1).shape[1] == 64)
    f = (feats.values.reshape(len(x), -1) - feats.zero_point) * feats.scale
    w, ws, b = ed.get(i, "w").astype(np.int32), ed.get(i, "ws"), ed.get(i, "b")
    out_scale = ed.act(i)[0]
    logits = f @ (w * ws[:, None]).T + b
    part = np.sort(logits, 1)
    picks = [int(s) for s in np.argsort(part[:, -1] - part[:, -2])[:n_flip]]
    delta = np.zeros_like(w)
    for s in picks:
        a, r = np.argsort(logits[s])[-1], np.argsort(logits[s])[-2]
        order = np.argsort(-f[s])
        for step in range(64 * 20):
            cur = f[s] @ ((w + delta) * ws[:, None]).T + b
            if cur[r] - cur[a] > 2 * out_scale:
                break
            j = order[step % 8]  # the 8 strongest features, in turn
            delta[r, j] += 1
            delta[a, j] -= 1
    return delta, picks


# --- running -----------------------------------------------------------------------------------

def export(out: Path, extra: tuple[str, ...]) -> None:
    if (out / "edgeconv.json").is_file():
        return
    cmd = ["edgeconv", "export", "-t", "onnx-int8", "-t", "tflite-int8", "-t", "coreml-w8a8", "-o", str(out), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def artifact(folder: Path, fmt: str) -> Path:
    manifest = json.loads((folder / "edgeconv.json").read_text())
    return folder / next(a["path"] for a in manifest["artifacts"] if a["target"] == TARGETS[fmt])


def torch_shapes() -> dict[str, tuple[int, ...]]:
    from edgeconv.demo import demo

    mods = dict(demo().module.named_modules())
    return {name: tuple(mods[name].weight.shape) for name in LAYERS}


def plant(folder: Path, todo: list[Defect], ctx: Context_, shapes: dict) -> list[tuple[Defect, str, Path, str]]:
    """Every defect in a copy of each format's artifact: (defect, format, mutant path, target)."""
    from edgeconv.exporters.onnx.u8u8 import to_u8u8

    made = []
    for fmt, Editor in EDITORS.items():
        src = artifact(folder, fmt)
        suffix = src.suffix
        for n, d in enumerate(todo):
            ed = Editor(src)
            check_layout(ed, shapes)
            d.apply(ed, ctx)
            dst = folder / f"mutant-{n:02d}-{fmt}{suffix}"
            if dst.exists():
                shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
            ed.save(dst)
            made.append((d, fmt, dst, TARGETS[fmt]))
        if fmt == "onnx":  # the second benign re-encoding: int8 -> uint8, losslessly
            dst = folder / f"mutant-u8-{fmt}{suffix}"
            to_u8u8(src, dst)
            made.append((Defect("uint8 re-encoding", "", {"how": "exporters/onnx/u8u8.to_u8u8"}, _nothing, True),
                         fmt, dst, "onnx-int8-u8"))
    return made


def run_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from edgeconv.context import one_thread
    from edgeconv.exporters.formats import format_for

    with one_thread():
        return format_for(path).runner(path)(x)


def layer_of(entry: str) -> str:
    return entry.split(":")[0].strip()


def judge(d: Defect, checked: Any, acc: float, base_acc: float, agree: float) -> dict[str, Any]:
    p = checked.parity
    fired = [("fp32" if diff.reference != "torch-quant-sim" else "sim") for diff in p.diffs if not diff.passed]
    lay = p.layers
    if lay is not None and not lay.passed:
        fired.append("per-layer")
    named = layer_of(lay.over[0]) if lay is not None and lay.over else (lay.worst_layer if lay is not None else "")
    matters = abs(acc - base_acc) >= 0.005 or (1 - agree) >= 0.01
    verdict = ("false alarm" if not p.passed else "pass") if d.benign else ("caught" if not p.passed else "missed")
    return {
        "verdict": verdict, "fired": fired, "named_layer": named,
        "named_is_planted": (named == d.layer) if (not d.benign and not p.passed) else None,
        "matters": matters, "accuracy": acc, "accuracy_delta_points": round(100 * (acc - base_acc), 3),
        "top1_agreement_with_unmutated": agree,
        "reasons": [diff.reason for diff in p.diffs if not diff.passed] + (list(lay.over[:3]) if lay else []),
        "unmatched_in_isolation": list(lay.excluded[:4]) if lay else [],
        "scales_match": checked.scales_match,
    }


def run_calibration(calib: str, work: Path, todo: list[Defect], shapes: dict) -> list[dict[str, Any]]:
    from edgeconv.check import check, manifest_of, options_of, spec_of
    from edgeconv.demo import heldout

    folder = work / calib
    export(folder, CALIBS[calib])
    data = heldout()
    delta, picks = refit_delta(artifact(folder, "onnx"), data.x)
    made = plant(folder, todo, Context_(fc_delta=delta), shapes)
    manifest = manifest_of(folder)
    t0 = time.perf_counter()
    report = check([(p, t, None) for _, _, p, t in made], spec_of(manifest, None), options_of(manifest, folder),
                   _quiet_progress())
    check_s = time.perf_counter() - t0
    base = {fmt: run_outputs(artifact(folder, fmt), data.x) for fmt in EDITORS}
    rows = []
    for (d, fmt, path, target), c in zip(made, report.checked):
        out = run_outputs(path, data.x)
        acc = float((out.argmax(1) == data.y).mean())
        base_acc = float((base[fmt].argmax(1) == data.y).mean())
        agree = float((out.argmax(1) == base[fmt].argmax(1)).mean())
        row = {"calibration": calib, "format": fmt, "target": target, "defect": d.name, "planted_layer": d.layer,
               "params": d.params, "file": path.name, "benign": d.benign}
        row.update(judge(d, c, acc, base_acc, agree))
        if d.name == "refitted classifier":
            row["params"] = {**d.params, "samples": picks, "steps_changed": int(np.abs(delta).sum())}
        rows.append(row)
    print(f"[{calib}] {len(made)} mutants checked in {check_s:.0f} s", file=sys.stderr)
    return rows


def run_foreign(work: Path, todo: list[Defect], shapes: dict) -> list[dict[str, Any]]:
    """The TFLite defects planted in ai-edge-quantizer's static int8 of litert-torch's fp32 demo file
    (calibrated on 64 held-out digits), checked as a file edgeconv did not write: no manifest, the
    simulation rebuilt at the file's own scales. The refit needs the ONNX file's features: left out."""
    from edgeconv.check import check
    from edgeconv.config import ExportOptions
    from edgeconv.demo import demo, heldout

    aiq_int8 = _bench_module("int8_vs_aiq").aiq_int8
    folder = work / FOREIGN
    fp32 = folder / "fp32"
    if not (fp32 / "edgeconv.json").is_file():
        subprocess.run(["edgeconv", "export", "-t", "tflite", "-o", str(fp32)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = heldout()
    src = folder / "aiq-int8.tflite"
    aiq_int8(next(fp32.glob("*-tflite.tflite")), data.x[:64], src)
    made = []
    for n, d in enumerate(t for t in todo if t.name != "refitted classifier"):
        ed = TfliteFile(src)
        check_layout(ed, shapes)
        d.apply(ed, Context_())
        dst = folder / f"mutant-{n:02d}-tflite.tflite"
        ed.save(dst)
        made.append((d, dst))
    t0 = time.perf_counter()
    report = check([(p, TARGETS["tflite"], None) for _, p in made], demo(),
                   ExportOptions(targets=(TARGETS["tflite"],), out_dir=str(folder)), _quiet_progress())
    print(f"[{FOREIGN}] {len(made)} mutants checked in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    base = run_outputs(src, data.x)
    base_acc = float((base.argmax(1) == data.y).mean())
    rows = []
    for (d, path), c in zip(made, report.checked):
        out = run_outputs(path, data.x)
        acc, agree = float((out.argmax(1) == data.y).mean()), float((out.argmax(1) == base.argmax(1)).mean())
        row = {"calibration": FOREIGN, "format": "tflite", "target": TARGETS["tflite"], "defect": d.name,
               "planted_layer": d.layer, "params": d.params, "file": path.name, "benign": d.benign,
               "simulation": c.simulation}
        row.update(judge(d, c, acc, base_acc, agree))
        rows.append(row)
    return rows


def _bench_module(name: str) -> Any:
    """A sibling bench script as a module (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"edgeconv_bench_{name}", Path(__file__).parent / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _quiet_progress() -> Any:
    from edgeconv.context import Progress

    return Progress(enabled=False)


# --- the summary and the table ---------------------------------------------------------------------

def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    bad = [r for r in rows if not r["benign"]]
    mattering = [r for r in bad if r["matters"]]
    caught = [r for r in bad if r["verdict"] == "caught"]
    named_ok = [r for r in caught if r["named_is_planted"]]
    benign = [r for r in rows if r["benign"]]
    alarms = [r for r in benign if r["verdict"] == "false alarm"]
    missed_mattering = [f"{r['calibration']}/{r['format']}: {r['defect']}" for r in mattering if r["verdict"] != "caught"]
    return {
        "mutants": len(rows),
        "defects_that_matter": len(mattering),
        "defects_that_matter_caught": len(mattering) - len(missed_mattering),
        "missed_that_matter": missed_mattering,
        "every_mattering_defect_caught": not missed_mattering,
        "caught": len(caught), "missed": len(bad) - len(caught),
        "missed_harmless": [f"{r['calibration']}/{r['format']}: {r['defect']}" for r in bad
                            if r["verdict"] == "missed" and not r["matters"]],
        "named_layer_is_planted": f"{len(named_ok)}/{len(caught)}",
        "named_layer_share": round(len(named_ok) / len(caught), 3) if caught else None,
        "named_layer_wrong": [f"{r['calibration']}/{r['format']}: {r['defect']} planted {r['planted_layer']}, "
                              f"named {r['named_layer']}" for r in caught if not r["named_is_planted"]],
        "benign": len(benign), "false_alarms": len(alarms),
        "false_alarm_cases": [f"{r['calibration']}/{r['format']}: {r['defect']}: {r['reasons'][:2]}" for r in alarms],
        "verdict_findings": findings(caught),
        "foreign_file": FOREIGN_NOTE if any(r["calibration"] == FOREIGN for r in rows) else None,
        "criteria": {"matters": "|accuracy delta| >= 0.5 point or top-1 disagreement with the unmutated artifact >= 1 %",
                     "named_layer": "first of layers.over, else layers.worst_layer"},
    }


# Why a caught defect was blamed on another layer, read from the per-layer check's own exclusions.
FINDINGS = {
    "holds the same values in a layout": (
        "mis-attribution: the planted layer's int8 output (and layers after it) is excluded from isolation as "
        "'the same values in a layout edgeconv cannot undo' (quant/divergence._same_values_other_layout: sorted "
        "values within 1 step on average), so a real defect whose output has the same value histogram is never "
        "judged at its layer; blame lands on the first layer still fed"),
    "no tensor of the artifact has its scale": (
        "mis-attribution: a tensor whose stored scale/zero point differs from the simulation's is unmatched "
        "(match needs the scale within 1e-6), so its own layer is not judged; the consumer is named. The check's "
        "`scales` line does say the file carries other scales"),
}


# What the named layer means on a file edgeconv did not write (the simulation takes the file's scales).
FOREIGN_NOTE = (
    "aiq rows: the simulation is built at the file's own scales, so an activation scale or zero point edited in "
    "the file is part of what the file declares, not a difference from edgeconv's calibration. TFLite's "
    "kernels keep the int32 bias a consumer was written with (input scale x weight scale), so an edited output "
    "scale of stem.0 leaves blocks.0.depthwise.0's bias on the old grid: that layer is where the file first "
    "computes something its own scales do not say, and it is named. A zero point +1 on a ReLU6 output is "
    "absorbed the same way (consumers subtract the declared zero point): harmless (0.0 points, 100 % agreement).")


def findings(caught: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Caught defects named at another layer, grouped by the exclusion that hid the planted layer."""
    out = []
    for key, what in FINDINGS.items():
        hit = [r for r in caught if not r["named_is_planted"]
               and any(key in e and f"({r['planted_layer']})" in e for e in r["unmatched_in_isolation"])]
        if hit:
            first = hit[0]
            out.append({"finding": what, "cases": [f"{r['calibration']}/{r['format']}: {r['defect']} (named "
                                                   f"{r['named_layer']})" for r in hit],
                        "reproduce": f"python bench/mutants.py; edgeconv check {{work}}/{first['calibration']}/"
                                     f"{first['file']} --model edgeconv.demo:demo"
                                     + (" --calib-samples 2" if first["calibration"] == "weak" else "")})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    fmts = list(EDITORS)
    lines = []
    for calib in dict.fromkeys(r["calibration"] for r in rows):
        lines.append(f"\n[{calib} calibration]  cell: verdict/criteria/layer-ok  (Δacc pts, agree %)")
        lines.append(f"{'defect':28s} " + " ".join(f"{f:34s}" for f in fmts))
        for name in dict.fromkeys(r["defect"] for r in rows if r["calibration"] == calib):
            cells = []
            for f in fmts:
                r = next((r for r in rows if r["calibration"] == calib and r["defect"] == name and r["format"] == f), None)
                if r is None:
                    cells.append(f"{'-':34s}")
                    continue
                ok = {True: "L✓", False: f"L✗({r['named_layer']})", None: ""}[r["named_is_planted"]]
                crit = "+".join(c.replace("per-layer", "layer") for c in r["fired"])
                cell = f"{r['verdict']} {crit} {ok} ({r['accuracy_delta_points']:+.1f},{100 * r['top1_agreement_with_unmutated']:.0f}%)"
                cells.append(f"{cell:34s}")
            lines.append(f"{name:28s} " + " ".join(cells))
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("edgeconv", "torch", "torchao", "onnx", "onnxruntime", "ai-edge-litert", "coremltools", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "mutants.json"))
    ap.add_argument("--work", default="/tmp/edgeconv-mutants")
    ap.add_argument("--calib", nargs="+", default=[*CALIBS, FOREIGN], choices=[*CALIBS, FOREIGN],
                    help=f"calibrations of edgeconv's own files; {FOREIGN}: ai-edge-quantizer's TFLite int8 file")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    shapes, todo = torch_shapes(), defects()
    rows = [r for calib in args.calib for r in (run_foreign(work, todo, shapes) if calib == FOREIGN
                                                 else run_calibration(calib, work, todo, shapes))]
    result = {
        "command": " ".join(["python", "bench/mutants.py", *(argv if argv is not None else sys.argv[1:])]),
        "host": {"machine": platform.machine(), "processor": platform.processor() or platform.node(),
                 "cpus": __import__("os").cpu_count()},
        "versions": versions(), "seconds": round(time.perf_counter() - t0, 1),
        "summary": summarize(rows), "mutants": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table(rows))
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
