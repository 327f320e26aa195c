"""Per-run diagnostics that none of the reference implementations show.

At the start of training and after every validation, on one fixed batch (the first
validation batch, at most ``max_batch`` sequences), :class:`Diagnostics` records

- ``unitarity_error``: max |W^H W - I| of the recurrent matrix (``model.unitarity_error()``);
- ``grad_norm``: the batch-mean norm of the *total* derivative dL/dh_t against t, the
  quantity that vanishes or explodes (one extra forward and backward; parameter gradients
  are not touched);
- ``modrelu``: how often the modReLU input z sits in the singular zone of the paper's §4
  (Theorems 3-4: with bias b > 0 the derivative grows like b / (2|z|) as |z| -> 0). A unit
  counts as singular when ``b > 0`` and ``|z| < zone * b`` (default ``zone = 0.1``, i.e. the
  derivative term b/(2|z|) is at least 5). Also recorded: the share with |z|^2 < eps (the
  reference's ε regularisation takes over), the share in ReLU's dead zone (output 0), the
  smallest |z| and the largest b / (2|z|).

Everything goes to ``<run_dir>/diagnostics.json`` (rewritten atomically after each
validation, so a killed run keeps what it had). ``bench leaderboard`` plots and tabulates it.

How the hidden states are reached: for one diagnostic pass, :func:`record_recurrence` attaches a
recorder to the model (``RecurrentModel.recording``, models/base.py). The model then runs its
plain per-step loop, which computes the same numbers as its fused one, and reports each
pre-activation and state. Every registered model reports; LSTM and GRU step ``torch.nn.LSTM``/
``GRU`` one time step at a time for it. A model that reports no states gets ``grad_norm = None``
with the reason; one without a modReLU gets ``modrelu = None``.

Usage (what ``bench/run.py`` adds to its callbacks)::

    from bench.diagnostics import Diagnostics
    trainer = pl.Trainer(callbacks=[Diagnostics()], ...)   # writes into default_root_dir
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from bench.atomic import atomic_write_text

DIAGNOSTICS_FILE = "diagnostics.json"
MAX_POINTS = 256          # grad-norm curves longer than this are subsampled (first and last kept)


class _Recorder:
    """Collects the per-step states and modReLU statistics of one forward pass (kept on the
    device until the end, so a GPU is not synchronised once per time step)."""

    def __init__(self, zone: float):
        self.zone = zone
        self.states: list[torch.Tensor] = []
        self.count = 0
        self.sums: list[torch.Tensor] = []   # per call: [singular, eps_zone, dead, min |z|, max gain]

    def step(self, z: torch.Tensor | None, h: torch.Tensor, *, bias: torch.Tensor | None, complex_: bool,
             eps: float) -> None:
        """One time step: the pre-activation z_t and the state h_t (models/base.py, RECORDING)."""
        self.states.append(h)
        if bias is not None:
            self.modrelu(z, bias, complex_, eps)

    def modrelu(self, z: torch.Tensor, bias: torch.Tensor, complex_: bool, eps: float) -> None:
        with torch.no_grad():
            if z.is_complex():
                sq = z.real ** 2 + z.imag ** 2
            elif complex_:
                n = bias.shape[-1]
                sq = z[..., :n] ** 2 + z[..., n:] ** 2
            else:
                sq = z * z
            mag, b = sq.sqrt(), bias.expand_as(sq)
            hat = (sq + eps).sqrt()
            gain = torch.where(b > 0, b / (2 * hat.clamp_min(1e-30)), torch.zeros_like(b))
            self.count += mag.numel()
            self.sums.append(torch.stack([((b > 0) & (mag < self.zone * b)).sum().float(),
                                          ((sq < eps) if eps > 0 else (sq == 0)).sum().float(),
                                          (hat + b < 0).sum().float(), mag.min().float(), gain.max().float()]))

    def modrelu_summary(self) -> dict | None:
        if not self.count:
            return None
        s = torch.stack(self.sums)
        singular, eps_zone, dead = s[:, :3].sum(0).tolist()
        return {"singular_frac": singular / self.count, "eps_frac": eps_zone / self.count,
                "dead_frac": dead / self.count, "min_abs_z": float(s[:, 3].min()), "max_gain": float(s[:, 4].max()),
                "zone": self.zone, "n_values": self.count}


@contextmanager
def record_recurrence(model: torch.nn.Module, zone: float = 0.1):
    """Within the block, forward passes of ``model`` record each h_t (kept in the graph) and
    modReLU statistics into the yielded recorder."""
    rec = _Recorder(zone)
    recording = getattr(model, "recording", None)
    if recording is None:              # not a RecurrentModel: nothing reports
        yield rec
        return
    with recording(rec):
        yield rec


def _subsample(values: list[float]) -> tuple[list[int], list[float]]:
    L = len(values)
    if L <= MAX_POINTS:
        return list(range(L)), values
    idx = sorted({round(i * (L - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)})
    return idx, [values[i] for i in idx]


def snapshot(model: torch.nn.Module, task, batch, zone: float = 0.1) -> dict:
    """Diagnostics of ``model`` on one batch: unitarity error, ||dL/dh_t|| against t, modReLU zone."""
    out: dict = {}
    err = model.unitarity_error()
    out["unitarity_error"] = None if err is None else float(err)
    with torch.inference_mode(False), torch.enable_grad(), record_recurrence(model, zone) as rec:
        batch = tuple(b.clone() if torch.is_tensor(b) else b for b in batch)   # leave inference mode
        loss = task.loss(model(batch[0]), batch)
        out["loss"] = float(loss.detach())
        states = rec.states
        if states and states[0].requires_grad:
            grads = torch.autograd.grad(loss, states, allow_unused=True)
            zero = loss.new_zeros(())
            norms = torch.stack([g.flatten(1).norm(dim=1).mean() if g is not None else zero for g in grads]).tolist()
            t, v = _subsample(norms)
            first, last = norms[0], norms[-1]
            ratio = math.log10(first / last) if first > 0 and last > 0 else None
            out["grad_norm"] = {"t": t, "norm": v, "seq_len": len(norms), "log10_first_over_last": ratio}
        else:
            out["grad_norm"] = None
            out["grad_norm_unavailable"] = (f"{type(model).__name__} reported no states to the recorder "
                                            "(models/base.py, RECORDING)")
        out["modrelu"] = rec.modrelu_summary()
    return out


class Diagnostics(Callback):
    """Lightning callback writing ``diagnostics.json`` into the run directory.

    Args:
        out_dir: where to write; default the trainer's ``default_root_dir`` (the run dir).
        max_batch: sequences of the fixed batch used. Default: 32.
        zone: singular zone is ``|z| < zone * b`` for ``b > 0``. Default: 0.1.
    """

    def __init__(self, out_dir: str | Path | None = None, *, max_batch: int = 32, zone: float = 0.1):
        self.out_dir, self.max_batch, self.zone = out_dir, max_batch, zone
        self.batch = None
        self.snapshots: list[dict] = []
        self.active = True

    def _path(self, trainer) -> Path:
        return Path(self.out_dir or trainer.default_root_dir) / DIAGNOSTICS_FILE

    def _fixed_batch(self, trainer):
        dm = trainer.datamodule
        if dm is None:
            return None
        batch = next(iter(dm.val_dataloader()))
        return tuple(b[: self.max_batch] if torch.is_tensor(b) else b for b in batch)

    def on_train_start(self, trainer, pl_module):
        # A second Diagnostics in the same trainer (e.g. wired into run.py and passed again) stays idle.
        first = next(cb for cb in trainer.callbacks if isinstance(cb, Diagnostics))
        self.active = first is self
        if self.active:
            self.snapshots = self._earlier(trainer)
            self.batch = self._fixed_batch(trainer)
            self._record(trainer, pl_module)

    def _earlier(self, trainer) -> list[dict]:
        """A resumed run keeps the snapshots its earlier part wrote before the checkpoint's step."""
        try:
            old = json.loads(self._path(trainer).read_text()).get("snapshots", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [s for s in old if isinstance(s, dict) and s.get("step", math.inf) < trainer.global_step]

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.active and self.batch is None and batch_idx == 0:   # no datamodule: use this batch
            with torch.inference_mode(False):
                self.batch = tuple(b[: self.max_batch].clone() if torch.is_tensor(b) else b for b in batch)

    def on_validation_end(self, trainer, pl_module):
        if self.active and not trainer.sanity_checking:
            self._record(trainer, pl_module)

    def _record(self, trainer, pl_module):
        if self.batch is None:
            return
        batch = tuple(b.to(pl_module.device) if torch.is_tensor(b) else b for b in self.batch)
        snap = {"step": int(trainer.global_step), "epoch": int(trainer.current_epoch)}
        try:
            snap.update(snapshot(pl_module.model, pl_module.task, batch, self.zone))
        except Exception as exc:   # diagnostics must never end a run
            snap["error"] = f"{type(exc).__name__}: {exc}"
        self.snapshots.append(snap)
        self._write(trainer)

    def _write(self, trainer):
        data = {"version": 1, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "fixed_batch": {"source": "first validation batch", "max_sequences": self.max_batch},
                "modrelu_zone": f"b > 0 and |z| < {self.zone} * b", "snapshots": self.snapshots}
        path = self._path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1, allow_nan=True) + "\n")
