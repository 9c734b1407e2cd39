"""Rule fixtures and their runner: ``care test`` and its pytest plugin (docs/rules.md,
"Testing your rules")."""
