"""The one LightningModule: any model composed with any task."""
from __future__ import annotations

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


class SequenceModule(pl.LightningModule):
    def __init__(self, model, task, opts: dict[str, list]):
        super().__init__()
        self.model, self.task, self.opts = model, task, opts
        # the name test metrics are logged under: "test" (final weights) or "best_ckpt_test" (the
        # best checkpoint's), set by run() before each evaluation, so neither overwrites the other
        self.test_split = "test"

    def forward(self, x):
        return self.model(x)

    def _shared(self, batch, split: str):
        out = self.model(batch[0])
        loss = self.task.loss(out, batch)
        on_step = split == "train"
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=split != "tracked_test",
                 batch_size=batch[0].shape[0], add_dataloader_idx=False)
        for name, value in self.task.metrics(out, batch).items():
            self.log(f"{split}/{name}", value, on_step=on_step, on_epoch=not on_step, prog_bar=split == "val",
                     batch_size=batch[0].shape[0], add_dataloader_idx=False)
        return loss

    def training_step(self, batch, batch_idx):
        loss = self._shared(batch, "train")
        if not torch.isfinite(loss):
            raise DivergedError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step}; " + MODRELU_HINT
            )
        return loss

    def on_before_optimizer_step(self, optimizer):
        # One host sync per step; on failure, name the first group with a bad gradient.
        grads = [(group.get("name", "?"), p.grad) for group in optimizer.param_groups
                 for p in group["params"] if p.grad is not None]
        finite = torch.stack([torch.isfinite(g).all() for _, g in grads])
        if not finite.all():
            name = grads[int((~finite).nonzero()[0])][0]
            raise DivergedError(f"non-finite gradient in parameter group {name!r} at step {self.global_step}; "
                                + MODRELU_HINT)

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
