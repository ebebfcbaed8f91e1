"""Import timm beside this torch without torchvision.

timm (a bench/test-only dependency, installed `--no-deps` from requirements-nodeps.txt) imports
torchvision at import time for its data pipeline and a few helpers. torchvision from PyPI cannot
import beside edgeconv's torch build, and edgeconv must not depend on it. Building a model
(`timm.create_model(name, pretrained=False)`) and capturing it with torch.export touches none of
it, so stand-in modules are enough: each module name timm imports exists, and every attribute is a
placeholder class that raises as soon as it is called (instantiated). Class attributes of a
placeholder are placeholders too (`InterpolationMode.BILINEAR` works as a dict key), so timm's
import-time tables build, and `isinstance(x, FrozenBatchNorm2d)` is simply False.

    from bench.timm_env import import_timm
    timm = import_timm()
    net = timm.create_model("mobilenetv3_small_050", pretrained=False)

The stand-ins are installed only when the real torchvision is not importable.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from typing import Any

# Every torchvision module timm 1.0.x imports (at import time or lazily).
MODULES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional",
           "torchvision.transforms.v2", "torchvision.ops", "torchvision.ops.misc", "torchvision.datasets",
           "torchvision.models", "torchvision.models.feature_extraction", "torchvision.utils", "torchvision.io")


class _Meta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")

    def __repr__(cls) -> str:
        return f"<torchvision stand-in {cls.__qualname__}>"


def _placeholder(name: str) -> type:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{name} is a stand-in (torchvision is not installed; bench/timm_env.py): "
                           "only timm's model code can be used")

    return _Meta(name.rsplit(".", 1)[-1], (), {"__init__": refuse, "__qualname__": name, "__module__": "torchvision"})


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


def _torchvision_importable() -> bool:
    if "torchvision" in sys.modules:
        return not isinstance(sys.modules["torchvision"], _StandIn)
    try:
        importlib.import_module("torchvision")
        return True
    except Exception:  # not installed, or a build that cannot load beside this torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        return False


def install_standins() -> None:
    for name in MODULES:
        if name in sys.modules:
            continue
        mod = _StandIn(name)
        mod.__path__ = []  # a package: submodules resolve through sys.modules
        # importlib.util.find_spec (torch.onnx's op registry asks it) raises on a module without one
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        mod.__version__ = "0.0.0+standin"
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, mod)


def import_timm() -> types.ModuleType:
    """timm, with torchvision stand-ins installed first when the real one is not importable."""
    if "timm" not in sys.modules and not _torchvision_importable():
        install_standins()
    import timm

    return timm
