"""Process set-up: transparent huge pages for large buffers (fast CPU runs), the CPU's bfloat16 support,
and termination signals.

XLA:CPU allocates its large intermediates (activations, attention logits, candidate streams) with
glibc malloc, which maps each one fresh and unmaps it on free; with 4 KiB pages every run of a jitted
block then spends much of its time in page faults. The glibc tunable `glibc.malloc.hugetlb=1`
(glibc ≥ 2.35; ignored elsewhere) backs those mappings with 2 MiB transparent huge pages: on the
build machine the NeuroAL search block is ~15–20 % faster and attention ~2× faster. Tunables are read at
process start, so the command-line tools re-execute themselves once with it set.

SIGTERM (what schedulers send) and SIGHUP are turned into `Interrupted`, a KeyboardInterrupt, so that
every cleanup that runs on Ctrl-C (temporary output folders, locks) runs on them too.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

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


#: Seconds a process of a multi-process run waits for the coordinator (process 0 for the others) before giving up.
DEFAULT_COORDINATOR_TIMEOUT = 300.0


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) received while running."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def handle_termination():
    """Within the block, SIGTERM and SIGHUP raise `Interrupted` (main thread only; restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, interrupt) for s in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
