"""CPU hardware counters of this thread's user-space code, read through Linux's perf_event_open
with ctypes, so that a speed figure can say where its time goes (instructions retired, cycles,
first-level instruction and data cache misses, instruction TLB misses, last-level cache misses).

    c = Counters()          # None of the counters the kernel or the CPU refuses
    c.start(); work(); figures = c.stop()   # {name: count}, only the counters that opened

Linux only; with perf_event_paranoid <= 2 a process may count its own user-space events.
"""
import ctypes
import os

# perf_event_attr's first 64 bytes (PERF_ATTR_SIZE_VER0), which every kernel accepts.
_ATTR_SIZE = 64
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}
_IOC_ENABLE, _IOC_DISABLE, _IOC_RESET = 0x2400, 0x2401, 0x2403
# attr.flags bits: disabled (0), exclude_kernel (5), exclude_hv (6).
_FLAGS = (1 << 0) | (1 << 5) | (1 << 6)
_HARDWARE, _HW_CACHE = 0, 3


def _cache(cache, result):  # op READ (0)
    return cache | (0 << 8) | (result << 16)


# name: (type, config), from linux/perf_event.h.
EVENTS = {
    "cycles": (_HARDWARE, 0),
    "instructions": (_HARDWARE, 1),
    "llc_misses": (_HARDWARE, 3),
    "l1d_misses": (_HW_CACHE, _cache(0, 1)),
    "l1i_misses": (_HW_CACHE, _cache(1, 1)),
    "itlb_misses": (_HW_CACHE, _cache(4, 1)),
    "dtlb_misses": (_HW_CACHE, _cache(3, 1)),
}


class Counters:
    """The counters of EVENTS that open on this machine, for the calling thread."""

    def __init__(self):
        self.fds = {}
        self.errors = {}
        nr = _SYS_PERF_EVENT_OPEN.get(os.uname().machine)
        if nr is None:
            self.errors["all"] = "no perf_event_open number for " + os.uname().machine
            return
        libc = ctypes.CDLL(None, use_errno=True)
        self._ioctl = libc.ioctl
        for name, (typ, config) in EVENTS.items():
            attr = (ctypes.c_uint8 * _ATTR_SIZE)()
            ctypes.memmove(attr, ctypes.c_uint32(typ).value.to_bytes(4, "little"), 4)
            ctypes.memmove(ctypes.byref(attr, 4), _ATTR_SIZE.to_bytes(4, "little"), 4)
            ctypes.memmove(ctypes.byref(attr, 8), config.to_bytes(8, "little"), 8)
            ctypes.memmove(ctypes.byref(attr, 40), _FLAGS.to_bytes(8, "little"), 8)
            fd = libc.syscall(nr, attr, 0, -1, -1, 0)
            if fd < 0:
                self.errors[name] = os.strerror(ctypes.get_errno())
            else:
                self.fds[name] = fd

    def start(self):
        for fd in self.fds.values():
            self._ioctl(fd, _IOC_RESET, 0)
            self._ioctl(fd, _IOC_ENABLE, 0)

    def stop(self):
        """The counts since start(), by name."""
        for fd in self.fds.values():
            self._ioctl(fd, _IOC_DISABLE, 0)
        return {name: int.from_bytes(os.read(fd, 8), "little") for name, fd in self.fds.items()}
