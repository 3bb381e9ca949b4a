"""The local backend: a runner process per job on this machine (codexw.runner)."""

from __future__ import annotations

from codexw.core import paths, process
from codexw.core.backend import RunnerBackend
from codexw.core.models import Job


class LocalBackend(RunnerBackend):
    name = "local"
    runner_module = "codexw.runner"

    def stop_leftovers(self, job: Job) -> None:
        """Nothing of a vanished runner's codex process group may survive.

        The group is signalled only if one of its members still carries this job's
        marker in its environment: a recorded pgid can have been reused by an unrelated
        group (long after, or after a reboot), and that one must never be touched."""
        if not job.codex_pgid or not process.group_exists(job.codex_pgid):
            return
        marker = process.job_marker(job.id, str(paths.state_dir().resolve()))
        if process.group_carries(job.codex_pgid, marker):
            process.terminate_group(job.codex_pgid, grace=min(job.spec.kill_grace, 5.0))


BACKEND = LocalBackend()
