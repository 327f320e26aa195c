"""``bench reproduce``: the paper's tables and figures as sets of ordinary runs, run locally and
rendered beside the paper's numbers.

An artefact (Table 1, Table 2, Figure 4, Figure 5) expands into runs, one per (paper row, seed):
each a normal :func:`bench.run.run` configured from its row of bench/paper.py (hidden size,
per-group optimizers, model options). The scale decides only the training protocol (steps,
batch, validation interval, and at smoke scale a shorter sequence and a smaller evaluation):
one declaration per (task, scale) in :data:`PROTOCOLS`; ``paper`` is the task's own
``paper_scale``. Runs that already have a completed result.json with the same config hash and
seed in the runs folder are not run again; unfinished run folders with a checkpoint are resumed.
The tables are computed from the result files through the leaderboard's loader and aggregation;
the figures (Figures 4 and 5) from the runs' logged curves, drawn by the leaderboard's curve code.

Light on purpose at import time (no torch): the CLI builds its parser from this module.
"""
from __future__ import annotations

from bench.reproduce_cost import (EVAL_SHARE, ESTIMATE_NOTE, PARAMS_EXPONENT, REF_BATCH, REF_PARAMS, REF_T,
                                  RUN_OVERHEAD_S, STEP_MS_REF, TIMIT_FRAMES, WORKER_START_S, estimate_seconds,
                                  fmt_duration, list_lines, wall_estimate)
from bench.reproduce_execute import Outcome, eval_limit_callbacks, execute, preflight
from bench.reproduce_figures import PanelCurves, draw_figure, panel_curves, task_baseline, write_figure
from bench.reproduce_plan import (PlannedRun, load_existing, mark_states, matching, new_models, panel_rows, plan,
                                  row_opts)
from bench.reproduce_render import (Cell, TableRow, chosen_group, describe_protocol, display_name, figure_file,
                                    fmt_diff, fmt_ours, fmt_value, model_label, panel_header, render, row_order,
                                    table, table_cells, write_outputs)
from bench.reproduce_spec import (ARTEFACTS, FIRST_BELOW, NEW_MODEL_LABEL, PAPER_NAMES, PROTOCOLS, SCALES, Artefact,
                                  Curve, Metric, Panel, Protocol, Scale, check_request, protocol, run_seq_len)

__all__ = [
    # declarations (bench/reproduce_spec.py)
    "ARTEFACTS", "FIRST_BELOW", "NEW_MODEL_LABEL", "PAPER_NAMES", "PROTOCOLS", "SCALES", "Artefact", "Curve", "Metric",
    "Panel", "Protocol", "Scale", "check_request", "protocol", "run_seq_len",
    # the run set and what is done (bench/reproduce_plan.py)
    "PlannedRun", "load_existing", "mark_states", "matching", "new_models", "panel_rows", "plan", "row_opts",
    # running (bench/reproduce_execute.py)
    "Outcome", "eval_limit_callbacks", "execute", "preflight",
    # tables (bench/reproduce_render.py)
    "Cell", "TableRow", "chosen_group", "describe_protocol", "display_name", "figure_file", "fmt_diff", "fmt_ours",
    "fmt_value", "model_label", "panel_header", "render", "row_order", "table", "table_cells", "write_outputs",
    # figures (bench/reproduce_figures.py)
    "PanelCurves", "draw_figure", "panel_curves", "task_baseline", "write_figure",
    # cost estimate (bench/reproduce_cost.py)
    "ESTIMATE_NOTE", "EVAL_SHARE", "PARAMS_EXPONENT", "REF_BATCH", "REF_PARAMS", "REF_T", "RUN_OVERHEAD_S",
    "STEP_MS_REF", "TIMIT_FRAMES", "WORKER_START_S", "estimate_seconds", "fmt_duration", "list_lines",
    "wall_estimate",
]
