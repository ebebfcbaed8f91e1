"""Tiny real artifacts for the device tests: a conv net exported with torch.onnx and litert-torch."""
from __future__ import annotations

from pathlib import Path


def tiny_module():
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.dw = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            x = torch.relu(self.dw(torch.relu(self.conv(x))))
            return self.fc(x.mean((2, 3)))

    torch.manual_seed(0)
    return Tiny().eval(), (torch.randn(1, 3, 32, 32),)


def export_onnx(path: Path, external_data: bool = False) -> Path:
    import torch

    m, args = tiny_module()
    torch.onnx.export(m, args, str(path), dynamo=True, external_data=external_data)
    return path


def export_tflite(path: Path) -> Path:
    import litert_torch

    m, args = tiny_module()
    litert_torch.convert(m, args).export(str(path))
    return path


def adb_server_started() -> bool:
    """Start adb's local server (works offline, no phone needed); True when this call started it, so
    the caller stops it again (`adb kill-server`) and leaves no daemon behind."""
    import shutil
    import subprocess

    if shutil.which("adb") is None:
        return False
    out = subprocess.run(["adb", "start-server"], capture_output=True, text=True, timeout=60)
    return "daemon started successfully" in out.stdout + out.stderr


def adb_kill_server() -> None:
    import subprocess

    subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)
