"""Search spaces for `bench sweep`, as YAML data (see docs/sweeps.md)."""
