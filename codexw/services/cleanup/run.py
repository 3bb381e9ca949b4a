"""One cleanup run over its projects and the log folder, and the service entry point."""

from __future__ import annotations

import os
import time

from codexw.core import paths
from codexw.core.scheduler import reconcile
from codexw.core.store import Store
from codexw.services.cleanup.context import Context
from codexw.services.cleanup.dirs import exclusive_lock
from codexw.services.cleanup.logs import LogFolder
from codexw.services.cleanup.mover import Mover
from codexw.services.cleanup.plan import CleanupRequest, Plan, make_plan, scope
from codexw.services.cleanup.project import ProjectPass
from codexw.services.cleanup.result import CleanupResult
from codexw.services.cleanup.worktrees import clean_worktrees
from codexw.services.common import open_store

LOCK_NAME = "cleanup.lock"


class CleanupRun:
    """Reports of each project, then the logs that follow them, then orphan logs."""

    def __init__(self, store: Store, plan: Plan, result: CleanupResult,
                 prune_branches: bool = False) -> None:
        token = f"{os.getpid()}{os.urandom(3).hex()}"
        self.ctx = Context(store, plan, result, Mover(store, result, token), token)
        self.prune_branches = prune_branches

    def run(self, projects: list[str]) -> None:
        ctx = self.ctx
        logs = LogFolder(ctx)
        try:
            logs.open()
            for project in projects:
                if not os.path.isdir(project):
                    logs.missing_project(project)
                    continue
                ctx.result.projects.append(project)
                index = ProjectPass(ctx, project).run()
                logs.job_logs(index)
                clean_worktrees(ctx, project, self.prune_branches)
            if ctx.plan.all_projects:
                logs.orphans()
        finally:
            ctx.mover.close()  # removals still going use the folders: they end first
            logs.close()


def cleanup(req: CleanupRequest) -> CleanupResult:
    plan = make_plan(req, time.time())
    store = open_store(reconcile_first=False)
    try:
        projects = scope(store, req)
        result = CleanupResult(dry_run=req.dry_run)
        if req.dry_run:
            CleanupRun(store, plan, result, req.prune_branches).run(projects)
            result.age = plan.age
            return result
        with exclusive_lock(paths.ensure_state_dir() / LOCK_NAME, req.lock_wait):
            reconcile(store)  # dead runners' TEMP reports become `lost` reports first
            plan = make_plan(req, time.time())  # ages count from now, after any wait
            CleanupRun(store, plan, result, req.prune_branches).run(projects)
        result.age = plan.age
        return result
    finally:
        store.close()
