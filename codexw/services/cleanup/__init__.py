"""`codexw cleanup`: archive or compress finished reports and logs, delete old archives.

Made to run blindly from cron:

- the registry decides what is finished: a reconcile runs first (a TEMP report of a job
  whose runner is gone is finalized as `lost`, never deleted blind), and files of
  queued or running jobs are never touched;
- one cleanup at a time (a lock in the state dir; a second one waits, then gives up);
- no symbolic link is followed (directory descriptors, O_NOFOLLOW, lstat: dirs.py);
- copies are written and made durable before the registry points at them, and the
  originals go only after that, so an interrupted run leaves every report in place,
  archived, or both, and the next run finishes the work (mover.py);
- nothing that ended less than a minute ago is touched.

Modules, each importing only those above it:
  result (Action, Skipped, CleanupResult) · plan (request, cutoffs, scope) ·
  dirs (safe directories, syncfs, the lock) · copies (gzip, stage, publish, compare) ·
  index (a project's rows) · mover (copy → sync → record → remove; deletes) ·
  context (what a run shares) · retention (what goes) · project (a project's reports) ·
  logs (the log folder) · run (CleanupRun, cleanup()).
File names and their patterns come from codexw.core.naming.
"""

from __future__ import annotations

from codexw.services.cleanup.plan import CleanupRequest, Plan, make_plan
from codexw.services.cleanup.result import Action, CleanupResult, Skipped
from codexw.services.cleanup.run import CleanupRun, cleanup

__all__ = [
    "Action", "CleanupRequest", "CleanupResult", "CleanupRun", "Plan", "Skipped", "cleanup",
    "make_plan",
]
