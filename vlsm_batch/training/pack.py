"""Train a pack: several trials of one cell in one process, in lock-step on the same batches.

Why: a trial alone pays the imports, the model build, the weight and data load, and (for the text-side strategies)
a frozen image forward that every trial of its cell computes identically. Here they are paid once per pack:

* one frozen model object (``models.packed.member_model``), one decoded dataset and one augmentation per batch
  (members share the seed, so the data stream is identical);
* CoOp / CoCoOp / zero-shot (no visual prompts): the prompt-free image forward runs once per batch and every member
  reads it (``models.packed.shared_image``); visual strategies on CLIPSeg run one fused forward
  (``models.packed.fused_logits``), K sequences stacked, each with its own prompts;
* one backward of the summed member losses (the members' graphs share no trainable tensor, so each gradient is the
  member's own), then each member's own AdamW step, plateau scheduler, early stopping, checkpoints and history.

Exactness: the loop reproduces the Lightning loop of ``entry.train_trial`` (per-epoch seeds from (seed, epoch),
validation after every epoch, the plateau stepped before the epoch's checkpoint, Lightning's EarlyStopping and
ModelCheckpoint rules, min_epochs), and each member's learner runs under its own random stream (a member's dropout
draws what it would draw alone). A packed trial ends with the metrics and weights of the same trial trained alone,
within float round-off (``tests/test_pack_exact.py``).

Each member is on its own: a member whose loss is not finite, or whose own computation raises, fails alone; one
stopped early, pruned or cancelled (``events.stop_reason``) leaves the pack and is evaluated at once. Out of device
memory, the pack rolls back to the start of the epoch and splits in two; with too little free memory for all
members at the start (a probe measures what one member adds), it trains them in smaller groups, one after another.

Checkpoints: ``last.ckpt`` / ``best.ckpt`` hold the member's trainable weights under the same ``state_dict`` keys as
Lightning's, plus ``pack_state`` (optimizer, scheduler, early stopping, best score). A trial resumes from either
format: a pack reads Lightning checkpoints, and ``entry.train_trial`` hands a pack checkpoint to this module.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from ..layout import TrialPaths, atomic_write_json
from ..metrics import METRIC_KEYS, OBJECTIVES, VAL_DICE, VAL_IOU, VAL_LOSS
from ..metrics.segmentation import dice_iou_from_logits, dice_iou_original, mean_std
from ..models import packed
from ..strategies import get_strategy
from .checkpoint_io import LAST, checkpoint_epochs, checkpoint_problem, read_checkpoint, write_checkpoint
from .data import Batch, PromptTokens, stream_seed
from .loss import dice_ce_loss

if TYPE_CHECKING:
    from ..strategies.impl import Prompts

PACK_FORMAT = 1
BEST = "best.ckpt"
POLL_S = 2.0  # how often a running pack asks whether a member was cancelled
MEMORY_MARGIN = 0.15  # share of the free memory a pack leaves unused (the rule `plan` predicts with, jobs.estimate)
FUSE_ENV = "VLSM_PACK_FUSE"  # "1": fused visual forward on any device, "0": member by member; unset: by device


def fuse_visual(device: torch.device) -> bool:
    """Whether visual-prompt members run one fused forward (K sequences stacked) or one member after another.

    Fusing makes each GEMM K times larger, which is what a GPU needs; on a CPU the GEMMs of one member are
    already large enough and the K-fold activations fall out of cache: benchmarks/pack.py measured the fused VPT
    step at 0.83x of solo steps for K = 4 (2 cores, full-size CLIPSeg), so on CPU the members step one at a time
    (same result as alone, bit for bit) and a pack saves start-up, data and model loads only.
    """
    forced = os.environ.get(FUSE_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return device.type == "cuda"


@dataclass
class MemberEnd:
    """How one member of a pack ended (the jobs layer records it through the trial store)."""

    kind: str  # "done" | "failed" | "cancelled" | "pruned"
    metrics: dict[str, Any] | None = None
    error: BaseException | None = None
    message: str = ""
    pruned_epoch: int | None = None


class PackEvents(Protocol):
    """What the pack asks of its caller: whether a member was asked to stop, and where to report each end."""

    def stop_reason(self, trial_root: Path) -> str | None: ...

    def ended(self, trial_root: Path, end: MemberEnd) -> None: ...


class CollectEnds:
    """PackEvents that only collect the ends (direct use, tests, ``python -m vlsm_batch.training.pack``)."""

    def __init__(self) -> None:
        self.ends: dict[str, MemberEnd] = {}

    def stop_reason(self, trial_root: Path) -> str | None:
        return None

    def ended(self, trial_root: Path, end: MemberEnd) -> None:
        self.ends[Path(trial_root).name] = end


class PackConfigError(ValueError):
    """The trials given to one pack cannot share it (different cell, seed or train settings)."""


# -- Lightning's rules, kept per member -----------------------------------------------------------------------------
@dataclass
class EarlyStop:
    """``pytorch_lightning.callbacks.EarlyStopping`` as the solo trial configures it (checked at each epoch end,
    float32 comparisons, a non-finite value stops); ``flag`` is the trainer's sticky ``should_stop``."""

    monitor: str
    mode: str
    patience: int
    min_delta: float
    wait_count: int = 0
    stopped_epoch: int = 0
    best: float | None = None
    flag: bool = False

    def update(self, value: float | None, epoch: int) -> None:
        if value is None:
            return
        current = torch.tensor(value, dtype=torch.float32)
        best = torch.tensor(
            self.best if self.best is not None else (math.inf if self.mode == "min" else -math.inf),
            dtype=torch.float32,
        )
        stop = False
        if not torch.isfinite(current):
            stop = True
        elif self._improves(current, best):
            self.best, self.wait_count = float(current), 0
        else:
            self.wait_count += 1
            stop = self.wait_count >= self.patience
        if stop:
            self.flag, self.stopped_epoch = True, epoch

    def _improves(self, current: Tensor, best: Tensor) -> bool:
        if self.mode == "min":
            return bool(torch.lt(current + self.min_delta, best))
        return bool(torch.gt(current - self.min_delta, best))

    def state(self) -> dict[str, Any]:
        keys = ("wait_count", "stopped_epoch", "best", "flag")
        return {k: getattr(self, k) for k in keys}


def _better(current: float, best: float | None, mode: str) -> bool:
    """``ModelCheckpoint``'s top-1 rule: the first value always, then strictly better (NaN counts as worst)."""
    if best is None:
        return True
    cur = current if math.isfinite(current) else (math.inf if mode == "min" else -math.inf)
    a, b = torch.tensor(cur, dtype=torch.float32), torch.tensor(best, dtype=torch.float32)
    return bool(torch.lt(a, b) if mode == "min" else torch.gt(a, b))


# -- one member -----------------------------------------------------------------------------------------------------
@dataclass
class Member:
    """One trial of the pack: its model (sharing the frozen weights), optimizer and per-trial bookkeeping."""

    paths: TrialPaths
    config: dict[str, Any]
    model: Any
    optimizer: torch.optim.Optimizer
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None  # None for in-memory members (no validation)
    stopper: EarlyStop | None
    tokens: PromptTokens | None  # its own token table when its num_context differs from the pack's data
    scaler: Any = None
    report: Callable[[int, float], bool] | None = None  # Optuna pruning hook
    loggers: list[Any] = field(default_factory=list)
    epoch: int = 0  # epochs finished
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None
    rng: dict[str, Tensor] = field(default_factory=dict)
    ran: set[int] = field(default_factory=set)  # epochs (1-based) run by this attempt
    pruned_epoch: int | None = None
    ended: bool = False
    started: float = field(default_factory=time.perf_counter)
    # per epoch
    loss_sum: float = 0.0
    images: int = 0

    @property
    def trial_id(self) -> str:
        return str(self.config.get("trial_id", self.paths.root.name))

    def owned_keys(self) -> set[str]:
        """``state_dict`` keys of what this member owns (learner, head): the frozen model is the pack's."""
        keys = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        for part in ("learner", "head"):
            module = getattr(self.model, part, None)
            if module is not None:
                keys |= {f"model.{part}.{n}" for n, _ in module.named_buffers()}
        return keys


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.random.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@contextmanager
def _own_stream(member: Member, device: torch.device) -> Iterator[None]:
    """Run a member's learner under its own random stream (what it would draw alone), then keep where it got to."""
    outer = _rng_state(device)
    _set_rng_state(member.rng, device)
    try:
        yield
    finally:
        member.rng = _rng_state(device)
        _set_rng_state(outer, device)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class _Rollback(Exception):
    """Out of memory inside an epoch: the group is restored to the epoch start and split."""


# -- the pack -------------------------------------------------------------------------------------------------------
class Pack:
    """Everything the members share: data, device, precision, the frozen model, and the training loop."""

    def __init__(self, roots: Sequence[Path], events: PackEvents, model_factory: Any = None):
        from .entry import _default_factory, dataset_root, resolve_precision, trial_data

        self.events = events
        self.paths = [TrialPaths(Path(r).absolute()) for r in roots]
        configs = [json.loads(p.config.read_text(encoding="utf-8")) for p in self.paths]
        check_packable(configs)
        self.started = time.perf_counter()
        first = configs[0]
        self.seed = int(first["seed"])
        self.trains = get_strategy(first["strategy"]).trains
        train = first["train"]
        if not self.trains:
            train = {"batch_size": 32, "precision": "32", "max_epochs": 1, **train}
        self.train = train
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.precision: str = resolve_precision(str(train.get("precision", "32")), self.cuda)
        self.max_epochs, self.min_epochs = int(train["max_epochs"]), int(train.get("min_epochs", 1))
        pl.seed_everything(self.seed, workers=True, verbose=False)
        root, prompt_key = dataset_root(first)
        factory = model_factory or _default_factory()
        base = factory(first["model"], first["strategy"], first["params"], first.get("weights"))
        self.data = trial_data(first, base, root, prompt_key, int(train["batch_size"]), self.cuda)
        self.members: list[Member] = []
        for i, (paths, config) in enumerate(zip(self.paths, configs, strict=True)):
            pl.seed_everything(self.seed, workers=True, verbose=False)  # each learner starts as it would alone
            model = base if i == 0 else packed.member_model(base, config["strategy"], config["params"])
            self.members.append(self._member(paths, config, model, base))
        check_disjoint([m.model for m in self.members])
        self.frozen_model = base

    @classmethod
    def in_memory(cls, models: Sequence[Any], lrs: Sequence[float], precision: str = "32") -> Pack:
        """A pack of already-built members (sharing one frozen model) with no study behind it: what
        ``benchmarks/pack.py`` times with :meth:`train_step`. Nothing is written; ends are collected."""
        pack = cls.__new__(cls)
        pack.events, pack.trains, pack.seed = CollectEnds(), True, 0
        pack.cuda = next(models[0].parameters()).is_cuda
        pack.device = next(models[0].parameters()).device
        pack.precision = precision
        pack.members = []
        for i, (model, lr) in enumerate(zip(models, lrs, strict=True)):
            from .optim import make_adamw

            groups = model.param_groups(0.0)
            optimizer = make_adamw(groups, lr, 0.0, pack.device.type)
            member = Member(
                TrialPaths(Path(f"in-memory-{i}")), {"trial_id": f"m{i}"}, model, optimizer, None, None, None
            )
            member.rng = _rng_state(pack.device)
            pack.members.append(member)
        check_disjoint(models)
        return pack

    def train_step(self, batch: Batch) -> None:
        """One lock-step training step of every live member on ``batch`` (already on the device, normalised)."""
        self._step([m for m in self.members if not m.ended], batch)

    # -- building -----------------------------------------------------------------------------------------------
    def _member(self, paths: TrialPaths, config: dict[str, Any], model: Any, base: Any) -> Member:
        from .optim import make_adamw
        from .pruning import report_hook

        model.to(self.device).train()
        params = config["params"]
        groups = model.param_groups(float(params.get("weight_decay", 0.0)))
        lr = float(params.get("lr", 0.0))
        optimizer = make_adamw(groups, lr, float(params.get("weight_decay", 0.0)), self.device.type) if groups else None
        plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, patience=5)
            if optimizer is not None
            else None
        )
        stopping = self.train.get("early_stopping") or {}
        stopper = (
            EarlyStop(
                monitor=stopping["monitor"],
                mode=OBJECTIVES.get(stopping["monitor"], "min"),
                patience=int(stopping["patience"]),
                min_delta=float(stopping["min_delta"]),
            )
            if self.trains and stopping
            else None
        )
        tokens = None
        if model.num_context != base.num_context:  # tokenised with room for its own prompt length
            tokens = PromptTokens(model.tokenize, [p for s in self.data.splits.values() for o in s.prompts for p in o])
        scaler = torch.amp.GradScaler("cuda") if self.precision in ("16-mixed", "16") else None
        member = Member(paths, config, model, optimizer, plateau, stopper, tokens, scaler)  # type: ignore[arg-type]
        member.report = report_hook(paths.root, config) if self.trains else None
        if self.trains:
            from .entry import trial_loggers

            member.loggers = trial_loggers(paths, config)
            self._resume(member)
        return member

    def _resume(self, m: Member) -> None:
        from .entry import _resume_point

        resume = _resume_point(m.paths)
        if resume.path is None:
            return
        ckpt = read_checkpoint(resume.path)
        print(f"{m.trial_id}: resuming from {resume.path}", flush=True)
        m.model.load_state_dict({k[len("model.") :]: v for k, v in ckpt["state_dict"].items()}, strict=False)
        m.epoch, m.global_step = int(ckpt["epoch"]) + 1, int(ckpt.get("global_step", 0))
        state = ckpt.get("pack_state")
        if state is not None:
            optimizer, plateau = state["optimizer"], state["plateau"]
            if m.stopper is not None and state.get("early_stopping"):
                for k, v in state["early_stopping"].items():
                    setattr(m.stopper, k, v)
            m.best_score, m.best_epoch = state.get("best_score"), state.get("best_epoch")
            if m.scaler is not None and state.get("scaler"):
                m.scaler.load_state_dict(state["scaler"])
        else:  # a Lightning checkpoint of a trial that trained alone before
            optimizer = (ckpt.get("optimizer_states") or [None])[0]
            plateau = ckpt.get("plateau")
            for key, cb in (ckpt.get("callbacks") or {}).items():
                if key.startswith("EarlyStopping") and m.stopper is not None:
                    m.stopper.wait_count, m.stopper.stopped_epoch = int(cb["wait_count"]), int(cb["stopped_epoch"])
                    m.stopper.best = float(cb["best_score"])
                    m.stopper.flag = m.stopper.stopped_epoch > 0
                elif "'monitor': None" not in key and cb.get("best_model_score") is not None:
                    m.best_score = float(cb["best_model_score"])
            best = m.paths.checkpoints / BEST
            m.best_epoch = checkpoint_epochs(best) if best.is_file() else None
        if optimizer is not None and m.optimizer is not None:
            m.optimizer.load_state_dict(optimizer)
        if plateau is not None and m.plateau is not None:
            m.plateau.load_state_dict(plateau)

    # -- running ------------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Train (or, for zero-shot, evaluate) every member; each one's end goes to ``events.ended`` at once."""
        active = [m for m in self.members if not self._finished_at_start(m)]
        if not self.trains:
            self._evaluate(active)
            return
        for group in self._memory_groups(active):
            self._train_group(group)

    def _finished_at_start(self, m: Member) -> bool:
        """A resumed member whose last attempt had already reached its end (max epochs, or stopped early)."""
        if not self.trains:
            return False
        stopped = m.stopper is not None and m.stopper.flag and m.epoch >= self.min_epochs
        if m.epoch >= self.max_epochs or stopped:
            self._evaluate([m])
            return True
        return False

    def _memory_groups(self, members: list[Member]) -> list[list[Member]]:
        """All members at once when they fit the free memory (with :data:`MEMORY_MARGIN` left), else groups."""
        if len(members) <= 1:
            return [members] if members else []
        size = self._fitting(members)
        if size < len(members):
            print(f"pack: {len(members)} members do not fit the free memory; training {size} at a time", flush=True)
        return [members[i : i + size] for i in range(0, len(members), size)]

    def _fitting(self, members: list[Member]) -> int:
        """Members that fit at once: the probe's per-member bytes against the free memory measured now (the shared
        frozen model and data are already loaded, so they count as used), with :data:`MEMORY_MARGIN` left free."""
        per_member = probe_member_bytes(self, members[0])
        free = free_memory_bytes(self.device)
        if per_member <= 0 or free is None:
            return len(members)
        return max(1, min(len(members), int(free * (1 - MEMORY_MARGIN) // per_member)))

    def _train_group(self, group: list[Member]) -> None:
        """Epochs in lock-step until every member of ``group`` has ended; out of memory: roll back and split."""
        while True:
            active = [m for m in group if not m.ended]
            if not active:
                return
            epoch = min(m.epoch for m in active)
            lagging = [m for m in active if m.epoch == epoch]  # after a split, members may stand at other epochs
            snapshot = [_snapshot(m) for m in lagging]
            try:
                self._epoch(lagging, epoch)
            except _Rollback:
                for m, s in zip(lagging, snapshot, strict=True):
                    _restore(m, s)
                if self.cuda:
                    torch.cuda.empty_cache()
                if len(lagging) == 1:
                    self._fail(lagging[0], MemoryError("out of memory with this trial alone in its pack"))
                    continue
                half = len(lagging) // 2
                print(f"pack: out of memory at epoch {epoch + 1}; splitting {len(lagging)} members in two", flush=True)
                self._train_group(lagging[:half])
                self._train_group(lagging[half:])

    def _autocast(self) -> Any:
        if self.precision in ("bf16-mixed", "bf16"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        if self.precision in ("16-mixed", "16"):
            return torch.autocast(self.device.type, dtype=torch.float16)
        return nullcontext()

    def _epoch(self, members: list[Member], epoch: int) -> None:
        """One epoch of ``members`` in lock-step: training steps, validation, each member's epoch end."""
        t0 = time.perf_counter()
        torch.manual_seed(stream_seed(self.seed, epoch, "model"))
        for m in members:
            m.rng, m.loss_sum, m.images = _rng_state(self.device), 0.0, 0
        augment = torch.Generator(self.device).manual_seed(stream_seed(self.seed, epoch, "augment"))
        last_poll = time.monotonic()
        try:
            for batch in self.data.train_loader(self.seed, epoch=lambda: epoch):
                live = [m for m in members if not m.ended]
                if not live:
                    return
                batch = self.data.transform(_to(batch, self.device), training=True, generator=augment)
                self._step(live, batch)
                if time.monotonic() - last_poll >= POLL_S:
                    self._poll(live)
                    last_poll = time.monotonic()
            if self.cuda:
                torch.cuda.synchronize(self.device)
            train_s = time.perf_counter() - t0
            self._poll([m for m in members if not m.ended])
            live = [m for m in members if not m.ended]
            if not live:
                return
            val = self._validate(live)
        except Exception as exc:
            if _is_oom(exc):
                raise _Rollback from exc
            raise
        epoch_s = time.perf_counter() - t0
        stopping = [m for m in live if self._end_epoch(m, epoch, val[m.trial_id], train_s, epoch_s)]
        self._evaluate(stopping)

    def _step(self, members: list[Member], batch: Batch) -> None:
        """One training step of every member on ``batch``: forwards (shared or fused), one backward, own steps.
        Visual strategies where fusing does not pay (:func:`fuse_visual`) step member by member instead."""
        if not fuse_visual(self.device) and not all(packed.frozen_image_path(m.model) for m in members):
            for m in members:  # forward and backward one member at a time: one member's activations live at once
                with self._autocast():
                    losses = self._losses(self._own_forward([m], batch, train=True), batch)
                self._train_on(losses, batch)
            return
        with self._autocast():
            losses = self._losses(self._forward(members, batch, train=True), batch)
        self._train_on(losses, batch)

    def _losses(self, forwards: list[tuple[Member, Tensor]], batch: Batch) -> list[tuple[Member, Tensor]]:
        """Each member's finite training loss (called under autocast); a member whose loss is not finite fails alone."""
        losses: list[tuple[Member, Tensor]] = []
        for m, logits in forwards:
            loss = dice_ce_loss(logits, batch["mask"])
            if not torch.isfinite(loss.detach()):
                self._fail(m, FloatingPointError(f"train/loss is {float(loss)} at epoch {m.epoch + 1}"), "diverged")
                continue
            losses.append((m, loss))
        return losses

    def _train_on(self, losses: list[tuple[Member, Tensor]], batch: Batch) -> None:
        """One backward of the summed losses (the graphs share no trainable tensor), then each member's own step."""
        if not losses:
            return
        total = sum((m.scaler.scale(loss) if m.scaler is not None else loss) for m, loss in losses)
        total.backward()  # type: ignore[union-attr]
        n = len(batch["index"])
        for m, loss in losses:
            if m.scaler is not None:
                m.scaler.step(m.optimizer)
                m.scaler.update()
            else:
                m.optimizer.step()
            m.optimizer.zero_grad(set_to_none=True)
            m.global_step += 1
            m.loss_sum += float(loss.detach()) * n
            m.images += n

    def _forward(self, members: list[Member], batch: Batch, train: bool) -> list[tuple[Member, Tensor]]:
        """Each member's logits for ``batch``; a member whose own part raises fails alone (not out-of-memory)."""
        pixels = batch["pixel_values"]
        out: list[tuple[Member, Tensor]] = []
        base = members[0].model
        if all(packed.frozen_image_path(m.model) for m in members):
            shared, features = packed.shared_image(base, pixels)
            for m in members:
                ids, mask = self._tokens(m, batch)
                try:
                    with _own_stream(m, self.device) if train else nullcontext():
                        prompts = packed.member_prompts(m.model, features)
                    out.append((m, packed.logits_from_shared(m.model, shared, prompts, pixels, ids, mask)))
                except Exception as exc:
                    self._member_error(m, exc)
            return out
        fusable = (
            fuse_visual(self.device)
            and packed.can_fuse([m.model for m in members])
            and all(m.tokens is None for m in members)
        )
        if fusable:
            fused_prompts: list[Prompts] = []
            ok: list[Member] = []
            for m in members:
                try:
                    with _own_stream(m, self.device) if train else nullcontext():
                        fused_prompts.append(packed.member_prompts(m.model))
                    ok.append(m)
                except Exception as exc:
                    self._member_error(m, exc)
            if not ok:
                return out
            ids, mask = batch["input_ids"], batch["attention_mask"]
            logits = packed.fused_logits([m.model for m in ok], fused_prompts, pixels, ids, mask)
            return list(zip(ok, logits, strict=True))
        return self._own_forward(members, batch, train)  # nothing to share (e.g. visual prompts of other lengths)

    def _own_forward(self, members: list[Member], batch: Batch, train: bool) -> list[tuple[Member, Tensor]]:
        """Each member's own full forward (what it computes alone)."""
        out: list[tuple[Member, Tensor]] = []
        for m in members:
            ids, mask = self._tokens(m, batch)
            try:
                with _own_stream(m, self.device) if train else nullcontext():
                    out.append((m, m.model(batch["pixel_values"], ids, mask)))
            except Exception as exc:
                self._member_error(m, exc)
        return out

    def _tokens(self, m: Member, batch: Batch) -> tuple[Tensor, Tensor]:
        if m.tokens is None:
            return batch["input_ids"], batch["attention_mask"]
        ids, mask = m.tokens(batch["prompts"])
        return ids.to(self.device), mask.to(self.device)

    def _member_error(self, m: Member, exc: Exception) -> None:
        if _is_oom(exc):
            raise exc
        self._fail(m, exc)

    def _poll(self, members: list[Member]) -> None:
        for m in members:
            reason = self.events.stop_reason(m.paths.root)
            if reason and not m.ended:
                self._end(m, MemberEnd("cancelled", message=reason), status="cancelled")

    def _validate(self, members: list[Member]) -> dict[str, dict[str, float]]:
        """Validation of every member (eval mode, no gradient): val/loss (batch-weighted mean), per-image Dice/IoU."""
        sums = {m.trial_id: torch.zeros((), dtype=torch.float32, device=self.device) for m in members}
        dice: dict[str, list[Tensor]] = {m.trial_id: [] for m in members}
        iou: dict[str, list[Tensor]] = {m.trial_id: [] for m in members}
        count = 0
        for m in members:
            m.model.eval()
        try:
            with torch.inference_mode(), self._autocast():
                for batch in self.data.eval_loader("val"):
                    batch = self.data.transform(_to(batch, self.device), training=False)
                    n = len(batch["index"])
                    count += n
                    for m, logits in self._forward([m for m in members if not m.ended], batch, train=False):
                        sums[m.trial_id] += dice_ce_loss(logits, batch["mask"]).float() * n
                        d, i = dice_iou_from_logits(logits, batch["mask"])
                        dice[m.trial_id].append(d)
                        iou[m.trial_id].append(i)
        finally:
            for m in members:
                m.model.train()
        out = {}
        for m in members:
            tid = m.trial_id
            out[tid] = {
                VAL_LOSS: float(sums[tid] / count) if count else math.nan,
                VAL_DICE: float(torch.cat(dice[tid]).mean()) if dice[tid] else math.nan,
                VAL_IOU: float(torch.cat(iou[tid]).mean()) if iou[tid] else math.nan,
            }
        return out

    def _end_epoch(self, m: Member, epoch: int, val: dict[str, float], train_s: float, epoch_s: float) -> bool:
        """History row, logs, pruning, scheduler, early stopping, best and last checkpoints; True when it stops."""
        from .entry import read_history, write_history

        if m.ended:
            return False
        lr = m.optimizer.param_groups[0]["lr"] if m.optimizer is not None else math.nan
        row = {
            "epoch": epoch + 1,
            "train/loss": m.loss_sum / m.images if m.images else math.nan,
            **{k: val[k] for k in (VAL_LOSS, VAL_DICE, VAL_IOU)},
            "lr": lr,
            "train_images": m.images,
            "train_time_s": round(train_s, 4),
            "epoch_time_s": round(epoch_s, 4),
        }
        rows = [r for r in read_history(m.paths.history) if int(r["epoch"]) < epoch + 1]
        write_history(m.paths.history, [*rows, row])
        m.ran.add(epoch + 1)
        for logger in m.loggers:
            logger.log_metrics({k: v for k, v in row.items() if k != "epoch"} | {"epoch": epoch}, step=m.global_step)
        print(
            f"{m.trial_id} epoch {epoch + 1}/{self.max_epochs} train/loss {row['train/loss']:.4f} "
            f"val/loss {val[VAL_LOSS]:.4f} val/dice {val[VAL_DICE]:.4f} val/iou {val[VAL_IOU]:.4f} lr {lr:.2g} "
            f"({epoch_s:.1f} s, pack of {len(self.members)})",
            flush=True,
        )
        objective = m.config["objective"]
        pruned = False
        if m.report is not None:
            value = val.get(objective["metric"])
            pruned = value is not None and bool(m.report(epoch + 1, float(value)))
        if m.plateau is not None and not math.isnan(val[VAL_LOSS]):
            m.plateau.step(val[VAL_LOSS])
        if m.stopper is not None:
            m.stopper.update(val.get(m.stopper.monitor), epoch)
        m.epoch = epoch + 1
        score = val.get(objective["metric"], math.nan)
        better = _better(score, m.best_score, objective["mode"])
        if better:
            m.best_score = score if math.isfinite(score) else None
            m.best_epoch = epoch + 1
        checkpoint = self._checkpoint(m, epoch)
        m.paths.checkpoints.mkdir(parents=True, exist_ok=True)
        if better:  # best before last, as Lightning's callbacks run: last.ckpt carries the updated best
            write_checkpoint(checkpoint, m.paths.checkpoints / BEST)
        write_checkpoint(checkpoint, m.paths.checkpoints / LAST)
        if pruned:
            m.pruned_epoch = epoch + 1
            return True
        stop_early = m.stopper is not None and m.stopper.flag and m.epoch >= self.min_epochs
        return stop_early or m.epoch >= self.max_epochs

    def _checkpoint(self, m: Member, epoch: int) -> dict[str, Any]:
        """The member's state at the end of ``epoch``: its own weights (Lightning's ``model.`` keys, buffers
        included) and everything a resumed attempt needs in ``pack_state``."""
        keep = m.owned_keys() | {f"model.{n}" for n, _ in m.model.named_buffers()}
        state = {k: v.detach().cpu().clone() for k, v in m.model.state_dict(prefix="model.").items() if k in keep}
        return {
            "epoch": epoch,
            "global_step": m.global_step,
            "state_dict": state,
            "loops": {},  # (what a resume check looks for) the pack keeps its progress in pack_state
            "callbacks": {},
            "pack_state": {
                "format": PACK_FORMAT,
                "optimizer": m.optimizer.state_dict() if m.optimizer is not None else None,
                "plateau": m.plateau.state_dict() if m.plateau is not None else None,
                "early_stopping": m.stopper.state() if m.stopper is not None else None,
                "best_score": m.best_score,
                "best_epoch": m.best_epoch,
                "scaler": m.scaler.state_dict() if m.scaler is not None else None,
            },
        }

    # -- ending -------------------------------------------------------------------------------------------------
    def _evaluate(self, members: list[Member]) -> None:
        """Val and test of each member's best checkpoint at the masks' original resolution; metrics.json; ended."""
        members = [m for m in members if not m.ended]
        if not members:
            return
        for m in members:
            self._load_best(m)
            m.model.eval()
        results: dict[str, dict[str, dict[str, list[Tensor]]]] = {m.trial_id: {} for m in members}
        try:
            for split in ("val", "test"):
                for m in members:
                    results[m.trial_id][split] = {"loss": [], "dice": [], "iou": []}
                with torch.inference_mode(), self._autocast():
                    for batch in self.data.eval_loader(split, with_original=True):
                        batch = self.data.transform(_to(batch, self.device), training=False)
                        for m, logits in self._forward([m for m in members if not m.ended], batch, train=False):
                            r = results[m.trial_id][split]
                            r["loss"].append(dice_ce_loss(logits, batch["mask"], reduction="none").cpu())
                            d, i = dice_iou_original(logits, batch["original_masks"])
                            r["dice"].append(d.cpu())
                            r["iou"].append(i.cpu())
        except Exception as exc:
            if _is_oom(exc) and len(members) > 1:
                half = len(members) // 2
                self._evaluate(members[:half])
                self._evaluate(members[half:])
                return
            raise
        for m in members:
            if m.ended:
                continue
            try:
                metrics = self._metrics(m, results[m.trial_id])
                atomic_write_json(m.paths.metrics, metrics)
            except Exception as exc:
                self._fail(m, exc)
                continue
            if m.pruned_epoch is not None:
                self._end(m, MemberEnd("pruned", metrics=metrics, pruned_epoch=m.pruned_epoch), status="success")
            else:
                self._end(m, MemberEnd("done", metrics=metrics), status="success")

    def _load_best(self, m: Member) -> None:
        if not self.trains:
            return
        folder = m.paths.checkpoints
        best, last = folder / BEST, folder / LAST
        path = best if best.is_file() and checkpoint_problem(best, ("state_dict", "epoch")) is None else last
        if path != best:
            print(f"warning: {m.trial_id}: no usable best checkpoint; evaluating {path}", flush=True)
        if not path.is_file():
            return
        state = read_checkpoint(path)["state_dict"]
        owned = m.owned_keys()
        m.model.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k in owned}, strict=False)
        m.best_epoch = checkpoint_epochs(path)

    def _metrics(self, m: Member, results: dict[str, dict[str, list[Tensor]]]) -> dict[str, Any]:
        from .entry import peak_memory_mb, read_history

        arrays = {s: {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in r.items()} for s, r in results.items()}
        val, test = arrays["val"], arrays["test"]
        history = read_history(m.paths.history)
        earlier_s = sum(float(r["epoch_time_s"]) for r in history if int(r["epoch"]) not in m.ran)
        train_s = sum(float(r["train_time_s"]) for r in history)
        metrics: dict[str, Any] = {
            "trial_id": m.trial_id,
            "objective": m.config["objective"],
            "val/loss": float(val["loss"].mean()) if len(val["loss"]) else None,
            "epochs": m.epoch if self.trains else 0,
            "best_epoch": m.best_epoch if self.trains else None,
            "wall_time_s": round(time.perf_counter() - self.started + earlier_s, 3),
            "trainable_params": int(m.model.trainable_parameter_count()),
            "total_params": int(m.model.total_parameter_count()),
            "train_images_per_s": sum(int(r["train_images"]) for r in history) / train_s if train_s else None,
            "peak_memory_mb": peak_memory_mb(self.device),
            "n_val": len(val["dice"]),
            "n_test": len(test["dice"]),
            "pack_size": len(self.members),
        }
        for split, out in (("val", val), ("test", test)):
            for name in ("dice", "iou"):
                metrics[f"{split}/{name}"], metrics[f"{split}/{name}_std"] = mean_std(out[name])
        metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        missing = [k for k in METRIC_KEYS if k not in metrics]
        if missing:
            raise RuntimeError(f"metrics.json would lack {missing}")
        return metrics

    def _fail(self, m: Member, exc: BaseException, what: str = "failed") -> None:
        print(f"{m.trial_id} {what}: {type(exc).__name__}: {exc}", flush=True)
        self._end(m, MemberEnd("failed", error=exc, message=f"{what}: {exc}"), status="failed")

    def _end(self, m: Member, end: MemberEnd, status: str) -> None:
        if m.ended:
            return
        m.ended = True
        for logger in m.loggers:
            try:
                logger.finalize(status)
            except Exception as exc:  # a logger's own trouble must not change the trial's outcome
                print(f"{m.trial_id}: logger {type(logger).__name__} could not finish: {exc}", flush=True)
        self.events.ended(m.paths.root, end)

    def end_all(self, exc: BaseException) -> None:
        """A pack-wide error that is not a stop: every member still running fails with it."""
        for m in self.members:
            if not m.ended:
                self._fail(m, exc)


# -- helpers ----------------------------------------------------------------------------------------------------------
def _to(batch: Batch, device: torch.device) -> Batch:
    """The batch on ``device`` (tensors and lists of tensors, as Lightning's batch transfer moves them)."""

    def move(v: Any) -> Any:
        if isinstance(v, Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, list) and v and isinstance(v[0], Tensor):
            return [x.to(device, non_blocking=True) for x in v]
        return v

    return {k: move(v) for k, v in batch.items()}


def _snapshot(m: Member) -> dict[str, Any]:
    owned = m.owned_keys()
    return {
        "state": {k: v.detach().clone() for k, v in m.model.state_dict(prefix="model.").items() if k in owned},
        "optimizer": copy.deepcopy(m.optimizer.state_dict()) if m.optimizer is not None else None,
        "plateau": copy.deepcopy(m.plateau.state_dict()) if m.plateau is not None else None,
        "stopper": copy.deepcopy(m.stopper),
        "scalars": (m.epoch, m.global_step, m.best_score, m.best_epoch),
    }


def _restore(m: Member, s: dict[str, Any]) -> None:
    m.model.load_state_dict({k[len("model.") :]: v for k, v in s["state"].items()}, strict=False)
    if m.optimizer is not None:
        m.optimizer.load_state_dict(s["optimizer"])
        m.optimizer.zero_grad(set_to_none=True)
    if m.plateau is not None:
        m.plateau.load_state_dict(s["plateau"])
    m.stopper = s["stopper"]
    m.epoch, m.global_step, m.best_score, m.best_epoch = s["scalars"]


def check_packable(configs: Sequence[dict[str, Any]]) -> None:
    """Every member must see the same batches through the same frozen model (``jobs.packing.pack_key``)."""
    keys = ("model", "dataset", "strategy", "seed", "train", "objective", "weights", "data_root", "dataset_def")
    first = configs[0]
    for c in configs[1:]:
        differ = [k for k in keys if c.get(k) != first.get(k)]
        if differ:
            raise PackConfigError(
                f"trial {c.get('trial_id')} cannot share a pack with {first.get('trial_id')}: they differ in "
                f"{', '.join(differ)}"
            )


def check_disjoint(models: Sequence[Any]) -> None:
    """No trainable tensor may be shared by two members (each gradient and optimizer step must be its own)."""
    seen: dict[int, int] = {}
    for i, model in enumerate(models):
        for p in model.parameters():
            if p.requires_grad and seen.setdefault(id(p), i) != i:
                raise PackConfigError(
                    f"{model.strategy} trains weights of the shared model: its trials cannot be packed (use pack: 1)"
                )


def free_memory_bytes(device: torch.device) -> int | None:
    """Free device memory (CUDA), or the host's available memory (Linux MemAvailable) on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def probe_member_bytes(pack: Pack, m: Member, batch: Batch | None = None) -> int:
    """What one more member costs: the tensors its training forward keeps for backward (counted by autograd's
    saved-tensor hooks on one real batch), its logits, and its weights, gradients and AdamW moments."""
    saved = 0

    def pack_hook(t: Tensor) -> Tensor:
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    if batch is None:  # the first training batch (normalised, not augmented: the probe must not draw)
        batch = next(iter(pack.data.train_loader(pack.seed, epoch=lambda: 0)))
        batch = pack.data.transform(_to(batch, pack.device), training=False)
    hooks = torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t)
    with torch.random.fork_rng(devices=[pack.device] if pack.cuda else []), hooks, pack._autocast():
        logits = pack._forward([m], batch, train=False)
    trainable = sum(p.numel() * p.element_size() for p in m.model.parameters() if p.requires_grad)
    out = sum(t.numel() * t.element_size() for _, t in logits)
    return saved + 2 * out + 4 * trainable


def train_pack(
    trial_roots: Sequence[Path | str], events: PackEvents | None = None, *, model_factory: Any = None
) -> dict[str, MemberEnd]:
    """Train the trials in ``trial_roots`` as one pack; every member's end goes to ``events.ended`` as it happens.

    Raises only what stops the whole pack (KeyboardInterrupt, a stop signal, submitit's requeue): the members not yet
    ended are then unfinished, and resume from their last checkpoints. Returns the ends when ``events`` is None.
    """
    collect = events if events is not None else CollectEnds()
    warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
    pack = None
    try:
        pack = Pack([Path(r) for r in trial_roots], collect, model_factory)
        pack.run()
    except Exception as exc:
        if pack is None:  # nothing was built: every member fails with the reason
            for root in trial_roots:
                collect.ended(Path(root), MemberEnd("failed", error=exc, message=str(exc)))
        else:
            pack.end_all(exc)
    return collect.ends if isinstance(collect, CollectEnds) else {}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m vlsm_batch.training.pack", description=__doc__)
    parser.add_argument("trial_dirs", type=Path, nargs="+", help="trials/<id> folders holding config.json")
    args = parser.parse_args(argv)
    ends = train_pack(args.trial_dirs)
    for tid, end in ends.items():
        print(f"{tid}: {end.kind} {end.message}", file=sys.stderr)
    return 0 if all(e.kind in ("done", "pruned") for e in ends.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
