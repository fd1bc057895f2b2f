"""Command modules: one per subcommand, each exposing ``command``."""
