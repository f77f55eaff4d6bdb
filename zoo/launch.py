"""`zoo launch --local N -- train CONFIG ...`: N processes of one run on this machine.

Each child is `python -m zoo.cli <command> ... --distributed` with ZOO_COORDINATOR (127.0.0.1 and a
free port; ZOO_COORDINATOR_BIND the same, so process 0's coordinator service listens on loopback only),
ZOO_NUM_PROCESSES and ZOO_PROCESS_ID set; on CPU they talk through gloo. Their output is
prefixed with the process id; SIGINT and SIGTERM are forwarded to all; the launcher exits with the
first non-zero status (a child killed by a signal counts as 128 + signal).

`supervise` runs one process of a multi-process run the same way (`zoo train --distributed` under
srun, or started by hand): the work runs in a child whose stderr passes through `Relay`, so when the
JAX runtime ends a process because process 0 (the coordinator, host of its coordination service)
died, the user reads one line, not the runtime's multi-line fatal log and stack trace.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from zoo.errors import ConfigError

COMMANDS = ("train", "compare", "eval")
GRACE_SECONDS = 120.0  # after one child fails, how long the others get to notice before SIGTERM
SUPERVISED = "ZOO_SUPERVISED"  # set in a child whose stderr a supervisor or the launcher relays
HOLD_SECONDS = 2.0  # how long the runtime's log lines wait for a fatal line before they pass on
# The JAX runtime's own log lines (absl format: "E1203 07:11:22.071954   23795 file.cc:289] ...").
RUNTIME_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")
FATAL = "Terminating process because the JAX distributed service detected fatal errors"


class Relay:
    """One child's stderr on its way to ours, line by line and in order. The JAX runtime's log lines
    (and whatever follows them) are held for HOLD_SECONDS: when the runtime then ends the process
    because the coordination service is gone (its fatal line, a stack trace, SIGABRT), the user gets
    one line naming what happened; otherwise the held lines pass on unchanged."""

    def __init__(self, out, prefix: str, lock: threading.Lock, process_id: int | str | None, watch: bool = True):
        self.out, self.prefix, self.lock, self.process_id, self.watch = out, prefix, lock, process_id, watch
        self.held: list[str] = []
        self.since = 0.0
        self.fatal: str | None = None

    def feed(self, line: str) -> None:
        line = line if line.endswith("\n") else line + "\n"
        with self.lock:
            if not self.held and not (self.watch and RUNTIME_LOG.match(line)):
                self._write([line])
                return
            if not self.held:
                self.since = time.monotonic()
            self.held.append(line)
            if FATAL in line:
                self.fatal = line

    def tick(self) -> None:
        """Passes on held lines once they are older than HOLD_SECONDS and no fatal line came."""
        with self.lock:
            if self.held and self.fatal is None and time.monotonic() - self.since > HOLD_SECONDS:
                self._write(self.held)
                self.held = []

    def close(self, status: int) -> int:
        """At the child's exit: its status, or 1 with one line if the runtime ended it."""
        with self.lock:
            if self.fatal is not None and status != 0:
                own = next((line for line in self.held if line.startswith("zoo: error:")), None)
                self._write([own or self._lost_coordinator()])
                self.held = []
                return 1
            self._write(self.held)
            self.held = []
            return status

    def _lost_coordinator(self) -> str:
        reason = re.search(r"absl::Status: ([A-Z_]+: [^.]*)", self.fatal or "")
        who = f"process {self.process_id}" if self.process_id is not None else "this process"
        return (f"zoo: error: {who} lost contact with the rest of the run (the JAX distributed service "
                f"is gone: {reason.group(1)[:120] if reason else 'fatal error'}): process 0, the coordinator, "
                "stopped or crashed (see its output); rerun the same command on every process to resume "
                "from the last checkpoint\n")

    def _write(self, lines: list[str]) -> None:
        for line in lines:
            self.out.write(f"{self.prefix}{line}")
        self.out.flush()


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGKILL it when its supervisor dies, so `kill -9` of the
    supervisor (a scheduler's, a test's) ends the work too, as it would without a supervisor."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(command: list[str], env: dict, stdout) -> subprocess.Popen:
    # A session of its own: Ctrl-C in a terminal reaches the supervisor only, which forwards it once.
    return subprocess.Popen([sys.executable, "-m", "zoo.cli", *command], env={**env, SUPERVISED: "1"},
                            stdout=stdout, stderr=subprocess.PIPE, text=True, bufsize=1,
                            start_new_session=True, preexec_fn=_die_with_parent)


def _forwarding(children) -> dict:
    """SIGINT and SIGTERM reach the children (main thread only); returns the previous handlers."""
    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def wants_supervisor(argv: list[str]) -> bool:
    """A multi-process train, eval or compare not already relayed by a supervisor or the launcher."""
    if os.environ.get(SUPERVISED) or not argv or argv[0] not in COMMANDS:
        return False
    return any(arg == "--distributed" or arg.split("=")[0] in ("--coordinator", "--num-processes", "--process-id",
                                                                  "--coordinator-bind")
               for arg in argv[1:])


def supervise(argv: list[str], stderr=None) -> int:
    """Runs `zoo <argv>` in a child and relays its stderr; returns its status (128 + S if killed by
    signal S) or 1 with one line when the JAX runtime ended it for a lost coordinator."""
    stderr = stderr or sys.stderr
    process_id = next((argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--process-id"),
                      next((arg.split("=", 1)[1] for arg in argv if arg.startswith("--process-id=")),
                           os.environ.get("ZOO_PROCESS_ID")))
    relay = Relay(stderr, "", threading.Lock(), process_id)
    child = _spawn(argv, dict(os.environ), None)
    pump = threading.Thread(target=_pump, args=(child.stderr, relay), daemon=True)
    pump.start()
    previous = _forwarding([child])
    try:
        while child.poll() is None:
            relay.tick()
            time.sleep(0.05)
        pump.join(timeout=5)
        return relay.close(_status(child.returncode))
    finally:
        _restore(previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(base: dict, port: int, processes: int, index: int, devices: int | None) -> dict:
    # The coordinator service listens on loopback only (JAX's default is every interface).
    env = {**base, "ZOO_COORDINATOR": f"127.0.0.1:{port}", "ZOO_COORDINATOR_BIND": f"127.0.0.1:{port}",
           "ZOO_NUM_PROCESSES": str(processes), "ZOO_PROCESS_ID": str(index),
           "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
    if devices:
        flags = [flag for flag in base.get("XLA_FLAGS", "").split()
                 if not flag.startswith("--xla_force_host_platform_device_count")]
        env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
        visible = [d for d in base.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if len(visible) >= processes * devices:  # GPUs: each process gets its own K of the visible ones
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[index * devices:(index + 1) * devices])
    return env


def check_command(command: list[str], processes: int, devices: int | None) -> list[str]:
    if processes < 1:
        raise ConfigError(f"--local {processes} must be at least 1 process")
    if devices is not None and devices < 1:
        raise ConfigError(f"--devices-per-process {devices} must be at least 1")
    if command and command[0] == "--":
        command = command[1:]
    if not command or command[0] not in COMMANDS:
        got = f"'{command[0]}'" if command else "nothing"
        raise ConfigError(f"zoo launch runs one of {', '.join(COMMANDS)} after '--', got {got}: e.g. "
                          "zoo launch --local 2 -- train configs/digits/mlp.yaml")
    return command if "--distributed" in command else [*command, "--distributed"]


def _pump(stream, relay: Relay) -> None:
    for line in iter(stream.readline, ""):
        relay.feed(line)
    stream.close()


def _status(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal S: 128 + S, as a shell reports it


def launch_local(command: list[str], processes: int, devices: int | None = None, stdout=None, stderr=None) -> int:
    """Runs `zoo <command> --distributed` in `processes` processes; returns the first non-zero status."""
    command = check_command(command, processes, devices)
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    port, lock = free_port(), threading.Lock()
    children, relays, pumps = [], [], []
    for index in range(processes):
        child = _spawn(command, child_env(dict(os.environ), port, processes, index, devices), subprocess.PIPE)
        children.append(child)
        relay, prefix = Relay(stderr, f"[{index}] ", lock, index), f"[{index}] "
        relays.append(relay)
        for stream, target in ((child.stdout, Relay(stdout, prefix, lock, index, watch=False)), (child.stderr, relay)):
            pump = threading.Thread(target=_pump, args=(stream, target), daemon=True)
            pump.start()
            pumps.append(pump)
    previous = _forwarding(children)
    try:
        first, failed_at = None, None
        while any(child.poll() is None for child in children):
            for relay in relays:
                relay.tick()
            for index, child in enumerate(children):
                code = child.poll()
                if code is not None and code != 0 and first is None:
                    first, failed_at = index, time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                for child in children:
                    if child.poll() is None:
                        child.kill()
            time.sleep(0.05)
        for pump in pumps:
            pump.join(timeout=5)
        statuses = [relay.close(_status(child.returncode)) for relay, child in zip(relays, children)]
        if first is None:
            first = next((index for index, status in enumerate(statuses) if status), None)
        return 0 if first is None else statuses[first]
    finally:
        _restore(previous)
