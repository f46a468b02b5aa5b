"""Per-stage wall-clock timing, shared by the pipeline, the data generator and the benchmarks."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

import numpy as np


class StageTimer:
    """Collects durations per stage name: ``with timer("render"): ...``."""

    def __init__(self) -> None:
        self.durations: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.durations[stage].append(time.perf_counter() - start)

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {"n", "mean_ms", "p50_ms", "p95_ms"}} over everything recorded."""
        return {stage: {"n": len(values), "mean_ms": 1000 * float(np.mean(values)),
                        "p50_ms": 1000 * float(np.percentile(values, 50)),
                        "p95_ms": 1000 * float(np.percentile(values, 95))}
                for stage, values in self.durations.items()}

