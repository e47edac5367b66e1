"""A budget of bytes that threads reserve before they hold data and release after."""

from __future__ import annotations

import threading


class BudgetClosed(Exception):
    """The budget was closed (shutdown) while a reservation waited."""


class ByteBudget:
    """At most ``limit`` bytes reserved at once; :meth:`reserve` blocks until they fit.

    One reservation larger than the whole budget is let through when nothing else is held,
    so an object under the size limit is never refused for its size alone.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the byte budget must be at least 1")
        self.limit = limit
        self._used = 0
        self._peak = 0
        self._closed = False
        self._fits = threading.Condition()

    def reserve(self, size: int) -> None:
        """Block until ``size`` bytes fit; raise :class:`BudgetClosed` once closed."""
        with self._fits:
            while not self._closed and self._used and self._used + size > self.limit:
                self._fits.wait()
            if self._closed:
                raise BudgetClosed()
            self._used += size
            self._peak = max(self._peak, self._used)

    def release(self, size: int) -> None:
        with self._fits:
            self._used = max(0, self._used - size)
            self._fits.notify_all()

    def close(self) -> None:
        """Wake every waiting reservation with :class:`BudgetClosed`."""
        with self._fits:
            self._closed = True
            self._fits.notify_all()

    @property
    def used(self) -> int:
        return self._used

    @property
    def peak(self) -> int:
        """The most bytes held at once so far."""
        return self._peak
