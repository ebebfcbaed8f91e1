"""The device catalog: every shipped descriptor (devices/descriptors/*.toml) in DEVICES, every
backend in BACKENDS (keyed by device kind), and the two lookups the commands use.

Each device is registered under its name and under each alias (the same frozen Device), so
`--device pixel` and `--device pixel-7` are one device; listings de-duplicate by name. Backend
modules register themselves; importing them here (above base.py, which they all import) keeps
the imports one way.
"""
from __future__ import annotations

from pathlib import Path

from edgeconv.devices import android, apple, arm64, host, ssh  # noqa: F401  (fill BACKENDS)
from edgeconv.devices.base import Backend, Device, load_descriptor, shipped_descriptors
from edgeconv.errors import UserError
from edgeconv.registry import BACKENDS, DEVICES


def _register() -> None:
    for device in shipped_descriptors():
        for key in (device.name, *device.aliases):
            DEVICES.register(key)(device)


def resolve(name_or_path: str) -> Device:
    """A registered device name or alias, or a path to a descriptor .toml of the user's own."""
    if name_or_path.endswith(".toml"):
        if not Path(name_or_path).is_file():
            raise UserError(f"device descriptor {name_or_path} does not exist")
        return load_descriptor(Path(name_or_path))
    return DEVICES.get(name_or_path)


def backend_for(device: Device) -> Backend:
    return BACKENDS.get(device.kind.value)()


_register()
