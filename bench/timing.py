"""Shared by the PyTorch baseline scripts: the median of timed runs after one warm-up."""

import statistics
import time


def median_secs(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
