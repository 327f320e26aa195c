"""The declarations of ``bench reproduce``: the scales, each task's training protocol at each
scale, and the artefacts (the paper's tables and figures) with their panels and metrics.

Light on purpose at import time (no torch): the CLI builds its parser from these names.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.errors import ConfigError


@dataclass(frozen=True)
class Scale:
    name: str
    seeds: int                 # default number of seeds (0..seeds-1)
    run_scale: str             # RunConfig.scale of its runs
    about: str


SCALES: dict[str, Scale] = {s.name: s for s in (
    Scale("smoke", 1, "quick", "a pipeline check, minutes on a laptop CPU for a whole artefact: "
                               "its numbers say nothing about the models"),
    Scale("cpu", 3, "quick", "reduced training, hours on a CPU: learning has started, far from the paper's protocol"),
    Scale("paper", 3, "paper", "the paper's protocol (each task's paper_scale), for a GPU cluster"),
)}


@dataclass(frozen=True)
class Protocol:
    """How one task trains at one scale (RunConfig fields)."""

    max_steps: int
    batch_size: int
    val_every: int
    seq_len: dict[int, int] | None = None   # the paper's T -> the T run at this scale (None: the paper's T)
    eval_batches: int | None = None         # validate and test on the first K batches of each split only


# task -> scale -> protocol. "paper" is not listed: it is the task's own ``paper_scale``
# (tasks/*.py), read by :func:`protocol`. Smoke shortens sequences and evaluation; cpu keeps the
# paper's lengths and evaluation and cuts the number of steps.
PROTOCOLS: dict[str, dict[str, Protocol]] = {
    "copying": {"smoke": Protocol(50, 20, 50, seq_len={1000: 20, 2000: 40}),
                "cpu": Protocol(500, 20, 100)},                       # paper: 2,000 steps of 20
    "adding": {"smoke": Protocol(50, 50, 50, seq_len={200: 20, 750: 40}, eval_batches=4),
               "cpu": Protocol(1000, 50, 250)},                       # paper: 60,000 steps of 50 (30 epochs)
    "mnist": {"smoke": Protocol(4, 50, 4, eval_batches=1),            # 1 batch = 500 images
              "cpu": Protocol(1100, 50, 550)},                        # 1 epoch; paper: 70 epochs
    "pmnist": {"smoke": Protocol(4, 50, 4, eval_batches=1),
               "cpu": Protocol(1100, 50, 550)},
    "timit": {"smoke": Protocol(4, 28, 4, eval_batches=1),            # val and test are one batch each
              "cpu": Protocol(264, 28, 132)},                         # 2 epochs; paper: 100 epochs
}


@dataclass(frozen=True)
class Metric:
    label: str
    key: str                     # the result.json metrics key
    paper: str | None            # the PaperSetting.reported key printed beside it
    kind: str = "float"          # "step": a step count, missing = never reached
    note: str = ""


@dataclass(frozen=True)
class Panel:
    task: str
    seq_len: int | None          # the paper's T (None: the task has no length to choose)
    label: str
    appendix: str | None = None  # "Table 3" / "Table 4": the rows are that table's (bench/paper.py APPENDIX_SETTINGS)


@dataclass(frozen=True)
class Curve:
    """A figure's learning curve: one panel per panel of the artefact, one line per model."""

    column: str                  # the runs' CSV column (bench/curves.py), against the training iteration
    label: str                   # what it is, for the y axis
    paper: str                   # what the paper's figure plots, when it is not quite the same
    baseline: str                # the task's memoryless baseline, as the paper gives it
    stacked: bool = False        # panels above each other (the paper's Figure 5), else side by side


@dataclass(frozen=True)
class Artefact:
    name: str
    title: str
    source: str
    panels: tuple[Panel, ...]
    metrics: tuple[Metric, ...]
    track_test: bool = False     # evaluate the test split at every validation (the paper's "best test acc")
    note: str = ""
    curve: Curve | None = None   # a figure: draw this curve of the runs (bench/reproduce_figures.py)

    def requires(self) -> tuple[str, ...]:
        """Metrics a completed run must have to count for this artefact (made with its settings)."""
        return ("best_test_acc",) if self.track_test else ()


FIRST_BELOW = Metric("first step < baseline", "first_step_below_baseline", "first_step_below_baseline", "step",
                     note="first logged training step whose 5-point smoothed loss is below the memoryless baseline")
TEST_ACC = Metric("test acc", "best_test_acc", "test_acc",
                  note="best test accuracy over the validations (the paper: best epoch of 70)")
FINAL_CE = Metric("final CE", "final_train_loss", "final_loss", note="mean of the last 10 logged training losses")
ARTEFACTS: dict[str, Artefact] = {a.name: a for a in (
    Artefact("table1", "Table 1: pixel-by-pixel MNIST and permuted MNIST", "§5.1, Table 1",
             (Panel("mnist", None, "Unperm."), Panel("pmnist", None, "Perm.")), (TEST_ACC,), track_test=True,
             note="oRNN and EURNN rows are the paper's quotes of Mhammedi et al. and Jing et al."),
    Artefact("table2", "Table 2: TIMIT next-frame prediction", "§5.4, Table 2",
             (Panel("timit", None, "TIMIT"),),
             (Metric("valid MSE", "best_val_mse", "val_mse", note="best validation MSE (paper convention)"),
              Metric("eval MSE", "best_ckpt_test_mse", "eval_mse",
                     note="core test set at the best-validation checkpoint"))),
    Artefact("copying", "Figure 4: copying problem", "§5.2, Figure 4 (its numbers: Table 4, row 1)",
             (Panel("copying", 1000, "T=1000"), Panel("copying", 2000, "T=2000")),
             (FIRST_BELOW, FINAL_CE),
             note="the paper prints numbers only for scuRNN at T=2000 (Table 4); the rest is Figure 4's curves",
             curve=Curve("train/loss", "training cross entropy", "\"cross entropy\" (its caption)",
                         "10 log 8 / (T+20)")),
    Artefact("adding", "Figure 5: adding problem", "§5.3, Figure 5",
             (Panel("adding", 200, "T=200"), Panel("adding", 750, "T=750")),
             (FIRST_BELOW,
              Metric("test MSE", "best_ckpt_test_mse", None, note="test split at the best-validation checkpoint")),
             note="the paper shows Figure 5's curves only: no number to compare with",
             # the runs validate (1,000 held-out sequences) at every val_every steps; the test split only at the end
             curve=Curve("val/mse", "validation MSE", "test set MSE", "always answering 1", stacked=True)),
    Artefact("table3", "Table 3: scuRNN (n = 116) with other optimizers for A, D and the other weights, MNIST",
             "Appendix A.3, Table 3",
             (Panel("mnist", None, "Unperm.", appendix="Table 3"), Panel("pmnist", None, "Perm.", appendix="Table 3")),
             (TEST_ACC,), track_test=True, note="row 1 is Table 1's scuRNN n = 116 setting (the same runs)"),
    Artefact("table4", "Table 4: scuRNN (n = 130) with other optimizers for A, D and the other weights, copying",
             "Appendix A.3, Table 4", (Panel("copying", 2000, "T=2000", appendix="Table 4"),),
             (FIRST_BELOW, FINAL_CE),
             note="the paper's 'It. MSE' is the loss at iteration 2000 (the paper's protocol trains 2,000 steps), "
                  "our final CE; row 1 is Figure 4's scuRNN T = 2000 setting (the same runs)"),
)}

# The paper's names and the order of its tables' rows.
PAPER_NAMES = {"scurnn": "scuRNN", "scornn": "scoRNN", "lstm": "LSTM", "urnn": "Rest. cap. uRNN",
               "fcurnn": "Full cap. uRNN", "ornn": "oRNN", "eurnn": "EURNN"}
NEW_MODEL_LABEL = "not in the paper"


def check_request(artefact: str | None, scale: str, workers: int = 1, seeds: int | None = None) -> None:
    """Refuse bad names and counts before any work (no torch needed)."""
    if artefact is not None and artefact not in ARTEFACTS:
        raise ConfigError(f"unknown artefact {artefact!r}; known artefacts: {', '.join(ARTEFACTS)}")
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; known scales: {', '.join(SCALES)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"--seeds must be a positive integer, got {seeds!r}")


def protocol(task: str, scale: str) -> Protocol:
    """The protocol of ``task`` at ``scale``; ``paper`` is the task's ``paper_scale``."""
    if scale == "paper":
        from bench.tasks import get_task_class

        ps = get_task_class(task).paper_scale
        return Protocol(ps["max_steps"], ps["batch_size"], ps["val_every"])
    try:
        return PROTOCOLS[task][scale]
    except KeyError:
        raise ConfigError(f"no {scale} protocol for task {task!r}; tasks with one: {', '.join(PROTOCOLS)}") from None


def run_seq_len(panel: Panel, proto: Protocol) -> int | None:
    if panel.seq_len is None or not proto.seq_len:
        return panel.seq_len
    return proto.seq_len.get(panel.seq_len, panel.seq_len)
