"""The ``care`` command line: one click group per concern, added to ``main``."""

from .root import main

__all__ = ["main"]
