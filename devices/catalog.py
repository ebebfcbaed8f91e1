"""Registers every shipped device descriptor (devices/descriptors/*.toml) in DEVICES.

Each device is registered under its name and under each alias (the same frozen Device), so
`--device pixel` and `--device pixel-7` are one device; listings de-duplicate by name.
"""
from __future__ import annotations

from edgeconv.devices.base import shipped_descriptors
from edgeconv.registry import DEVICES


def _register() -> None:
    for device in shipped_descriptors():
        for key in (device.name, *device.aliases):
            DEVICES.register(key)(device)


_register()
