"""The `denokv` command line: one module per subcommand (`serve`, `pitr`), dispatched by
`main`; `runtime`, `options` and `errors` hold what the subcommands share."""
