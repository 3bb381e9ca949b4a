"""`codexw worker`: a Celery worker for `--backend celery` jobs."""

from __future__ import annotations

import sys

import typer

from codexw.cli import render


def worker(
    # Short flags mean one thing across commands: -n is --latest, -w --wait, -l --level;
    # so --name, --workspace and --loglevel have only their long form here.
    broker: str = typer.Option(None, "--broker", metavar="URL", help="Broker URL, e.g. redis://HOST:6379/0. [default: CODEXW_BROKER_URL or broker_url]"),
    concurrency: int = typer.Option(1, "--concurrency", "-c", metavar="N", help="Jobs this worker runs at once."),
    queue: str = typer.Option(None, "--queue", "-Q", metavar="QUEUE", help="Queue to consume. [default: CODEXW_QUEUE, queue, else codex]"),
    workspace: str = typer.Option(None, "--workspace", metavar="DIR", help="Run jobs here (a shared volume or this machine's checkout). [default: the job's own directory, which must exist here]"),
    name: str = typer.Option(None, "--name", metavar="NAME", help="Worker name, NAME@HOST, recorded as each job's host. [default: codexw-PID@HOST]"),
    codex_home: str = typer.Option(None, "--codex-home", metavar="DIR", help="CODEX_HOME with codex's auth, shared by the workers. [default: $CODEX_HOME or ~/.codex]"),
    max_job_time: str = typer.Option(None, "--max-job-time", metavar="DURATION", help="Longest a job may run here; longer or unlimited timeouts are cut to it. [default: 4h]"),
    kill_grace: str = typer.Option(None, "--kill-grace", metavar="DURATION", help="Most time codex gets between SIGTERM and SIGKILL. [default: 10s]"),
    visibility_timeout: str = typer.Option(None, "--visibility-timeout", metavar="DURATION", help="When the broker redelivers a task whose worker vanished; must exceed max-job-time + kill-grace. [default: those + 60s]"),
    loglevel: str = typer.Option("INFO", "--loglevel", metavar="LEVEL", help="Celery log level."),
    as_json: bool = typer.Option(False, "--json", help="Print the checked settings as one JSON object before starting."),
) -> None:
    """Consume the codex queue: run each job like a local runner, report back through the broker.

    Checks first that codex runs and that `codex login status` succeeds with the worker's
    CODEX_HOME, and that the broker answers; exits with status 2 and a hint when not.
    """
    from codexw.services.worker import WorkerRequest, check, run

    plan = check(
        WorkerRequest(
            broker_url=broker, queue=queue, concurrency=concurrency, workspace=workspace,
            name=name, codex_home=codex_home, max_job_time=max_job_time, kill_grace=kill_grace,
            visibility_timeout=visibility_timeout, loglevel=loglevel,
        )
    )
    if as_json:
        render.emit_json("worker", plan.to_dict())
    else:
        sys.stderr.write(render.clean(  # codex's login status line is quoted
            f"codexw worker {plan.name}: queue {plan.queue}, concurrency {plan.concurrency},"
            f" codex {plan.codex_bin} ({plan.login}), workspace {plan.workspace or '(job dirs)'}\n"
        ))
    sys.stdout.flush()
    sys.stderr.flush()
    run(plan)
