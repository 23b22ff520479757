"""Several processes, one run: the checks and the meeting before `jax.distributed.initialize`.

`initialize_distributed` checks every setting before connecting, then lets the processes meet on the coordinator's
port before JAX's coordination service starts there (process 0 waits for every other process to check in), so that
a process whose peers never come stops with one line instead of JAX's abort. Then `jax.devices()` lists every
host's devices, and the mesh code (`topups.neuroal.sharding`) spans them.
"""
from __future__ import annotations

import math

import jax
import numpy as np

from .errors import UsageError
from .runtime import DEFAULT_COORDINATOR_TIMEOUT

#: What `initialize_distributed` can auto-detect (through JAX's cluster detection) when a setting is not given.
CLUSTERS = "SLURM, Open MPI, Cloud TPU, Kubernetes or JAX_COORDINATOR_ADDRESS"
_CHECK_IN = "neuroal-jax check-in"


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, timeout: float = DEFAULT_COORDINATOR_TIMEOUT) -> None:
    """`jax.distributed.initialize`: arguments auto-detected on SLURM, Open MPI, Cloud TPU and Kubernetes when None.
    CPU processes exchange data through gloo (XLA:CPU's cross-process collectives).

    Every setting is checked before connecting (`check_distributed`). Then the processes meet on the coordinator's
    port before JAX's coordination service starts there: process 0 listens and waits up to `timeout` seconds for
    the other processes to check in (`gather_processes`); each other process waits up to `timeout` seconds to reach
    it (`wait_for_coordinator`). Either raises ConnectionError with one line when the others do not come (JAX
    itself would abort process 0 with a C++ stack trace, and the others with a gRPC error)."""
    coordinator, num_processes, process_id = check_distributed(coordinator, num_processes, process_id, timeout)
    if num_processes > 1 and process_id == 0:
        gather_processes(coordinator, num_processes, timeout)
    elif num_processes > 1:
        wait_for_coordinator(coordinator, timeout, process_id, num_processes)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=max(1, math.ceil(timeout)))


def check_distributed(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, timeout: float = DEFAULT_COORDINATOR_TIMEOUT
                      ) -> tuple[str, int, int]:
    """(coordinator, num_processes, process_id), given or auto-detected, checked: a ValueError naming the flag,
    the value and the valid ones otherwise. Nothing connects."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (math.isfinite(timeout)
                                                                                  and timeout > 0):
        raise UsageError(f"--coordinator-timeout must be a finite number of seconds > 0, got {timeout:g}"
                         if isinstance(timeout, (int, float)) else
                         f"--coordinator-timeout must be a number of seconds > 0, got {timeout!r}")
    for flag, value, low in (("--num-processes", num_processes, 1), ("--process-id", process_id, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low):
            raise UsageError(f"{flag} must be an integer >= {low}, got {value!r}")
    _check_range(num_processes, process_id)
    if coordinator is not None:
        host_port(coordinator)
    if None in (coordinator, num_processes, process_id):
        coordinator, num_processes, process_id = _auto_detected(coordinator, num_processes, process_id, timeout)
    missing = [flag for flag, value in (("--coordinator HOST:PORT", coordinator), ("--num-processes N", num_processes),
                                        ("--process-id I", process_id)) if value is None]
    if missing:
        listed = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
        raise UsageError(f"--distributed needs {listed}: no cluster environment that provides "
                         f"{'it' if len(missing) == 1 else 'them'} ({CLUSTERS}) was detected; pass --coordinator "
                         "HOST:PORT --num-processes N --process-id I (I from 0 to N-1, the same HOST:PORT and N on "
                         "every process)")
    host_port(coordinator, "the detected coordinator address")
    _check_range(int(num_processes), int(process_id))
    return coordinator, int(num_processes), int(process_id)


def _check_range(num_processes: int | None, process_id: int | None) -> None:
    if num_processes is not None and process_id is not None and not process_id < num_processes:
        raise UsageError(f"--process-id {process_id} is out of range for --num-processes {num_processes}: "
                         f"valid ids are 0 to {num_processes - 1}")


def _auto_detected(coordinator, num_processes, process_id, timeout) -> tuple:
    """JAX's own cluster detection (what `jax.distributed.initialize` would do), run now so that its result is
    checked; unset settings stay None when no cluster environment is detected."""
    import os
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    try:
        from jax._src.clusters import ClusterEnv
    except ImportError:  # a JAX without it: initialize() reports what it misses
        return coordinator, num_processes, process_id
    try:
        coordinator, num_processes, process_id, _ = ClusterEnv.auto_detect_unset_distributed_params(
            coordinator, num_processes, process_id, None, None, max(1, math.ceil(timeout)))
    except Exception as e:  # noqa: BLE001 -- a cluster environment's variables that do not parse
        raise UsageError(f"--distributed: the cluster environment's settings could not be read "
                         f"({' '.join(str(e).split()) or type(e).__name__}): pass --coordinator HOST:PORT "
                         "--num-processes N --process-id I") from None
    return coordinator, num_processes, process_id


def host_port(address: str, what: str = "--coordinator") -> tuple[str, int]:
    """"host:1234" or "[::1]:1234" -> (host, port); a ValueError naming `what` otherwise."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{what} must be HOST:PORT with a port from 1 to 65535, got {address!r}")
    return host.strip("[]"), int(port)


def _listen(port: int):
    """A listening socket on every interface (IPv6 and IPv4, as JAX's service binds [::]:port)."""
    import errno
    import socket
    if socket.has_dualstack_ipv6():
        try:
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise
    return socket.create_server(("", port))


def gather_processes(address: str, num_processes: int, timeout: float) -> None:
    """Process 0: listen on the coordinator's port until processes 1 to `num_processes` - 1 have checked in (each
    sends its id from `wait_for_coordinator`), tell them to go on, and free the port for JAX's coordination
    service. ConnectionError when they have not all come within `timeout` seconds (they are then let go too, and
    stop with an error of their own)."""
    import os
    import selectors
    import time
    _, port = host_port(os.environ.get("JAX_COORDINATOR_BIND_ADDRESS") or address)
    try:
        server = _listen(port)
    except OSError as e:
        raise ConnectionError(f"process 0 cannot listen on port {port} of --coordinator {address} "
                              f"({e.strerror or e}): choose a free port, the same on every process") from None
    deadline = time.monotonic() + timeout
    joined: dict[int, object] = {}  # process id -> its connection
    with server, selectors.DefaultSelector() as sel:
        server.setblocking(False)
        sel.register(server, selectors.EVENT_READ)

        def drop(conn, reply: str | None = None):
            for pid in [p for p, c in joined.items() if c is conn]:
                del joined[pid]
            sel.unregister(conn)
            if reply:
                try:
                    conn.setblocking(True)
                    conn.settimeout(2.0)
                    conn.sendall(f"error: {reply}\n".encode())
                except OSError:
                    pass
            conn.close()

        try:
            while len(joined) < num_processes - 1 and (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(min(left, 1.0)):
                    if key.fileobj is server:
                        try:
                            conn, _ = server.accept()
                        except OSError:
                            continue
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ, bytearray())
                        continue
                    conn = key.fileobj
                    try:
                        chunk = conn.recv(256)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        chunk = b""
                    if not chunk or conn in joined.values():  # gone (a probe, or a process that stopped)
                        drop(conn)
                        continue
                    key.data.extend(chunk)
                    if b"\n" not in key.data:
                        if len(key.data) > 256:
                            drop(conn)
                        continue
                    words = key.data.split(b"\n", 1)[0].decode(errors="replace").rsplit(" ", 2)
                    if len(words) != 3 or words[0] != _CHECK_IN or not (words[1].isdigit() and words[2].isdigit()):
                        drop(conn)
                        continue
                    pid, n = int(words[1]), int(words[2])
                    if n != num_processes:
                        drop(conn, f"process 0 at {address} has --num-processes {num_processes}, this process "
                                   f"{n}: give every process the same --num-processes")
                    elif not 0 < pid < num_processes:
                        drop(conn, f"--process-id {pid} is out of range for --num-processes {num_processes}: "
                                   f"valid ids are 0 to {num_processes - 1}")
                    elif pid in joined:
                        drop(conn, f"another process with --process-id {pid} has already reached process 0 at "
                                   f"{address}: give every process its own --process-id from 0 to "
                                   f"{num_processes - 1}")
                    else:
                        joined[pid] = conn
            ready = len(joined) == num_processes - 1
            conns = list(joined.values())
            for conn in conns:  # "go", then wait (briefly) for them to close first: no TIME_WAIT on our port
                try:
                    conn.setblocking(True)
                    conn.settimeout(5.0)
                    if ready:
                        conn.sendall(b"go\n")
                        while conn.recv(256):
                            pass
                except OSError:
                    pass
        finally:
            for key in list(sel.get_map().values()):
                if key.fileobj is not server:
                    key.fileobj.close()
    if not ready:
        missing = [str(i) for i in range(1, num_processes) if i not in joined]
        shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
        raise ConnectionError(f"{num_processes - 1} other process{'es' if num_processes > 2 else ''} expected, "
                              f"{len(joined)} reached process 0 at {address} within {timeout:g} s (missing "
                              f"--process-id {shown}): start {'them' if len(missing) > 1 else 'it'} with the same "
                              f"--coordinator {address} and --num-processes {num_processes}, or raise "
                              "--coordinator-timeout")


def wait_for_coordinator(address: str, timeout: float, process_id: int | None = None,
                         num_processes: int | None = None) -> None:
    """Return once HOST:PORT accepts a TCP connection; ConnectionError after `timeout` seconds. With `process_id`,
    check in with process 0 (`gather_processes`) and return when it says every process has come."""
    import socket
    import time
    host, port = host_port(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((host, port), timeout=min(5.0, timeout))
            break
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ConnectionError(f"could not reach the coordinator {address} within {timeout:g} s "
                                      f"({e.strerror or e}): start process 0 (--process-id 0) with the same "
                                      "--coordinator, and check the address, the port and the firewall") from None
            time.sleep(0.2)
    if process_id is None:
        conn.close()
        return
    reply = b""
    with conn:
        try:
            conn.settimeout(timeout + 10)  # process 0 answers within its own --coordinator-timeout
            conn.sendall(f"{_CHECK_IN} {process_id} {num_processes}\n".encode())
            while b"\n" not in reply and (chunk := conn.recv(256)):
                reply += chunk
        except OSError:
            pass
    line = reply.split(b"\n", 1)[0].decode(errors="replace")
    if line == "go":
        return
    if line.startswith("error: "):
        raise ConnectionError(line.removeprefix("error: "))
    raise ConnectionError(f"process 0 at {address} stopped waiting before all {num_processes} processes had "
                          f"reached it (its own message says which were missing): start every process within "
                          f"--coordinator-timeout ({timeout:g} s) of process 0")
