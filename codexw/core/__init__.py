"""Core: models, registry, process control, codex argv/events, reports, config.

Nothing in here imports typer or rich; the runner depends on this package only.
"""
