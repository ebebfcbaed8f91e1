"""`arm64-emulated`: run .tflite artifacts on an emulated arm64 CPU (qemu-user + a Debian arm64 root
filesystem + the aarch64 ai-edge-litert wheel), for *functional* checks only.

XNNPACK disables its sparse path on x86 with AVX, so whether a sparse artifact engages it can only
be seen on ARM. Under emulation the outputs are real arm64 XNNPACK outputs; the timings are not
latency (qemu runs zero weights cheaply and its timings are bimodal): every report made here says
method "emulated" and is never a latency figure.

The root filesystem is built once by `.ci/arm64-rootfs.sh` and found at $EDGECONV_ARM64_ROOTFS
(default ~/.cache/edgeconv/arm64-rootfs). Running needs root (chroot, bind mounts) and the
qemu-aarch64 binfmt entry (qemu-user-static, binfmt-support).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from edgeconv.devices.base import DeviceKind
from edgeconv.errors import UserError
from edgeconv.registry import BACKENDS

if TYPE_CHECKING:
    from edgeconv.results import LatencyReport

ENV = "EDGECONV_ARM64_ROOTFS"
BUILD = "bash .ci/arm64-rootfs.sh"
PYDIR = "/opt/edgeconv-py"  # where the script unpacks the aarch64 wheels inside the rootfs
METHOD = "emulated"  # never "measured-device": qemu timings are not latency
# The CPU qemu emulates: the one the bind-mounted cpuinfo describes. XNNPACK picks its kernels by
# the hardware capabilities the kernel reports (getauxval), which qemu takes from its CPU model, not
# from /proc/cpuinfo; qemu's default ("max") reports SVE and SME, and there XNNPACK's int8 MEAN came
# out 51–206 steps off TFLite's builtin kernels (ai-edge-litert 2.3.0; right with SME off, and on
# this core). A phone's core, not every feature qemu knows.
QEMU_CPU = "neoverse-n1"
BINFMT = Path("/proc/sys/fs/binfmt_misc")

# Runs inside the chroot under the Debian python3 (3.11): every model on every input, outputs
# saved as .npy, per-invoke wall times in milliseconds. XNNPACK is ai-edge-litert's default.
_CHROOT_RUNNER = r'''
import json, sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter
job = json.load(open(sys.argv[1]))
x = np.load(job["inputs"])
result = {}
for name, model in job["models"].items():
    it = Interpreter(model_path=model, num_threads=job["threads"])
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    outs, times = [], []
    for k in range(len(x)):
        it.set_tensor(i["index"], x[k:k + 1].astype(i["dtype"]))
        t0 = time.perf_counter()
        it.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
        outs.append(it.get_tensor(o["index"]).copy())
    np.save(model + ".out.npy", np.concatenate(outs))
    result[name] = times
print(json.dumps(result))
'''


def rootfs() -> Path:
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "edgeconv" / "arm64-rootfs")


def unavailable() -> str | None:
    """None when artifacts can run here under emulation; otherwise what is missing and the fix."""
    root = rootfs()
    if not (root / ".edgeconv-ready").is_file():
        return f"no arm64 root filesystem at {root} (set ${ENV} or build it with: {BUILD})"
    if os.geteuid() != 0:
        return "running under arm64 emulation needs root (chroot and bind mounts)"
    if not Path("/usr/bin/qemu-aarch64-static").exists():
        return "qemu-user-static is not installed (apt-get install qemu-user-static binfmt-support)"
    return None


def _enable_binfmt() -> None:
    if not (BINFMT / "register").exists():
        _sh(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)])
    if not (BINFMT / "qemu-aarch64").exists():
        _sh(["update-binfmts", "--enable", "qemu-aarch64"])


def _sh(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode:
        raise UserError(f"arm64-emulated: {' '.join(argv[:2])} failed: {(r.stderr or r.stdout).strip()[:200]}")


@contextlib.contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc (with an arm64 cpuinfo over it), /sys and /dev inside the rootfs, for one run.

    Without /sys cpuinfo fails and TFLite silently uses reference kernels instead of XNNPACK; the
    host's x86 /proc/cpuinfo (passed through by qemu) crashes Python. A lock keeps two runs from
    mounting over each other; every mount is undone, whatever happens.
    """
    _enable_binfmt()
    lock = open(root / ".edgeconv-lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    done: list[Path] = []
    try:
        for argv, where in (
            (["mount", "-t", "proc", "proc"], root / "proc"),
            (["mount", "--bind", str(root / "etc" / "edgeconv-cpuinfo")], root / "proc" / "cpuinfo"),
            (["mount", "--rbind", "/sys"], root / "sys"),
            (["mount", "--bind", "/dev"], root / "dev"),
        ):
            _sh(argv + [str(where)])
            done.append(where)
        yield
    finally:
        for where in reversed(done):
            if subprocess.run(["umount", "-R", str(where)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(where)], capture_output=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def run(models: dict[str, Path], x: np.ndarray, threads: int = 1,
        timeout_s: float = 900) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """Run each .tflite on every sample of `x` (float32 batch, the model's input layout) in one
    emulated process. Returns outputs and per-invoke emulated milliseconds, keyed like `models`."""
    why = unavailable()
    if why:
        raise UserError(f"arm64-emulated: {why}")
    root = rootfs()
    (root / "tmp").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgeconv-", dir=root / "tmp"))
    inside = Path("/") / work.relative_to(root)
    try:
        job = {"inputs": str(inside / "inputs.npy"), "threads": threads, "models": {}}
        np.save(work / "inputs.npy", np.ascontiguousarray(x, dtype=np.float32))
        for i, (name, path) in enumerate(models.items()):
            if not Path(path).is_file():
                raise UserError(f"arm64-emulated: artifact {path} does not exist")
            shutil.copyfile(path, work / f"m{i}.tflite")
            job["models"][name] = str(inside / f"m{i}.tflite")
        (work / "job.json").write_text(json.dumps(job))
        (work / "run.py").write_text(_CHROOT_RUNNER)
        argv = ["chroot", str(root), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", f"PYTHONPATH={PYDIR}",
                f"QEMU_CPU={QEMU_CPU}",  # read by qemu-user at each exec under binfmt
                "/usr/bin/python3", str(inside / "run.py"), str(inside / "job.json")]
        with mounted(root):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        if r.returncode:
            last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
            raise UserError(f"arm64-emulated: the emulated run failed: {last}")
        times = json.loads(r.stdout.strip().splitlines()[-1])
        outs = {name: np.load(work / f"m{i}.tflite.out.npy") for i, name in enumerate(models)}
        return outs, times
    finally:
        shutil.rmtree(work, ignore_errors=True)


@BACKENDS.register(DeviceKind.EMULATED.value)
class EmulatedArm64Backend:
    """Backend protocol (reachable / measure) for the `arm64-emulated` device descriptor."""

    def reachable(self, device: object) -> str | None:
        return unavailable()

    def measure(self, artifact: Path, device: object, options: object) -> "LatencyReport":
        """A report for functional runs, labelled emulated: its numbers are not latency."""
        from edgeconv.devices.base import stats
        from edgeconv.models import file_sha256
        from edgeconv.results import LatencyReport

        from edgeconv.devices.base import artifact_format

        artifact_format(Path(artifact), ("tflite",), "arm64-emulated", "export with --target tflite-int8 or tflite")
        from ai_edge_litert.interpreter import Interpreter

        shape = Interpreter(model_path=str(artifact)).get_input_details()[0]["shape"]
        runs, warmup, threads = (int(getattr(options, k, d)) for k, d in (("runs", 10), ("warmup", 1), ("threads", 1)))
        x = np.random.default_rng(0).standard_normal((warmup + runs, *shape[1:])).astype(np.float32)
        t0 = time.perf_counter()
        _, times = run({"a": Path(artifact)}, x, threads)
        samples = tuple(times["a"][warmup:])
        return LatencyReport(
            device=getattr(device, "name", "arm64-emulated"), method=METHOD, runtime="ai-edge-litert (aarch64, qemu-user)",
            artifact_sha256=file_sha256(artifact), threads=threads, warmup=warmup, iterations=len(samples),
            samples_ms=samples, environment={"note": "qemu-user emulation: behaviour only, NOT latency",
                                             "delegate": "xnnpack (ai-edge-litert default)",
                                             "rootfs": str(rootfs()), "wall_s": f"{time.perf_counter() - t0:.1f}"},
            **stats(samples))
