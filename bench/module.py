"""The one LightningModule: any model composed with any task."""
from __future__ import annotations

import gc
import math

import lightning.pytorch as pl
import torch

from bench.errors import BenchError
from bench.optim import GroupOptimizer, split_spec


class DivergedError(BenchError):
    """A non-finite loss or gradient; the message names the step, the group and likely causes."""


MODRELU_HINT = (
    "for modReLU models this is usually the singularity of modReLU near |z| = 0 (paper §4): keep "
    "h0 trainable and away from zero, keep the bias small or non-positive, or lower the learning rate"
)


class FreezeStartupObjects(pl.Callback):
    """``gc.freeze()`` for the training loop: the ~300k objects of torch, Lightning and the model
    made before training are never garbage (they live to the end), but every full collection
    walks them, about 160 ms each, which scuRNN's many per-step tensors trigger every few
    hundred steps. Frozen, the collector walks only what training makes (scuRNN's step: ~6%
    faster on copying). Unfrozen when training ends or fails; left alone if the caller froze."""

    def __init__(self):
        self.froze = False

    def on_train_start(self, trainer, pl_module):
        if gc.get_freeze_count() == 0:
            gc.freeze()
            self.froze = True

    def _unfreeze(self):
        if self.froze:
            gc.unfreeze()
            self.froze = False

    def on_train_end(self, trainer, pl_module):
        self._unfreeze()

    def on_exception(self, trainer, pl_module, exception):
        self._unfreeze()


class SequenceModule(pl.LightningModule):
    def __init__(self, model, task, opts: dict[str, list]):
        super().__init__()
        self.model, self.task, self.opts = model, task, opts
        # the name test metrics are logged under: "test" (final weights) or "best_ckpt_test" (the
        # best checkpoint's), set by run() before each evaluation, so neither overwrites the other
        self.test_split = "test"
        self._train_loss = None                 # this step's loss, checked in on_before_optimizer_step

    def forward(self, x):
        return self.model(x)

    def _shared(self, batch, split: str):
        out = self.model(batch[0])
        loss = self.task.loss(out, batch)
        self._log_split(split, out, batch, loss)
        return loss

    def _log_split(self, split: str, out, batch, loss) -> None:
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=split != "tracked_test",
                 batch_size=batch[0].shape[0], add_dataloader_idx=False)
        for name, value in self.task.metrics(out, batch).items():
            self.log(f"{split}/{name}", value, on_step=on_step, on_epoch=not on_step, prog_bar=split == "val",
                     batch_size=batch[0].shape[0], add_dataloader_idx=False)

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this training step's metrics to the loggers: every
        ``log_every_n_steps``-th step (its own test, ``should_update_logs``, of the pinned
        Lightning 2.x). Training metrics logged on the other steps are never written, and logging
        them cost 0.7 ms a step (a tenth of an LSTM step on copying), so they are logged only on
        the steps that are written: the metrics files are the same, byte for byte."""
        trainer = self._trainer
        connector = getattr(trainer, "_logger_connector", None)
        if connector is None or trainer.fast_dev_run:
            return True
        return bool(connector.should_update_logs)

    def training_step(self, batch, batch_idx):
        out = self.model(batch[0])
        loss = self.task.loss(out, batch)
        self._train_loss = loss.detach()        # checked with the gradients, before the optimizer step
        if self._logs_this_step():
            self._log_split("train", out, batch, loss)
        return loss

    def on_before_optimizer_step(self, optimizer):
        # One host sync per step for the loss and every gradient together; the parameters are
        # not touched before it. On failure, name the loss (a non-finite loss makes non-finite
        # gradients) or else the first group with a bad gradient.
        grads = [(group.get("name", "?"), p.grad) for group in optimizer.param_groups
                 for p in group["params"] if p.grad is not None]
        loss = self._train_loss
        # max |x| is finite exactly when every entry is (torch.max propagates NaN), in two kernels
        # where isfinite().all() takes five; complex entries as (re, im), so |z| cannot overflow
        flat = [t.reshape(-1) if not t.is_complex() else torch.view_as_real(t).reshape(-1)
                for t in (loss, *(g for _, g in grads))]
        if math.isfinite(torch.cat(flat).abs().max().item()):
            return
        if not torch.isfinite(loss):
            raise DivergedError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}; " + MODRELU_HINT
            )
        name = next(name for name, g in grads if not torch.isfinite(g).all())
        raise DivergedError(f"non-finite gradient in parameter group {name!r} at step {self.global_step}; "
                            + MODRELU_HINT)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # Lightning's own checks its arguments at every step and then does nothing when no clipping
        # is set (--grad-clip; the references use none): call it only when there is clipping to do
        if gradient_clip_val:
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.model.post_step()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        # a second validation loader is the test split, tracked for the paper's best-test number
        self._shared(batch, "val" if dataloader_idx == 0 else "tracked_test")

    def on_validation_epoch_end(self):
        err = self.model.unitarity_error()
        if err is not None:
            self.log("diag/unitarity_error", float(err))
        if self.task.baseline is not None:
            self.log("baseline", float(self.task.baseline))

    def test_step(self, batch, batch_idx):
        self._shared(batch, self.test_split)

    def configure_optimizers(self):
        groups = self.model.param_groups()
        return GroupOptimizer({g: (groups.get(g, []), *split_spec(spec)) for g, spec in self.opts.items()})
