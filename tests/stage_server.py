"""Stages forked from a process that imported torch, transformers and PEFT once: one server per pytest worker.

A tiny-model stage spends 4 to 7 of its 5 to 12 CPU-seconds importing those libraries. Forked from a process
that holds them, it still runs as a process of its own: the real script as `__main__`, its own argv, working
directory, environment, stdin, stdout, stderr and exit status, its atexit handlers run. Two ways in:
- `workspace.stage`, for a stage a test runs itself;
- once the server runs, `workspace.child_env` puts a `python` stand-in first on PATH, so that the
  `python stages/X.py ...` that DVC runs for a stage is forwarded here; any other `python` command runs the
  real one. (DVC itself gains nothing from a fork: its commands cost as much forked as fresh.)
A request whose environment changes a variable that the preloaded libraries read when imported
(IMPORT_TIME_VARIABLES) is answered `fresh`: the client runs a fresh interpreter. A forked stage takes its
client's resource limits (`ulimit -f`); its process group and session are the server's: a test about those runs
the stage with `sys.executable` itself. The claims about a start itself run fresh interpreters: the params check
before torch's import (test_params), the kills (`workspace.start_training`), another hash seed (test_runs), and
`make demo` in the README flow (its Makefile puts the venv's python first on PATH). The user flows' other stages
(the README's next steps, the notebook, the cloud job) fork from a server of their own, started in the flow's
environment (`workspace.own_stage_server`): its HOME, not the worker's.

The server listens on a Unix socket. A client sends one JSON request line with its stdin, stdout and stderr
attached (SCM_RIGHTS); the server answers `fresh`, or the child's pid once forked and then its exit status
once it ended. A client that goes away (killed, timed out) takes its child with it (SIGKILL), as a killed
process would take the stage it runs in itself. Run as `python -m tests.stage_server SOCKET`."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import resource
import runpy
import select
import shutil
import signal
import socket
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
    "rouge_score.rouge_scorer",  # evaluate's scores: it imports all of NLTK (a second of CPU) for a stemmer
)
# Names (prefixes) of the environment variables that the preloaded libraries read at import: a request that
# changes one gets a fresh interpreter. HOME and XDG_*: where huggingface_hub and NLTK look for their files.
IMPORT_TIME_VARIABLES = (
    *("PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS", "TQDM", "TORCH", "PYTORCH", "OMP_", "MKL_", "CUDA", "BNB_"),
    *("PEFT", "NLTK", "HOME", "XDG_"),
)
READ_WHEN_USED = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}  # huggingface_hub reads the token at each request
# The resource limits a forked stage takes from its client, as a process inherits them from its parent.
LIMITS = ("RLIMIT_FSIZE", "RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_CORE")
ADDRESS = "LORAPIPE_TESTS_STAGE_SERVER"  # the server's socket, in the environment of what its stand-in runs


def serve(address: str) -> None:
    started_with = dict(os.environ)
    for name in PRELOAD:
        importlib.import_module(name)
    # What lorapipe's import added to the environment (each a setdefault): a child gets them under its own.
    defaults = {name: value for name, value in os.environ.items() if name not in started_with}
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    print("ready", flush=True)
    children: dict[int, socket.socket] = {}  # pid -> its client's connection
    abandoned: set[int] = set()  # children whose client went away: killed, not yet reaped
    while True:
        watched = [sys.stdin, listener, *(conn for pid, conn in children.items() if pid not in abandoned)]
        for ready in select.select(watched, [], [], 0.05)[0]:
            if ready is sys.stdin:
                if not os.read(0, 4096):  # the worker closed it: the run is over, and a stage still running with it
                    listener.close()
                    for pid in children:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                    return
            elif ready is listener:
                conn = listener.accept()[0]
                request, fds = receive(conn)
                if not forkable(request, started_with):
                    conn.sendall(b"fresh\n")
                    conn.close()
                    for fd in fds:
                        os.close(fd)
                    continue
                pid = os.fork()
                if pid == 0:
                    listener.close()
                    for other in [conn, *children.values()]:
                        other.close()
                    run_child(request, fds, defaults)
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())
                children[pid] = conn
            else:  # a client sends nothing after its request: readable means it went away
                pid = next(pid for pid, conn in children.items() if conn is ready)
                abandoned.add(pid)
                os.kill(pid, signal.SIGKILL)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = children.pop(pid)
            abandoned.discard(pid)
            with contextlib.suppress(OSError):  # its client may be gone
                conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()


def forkable(request: dict, server_env: dict[str, str]) -> bool:
    """Whether the request's process, forked from the server, runs as it would in a fresh interpreter: the same
    import-time environment, and limits the server's child can take (a hard limit can only be lowered)."""
    env = request["env"]
    names = {name for name in {*env, *server_env} if name.startswith(IMPORT_TIME_VARIABLES)} - READ_WHEN_USED
    if any(env.get(name) != server_env.get(name) for name in names):
        return False
    for name, (_, hard) in request["limits"].items():
        ours = resource.getrlimit(getattr(resource, name))[1]
        if ours != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > ours):
            return False
    return True


def current_limits(**overrides: int) -> dict[str, list[int]]:
    """This process's LIMITS (soft, hard), with `overrides` as both."""
    limits = {name: list(resource.getrlimit(getattr(resource, name))) for name in LIMITS}
    return {**limits, **{name: [value, value] for name, value in overrides.items()}}


def apply_limits(limits: dict[str, list[int]]) -> None:
    """Sets this process's resource limits: name -> (soft, hard), as current_limits gives them."""
    for name, (soft, hard) in limits.items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def stage_request(script: str, args: list[str], cwd: str, env: dict[str, str], **limits: int) -> dict:
    """What a client sends: `python script args` in `cwd` with `env`, and its resource limits but `limits`."""
    return {"script": script, "args": args, "cwd": cwd, "env": env, "limits": current_limits(**limits)}


def receive(conn: socket.socket) -> tuple[dict, list[int]]:
    message, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    while not message.endswith(b"\n"):
        message += conn.recv(1 << 16)
    return json.loads(message), fds


def run_child(request: dict, fds: list[int], defaults: dict[str, str]) -> None:
    """What `python SCRIPT ARGS...` does in `cwd` with `env` and the client's stdin, stdout and stderr, in this
    forked process; never returns."""
    code = 1
    try:
        os.chdir(request["cwd"])
        apply_limits(request["limits"])
        os.environ.clear()
        os.environ.update({**defaults, **request["env"]})
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        try:
            sys.argv = [request["script"], *request["args"]]
            sys.path[0] = str(Path(request["script"]).parent)  # as `python SCRIPT` sets it
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


def ask(address: str, request: dict, fds: tuple[int, int, int]) -> tuple[socket.socket, int] | None:
    """Sends `request` with `fds` as its stdin, stdout and stderr: the connection and the child's pid once the
    server forked it; None where there is no server or it says to run a fresh interpreter."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address)
    except OSError:
        conn.close()
        return None
    message = json.dumps(request).encode() + b"\n"
    sent = socket.send_fds(conn, [message], list(fds))
    if sent < len(message):  # (sending nothing to a server that already answered `fresh` would fail)
        conn.sendall(message[sent:])
    answer = read_line(conn)
    if answer == "fresh":
        conn.close()
        return None
    return conn, int(answer)


def read_line(conn: socket.socket) -> str:
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(64)
        if not chunk:
            raise ConnectionError("the stage server ended")
        line += chunk
    return line.decode().strip()


def forward() -> None:
    """The `python` stand-in on PATH: `python stages/X.py ...` forked from the server; anything else, or what
    the server does not take, runs the real `python` (the next on PATH)."""
    args = sys.argv[1:]
    address = os.environ.get(ADDRESS)
    script = Path(args[0]).resolve() if args and args[0].endswith(".py") else None
    if address and script and script.parent.name == "stages":
        request = stage_request(str(script), args[1:], os.getcwd(), dict(os.environ))
        asked = ask(address, request, (0, 1, 2))
        if asked:
            conn, pid = asked
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
                signal.signal(number, lambda number, _: os.kill(pid, number))
            code = int(read_line(conn))
            if code < 0:  # killed by a signal: so is this process, as its caller would see the real one
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            sys.exit(code)
    here = str(Path(sys.argv[0]).parent)
    path = os.pathsep.join(folder for folder in os.environ.get("PATH", "").split(os.pathsep) if folder != here)
    real = shutil.which("python", path=path)
    if real is None:
        sys.exit("python: not found on PATH")
    os.execv(real, [real, *args])  # a bare name would make Python look itself up on PATH: the stand-in


class StageServer:
    """The worker's side: starts the server on first use, forks a stage from it, and gives the environment
    that sends DVC's `python stages/...` there."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None  # the socket, and bin/python: the stand-in
        self.log: IO[str] | None = None  # the server's own stderr: its preload's notices, or why it ended

    def start(self, env: dict[str, str]) -> None:
        """The server in `env`, once: the environment that requests are compared with."""
        if self.process is not None:
            return
        # Under /tmp: a socket's path must stay under 108 bytes, which a long TMPDIR would not leave room for
        self.folder = Path(tempfile.mkdtemp(prefix="stage-server-", dir="/tmp" if os.path.isdir("/tmp") else None))
        (self.folder / "bin").mkdir()
        stand_in, root = self.folder / "bin/python", Path(__file__).parents[1]
        # -IS: no site-packages, no environment: it starts in milliseconds whatever the stage's environment
        stand_in.write_text(
            f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
            "from tests.stage_server import forward\nforward()\n"
        )
        stand_in.chmod(0o755)
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (open as long as the server runs; closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.stage_server", str(self.folder / "socket")],
            cwd=root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        atexit.register(self.stop)
        if self.process.stdout.readline() != b"ready\n":
            self.log.seek(0)
            raise RuntimeError(f"the stage server ended (exit {self.process.wait()}):\n{self.log.read()[-3000:]}")

    def environment(self, path: str) -> dict[str, str]:
        """PATH (`path`) with the stand-in first, and the server's address; nothing while no server runs."""
        if self.process is None:
            return {}
        return {"PATH": f"{self.folder / 'bin'}{os.pathsep}{path}", ADDRESS: str(self.folder / "socket")}

    def without(self, env: dict[str, str]) -> dict[str, str]:
        """`env` with no trace of the server: what runs in it starts fresh interpreters."""
        env = {name: value for name, value in env.items() if name != ADDRESS}
        if self.folder is not None and "PATH" in env:
            stand_ins = str(self.folder / "bin")
            env["PATH"] = os.pathsep.join(f for f in env["PATH"].split(os.pathsep) if f != stand_ins)
        return env

    def run(
        self, script: str, args: tuple[str, ...], cwd: Path, env: dict[str, str], timeout: float, limits: dict[str, int]
    ) -> subprocess.CompletedProcess | None:
        """`python script args` in `cwd` with `env` and this process's resource limits but `limits` (soft and hard),
        forked from the server; None where it must run fresh."""
        assert self.folder is not None
        request = stage_request(script, list(args), str(cwd), env, **limits)
        with tempfile.TemporaryDirectory() as folder, open(os.devnull) as stdin:
            out, err = Path(folder, "stdout"), Path(folder, "stderr")
            with open(out, "w") as stdout, open(err, "w") as stderr:
                asked = ask(str(self.folder / "socket"), request, (stdin.fileno(), stdout.fileno(), stderr.fileno()))
            if asked is None:
                return None
            conn, pid = asked
            conn.settimeout(timeout)
            try:
                code = int(read_line(conn))
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired([script, *args], timeout) from None
            finally:
                conn.close()
            stdout_text, stderr_text = out.read_text(), err.read_text()  # universal newlines, as text=True
        return subprocess.CompletedProcess([sys.executable, script, *args], code, stdout_text, stderr_text)

    def stop(self) -> None:
        """Ends the server (its stdin closed ends its loop) and reaps it: its CPU time counts as this worker's."""
        if self.process is not None:
            atexit.unregister(self.stop)
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            self.process = None


if __name__ == "__main__":
    serve(sys.argv[1])
