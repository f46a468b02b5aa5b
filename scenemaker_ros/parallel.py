"""One helper for the first-use caches of training: a function over many tasks, in worker
processes when asked, with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm


def map_with_progress(function: Callable[[Any], Any], tasks: Sequence[Any], workers: int,
                      desc: str, unit: str = "scene", progress: bool = True) -> list[Any]:
    """[function(t) for t in tasks], in order; in ``workers`` spawned processes when more than
    one (function must then be importable at module level)."""
    bar = dict(total=len(tasks), desc=desc, unit=unit, disable=not progress)
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            return list(tqdm(pool.imap(function, tasks, chunksize=8), **bar))
    return [function(t) for t in tqdm(tasks, **bar)]
