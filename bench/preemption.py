"""Preemption and resume: a SIGTERM/SIGUSR1 (or submitit's SIGUSR2) during training saves
``checkpoints/preempt.ckpt`` where the run can continue exactly; ``bench run --resume`` and a
sweep's retry continue from it (or from ``last.ckpt`` after a kill)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench.config import RunConfig

PREEMPT_CKPT = "preempt.ckpt"


def load_resume_config(run_dir: str | Path) -> RunConfig:
    """The config of an unfinished run folder, with a clear error if it cannot be resumed."""
    from bench.errors import ConfigError

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ConfigError(f"cannot resume {run_dir}: no config.json there (is it a run folder made by `bench run`?)")
    if (run_dir / "result.json").exists():
        raise ConfigError(f"cannot resume {run_dir}: the run already finished (result.json exists)")
    if resume_checkpoint(run_dir) is None:
        raise ConfigError(f"cannot resume {run_dir}: no checkpoints/{PREEMPT_CKPT} or checkpoints/last.ckpt")
    return RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))


def resume_checkpoint(run_dir: Path) -> Path | None:
    for name in (PREEMPT_CKPT, "last.ckpt"):
        path = Path(run_dir) / "checkpoints" / name
        if path.is_file():
            return path
    return None


def _is_submitit_handler(handler) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


def preemption_callback(run_dir: Path):
    import signal
    import threading

    from lightning.pytorch.callbacks import Checkpoint

    class PreemptionCheckpoint(Checkpoint):
        """SIGTERM or SIGUSR1: checkpoint where the run can continue exactly, then stop.

        That point is the end of the training step during which the signal arrived, or, when a
        validation follows that step (or is running), the end of that validation. Lightning's
        own reaction to SIGTERM (a ``SIGTERMException`` after the current *validation batch*)
        would cut a validation short: its value would be lost on resume, and so would a best
        checkpoint taken there. So this callback owns both signals during training, and raises
        Lightning's SIGTERM flag itself (``trainer._signal_connector``, pinned lightning 2.6)
        only where stopping is exact:

        * after a training step that no validation follows: Lightning stops at the end of the
          step, and :meth:`on_exception` saves (the state Lightning resumes as "restarted on
          last": the next step is the first one to run);
        * at the end of a validation: :meth:`on_validation_end` saves there, after the
          ``ModelCheckpoint`` has recorded this validation (both are ``Checkpoint`` callbacks,
          which Lightning runs last and in list order, so this one must come after it): the
          state Lightning's own ``last.ckpt`` has, which resumes without repeating the
          validation and with the logging step where it was.

        Two states Lightning does not resume exactly are repaired: a stop at an epoch's end
        (:meth:`_at_next_epoch_start`) and a checkpoint with no training left
        (:meth:`on_load_checkpoint`). The data loader's position travels in the same
        checkpoint (tasks/loader.py).
        """

        def __init__(self):
            self.saved_step = None
            self.requested = False
            self.submitit_handler = None
            self._originals: dict = {}

        def _signals(self):
            own = [getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)]
            if _is_submitit_handler(signal.getsignal(signal.SIGUSR2)):
                own.append(signal.SIGUSR2)         # submitit's time-out/preemption signal
            return [s for s in own if s is not None]

        def on_fit_start(self, trainer, module):
            # Lightning installs its SIGTERM handler after this hook; remember what was there before
            if threading.current_thread() is threading.main_thread():
                self._originals = {s: signal.getsignal(s) for s in self._signals()}

        def on_train_start(self, trainer, module):
            if self._originals:
                for s in self._originals:
                    signal.signal(s, self._on_signal)
            connector = trainer._signal_connector
            if connector.received_sigterm:          # arrived while Lightning restored the checkpoint
                self.requested, connector.received_sigterm = True, False

        def _on_signal(self, signum, frame):
            self.requested = True
            previous = self._originals.get(signum)
            if signum == signal.SIGTERM and callable(previous):
                previous(signum, frame)             # as Lightning does: chain an earlier SIGTERM handler
            elif signum == getattr(signal, "SIGUSR2", None) and callable(previous):
                # submitit requeues the job and exits in its handler: first save where the run can
                # continue exactly, then hand over (run() calls it once preempt.ckpt is written)
                self.submitit_handler = lambda: previous(signum, None)

        def _stop(self, trainer):
            trainer._signal_connector.received_sigterm = True

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.requested:
                self._stop(trainer)   # Lightning stops after this step, or after the validation it runs

        def on_validation_start(self, trainer, module):
            if self.requested and not trainer.sanity_checking:
                trainer._signal_connector.received_sigterm = False     # let the validation finish

        def on_validation_end(self, trainer, module):
            if self.requested and not trainer.sanity_checking and self.saved_step is None:
                self._save(trainer)
                self._stop(trainer)

        def on_fit_end(self, trainer, module):
            self._restore()

        def on_load_checkpoint(self, trainer, module, checkpoint):
            """A checkpoint whose training is complete (taken at the final validation, by this
            callback or as Lightning's last.ckpt) resumes with no step left to run, so Lightning
            never moves its logging step past that validation's, as the step after it would
            have, and the test metrics land a step early (where read_curves takes them for the
            start of the new part). Put the logging step where the finished run had it: one per
            optimizer step (the harness does not accumulate gradients)."""
            state = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict")
            step = int(checkpoint.get("global_step", 0))
            if state is not None and trainer.max_steps != -1 and step >= trainer.max_steps:
                state["_batches_that_stepped"] = max(int(state.get("_batches_that_stepped", 0)), step)

        def on_exception(self, trainer, module, exc):
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            # Lightning raises this at the end of the step (or epoch) in which the flag was raised
            if isinstance(exc, SIGTERMException) and self.saved_step is None:
                self._at_next_epoch_start(trainer)
                self._save(trainer)
            self._restore()

        @staticmethod
        def _at_next_epoch_start(trainer):
            """After an epoch's last step, Lightning stops at the end of the epoch, with the epoch
            counted as done but its batch counters still in place until the next epoch resets them;
            resumed from there, it would continue "inside" the finished epoch (a short epoch and
            the wrong batches). Reset them as the next epoch's start would (pinned lightning 2.6)."""
            fit = trainer.fit_loop
            loop = fit.epoch_loop
            if fit.epoch_progress.current.completed == fit.epoch_progress.current.ready and \
                    loop.batch_progress.current.ready:
                loop.batch_progress.reset_on_run()
                loop.scheduler_progress.reset_on_run()
                loop.automatic_optimization.optim_progress.reset_on_run()
                loop.val_loop.batch_progress.total.reset()

        def _restore(self):
            for s, handler in self._originals.items():
                if handler is not None:
                    signal.signal(s, handler)
            self._originals = {}

        def _save(self, trainer):
            path = run_dir / "checkpoints" / PREEMPT_CKPT
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".tmp-{PREEMPT_CKPT}")
            trainer.save_checkpoint(str(tmp))
            os.replace(tmp, path)          # never a half-written checkpoint under the real name
            self.saved_step = trainer.global_step

    return PreemptionCheckpoint()
