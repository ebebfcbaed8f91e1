"""A numpy evaluator for the MIL program inside a CoreML `.mlpackage`, so CoreML parity runs on Linux.

CoreML's own runtime (`MLModel.predict`) exists only on macOS. program.py reads the program from
the package into a flat list of `Step`s; this module executes each op with numpy. Every op it knows is
checked against torch by tests/test_mil_eval_ops.py. An op outside the table is never skipped: the
program refuses to load with `UnverifiedOp`, and parity reports "unverified: op X".

Numerics follow the op's declared output dtype: each result is computed in float32 (float64
accumulation for conv/linear/matmul) and rounded to the dtype MIL declares for it, so an fp16
program is evaluated with fp16 storage between ops. quantize mirrors torch's decomposition
(`round(x * (1/scale)) + zp`, half to even) so a W8A8 program can be compared with the torch
quantized simulation in units of quantization steps.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgeconv.errors import ParityFailure
from edgeconv.exporters.coreml.mil.program import _DTYPES, MILProgram, Step

if TYPE_CHECKING:
    from collections.abc import Collection

# What parity reports and the manifest call this engine: never plain "coreml", which it is not.
ENGINE = "coreml: edgeconv MIL evaluator"

class UnverifiedOp(ParityFailure):
    """The program holds an op this evaluator cannot compute: its numerics cannot be checked here."""

    runtime = ENGINE  # the engine that refused: the pipeline's "unverified" report names it

    def __init__(self, op_type: str) -> None:
        super().__init__(f"unverified: op {op_type}")
        self.op_type = op_type


def unknown_ops(program: MILProgram) -> list[str]:
    """The program's op types this evaluator has no kernel for (it refuses to run them)."""
    return sorted(program.op_types - set(OPS))


def run(program: MILProgram, feeds: dict[str, np.ndarray], keep: bool | Collection[str] = False
        ) -> dict[str, np.ndarray]:
    """Evaluate the program. Returns the outputs, and with keep=True every intermediate value too, or
    with a collection of names those values. Any other value is let go after the last step that reads
    it: the program's live values, not all of them (timm HaloNet-H1 at 256²: ~500 M floats a sample)."""
    unknown = unknown_ops(program)
    if unknown:
        raise UnverifiedOp(unknown[0])
    env: dict[str, Any] = dict(program.consts)
    for name, dt in zip(program.inputs, program.input_dtypes):
        if name not in feeds:
            raise KeyError(f"missing input {name!r}; the program takes {list(program.inputs)}")
        env[name] = np.asarray(feeds[name]).astype(_DTYPES.get(dt, np.float32))
    held = set(program.outputs) | set(program.consts) | (set(keep) if not isinstance(keep, bool) else set())
    last = _last_reads(program)
    for i, step in enumerate(program.steps):
        args = {k: (tuple(env[n] for n in v) if isinstance(v, tuple) else env[v]) for k, v in step.inputs.items()}
        result = OPS[step.op_type](args, step)
        results = result if isinstance(result, tuple) else (result,)
        for name, dt, val in zip(step.outputs, step.out_dtypes, results):
            env[name] = np.asarray(val).astype(_DTYPES.get(dt, np.float32), copy=False)
        del args, result, results
        if keep is not True:
            for name in (*_names(step), *step.outputs):
                if last.get(name, i) <= i and name not in held:
                    env.pop(name, None)
    if keep is True:
        return {k: v for k, v in env.items() if k not in program.consts}
    return {name: env[name] for name in (*program.outputs, *(() if isinstance(keep, bool) else keep)) if name in env}


def _names(step: Step) -> tuple[str, ...]:
    """The value names a step reads."""
    return tuple(n for v in step.inputs.values() for n in (v if isinstance(v, tuple) else (v,)))


def _last_reads(program: MILProgram) -> dict[str, int]:
    """Each value's last reading step (index); a value no step reads: absent."""
    return {n: i for i, step in enumerate(program.steps) for n in _names(step)}


# ---------------------------------------------------------------------------------------------
# The op table. Each function takes (args: dict of numpy values, step) and returns a value or a
# tuple of values (one per output).

Fn = Callable[[dict[str, Any], Step], Any]
OPS: dict[str, Fn] = {}


def _op(*names: str) -> Callable[[Fn], Fn]:
    def deco(fn: Fn) -> Fn:
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def _f(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _scalar(args: dict[str, Any], key: str, default: Any) -> Any:
    v = args.get(key)
    return default if v is None else np.asarray(v).item() if np.ndim(v) == 0 else v


# --- activations ---------------------------------------------------------------------------

_op("identity")(lambda a, s: a["x"])
_op("relu")(lambda a, s: np.maximum(_f(a["x"]), 0))
_op("relu6")(lambda a, s: np.clip(_f(a["x"]), 0, 6))
_op("clip")(lambda a, s: np.minimum(np.maximum(_f(a["x"]), _f(a["alpha"])), _f(a["beta"])))
_op("sigmoid")(lambda a, s: _sigmoid(_f(a["x"])))
_op("tanh")(lambda a, s: np.tanh(_f(a["x"])))
_op("silu")(lambda a, s: _f(a["x"]) * _sigmoid(_f(a["x"])))
_op("softplus")(lambda a, s: np.logaddexp(0, _f(a["x"])))
_op("sigmoid_hard")(lambda a, s: np.clip(_scalar(a, "alpha", 0.2) * _f(a["x"]) + _scalar(a, "beta", 0.5), 0, 1))
_op("leaky_relu")(lambda a, s: np.where(_f(a["x"]) >= 0, _f(a["x"]), _scalar(a, "alpha", 0.01) * _f(a["x"])))
_op("thresholded_relu")(lambda a, s: np.where(_f(a["x"]) > _scalar(a, "alpha", 1.0), _f(a["x"]), 0))
_op("elu")(lambda a, s: np.where(_f(a["x"]) > 0, _f(a["x"]), _scalar(a, "alpha", 1.0) * np.expm1(_f(a["x"]))))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Split by sign so large |x| never overflows exp.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


@_op("prelu")
def _prelu(a: dict[str, Any], s: Step) -> np.ndarray:
    x = _f(a["x"])
    alpha = _f(a["alpha"]).reshape((1, -1) + (1,) * (x.ndim - 2))  # one slope per channel (axis 1)
    return np.where(x >= 0, x, alpha * x)


@_op("gelu")
def _gelu(a: dict[str, Any], s: Step) -> np.ndarray:
    x = _f(a["x"]).astype(np.float64)
    mode = str(_scalar(a, "mode", "EXACT"))
    if mode == "TANH_APPROXIMATION":
        y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    elif mode == "SIGMOID_APPROXIMATION":
        y = x * _sigmoid(1.702 * x)
    else:
        y = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    return y


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


@_op("softmax")
def _softmax(a: dict[str, Any], s: Step) -> np.ndarray:
    x = _f(a["x"]).astype(np.float64)
    axis = int(_scalar(a, "axis", -1))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- elementwise ---------------------------------------------------------------------------

def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Fn:
    def run_binary(a: dict[str, Any], s: Step) -> np.ndarray:
        x, y = np.asarray(a["x"]), np.asarray(a["y"])
        if x.dtype.kind == "f" or y.dtype.kind == "f":
            x, y = _f(x), _f(y)
        return fn(x, y)
    return run_binary


for _name, _fn in {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum, "pow": np.power, "floor_div": np.floor_divide,
    "equal": np.equal, "greater": np.greater, "less": np.less,
}.items():
    OPS[_name] = _binary(_fn)

for _name, _fn in {
    "exp": np.exp, "abs": np.abs, "sqrt": np.sqrt, "square": np.square, "floor": np.floor,
    "ceil": np.ceil, "round": np.round, "sign": np.sign, "sin": np.sin, "cos": np.cos, "erf": _erf,
}.items():
    OPS[_name] = (lambda fn: lambda a, s: fn(_f(a["x"]) if np.asarray(a["x"]).dtype.kind == "f" else a["x"]))(_fn)

_op("rsqrt")(lambda a, s: 1 / np.sqrt(_f(a["x"]) + _scalar(a, "epsilon", 1e-12)))
_op("inverse")(lambda a, s: 1 / (_f(a["x"]) + _scalar(a, "epsilon", 1e-4)))
_op("log")(lambda a, s: np.log(_f(a["x"]) + _scalar(a, "epsilon", 1e-45)))
_op("select")(lambda a, s: np.where(np.asarray(a["cond"]).astype(bool), _f(a["a"]), _f(a["b"])))


@_op("cast")
def _cast(a: dict[str, Any], s: Step) -> np.ndarray:
    dtype = _DTYPES[str(_scalar(a, "dtype", "fp32"))]
    x = np.asarray(a["x"])
    if np.issubdtype(dtype, np.integer) and x.dtype.kind == "f":
        x = np.trunc(x)  # MIL casts float to int toward zero
    return x.astype(dtype)


# --- linear algebra ------------------------------------------------------------------------

@_op("linear")
def _linear(a: dict[str, Any], s: Step) -> np.ndarray:
    x, w = _f(a["x"]).astype(np.float64), _f(a["weight"]).astype(np.float64)
    y = x @ w.T
    if a.get("bias") is not None:
        y = y + _f(a["bias"])
    return y


@_op("matmul")
def _matmul(a: dict[str, Any], s: Step) -> np.ndarray:
    x, y = _f(a["x"]).astype(np.float64), _f(a["y"]).astype(np.float64)
    if bool(_scalar(a, "transpose_x", False)):
        x = np.swapaxes(x, -1, -2)
    if bool(_scalar(a, "transpose_y", False)):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


def _pads(a: dict[str, Any], x_spatial: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...],
          dilations: tuple[int, ...]) -> list[tuple[int, int]]:
    """(before, after) per spatial dim for MIL's pad_type valid / same / same_lower / custom."""
    pad_type = str(_scalar(a, "pad_type", "valid")).lower()
    n = len(x_spatial)
    if pad_type == "custom":
        p = [int(v) for v in np.asarray(a["pad"]).ravel()] if a.get("pad") is not None else [0] * 2 * n
        return [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for size, k, st, d in zip(x_spatial, kernel, strides, dilations):
            total = max((math.ceil(size / st) - 1) * st + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            out.append((big, small) if pad_type == "same_lower" else (small, big))
        return out
    return [(0, 0)] * n


def _windows(x: np.ndarray, kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...]) -> np.ndarray:
    """(N, C, *out, *kernel) view of every window of the (already padded) input."""
    n_sp = len(kernel)
    span = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    win = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + n_sp)))
    win = win[(Ellipsis,) + tuple(slice(None, None, d) for d in dilations)]
    return win[(slice(None), slice(None)) + tuple(slice(None, None, st) for st in strides)]


def _ints(a: dict[str, Any], key: str, n: int, default: int) -> tuple[int, ...]:
    v = a.get(key)
    return (default,) * n if v is None else tuple(int(t) for t in np.asarray(v).ravel())


@_op("conv")
def _conv(a: dict[str, Any], s: Step) -> np.ndarray:
    """Direct convolution, one kernel tap at a time: y += W[:, :, tap] @ x[window of tap] (a BLAS
    matmul per group, or a broadcast multiply when each group has one input channel — depthwise),
    in float64. Contracting a (N, C, *out, *kernel) window view with einsum instead copied every
    window on every call: 2x slower on a 224x224 MobileNetV2 (same outputs, bit for bit)."""
    x = _f(a["x"]).astype(np.float64)
    w = _f(a["weight"]).astype(np.float64)  # (C_out, C_in/groups, *kernel)
    n_sp = x.ndim - 2
    kernel = tuple(w.shape[2:])
    strides, dil = _ints(a, "strides", n_sp, 1), _ints(a, "dilations", n_sp, 1)
    groups = int(_scalar(a, "groups", 1))
    pads = _pads(a, x.shape[2:], kernel, strides, dil)
    if any(p != (0, 0) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0)] + pads)
    n = x.shape[0]
    c_out, cg = w.shape[0], w.shape[1]
    out_sp = tuple((size - (k - 1) * d - 1) // st + 1 for size, k, d, st in zip(x.shape[2:], kernel, dil, strides))
    m = int(np.prod(out_sp))
    y = np.zeros((n, groups, c_out // groups, m))
    wg = w.reshape((groups, c_out // groups, cg) + kernel)
    for tap in np.ndindex(*kernel):
        window = (slice(None), slice(None)) + tuple(
            slice(t * d, t * d + (o - 1) * st + 1, st) for t, d, o, st in zip(tap, dil, out_sp, strides))
        xs = x[window].reshape(n, groups, cg, m)  # copies only when strided
        wt = wg[(Ellipsis,) + tap]  # (groups, c_out/groups, cg)
        if cg == 1:  # depthwise (with channel multiplier): a broadcast multiply, no matmul
            y += wt[None, :, :, :] * xs
        else:
            y += np.matmul(wt[None], xs)
    y = y.reshape((n, c_out) + out_sp)
    if a.get("bias") is not None:
        y = y + _f(a["bias"]).reshape((1, -1) + (1,) * n_sp)
    return y


@_op("conv_transpose")
def _conv_transpose(a: dict[str, Any], s: Step) -> np.ndarray:
    """Transposed convolution (MIL conv_transpose, torch's conv_transpose*d): every input position
    scatters W[c_in, :, tap] · x into output position i·stride + tap·dilation, one tap at a time
    (a matmul per group), in float64; then the pads are cropped ("custom": pad[2i] before, pad[2i+1]
    after; "same": output = input × stride) and `output_shape`, when given, fixes the size (torch's
    output_padding: zeros, then the bias, at the end)."""
    x = _f(a["x"]).astype(np.float64)
    w = _f(a["weight"]).astype(np.float64)  # (C_in, C_out/groups, *kernel)
    n_sp = x.ndim - 2
    kernel = tuple(w.shape[2:])
    strides, dil = _ints(a, "strides", n_sp, 1), _ints(a, "dilations", n_sp, 1)
    groups = int(_scalar(a, "groups", 1))
    n, c_in = x.shape[:2]
    cin_g, cout_g = c_in // groups, w.shape[1]
    d_in = x.shape[2:]
    full = tuple((i - 1) * st + (k - 1) * d + 1 for i, st, k, d in zip(d_in, strides, kernel, dil))
    y = np.zeros((n, groups, cout_g) + full)
    xg = x.reshape(n, groups, cin_g, -1)
    wg = w.reshape((groups, cin_g, cout_g) + kernel)
    for tap in np.ndindex(*kernel):
        contrib = np.matmul(np.swapaxes(wg[(Ellipsis,) + tap], 1, 2)[None], xg).reshape((n, groups, cout_g) + d_in)
        where = (slice(None),) * 3 + tuple(slice(t * d, t * d + (i - 1) * st + 1, st)
                                           for t, d, i, st in zip(tap, dil, d_in, strides))
        y[where] += contrib
    y = y.reshape((n, groups * cout_g) + full)
    pad_type = str(_scalar(a, "pad_type", "valid")).lower()
    if pad_type == "custom" and a.get("pad") is not None:
        p = [int(v) for v in np.asarray(a["pad"]).ravel()]
        before, after = p[0::2], p[1::2]
    elif pad_type == "same":
        total = [f - i * st for f, i, st in zip(full, d_in, strides)]
        before, after = [t // 2 for t in total], [t - t // 2 for t in total]
    else:
        before, after = [0] * n_sp, [0] * n_sp
    out_sp = [f - b - e for f, b, e in zip(full, before, after)]
    if a.get("output_shape") is not None:
        out_sp = [int(v) for v in np.asarray(a["output_shape"]).ravel()][-n_sp:]
    crop = y[(slice(None), slice(None)) + tuple(slice(b, b + o) for b, o in zip(before, out_sp))]
    short = [(0, o - c) for o, c in zip(out_sp, crop.shape[2:])]
    if any(e for _, e in short):
        crop = np.pad(crop, [(0, 0), (0, 0)] + short)
    if a.get("bias") is not None:
        crop = crop + _f(a["bias"]).reshape((1, -1) + (1,) * n_sp)
    return crop


# --- pooling -------------------------------------------------------------------------------

def _pool(a: dict[str, Any], s: Step, kind: str) -> np.ndarray:
    x = _f(a["x"])
    n_sp = x.ndim - 2
    kernel = _ints(a, "kernel_sizes", n_sp, 1)
    strides = _ints(a, "strides", n_sp, 1)
    pads = _pads(a, x.shape[2:], kernel, strides, (1,) * n_sp)
    out_shape = s.out_shapes[0]
    # ceil_mode: grow the trailing pad until the window count reaches the declared output size.
    if out_shape is not None:
        pads = [(lo, max(hi, (o - 1) * st + k - size - lo))
                for (lo, hi), o, st, k, size in zip(pads, out_shape[2:], strides, kernel, x.shape[2:])]
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0)] + pads, constant_values=fill)
    win = _windows(xp, kernel, strides, (1,) * n_sp)
    k_axes = tuple(range(-n_sp, 0))
    if out_shape is not None:  # drop any extra window from generous padding
        win = win[(slice(None), slice(None)) + tuple(slice(0, o) for o in out_shape[2:])]
    if kind == "max":
        return win.max(axis=k_axes)
    total = win.astype(np.float64).sum(axis=k_axes)
    if bool(_scalar(a, "exclude_padding_from_average", False)):
        ones = np.pad(np.ones(x.shape[2:]), pads)
        count = _windows(ones[None, None], kernel, strides, (1,) * n_sp).sum(axis=k_axes)
        count = count[(slice(None), slice(None)) + tuple(slice(0, d) for d in total.shape[2:])]
        return total / count
    return total / float(np.prod(kernel))


_op("max_pool")(lambda a, s: _pool(a, s, "max"))
_op("avg_pool")(lambda a, s: _pool(a, s, "avg"))


# --- reductions ----------------------------------------------------------------------------

def _reduce(fn: Callable[..., np.ndarray]) -> Fn:
    def run_reduce(a: dict[str, Any], s: Step) -> np.ndarray:
        x = np.asarray(a["x"])
        x = x.astype(np.float64) if x.dtype.kind == "f" else x
        axes = None if a.get("axes") is None else tuple(int(v) for v in np.asarray(a["axes"]).ravel())
        return fn(x, axis=axes, keepdims=bool(_scalar(a, "keep_dims", False)))
    return run_reduce


for _name, _fn in {
    "reduce_mean": np.mean, "reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min,
    "reduce_prod": np.prod,
    "reduce_l2_norm": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "reduce_l1_norm": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "reduce_sum_square": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
}.items():
    OPS[_name] = _reduce(_fn)


@_op("reduce_argmax", "reduce_argmin")
def _argreduce(a: dict[str, Any], s: Step) -> np.ndarray:
    fn = np.argmax if s.op_type == "reduce_argmax" else np.argmin
    axis = int(_scalar(a, "axis", -1))
    y = fn(np.asarray(a["x"]), axis=axis)
    return np.expand_dims(y, axis) if bool(_scalar(a, "keep_dims", False)) else y


# --- normalisation -------------------------------------------------------------------------

@_op("batch_norm")
def _batch_norm(a: dict[str, Any], s: Step) -> np.ndarray:
    x = _f(a["x"]).astype(np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - _f(a["mean"]).reshape(shape)) / np.sqrt(_f(a["variance"]).reshape(shape) + _scalar(a, "epsilon", 1e-5))
    if a.get("gamma") is not None:
        y = y * _f(a["gamma"]).reshape(shape)
    if a.get("beta") is not None:
        y = y + _f(a["beta"]).reshape(shape)
    return y


@_op("layer_norm")
def _layer_norm(a: dict[str, Any], s: Step) -> np.ndarray:
    x = _f(a["x"]).astype(np.float64)
    axes = tuple(int(v) for v in np.asarray(a["axes"]).ravel()) if a.get("axes") is not None else tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + _scalar(a, "epsilon", 1e-5))
    if a.get("gamma") is not None:
        y = y * _f(a["gamma"])
    if a.get("beta") is not None:
        y = y + _f(a["beta"])
    return y


@_op("instance_norm")
def _instance_norm(a: dict[str, Any], s: Step) -> np.ndarray:
    x = _f(a["x"]).astype(np.float64)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + _scalar(a, "epsilon", 1e-5))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if a.get("gamma") is not None:
        y = y * _f(a["gamma"]).reshape(shape)
    if a.get("beta") is not None:
        y = y + _f(a["beta"]).reshape(shape)
    return y


# --- shape and layout ----------------------------------------------------------------------

_op("reshape")(lambda a, s: np.reshape(a["x"], tuple(int(v) for v in np.asarray(a["shape"]).ravel())))
_op("transpose")(lambda a, s: np.transpose(a["x"], tuple(int(v) for v in np.asarray(a["perm"]).ravel())))
_op("expand_dims")(lambda a, s: np.expand_dims(a["x"], tuple(int(v) for v in np.asarray(a["axes"]).ravel())))
_op("tile")(lambda a, s: np.tile(a["x"], tuple(int(v) for v in np.asarray(a["reps"]).ravel())))
_op("shape")(lambda a, s: np.asarray(np.shape(a["x"]), dtype=np.int32))


@_op("squeeze")
def _squeeze(a: dict[str, Any], s: Step) -> np.ndarray:
    x = np.asarray(a["x"])
    if a.get("axes") is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(int(v) for v in np.asarray(a["axes"]).ravel()))


@_op("reverse")
def _reverse(a: dict[str, Any], s: Step) -> np.ndarray:
    """MIL reverse: along `axes`, or along every axis when none are given (the spec's default)."""
    x = np.asarray(a["x"])
    if a.get("axes") is None:
        return np.flip(x)
    return np.flip(x, axis=tuple(int(v) for v in np.asarray(a["axes"]).ravel()))


@_op("stack")
def _stack(a: dict[str, Any], s: Step) -> np.ndarray:
    return np.stack([np.asarray(v) for v in a["values"]], axis=int(_scalar(a, "axis", 0)))


@_op("concat")
def _concat(a: dict[str, Any], s: Step) -> np.ndarray:
    values = [np.asarray(v) for v in a["values"]]
    axis = int(_scalar(a, "axis", 0))
    if bool(_scalar(a, "interleave", False)):
        stacked = np.stack(values, axis=axis + 1 if axis >= 0 else axis)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@_op("split")
def _split(a: dict[str, Any], s: Step) -> tuple[np.ndarray, ...]:
    x = np.asarray(a["x"])
    axis = int(_scalar(a, "axis", 0))
    if a.get("split_sizes") is not None:
        cuts = np.cumsum(np.asarray(a["split_sizes"]).ravel())[:-1]
    else:
        cuts = int(_scalar(a, "num_splits", len(s.outputs)))
    return tuple(np.split(x, cuts, axis=axis))


@_op("slice_by_index")
def _slice_by_index(a: dict[str, Any], s: Step) -> np.ndarray:
    x = np.asarray(a["x"])
    r = x.ndim
    begin = np.asarray(a["begin"]).ravel().astype(int)
    end = np.asarray(a["end"]).ravel().astype(int)
    stride = np.asarray(a["stride"]).ravel().astype(int) if a.get("stride") is not None else np.ones(r, int)
    bmask = np.asarray(a["begin_mask"]).ravel() if a.get("begin_mask") is not None else np.zeros(r, bool)
    emask = np.asarray(a["end_mask"]).ravel() if a.get("end_mask") is not None else np.zeros(r, bool)
    smask = np.asarray(a["squeeze_mask"]).ravel() if a.get("squeeze_mask") is not None else np.zeros(r, bool)
    idx = []
    for i in range(r):
        if smask[i]:
            idx.append(int(begin[i]))
            continue
        b = None if bmask[i] else int(begin[i])
        e = None if emask[i] else int(end[i])
        idx.append(slice(b, e, int(stride[i])))
    return x[tuple(idx)]


@_op("slice_by_size")
def _slice_by_size(a: dict[str, Any], s: Step) -> np.ndarray:
    x = np.asarray(a["x"])
    begin = np.asarray(a["begin"]).ravel().astype(int)
    size = np.asarray(a["size"]).ravel().astype(int)
    return x[tuple(slice(b, None if n == -1 else b + n) for b, n in zip(begin, size))]


@_op("pad")
def _pad(a: dict[str, Any], s: Step) -> np.ndarray:
    x = np.asarray(a["x"])
    p = np.asarray(a["pad"]).ravel().astype(int)
    k = len(p) // 2  # MIL pads the last k dims, (before, after) pairs
    widths = [(0, 0)] * (x.ndim - k) + [(int(p[2 * i]), int(p[2 * i + 1])) for i in range(k)]
    mode = str(_scalar(a, "mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=_scalar(a, "constant_val", 0.0))
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@_op("upsample_nearest_neighbor")
def _upsample_nearest(a: dict[str, Any], s: Step) -> np.ndarray:
    x = np.asarray(a["x"])
    out_h, out_w = s.out_shapes[0][-2:] if s.out_shapes[0] else (
        int(x.shape[-2] * _scalar(a, "scale_factor_height", 1)), int(x.shape[-1] * _scalar(a, "scale_factor_width", 1)))
    sh = float(_scalar(a, "scale_factor_height", out_h / x.shape[-2]))
    sw = float(_scalar(a, "scale_factor_width", out_w / x.shape[-1]))
    # torch's "nearest": src = floor(dst / scale)
    rows = np.minimum(np.floor(np.arange(out_h) / sh).astype(int), x.shape[-2] - 1)
    cols = np.minimum(np.floor(np.arange(out_w) / sw).astype(int), x.shape[-1] - 1)
    return x[..., rows[:, None], cols[None, :]]


@_op("upsample_bilinear")
def _upsample_bilinear(a: dict[str, Any], s: Step) -> np.ndarray:
    """MIL upsample_bilinear (coremltools' op definition): align_corners maps the corner pixels onto
    each other (src = dst·(in−1)/(out−1)); otherwise half_pixel_centers gives torch's
    align_corners=False (src = (dst+0.5)/scale − 0.5, clamped at 0), and without it src = dst/scale."""
    x = _f(a["x"])
    sh = float(_scalar(a, "scale_factor_height", 1))
    sw = float(_scalar(a, "scale_factor_width", 1))
    corners = bool(_scalar(a, "align_corners", False))
    half = bool(_scalar(a, "half_pixel_centers", not corners))
    out_h, out_w = s.out_shapes[0][-2:] if s.out_shapes[0] else (int(x.shape[-2] * sh), int(x.shape[-1] * sw))
    x = _interp_axis(x, -2, out_h, sh, corners, half)
    return _interp_axis(x, -1, out_w, sw, corners, half)


def _interp_axis(x: np.ndarray, axis: int, out: int, scale: float, corners: bool, half: bool) -> np.ndarray:
    """Linear interpolation of `x` along one axis to `out` samples (float64 weights)."""
    n = x.shape[axis]
    dst = np.arange(out, dtype=np.float64)
    if corners:
        src = dst * ((n - 1) / (out - 1)) if out > 1 else np.zeros(out)
    elif half:
        src = np.maximum((dst + 0.5) / scale - 0.5, 0.0)
    else:
        src = dst / scale
    src = np.minimum(src, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).reshape([-1] + [1] * (-axis - 1))
    x64 = x.astype(np.float64)
    return np.take(x64, lo, axis=axis) * (1 - w) + np.take(x64, hi, axis=axis) * w


@_op("pixel_shuffle")
def _pixel_shuffle(a: dict[str, Any], s: Step) -> np.ndarray:
    """torch's pixel_shuffle: (N, C·f², H, W) -> (N, C, H·f, W·f), channel c·f² + i·f + j to (h·f + i, w·f + j)."""
    x = np.asarray(a["x"])
    f = int(_scalar(a, "upscale_factor", 1))
    n, c, h, w = x.shape
    return x.reshape(n, c // (f * f), f, f, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (f * f), h * f, w * f)


@_op("pixel_unshuffle")
def _pixel_unshuffle(a: dict[str, Any], s: Step) -> np.ndarray:
    """The inverse: (N, C, H·f, W·f) -> (N, C·f², H, W)."""
    x = np.asarray(a["x"])
    f = int(_scalar(a, "downscale_factor", 1))
    n, c, hf, wf = x.shape
    h, w = hf // f, wf // f
    return x.reshape(n, c, h, f, w, f).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * f * f, h, w)


@_op("gather")
def _gather(a: dict[str, Any], s: Step) -> np.ndarray:
    return np.take(np.asarray(a["x"]), np.asarray(a["indices"]).astype(int), axis=int(_scalar(a, "axis", 0)))


@_op("gather_nd")
def _gather_nd(a: dict[str, Any], s: Step) -> np.ndarray:
    """MIL gather_nd: the last axis of `indices` (length K) indexes the first K axes of `x` after
    `batch_dims` shared leading axes (torch's decomposition of bicubic resize, advanced indexing)."""
    x, idx = np.asarray(a["x"]), np.asarray(a["indices"]).astype(int)
    b = int(_scalar(a, "batch_dims", 0))
    k = idx.shape[-1]
    if b == 0:
        return x[tuple(np.moveaxis(idx, -1, 0))]
    lead = x.shape[:b]
    out = [x[i][tuple(np.moveaxis(idx[i], -1, 0))] for i in np.ndindex(*lead)]
    return np.stack(out).reshape(*lead, *idx.shape[b:-1], *x.shape[b + k:])


# --- quantization --------------------------------------------------------------------------

def _along(v: Any, axis: Any, ndim: int) -> np.ndarray:
    """Broadcast a per-channel vector along `axis` of an ndim tensor (a scalar stays a scalar)."""
    v = np.asarray(v)
    if v.ndim == 0 or v.size == 1 and axis is None:
        return v.reshape(())
    if v.ndim == ndim:
        return v
    ax = int(axis) % ndim
    shape = [1] * ndim
    shape[ax] = -1
    return v.reshape(shape)


@_op("quantize")
def _quantize(a: dict[str, Any], s: Step) -> np.ndarray:
    x = _f(a["input"])
    axis = a.get("axis")
    scale = _along(_f(a["scale"]), axis, x.ndim)
    zp = _along(a["zero_point"], axis, x.ndim).astype(np.float32) if a.get("zero_point") is not None else np.float32(0)
    info = np.iinfo(_DTYPES[str(_scalar(a, "output_dtype", "int8"))])
    # Same arithmetic as torch's quantized_decomposed.quantize_per_tensor: 1/scale in double,
    # then a float32 multiply (torch casts the scalar to the tensor's dtype), round half to even.
    # (quantize_per_channel divides in float32: `1.0 / scales` on a float32 tensor.)
    inv = (1.0 / scale.astype(np.float64)).astype(np.float32) if scale.size == 1 else np.float32(1.0) / scale
    q = np.round(x * inv) + zp
    return np.clip(q, info.min, info.max)


@_op("dequantize")
def _dequantize(a: dict[str, Any], s: Step) -> np.ndarray:
    q = np.asarray(a["input"]).astype(np.float32)
    axis = a.get("axis")
    scale = _along(_f(a["scale"]), axis, q.ndim)
    zp = _along(a["zero_point"], axis, q.ndim).astype(np.float32) if a.get("zero_point") is not None else np.float32(0)
    return (q - zp) * scale


@_op("constexpr_affine_dequantize")
def _constexpr_affine_dequantize(a: dict[str, Any], s: Step) -> np.ndarray:
    q = np.asarray(a["quantized_data"]).astype(np.float32)
    axis = int(_scalar(a, "axis", 0))
    scale = _along(_f(a["scale"]), axis, q.ndim)
    zp = _along(a["zero_point"], axis, q.ndim).astype(np.float32)
    return (q - zp) * scale


def _blockwise(v: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Repeat each scale/offset over its block: scale dim i covers shape[i] / v.shape[i] elements."""
    for i, (n, m) in enumerate(zip(shape, v.shape)):
        if m != n:
            v = np.repeat(v, n // m, axis=i)
    return v


@_op("constexpr_blockwise_shift_scale")
def _constexpr_blockwise_shift_scale(a: dict[str, Any], s: Step) -> np.ndarray:
    data = np.asarray(a["data"]).astype(np.float32)
    scale = _blockwise(_f(a["scale"]), data.shape)
    if a.get("offset") is not None:
        data = data - _blockwise(np.asarray(a["offset"]).astype(np.float32), data.shape)
    return data * scale
