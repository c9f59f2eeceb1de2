"""Calls that complete on the library's own threads and reach an asyncio loop through one
file descriptor (``decnet_completions_*``): the loop watches it with ``add_reader`` and
pops finished calls, so no Python runs on any other thread (but the logging bridge's, when
a handler wants the library's events) and the loop's thread never waits for the GIL
behind a pool of threads.

One queue per event loop, made on its first call and freed when the loop is collected.

Pacing: a gather starts hundreds of calls in one iteration of the loop, and each start
(making the client, submitting it, taking a completion) is tens of microseconds of
Python. :meth:`CompletionQueue.admit` lets such a burst hold the loop for at most
:data:`SLICE` seconds per iteration; the rest of the burst goes on in the next iteration,
after the timers and callbacks that came due meanwhile. :meth:`CompletionQueue._drain`
stops after a slice the same way (the descriptor stays readable).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import itertools
import threading
import time
import weakref
from ctypes import byref, c_bool, c_int, c_uint64
from typing import Any, Dict, Optional, Tuple

from ._native import DECNET_OK, _CompletionsPtr, _CSweepOptions, _OwnedStr, lib
from .client import Client
from .errors import InternalError, _check, _decode_json, _error_from_json, last_error
from .fleet import Fleet

_string_at = ctypes.string_at
_clock = time.perf_counter

#: The longest a burst of call starts or completions holds the loop per iteration (s).
SLICE = 0.0004
#: How many waiting call starts go on per iteration once a burst overran its slice: each is
#: some 30-60 us of Python on the loop, so a batch stays near a slice.
BATCH = 8


class CompletionQueue:
    """One ``decnet_completions`` queue watched by one loop: :meth:`submit` returns a
    future the loop resolves when the call's completion is popped."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threads: int, niceness: int):
        pointer = _CompletionsPtr()
        _check(lib.decnet_completions_new(threads, niceness, byref(pointer)))
        fd = c_int(-1)
        try:
            _check(lib.decnet_completions_fd(pointer, byref(fd)))
            loop.add_reader(fd.value, self._drain)
        except BaseException:
            lib.decnet_completions_free(pointer)
            raise
        self._pointer = pointer
        self.threads = threads
        self._tags = itertools.count(1)
        # A call's future, or a sweep's queue of completions (steps, then its own).
        self._waiting: Dict[int, Any] = {}
        self._loop = weakref.ref(loop)
        self._burst_started: Optional[float] = None
        self._freed = False
        self._free_lock = threading.Lock()
        self._admissions: "collections.deque[asyncio.Future[None]]" = collections.deque()
        # The loop's selector goes with the loop; the queue is freed after it.
        weakref.finalize(loop, self._free)

    def _free(self) -> None:
        """Frees the queue (once): what is queued is never sent; calls in flight end on
        their threads and their answers are dropped."""
        with self._free_lock:
            if not self._freed:
                self._freed = True
                lib.decnet_completions_free(self._pointer)

    def free_client(self, pointer: Any) -> None:
        """Frees a client handle with its connections dropped on the queue's threads
        (dropping a connected client's TLS state is some 20-40 us the loop need not wait
        for); on this thread once the queue is gone."""
        with self._free_lock:
            if not self._freed:
                lib.decnet_completions_free_client(self._pointer, pointer)
                return
        lib.decnet_client_free(pointer)

    async def admit(self) -> None:
        """Returns at once, unless this iteration of the loop has already spent a slice on
        calls (or calls wait already): then it waits its turn, and at most
        :data:`BATCH` waiting calls go on per later iteration, in order."""
        loop = asyncio.get_running_loop()
        if not self._admissions:
            now = _clock()
            if self._burst_started is None:
                self._burst_started = now
                loop.call_soon(self._end_burst)  # runs first in the next iteration
                return
            if now - self._burst_started < SLICE:
                return
        turn: "asyncio.Future[None]" = loop.create_future()
        self._admissions.append(turn)
        if len(self._admissions) == 1:
            loop.call_soon(self._admit_batch)
        await turn

    def _end_burst(self) -> None:
        self._burst_started = None

    def _admit_batch(self) -> None:
        """Lets the next :data:`BATCH` waiting calls go on (they run in the next
        iteration), and comes back for the others after them."""
        admitted = 0
        while self._admissions and admitted < BATCH:
            turn = self._admissions.popleft()
            if not turn.done():  # a cancelled wait gives its turn away
                turn.set_result(None)
                admitted += 1
        if self._admissions:
            loop = self._loop()
            if loop is not None:
                loop.call_soon(self._admit_batch)

    async def call(self, client: Client, rpc: bytes, args_json: Optional[bytes]) -> Any:
        """``rpc`` of ``client`` on the library's threads: its answer, or its typed error.
        Cancelled, the call is withdrawn if no thread started it (never sent); otherwise it
        runs to its end and its completion is dropped."""
        tag = next(self._tags)
        with client._handle as pointer:
            result = lib.decnet_client_submit(pointer, self._pointer, rpc, args_json, tag)
        if result != DECNET_OK:
            raise last_error(result)
        future: "asyncio.Future[Any]" = asyncio.get_running_loop().create_future()
        self._waiting[tag] = future
        try:
            return await future
        except asyncio.CancelledError:
            if future.cancelled():
                self.stop(tag)
            raise

    def start_sweep(self, fleet: Fleet, rpc: bytes, plan_json: Optional[bytes],
                    options: _CSweepOptions) -> "Tuple[int, asyncio.Queue[Dict[str, Any]]]":
        """Starts a sweep of ``fleet`` on the library's threads: its tag, and a queue of its
        completions as JSON objects (``"progress"`` for each host, then its own). Stop it
        (or forget it) with :meth:`stop`."""
        tag = next(self._tags)
        with fleet._handle as pointer:
            result = lib.decnet_fleet_submit(pointer, self._pointer, rpc, plan_json,
                                             byref(options), tag)
        if result != DECNET_OK:
            raise last_error(result)
        items: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self._waiting[tag] = items
        return tag, items

    def stop(self, tag: int) -> None:
        """Forgets the call or sweep ``tag``: withdrawn if no thread started it; a running
        sweep starts no more hosts; what it still posts is dropped (and a cancelled future
        kept here would keep its loop alive through this queue)."""
        self._waiting.pop(tag, None)
        withdrawn = c_bool(False)
        _check(lib.decnet_completions_withdraw(self._pointer, tag, byref(withdrawn)))

    def _drain(self) -> None:
        """The loop's reader callback: pops every waiting completion into its future."""
        tag = c_uint64()
        out = _OwnedStr()
        started = _clock()
        while _clock() - started < SLICE:  # the rest at the next iteration: still readable
            result = lib.decnet_completions_pop(self._pointer, byref(tag), byref(out))
            if result != DECNET_OK:
                raise last_error(result)
            if not out:
                return
            try:
                text = _string_at(out)
            finally:
                lib.decnet_string_free(out)
            try:
                raw = _decode_json(text.decode("utf-8"))
                outcome = raw["outcome"]
            except (ValueError, KeyError, TypeError) as error:
                raw, outcome = InternalError(f"unreadable completion: {error}", code=12), None
            waiting = (self._waiting.get(tag.value) if outcome == "progress"
                       else self._waiting.pop(tag.value, None))
            if isinstance(waiting, asyncio.Queue):
                waiting.put_nowait(raw)  # a sweep's step or end, read by its iterator
            elif waiting is None or waiting.done():
                continue  # cancelled while running: its answer is dropped
            elif outcome == "ok":
                waiting.set_result(raw["result"])
            elif outcome == "error":
                waiting.set_exception(_error_from_json(raw["error"]))
            else:
                waiting.set_exception(raw if isinstance(raw, BaseException) else InternalError(
                    f"unexpected completion outcome {outcome!r}", code=12))


_queues: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CompletionQueue]" = (
    weakref.WeakKeyDictionary())


def queue_for(loop: asyncio.AbstractEventLoop, threads: int, niceness: int) -> CompletionQueue:
    """The loop's queue of ``threads`` threads, made on first use (a new one when the
    count changed: the old one completes its calls and goes with the loop)."""
    queue = _queues.get(loop)
    if queue is None or queue.threads != threads:
        for other, stale in list(_queues.items()):
            if other.is_closed():  # a closed loop still referenced: its queue is done
                stale._free()
                del _queues[other]
        try:
            queue = CompletionQueue(loop, threads, niceness)
        except NotImplementedError:
            raise RuntimeError("this event loop cannot watch a file descriptor (add_reader); "
                               "use a selector event loop") from None
        _queues[loop] = queue
    return queue
