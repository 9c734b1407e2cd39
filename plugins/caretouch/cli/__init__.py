"""The ``care`` command line: one click group per concern, added to ``main``."""

from .main import main

__all__ = ["main"]
