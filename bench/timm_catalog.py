"""The timm catalog as a zoo: the smallest variant of every timm model module.

timm registers each model name from the module that defines it (`timm.models._registry`
`_model_to_module`); a module is one family (resnet, mobilenetv3, vision_transformer …). Per
module this picks the variant with the fewest parameters, counted by building every variant on
the meta device (no memory, no init), under a cap (30 M by default: what a 2-core CI host can
export and verify). A module with no variant under the cap, or none that builds, is skipped with
the reason. The input size is small (64²) unless the model's config fixes it (position
embeddings, attention biases sized for one resolution) and timm can build it for 64² (`img_size`),
else the config's size, recorded. Whether the net runs at that size is checked with a forward on
the meta device; bench/timm_nets.py builds it the same way.

    from bench.timm_catalog import catalog
    entries = catalog()             # [Entry(module, model, params, size, ...)], cached in JSON

`pick()` is the pure choice (tested without timm); `catalog()` counts (about 0.2 s a model, ~5 min
for timm 1.0's 1371 models on 2 cores) and caches the counts in bench/results/timm-catalog.json,
keyed by timm's version, so the count runs once per timm release.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "results" / "timm-catalog.json"
CAP = 30_000_000
SMALL = 64  # input side the bench runs at unless the model fixes its own
# timm's own unit-test configs (test_resnet, test_vit …: a few hundred thousand parameters, no
# published variant): no user deploys them, so they are not a module's smallest variant.
EXCLUDE_PREFIX = "test_"


@dataclasses.dataclass(frozen=True)
class Count:
    """One timm model: its module and parameter count (None with `error` when it did not build)."""

    model: str
    module: str
    params: int | None
    error: str = ""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A module's pick: the smallest variant under the cap (model ""/skipped when none)."""

    module: str
    model: str
    params: int | None
    variants: int  # models the module registers
    size: int = SMALL  # input side (square) the bench exports at
    size_note: str = ""  # why not SMALL, or that the meta forward could not check it
    skipped: str = ""  # why the module is not run ("" when it is)

    @property
    def ref(self) -> str:
        """The edgeconv --model reference (bench/timm_nets.py builds it at `size`)."""
        return f"bench.timm_nets:{self.model}@{self.size}"


def pick(counts: list[Count], cap: int = CAP) -> list[Entry]:
    """Per module (sorted), the variant with the fewest parameters at or under `cap` (ties: the
    name first in sort order); a module with none is an Entry with `skipped` saying why."""
    by_module: dict[str, list[Count]] = {}
    for c in counts:
        by_module.setdefault(c.module, []).append(c)
    out = []
    for module in sorted(by_module):
        cs = [c for c in by_module[module] if not c.model.startswith(EXCLUDE_PREFIX)]
        if not cs:
            out.append(Entry(module, "", None, 0, skipped=f"only timm's unit-test configs ({EXCLUDE_PREFIX}*)"))
            continue
        built = [c for c in cs if c.params is not None]
        under = sorted((c for c in built if c.params <= cap), key=lambda c: (c.params, c.model))
        if under:
            out.append(Entry(module, under[0].model, under[0].params, len(cs)))
            continue
        if built:
            least = min(built, key=lambda c: (c.params, c.model))
            why = f"smallest variant {least.model} has {least.params / 1e6:.1f} M parameters > cap {cap / 1e6:g} M"
        else:
            why = f"no variant builds: {cs[0].model}: {cs[0].error}"
        out.append(Entry(module, "", None, len(cs), skipped=why))
    return out


# --- counting with timm ------------------------------------------------------------------------

def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160]}" if text else type(e).__name__


def count_params(timm, name: str) -> int:
    import torch

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = timm.create_model(name, pretrained=False)
    return sum(p.numel() for p in net.parameters())


def count_all(timm, modules: list[str] | None = None) -> list[Count]:
    from timm.models import _registry

    out = []
    for name in timm.list_models():
        module = _registry._model_to_module.get(name, "?")
        if modules and module not in modules:
            continue
        try:
            out.append(Count(name, module, count_params(timm, name)))
        except Exception as e:  # noqa: BLE001 — a model that cannot build on meta is reported, never fatal
            out.append(Count(name, module, None, _short(e)))
    return out


def input_size(timm, entry: Entry) -> Entry:
    """`entry` with the input side the bench uses, checked by a forward on the meta device: SMALL;
    else SMALL with the model built for it (`img_size=SMALL`: ViT-style nets size their position
    embeddings and windows from it — the family's ops at a 2-core CI cost); else the config's size."""
    import torch

    net = _meta(timm, entry.model)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    native = int((cfg.get("input_size") or (3, 224, 224))[-1])
    fixed = bool(cfg.get("fixed_input_size"))
    tries = [] if fixed else [(SMALL, False, "")]
    tries += [(SMALL, True, f"built for {SMALL}² with img_size={SMALL} (the config's {native}² "
                            + ("is fixed)" if fixed else "fails at 64²)")),
              (native, False, "fixed by the model's config" if fixed else f"{SMALL}² fails")]
    first_err = ""
    for side, built_for, note in tries:
        try:
            model = _meta(timm, entry.model, side) if built_for else net
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model(torch.empty(1, 3, side, side, device="meta"))
            note += f" ({first_err})" if first_err and note else ""
            return dataclasses.replace(entry, size=side, size_note=note)
        except Exception as e:  # noqa: BLE001 — meta lacks some kernels: tried at the next size, else noted
            first_err = first_err or _short(e)
    side = tries[0][0]
    return dataclasses.replace(entry, size=side, size_note=f"meta forward failed, size unchecked: {first_err}")


def _meta(timm, model: str, img_size: int | None = None):
    """The net on the meta device (no memory, no init), built for `img_size` when given."""
    import torch

    kwargs = {"img_size": img_size} if img_size else {}
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return timm.create_model(model, pretrained=False, **kwargs).eval()


def timm_version() -> str:
    from bench.timm_env import import_timm

    return import_timm().__version__


def catalog(cap: int = CAP, cache: Path = CACHE, refresh: bool = False, log=print) -> list[Entry]:
    """Every timm module's pick. The parameter counts are cached per timm version in `cache` (the
    slow part); the picks are recomputed from them, and a pick's input size is checked once."""
    from bench.timm_env import import_timm

    timm = import_timm()
    data = {}
    if cache.exists() and not refresh:
        data = json.loads(cache.read_text())
    if data.get("timm") != timm.__version__:
        log(f"counting parameters of {len(timm.list_models())} timm {timm.__version__} models on the meta device …")
        counts = count_all(timm)
        data = {"timm": timm.__version__, "counts": {c.model: [c.module, c.params, c.error] for c in counts}}
    counts = [Count(m, mod, n, err) for m, (mod, n, err) in data["counts"].items()]
    known = {e["model"]: e for e in data.get("entries", []) if e["model"] and data.get("small") == SMALL}
    entries = []
    for e in pick(counts, cap):
        if e.skipped:
            entries.append(e)
        elif e.model in known and (known[e.model]["size"] == SMALL or "img_size" in known[e.model]["size_note"]
                                   or data.get("img_size_tried")):
            entries.append(dataclasses.replace(e, size=known[e.model]["size"], size_note=known[e.model]["size_note"]))
        else:
            entries.append(input_size(timm, e))
    new = {"timm": timm.__version__, "cap": cap, "small": SMALL, "img_size_tried": True, "exclude": f"{EXCLUDE_PREFIX}* (timm's unit-test configs)",
           "how": "parameters counted by timm.create_model(name, pretrained=False) on the meta device; per module "
                  "the fewest at or under the cap; input side checked by a meta-device forward",
           "entries": [dataclasses.asdict(e) for e in entries], "counts": data["counts"]}
    if new != data:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(new, indent=1) + "\n")
    return entries


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(ROOT))
    es = catalog(refresh="--refresh" in sys.argv)
    for e in es:
        print(f"{e.module:28s} {e.model or '-':36s} {(e.params or 0) / 1e6:6.2f} M  {e.size:4d}  {e.skipped or e.size_note}")
