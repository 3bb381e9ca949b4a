#!/usr/bin/env python3
"""A fake `codex` that speaks the real CLI's --json event format (see CODEX_CLI.md).

Behaviour comes from `@fake ...` lines in the prompt (read on stdin, like the
real `codex exec -`) or from FAKE_CODEX_DIRECTIVES; several can share a line, separated by ';':

  @fake sleep SECONDS        hold the run that long (in small steps)
  @fake wait-for PATH        hold the run until PATH exists (a gate a test opens; 120 s at most)
  @fake fail 429|500|auth    end with error + turn.failed like the real CLI, exit 1
  @fake exit CODE            exit with CODE and no failure event
  @fake crash                write to stderr and exit 3 without any event
  @fake ignore-term          ignore SIGTERM (so only SIGKILL stops it)
  @fake grandchild           start a grandchild process in the same group
  @fake wrapper              behave like the npm Node wrapper: do the work in a child
  @fake write PATH           write PATH (relative to -C) and report the command
  @fake write-text PATH TEXT write TEXT (and a newline) to PATH, relative to -C, reported
                             as a shell command: no file_change event, as the real CLI
  @fake events N             emit N extra command events
  @fake message TEXT         the final agent message
  @fake raw PATH             copy PATH's bytes to stdout as they are (hostile or huge lines)
  @fake fail-first N KIND    fail with KIND on the first N runs (counted in FAKE_CODEX_STATE)
  @fake emit JSON            write this event line as it is (JSON escapes: \u001b for ESC,
                             \u003b for ';', which would otherwise split the directive)
  @fake thread JSON          use this JSON string as the thread id
  @fake http                 ask the model server at FAKE_CODEX_BASE_URL (tests/e2e/
                             mock_responses.py) for the answer, as the real CLI with
                             request_max_retries = 0 does: its usage is reported, and an
                             HTTP 429 or 5xx ends the run the way the real CLI reports it

FAKE_CODEX_STATE=DIR records every run (runs.jsonl) and the most runs alive at
once (max_running), from a lock-protected set of live PIDs, so a kill -9 can't
skew the count.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid

FAILURES = {
    "429": "exceeded retry limit, last status: 429 Too Many Requests",
    "500": "We're currently experiencing high demand, which may cause temporary errors.",
    "auth": "unexpected status 401 Unauthorized: invalid api key",
}


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def parse_argv(argv: list[str]) -> dict:
    opts: dict = {"config": {}, "resume": None, "model": None, "sandbox": None, "cd": None,
                  "prompt": None, "json": False}
    if argv[:1] == ["--version"]:
        print("codex-cli 0.169.0")
        sys.exit(0)
    if argv[:2] == ["login", "status"]:
        if os.environ.get("FAKE_CODEX_LOGGED_OUT"):
            print("Not logged in", file=sys.stderr)
            sys.exit(1)
        print("Logged in using an API key")
        sys.exit(0)
    if not argv or argv[0] != "exec":
        print(f"fake codex: unsupported command {argv[:1]}", file=sys.stderr)
        sys.exit(2)
    rest = argv[1:]
    if rest[:1] == ["resume"]:
        opts["resume"] = True
        rest = rest[1:]
    positional = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if opts["resume"] and arg in ("-s", "--sandbox", "-C", "--cd", "-p", "--profile",
                                      "--add-dir"):
            # Like the real CLI: `resume` rejects these; they go before it.
            print(f"error: unexpected argument '{arg}' found", file=sys.stderr)
            sys.exit(2)
        if arg == "resume" and not positional and not opts["resume"]:
            opts["resume"] = True  # `codex exec [OPTIONS] resume THREAD -`
        elif arg == "--json":
            opts["json"] = True
        elif arg == "-c":
            key, _, value = rest[i + 1].partition("=")
            opts["config"][key] = value.strip('"')
            i += 1
        elif arg in ("-m", "--model"):
            opts["model"] = rest[i + 1]
            i += 1
        elif arg in ("-s", "--sandbox"):
            opts["sandbox"] = rest[i + 1]
            i += 1
        elif arg in ("-C", "--cd"):
            opts["cd"] = rest[i + 1]
            i += 1
        elif arg in ("-p", "--profile", "--add-dir", "--output-schema", "-o",
                     "--output-last-message"):
            i += 1
        elif arg in ("--skip-git-repo-check", "--ephemeral"):
            pass
        elif arg.startswith("-") and arg != "-":
            print(f"error: unexpected argument '{arg}' found", file=sys.stderr)
            sys.exit(2)
        else:
            positional.append(arg)
        i += 1
    if opts["resume"]:
        opts["resume"] = positional[0] if positional else None
        positional = positional[1:]
    opts["prompt"] = positional[0] if positional else None
    return opts


def record(state_dir: str | None, entry: dict, done: bool = False) -> None:
    if not state_dir:
        return
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, "lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        alive_path = os.path.join(state_dir, "alive.json")
        try:
            with open(alive_path) as fh:
                alive = json.load(fh)
        except (OSError, ValueError):
            alive = []
        alive = [p for p in alive if p != os.getpid() and _alive(p)]
        if not done:
            alive.append(os.getpid())
            with open(os.path.join(state_dir, "runs.jsonl"), "a") as fh:
                fh.write(json.dumps(entry) + "\n")
        with open(alive_path, "w") as fh:
            json.dump(alive, fh)
        max_path = os.path.join(state_dir, "max_running")
        try:
            with open(max_path) as fh:
                best = int(fh.read() or 0)
        except (OSError, ValueError):
            best = 0
        with open(max_path, "w") as fh:
            fh.write(str(max(best, len(alive))))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def bump(state_dir: str | None, name: str) -> int:
    """Count runs for `fail-first`."""
    if not state_dir:
        return 1
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, "lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(state_dir, f"count-{name}")
        try:
            with open(path) as fh:
                n = int(fh.read()) + 1
        except (OSError, ValueError):
            n = 1
        with open(path, "w") as fh:
            fh.write(str(n))
    return n


def directives(prompt: str) -> list[list[str]]:
    found = []
    extra = os.environ.get("FAKE_CODEX_DIRECTIVES", "")
    lines = prompt.splitlines() + [x for x in extra.split(";") if x.strip()]
    for line in lines:
        for part in line.split(";"):  # one-line tasks (batch text files) chain with ';'
            part = part.strip()
            if part.startswith("@fake "):
                found.append(part[len("@fake "):].split(None, 1))
    return found


def main() -> int:
    opts = parse_argv(sys.argv[1:])
    if opts["prompt"] == "-":
        prompt = sys.stdin.read()
    elif opts["prompt"]:
        prompt = opts["prompt"]
    else:
        print("error: no prompt", file=sys.stderr)
        return 2
    todo = directives(prompt)
    names = [d[0] for d in todo]
    state_dir = os.environ.get("FAKE_CODEX_STATE")

    if "wrapper" in names and not os.environ.get("FAKE_CODEX_NATIVE"):
        # Like the npm wrapper: the real work happens in a child in the same group;
        # SIGTERM is forwarded, SIGKILL of the wrapper leaves the child running.
        env = dict(os.environ, FAKE_CODEX_NATIVE="1")
        child = subprocess.Popen([sys.executable, __file__, *sys.argv[1:-1], prompt], env=env)
        if state_dir:
            os.makedirs(state_dir, exist_ok=True)
            with open(os.path.join(state_dir, f"native.{child.pid}"), "w") as fh:
                fh.write(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        code = child.wait()
        return code if code >= 0 else 1

    record(state_dir, {"pid": os.getpid(), "argv": sys.argv[1:], "config": opts["config"],
                       "model": opts["model"], "sandbox": opts["sandbox"], "cd": opts["cd"],
                       "resume": opts["resume"], "prompt": prompt, "start": time.time(),
                       "path": os.environ.get("PATH", ""),
                       "api_key": os.environ.get("OPENAI_API_KEY"),
                       "home": os.environ.get("HOME"), "cwd": os.getcwd(),
                       "depth": os.environ.get("CODEXW_DEPTH"),
                       "managed": {k: v for k, v in os.environ.items()
                                   if k.startswith("CODEX_MANAGED")}})
    try:
        return run(opts, todo, state_dir)
    finally:
        record(state_dir, {}, done=True)


def run(opts: dict, todo: list[list[str]], state_dir: str | None) -> int:
    cwd = opts["cd"] or os.getcwd()
    chosen = [json.loads(args[0]) for name, *args in todo if name == "thread" and args]
    thread = opts["resume"] or (chosen[-1] if chosen else str(uuid.uuid4()))
    emit({"type": "thread.started", "thread_id": thread})
    emit({"type": "turn.started"})
    message = "## Task Summary\nDone.\n\n## Files Modified\n- none\n\n## Changes Made\nNothing.\n\n" \
              "## Issues Encountered\nNone.\n\n## Next Steps\nNone."
    item = 0
    for name, *args in todo:
        arg = args[0] if args else ""
        if name == "ignore-term":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        elif name == "grandchild":
            code = "import signal,time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)"
            child = subprocess.Popen([sys.executable, "-c", code])
            if state_dir:
                os.makedirs(state_dir, exist_ok=True)
                with open(os.path.join(state_dir, f"grandchild.{child.pid}"), "w") as fh:
                    fh.write(str(os.getpid()))
        elif name == "sleep":
            end = time.monotonic() + float(arg)
            item += 1
            emit({"type": "item.started", "item": {"id": f"item_{item}", "type": "command_execution",
                  "command": f"sleep {arg}", "aggregated_output": "", "exit_code": None,
                  "status": "in_progress"}})
            while time.monotonic() < end:
                time.sleep(min(0.05, max(0.0, end - time.monotonic())))
            emit({"type": "item.completed", "item": {"id": f"item_{item}", "type": "command_execution",
                  "command": f"sleep {arg}", "aggregated_output": "", "exit_code": 0,
                  "status": "completed"}})
        elif name == "wait-for":
            end = time.monotonic() + 120.0
            while not os.path.exists(arg) and time.monotonic() < end:
                time.sleep(0.05)
        elif name == "write":
            path = os.path.join(cwd, arg)
            item += 1
            command = f"/bin/bash -c 'echo hi > {arg}'"
            emit({"type": "item.started", "item": {"id": f"item_{item}", "type": "command_execution",
                  "command": command, "aggregated_output": "", "exit_code": None,
                  "status": "in_progress"}})
            with open(path, "w") as fh:
                fh.write("hi\n")
            emit({"type": "item.completed", "item": {"id": f"item_{item}", "type": "command_execution",
                  "command": command, "aggregated_output": "", "exit_code": 0,
                  "status": "completed"}})
            item += 1
            emit({"type": "item.completed", "item": {"id": f"item_{item}", "type": "file_change",
                  "changes": [{"path": arg, "kind": "add"}], "status": "completed"}})
        elif name == "write-text":
            target, _, text = arg.partition(" ")
            item += 1
            with open(os.path.join(cwd, target), "w") as fh:
                fh.write(text + "\n")
            emit({"type": "item.completed", "item": {"id": f"item_{item}", "type": "command_execution",
                  "command": f"/bin/bash -c 'printf ... > {target}'", "aggregated_output": "",
                  "exit_code": 0, "status": "completed"}})
        elif name == "events":
            for n in range(int(arg)):
                item += 1
                emit({"type": "item.completed", "item": {"id": f"item_{item}",
                      "type": "command_execution", "command": f"echo {n}",
                      "aggregated_output": f"{n}\n", "exit_code": 0, "status": "completed"}})
        elif name == "unknown-events":
            emit({"type": "brand.new.event", "payload": {"x": 1}})
            emit({"type": "item.completed", "item": {"id": "w", "type": "web_search", "query": "q"}})
            emit({"type": "item.completed", "item": {"id": "e", "type": "error",
                  "message": "Model metadata for `mock` not found"}})
            sys.stdout.write("this line is not json\n")
        elif name == "raw":
            sys.stdout.flush()
            with open(arg, "rb") as fh:
                while block := fh.read(1 << 16):
                    sys.stdout.buffer.write(block)
            sys.stdout.buffer.flush()
        elif name == "http":
            answer = ask_server(os.environ["FAKE_CODEX_BASE_URL"], opts, thread)
            if isinstance(answer, str):
                emit({"type": "error", "message": answer})
                emit({"type": "turn.failed", "error": {"message": answer}})
                return 1
            text, served_usage = answer
            item += 1
            emit({"type": "item.completed", "item": {"id": f"item_{item}",
                                                     "type": "agent_message", "text": text}})
            emit({"type": "turn.completed", "usage": served_usage})
            return 0
        elif name == "message":
            message = arg
        elif name == "emit":
            sys.stdout.write(arg.strip() + "\n")
            sys.stdout.flush()
        elif name == "crash":
            print("fake codex: something broke badly", file=sys.stderr)
            return 3
        elif name == "exit":
            emit({"type": "turn.completed", "usage": usage(thread, state_dir)})
            return int(arg)
        elif name in ("fail", "fail-first"):
            kind = arg
            if name == "fail-first":
                count, kind = arg.split()
                if bump(state_dir, "fail-first") > int(count):
                    continue
            text = FAILURES[kind]
            emit({"type": "error", "message": text})
            emit({"type": "turn.failed", "error": {"message": text}})
            return 1
    item += 1
    emit({"type": "item.completed", "item": {"id": f"item_{item}", "type": "agent_message",
                                             "text": message}})
    emit({"type": "turn.completed", "usage": usage(thread, state_dir)})
    return 0


def ask_server(base_url: str, opts: dict, thread: str) -> tuple[str, dict] | str:
    """One Responses request; (final text, usage) or the failure message codex prints."""
    import urllib.error
    import urllib.request

    body = json.dumps({"model": opts["model"] or "mock-model", "prompt_cache_key": thread,
                       "input": [{"type": "message", "role": "user", "content": [
                           {"type": "input_text", "text": "task"}]}], "stream": True})
    request = urllib.request.Request(f"{base_url}/responses", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            stream = response.read().decode()
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 429:
            return FAILURES["429"]
        return f"exceeded retry limit, last status: {exc.code} {exc.reason}"
    except OSError as exc:
        return f"stream disconnected before completion: {exc}"
    text, wire = "done", {}
    for line in stream.splitlines():
        if not line.startswith("data: "):
            continue
        event = json.loads(line[len("data: "):])
        if event.get("type") == "response.output_item.done":
            for part in event["item"].get("content") or []:
                text = part.get("text", text)
        elif event.get("type") == "response.completed":
            wire = event["response"].get("usage") or {}
    return text, {"input_tokens": wire.get("input_tokens", 0), "cached_input_tokens": 0,
                  "output_tokens": wire.get("output_tokens", 0), "reasoning_output_tokens": 0}


def usage(thread: str | None = None, state_dir: str | None = None) -> dict:
    """Like the real CLI, a resumed thread reports its total over every run so far."""
    runs = bump(state_dir, f"thread-{thread}") if thread and state_dir else 1
    return {key: value * runs for key, value in _usage().items()}


def _usage() -> dict:
    return {"input_tokens": 100, "cached_input_tokens": 10, "cache_write_input_tokens": 0,
            "output_tokens": 20, "reasoning_output_tokens": 5}


if __name__ == "__main__":
    sys.exit(main())
