"""Signals stop cleanly: Ctrl-C, SIGTERM and SIGHUP save the step in hand
(train.py) or leave no half-written file (colorize.py), in one line, exit
130; a reader that leaves a pipe, Ctrl-C while torch loads, under torchrun.
POSIX only (process groups, SIGHUP, SIGPIPE)."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from PIL import Image

from conftest import DEMO, HERE, TINY, make_photo, posix_only, run

pytestmark = posix_only


def signal_a_training_run(photo_dir, out_dir, signum, max_steps=100000):
    """Start a train.py with a loader worker that cannot finish (max_steps),
    wait until it has logged a training step, then send signum to its whole
    process group. -> (exit status, stdout, stderr, the last step logged before
    the signal). Generous deadlines: the machine may be busy."""
    cmd = [sys.executable, "train.py", "--data", str(photo_dir), "--out", str(out_dir), "--max-steps",
           str(max_steps), "--eval-every", str(max_steps), "--log-every", "1", *TINY, "--workers", "1"]
    p = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    out, err = [], []

    def collect(stream, lines):
        for line in stream:
            lines.append(line)
    readers = [threading.Thread(target=collect, args=pipe, daemon=True) for pipe in ((p.stdout, out), (p.stderr, err))]
    for reader in readers:
        reader.start()
    step_line = re.compile(rf"step (\d+)/{max_steps} \| loss")
    try:
        deadline = time.monotonic() + 300
        while not any(step_line.match(line) for line in list(out)):
            assert p.poll() is None, "train.py ended before its first step:\n" + "".join(out + err)[-3000:]
            assert time.monotonic() < deadline, "no training step logged in 300 s:\n" + "".join(out + err)[-3000:]
            time.sleep(0.05)
        logged = max(int(m.group(1)) for m in map(step_line.match, list(out)) if m)
        os.killpg(p.pid, signum)
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for reader in readers:
        reader.join(timeout=60)
    return p.returncode, "".join(out), "".join(err), logged


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_saves_the_step_in_hand_and_resume_goes_on(photo_dir, tmp_path, signame):
    """Ctrl-C reaches every process of the terminal (the loader worker too),
    and timeout, Slurm or a closed ssh session send SIGTERM or SIGHUP to the
    whole process group: train.py finishes the step, saves ckpt.pt there and
    stops in one line. The run cannot finish (100000 steps) and the signal is
    sent after a logged step: it lands during training, and only 130 is a
    clean stop. --resume then goes on from that step."""
    returncode, out, err, logged = signal_a_training_run(photo_dir, tmp_path, getattr(signal, signame))
    assert returncode == 130 and "Traceback" not in err, (returncode, out[-2000:], err[-2000:])
    said = "Ctrl-C" if signame == "SIGINT" else signame
    assert f"{said}: saving a checkpoint after this step, then stopping" in out, out
    stopped = re.search(r"stopped at step (\d+)/100000: (\S+) holds it \(--resume continues the run\)", out)
    assert stopped and stopped.group(2) == str(tmp_path / "ckpt.pt"), out
    step = int(stopped.group(1))
    assert logged <= step < 100000, (logged, step)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == step
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--resume", "--max-steps", step + 2)
    assert r.returncode == 0 and f"at step {step}" in r.stdout, r.stderr
    assert f"step {step + 1}/{step + 2} | loss" in r.stdout and "step 1/" not in r.stdout, r.stdout
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == step + 2


STOP_WHILE_EXITING = """
import atexit, os, signal, sys, time
import runs
class Run:  # what StopRequest asks of train.py's run
    finished = last_step = False
    def last_good(self):
        return "run/ckpt.pt is the last good checkpoint"
run = Run()
runs.StopRequest(run, lambda *a: print(*a, flush=True))
os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: train.py saves the step in hand
run.finished = True  # ... and has saved it; now its loader workers shut down, in an exit handler
atexit.register(lambda: (print("exiting", flush=True), time.sleep(30)))
"""


def test_a_second_ctrl_c_while_train_exits_is_one_line(tmp_path):
    """Once everything is saved, a Ctrl-C during the exit (loader workers
    shutting down) stops at once, says nothing was lost, and prints no
    traceback from the exit handler it interrupts."""
    p = subprocess.Popen([sys.executable, "-c", STOP_WHILE_EXITING], cwd=HERE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("exiting"):
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130 and "Traceback" not in err and not err.strip(), err
    assert out.strip().splitlines()[-1] == "stopped while exiting: every file was already written", out


def test_colorize_stopped_by_sigterm_exits_130_and_leaves_no_temporary_file(tmp_path):
    for i in range(30):
        make_photo(tmp_path / f"p{i}.jpg", size=(400, 300), seed=i)
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "colorize.py"), str(tmp_path), "--checkpoint", DEMO],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("[2/"):
            break
    p.terminate()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_colorize_whose_reader_left_stops_in_one_line(tiny_ckpt, tmp_path):
    """colorize.py DIR | head: when the pipe closes, one line on stderr, exit
    141 as a killed pipeline's, no traceback, and every output written is whole."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", size=(40, 32), seed=i) for i in range(3)]
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "colorize.py"), *map(str, photos), "--checkpoint",
                          str(tiny_ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()  # the reader leaves before the first line
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "stopped: standard output was closed; the outputs written so far are whole"
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    assert all(Image.open(f).size == (40, 32) for f in tmp_path.glob("*_color.png"))


@pytest.mark.parametrize("script", ["train.py", "colorize.py"])
def test_ctrl_c_while_torch_loads_is_one_line(tmp_path, script):
    p = subprocess.Popen([sys.executable, script, "--help"], cwd=HERE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the script is importing torch (a second or more)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert "Traceback" not in err and p.returncode in (0, 130), err


@pytest.mark.slow
def test_ctrl_c_under_torchrun_stops_every_rank_in_one_line_each(photo_dir, tmp_path):
    """Ctrl-C during training under torchrun: no rank says "before training
    began", none prints a traceback (SystemExit from half-run exit handlers),
    rank 0 says in one line where the last checkpoint is, and it stays whole."""
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          os.path.join(HERE, "train.py"), "--data", str(photo_dir), "--out", str(out),
                          "--max-steps", "100000", "--eval-every", "2", "--log-every", "1", *map(str, TINY)],
                         cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "ckpt.pt").exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    stdout, stderr = p.communicate(timeout=120)
    # (torchrun's own launcher prints a traceback of its SignalException: not ours)
    ours = [line for line in stderr.splitlines() if "train.py" in line or "SystemExit" in line]
    assert "before training began" not in stdout + stderr and not ours, (stdout[-1500:], ours)
    assert re.search(r"stopped; .*ckpt\.pt is the last good checkpoint, --resume continues from it", stdout), stdout
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] >= 2
