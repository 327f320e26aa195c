"""Launch `bench sweep` workers as a SLURM job array through submitit.

Each array task runs one sweep worker (the same `bench sweep` command line minus the launcher
flags) against the shared study storage. On preemption or time-out submitit signals the job
(``slurm_signal_delay_s`` before the limit), calls :meth:`SweepWorker.checkpoint` and requeues
it; the requeued worker rejoins the study, and the trial it was running is marked FAILED by
the storage heartbeat and re-run with the same parameters (PostgreSQL storage), so nothing is
lost. Lightning's own SLURM auto-requeue is switched off in bench/run.py so that only one
mechanism requeues.
"""
from __future__ import annotations

from pathlib import Path


class SweepWorker:
    """A picklable, checkpointable submitit job: ``bench <argv>`` in the job's process."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)

    def __call__(self) -> int:
        from bench.cli import main

        code = main(self.argv)
        if code:
            raise RuntimeError(f"bench {' '.join(self.argv)} exited with {code}")
        return code

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(SweepWorker(self.argv))


def submit_workers(argv: list[str], *, workers: int, folder: str | Path, partition: str | None = None,
                   gpus_per_worker: int = 0, cpus_per_worker: int = 2, timeout_min: int = 24 * 60,
                   cluster: str | None = None, max_requeues: int = 3, account: str | None = None,
                   qos: str | None = None, mem: str | None = None, constraint: str | None = None,
                   setup: list[str] | None = None):
    """Submit ``workers`` copies of ``bench <argv>`` as one job array; returns the submitit jobs.

    Args:
        argv: the worker's command line without the program name, e.g.
            ``["sweep", "--model", "scurnn", ..., "--storage", "postgresql://..."]``.
        workers: number of array tasks.
        folder: where submitit keeps job scripts and logs (must be on shared storage).
        partition, gpus_per_worker, cpus_per_worker, timeout_min, account, qos, mem (e.g. "32G"),
            constraint: SLURM resources (``#SBATCH`` lines).
        setup: shell lines run in the job before the worker (e.g. ``module load cuda``).
        cluster: ``None`` picks SLURM when ``srun`` exists, else local processes; ``"local"``
            forces local processes (how the tests run it).
    """
    import submitit

    from bench.errors import ConfigError

    if workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers}")
    executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster,
                                     slurm_max_num_timeout=max_requeues)
    params = dict(timeout_min=timeout_min, cpus_per_task=cpus_per_worker, gpus_per_node=gpus_per_worker,
                  name="bench-sweep", slurm_array_parallelism=workers, slurm_signal_delay_s=120)
    for key, value in (("partition", partition), ("account", account), ("qos", qos), ("mem", mem),
                       ("constraint", constraint), ("setup", list(setup) if setup else None)):
        if value:
            params[f"slurm_{key}"] = value
    executor.update_parameters(**params)
    with executor.batch():
        jobs = [executor.submit(SweepWorker(argv)) for _ in range(workers)]
    return jobs
