"""Sub-commands of the ``glus-ros`` console command: one module each, with ``add_parser`` and ``run``."""
