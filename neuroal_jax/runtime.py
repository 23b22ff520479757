"""Process set-up: transparent huge pages for large buffers (fast CPU runs), the CPU's bfloat16 support,
and termination signals.

XLA:CPU allocates its large intermediates (activations, attention logits, candidate streams) with
glibc malloc, which maps each one fresh and unmaps it on free; with 4 KiB pages every run of a jitted
block then spends much of its time in page faults. The glibc tunable `glibc.malloc.hugetlb=1`
(glibc ≥ 2.35; ignored elsewhere) backs those mappings with 2 MiB transparent huge pages: on the
build machine the NeuroAL search block is ~15–20 % faster and attention ~2× faster. Tunables are read at
process start, so the command-line tools re-execute themselves once with it set.

SIGTERM (what schedulers send) and SIGHUP are turned into `Interrupted`, a KeyboardInterrupt, so that
every cleanup that runs on Ctrl-C (temporary output folders, locks) runs on them too. A stop signal whose
exception Python could only print and drop (raised inside a gc callback such as jax's `_xla_gc_callback`, or a
__del__) is raised again at the next point where it propagates, and every signal is recorded
(`received_signal`), so that an error it caused is reported as the termination, never swallowed.
"""
from __future__ import annotations

import _thread
import contextlib
import ctypes
import functools
import os
import queue
import signal
import sys
import threading
import time

TUNABLE = "glibc.malloc.hugetlb"
HUGEPAGE_TUNABLE = f"{TUNABLE}=1"
OPT_OUT = "NEUROAL_JAX_HUGEPAGES"  # set to 0 to keep the process as started


def hugepage_env(env: dict | None = None) -> dict:
    """A copy of env (default os.environ) with the huge-page malloc tunable added."""
    env = dict(os.environ if env is None else env)
    tunables = env.get("GLIBC_TUNABLES", "")
    if TUNABLE not in tunables:  # a value the user chose (even hugetlb=0) is kept
        env["GLIBC_TUNABLES"] = f"{tunables}:{HUGEPAGE_TUNABLE}" if tunables else HUGEPAGE_TUNABLE
    return env


def reexec_with_hugepages(argv: list[str] | None = None) -> None:
    """Re-run this Python with interpreter arguments argv (default sys.argv: the script and its
    arguments; a module passes ["-m", name, *args]) and the tunable set, unless it is set already,
    opted out of (NEUROAL_JAX_HUGEPAGES=0) or the platform is not Linux. Returns only when nothing
    was done."""
    env = hugepage_env()
    if (not sys.platform.startswith("linux") or os.environ.get(OPT_OUT) == "0"
            or env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES")):
        return
    argv = list(sys.argv if argv is None else argv)
    env[OPT_OUT] = "0"  # never loop
    sys.stdout.flush(), sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv], env)
    except OSError:  # the interpreter cannot be executed again (permissions, a sandbox): run in place
        return


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions for bfloat16 dot products (f32 accumulation)
CPUINFO = "/proc/cpuinfo"


def cpu_has_bfloat16(cpuinfo: str = CPUINFO) -> bool | None:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16), which XLA:CPU uses for
    bfloat16 matmuls (about 2× float32's rate on the build machine); None when unknown (no /proc/cpuinfo)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def free_memory(device=None) -> int | None:
    """Bytes free for new arrays on `device` (default: the first device): an accelerator's limit minus what is in
    use, or on a CPU the host's MemAvailable; None when unknown."""
    import jax
    device = device or jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024
    except (OSError, StopIteration, ValueError):
        return None


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; absent from musl and macOS
    except (OSError, AttributeError):
        return None


def return_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere). A streamed run
    calls it after each block: the freed block's host buffers otherwise stay in the process's resident memory."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


#: Seconds a process of a multi-process run waits for the coordinator (process 0 for the others) before giving up.
DEFAULT_COORDINATOR_TIMEOUT = 300.0


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) received while running."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
STOP_SIGNALS = (signal.SIGINT, *TERMINATION_SIGNALS)

_received: int | None = None  # the first stop signal received since the outermost handle_termination began
_raising = False              # whether the handlers raise (inside handle_termination) or only record
_in_hook = False              # inside our sys.unraisablehook, where an exception would be dropped again
_deferring = 0                # depth of signals_deferred blocks
_deferred: int | None = None  # the signal received in them, raised at their end


def received_signal() -> int | None:
    """The first stop signal received since the outermost `handle_termination` block began (None: none), also
    after the block, and also when a library swallowed its exception or turned it into another error."""
    return _received


def signal_of(e: BaseException) -> int | None:
    """The signal a KeyboardInterrupt stands for (an `Interrupted`'s, else SIGINT); None for other exceptions."""
    if isinstance(e, Interrupted):
        return e.signum
    return signal.SIGINT if isinstance(e, KeyboardInterrupt) else None


_redeliveries: queue.SimpleQueue = queue.SimpleQueue()  # signals to run the handler of again (put: reentrant)
_redeliverer: threading.Thread | None = None


def _redeliver(signum: int) -> None:
    """Run the handler of `signum` again at the main thread's next check for signals once no hook of ours is
    running, from a helper thread (started once): raised in the hook or the callback that called it, the exception
    would be dropped again (each such drop comes back here)."""
    global _redeliverer
    _redeliveries.put(signum)
    if _redeliverer is None:
        _redeliverer = threading.Thread(target=_redeliver_forever, name="neuroal-jax-signals", daemon=True)
        _redeliverer.start()


def _forget_redeliverer() -> None:  # a forked child does not have the parent's threads
    global _redeliverer
    _redeliverer = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_redeliverer)


def _redeliver_forever() -> None:
    while True:
        signum = _redeliveries.get()
        time.sleep(0.001)
        while _in_hook:
            time.sleep(0.001)
        if _raising:  # after the block the signal is recorded already (received_signal)
            _thread.interrupt_main(signum)


def _stop(signum, frame):
    global _received, _deferred
    if _received is None:
        _received = signum
    if not _raising:
        return
    if _deferring:
        _deferred = _deferred or signum
        return
    if _in_hook:  # raised here it would be dropped again: once the hook has returned
        _redeliver(signum)
        return
    _raise(signum)


def _raise(signum: int):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_deferred():
    """Within a `handle_termination` block, a stop signal received in this block is raised at its end: for work
    that other threads do for this one (orbax's and tensorstore's writes), which an exception raised here would
    not stop, and which would go on writing into a folder that the cleanup is removing."""
    global _deferring, _deferred
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if not _deferring:
        _deferred = None
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _deferred is not None and _raising:
        signum, _deferred = _deferred, None
        _raise(signum)


def _unraisable_hook(previous):
    """A sys.unraisablehook that, for the exception of a stop signal that Python could not propagate (one raised
    in a gc callback, a __del__, a weakref callback), raises it again where it propagates instead of printing
    "Exception ignored in ..." and dropping it; every other one goes to `previous`."""
    def hook(unraisable):
        global _in_hook
        _in_hook = True  # first: a signal handled from here on is redelivered, not dropped with this hook's error
        try:
            signum = signal_of(unraisable.exc_value)
            if signum is None or not _raising or threading.current_thread() is not threading.main_thread():
                previous(unraisable)
            else:
                _redeliver(signum)
        finally:
            _in_hook = False
    return hook


@contextlib.contextmanager
def handle_termination(after=None):
    """Within the block (main thread only), SIGTERM and SIGHUP raise `Interrupted` and SIGINT KeyboardInterrupt,
    also when first raised where Python would drop the exception (see `_unraisable_hook`); a signal that was
    ignored (SIG_IGN, e.g. SIGHUP under nohup) stays ignored. Every one is recorded (`received_signal`). At the
    end the handlers are restored, or set to `after` (signal.SIG_DFL: a later signal ends the process at once);
    a signal that comes while they are put back is only recorded."""
    global _received, _raising
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer = _raising
    if not outer:
        _received = None
    previous = {s: signal.signal(s, _stop) for s in STOP_SIGNALS if signal.getsignal(s) != signal.SIG_IGN}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _unraisable_hook(previous_hook)
    _raising = True
    try:
        yield
    finally:
        _raising = outer  # first: from here a signal is only recorded
        sys.unraisablehook = previous_hook
        for s, handler in previous.items():
            signal.signal(s, handler if after is None else after)
