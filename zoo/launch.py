"""`zoo launch --local N -- train CONFIG ...`: N processes of one run on this machine.

Each child is `python -m zoo.cli <command> ... --distributed` with ZOO_COORDINATOR (127.0.0.1 and a
free port), ZOO_NUM_PROCESSES and ZOO_PROCESS_ID set; on CPU they talk through gloo. Their output is
prefixed with the process id; SIGINT and SIGTERM are forwarded to all; the launcher exits with the
first non-zero status (a child killed by a signal counts as 128 + signal).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from zoo.errors import ConfigError

COMMANDS = ("train", "compare", "eval")
GRACE_SECONDS = 120.0  # after one child fails, how long the others get to notice before SIGTERM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(base: dict, port: int, processes: int, index: int, devices: int | None) -> dict:
    env = {**base, "ZOO_COORDINATOR": f"127.0.0.1:{port}", "ZOO_NUM_PROCESSES": str(processes),
           "ZOO_PROCESS_ID": str(index), "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo"}
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


def _pump(stream, out, prefix: str, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(f"{prefix}{line}" if line.endswith("\n") else f"{prefix}{line}\n")
            out.flush()
    stream.close()


def _status(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal S: 128 + S, as a shell reports it


def launch_local(command: list[str], processes: int, devices: int | None = None, stdout=None, stderr=None) -> int:
    """Runs `zoo <command> --distributed` in `processes` processes; returns the first non-zero status."""
    command = check_command(command, processes, devices)
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    port, lock = free_port(), threading.Lock()
    children, pumps = [], []
    for index in range(processes):
        # A session of its own: Ctrl-C in a terminal reaches the launcher only, which forwards it once.
        child = subprocess.Popen([sys.executable, "-m", "zoo.cli", *command],
                                 env=child_env(dict(os.environ), port, processes, index, devices),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                 start_new_session=True)
        children.append(child)
        for stream, out in ((child.stdout, stdout), (child.stderr, stderr)):
            pump = threading.Thread(target=_pump, args=(stream, out, f"[{index}] ", lock), daemon=True)
            pump.start()
            pumps.append(pump)

    def forward(signum, _frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        first_failure, failed_at = 0, None
        while any(child.poll() is None for child in children):
            for child in children:
                code = child.poll()
                if code is not None and code != 0 and not first_failure:
                    first_failure, failed_at = _status(code), time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > GRACE_SECONDS:
                forward(signal.SIGKILL, None)
            time.sleep(0.05)
        for child in children:
            if not first_failure and child.returncode != 0:
                first_failure = _status(child.returncode)
        for pump in pumps:
            pump.join(timeout=5)
        return first_failure
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
