"""CPU instructions a running service spends per request, counted by valgrind's callgrind.

Instruction counts repeat from run to run whatever else the machine is doing, where
timings move by a third on a shared machine; so they are what a regression check in the
test command can compare with a committed baseline. The service runs as ``python -m
app`` under ``valgrind --tool=callgrind`` with instrumentation off (start-up at valgrind's
base slowdown), is warmed up, and then instrumentation is switched on around a batch of
requests only (``callgrind_control -i on|off``) and the counters dumped: the instructions
of the whole process (event loop, request, database driver, hashing threads) while those
requests ran, divided by their number.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from testkit.server_process import ServerProcess

# The interpreter's hash seed fixed (dict and set layouts, so the work, repeat) and the
# periodic work in the process slowed to less than once per measurement.
QUIET_ENV = {
    "PYTHONHASHSEED": "0",
    "USER_SERVICE_METRICS__POOL_SAMPLE_SECONDS": "3600",
    # Whether a request finds its caller cached depends on how long the last one took (a
    # second's cache, under valgrind's slowdown): every request looks its caller up.
    "USER_SERVICE_TOKENS__CALLER_CACHE_SECONDS": "0",
}


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


class Callgrind:
    def __init__(self, server: ServerProcess, out_dir: Path) -> None:
        self.server = server
        self.out_dir = out_dir
        self.out_file = out_dir / "callgrind.out"

    def start(self, timeout: float = 300.0) -> Callgrind:
        valgrind = shutil.which("valgrind")
        assert valgrind is not None
        self.server.command_prefix = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out_file}",
        ]
        self.server.start(timeout=timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def _control(self, *arguments: str) -> None:
        control = shutil.which("callgrind_control")
        assert control is not None
        subprocess.run([control, *arguments, str(self.pid)], check=True, capture_output=True, timeout=60)

    def instructions_per_call(self, call: Callable[[], None], times: int) -> float:
        """Instructions of the whole process while ``call`` ran ``times`` times, per call."""
        self._control("--zero")
        self._control("--instr=on")
        for _ in range(times):
            call()
        self._control("--instr=off")
        before = set(self.out_dir.glob("callgrind.out*"))
        self._control("--dump")
        deadline = time.monotonic() + 60
        while not (new := set(self.out_dir.glob("callgrind.out*")) - before) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert new, "callgrind wrote no dump"
        dump = max(new, key=lambda p: p.stat().st_mtime)
        time.sleep(0.5)  # the dump is written in one go, but give it a moment to close
        return _total_instructions(dump.read_text()) / times


def _total_instructions(dump: str) -> int:
    # "summary:" in the header is written before the counts are known; "totals:" ends the file.
    found = re.search(r"^totals:\s+(\d+)", dump, re.MULTILINE)
    assert found, "no totals in the callgrind dump"
    return int(found.group(1))
