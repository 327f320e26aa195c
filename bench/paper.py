"""The paper's settings as data: hidden size, budget and per-group optimizers per (model, task).

Source: Maduranga, Helfrich & Ye, "Complex Unitary Recurrent Neural Networks using Scaled
Cayley Transform", AAAI 2019 (shared/papers/scurnn-paper.md), Section 5 and Tables 1-2;
details of the reference code in Gayan225/scuRNN (scuRNN_*.py defaults). CLI flags override
everything here. A row with ``seq_len=None`` is the (model, task) default; a row with a
``seq_len`` applies when the run uses that length.

The baselines' rows (issue 3) come from §5 and Tables 1-2. Where the paper names a size but
not its optimizers, the row uses the reference code's recipe and its ``source`` says so (the
scoRNN, complex_RNN, urnn, EUNN-tensorflow, Orthogonal_RNN and expRNN repositories). Several
rows may share (model, task, seq_len): the first is the default a run uses; the others are the
paper's further sizes (for ``bench params`` and the leaderboard). Budgets and sizes use the
paper's (m, p) per task.

Optimizer names here are the paper's words ("RMSProp", "Adam", "Adagrad"): the generic names
``rmsprop``, ``adam``, ``adagrad`` resolve to the update rule of each model's reference code
(bench/optim.py ``SEMANTICS``), e.g. scuRNN's A "RMSProp" is the authors' NumPy update. A
rule the reference code names differently is given by its own name (``keras_rmsprop``).

Provenance of the ``reported`` numbers: each row with numbers names where they are printed
(``source``), how they were checked (``level``, a key of :data:`LEVELS`) and how the paper
measured them (``protocol``, a key of :data:`PROTOCOLS`: task variant, length, split,
normalisation and, for TIMIT, the parameter budget). ``bench leaderboard`` puts a number beside a
run only when the run is under the same protocol (:func:`run_protocol`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

# ---- provenance of the reported numbers ----------------------------------------------------------
# How each row's ``reported`` numbers were checked. A row with numbers names one level and one
# protocol (tests/test_leaderboard.py checks both, and checks every "paper" number against the
# text in shared/papers/ when that folder is there).
LEVELS = {
    "paper": "read from the paper's text (shared/papers/scurnn-paper.md)",
    "secondary": "taken from another paper or from code, not from this paper's text",
    "unverified": "not yet checked against any text",
}

# The copying baseline 10 ln 8 / (T + 20) is the signature of the scoRNN/scuRNN variant: cross
# entropy averaged over all T + 20 steps, 10 symbols from 1-8 (paper §5.2, scuRNN_copying.py). A variant
# that scores only the recalled symbols (S4's) has another baseline, so another protocol.
def _copying_baseline(T: int) -> float:
    return 10 * math.log(8) / (T + 20)


# What tasks/timit.py ``info()`` records for the paper's normalisation (paper §5.4, Wisdom's models.py);
# a test keeps the two equal.
PADDED_MSE = "mse = masked error / (B*T*129), paper; mse_valid = per valid entry"
TIMIT_FACTS = {"features.sample_rate": 8000, "features.n_fft": 256, "features.hop": 128, "features.floor": 1e-5,
               "features.resampler": "matlab", "metric_convention": PADDED_MSE,
               "sizes.train": 3696, "sizes.val": 400, "sizes.test": 192}
# tasks/mnist.py ``info()``: the paper's split (§5.1) and pixel scaling (TF input_data reader, scuRNN_mnist.py)
MNIST_FACTS = {"split.train": 55_000, "split.test": 10_000, "pixels": "/255, row-major, no normalisation"}
# A run's parameter count is "at" a protocol's budget within this fraction (the paper's sizes
# give their printed "≈" budgets within 5%, tests/test_models.py).
BUDGET_TOLERANCE = 0.10


@dataclass(frozen=True)
class Protocol:
    """How the paper measured a set of numbers: a run stands beside them only if it shares all of it.

    ``seq_len``: the run's ``config.seq_len`` (None: the task fixes the length). ``facts``: entries
    of the run's ``task_info`` (dotted paths) and the values they must have; None means "absent or
    null", floats compare to 1e-9. ``params``: the paper's parameter budget, which a run's count
    must be within :data:`BUDGET_TOLERANCE` of. ``quoted_from``: the paper prints these numbers
    from another paper, measured with that paper's own pipeline, which no run here follows.
    """

    id: str
    task: str
    description: str
    seq_len: int | None = None
    facts: dict = field(default_factory=dict)
    params: int | None = None
    quoted_from: str | None = None

    def mismatch(self, config: dict, task_info: dict | None, n_params) -> str | None:
        """Why a run with this config, task_info and parameter count is not under this protocol, or None."""
        if self.quoted_from:
            return f"the paper quotes these numbers from {self.quoted_from}, measured with that paper's own pipeline"
        if self.seq_len is not None and config.get("seq_len") != self.seq_len:
            return f"seq_len is {config.get('seq_len')}, the protocol's {self.seq_len}"
        for path, want in self.facts.items():
            got = _lookup(task_info or {}, path)
            if not _same(got, want):
                return (f"task_info {path} is {_show(got)}, the protocol has none" if want is None
                        else f"task_info {path} is {_show(got)}, the protocol's {_show(want)}")
        if self.params is not None:
            if not isinstance(n_params, int):
                return "the parameter count is not recorded"
            if abs(n_params - self.params) > BUDGET_TOLERANCE * self.params:
                return (f"{n_params} parameters, not within {BUDGET_TOLERANCE:.0%} of the protocol's "
                        f"≈{self.params // 1000}k")
        return None


def _lookup(data: dict, path: str):
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def _show(value) -> str:
    if value is None:
        return "not recorded"
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _same(got, want) -> bool:
    if want is None:
        return got is None
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return math.isclose(got, want, rel_tol=1e-9)
    return got == want


# Every protocol the paper's numbers (or settings) are under; ``PaperSetting.protocol`` names one.
PROTOCOLS: dict[str, Protocol] = {p.id: p for p in (
    Protocol("mnist/pixel/55k-train/best-test-acc", "mnist",
             "pixel-by-pixel MNIST, 784 steps in row-major order, pixels /255; 55,000 train / 10,000 test; "
             "the best epoch test accuracy over 70 epochs (§5.1, Table 1)",
             facts={"permutation_seed": None, **MNIST_FACTS}),
    Protocol("pmnist/perm-92916/55k-train/best-test-acc", "pmnist",
             "permuted pixel MNIST, permutation RandomState(92916); 55,000 train / 10,000 test; the best "
             "epoch test accuracy over 70 epochs (§5.1, Table 1)",
             facts={"permutation_seed": 92916, **MNIST_FACTS}),
    Protocol("mnist/mhammedi-2017", "mnist",
             "Table 1's asterisked oRNN entry, quoted from Mhammedi et al. 2017: their own MNIST pipeline "
             "(Orthogonal_RNN utils.py: pixels /256, overlapping train and validation sets)",
             quoted_from="Mhammedi et al. 2017"),
    Protocol("pmnist/jing-2016", "pmnist",
             "Table 1's asterisked EURNN entry, quoted from Jing et al. 2016: their own permutation "
             "(random.seed(2017) in EUNN-tensorflow's mnist_task.py), not RandomState(92916)",
             quoted_from="Jing et al. 2016"),
    *[Protocol(f"copying/T={T}/cross-entropy", "copying",
               f"copying memory, T = {T} (T + 20 steps), cross entropy over all steps, baseline 10 ln 8/(T+20), "
               f"≈22k parameters (§5.2)" + ("; Table 4 gives the first iteration below the baseline and the "
                                            "loss (printed as 'MSE') at iteration 2000" if T == 2000 else ""),
               seq_len=T, facts={"baseline": _copying_baseline(T)})
      for T in (1000, 2000)],
    *[Protocol(f"adding/T={T}/mse", "adding",
               f"adding problem, T = {T}, MSE of the last step, baseline 1/6, ≈14k parameters (§5.3; "
               f"results as Figure 5 only)", seq_len=T, facts={"baseline": 1 / 6})
      for T in (200, 750)],
    *[Protocol(f"timit/mse-log-magnitude/≈{k}k", "timit",
               f"TIMIT next-frame prediction of log-magnitude STFT frames (8 kHz, 256-point, hop 128), masked MSE "
               f"averaged over the padded batch; 3,696 train / 400 validation / 192 core test; ≈{k}k parameters "
               f"(§5.4, Table 2)", facts=TIMIT_FACTS, params=k * 1000)
      for k in (83, 200)],
)}


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
    protocol: str | None = None        # a key of PROTOCOLS: how the paper measured this setting's numbers
    level: str | None = None           # a key of LEVELS: how ``reported`` was checked


# The protocol of each of Table 1's columns (the asterisked entries have their own, above).
TABLE1 = {"mnist": "mnist/pixel/55k-train/best-test-acc", "pmnist": "pmnist/perm-92916/55k-train/best-test-acc"}
COPY_2000, COPY_1000 = "copying/T=2000/cross-entropy", "copying/T=1000/cross-entropy"

# ``protocol`` is set wherever the row pins the length (or carries numbers); ``level`` wherever it
# carries numbers. Every number below was checked against shared/papers/scurnn-paper.md.
PAPER_SETTINGS: list[PaperSetting] = [
    # ---- scuRNN -----------------------------------------------------------------------------
    PaperSetting("scurnn", "mnist", 116, {"A": ("rmsprop", 1e-4), "D": ("adagrad", 1e-3), "other": ("adam", 1e-3)},
                 "§5.1 (n = 116), Table 1", budget="≈16k", reported={"test_acc": 0.976},
                 protocol=TABLE1["mnist"], level="paper"),
    PaperSetting("scurnn", "pmnist", 116, {"A": ("rmsprop", 1e-4), "D": ("adagrad", 1e-3), "other": ("adam", 1e-3)},
                 "§5.1 (n = 116), Table 1", budget="≈16k", reported={"test_acc": 0.949},
                 protocol=TABLE1["pmnist"], level="paper"),
    PaperSetting("scurnn", "mnist", 250, {"A": ("rmsprop", 1e-5), "D": ("adagrad", 1e-4), "other": ("adam", 1e-3)},
                 "§5.1 (n = 250: A 1e-5, D 1e-4, other 1e-3), Table 1", budget="≈69k", reported={"test_acc": 0.983},
                 protocol=TABLE1["mnist"], level="paper"),
    PaperSetting("scurnn", "pmnist", 250, {"A": ("rmsprop", 1e-5), "D": ("adagrad", 1e-3), "other": ("adam", 1e-3)},
                 "§5.1 (n = 250, permuted: A 1e-5, D 1e-3, other 1e-3), Table 1", budget="≈69k",
                 reported={"test_acc": 0.962}, protocol=TABLE1["pmnist"], level="paper"),
    PaperSetting("scurnn", "copying", 130, {"A": ("rmsprop", 1e-4), "D": ("adam", 1e-4), "other": ("rmsprop", 1e-3)},
                 "§5.2 (T=2000), Table 4 row 1", budget="≈22k",
                 reported={"first_step_below_baseline": 300, "final_loss": 2.5e-4}, protocol=COPY_2000, level="paper"),
    PaperSetting("scurnn", "copying", 130, {"A": ("adagrad", 1e-4), "D": ("adagrad", 1e-4), "other": ("adam", 1e-3)},
                 "§5.2 (T=1000)", seq_len=1000, budget="≈22k", protocol=COPY_1000),
    PaperSetting("scurnn", "copying", 130, {"A": ("rmsprop", 1e-4), "D": ("adam", 1e-4), "other": ("rmsprop", 1e-3)},
                 "§5.2 (T=2000), Table 4 row 1", seq_len=2000, budget="≈22k",
                 reported={"first_step_below_baseline": 300, "final_loss": 2.5e-4}, protocol=COPY_2000, level="paper"),
    PaperSetting("scurnn", "adding", 116, {"A": ("rmsprop", 1e-3), "D": ("adam", 1e-3), "other": ("adam", 1e-3)},
                 "§5.3 (T=200)", budget="≈14k", protocol="adding/T=200/mse"),
    PaperSetting("scurnn", "adding", 116, {"A": ("rmsprop", 1e-3), "D": ("adam", 1e-3), "other": ("adam", 1e-3)},
                 "§5.3 (T=200)", seq_len=200, budget="≈14k", protocol="adding/T=200/mse"),
    PaperSetting("scurnn", "adding", 116, {"A": ("rmsprop", 1e-4), "D": ("adam", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.3 (T=750)", seq_len=750, budget="≈14k", protocol="adding/T=750/mse"),
    *[PaperSetting("scurnn", "timit", n, {"A": ("adam", 1e-4), "D": ("adam", 1e-3), "other": ("adam", 1e-3)},
                   f"§5.4 (n = {n}: Adam, A 1e-4, all other parameters 1e-3), Table 2", budget=budget,
                   reported={"val_mse": val, "eval_mse": ev}, protocol=f"timit/mse-log-magnitude/{budget}",
                   level="paper")
      for n, budget, val, ev in ((128, "≈83k", 3.94, 3.56), (258, "≈200k", 1.84, 1.67))],
    # ---- baselines (issue 3) ------------------------------------------------------------------
    # MNIST / permuted MNIST, Table 1 (70 epochs). scoRNN and LSTM "in accordance with Helfrich et
    # al. 2018 and their codes" (§5): scoRNN_mnist.py uses rho = n/10, A RMSProp 1e-4, other RMSProp 1e-3.
    *[PaperSetting("scornn", task, n, {"A": ("rmsprop", 1e-4), "other": ("rmsprop", 1e-3)},
                   "Table 1; optimizers and rho = n/10 from scoRNN_mnist.py (SpartinStuff/scoRNN defaults)",
                   budget=budget, reported={"test_acc": acc}, options={"rho_frac": 0.1},
                   protocol=TABLE1[task], level="paper")
      for task, n, budget, acc in (("mnist", 170, "≈16k", 0.973), ("mnist", 360, "≈69k", 0.983),
                                   ("pmnist", 170, "≈16k", 0.943), ("pmnist", 360, "≈69k", 0.962))],
    *[PaperSetting("lstm", task, n, {"other": ("rmsprop", 1e-3)}, "§5 (RMSProp 1e-3, forget bias 1.0), Table 1",
                   budget=budget, reported={"test_acc": acc}, options={"forget_bias": 1.0},
                   protocol=TABLE1[task], level="paper")
      for task, n, budget, acc in (("mnist", 128, "≈68k", 0.987), ("mnist", 256, "≈270k", 0.989),
                                   ("pmnist", 128, "≈68k", 0.920), ("pmnist", 256, "≈270k", 0.929))],
    # Arjovsky's code has no MNIST script; Wisdom's mnist.py trains the restricted uRNN with Keras 1
    # RMSprop 1e-4 on every weight (config_mnist_restricteduRNN_lr0-0001_patience5.yaml, batch 50).
    *[PaperSetting("urnn", task, 512, {g: ("keras_rmsprop", 1e-4) for g in ("W", "D", "other")},
                   "Table 1; optimizer from Wisdom's mnist.py config for the restricted uRNN "
                   "(Keras RMSprop 1e-4; Arjovsky's code has no MNIST script)",
                   budget="≈16k", reported={"test_acc": acc}, protocol=TABLE1[task], level="paper")
      for task, acc in (("mnist", 0.976), ("pmnist", 0.945))],
    # Wisdom's MNIST recipe: W takes the Cayley step on the RMS-normalised gradient with lambda = 1e-6;
    # the other weights RMSprop 1e-3 (n = 116) or 1e-4 (n = 512) (config_mnist_fulluRNN*.yaml).
    *[PaperSetting("fcurnn", task, n, {"W": ("cayley_rms", 1e-6), "other": ("keras_rmsprop", lr)},
                   "Table 1; optimizers from Wisdom's mnist.py (Keras RMSprop for the other weights, "
                   "custom_optimizers.py)",
                   budget=budget, reported={"test_acc": acc}, protocol=TABLE1[task], level="paper")
      for task, n, lr, budget, acc in (("mnist", 116, 1e-3, "≈16k", 0.947), ("mnist", 512, 1e-4, "≈270k", 0.974),
                                       ("pmnist", 116, 1e-3, "≈16k", 0.925), ("pmnist", 512, 1e-4, "≈270k", 0.947))],
    # The asterisked entries of Table 1 are numbers the paper quotes from other papers, measured
    # with those papers' pipelines: read from this paper's text ("paper"), under their own protocol.
    PaperSetting("ornn", "mnist", 256, {"W": ("adam", 1e-3), "other": ("adam", 1e-3)},
                 "Table 1 (quoted from Mhammedi et al. 2017); k = 32 and Adam 1e-3 from the reference code "
                 "(Orthogonal_RNN loop_jobs.sh, sgd.py)",
                 budget="≈11k", reported={"test_acc": 0.972}, options={"k": 32},
                 protocol="mnist/mhammedi-2017", level="paper"),
    PaperSetting("eurnn", "pmnist", 512, {"W": ("rmsprop", 1e-4), "D": ("rmsprop", 1e-4), "other": ("rmsprop", 1e-4)},
                 "Table 1 (quoted from Jing et al. 2016, the caption's citation); tunable L = 4 with Re(h) readout "
                 "fits ≈9k (9,222 with mnist_task.py's readout); "
                 "RMSProp 1e-4 from mnist_task.py",
                 budget="≈9k", reported={"test_acc": 0.937}, options={"capacity": 4, "readout": "re"},
                 protocol="pmnist/jing-2016", level="paper"),
    # Copying, §5.2: every model at ≈22k parameters, T in {1000, 2000}.
    PaperSetting("lstm", "copying", 68, {"other": ("rmsprop", 1e-3)}, "§5.2 (RMSProp 1e-3, forget bias 1.0)",
                 budget="≈22k", options={"forget_bias": 1.0}),
    PaperSetting("urnn", "copying", 470, {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.2; optimizer from Wisdom's run_memory_problem.sh (RMSProp 1e-3, "
                 "optimizations.py)", budget="≈22k"),
    PaperSetting("fcurnn", "copying", 128, {"W": ("cayley", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.2; Cayley step lambda = 1e-3 and RMSProp 1e-3 from Wisdom's run_memory_problem.sh "
                 "(optimizations.py)",
                 budget="≈22k"),
    PaperSetting("eurnn", "copying", 512, {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.2 (n = 512, L = 2); [Re|Im] readout fits ≈22k (21,511; Re only 16,903); "
                 "RMSProp 1e-3 from copying_task.py",
                 budget="≈22k", options={"capacity": 2, "readout": "reim"}),
    PaperSetting("scornn", "copying", 190, {"A": ("rmsprop", 1e-4), "other": ("rmsprop", 1e-3)},
                 "§5.2 and §5 (A RMSProp 1e-4, other RMSProp 1e-3); rho = n/2 from scoRNN_copying.py",
                 budget="≈22k", options={"rho_frac": 0.5}),
    # Adding, §5.3: ≈14k (the paper's sizes give 14.4k-15.5k), EURNN and oRNN smaller.
    PaperSetting("lstm", "adding", 60, {"other": ("adam", 1e-2)},
                 "§5.3 and §5 (Adam 1e-2); forget bias 1.0 is TF BasicLSTMCell's default in the scoRNN/scuRNN "
                 "scripts (§5 states it only for MNIST, pMNIST and copying)",
                 budget="≈14k", options={"forget_bias": 1.0}),
    PaperSetting("scornn", "adding", 170, {"A": ("rmsprop", 1e-4), "other": ("adam", 1e-3)},
                 "§5.3 and §5 (A RMSProp 1e-4, other Adam 1e-3); rho = n/2 from scoRNN_adding.py",
                 budget="≈14k", options={"rho_frac": 0.5}),
    PaperSetting("fcurnn", "adding", 120, {"W": ("cayley", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.3; optimizers not given, Wisdom's recipe (stwisdom/urnn)", budget="≈14k"),
    PaperSetting("urnn", "adding", 950, {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.3; optimizer not given, Arjovsky's RMSProp 1e-3 (complex_RNN optimizations.py)", budget="≈14k"),
    PaperSetting("eurnn", "adding", 512, {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.3 (T=200: tunable n = 512, ≈3k, which fits the real version with L = 4; "
                 "the T=750 FFT-style size is not given)",
                 seq_len=200, budget="≈3k", options={"capacity": 4, "complex": False}, protocol="adding/T=200/mse"),
    # §5.3: "the FFT style model as outlined in (Helfrich et al., 2018)" for T = 750; this paper prints
    # no size for it. n = 512 and the real version as the T = 200 row (an assumption, said here).
    PaperSetting("eurnn", "adding", 512, {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)},
                 "§5.3 (T=750: FFT style, 'as outlined in Helfrich et al. 2018'; size not printed in the paper: "
                 "n = 512 and real as the T=200 row, an assumption)",
                 seq_len=750, budget="≈4.4k", options={"style": "fft", "complex": False},
                 protocol="adding/T=750/mse"),
    PaperSetting("ornn", "adding", 128, {"W": ("adam", 1e-3), "other": ("adam", 1e-3)},
                 "§5.3 (n = 128, 16 reflections); Adam 1e-3 from the reference code (Orthogonal_RNN sgd.py)",
                 budget="≈2.6k", options={"k": 16}),
    # TIMIT, Table 2: ≈83k and ≈200k.
    *[PaperSetting("lstm", "timit", n, {"other": ("rmsprop", 1e-3)}, "§5 (RMSProp 1e-3, forget bias -4), Table 2",
                   budget=budget, reported={"val_mse": val, "eval_mse": ev}, options={"forget_bias": -4.0},
                   protocol=f"timit/mse-log-magnitude/{budget}", level="paper")
      for n, budget, val, ev in ((84, "≈83k", 11.89, 10.86), (158, "≈200k", 9.73, 8.86))],
    *[PaperSetting("scornn", "timit", n, {"A": ("rmsprop", 1e-4), "other": ("rmsprop", 1e-3)},
                   "Table 2 (sizes only; optimizers and rho not given: harness defaults, no TIMIT code in scoRNN)",
                   budget=budget, reported={"val_mse": val, "eval_mse": ev},
                   protocol=f"timit/mse-log-magnitude/{budget}", level="paper")
      for n, budget, val, ev in ((224, "≈83k", 4.76, 4.31), (425, "≈200k", 2.64, 2.39))],
    *[PaperSetting("urnn", "timit", n, {"W": ("rmsprop", 1e-3), "D": ("rmsprop", 1e-3), "other": ("rmsprop", 1e-3)},
                   "Table 2; optimizer from Wisdom's timit_prediction.py (RMSProp 1e-3, run_timitpred_*.sh)",
                   budget=budget, reported={"val_mse": val, "eval_mse": ev},
                   protocol=f"timit/mse-log-magnitude/{budget}", level="paper")
      for n, budget, val, ev in ((158, "≈83k", 15.57, 18.51), (378, "≈200k", 16.00, 15.15))],
    *[PaperSetting("fcurnn", "timit", n, {"W": ("cayley", 1e-3), "other": ("rmsprop", 1e-3)},
                   "Table 2; Cayley step 1e-3 and RMSProp 1e-3 from Wisdom's timit_prediction.py (run_timitpred_*.sh)",
                   budget=budget, reported={"val_mse": val, "eval_mse": ev},
                   protocol=f"timit/mse-log-magnitude/{budget}", level="paper")
      for n, budget, val, ev in ((128, "≈83k", 15.07, 14.58), (256, "≈200k", 14.96, 14.69))],
]


def protocols_for(task: str) -> list[Protocol]:
    return [p for p in PROTOCOLS.values() if p.task == task]


def has_numbers(protocol_id: str) -> bool:
    """Whether the paper prints any number under this protocol (adding's are figures only)."""
    return any(s.reported and s.protocol == protocol_id for s in PAPER_SETTINGS)


def run_protocol(task: str, config: dict, task_info: dict | None, n_params) -> tuple[str | None, str | None]:
    """The paper protocol a run is under, and why it has no paper numbers (None if it may have some).

    ``(id, None)``: under ``id``, which has numbers; ``(id, why)``: under ``id``, which has none;
    ``(None, why)``: under none of the protocols the paper prints ``task`` numbers under, and why
    not under each.
    """
    for p in protocols_for(task):
        if p.mismatch(config, task_info, n_params) is None:
            return p.id, None if has_numbers(p.id) else f"the paper prints no numbers under {p.id}"
    numbered = [p for p in protocols_for(task) if has_numbers(p.id)]
    if not numbered:
        return None, f"the paper prints no numbers for {task}"
    return None, "; ".join(f"not {p.id}: {p.mismatch(config, task_info, n_params)}" for p in numbered)


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


# Models without a paper row for a task match the parameter count of this model's row: the
# paper's comparisons are at scuRNN's budgets.
BUDGET_ANCHOR = "scurnn"


def anchor_budget(task: str, seq_len: int | None, d_input: int, d_output: int) -> tuple[int, PaperSetting] | None:
    """The parameter budget every model matches on ``task``: the count of scuRNN's paper size
    there, with the row it comes from; None where the paper gives scuRNN no size."""
    from bench.models import get_model_class

    anchor = paper_setting(BUDGET_ANCHOR, task, seq_len)
    if anchor is None:
        return None
    return get_model_class(BUDGET_ANCHOR).param_count(anchor.n_hidden, d_input, d_output), anchor


def paper_rows(model: str | None = None, task: str | None = None) -> list[PaperSetting]:
    return [s for s in PAPER_SETTINGS if (model is None or s.model == model) and (task is None or s.task == task)]
