"""Progress: plain periodic lines off a terminal, timestamped log lines, and steps reported from
worker processes reach the parent's count."""
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor

from neumeta_fast import progress


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_plain_lines_every_period_and_at_the_end(tmp_path):
    clock, lines = _Clock(), []
    with progress.Progress(100, echo=lines.append, bar=False, every=10, clock=clock,
                           log_path=str(tmp_path / "log.txt")) as bar:
        bar.say("the plan")
        clock.now = 5
        progress.report(10)  # 5 s since the last line: no line yet
        clock.now = 20
        progress.report(40)
        progress.note("a job ended")
        clock.now = 40
        progress.report(50)
    assert lines == ["the plan", "50% (50/100 steps), 20 s elapsed, about 20 s left", "a job ended",
                     "100% (100/100 steps), 40 s elapsed"]
    log = (tmp_path / "log.txt").read_text().splitlines()
    assert [line[20:] for line in log] == lines
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d $", line[:20]) for line in log)


def test_no_lines_when_progress_is_off():
    lines = []
    with progress.Progress(10, echo=lines.append, show=False) as bar:
        progress.report(10)
        bar.say("kept")
    assert lines == ["kept"]


def test_report_outside_a_progress_is_a_no_op():
    progress.report(3)
    progress.note("nobody listens")


def test_steps_from_worker_processes_reach_the_parent():
    lines = []
    context = multiprocessing.get_context("spawn")
    with progress.Progress(10, echo=lines.append, bar=False, every=1e9) as bar:
        with ProcessPoolExecutor(2, mp_context=context, initializer=progress.init_worker,
                                 initargs=(bar.queue(context), 1)) as pool:
            list(pool.map(progress.report, [3, 3, 4]))
            list(pool.map(progress.note, ["from a worker"]))
    assert bar.done == 10
    assert lines[0].startswith("100% (10/10 steps)") and lines[1] == "from a worker"


def test_durations_read_well():
    assert [progress.duration(s) for s in (42, 425, 7380)] == ["42 s", "7 min 5 s", "2 h 3 min"]
