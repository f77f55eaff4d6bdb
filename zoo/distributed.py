"""Many processes, one run: joining the cluster (`jax.distributed`) and the few agreements a run
needs (an error, a stop request, a decision of process 0). Every message travels through
`jax.experimental.multihost_utils`; with one process each function is a plain local call.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys

import numpy as np

from zoo.errors import ConfigError, RunError, ZooError

ENV = {"coordinator": "ZOO_COORDINATOR", "num_processes": "ZOO_NUM_PROCESSES", "process_id": "ZOO_PROCESS_ID"}
HOW = ("pass --coordinator HOST:PORT --num-processes N --process-id I (or set ZOO_COORDINATOR, "
       "ZOO_NUM_PROCESSES, ZOO_PROCESS_ID), or start every process with `zoo launch --local N -- train ...` "
       "or `srun` (SLURM)")
_MISSING = {"coordinator_address": "the coordinator address", "Number of processes": "the number of processes",
            "process id": "this process's id"}
_MESSAGE_BYTES = 1024
_joined = False  # set once this process is part of a cluster  # an agreed error travels as this many UTF-8 bytes


def initialize(coordinator: str | None = None, num_processes: int | str | None = None,
               process_id: int | str | None = None, heartbeat_timeout: int | None = None,
               bind: str | None = None) -> None:
    """`jax.distributed.initialize()`: JAX's cluster detection (SLURM, Open MPI, TPU, Kubernetes)
    fills whatever the arguments and ZOO_* variables leave open. Missing pieces: one line.
    Process 0's coordinator service listens where `bind_address` says (not on every interface)."""
    import jax

    coordinator = coordinator or os.environ.get(ENV["coordinator"]) or None
    count = _int("--num-processes", num_processes if num_processes is not None else os.environ.get(ENV["num_processes"]), 1)
    index = _int("--process-id", process_id if process_id is not None else os.environ.get(ENV["process_id"]), 0)
    if count is not None and index is not None and index >= count:
        raise ConfigError(f"--process-id {index} must be below --num-processes {count} (ids run 0..{count - 1})")
    timeout = heartbeat_timeout or _int("ZOO_HEARTBEAT_TIMEOUT", os.environ.get("ZOO_HEARTBEAT_TIMEOUT"), 1)
    given = {"coordinator_address": coordinator, "num_processes": count, "process_id": index,
             "heartbeat_timeout_seconds": timeout, "coordinator_bind_address": bind_address(coordinator, bind, index)}
    try:
        jax.distributed.initialize(**{key: value for key, value in given.items() if value is not None})
    except ValueError as error:  # raised before any connection: nothing detected, something missing
        missing = next((what for key, what in _MISSING.items() if key in str(error)), str(error))
        raise ConfigError(f"--distributed: no cluster detected (SLURM, Open MPI, TPU, Kubernetes) and "
                          f"{missing} is not given: {HOW}") from None
    except Exception as error:  # noqa: BLE001 - the runtime's connection errors are long; users get one line
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"--distributed: could not join the cluster at {coordinator or 'the detected coordinator'} "
                       f"({text[:160]}): start every process within the initialization timeout, with the "
                       "same coordinator and distinct process ids") from None
    global _joined
    _joined = True
    with _stdout_to_stderr():  # gloo announces its connections on stdout, which is for results
        barrier("joined")


# Where process 0's coordinator service listens, when not derived from the coordinator address.
BIND_ENV = ("ZOO_COORDINATOR_BIND", "JAX_COORDINATOR_BIND_ADDRESS")


def bind_address(coordinator: str | None, bind: str | None, process_id: int | None) -> str | None:
    """HOST:PORT where process 0's coordinator service listens: `bind` (--coordinator-bind, else
    $ZOO_COORDINATOR_BIND or $JAX_COORDINATOR_BIND_ADDRESS; a bare HOST takes the coordinator's port),
    else the coordinator address itself, whose host must then be this machine's on process 0. JAX's
    own default is every interface ([::]:PORT), where anyone who can reach the port could end the
    run: it applies only when the coordinator comes from cluster detection and no bind is given."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    host, port = _split(coordinator, "--coordinator") if coordinator else (None, None)
    chosen = bind or next((os.environ[name] for name in BIND_ENV if os.environ.get(name)), None)
    if chosen:
        host, port = _split(chosen, "--coordinator-bind", port)
    elif host is None:
        return None
    elif process_id == 0:
        _check_local(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _split(address: str, flag: str, default_port: str | None = None) -> tuple[str, str]:
    """(host, port) of 'HOST:PORT', '[IPV6]:PORT', or a bare host (with `default_port`)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest or None  # anything else after ']' fails below
    elif address.count(":") == 1:
        host, port = address.split(":")
    else:  # a host name, an IPv4 address or a bare IPv6 address, without a port
        host, port = address, None
    port = port or default_port
    if not host or not port or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} '{address}' must be HOST:PORT with a port in 1..65535, e.g. 10.0.0.5:29500")
    return host, port


def _check_local(host: str) -> None:
    """Refuses a coordinator host that is not an address of this machine (process 0 listens there)."""
    try:
        addresses = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"--coordinator host '{host}' does not resolve on process 0 "
                          f"({getattr(error, 'strerror', None) or error}): give process 0's address") from None
    for family, _, _, _, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address[0], 0, *address[2:]))
                return
            except OSError:
                continue
    raise ConfigError(f"--coordinator host '{host}' is not an address of this machine, and process 0 runs the "
                      "coordinator service there: give process 0's own address, or choose where it listens "
                      "with --coordinator-bind ADDRESS (or $ZOO_COORDINATOR_BIND; 0.0.0.0 is every interface, "
                      "where anyone who can reach the port can end the run)")


@contextlib.contextmanager
def _stdout_to_stderr():
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _int(name: str, value, minimum: int) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"{name} '{value}' must be an integer of at least {minimum}")
    return number


def count() -> int:
    import jax

    return jax.process_count()


def index() -> int:
    import jax

    return jax.process_index()


def is_primary() -> bool:
    """True on process 0, the one that writes a run directory's bookkeeping files."""
    return index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier of this name."""
    if count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"zoo:{name}")


def gather_ints(values) -> np.ndarray:
    """(processes, n) int64: each process's `values` (the same length everywhere)."""
    local = np.asarray(values, np.int64).reshape(-1)
    if count() == 1:
        return local[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(local)).reshape(count(), -1)


def broadcast_ints(values) -> list[int]:
    """Process 0's list of integers, on every process (the length travels first)."""
    if count() == 1:
        return [int(v) for v in values]
    from jax.experimental import multihost_utils

    length = int(multihost_utils.broadcast_one_to_all(np.int64(len(values) if is_primary() else 0)))
    local = np.zeros(length, np.int64)
    if is_primary():
        local[:] = values
    return [int(v) for v in np.asarray(multihost_utils.broadcast_one_to_all(local))]


def any_true(flag: bool) -> bool:
    """True on every process when `flag` is true on any."""
    return bool(gather_ints([int(flag)]).any())


def first_signal(signal_number: int) -> int:
    """The stop request (a signal number, 0 for none) of the lowest process that has one."""
    gathered = gather_ints([signal_number]).ravel()
    return int(next((value for value in gathered if value), 0))


def agreed(fn):
    """Runs `fn` on every process; if it raises a ZooError on any, it raises on all (the others
    with that process's message), so no process waits at a later barrier for one that refused."""
    if count() == 1:
        return fn()
    error, result = None, None
    try:
        result = fn()
    except ZooError as raised:
        error = raised
    text = str(error).encode()[:_MESSAGE_BYTES] if error is not None else b""
    local = np.zeros(_MESSAGE_BYTES + 1, np.int64)
    local[0] = len(text) if error is not None else -1
    local[1:1 + len(text)] = np.frombuffer(text, np.uint8)
    gathered = gather_ints(local)
    failed = [i for i, row in enumerate(gathered) if row[0] >= 0]
    if not failed:
        return result
    if error is not None:
        raise error
    first = gathered[failed[0]]
    message = bytes(first[1:1 + first[0]].astype(np.uint8)).decode(errors="replace")
    raise RunError(f"process {failed[0]} refused: {message}")


def is_lost_peer(error: BaseException) -> bool:
    """True for the runtime error a collective raises when another process of the cluster is gone."""
    if not _joined:
        return False
    import jax

    # gloo's failed collectives surface as ValueError("UNKNOWN: Gloo AllGather failed: ...")
    return isinstance(error, jax.errors.JaxRuntimeError) or "Gloo" in str(error)


def lost_peer_message(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"process {index()} lost contact with the rest of the run ({text[:160]}): another process stopped "
            "or crashed (see its output); rerun the same command on every process to resume from the last "
            "checkpoint")
