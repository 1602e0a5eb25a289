"""Start the worker in a sandbox, enforce the limits, and talk to it.

Isolation on Linux (with ``unshare``; as root, or through a user namespace otherwise):

- a new PID namespace whose first process is the worker, so killing it kills every process
  the student started, background daemons included (``--kill-child`` ties it to us);
- a new network namespace in which only its own loopback interface is up: processes of one
  submission can talk to each other on 127.0.0.1 (``torch.distributed`` with gloo, chapter 09),
  but nothing else is reachable, the machine's own 127.0.0.1 included;
- a new mount namespace in which the course, the solutions, the submissions, the gradebook,
  ``/tmp`` and home directories are covered by empty tmpfs mounts, and only what the worker
  needs is bound back (read-only): Python, the ``dlwb`` package, and its own working folder;
- the worker then gives up root (``nobody``) and all capabilities, so it cannot undo that.

Everywhere: a fresh process group killed with SIGKILL on any time-out; limits on address
space (memory), file size, per-cell, per-call and whole-run time; stdout/stderr drained
continuously and capped. Where no isolation is available, grading refuses to run unless
the instructor passes ``allow_unisolated`` (and the report says so).
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from dlwb.grading import wire

NOBODY_UID = 65534

# Sets IFF_UP on "lo" (ioctls SIOCGIFFLAGS, SIOCSIFFLAGS on struct ifreq), without depending on iproute2.
LOOPBACK_UP = ("import fcntl, socket, struct; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
               "f = struct.unpack('16sH14x', fcntl.ioctl(s, 0x8913, struct.pack('16sH14x', b'lo', 0)))[1]; "
               "fcntl.ioctl(s, 0x8914, struct.pack('16sH14x', b'lo', f | 1))")


@dataclass(frozen=True)
class Limits:
    """Resource limits for one submission; every value can be set from the command line."""

    cell_timeout_s: float = 120.0  # one student cell
    total_timeout_s: float = 600.0  # all student cells together
    call_timeout_s: float = 60.0  # one call made by a test
    memory_bytes: int = 4 << 30  # address space of the worker
    file_bytes: int = 64 << 20  # largest file the worker may write
    output_bytes: int = 256 << 10  # stdout + stderr kept (the rest is discarded)

    def as_dict(self) -> dict:
        # CPU seconds: a backstop in the worker itself, should the grader fail to stop it.
        return {"memory_bytes": self.memory_bytes, "file_bytes": self.file_bytes,
                "cpu_s": int(self.total_timeout_s + 100 * self.call_timeout_s)}


class SandboxDied(RuntimeError):
    """The worker is gone: it exited, was killed for a limit, or timed out."""


@dataclass
class CellResult:
    index: int
    error: dict | None = None  # {"ename", "evalue", "traceback"} from the worker
    seconds: float = 0.0


@dataclass
class RunReport:
    cells: list[CellResult] = field(default_factory=list)
    died: str | None = None  # why the worker is gone, if it is ("timed out in cell 4", …)


@lru_cache(maxsize=1)
def isolation_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` command line that works on this machine, or ``None``."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return None
    base = (unshare, "--fork", "--kill-child", "--pid", "--mount-proc", "--net", "--mount")
    for prefix in (base, base + ("--map-root-user",)):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=20).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return prefix
    return None


def _mount_script(masks: list[Path], keep: list[tuple[Path, bool]]) -> str:
    """Shell commands that hide ``masks`` and bind back ``keep`` (path, writable)."""
    stash = next(p for p in ("/mnt", "/media", "/srv", "/opt", "/var") if Path(p).is_dir())
    q = shlex.quote
    lines = ["set -e", "mount --make-rprivate /", f"mount -t tmpfs -o mode=0755 dlwb-stash {stash}"]
    for i, (path, _) in enumerate(keep):
        kind = "mkdir -p" if path.is_dir() else "touch"
        lines += [f"{kind} {stash}/k{i}", f"mount --bind {q(str(path))} {stash}/k{i}"]
    for mask in masks:
        lines.append(f"mount -t tmpfs -o mode=0755 dlwb-mask {q(str(mask))}")
    for i, (path, writable) in enumerate(keep):
        kind = "mkdir -p" if path.is_dir() else "touch"
        lines += [f"{kind} {q(str(path))} 2>/dev/null || true", f"mount --bind {stash}/k{i} {q(str(path))}"]
        if not writable:
            lines.append(f"mount -o remount,bind,ro {q(str(path))}")
    return "\n".join(lines)


def _die_with_parent() -> None:
    """In the child before exec: be killed if the grader dies, so no sandbox is ever orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _outermost(paths: list[Path]) -> list[Path]:
    paths = sorted({p.resolve() for p in paths if p.exists()})
    return [p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)]


class Sandbox:
    """One worker process for one submission. Use as a context manager."""

    def __init__(self, workdir: Path, *, limits: Limits, hide: list[Path], allow_unisolated: bool = False):
        self.workdir, self.limits = workdir, limits
        self.prefix = isolation_prefix()
        if self.prefix is None and not allow_unisolated:
            raise RuntimeError(
                "this machine cannot isolate student code (Linux 'unshare' with namespaces is needed). "
                "Grade on Linux, or pass --allow-unisolated to grade trusted submissions without isolation."
            )
        self.isolated = self.prefix is not None
        self.hide = hide
        self.proc: subprocess.Popen | None = None
        self._output = bytearray()
        self._dropped = 0
        self._buffer = b""

    def _command(self, in_fd: int, out_fd: int) -> list[str]:
        worker = [sys.executable, "-I", "-u", "-m", "dlwb.grading.worker", str(in_fd), str(out_fd)]
        if not self.isolated:
            return worker
        import dlwb

        home = Path.home()
        masks = _outermost([*self.hide, Path(tempfile.gettempdir()), home, Path("/home"), Path("/root")])
        keep = [(Path(sys.prefix).resolve(), False), (Path(sys.base_prefix).resolve(), False),
                (Path(dlwb.__file__).resolve().parent, False), (self.workdir.resolve(), True)]
        keep = [(p, w) for p, w in keep if any(p.is_relative_to(m) for m in masks)]
        # The shell stays as the namespace's first process (PID 1, which ignores signals sent from
        # inside); the worker is its child, so a submission that kills itself really dies.
        loopback = " ".join(shlex.quote(a) for a in (sys.executable, "-I", "-c", LOOPBACK_UP))
        script = "\n".join([_mount_script(masks, keep), loopback, " ".join(shlex.quote(a) for a in worker)])
        return [*self.prefix, "sh", "-c", script]

    def start(self, cells: list[dict]) -> RunReport:
        """Run the student's cells; returns per-cell results and how the worker ended, if it did."""
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        self.workdir.chmod(0o777)  # the worker runs as nobody
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
               "DLWB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            self._command(to_worker_r, from_worker_w), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, pass_fds=(to_worker_r, from_worker_w), cwd=self.workdir, env=env,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        os.close(to_worker_r)
        os.close(from_worker_w)
        self._to = os.fdopen(to_worker_w, "wb")
        self._from = from_worker_r
        self._drain = threading.Thread(target=self._collect_output, daemon=True)
        self._drain.start()
        report = RunReport()
        setup = {"cells": cells, "limits": self.limits.as_dict(), "workdir": str(self.workdir),
                 "uid": NOBODY_UID if self.isolated else None}
        try:
            self._to.write(wire.dumps(setup))
            self._to.flush()
            deadline = time.monotonic() + self.limits.total_timeout_s
            current, started = None, time.monotonic()
            while True:
                cell_deadline = started + self.limits.cell_timeout_s if current is not None else deadline
                try:
                    event = self._receive(min(deadline, cell_deadline))
                except TimeoutError:
                    where = f"in cell {current}" if current is not None else "before the first cell"
                    limit = self.limits.cell_timeout_s if cell_deadline <= deadline else self.limits.total_timeout_s
                    report.died = f"timed out {where} (limit {limit:g} s)"
                    self.kill()
                    break
                if event.get("event") == "cell_start":
                    current, started = event.get("index"), time.monotonic()
                elif event.get("event") == "cell_end":
                    error = event.get("error")
                    report.cells.append(CellResult(event.get("index"), error if isinstance(error, dict) else None,
                                                   time.monotonic() - started))
                    current = None
                elif event.get("event") == "ready":
                    break
        except SandboxDied as err:
            report.died = f"{err}" + (f" in cell {current}" if current is not None else "")
        return report

    def _receive(self, deadline: float) -> dict:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._from], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise SandboxDied(self._death_reason())
            self._buffer += chunk
            if len(self._buffer) > wire.MAX_MESSAGE_BYTES:
                self.kill()
                raise SandboxDied("sent a message larger than the limit")
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return wire.loads(line)
        except wire.WireError as err:
            self.kill()
            raise SandboxDied(f"sent a malformed message ({err})") from None

    def _death_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "stopped answering"
        # Through unshare, a worker killed by signal N shows as exit status 128 + N.
        signum = -code if code < 0 else code - 128 if code > 128 else None
        if signum == signal.SIGKILL:
            return f"the program was killed (out of memory? limit {self.limits.memory_bytes >> 20} MiB)"
        if signum:
            return f"the program died from signal {signal.Signals(signum).name}"
        return f"the program exited (status {code}: sys.exit or os._exit?)"

    def request(self, message: dict) -> dict:
        """Send one request and wait for its answer, within the per-call time limit."""
        if self.proc is None or self.proc.poll() is not None:
            raise SandboxDied("the program is not running")
        try:
            self._to.write(wire.dumps(message))
            self._to.flush()
        except (BrokenPipeError, OSError):
            raise SandboxDied(self._death_reason()) from None
        try:
            return self._receive(time.monotonic() + self.limits.call_timeout_s)
        except TimeoutError:
            self.kill()
            raise SandboxDied(f"a call did not return within {self.limits.call_timeout_s:g} s") from None

    def _collect_output(self) -> None:
        for chunk in iter(lambda: self.proc.stdout.read1(1 << 16), b""):
            room = self.limits.output_bytes - len(self._output)
            self._output += chunk[: max(room, 0)]
            self._dropped += max(len(chunk) - max(room, 0), 0)

    def output(self) -> str:
        """Everything the student's code printed (capped); complete once the worker has ended."""
        if self.proc is not None and self.proc.poll() is not None:
            self._drain.join(timeout=5)
        text = self._output.decode("utf-8", errors="replace")
        return text + (f"\n[… {self._dropped:,} more bytes of output discarded]" if self._dropped else "")

    def kill(self) -> None:
        """SIGKILL the worker's process group and its PID namespace (every process it started)."""
        if self.proc is None:
            return
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            children = []
        for pid in children:  # the namespace's first process: its death ends the namespace
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        for stream in (getattr(self, "_to", None),):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if getattr(self, "_from", None) is not None:
            os.close(self._from)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
