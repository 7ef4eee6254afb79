"""Subcommands of the ``d2im`` command line; each module has ``configure(parser)`` and ``run(args)``."""
