"""Backends that run jobs somewhere else than a local runner.

`celery_app` (worker side and client) is imported only when a job or a command uses
the Celery backend: the local path never imports celery. See docs/distributed.md.
"""
