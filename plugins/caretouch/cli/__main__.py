"""``python -m caretouch.cli``: the ``care`` command."""

from . import main

main()
