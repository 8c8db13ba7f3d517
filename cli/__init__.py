"""The `denokv` command line: argument and environment parsing, one module per subcommand."""
