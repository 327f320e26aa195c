"""unitary-rnn-bench: a benchmark harness for unitary and orthogonal RNNs."""
__version__ = "0.1.0"
