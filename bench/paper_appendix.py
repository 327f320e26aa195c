"""The paper's Appendix A.3, Tables 3 and 4: scuRNN at its main sizes with other optimizers for
A, D and the other weights (shared/papers/scurnn-paper.md), as rows like bench/paper.py's.

Apart from ``PAPER_SETTINGS`` on purpose: no run takes them as its default, and the leaderboard
(which finds a paper row by model, task and size) must not show them beside other runs of that
size. ``bench reproduce table3|table4`` runs each row and puts its own numbers beside it.
"""
from __future__ import annotations

from bench.paper import COPY_2000, TABLE1, PaperSetting

_RMS, _ADG, _ADAM = "rmsprop", "adagrad", "adam"      # the paper's words (bench/paper.py's docstring)
# (A, D, other, unpermuted test acc, permuted test acc): Table 3, n = 116
_TABLE3 = (((_RMS, 1e-4), (_ADG, 1e-3), (_ADAM, 1e-3), 0.976, 0.949),
           ((_RMS, 1e-4), (_RMS, 1e-3), (_RMS, 1e-3), 0.956, 0.933),
           ((_RMS, 1e-3), (_RMS, 1e-3), (_RMS, 1e-3), 0.913, 0.901),
           ((_RMS, 1e-4), (_RMS, 1e-4), (_RMS, 1e-3), 0.976, 0.939),
           ((_RMS, 1e-4), (_RMS, 1e-3), (_RMS, 1e-4), 0.961, 0.913),
           ((_RMS, 1e-4), (_RMS, 1e-4), (_RMS, 1e-4), 0.976, 0.920))
# (A, D, other, first iteration below the baseline, loss at iteration 2000): Table 4, copying T = 2000
_TABLE4 = (((_RMS, 1e-4), (_ADAM, 1e-4), (_RMS, 1e-3), 300, 2.5e-4),
           ((_RMS, 1e-4), (_RMS, 1e-3), (_RMS, 1e-3), 600, 7.2e-4),
           ((_RMS, 1e-4), (_RMS, 1e-4), (_RMS, 1e-3), 300, 1.9e-4),
           ((_RMS, 1e-4), (_RMS, 1e-5), (_RMS, 1e-3), 350, 1.0e-3),
           ((_RMS, 1e-4), (_RMS, 1e-4), (_RMS, 1e-4), 600, 7.2e-4))
APPENDIX_SETTINGS: list[PaperSetting] = [
    *[PaperSetting("scurnn", task, 116, {"A": a, "D": d, "other": o}, f"Appendix A.3, Table 3 row {k}",
                   budget="≈16k", reported={"test_acc": acc}, protocol=TABLE1[task], level="paper")
      for k, (a, d, o, *accs) in enumerate(_TABLE3, 1) for task, acc in zip(("mnist", "pmnist"), accs)],
    *[PaperSetting("scurnn", "copying", 130, {"A": a, "D": d, "other": o}, f"Appendix A.3, Table 4 row {k}",
                   seq_len=2000, budget="≈22k", reported={"first_step_below_baseline": it, "final_loss": loss},
                   protocol=COPY_2000, level="paper")
      for k, (a, d, o, it, loss) in enumerate(_TABLE4, 1)],
]


def appendix_rows(table: str, task: str) -> list[PaperSetting]:
    """The rows of the appendix's ``table`` ("Table 3" or "Table 4") for ``task``, in its order."""
    return [s for s in APPENDIX_SETTINGS if s.task == task and s.source.startswith(f"Appendix A.3, {table} row")]
