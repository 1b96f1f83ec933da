"""Stages forked from a process that imported torch, transformers and PEFT once: one per pytest worker.

A tiny-model stage that a test runs itself (tests/workspace.py `stage`) spends 4 to 7 of its 5 to 12
CPU-seconds importing those libraries. Forked from a process that holds them, it still runs as a process of its
own: the real script as `__main__`, its own argv, working directory, environment, stdin, stdout, stderr and exit
status, its atexit handlers run. `stage` falls back to a fresh interpreter where a fork would differ: an
environment that changes a variable the preloaded libraries read when imported (IMPORT_TIME_VARIABLES). The
claims about start-up itself run fresh interpreters of their own: the params check before torch's import
(test_params), the kills (workspace.start_training), and every stage DVC runs.

The server reads one JSON request per line on stdin and answers two lines on stdout: the child's pid once
forked, its exit status once it ended. Run as `python -m tests.stage_server`."""

from __future__ import annotations

import atexit
import importlib
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import IO

# lorapipe first, as every stage imports it: it sets tqdm's and MLflow's settings before torch imports tqdm.
# Then what the model stages import (torch, transformers, PEFT with bitsandbytes) and the tiny Llama's classes;
# no pandas or pyarrow, whose allocator starts a thread (a fork copies only the forking thread).
PRELOAD = (
    "lorapipe",
    "lorapipe.model.modeling",
    "lorapipe.train.checkpoints",
    "transformers.models.llama.modeling_llama",
    "transformers.models.auto.tokenization_auto",
)
# Names (prefixes) of the environment variables that the preloaded libraries read at import: a request that
# changes one gets a fresh interpreter.
IMPORT_TIME_VARIABLES = (
    *("PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS", "TQDM", "TORCH", "PYTORCH", "OMP_", "MKL_", "CUDA", "BNB_"),
    "PEFT",
)


def serve() -> None:
    started_with = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    # What lorapipe's import added to the environment (each a setdefault): a child gets them under its own.
    defaults = {name: value for name, value in os.environ.items() if name not in started_with}
    requests, answers = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "w")
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            requests.close()
            answers.close()
            run_child(request, defaults)
        answers.write(f"{pid}\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(f"{os.waitstatus_to_exitcode(status)}\n")
        answers.flush()


def run_child(request: dict, defaults: dict[str, str]) -> None:
    """What `python SCRIPT ARGS...` does in `cwd` with `env`, in this forked process; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update({**defaults, **request["env"]})
        for fd, path, flags in (
            (0, os.devnull, os.O_RDONLY),
            (1, request["stdout"], os.O_WRONLY | os.O_TRUNC),
            (2, request["stderr"], os.O_WRONLY | os.O_TRUNC),
        ):
            opened = os.open(path, flags)
            os.dup2(opened, fd)
            os.close(opened)
        sys.argv = [request["script"], *request["args"]]
        sys.path[0] = str(Path(request["script"]).parent)  # as `python SCRIPT` sets it
        try:
            runpy.run_path(request["script"], run_name="__main__")
            code = 0
        except SystemExit as stop:  # as the interpreter reads it
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        threading._shutdown()  # as the interpreter ends: its non-daemon threads (an upload under way) finish first
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class StageServer:
    """The client: starts the server on first use, forks each stage from it."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.log: IO[str] | None = None  # the server's own stderr: its preload's notices, or why it ended

    def forkable(self, env: dict[str, str]) -> bool:
        """Whether a stage in `env` forked from the server runs as in a fresh interpreter."""
        names = {name for name in {*env, *self.env} if name.startswith(IMPORT_TIME_VARIABLES)}
        return all(env.get(name) == self.env.get(name) for name in names)

    def start(self, env: dict[str, str]) -> None:
        """The server in `env`, once: the environment the stages it forks are compared with."""
        if self.process is not None:
            return
        self.env = env
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (open as long as the server runs; closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.stage_server"],
            cwd=Path(__file__).parents[1],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,  # a child's stderr is its own
            bufsize=0,  # unbuffered: `answer` waits with select, which sees no buffered line
        )
        atexit.register(self.stop)

    def run(
        self, script: str, args: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """`python script args` in `cwd` with `env` (which `forkable` accepted), forked from the server."""
        assert self.process and self.process.stdin
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            out.touch()
            err.touch()
            request = {"script": script, "args": list(args), "cwd": str(cwd), "env": env}
            self.process.stdin.write(json.dumps({**request, "stdout": str(out), "stderr": str(err)}).encode() + b"\n")
            pid = int(self.answer(300))  # the first waits for the preload
            try:
                code = int(self.answer(timeout))
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.answer(60)
                raise subprocess.TimeoutExpired([script, *args], timeout) from None
            stdout, stderr = out.read_text(), err.read_text()  # universal newlines, as subprocess.run(text=True)
        return subprocess.CompletedProcess([sys.executable, script, *args], code, stdout, stderr)

    def stop(self) -> None:
        """Ends the server (its stdin closed ends its loop) and reaps it: its CPU time counts as this worker's."""
        if self.process is not None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()

    def answer(self, timeout: float) -> str:
        assert self.process and self.process.stdout and self.log
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise subprocess.TimeoutExpired("stage server", timeout)
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"the stage server ended (exit {self.process.wait()}):\n{self.log.read()[-3000:]}")
        return line.decode()


if __name__ == "__main__":
    serve()
