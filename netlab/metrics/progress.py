"""A tqdm progress bar for the lead process: loss, steps/s and ETA."""

import sys
import time

from tqdm.auto import tqdm


class Progress:
    def __init__(self, start: int, total: int, enabled: bool, lead: bool = True):
        self.lead = lead
        self.bar = tqdm(
            total=total,
            initial=start,
            disable=not enabled,
            dynamic_ncols=True,
            unit="step",
            file=sys.stderr,
            mininterval=1.0,
        )
        self.last_step, self.last_time = start, time.perf_counter()

    def update(self, step: int, metrics: dict | None = None) -> float:
        """Advance to `step`; returns steps/s since the previous call."""
        now = time.perf_counter()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.bar.update(step - self.bar.n)
        if metrics:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        self.last_step, self.last_time = step, now
        return rate

    def write(self, text: str):
        if self.lead:
            self.bar.write(text, file=sys.stderr)

    def close(self):
        self.bar.close()
