"""The paper's settings as data: hidden size, budget and per-group optimizers per (model, task).

Source: Maduranga, Helfrich & Ye, "Complex Unitary Recurrent Neural Networks using Scaled
Cayley Transform", AAAI 2019 (shared/papers/scurnn-paper.md), Section 5 and Tables 1-2;
details of the reference code in shared/reference/models.md §3.6. CLI flags override
everything here. A row with ``seq_len=None`` is the (model, task) default; a row with a
``seq_len`` applies when the run uses that length.

Rows for the baselines are added next to their model modules' settings (issue 3).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperSetting:
    model: str
    task: str
    n_hidden: int
    opts: dict[str, tuple[str, float]]
    source: str
    seq_len: int | None = None
    budget: str | None = None          # the paper's "# params" as printed, e.g. "≈16k"
    reported: dict = field(default_factory=dict)   # the paper's numbers for this row
    options: dict = field(default_factory=dict)    # model options (e.g. scoRNN's rho)


PAPER_SETTINGS: list[PaperSetting] = [
    # ---- scuRNN -----------------------------------------------------------------------------
    PaperSetting("scurnn", "mnist", 116, {"A": ("rmsprop", 1e-4), "D": ("adagrad", 1e-3), "other": ("adam", 1e-3)},
                 "§5.1, Table 1", budget="≈16k", reported={"test_acc": 0.976}),
    PaperSetting("scurnn", "pmnist", 116, {"A": ("rmsprop", 1e-4), "D": ("adagrad", 1e-3), "other": ("adam", 1e-3)},
                 "§5.1, Table 1", budget="≈16k", reported={"test_acc": 0.949}),
    PaperSetting("scurnn", "copying", 130, {"A": ("rmsprop", 1e-4), "D": ("adam", 1e-4), "other": ("rmsprop", 1e-3)},
                 "§5.2 (T=2000), Table 4 row 1", budget="≈22k",
                 reported={"first_step_below_baseline": 300, "final_loss": 2.5e-4}),
    PaperSetting("scurnn", "copying", 130, {"A": ("adagrad", 1e-4), "D": ("adagrad", 1e-4), "other": ("adam", 1e-3)},
                 "§5.2 (T=1000)", seq_len=1000, budget="≈22k"),
    PaperSetting("scurnn", "copying", 130, {"A": ("rmsprop", 1e-4), "D": ("adam", 1e-4), "other": ("rmsprop", 1e-3)},
                 "§5.2 (T=2000), Table 4 row 1", seq_len=2000, budget="≈22k",
                 reported={"first_step_below_baseline": 300, "final_loss": 2.5e-4}),
    PaperSetting("scurnn", "adding", 116, {"A": ("rmsprop", 1e-3), "D": ("adam", 1e-3), "other": ("adam", 1e-3)},
                 "§5.3 (T=200)", budget="≈14k"),
    PaperSetting("scurnn", "adding", 116, {"A": ("rmsprop", 1e-3), "D": ("adam", 1e-3), "other": ("adam", 1e-3)},
                 "§5.3 (T=200)", seq_len=200, budget="≈14k"),
    PaperSetting("scurnn", "adding", 116, {"A": ("rmsprop", 1e-4), "D": ("adam", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.3 (T=750)", seq_len=750, budget="≈14k"),
    PaperSetting("scurnn", "timit", 128, {"A": ("adam", 1e-4), "D": ("adam", 1e-3), "other": ("adam", 1e-3)},
                 "§5.4, Table 2", budget="≈83k", reported={"val_mse": 3.94, "eval_mse": 3.56}),
]


def paper_setting(model: str, task: str, seq_len: int | None = None) -> PaperSetting | None:
    """The row for (model, task) at ``seq_len``, else the (model, task) default row."""
    rows = [s for s in PAPER_SETTINGS if s.model == model and s.task == task]
    for s in rows:
        if seq_len is not None and s.seq_len == seq_len:
            return s
    for s in rows:
        if s.seq_len is None:
            return s
    return None


def paper_rows(model: str | None = None, task: str | None = None) -> list[PaperSetting]:
    return [s for s in PAPER_SETTINGS if (model is None or s.model == model) and (task is None or s.task == task)]
