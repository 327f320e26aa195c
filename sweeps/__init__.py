"""Search spaces for `bench sweep`, as YAML data (see the README, "Sweeps")."""
