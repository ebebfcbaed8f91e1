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
