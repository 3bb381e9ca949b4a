"""codexw: run Codex agents as detached background jobs."""

__version__ = "0.1.0"
