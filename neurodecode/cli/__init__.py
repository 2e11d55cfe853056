"""The ``neurodecode`` command line: one module per subcommand, the only place that turns paths and
config files into library objects (:mod:`.main` is the entry point)."""
