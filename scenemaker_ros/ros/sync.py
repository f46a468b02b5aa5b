"""Approximate-time matching of several input streams (message_filters has no pip wheel).

Pure Python, no ROS import: the node feeds it ``(stamp, message)`` pairs per input.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class ApproximateTimeSync:
    """Matches one message per input whose stamps lie within ``slop`` seconds of each other.

    Each input keeps its last ``queue_size`` messages. When a message arrives, every other
    input's message nearest in time is taken; if the set spans at most ``slop``, it is returned
    and every message up to it is dropped from the queues. Thread-safe; ``add`` never blocks on
    anything but a short lock.
    """

    def __init__(self, n_inputs: int, slop: float, queue_size: int):
        self.slop = slop
        self.queues: list[deque[tuple[float, Any]]] = [deque(maxlen=queue_size)
                                                       for _ in range(n_inputs)]
        self.lock = threading.Lock()

    def resize(self, slop: float, queue_size: int) -> None:
        with self.lock:
            self.slop = slop
            self.queues = [deque(q, maxlen=queue_size) for q in self.queues]

    def add(self, index: int, stamp: float, message: Any) -> list[Any] | None:
        """Queue a message of input ``index``; returns a matched set (one message per input, in
        input order) when this message completes one."""
        with self.lock:
            self.queues[index].append((stamp, message))
            chosen: list[tuple[float, Any]] = []
            for i, queue in enumerate(self.queues):
                if i == index:
                    chosen.append((stamp, message))
                elif not queue:
                    return None
                else:
                    chosen.append(min(queue, key=lambda item: abs(item[0] - stamp)))
            stamps = [s for s, _ in chosen]
            if max(stamps) - min(stamps) > self.slop:
                return None
            for i, (matched_stamp, _) in enumerate(chosen):
                self.queues[i] = deque((item for item in self.queues[i]
                                        if item[0] > matched_stamp),
                                       maxlen=self.queues[i].maxlen)
            return [m for _, m in chosen]

    def clear(self) -> None:
        with self.lock:
            for queue in self.queues:
                queue.clear()
