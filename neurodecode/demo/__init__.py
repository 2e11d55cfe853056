"""The steps of ``neurodecode demo`` (``make demo``): simulate, extract, fit and evaluate the
decoder (:mod:`.decode`), reconstruct (:mod:`.reconstruction`), and write the report
(:mod:`.report`). The command itself lives in :mod:`neurodecode.cli.demo`."""
