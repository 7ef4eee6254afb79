"""A bounded queue of requests in front of a fixed number of worker threads.

The reconstruction is CPU-bound and runs in worker threads (TensorFlow releases the GIL), so the
event loop keeps answering health checks and static files while meshes are made. Beyond the
``workers`` running, at most ``max_waiting`` requests wait for a worker; one more is refused at once,
and one that has waited ``wait_timeout`` seconds without a worker is withdrawn from the queue: both
raise :class:`Busy` (the server answers 503). A request that has started runs to its end.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


class Busy(Exception):
    """No worker could take the request in time: one line for the client."""


class WorkerPool:
    """``workers`` threads; :meth:`run` queues a call and awaits its result (module docstring)."""

    def __init__(self, workers: int = 1, max_waiting: int = 16, wait_timeout: float = 60.0):
        if workers < 1 or max_waiting < 0 or wait_timeout <= 0:
            raise ValueError(f"bad pool: workers={workers}, max_waiting={max_waiting}, wait_timeout={wait_timeout}")
        self.workers, self.max_waiting, self.wait_timeout = workers, max_waiting, wait_timeout
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="d2im-worker")
        self._lock = threading.Lock()
        self.waiting = 0  # queued, not started
        self.running = 0

    async def run(self, function: Callable, *args):
        """``function(*args)`` in a worker thread; :class:`Busy` if it cannot start in time."""
        with self._lock:
            if self.waiting + self.running >= self.workers + self.max_waiting:  # no worker, no room to wait
                raise Busy(f"the server is busy ({self.running} running, {self.waiting} waiting); try again shortly")
            self.waiting += 1
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        state = {"started": False, "withdrawn": False}

        def job():
            with self._lock:
                if state["withdrawn"]:
                    return None
                state["started"] = True
                self.waiting -= 1
                self.running += 1
            loop.call_soon_threadsafe(started.set)
            try:
                return function(*args)
            finally:
                with self._lock:
                    self.running -= 1

        future = loop.run_in_executor(self._executor, job)
        try:
            await asyncio.wait_for(started.wait(), self.wait_timeout)
        except BaseException as error:  # the wait timed out, or the request was cancelled
            with self._lock:
                if not state["started"]:
                    state["withdrawn"] = True
                    self.waiting -= 1
                    if isinstance(error, TimeoutError):
                        raise Busy(
                            f"the server is busy: no worker was free within {self.wait_timeout:g} s; try again shortly"
                        ) from None
                    raise
            if not isinstance(error, TimeoutError):
                raise
        return await future

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
