"""What the tests under tests/ share: running the scripts as a user does,
photos, tiny runs and checkpoints. pytest reads this file before the tests of
this folder; they import its helpers (`from conftest import run, ...`).

    python -m pytest                    # test_colorize.py and tests/: the whole suite
    python -m pytest -m "not slow"      # without the eight slowest (10 s to 2 min each)
    python -m pytest tests/test_lab.py  # one promise

A test that needs POSIX (signals, FIFOs, file locks, links, resource limits)
is marked `posix_only` and skipped elsewhere; no file here imports a POSIX-only
module at its top, so the suite is collected on any laptop.
"""

import base64
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
sys.path.insert(0, HERE)  # the modules under test (lab, model, ...), however pytest was started

import model  # noqa: E402
# The helpers the pre-class file defines for itself (it must run alone): one copy, shared.
from test_colorize import (DEMO, TINY, digest, make_photo,  # noqa: E402,F401
                           random_inception, write_safetensors)

# Two threads at most, and one where OMP_NUM_THREADS=1 asks for it: on cores shared with
# other work, a second thread that waits for the first makes small models many times slower.
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: ten seconds or more on two cores; -m 'not slow' leaves it out")


posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX only (signals, FIFOs, locks, links)")


# -----------------------------------------------------------------------------
# Running the scripts as a user does: run(), and how a refusal looks

# Why a fork server: each command-line test runs a script in a process of its
# own, as a user does, and a fresh Python spends about two seconds importing
# torch before the script's first line: over the suite, most of its time. So
# run() asks a helper process that imported torch, numpy and PIL once (and has
# run nothing since, so it may fork) to fork a child per command. The child is
# still a process of its own: its argv, working folder, environment, stdout,
# stderr, exit status, and atexit clean-up, as `python SCRIPT ARGS` would have
# them. Where there is no fork (Windows), run() starts a fresh Python instead.
FORK_SERVER = r"""
import atexit, gc, json, os, runpy, signal, sys, threading, time, traceback
import numpy, PIL.Image, torch
reply = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, path, flags in [(0, os.devnull, os.O_RDONLY), (1, req["stdout"], os.O_WRONLY),
                                (2, req["stderr"], os.O_WRONLY)]:
            os.dup2(os.open(path, flags), fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        numpy.random.seed()  # a fresh process would not share its parent's numpy seed
        code = 0
        try:
            argv = req["argv"]
            if argv[0] == "-c":
                sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
                exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
            elif argv[0] == "-m":
                sys.argv, sys.path[0] = argv[1:], os.getcwd()
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            elif not os.path.isfile(argv[0]):
                print(f"python: can't open file {argv[0]!r}", file=sys.stderr)
                code = 2
            else:
                sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else (print(e.code, file=sys.stderr), 1)[1])
        except KeyboardInterrupt:
            traceback.print_exc()
            code = -signal.SIGINT  # as Python: killed by the signal
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # what the interpreter does at exit: threads, then atexit, then objects freed
        atexit._run_exitfuncs()
        gc.collect()
        sys.stdout.flush(), sys.stderr.flush()
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code)
    deadline = time.monotonic() + (req["timeout"] or float("inf"))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
        time.sleep(0.01)
    reply.write(json.dumps(code) + "\n")
    reply.flush()
"""


_fork_server = []


def run(*cmd, timeout=300, cwd=HERE, env=None):
    """python CMD... in cwd: a subprocess.CompletedProcess, as subprocess.run(capture_output=True, text=True).
    An environment that changes what Python or OpenMP read at start-up gets a fresh process."""
    env = dict(os.environ if env is None else env)
    startup = lambda e: {k: v for k, v in e.items() if k.startswith(("PYTHON", "OMP_", "MKL_"))}  # noqa: E731
    if startup(env) != startup(os.environ) or not hasattr(os, "fork"):
        return subprocess.run([sys.executable, *map(str, cmd)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    if not _fork_server:
        _fork_server.append(subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True, cwd=HERE))
    server = _fork_server[0]
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        open(out, "w").close(), open(err, "w").close()
        try:
            server.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env,
                                           "stdout": out, "stderr": err, "timeout": timeout}) + "\n")
            server.stdin.flush()
            code = json.loads(server.stdout.readline())
        except BaseException:  # the helper may be out of step now: a new one for the next command
            server.kill()
            _fork_server.clear()
            raise
        stdout, stderr = open(out).read(), open(err).read()
    if code is None:
        raise subprocess.TimeoutExpired([sys.executable, *argv], timeout, stdout, stderr)
    return subprocess.CompletedProcess([sys.executable, *argv], code, stdout, stderr)


def script(name):
    """A script of the repository by its full path (as run from another folder)."""
    return os.path.join(HERE, name)


def colorize_cli(*args, cwd=HERE, timeout=120):
    return run(script("colorize.py"), *args, cwd=cwd, timeout=timeout)


def one_error_line(r, *words):
    """A refusal as a user sees it: exit 2, one line on stderr, no traceback."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0, r.stderr
    for w in words:
        assert str(w) in r.stderr, r.stderr


def interrupt_at(cmd, line_starts, cwd=HERE, timeout=120):
    """Run python cmd, send SIGINT once a line of its stdout starts with line_starts:
    (returncode, stdout up to then and after, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines come as they are printed
    p = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith(line_starts):
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, "".join(seen) + out, err


def assert_interrupted(code, out, err, expected_line):
    """Stopped by Ctrl-C once it printed expected_line: exit 130, one line on stderr."""
    assert any(line.startswith(expected_line) for line in out.splitlines()), (out, err)  # it got there
    assert code == 130 and "Traceback" not in err, (code, err)
    assert err.count("\n") == 1 and err.startswith("interrupted"), err


# -----------------------------------------------------------------------------
# Photos, runs and checkpoints

@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """Six small color JPEGs (read only: a test that changes photos copies them first)."""
    d = tmp_path_factory.mktemp("photos")
    for i in range(6):
        make_photo(d / f"p{i}.jpg", size=(80 + 8 * i, 64), seed=i)
    return d


@pytest.fixture(scope="session")
def tiny_ckpt(photo_dir, tmp_path_factory):
    """train.py's ckpt.pt after two steps at the TINY size (read only)."""
    out = tmp_path_factory.mktemp("tiny_run")
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    return out / "ckpt.pt"


@pytest.fixture(scope="session")
def inception_net():
    """A random Inception with non-trivial BatchNorm statistics (do not change it)."""
    return random_inception()


@pytest.fixture(scope="session")
def probe():
    torch.manual_seed(1)
    return torch.rand(2, 3, 99, 99) * 2 - 1  # small input: the Inception only needs >= 75 px


def fake_run(folder, step, files=("best.pt", "ckpt.pt"), **config):
    """A run folder as train.py writes it, with an untrained tiny model. ckpt.pt's
    "model" weights are the wrong shape: only its "ema" weights load."""
    folder.mkdir(parents=True, exist_ok=True)
    config = model.ColorizerConfig(**{"width": 8, "global_branch": False, **config})
    weights = model.Colorizer(config).state_dict()
    common = {"config": dataclasses.asdict(config), "step": step, "inception": None, "args": {"size": 32},
              "history": [{"step": step, "val_mse": step / 1000}]}
    if "best.pt" in files:
        torch.save({**common, "model": weights}, folder / "best.pt")
    if "ckpt.pt" in files:
        torch.save({**common, "model": {k: torch.zeros(1) for k in weights}, "ema": weights,
                    "optimizer": {}, "best_mse": step / 1000}, folder / "ckpt.pt")
    return folder



def read_page_data(text):
    """The dict an explorer page embeds, read from its script element id="data"."""
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))


def page_weights(page, n):
    """The weights a page draws, decoded as its script decodes them: (Q, N) floats."""
    codes = torch.frombuffer(bytearray(base64.b64decode(page["weights"])), dtype=torch.uint8).view(-1, n).double()
    return 2.0 ** ((codes - page["uniform_code"]) / page["steps"]) / n
