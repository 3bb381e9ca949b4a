"""The Celery backend: jobs run on `codexw worker` processes that consume a broker's queue.

On this machine each remote job gets a stand-in runner (`celery.remote`) that sends
it, mirrors its events into the registry and records its outcome, so the registry's
bound, `status`, `wait`, `logs` and `kill` treat it like a local job. Celery itself is
imported only by the stand-in, the worker and a kill of a vanished job's task.
"""

from __future__ import annotations

from codexw.core.backend import RunnerBackend
from codexw.core.models import Job


class CeleryBackend(RunnerBackend):
    name = "celery"
    runner_module = "codexw.backends.celery.remote"

    def stop_leftovers(self, job: Job) -> None:
        """The stand-in vanished: flag the task killed and revoke it on its worker."""
        from codexw.backends.celery.remote import revoke  # imports celery: remote jobs only

        revoke(job)


BACKEND = CeleryBackend()
