"""Running the engine: assembly (``engine``), a day (``day``), sending (``prepare``,
``send``, ``outcome``, ``message``), crash recovery (``recover``). See docs/architecture/run.md."""
