"""What this host's CPU offers int8 kernels: arch, model name, and the ISA flags that decide which
integer GEMM onnxruntime (MLAS) and XNNPACK dispatch to.

Why it matters: on x86 without VNNI (AVX2, or AVX-512 without VNNI) onnxruntime's u8s8 kernels sum
pairs of u8×s8 products in saturating int16 (`vpmaddubsw`), so an int8 artifact's fast-kernel output
can differ from what the artifact means; with AVX-512 VNNI / AVX-VNNI / AMX, or on ARM, it cannot.

Sources, in order:
- x86-64 Linux/macOS: the `cpuid` instruction itself (a few bytes of machine code run through ctypes),
  plus `xgetbv` for whether the OS enabled the AVX/AVX-512 register state. This is what the process
  actually sees — also under an emulator (`qemu-x86_64 -cpu Haswell`), where /proc/cpuinfo still
  describes the real machine;
- otherwise /proc/cpuinfo (Linux: ARM `Features`, or x86 `flags` where cpuid could not run);
- otherwise `platform`.
If numpy is already imported, its own cpuid-based view is recorded too (`numpy_features`); numpy and
onnxruntime are never imported here. `isa_source` says which source the flags came from.
"""
from __future__ import annotations

import functools
import platform
import sys

# The flags reported, per arch (names as Linux /proc/cpuinfo spells them).
X86_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
ARM_FLAGS = ("asimddp", "i8mm", "sve")
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
_NUMPY_X86 = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni"}
_NUMPY_ARM = {"ASIMDDP": "asimddp", "ASIMDHP": "asimdhp", "SVE": "sve"}

# cpuid(leaf: edi, subleaf: esi, out: rdx -> uint32[4] = eax, ebx, ecx, edx); System V AMD64 ABI.
_CPUID_CODE = bytes.fromhex(
    "53"            # push rbx (callee-saved; cpuid clobbers it)
    "89f8"          # mov eax, edi
    "89f1"          # mov ecx, esi
    "4989d0"        # mov r8, rdx
    "0fa2"          # cpuid
    "418900"        # mov [r8], eax
    "41895804"      # mov [r8+4], ebx
    "41894808"      # mov [r8+8], ecx
    "4189500c"      # mov [r8+12], edx
    "5b"            # pop rbx
    "c3")           # ret
# xgetbv(0) -> uint64 XCR0 (which register states the OS saves: bit 1-2 SSE/AVX, 5-7 AVX-512).
_XGETBV_CODE = bytes.fromhex(
    "31c9"          # xor ecx, ecx
    "0f01d0"        # xgetbv
    "48c1e220"      # shl rdx, 32
    "4809d0"        # or rax, rdx
    "c3")           # ret


def _bit(v: int, n: int) -> bool:
    return bool(v >> n & 1)


def _cpuid_probe() -> tuple[dict[str, bool], str] | None:
    """(flags, brand string) from cpuid, or None where machine code cannot be run here."""
    if sys.platform not in ("linux", "darwin") or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        import ctypes
        import mmap

        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):  # W^X policies refuse executable anonymous pages
        return None
    try:
        page.write(_CPUID_CODE + b"\x90" * (64 - len(_CPUID_CODE)) + _XGETBV_CODE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(page))
        cpuid_fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(base)
        xgetbv_fn = ctypes.CFUNCTYPE(ctypes.c_uint64)(base + 64)

        def cpuid(leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
            out = (ctypes.c_uint32 * 4)()
            cpuid_fn(leaf, sub, out)
            return tuple(out)  # type: ignore[return-value]

        max_leaf = cpuid(0)[0]
        _, _, ecx1, _ = cpuid(1) if max_leaf >= 1 else (0, 0, 0, 0)
        xcr0 = xgetbv_fn() if _bit(ecx1, 27) else 0  # OSXSAVE: the OS manages extended state
        os_avx = xcr0 & 0x6 == 0x6
        os_avx512 = os_avx and xcr0 & 0xE0 == 0xE0
        os_amx = xcr0 & 0x60000 == 0x60000
        l7 = cpuid(7, 0) if max_leaf >= 7 else (0, 0, 0, 0)
        l7_1 = cpuid(7, 1) if max_leaf >= 7 and l7[0] >= 1 else (0, 0, 0, 0)
        flags = {
            "avx2": os_avx and _bit(l7[1], 5),
            "avx512f": os_avx512 and _bit(l7[1], 16),
            "avx512bw": os_avx512 and _bit(l7[1], 30),
            "avx512_vnni": os_avx512 and _bit(l7[2], 11),
            "avx_vnni": os_avx and _bit(l7_1[0], 4),
            "amx_int8": os_amx and _bit(l7[3], 25),
        }
        brand = ""
        if cpuid(0x80000000)[0] >= 0x80000004:
            raw = b"".join(int(r).to_bytes(4, "little") for leaf in (0x80000002, 0x80000003, 0x80000004)
                           for r in cpuid(leaf))
            brand = raw.split(b"\0", 1)[0].decode("ascii", "replace").strip()
        return flags, brand
    except (OSError, ValueError, TypeError):
        return None
    finally:
        try:
            page.close()
        except BufferError:  # a view into the page still alive: leave it mapped
            pass


def _proc_cpuinfo() -> tuple[set[str], str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
    return flags, model


def _numpy_features(arch_flags: tuple[str, ...]) -> str | None:
    """numpy's cpuid-based view, only if numpy is already imported (never imported here)."""
    np = sys.modules.get("numpy")
    if np is None:
        return None
    feats = None
    for mod in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__cpu_features__"):
            feats = m.__cpu_features__
            break
    if feats is None:
        return None
    names = _NUMPY_X86 if "avx2" in arch_flags else _NUMPY_ARM
    return " ".join(ours for theirs, ours in names.items() if feats.get(theirs)) or "-"


def u8s8_saturates(machine: str, flags: set[str]) -> bool:
    """True where onnxruntime's x86 u8s8 int8 GEMM sums pairs in saturating int16: x86 without
    AVX-512 VNNI / AVX-VNNI (AMX hosts have AVX-512 VNNI). ARM and others: False."""
    if machine.lower() not in _X86:
        return False
    return not ({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)


def host_info() -> dict[str, str]:
    """This host's CPU as int8 kernels see it. All values are strings (manifest-friendly):
    machine, cpu, isa (space-separated flags present, from the arch's list), isa_source
    (cpuid | /proc/cpuinfo | platform), u8s8_saturates (yes/no), and where available
    cpuinfo_isa (what /proc/cpuinfo says, if it disagrees with cpuid — e.g. under an emulator),
    numpy_features and onnxruntime (version, if already imported)."""
    info = dict(_cpu())
    np_view = _numpy_features(X86_FLAGS if info["machine"].lower() in _X86 else ARM_FLAGS)
    if np_view is not None:
        info["numpy_features"] = np_view
    ort = sys.modules.get("onnxruntime")
    if ort is not None and hasattr(ort, "__version__"):
        info["onnxruntime"] = str(ort.__version__)
    return info


@functools.lru_cache(maxsize=1)
def _cpu() -> dict[str, str]:
    machine = platform.machine() or "unknown"
    x86 = machine.lower() in _X86
    names = X86_FLAGS if x86 else ARM_FLAGS if machine.lower() in ("aarch64", "arm64", "armv8l") else ()
    info: dict[str, str] = {"machine": machine}
    proc = _proc_cpuinfo()
    proc_flags = {f for f in names if proc and f in proc[0]}
    if not x86 and proc and "asimddp" not in proc[0] and "dotprod" in proc[0]:
        proc_flags.add("asimddp")
    probe = _cpuid_probe() if x86 else None
    if probe is not None:
        flags = {f for f, on in probe[0].items() if on}
        info["cpu"] = probe[1] or (proc[1] if proc else "") or platform.processor() or "unknown"
        info["isa_source"] = "cpuid"
        if proc is not None and proc_flags != flags:
            info["cpuinfo_isa"] = " ".join(f for f in names if f in proc_flags) or "-"
    elif proc is not None and proc[0]:
        flags = proc_flags
        info["cpu"] = proc[1] or platform.processor() or "unknown"
        info["isa_source"] = "/proc/cpuinfo"
    else:
        flags = set()
        info["cpu"] = platform.processor() or "unknown"
        info["isa_source"] = "platform"
    info["isa"] = " ".join(f for f in names if f in flags) or "-"
    if info["isa_source"] == "platform":
        info["u8s8_saturates"] = "unknown" if x86 else "no"
    else:
        info["u8s8_saturates"] = "yes" if u8s8_saturates(machine, flags) else "no"
    return info
