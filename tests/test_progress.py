"""The time left that train.py and colorize.py print follows the recent rate
(runs.Eta): a machine that becomes busy, or idle again, shows within a few
log lines, and time that is not progress (validation, a save) is not counted."""

import re
import time

import runs
from conftest import make_photo, run


def seconds(eta):
    """"eta 3m07s" -> 187."""
    m = re.fullmatch(r"eta (\d+)m(\d\d)s", eta)
    assert m, eta
    return 60 * int(m.group(1)) + int(m.group(2))


def test_the_eta_follows_a_change_of_rate_within_a_few_updates(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    eta = runs.Eta(1000)

    def steps(first, last, each):
        for step in range(first, last + 1):
            clock[0] += each
            said = eta.update(step)
        return seconds(said)
    assert abs(steps(1, 100, 1.0) - 900) <= 1  # 1 s a step, 900 steps left
    # the machine becomes busy: 4 s a step. Ten log lines later the ETA is near 4 s a
    # step, where the mean rate since the start (1.3 s a step) would say a third of it.
    left = steps(101, 110, 4.0)
    assert 0.75 * 4 * 890 < left <= 4 * 890, left
    left = steps(111, 120, 1.0)  # idle again
    assert 880 <= left < 1.25 * 880, left
    # ten minutes of validation, then a step of a second: the validation is not progress
    clock[0] += 600
    eta.pause()
    clock[0] += 1.0
    assert seconds(eta.update(121)) < 1.25 * 879
    assert seconds(eta.update(1000)) == 0  # done: nothing left, never a negative time


def test_a_resumed_run_counts_only_the_steps_it_took(monkeypatch):
    """train.py --resume at step 500: its first step is not 501 steps in one interval."""
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    eta = runs.Eta(1000, done=500)
    clock[0] += 2.0
    assert seconds(eta.update(501)) == 2 * 499


def test_the_progress_clock_starts_at_the_first_photo(tiny_ckpt, tmp_path):
    """Time spent before the first photo (loading models: seconds) is not
    progress: the first line's rate and time left come from the photos alone."""
    photos = [str(make_photo(tmp_path / f"p{i}.jpg", seed=i)) for i in range(3)]
    code = ("import sys, time, colorize, outputs\n"
            "made = outputs.OutputPlan.__init__\n"
            "def slow(self, args):\n"
            "    made(self, args)\n"
            "    time.sleep(3)  # as a large model loading after the plan is made\n"
            "outputs.OutputPlan.__init__ = slow\n"
            f"sys.exit(colorize.main({photos!r} + ['--checkpoint', {str(tiny_ckpt)!r}]))")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    rate, minutes, seconds = re.search(r"\| ([\d.]+) img/s \| eta (\d+)m(\d+)s", first).groups()
    assert float(rate) > 1 and 60 * int(minutes) + int(seconds) < 3, first  # with the 3 s: 0.33 img/s, eta 0m06s
