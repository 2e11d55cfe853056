"""Figures. Every function takes arrays (or loaded images) and returns a matplotlib ``Figure``, or
writes one to a path it is given; nothing here selects a matplotlib backend (set ``MPLBACKEND`` or
call ``matplotlib.use`` yourself; the CLI and tests use ``Agg``)."""
