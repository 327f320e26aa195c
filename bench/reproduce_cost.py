"""The cost estimate of ``bench reproduce --list``: single-thread CPU seconds per run, wall time
on N workers, and the listing of every artefact and scale with its estimate.
"""
from __future__ import annotations

from bench.reproduce_plan import PlannedRun, plan
from bench.reproduce_spec import ARTEFACTS, SCALES


# ms per training step (forward, backward, optimizer step) with one torch thread on this
# repository's 2-core CPU, copying T=100, batch 20, at the ≈22k budget, all models interleaved in
# one process (lstm ... urnn, timed 2026-11 before the fast paths of issue 14); the newer models
# as 11.2 ms / their train × LSTM ratio in README's `bench speed --task copying` table.
STEP_MS_REF = {"lstm": 11.2, "ornn": 28.2, "gru": 35.6, "scornn": 37.2, "scurnn": 40.2, "exprnn": 51.1,
               "fcurnn": 55.9, "eurnn": 167.6, "urnn": 311.8,
               "dtriv": 62.0, "nnrnn": 39.0, "lru": 70.0, "s4d": 39.0, "mingru": 280.0, "minlstm": 187.0}
REF_T, REF_BATCH, REF_PARAMS = 100, 20, 22_369
# Fitted to ten MNIST runs of 5 steps timed here (one per Table 1 row, whose time was mostly
# evaluation: 25,000 images of 784 steps; 6 to 560 s each; the fit is within 1.5x of each):
# one evaluated sequence costs about this share of one trained sequence, and the time of a
# step grows as (parameters)^0.7, not linearly (fixed per-step costs).
EVAL_SHARE = 0.2
PARAMS_EXPONENT = 0.7
RUN_OVERHEAD_S = 1.0            # per run in a warm worker: model, data, Lightning's trainer, result files (0-1 s here)
WORKER_START_S = 5.0            # per worker: spawning it and importing torch and Lightning
TIMIT_FRAMES = 200              # assumed mean utterance length in frames (TIMIT's data is not here)


def _eval_splits(task: str, batch: int) -> tuple[int, int, int]:
    """(validation sequences, test sequences, sequences per evaluation batch)."""
    from bench.tasks import get_task_class

    cls = get_task_class(task)
    sizes = getattr(cls, "sizes", None)
    if sizes:
        return sizes["val"], sizes["test"], batch
    if task in ("mnist", "pmnist"):
        from bench.tasks.mnist import N_VAL

        return N_VAL, 10_000, max(batch, cls.eval_batch_size)
    if task == "timit":
        from bench.tasks.timit import EXPECTED_SIZES

        return EXPECTED_SIZES["val"], EXPECTED_SIZES["test"], max(EXPECTED_SIZES.values())   # one batch per split
    return 0, 0, batch


def estimate_seconds(run: PlannedRun) -> float:
    """Single-thread CPU seconds of one run: steps × a per-step time (STEP_MS_REF scaled linearly
    by T and batch, and by the parameter count to the power PARAMS_EXPONENT), its evaluations,
    and a fixed overhead."""
    c = run.resolved
    T = c.seq_len or (784 if c.task in ("mnist", "pmnist") else TIMIT_FRAMES)
    step_s = (STEP_MS_REF.get(c.model, 100.0) / 1000 * (T / REF_T) * (c.batch_size / REF_BATCH)
              * (run.n_params / REF_PARAMS) ** PARAMS_EXPONENT)
    val, test, eval_batch = _eval_splits(c.task, c.batch_size)
    if run.eval_batches:
        val, test = min(val, run.eval_batches * eval_batch), min(test, run.eval_batches * eval_batch)
    validations = max(1, c.max_steps // c.val_every)
    evaluated = validations * (val + (test if c.track_test else 0)) + 2 * test
    return RUN_OVERHEAD_S + c.max_steps * step_s + evaluated * step_s / c.batch_size * EVAL_SHARE


ESTIMATE_NOTE = ("cost = single-thread CPU time on this repository's 2-core machine: per run, steps × a per-step "
                 "time (measured ms per step of each model at copying T=100, "
                 "batch 20, ≈22k parameters, 1 thread; scaled linearly by T and batch and by (parameters)^0.7, "
                 f"a fit to ten timed MNIST runs), plus evaluation (one evaluated sequence ≈ {EVAL_SHARE} of a "
                 f"trained one) and {RUN_OVERHEAD_S:.0f} s per run; divide by --workers and add "
                 f"{WORKER_START_S:.0f} s to start them. A rough guide (±2×); the paper scale is meant for GPUs, "
                 "where none of this was measured")


def wall_estimate(runs: list[PlannedRun], workers: int) -> float:
    """Wall seconds of ``runs`` on ``workers`` processes (perfect packing, plus starting them)."""
    return sum(estimate_seconds(r) for r in runs) / workers + WORKER_START_S


def fmt_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def list_lines(with_new_models: bool = False, workers: int = 1) -> list[str]:
    lines = []
    for name, art in ARTEFACTS.items():
        lines.append(f"{name:<8} {art.title} ({art.source})")
        for scale in SCALES:
            runs = plan(name, scale, with_new_models=with_new_models)
            total = sum(estimate_seconds(r) for r in runs)
            settings = len({(r.setting, r.panel.label) for r in runs})
            per = f"{settings} settings × {SCALES[scale].seeds} seed{'s' if SCALES[scale].seeds != 1 else ''}"
            lines.append(f"  {scale:<6} {len(runs):>4} runs ({per}): ≈ {fmt_duration(total)} CPU"
                         + (f", ≈ {fmt_duration(wall_estimate(runs, workers))} with {workers} workers" if workers > 1
                            else ""))
    return lines
