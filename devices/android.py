"""The `android` backend: the real `adb` client and LiteRT's `benchmark_model` binary.

One run: find the phone (`adb devices -l`), make /data/local/tmp/edgeconv-XXXX, push the binary and
the model (and delegate libraries), run benchmark_model pinned with `taskset` to the big cores with
the chosen delegate, write its output to a file there, pull that file, parse it, and in `finally`
kill benchmark_model if it still runs and remove the dir on the phone and the local copy.

`adb shell` hands the phone's shell one string: it is built only by `quote_command` (every piece
quoted), and file transfers use `adb push/pull`, which take paths literally.

Connection keys (descriptor [connection] or the user's devices config):
    serial = "1A2B3C..."                    # which phone, when several are attached
    benchmark_binary = "~/bin/android_aarch64_benchmark_model"
    hexagon_libs = "~/hexagon"              # libhexagon_interface.so + libhexagon_nn_skel*.so
    qnn_delegate = "~/qnn/libQnnTFLiteDelegate.so"   # its folder's *.so are pushed with it
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from edgeconv.devices.base import (Delegate, Device, DeviceKind, ProfileOptions, artifact_format, check_serial,
                                   connection, quote_command, user_config_path)
from edgeconv.errors import UserError
from edgeconv.registry import BACKENDS
from edgeconv.results import LatencyReport

REMOTE_ROOT = "/data/local/tmp"
HOW_TO_GET_BINARY = (
    "download the prebuilt android_aarch64_benchmark_model from the LiteRT performance-measurement "
    "page (ai.google.dev/edge/litert/models/measurement; TensorFlow Lite's nightly "
    "'android_aarch64_benchmark_model') or build it with bazel "
    "(//tensorflow/lite/tools/benchmark:benchmark_model --config=android_arm64), then pass "
    "--benchmark-binary PATH or set benchmark_binary under [{name}] in {config}")

DELEGATE_FLAGS: dict[Delegate, list[str]] = {
    Delegate.CPU: ["--use_xnnpack=false"],
    Delegate.XNNPACK: ["--use_xnnpack=true"],
    Delegate.GPU: ["--use_gpu=true"],
    Delegate.NNAPI: ["--use_nnapi=true"],
    Delegate.HEXAGON: ["--use_hexagon=true", "--hexagon_profiling=true"],
    Delegate.QNN: [],  # external delegate flags are added with the pushed library's path
}


# ---------------------------------------------------------------- adb


@dataclasses.dataclass(frozen=True)
class Attached:
    serial: str
    state: str  # device | offline | unauthorized | "no permissions ..."
    props: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def model(self) -> str:
        return self.props.get("model", "")


def parse_adb_devices(text: str) -> list[Attached]:
    """`adb devices -l` output: `SERIAL  STATE  usb:1-1 product:panther model:Pixel_7 device:panther ...`."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        serial, _, rest = line.partition(" ") if "\t" not in line else line.partition("\t")
        rest = rest.strip()
        words = rest.split()
        props = dict(w.split(":", 1) for w in words if ":" in w)
        state_words = [w for w in words if ":" not in w]
        # "no permissions (...)" spans several words; keep it whole
        state = " ".join(state_words) if state_words and state_words[0] == "no" else (state_words[0] if state_words else "")
        out.append(Attached(serial=serial, state=state, props=props))
    return out


def adb_binary() -> str:
    adb = shutil.which("adb")
    if adb is None:
        raise UserError("the adb client is not installed: apt-get install adb (Debian/Ubuntu) or install "
                        "Android SDK platform-tools and put adb on PATH")
    return adb


def _adb(args: list[str], timeout: float, step: str, serial: str | None = None) -> subprocess.CompletedProcess:
    if serial:
        try:
            check_serial(serial)  # never an option to adb, wherever the serial came from
        except ValueError as e:
            raise UserError(str(e)) from None
    argv = [adb_binary(), *(["-s", serial] if serial else []), *args]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"adb did not finish '{step}' within {timeout:.0f} s; is the phone still connected?") from None


def attached_devices(timeout: float = 30) -> list[Attached]:
    # `adb devices` starts the local adb server if needed; that works offline.
    proc = _adb(["devices", "-l"], timeout, "list devices")
    if proc.returncode != 0:
        raise UserError(f"adb devices failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return parse_adb_devices(proc.stdout)


def find_phone(device: Device, attached: list[Attached]) -> Attached | str:
    """The attached phone that is `device`, or why there is none."""
    serial = connection(device).get("serial")
    if serial:
        match = [a for a in attached if a.serial == serial]
        if not match:
            return f"no Android device with serial {serial} is attached (adb devices lists {_names(attached)})"
        cands = match
    else:
        if not attached:
            return ("no Android device attached (adb devices lists none); connect the phone with USB "
                    "debugging on, or `adb connect HOST:PORT`")
        cands = [a for a in attached if not device.android_models or a.model in device.android_models]
        if not cands:
            return (f"the attached device(s) {_names(attached)} are not a {device.name} (model "
                    f"{' or '.join(device.android_models)}); set serial under [{device.name}] in "
                    f"{user_config_path()} to use one anyway")
    ready = [a for a in cands if a.state == "device"]
    if not ready:
        a = cands[0]
        fix = ("accept the USB debugging prompt on the phone" if a.state == "unauthorized"
               else "reconnect it (adb reconnect)" if a.state == "offline"
               else "fix USB permissions (udev rules)")
        return f"{device.name} ({a.serial}) is {a.state}: {fix}"
    if len(ready) > 1 and not serial:
        return (f"several {device.name} phones are attached ({_names(ready)}); set serial under "
                f"[{device.name}] in {user_config_path()}")
    return ready[0]


def _names(attached: list[Attached]) -> str:
    return ", ".join(f"{a.serial} ({a.model or a.state})" for a in attached) or "none"


# ---------------------------------------------------------------- benchmark_model output

_COUNT = re.compile(r"^(?:INFO:\s*)?count=(\d+)(.*)$")
_KV = re.compile(r"(\w+)=([-+0-9.eE]+)")


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Latency (us), memory (MB) and the op-profiling table from benchmark_model's stdout.

    Both formats: `Inference timings in us: Init: …, First inference: …, Warmup (avg): …,
    Inference (avg): …` (newer) and `Average inference timings in us: Warmup: …, Init: …,
    Inference: …` (older). The `count=… min=… avg=… std=…` line of the timed runs is the last one
    before the summary; newer builds add p5/median/p95 to it.
    """
    lines = [ln.rstrip() for ln in text.splitlines()]
    summary = next((ln for ln in reversed(lines) if "inference timings in us:" in ln.lower()), None)
    if summary is None:
        tail = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
        raise UserError(f"benchmark_model printed no inference timings; its last line: {tail[:200]}")
    timings = {}
    for part in summary.split("in us:", 1)[1].split(","):
        key, _, value = part.partition(":")
        try:
            timings[key.strip()] = float(value)
        except ValueError:
            pass
    runs: dict[str, float] = {}
    for ln in lines[: len(lines) - 1 - lines[::-1].index(summary)]:
        m = _COUNT.match(ln.strip())
        if m:
            runs = {"count": float(m.group(1)), **{k: float(v) for k, v in _KV.findall(m.group(2))}}
    # Older builds label the steady-state average "Inference" or, in some, "no stats".
    avg_us = next((timings[k] for k in ("Inference (avg)", "Inference", "no stats") if k in timings),
                  runs.get("avg"))
    return {"timings_us": timings, "runs_us": runs, "inference_avg_us": avg_us,
            "memory_mb": _memory(lines), "ops": _op_table(lines)}


def _memory(lines: list[str]) -> dict[str, float]:
    mem: dict[str, float] = {}
    for ln in lines:
        low = ln.lower()
        if "peak memory footprint (mb) via periodic monitoring" in low:
            mem["peak_periodic"] = float(ln.rsplit(":", 1)[1].split()[0])
        elif "memory footprint" in low and "overall=" in low:
            kv = dict(_KV.findall(ln))
            if "overall" not in kv:
                continue
            mem["overall"] = float(kv["overall"])
            if "init" in kv:
                mem["init"] = float(kv["init"])
    return mem


def _op_table(lines: list[str]) -> list[dict[str, Any]]:
    """Rows of the Run Order table of the regular runs (not of initialization)."""
    start = next((i for i, ln in enumerate(lines) if "Profiling Info for Regular Benchmark Runs" in ln), 0)
    hdr = next((i for i in range(start, len(lines))
                if "Run Order" in lines[i] and i + 1 < len(lines) and "[node type]" in lines[i + 1]), None)
    if hdr is None:
        return []
    cols = [c.strip().lower() for c in re.findall(r"\[([^\]]+)\]", lines[hdr + 1])]
    rows = []
    for ln in lines[hdr + 2:]:
        if not ln.strip() or ln.lstrip().startswith("="):
            break
        cells = [c for c in re.split(r"\t+|\s{2,}", ln.strip()) if c != ""]
        if len(cells) < len(cols):
            continue
        # The name is the last column and may itself contain spaces: join what is left.
        cells = cells[: len(cols) - 1] + [" ".join(cells[len(cols) - 1:])]
        row = dict(zip(cols, cells))
        rows.append({"name": row.get("name", "").strip("[]").rsplit("]:", 1)[0].strip("[]"),
                     "op": row.get("node type", ""), "avg": float(row["avg ms"]),
                     "percent": float(row["%"].rstrip("%")) if "%" in row else None,
                     "times_called": int(row["times called"]) if "times called" in row else None})
    return rows


# ---------------------------------------------------------------- the backend


def benchmark_argv(remote_dir: str, model_name: str, options: ProfileOptions, delegate: Delegate,
                   pin: tuple[int, ...], extra: list[str] = ()) -> list[str]:
    argv = [f"{remote_dir}/benchmark_model", f"--graph={remote_dir}/{model_name}",
            f"--num_threads={options.threads}", f"--warmup_runs={options.warmup}",
            f"--num_runs={options.runs}", "--min_secs=0", "--warmup_min_secs=0",
            f"--max_secs={int(options.timeout_s)}", "--report_peak_memory_footprint=true",
            *DELEGATE_FLAGS[delegate], *extra]
    if options.per_op:
        argv.append("--enable_op_profiling=true")
    if pin:
        argv = ["taskset", format(sum(1 << c for c in pin), "x"), *argv]
    if delegate in (Delegate.HEXAGON, Delegate.QNN):
        # the DSP skeleton libraries are found through these, in the run's own dir
        argv = ["env", f"LD_LIBRARY_PATH={remote_dir}", f"ADSP_LIBRARY_PATH={remote_dir}", *argv]
    return argv


def run_script(remote_dir: str, argv: list[str]) -> str:
    """Record the shell's pid (exec keeps it for benchmark_model, so cleanup can kill it), run, keep
    the output in a file on the phone to pull afterwards."""
    q = shlex.quote
    return (f"echo $$ > {q(remote_dir + '/pid')} && exec {quote_command(argv)} "
            f"> {q(remote_dir + '/out.txt')} 2>&1")


def cleanup_script(remote_dir: str) -> str:
    q = shlex.quote(remote_dir)
    pid = shlex.quote(remote_dir + "/pid")
    return f"if [ -f {pid} ]; then kill \"$(cat {pid})\" 2>/dev/null; fi; rm -rf {q}"


def benchmark_binary(device: Device, options: ProfileOptions) -> Path:
    path = options.benchmark_binary or connection(device).get("benchmark_binary")
    if not path:
        raise UserError(f"no benchmark_model binary for {device.name}: "
                        + HOW_TO_GET_BINARY.format(name=device.name, config=user_config_path()))
    p = Path(path).expanduser().absolute()  # absolute: `adb push` never reads it as an option
    if not p.is_file():
        raise UserError(f"benchmark_model binary {p} does not exist: "
                        + HOW_TO_GET_BINARY.format(name=device.name, config=user_config_path()))
    return p


def _delegate_files(device: Device, delegate: Delegate) -> tuple[list[Path], list[str]]:
    conn = connection(device)
    if delegate is Delegate.HEXAGON:
        libs = conn.get("hexagon_libs")
        files = sorted(Path(libs).expanduser().glob("libhexagon*.so")) if libs else []
        if not files:
            raise UserError(f"the hexagon delegate needs libhexagon_interface.so and libhexagon_nn_skel*.so: "
                            f"set hexagon_libs = \"DIR\" under [{device.name}] in {user_config_path()}")
        return files, []
    if delegate is Delegate.QNN:
        lib = conn.get("qnn_delegate")
        if not lib or not Path(lib).expanduser().is_file():
            raise UserError(f"the qnn delegate needs Qualcomm's libQnnTFLiteDelegate.so (QNN SDK): set "
                            f"qnn_delegate = \"PATH\" under [{device.name}] in {user_config_path()}")
        lib_path = Path(lib).expanduser()
        return sorted(lib_path.parent.glob("*.so")), [
            f"--external_delegate_path={{dir}}/{lib_path.name}", "--external_delegate_options=backend_type:htp"]
    return [], []


@BACKENDS.register(DeviceKind.ANDROID.value)
class AndroidBackend:
    def reachable(self, device: Device) -> str | None:
        connection(device)  # a malformed serial in the config is bad input (exit 2), not "unreachable"
        try:
            found = find_phone(device, attached_devices(timeout=15))
        except UserError as e:
            return str(e)
        return found if isinstance(found, str) else None

    def measure(self, artifact: Path, device: Device, options: ProfileOptions) -> LatencyReport:
        from edgeconv.models import file_sha256

        artifact = Path(artifact)
        artifact_format(artifact, ("tflite",), "benchmark_model on Android", "export with --target tflite-int8 or tflite")
        delegate = options.delegate or device.default_delegate
        device.check_delegate(delegate)
        binary = benchmark_binary(device, options)
        lib_files, extra = _delegate_files(device, delegate)
        phone = find_phone(device, attached_devices())
        if isinstance(phone, str):
            raise UserError(phone)
        pin = device.big_cores if device.big_cores and options.threads <= len(device.big_cores) else ()
        remote_dir = f"{REMOTE_ROOT}/edgeconv-{secrets.token_hex(4)}"
        parsed = self._run(phone.serial, remote_dir, binary, artifact, lib_files,
                           benchmark_argv(remote_dir, "model.tflite", options, delegate, pin,
                                          [e.format(dir=remote_dir) for e in extra]), options)
        return to_report(parsed, device, delegate, options, file_sha256(artifact),
                         {"adb_serial": phone.serial, "android_model": phone.model,
                          "pinned_cpus": ",".join(map(str, pin)), "benchmark_binary": binary.name})

    def _run(self, serial: str, remote_dir: str, binary: Path, artifact: Path, libs: list[Path],
             argv: list[str], options: ProfileOptions) -> dict[str, Any]:
        step = 60.0

        def adb(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess:
            proc = _adb(args, timeout, what, serial)
            if proc.returncode != 0:
                msg = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[-1]
                raise UserError(f"adb '{what}' on {serial} failed: {msg}")
            return proc

        failure: UserError | None = None
        try:
            adb(["shell", quote_command(["mkdir", "-p", remote_dir])], step, "make the run dir")
            adb(["push", str(binary), f"{remote_dir}/benchmark_model"], step * 5, "push benchmark_model")
            # local paths absolute: a file named "-x.tflite" is never read as an adb option
            adb(["push", str(artifact.absolute()), f"{remote_dir}/model.tflite"], step * 5, "push the model")
            for lib in libs:
                adb(["push", str(lib.absolute()), f"{remote_dir}/{lib.name}"], step * 5, f"push {lib.name}")
            adb(["shell", quote_command(["chmod", "755", f"{remote_dir}/benchmark_model"])], step, "chmod")
            ran = _adb(["shell", run_script(remote_dir, argv)], options.timeout_s + step, "benchmark", serial)
            with tempfile.TemporaryDirectory(prefix="edgeconv-adb-") as local:
                adb(["pull", f"{remote_dir}/out.txt", f"{local}/out.txt"], step, "pull the results")
                text = Path(local, "out.txt").read_text(errors="replace")
            if ran.returncode != 0 and "inference timings in us" not in text.lower():
                last = (text.strip().splitlines() or [ran.stderr.strip() or f"exit code {ran.returncode}"])[-1]
                raise UserError(f"benchmark_model failed on {serial}: {last}")
            return parse_benchmark_output(text)
        except UserError as e:
            failure = e
            raise
        finally:
            try:
                adb(["shell", cleanup_script(remote_dir)], step, "clean up")
            except UserError as e:
                raise UserError(f"{failure or e}; cleaning up failed too, so the phone may still hold "
                                f"{remote_dir}") from None


def to_report(parsed: dict[str, Any], device: Device, delegate: Delegate, options: ProfileOptions,
              sha256: str, env: dict[str, str]) -> LatencyReport:
    """benchmark_model prints summary statistics, not samples: p50 is its median where the build
    prints one (else its mean, said so), and p90 is not reported (NaN, null in JSON)."""
    runs = parsed["runs_us"]
    avg = parsed["inference_avg_us"]
    if avg is None:
        raise UserError("benchmark_model output has no inference average")
    median = runs.get("median")
    env = {**env, "delegate": delegate.value,
           "p50_from": "benchmark_model median" if median is not None else "benchmark_model mean (no median printed)",
           "p90": "not reported by benchmark_model",
           **{f"{k}_us": f"{v:g}" for k, v in parsed["timings_us"].items()}}
    mem = parsed["memory_mb"]
    peak = mem.get("peak_periodic", mem.get("overall"))
    unit = "cycles" if delegate is Delegate.HEXAGON else "ms"
    per_op = tuple({**op, "unit": unit} for op in parsed["ops"])
    if unit == "cycles":
        env["per_op"] = "Hexagon op profiles count DSP cycles, not milliseconds"
    return LatencyReport(
        device=device.name, method="measured-device", runtime="benchmark_model", artifact_sha256=sha256,
        threads=options.threads, warmup=options.warmup, iterations=int(runs.get("count", options.runs)),
        p50_ms=(median if median is not None else avg) / 1e3, p90_ms=None,
        min_ms=runs.get("min", avg) / 1e3, std_ms=runs.get("std", 0.0) / 1e3, peak_memory_mb=peak,
        environment=env, per_op=per_op)
