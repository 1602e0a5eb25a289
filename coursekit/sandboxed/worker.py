"""The sandboxed worker: runs a student's cells, then answers the grader's calls.

Started by :mod:`coursekit.grading.sandbox` as ``python -m coursekit.sandboxed.worker IN_FD OUT_FD``
inside the sandbox. Everything here is untrusted once the first student cell has run:
whatever this process sends back is treated by the grader as the student's answer, and
only plain values (see :mod:`coursekit.sandboxed.wire`) are accepted.

Protocol (one JSON object per line): the grader sends ``{"cells": [{"index", "source"}],
"limits": {...}, "uid": int|null}``; the worker sends ``cell_start`` / ``cell_end`` events
and then ``ready``, and afterwards answers requests ``get`` (a name), ``getattr`` and
``call`` (on references to objects that stay here) until its input closes.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import traceback
import types

from coursekit.sandboxed import wire

MAX_TRACEBACK_CHARS = 4_000


def _drop_privileges(uid: int | None) -> None:
    """Become ``uid`` (when started as root), forbid regaining privileges, drop capabilities."""
    if uid is not None and os.getuid() == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        except PermissionError:  # in a user namespace, where other uids are not mapped
            pass
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs = 38
    libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    linux_capability_version_3 = 0x20080522
    libc.capset(ctypes.byref(Header(linux_capability_version_3, 0)), (Data * 2)())


def _set_limits(limits: dict) -> None:
    memory = int(limits["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    files = int(limits["file_bytes"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (files, files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = int(limits["cpu_s"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))


class Worker:
    def __init__(self, inp, out) -> None:
        self.inp, self.out = inp, out
        self.namespace: dict = {"__name__": "__main__", "__builtins__": __builtins__}
        self.refs: dict[int, object] = {}

    def send(self, message: dict) -> None:
        self.out.write(wire.dumps(message))
        self.out.flush()

    def ref(self, obj) -> int:
        key = id(obj)
        self.refs[key] = obj
        return key

    def encode(self, value):
        return wire.encode(value, make_ref=self.ref)

    def decode(self, data):
        def tensor(array):
            import torch

            return torch.from_numpy(array.copy())

        def resolve(key):
            if key not in self.refs:
                raise KeyError(f"unknown reference {key}")
            return self.refs[key]

        return wire.decode(data, resolve_ref=resolve, make_tensor=tensor)

    @staticmethod
    def describe(err: BaseException) -> dict:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        return {"ename": type(err).__name__, "evalue": str(err)[:1000], "traceback": text[-MAX_TRACEBACK_CHARS:]}

    def run_cells(self, cells: list[dict]) -> None:
        for cell in cells:
            self.send({"event": "cell_start", "index": cell["index"]})
            error = None
            try:
                exec(compile(cell["source"], f"<cell {cell['index']}>", "exec"), self.namespace)
            except BaseException as err:  # noqa: BLE001 — SystemExit and KeyboardInterrupt included
                error = self.describe(err)
            self.send({"event": "cell_end", "index": cell["index"], "error": error})
        self.send({"event": "ready"})

    def answer(self, request: dict) -> dict:
        op = request.get("op")
        if op == "get":
            name = request["name"]
            if name not in self.namespace:
                return {"ok": False, "ename": "NameError", "evalue": f"name {name!r} is not defined"}
            value = self.namespace[name]
            if isinstance(value, types.ModuleType):
                return {"ok": True, "module": value.__name__}
            return {"ok": True, "value": self.encode(value), "callable": callable(value)}
        if op == "getattr":
            value = getattr(self.decode({"__ref__": request["ref"]}), request["name"])
            return {"ok": True, "value": self.encode(value), "callable": callable(value)}
        if op == "call":
            fn = self.decode({"__ref__": request["ref"]})
            args = self.decode(request.get("args", []))
            kwargs = self.decode(request.get("kwargs", {"__dict__": {}}))
            return {"ok": True, "value": self.encode(fn(*args, **kwargs))}
        return {"ok": False, "ename": "ValueError", "evalue": f"unknown op {op!r}"}

    def serve(self) -> None:
        for line in self.inp:
            try:
                reply = self.answer(wire.loads(line))
            except BaseException as err:  # noqa: BLE001 — the student's error is an answer too
                reply = {"ok": False, **self.describe(err)}
            try:
                self.send(reply)
            except wire.WireError as err:
                self.send({"ok": False, "ename": "WireError", "evalue": str(err), "traceback": ""})


def main(argv: list[str]) -> None:
    inp = os.fdopen(int(argv[0]), "rb")
    out = os.fdopen(int(argv[1]), "wb")
    setup = wire.loads(inp.readline())
    _set_limits(setup["limits"])
    _drop_privileges(setup.get("uid"))
    os.chdir(setup["workdir"])
    sys.path.insert(0, setup["workdir"])  # like a kernel started in the notebook's folder
    worker = Worker(inp, out)
    worker.run_cells(setup["cells"])
    worker.serve()


if __name__ == "__main__":
    main(sys.argv[1:])
