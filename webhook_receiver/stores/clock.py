"""Lease time for stores on one machine: immune to wall-clock steps and to reboots.

A lease measured on the wall clock breaks when the clock is stepped: forward
by a lease's length and another worker takes over a running event; backward
and an event is blocked for as long. :class:`LeaseClock` measures leases on
the machine's monotonic clock instead, which every process of the machine
shares and no one can step. That clock starts again at boot, so each lease
also records the boot it was taken in (Linux's ``boot_id``): a store that
finds a lease from another boot treats it as run out, since its holder died
with the machine.

Due times (retries) and the times shown to people stay on the wall clock: a
step moves a retry earlier or later, never runs an event twice at once.
"""

from __future__ import annotations

import time

__all__ = ["LeaseClock", "boot_id"]

_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str | None:
    """This boot's id (Linux), or ``None`` where the system does not tell."""
    try:
        with open(_BOOT_ID_FILE, encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


class LeaseClock:
    """The clocks a store reads: :meth:`wall` for what people see and due times, :meth:`lease` for leases.

    Where the boot id is unknown (not Linux), leases fall back to the wall
    clock, so that a reboot cannot block an event: the guarantee against
    clock steps then holds only with a slewed (NTP) clock.
    """

    def __init__(self) -> None:
        #: This boot's id, or ``None``.
        self.boot = boot_id()

    def wall(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def lease(self) -> float:
        """The time leases are measured in: monotonic seconds since boot, where the boot is known."""
        return time.monotonic() if self.boot is not None else time.time()
