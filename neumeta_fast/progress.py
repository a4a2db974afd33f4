"""Progress of a long run, fed from any process: one overall bar on a terminal, plain periodic
lines otherwise (a log stays readable), and every line timestamped in a log file.

The parent owns a `Progress`; code that does the work calls `report(steps)` and `note(text)`,
which reach the parent's `Progress` directly in its own process, or through the queue that
`init_worker` installs in a worker process.
"""
from __future__ import annotations

import sys
import threading
import time
from datetime import datetime

# Where report()/note() go in this process: the parent's Progress, a worker's queue, or nowhere.
_sink = None


def report(steps: int) -> None:
    """`steps` units of work are done (a no-op outside a Progress)."""
    if _sink is not None:
        _sink(steps)


def note(text: str) -> None:
    """A message for the run's output and log (a no-op outside a Progress)."""
    if _sink is not None:
        _sink(text)


def init_worker(queue, threads: int) -> None:
    """Pool initializer: report()/note() in this worker go to the parent through `queue`."""
    import torch
    global _sink
    torch.set_num_threads(threads)
    _sink = queue.put


def duration(seconds: float) -> str:
    """'42 s', '7 min 5 s', '2 h 3 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


class Progress:
    """`total` units of work. bar=None: a tqdm bar when stdout is a terminal, else a plain line every
    `every` seconds (show=False: neither). Messages go to `echo` and, timestamped, to `log_path`."""

    def __init__(self, total: int, *, echo=print, log_path: str | None = None, show: bool = True,
                 bar: bool | None = None, every: float = 15.0, clock=time.monotonic):
        self.total, self.done, self.echo, self.every, self.clock = max(1, total), 0, echo, every, clock
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.start = self.last_line = clock()
        self.bar = None
        if show and (sys.stdout.isatty() if bar is None else bar):
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=self.total, unit="step", dynamic_ncols=True, file=sys.stdout)
            except ImportError:  # tqdm is optional: plain lines instead
                pass
        self.lines = show and self.bar is None
        self._lock = threading.Lock()
        self._queue = self._reader = None

    # -- what the work calls (through report / note) --------------------------
    def __call__(self, item) -> None:
        if isinstance(item, str):
            self.say(item)
        else:
            self.update(int(item))

    def update(self, steps: int) -> None:
        with self._lock:
            self.done = min(self.total, self.done + steps)
            if self.bar is not None:
                self.bar.update(self.done - self.bar.n)
            now = self.clock()
            if now - self.last_line >= self.every or self.done == self.total:
                self.last_line = now
                line = self.status()
                if self.lines:
                    self._print(line)
                self._log(line)

    def status(self) -> str:
        """'35% (1234/3500 steps), 2 min 10 s elapsed, about 4 min 1 s left'."""
        elapsed = self.clock() - self.start
        left = elapsed * (self.total - self.done) / self.done if self.done else None
        return (f"{100 * self.done / self.total:.0f}% ({self.done}/{self.total} steps), {duration(elapsed)} elapsed"
                + (f", about {duration(left)} left" if left is not None and self.done < self.total else ""))

    def say(self, text: str) -> None:
        """A message: on stdout (above the bar) and in the log."""
        with self._lock:
            self._print(text)
            self._log(text)

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.echo(text)
            sys.stdout.flush()

    def _log(self, text: str) -> None:
        if self.log is not None:
            stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
            self.log.write("".join(f"{stamp} {line}\n" for line in text.splitlines()))

    # -- worker processes ------------------------------------------------------
    def queue(self, context):
        """A queue from `context` whose items (steps or messages) a thread feeds into this Progress."""
        self._queue = context.Queue()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        return self._queue

    def _drain(self) -> None:
        for item in iter(self._queue.get, None):
            self(item)

    # -- lifetime --------------------------------------------------------------
    def __enter__(self) -> "Progress":
        global _sink
        _sink = self
        return self

    def __exit__(self, *exc) -> None:
        global _sink
        _sink = None
        if self._queue is not None:
            self._queue.put(None)  # after every worker's items: the pool has ended
            self._reader.join()
        if self.bar is not None:
            self.bar.close()
        if self.log is not None:
            self.log.close()
