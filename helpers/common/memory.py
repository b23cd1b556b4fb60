"""Peak memory of a block of work (resident set size on CPU, allocator peak on CUDA)."""
from __future__ import annotations

import os
import threading

# ----------------------------------------------------------------------------------------------------
# Peak memory
# ----------------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory while the block runs: CUDA → ``max_memory_allocated``; CPU → process RSS sampled every
    ``interval`` seconds. ``peak_mb`` is the peak; ``extra_mb`` the peak minus the level at entry."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_mb = self.extra_mb = self.start_mb = 0.0
        self.kind = "cpu-rss"

    def __enter__(self):
        import torch

        if torch.cuda.is_available():
            self.kind = "cuda-allocated"
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
            return self
        import psutil

        proc = psutil.Process(os.getpid())
        self.start_mb = self._peak = proc.memory_info().rss / 2**20
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, proc.memory_info().rss / 2**20)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.kind == "cuda-allocated":
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            import psutil

            self.peak_mb = max(self._peak, psutil.Process(os.getpid()).memory_info().rss / 2**20)
        self.extra_mb = self.peak_mb - self.start_mb
        return False
