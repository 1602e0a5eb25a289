"""Start the worker in a sandbox, enforce the limits, and talk to it.

Isolation on Linux (with ``unshare``; as root, or through a user namespace otherwise):

- a new PID namespace whose first process is the worker, so killing it kills every process
  the student started, background daemons included (``--kill-child`` ties it to us);
- a new network namespace in which only its own loopback interface is up: processes of one
  submission can talk to each other on 127.0.0.1 (``torch.distributed`` with gloo, chapter 09),
  but nothing else is reachable, the machine's own 127.0.0.1 included;
- a new mount namespace whose root is a fresh tmpfs built from an allow-list (then
  ``pivot_root``: the machine's own file system is gone, not covered): read-only binds of the
  system's programs and libraries (``/usr/bin``, ``/usr/lib*``), the Python installation (the
  virtual environment and the base interpreter's prefix), the ``dlwb`` package, the worker's own
  code (``coursekit.sandboxed``: none of the grader, its tests or the master notebooks) and the lab's
  data; a minimal ``/etc`` written for it; ``/dev`` with its basic devices; ``/proc`` of its
  own PID namespace; private, size-limited tmpfs for ``/tmp``, ``/var/tmp`` and ``/dev/shm``;
  and its own working folder, the only place on the machine it can write;
- the worker then gives up root (``nobody``) and all capabilities, so it cannot undo that.

Everywhere: a fresh process group killed with SIGKILL on any time-out; limits on address
space (memory), file size, per-cell, per-call and all-cells time, and a time budget for the
whole submission (``deadline``: cells, restarts and tests together); stdout/stderr drained
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
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from coursekit.sandboxed import wire

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
    submission_timeout_s: float = 900.0  # everything for one submission: cells, restarts and tests
    memory_bytes: int = 4 << 30  # address space of the worker
    file_bytes: int = 64 << 20  # largest file the worker may write
    scratch_bytes: int = 256 << 20  # each private temporary folder (/tmp, /var/tmp, /dev/shm), held in memory
    output_bytes: int = 256 << 10  # stdout + stderr kept (the rest is discarded)

    def as_dict(self) -> dict:
        # CPU seconds: a backstop in the worker itself, should the grader fail to stop it.
        return {"memory_bytes": self.memory_bytes, "file_bytes": self.file_bytes,
                "cpu_s": int(2 * self.submission_timeout_s)}  # twice: a few threads may run at once


class SandboxDied(RuntimeError):
    """The worker is gone: it exited, was killed for a limit, or timed out."""


class CallTimedOut(SandboxDied):
    """A call did not return within its limit; the worker was killed (a fresh one may be started)."""


class BudgetSpent(SandboxDied):
    """The submission's whole time budget (``Limits.submission_timeout_s``) ran out; the worker was killed."""

    def __init__(self, limit_s: float):
        super().__init__(f"used up the grading time budget ({limit_s:g} s for the whole submission, tests included)")


@dataclass
class CellResult:
    index: int
    error: dict | None = None  # {"ename", "evalue", "traceback"} from the worker
    seconds: float = 0.0


@dataclass
class RunReport:
    cells: list[CellResult] = field(default_factory=list)
    died: str | None = None  # why the worker is gone, if it is ("timed out in cell 4", …)
    timed_out: int | None = None  # the cell that was running when a time limit killed the worker
    limit_s: float | None = None  # … and that limit, in seconds


def _error(error) -> dict | None:
    """A cell's error as the worker reported it, in the shape the grader reads (or ``None``)."""
    if not isinstance(error, dict):
        return None
    return {"ename": str(error.get("ename", "Error"))[:100], "evalue": str(error.get("evalue", ""))[:1000],
            "traceback": str(error.get("traceback", ""))[-4000:]}


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


SYSTEM_DIRS = ("/usr/bin", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libx32")  # programs and libraries
TOP_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # links into /usr on most systems
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def _etc_files() -> dict[str, str]:
    """The sandbox's whole ``/etc``: who ``root`` and ``nobody`` are, and which names are this machine."""
    import socket

    return {
        "passwd": f"root:x:0:0:root:/root:/bin/sh\nnobody:x:{NOBODY_UID}:{NOBODY_UID}:nobody:/nonexistent:/bin/false\n",
        "group": f"root:x:0:\nnogroup:x:{NOBODY_UID}:\n",
        "hosts": f"127.0.0.1 localhost {socket.gethostname()}\n::1 localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    }


def _root_script(root: str, binds: list[tuple[Path, bool]], scratch_bytes: int) -> str:
    """Shell commands that build a new root at ``root`` from ``binds`` (path, writable) and enter it."""
    q = shlex.quote

    def at(path) -> str:
        return q(f"{root}{path}")

    lines = ["set -e", "mount --make-rprivate /", f"mount -t tmpfs -o mode=0755,size=1m dlwb-root {q(root)}",
             f"mkdir -p {at('/dev')} {at('/proc')} {at('/etc')} {at('/var')}",
             f"mount -t tmpfs -o mode=0755,size=64k dlwb-dev {at('/dev')}"]
    for path in PRIVATE_DIRS:
        lines += [f"mkdir -p {at(path)}",
                  f"mount -t tmpfs -o mode=1777,size={scratch_bytes >> 10}k dlwb-scratch {at(path)}"]
    for name in DEVICES:
        if Path(f"/dev/{name}").exists():
            lines += [f"touch {at('/dev/' + name)}", f"mount --bind /dev/{name} {at('/dev/' + name)}"]
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        lines.append(f"ln -s {target} {at('/dev/' + name)}")
    lines.append(f"mount -t proc -o nosuid,nodev,noexec proc {at('/proc')} || mount --rbind /proc {at('/proc')}")
    for path, writable in sorted(binds, key=lambda b: len(b[0].parts)):  # folders before what is inside them
        make = f"mkdir -p {at(path)}" if path.is_dir() else f"mkdir -p {at(path.parent)}; touch {at(path)}"
        lines += [make, f"mount --bind {q(str(path))} {at(path)}"]
        if not writable:  # a mount's locked flags (in a user namespace) must be kept when remounting
            lines.append(" || ".join(f"mount -o remount,bind,ro{extra} {at(path)}"
                                     for extra in ("", ",nosuid,nodev", ",nosuid,nodev,noexec")))
    for top in TOP_DIRS:
        if Path(top).is_symlink():
            lines.append(f"ln -s {q(os.readlink(top))} {at(top)}")
    for name, text in _etc_files().items():
        lines.append(f"printf %s {q(text)} > {at('/etc/' + name)}")
    lines += [f"cd {q(root)}", "mkdir .old-root", "pivot_root . .old-root", "cd /", "umount -l /.old-root",
              "rmdir /.old-root", "mount -o remount,ro /"]
    return "\n".join(lines)


def _die_with_parent() -> None:
    """In the child before exec: be killed if the grader dies, so no sandbox is ever orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class Sandbox:
    """One worker process for one submission. Use as a context manager."""

    def __init__(self, workdir: Path, *, limits: Limits, readable: list[Path] = (), allow_unisolated: bool = False,
                 deadline: float | None = None):
        """``readable``: files and folders the student's program may read (never write), such as the
        lab's data; ``deadline``: a ``time.monotonic()`` by which everything must be done (the
        submission's budget)."""
        self.workdir, self.limits, self.readable = workdir, limits, [Path(p) for p in readable]
        self.deadline = deadline
        self.prefix = isolation_prefix()
        if self.prefix is None and not allow_unisolated:
            raise RuntimeError(
                "this machine cannot isolate student code (Linux 'unshare' with namespaces is needed). "
                "Grade on Linux, or pass --allow-unisolated to grade trusted submissions without isolation."
            )
        self.isolated = self.prefix is not None
        self.proc: subprocess.Popen | None = None
        self._output = bytearray()
        self._dropped = 0
        self._buffer = b""

    def _binds(self) -> list[tuple[Path, bool]]:
        """Everything the sandbox sees of the machine, as (path, writable); the same path inside."""
        import coursekit.sandboxed
        import dlwb

        sandboxed = Path(coursekit.sandboxed.__file__).resolve().parent  # the worker and the wire format, no more
        system = [Path(p) for p in SYSTEM_DIRS if Path(p).is_dir() and not Path(p).is_symlink()]
        system += [Path(p) for p in TOP_DIRS if Path(p).is_dir() and not Path(p).is_symlink()]
        python = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()} - {Path("/usr"), Path("/")}
        config = [Path("/etc/ld.so.cache"), Path("/etc/fonts")]  # where libraries are; fonts' settings
        readable = [*system, *python, *config, Path(dlwb.__file__).resolve().parent,
                    sandboxed.parent / "__init__.py", sandboxed, *(p.resolve() for p in self.readable)]
        binds = [(p, False) for p in readable if p.exists()]
        return [*binds, (self.workdir.resolve(), True)]

    def _command(self, in_fd: int, out_fd: int) -> list[str]:
        worker = [sys.executable, "-I", "-u", "-m", "coursekit.sandboxed.worker", str(in_fd), str(out_fd)]
        if not self.isolated:
            return worker
        binds = self._binds()
        # The new root is mounted on an existing folder that holds nothing it must bind.
        root = next(p for p in ("/mnt", "/media", "/srv", "/opt", "/var/empty", "/boot")
                    if Path(p).is_dir() and not any(b.is_relative_to(p) for b, _ in binds))
        # The shell stays as the namespace's first process (PID 1, which ignores signals sent from
        # inside); the worker is its child, so a submission that kills itself really dies.
        loopback = " ".join(shlex.quote(a) for a in (sys.executable, "-I", "-c", LOOPBACK_UP))
        script = "\n".join([_root_script(root, binds, self.limits.scratch_bytes), loopback,
                            " ".join(shlex.quote(a) for a in worker)])
        return [*self.prefix, "sh", "-c", script]

    def start(self, cells: list[dict]) -> RunReport:
        """Run the student's cells; returns per-cell results and how the worker ended, if it did."""
        to_worker_r, to_worker_w = os.pipe()
        from_worker_r, from_worker_w = os.pipe()
        self.workdir.chmod(0o777)  # the worker runs as nobody
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.workdir), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1",
               "DLWB_OFFLINE": "1"}
        env.update({k: os.environ[k] for k in ("DLWB_CACHE_DIR", "DLWB_DATA_DIR") if k in os.environ})
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
        sent = {c["index"] for c in cells}
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
                    report.timed_out, report.limit_s = current, limit
                    self.kill()
                    break
                if event.get("event") in ("cell_start", "cell_end") and event.get("index") not in sent:
                    self.kill()
                    raise SandboxDied("sent a malformed message (a cell it was not given)")
                if event.get("event") == "cell_start":
                    current, started = event["index"], time.monotonic()
                elif event.get("event") == "cell_end":
                    report.cells.append(CellResult(event["index"], _error(event.get("error")),
                                                   time.monotonic() - started))
                    current = None
                elif event.get("event") == "ready":
                    break
        except SandboxDied as err:
            report.died = f"{err}" + (f" in cell {current}" if current is not None else "")
        return report

    def _receive(self, deadline: float) -> dict:
        budget = self.deadline is not None and self.deadline <= deadline
        deadline = min(deadline, self.deadline) if budget else deadline
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready = select.select([self._from], [], [], remaining)[0] if remaining > 0 else []
            if not ready and budget:
                self.kill()
                raise BudgetSpent(self.limits.submission_timeout_s)
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
            raise CallTimedOut(f"did not return within {self.limits.call_timeout_s:g} s") from None

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
        self.close()

    def close(self) -> None:
        """Kill the worker and close the pipes to it (again: nothing more)."""
        self.kill()
        to, self._to = getattr(self, "_to", None), None
        if to is not None:
            try:
                to.close()
            except OSError:
                pass
        from_fd, self._from = getattr(self, "_from", None), None
        if from_fd is not None:
            os.close(from_fd)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
