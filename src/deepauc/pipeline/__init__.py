"""Pipeline stages: each module is one `deepauc` subcommand with `add_arguments` and `run`."""
