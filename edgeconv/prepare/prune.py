"""Gradual magnitude pruning while fine-tuning, from the CLI: `export -t tflite-sparse --prune-epochs N`.

Part of the prepare stage, like QAT: the eager model (after its own reparameterization) is
fine-tuned while its 1×1 convs and linears are pruned, then captured again; the passes
(fold-conv-bn, sparsify, cleanup) and the sparse exporters and their checks run unchanged on it.

    before:  model ──capture──▶ Graph ──fold-conv-bn──▶ sparsify (one shot: 80 % → 10 % accuracy)
    after:   model ──fine-tune, masks along a cubic schedule──▶ pruned model ──capture──▶ Graph
             ──fold-conv-bn──▶ sparsify (finds the trained zeros and changes nothing) ──▶ artifact

How:
- BatchNorm as QAT recipes freeze it (Jacob et al. 2018; Krishnamoorthi 2018): it normalizes with
  batch statistics, and keeps updating its running ones, for the first `FREEZE` of the steps, then
  is frozen (running statistics, γ and β still train). edgeconv's own QAT forward (Tune-mode form,
  running statistics that follow the batch by EMA) was tried first and recovered far less here:
  the demo at 80 % reached 87.8 % held-out after 20 epochs against 98.0 % with batch statistics
  (dense: 99.2 %) — the pruned conv outputs shrink faster than an EMA-normalized net can follow.
- Masks: `block`×1 groups along C_out (4×1 by default: XNNPACK's 4-channel sparse kernels),
  smallest L1 norm first, ranked on the weight the artifact carries (W·c, BN folded), raised along
  `PolynomialSchedule` (Zhu & Gupta 2017, power 3) from 0 to the target over the first
  `PRUNE_SPAN` of the steps, recomputed a few times per epoch; the masks are re-applied after every
  optimizer step, so pruned weights stay exactly zero; the remaining steps recover at the target.
- The `sparsify` pass then ranks the folded weights itself. Zero blocks have norm 0 and sort first,
  and it prunes the same number of blocks per layer, so it keeps the trained zeros and changes
  nothing: `_sparsify_keeps` runs it and says so in the stage record (a WARNING if it did not).

`--sparsity 0.5,0.7,0.8,0.9`: every level is pruned (fine-tuned with --prune-epochs, else one shot)
and tabulated against the speed-up XNNPACK's sparse path is *predicted* to give on ARM
(`predicted_speedup`); the artifacts carry the sparsest level whose drop on the validation split
(held back from the training data, so the held-out parity stays an independent check) is within
--max-drop (default `config.SPARSE_MAX_DROP`, the sparse targets' own drop budget).
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeconv.config import SPARSE_MAX_DROP, BlockSize, ExportOptions
from edgeconv.errors import UserError
from edgeconv.results import PruneEpoch, PruneLevel, PruneReport, StageRecord

if TYPE_CHECKING:
    import torch

    from edgeconv.calib.data import DataSet
    from edgeconv.context import Progress
    from edgeconv.graph import Graph
    from edgeconv.models import ModelSpec

BATCH = 32
LR = 5e-3  # AdamW, cosine to 0 (demo at 80 %: 2e-3 recovered less in the same epochs)
PRUNE_SPAN = 0.6  # the schedule reaches the target at 60 % of the steps; the rest recover
FREEZE = 0.8  # BatchNorm normalizes with batch statistics for this share of the steps, then freezes
RAW_RANK = False  # True: rank the raw conv weights (tried: 96.9 % vs 97.3 % held-out, demo 80 %, 12 epochs)
UPDATES_PER_EPOCH = 4  # mask recomputations per epoch while the schedule rises
VAL_FRACTION = 0.1  # of the training data, held back: per-epoch accuracy and the choice of level

# --- predicted speed-up of XNNPACK's sparse path on ARM ---------------------------------------
# Elsen, Dukhan, Gale, Simonyan, "Fast Sparse ConvNets" (CVPR 2020, arXiv:1911.09723): sparse
# MobileNet v1/v2 and EfficientNet run 1.3–2.4x faster than their dense equivalents on a Snapdragon
# 835 (ARM), at 70–95 % sparsity of the 1x1 convs. Read here as whole-model speed-up rising linearly
# from 1.3x at 70 % to 2.4x at 95 % for a MobileNet v1, which has 94.86 % of its multiply-adds in 1x1
# convs (Howard et al. 2017, Table 2); that gives the 1x1 kernels' time ratio sparse/dense at each
# sparsity, which is applied to this model's own 1x1 share. XNNPACK runs dense at ≤ 2/3 zeros (1.0x).
SPEEDUP_ANCHORS = ((0.70, 1.3), (0.95, 2.4))
REF_ONE_BY_ONE_SHARE = 0.9486
XNNPACK_MIN_ZEROS = 2 / 3
SPEEDUP_BASIS = ("PREDICTED, not measured: Elsen et al. 2019 (arXiv:1911.09723), 1.3x at 70 % to 2.4x at "
                 "95 % 1x1 sparsity for MobileNet-class nets on Snapdragon 835 (interpolated linearly, "
                 "MobileNet v1 1x1 share 94.86 % of multiply-adds), scaled to this model's 1x1 share; 1.0x at "
                 "<= 2/3 zeros (XNNPACK stays dense); assumes the artifact is eligible (check-sparse) and "
                 "4x1 blocks (smaller blocks: an upper bound)")


def sparse_targets(names: tuple[str, ...]) -> list[str]:
    from edgeconv import registrations
    from edgeconv.registry import TARGETS

    registrations.load()
    return [n for n in names if "sparsify" in TARGETS.get(n).passes]


def check_options(options: ExportOptions) -> None:
    """Refuse, in one line, what cannot be done, before any model is loaded."""
    if not (options.prune.epochs or options.sparse.levels):
        return
    if not sparse_targets(options.targets):
        flag = f"--prune-epochs {options.prune.epochs}" if options.prune.epochs else "--sparsity with several levels"
        raise UserError(f"{flag} prunes for the sparse targets, but none was asked for; add -t tflite-sparse "
                        "(or tflite-sparse-fp16)")
    if options.prune.epochs and options.prune.train_data:  # a wrong reference fails before the model loads
        from edgeconv.models import resolve_ref

        resolve_ref(options.prune.train_data, "--train-data")


def prune_stage(spec: "ModelSpec", root: "Graph", options: ExportOptions, evalset: "DataSet",
                progress: "Progress") -> tuple["ModelSpec", "Graph", ExportOptions, PruneReport | None]:
    """The pruned (and fine-tuned) model, its captured graph, the options with the chosen sparsity,
    and the report — or everything unchanged when neither --prune-epochs nor a list of levels is asked."""
    from edgeconv.graph import capture

    check_options(options)
    if not (options.prune.epochs or options.sparse.levels):
        return spec, root, options, None
    t0 = time.perf_counter()
    block = options.sparse.block
    levels = sorted(set(options.sparse.levels or (options.sparse.sparsity,)))
    train, val, source = _data(spec, options)
    pairs = bn_pairs(spec.module, spec.example_inputs)
    share = one_by_one_share(spec.module, spec.example_inputs)
    src_eval = outputs(spec.module, evalset.x)
    src_val = outputs(spec.module, val.x) if val is not None else None
    metric, src_score = score(src_eval, evalset.y, src_eval)
    rows, modules = [], {}
    for s in levels:
        t1 = time.perf_counter()
        if options.prune.epochs:
            module, epochs = finetune(spec.module, spec.example_inputs, train, val, s, block,
                                      options.prune.epochs, options.seed, progress, pairs)
            method = f"gradual, {options.prune.epochs} epoch(s)"
        else:
            module, epochs, method = oneshot(spec.module, s, block, pairs), (), "one-shot"
        seconds = round(time.perf_counter() - t1, 2)
        _, sc = score(outputs(module, evalset.x), evalset.y, src_eval)
        val_drop = None
        if val is not None:
            val_drop = score(src_val, val.y, src_val)[1] - score(outputs(module, val.x), val.y, src_val)[1]
        zeros = one_by_one_zeros(module)
        rows.append(PruneLevel(s, method, metric, round(sc, 4), round(src_score - sc, 4),
                               None if val_drop is None else round(val_drop, 4), round(zeros, 4),
                               round(predicted_speedup(share, zeros), 2), seconds, False, epochs))
        modules[s] = module
    budget = options.max_drop if options.max_drop is not None else SPARSE_MAX_DROP
    chosen, why = choose(rows, budget)
    rows = [dataclasses.replace(r, exported=r.sparsity == chosen) for r in rows]
    options = dataclasses.replace(options, sparse=dataclasses.replace(options.sparse, sparsity=chosen))
    pruned = dataclasses.replace(spec, module=modules[chosen])
    report = PruneReport(tuple(rows), chosen, why, budget, source, 0 if val is None else len(val),
                         SPEEDUP_BASIS, round(share, 4))
    t2 = time.perf_counter()
    with progress.task("capturing the pruned model with torch.export"):
        graph = capture(pruned.module, pruned.example_inputs)
    old = root.history
    cap = next((r for r in old if r.stage == "capture"), StageRecord("capture", True, 0.0))
    cap = dataclasses.replace(cap, seconds=round(time.perf_counter() - t2, 3))
    notes = _notes(report, options, len(pairs), train)
    notes += (_sparsify_keeps(graph, pruned, options),)
    rec = StageRecord("prune", True, round(time.perf_counter() - t0, 3), notes)
    graph = dataclasses.replace(graph, history=tuple(r for r in old if r.stage != "capture") + (rec, cap))
    return pruned, graph, options, report


def choose(rows: list[PruneLevel], budget: float) -> tuple[float, str]:
    """The sparsest level whose drop (validation split where there is one) is within budget."""
    if len(rows) == 1:
        return rows[0].sparsity, "the one level asked for"
    on_val = all(r.val_drop is not None for r in rows)
    drop = {r.sparsity: (r.val_drop if on_val else r.drop) for r in rows}
    where = ("on the validation split held back from the training data" if on_val else
             "on the held-out evaluation samples (no training data: the parity drop check is then not independent)")
    ok = [s for s, d in drop.items() if d <= budget]
    if ok:
        return max(ok), f"sparsest level with drop <= {budget:g} {where}"
    return min(drop), f"no level within drop {budget:g} {where}; exported the least sparse"


def _notes(report: PruneReport, options: ExportOptions, n_pairs: int, train: "DataSet | None") -> tuple[str, ...]:
    b = options.sparse.block.value
    lv = next(r for r in report.levels if r.exported)
    if options.prune.epochs:
        head = (f"gradual magnitude pruning in {b}x1 blocks while fine-tuning: {options.prune.epochs} epoch(s) on "
                f"{len(train) if train is not None else 0} samples ({report.train_data}), {report.val_samples} held back "
                f"for validation; cubic schedule (Zhu & Gupta 2017) over the first {PRUNE_SPAN:.0%} of the steps, "
                "masks ranked on the BN-folded weights and re-applied after every step",
                f"BatchNorm ({n_pairs} conv-BN pair(s)): batch statistics for the first {FREEZE:.0%} of the steps, "
                "then frozen (the QAT freeze recipe)")
    else:
        head = (f"one-shot magnitude pruning in {b}x1 blocks (no --prune-epochs), ranked on the BN-folded weights",)
    epochs = tuple(f"epoch {e.epoch}: sparsity {e.sparsity:.1%}, loss {e.loss:.4f}, train accuracy {e.train_accuracy:.4f}"
                   + ("" if e.val_accuracy is None else f", validation accuracy {e.val_accuracy:.4f}")
                   + f", {e.seconds:.1f} s" for e in lv.epochs)
    table = tuple(report.table().splitlines()) if len(report.levels) > 1 else ()
    return head + epochs + table + (
        f"exported at {report.chosen:.0%} ({report.why}): held-out {lv.metric} {lv.score:.4f}, drop {100 * lv.drop:.2f} "
        f"points, 1x1 zeros {lv.zeros_1x1:.1%}, predicted ARM speed-up {lv.predicted_speedup:.2f}x",)


def _sparsify_keeps(graph: "Graph", spec: "ModelSpec", options: ExportOptions) -> str:
    """Run fold-conv-bn and sparsify on the pruned program, as the sparse targets will: the pass
    must find the trained zeros and change nothing."""
    from edgeconv.context import Context
    from edgeconv.passes.manager import run_passes

    out = run_passes(graph, Context(options=options, model=spec), ("fold-conv-bn", "sparsify"))
    rec = out.history[-1]
    if rec.stage == "sparsify" and not rec.changed:
        return "sparsify pass check: it recomputes the same blocks on the folded weights (0 layers changed)"
    return (f"WARNING sparsify pass check: the pass re-pruned the fine-tuned weights differently "
            f"({'; '.join(rec.notes)}); the artifact is not the fine-tuned model")


# --- data -----------------------------------------------------------------------------------------

def _data(spec: "ModelSpec", options: ExportOptions) -> tuple["DataSet | None", "DataSet | None", str]:
    """(training part, validation part, source) of --train-data or the model's bundled training data."""
    from edgeconv.quant import qat

    ref = options.prune.train_data
    try:
        if ref:
            data = qat.load_train_data(ref, spec)
        elif spec.train_data is not None:
            data = spec.train_data()
            qat.check_train_data(data, spec)
        elif options.prune.epochs:
            raise UserError(f"--prune-epochs needs training data: {spec.name} bundles none; pass --train-data "
                            "package.module:function returning a labelled DataSet or (x, y) arrays")
        else:
            return None, None, ""
    except UserError as e:
        raise UserError(str(e).replace("QAT training", "pruning training").replace("QAT needs", "--prune-epochs needs")) from None
    n_val = int(len(data) * VAL_FRACTION) if len(data) >= 20 else 0
    order = np.random.default_rng(options.seed).permutation(len(data))
    pick = lambda idx: dataclasses.replace(data, x=data.x[np.sort(idx)], y=data.y[np.sort(idx)])  # noqa: E731
    return pick(order[n_val:]), (pick(order[:n_val]) if n_val else None), data.source


# --- pruning ------------------------------------------------------------------------------------

def bn_pairs(module: "torch.nn.Module", example_inputs: tuple) -> dict[str, str]:
    """conv name -> BN name for the conv-BN pairs Tune mode switches (the ones QAT folds)."""
    import copy

    from edgeconv.prepare.tune_mode import tune_mode

    probe = copy.deepcopy(module).eval()
    return {p.conv: p.bn for p in tune_mode(probe, example_inputs, slim_activations=False).switched}


def folded_weight(conv: Any, bn: Any) -> "torch.Tensor":
    """The weight the artifact carries: W·c, c = γ·rsqrt(σ² + eps) per output channel."""
    import torch

    w = conv.weight.detach()
    if bn is None:
        return w
    c = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        c = c * bn.weight.detach()
    return w * c.reshape([-1] + [1] * (w.dim() - 1))


def _pruner(model: "torch.nn.Module", schedule: Any, block: BlockSize, pairs: dict[str, str]) -> Any:
    """A `GradualPruner` whose masks rank the BN-folded weights (what the sparsify pass sees)."""
    import torch

    from edgeconv.passes.sparsify import GradualPruner, block_mask

    modules = dict(model.named_modules())
    bns = {conv: modules[bn] for conv, bn in pairs.items()}

    class FoldedPruner(GradualPruner):
        def masks_at(self, sparsity: float) -> None:
            self.current = sparsity
            with torch.no_grad():
                for name, m in self.targets:
                    w = m.weight.detach() if RAW_RANK else folded_weight(m, bns.get(name))
                    self.masks[name] = block_mask(w, sparsity, self.block.value)

        def step(self, step: int) -> float:
            if self.schedule.due(step):
                self.masks_at(self.schedule.sparsity(step))
            self.apply()
            return self.current

    return FoldedPruner(model, schedule, block)


def oneshot(module: "torch.nn.Module", sparsity: float, block: BlockSize, pairs: dict[str, str]) -> "torch.nn.Module":
    """A pruned copy, no training: what the sparsify pass alone gives."""
    import copy

    from edgeconv.passes.sparsify import PolynomialSchedule

    model = copy.deepcopy(module).eval()
    pruner = _pruner(model, PolynomialSchedule(final=sparsity, end_step=1), block, pairs)
    pruner.masks_at(sparsity)
    pruner.apply()
    return model


def finetune(module: "torch.nn.Module", example_inputs: tuple, data: "DataSet", val: "DataSet | None",
             sparsity: float, block: BlockSize, epochs: int, seed: int = 0, progress: "Progress | None" = None,
             pairs: dict[str, str] | None = None, lr: float = LR, batch: int = BATCH
             ) -> tuple["torch.nn.Module", tuple[PruneEpoch, ...]]:
    """A copy of `module` pruned to `sparsity` during `epochs` of fine-tuning on labelled `data`
    (cross-entropy, AdamW, cosine LR), in eval mode with plain conv and BN forwards again."""
    import copy
    import math

    import torch

    from edgeconv.context import Progress, one_thread
    from edgeconv.passes.sparsify import PolynomialSchedule

    if epochs < 1:
        raise UserError(f"--prune-epochs {epochs} must be at least 1 to fine-tune")
    progress = progress or Progress(False)
    pairs = bn_pairs(module, example_inputs) if pairs is None else pairs
    model = copy.deepcopy(module).eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    torch.manual_seed(seed)
    x, y = torch.from_numpy(np.ascontiguousarray(data.x)), torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    per_epoch = math.ceil(len(x) / batch)
    total = epochs * per_epoch
    schedule = PolynomialSchedule(final=sparsity, end_step=max(1, int(total * PRUNE_SPAN)),
                                  frequency=max(1, per_epoch // UPDATES_PER_EPOCH))
    pruner = _pruner(model, schedule, block, pairs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    freeze_bn_after = max(1, int(total * FREEZE))
    gen = torch.Generator().manual_seed(seed)
    records, step = [], 0
    # One thread: small convs at batch 32 gain nothing from a second one, and with other processes on
    # the cores OpenMP's spin-waiting made it 9-20x slower (demo at 80 %, 20 epochs, load average 4-7:
    # 9.1-9.7 s on one thread, 80-182 s on two; same weights, same accuracy).
    with one_thread(), progress.task(f"pruning to {sparsity:.0%} while fine-tuning, {epochs} epoch(s) on {len(x)} samples",
                       total=total) as task:
        for epoch in range(epochs):
            t0, losses, correct, seen = time.perf_counter(), [], 0, 0
            _train_mode(model, bns)
            for idx in torch.randperm(len(x), generator=gen).split(batch):
                if step == freeze_bn_after:
                    bns = []  # statistics frozen from here on
                pruner.step(step)
                if len(idx) >= 2:  # a batch of one has no batch statistics
                    out = model(x[idx])
                    loss = torch.nn.functional.cross_entropy(out, y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    pruner.apply()
                    losses.append(float(loss.detach()))
                    correct += int((out.argmax(1) == y[idx]).sum())
                    seen += len(idx)
                lr_sched.step()
                step += 1
                task.advance()
            val_acc = _val_accuracy(model, val)
            records.append(PruneEpoch(epoch + 1, round(pruner.current, 4), round(float(np.mean(losses)) if losses else float("nan"), 5),
                                      round(correct / seen, 4) if seen else 0.0, val_acc,
                                      round(time.perf_counter() - t0, 2)))
    if pruner.current != sparsity:  # fewer steps than the schedule's end: land on the target anyway
        pruner.masks_at(sparsity)
        pruner.apply()
    return model.eval(), tuple(records)


def _train_mode(model: "torch.nn.Module", batch_stats: list[Any]) -> None:
    """Dropout and the like train; BatchNorm normalizes with batch statistics (and updates its
    running ones) only while `batch_stats` lists it, then it is frozen."""
    import torch

    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(m is b for b in batch_stats):
            m.eval()


def _val_accuracy(model: "torch.nn.Module", val: "DataSet | None") -> float | None:
    if val is None:
        return None
    model.eval()
    return round(float((outputs(model, val.x).argmax(1) == val.y).mean()), 4)


# --- measures -----------------------------------------------------------------------------------

def outputs(module: "torch.nn.Module", x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Batches where the module takes them; a captured program (a .pt2 model) may be tied to its
    example's batch of 1, and then runs one sample at a time (`quant.program.forward`)."""
    from edgeconv.quant.program import forward

    from edgeconv.context import one_thread

    with one_thread():  # small batches of a small net: see finetune
        return forward(module, x, batch)


def score(out: np.ndarray, labels: np.ndarray | None, source: np.ndarray) -> tuple[str, float]:
    """The task metric, as the sparse targets' drop check measures it (parity.source_drop)."""
    from edgeconv.parity import accuracy, cosine, top1

    acc = accuracy(out, labels)
    if acc is not None:
        return "accuracy", acc
    if top1(out) is not None:
        return "top-1 agreement", float((top1(out) == top1(source)).mean())
    return "cosine", float(cosine(out, source))


def one_by_one_zeros(module: "torch.nn.Module") -> float:
    from torch import nn

    from edgeconv.passes.sparsify import zero_fraction

    ws = [m.weight.detach() for m in module.modules()
          if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1]
    return zero_fraction(ws)


def one_by_one_share(module: "torch.nn.Module", example_inputs: tuple) -> float:
    """Share of the conv and linear multiply-adds that are in 1x1 convs (groups 1)."""
    import torch
    from torch import nn

    macs = {"1x1": 0, "all": 0}

    def hook(m: Any, _inp: Any, out: Any) -> None:
        if isinstance(m, nn.Conv2d):
            n = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            if m.kernel_size == (1, 1) and m.groups == 1:
                macs["1x1"] += n
        else:
            n = out.numel() * m.in_features
        macs["all"] += n

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            module.eval()(*example_inputs)
    finally:
        for h in handles:
            h.remove()
    return macs["1x1"] / macs["all"] if macs["all"] else 0.0


def predicted_speedup(share: float, zeros: float) -> float:
    """Whole-model speed-up of XNNPACK's sparse path over dense on ARM — PREDICTED (SPEEDUP_BASIS)."""
    if zeros <= XNNPACK_MIN_ZEROS or share <= 0:
        return 1.0
    (s0, v0), (s1, v1) = SPEEDUP_ANCHORS
    s = min(zeros, s1)  # no published figure beyond 95 %: held there
    ref = v0 + (v1 - v0) * (s - s0) / (s1 - s0)
    ratio = (1 / ref - (1 - REF_ONE_BY_ONE_SHARE)) / REF_ONE_BY_ONE_SHARE  # 1x1 time sparse / dense
    return max(1.0, 1 / ((1 - share) + share * ratio))
