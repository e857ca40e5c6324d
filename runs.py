"""The run folder: checkpoints, logs and the rules that keep a user's files safe.

train.py and colorize.py tell the paper's story; this file holds the
bookkeeping both share, so that neither has to stop mid-story to do it, and
none of it changes what a model learns or predicts:

  1. One-line errors: what a script prints when it stops on bad input.
  2. Checkpoints: read with a one-line reason when they cannot be (never
     torch's advice to unpickle an untrusted file), written atomically (a crash
     at any moment leaves the last good file whole), exported small, found.
  3. A training run's folder (train.py --out): what counts as a run, the
     --resume / --init / --overwrite rules for files, a lock, log.csv, loss.png
     and samples.png.
  4. Stopping on Ctrl-C, SIGTERM or SIGHUP.
"""
import argparse
import atexit
import contextlib
import csv
import dataclasses
import hashlib
import io
import math
import os
import random
import re
import secrets
import signal
import stat
import sys
import tempfile
import time
import types

# A Ctrl-C in the seconds a script spends importing torch: one line, no traceback. Only for
# this repository's scripts (docs/ too), which import runs first, not a notebook that imports them.
if os.path.abspath(getattr(sys.modules["__main__"], "__file__", "") or "/-").startswith(
        os.path.dirname(os.path.abspath(__file__)) + os.sep):
    signal.signal(signal.SIGINT, lambda *_: (print("interrupted", file=sys.stderr), os._exit(130)))
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import data  # noqa: E402
import inception  # noqa: E402
import model  # noqa: E402
from data import printable  # noqa: E402

# What train.py writes into --out. A folder holding any of them holds a run.
CHECKPOINT, BEST, LOG, CURVES, SAMPLES = "ckpt.pt", "best.pt", "log.csv", "loss.png", "samples.png"
RUN_FILES = (CHECKPOINT, BEST, LOG, CURVES, SAMPLES)
# Where colorize.py looks for runs when no --checkpoint is given: runs/, where the
# README and the course train (--out runs/NAME), and out/, train.py's default --out.
RUN_ROOTS = ("runs", "out")
SEARCHED = " or ".join(f"{root}/" for root in RUN_ROOTS)
MAX_SIZE = 4096  # the short side a model sees, at most: beyond it the network's copy alone needs gigabytes

# -----------------------------------------------------------------------------
# 1. One-line errors


class RunError(Exception):
    """A bad flag, file or checkpoint: the message is the one line the command
    prints after "error: " (and the notebook API raises)."""


class CheckpointError(RunError):
    """A checkpoint that cannot be read or used, and why."""


def fail(message, status=2):
    """Stop a script with one line on stderr (exit 2: the user's input; 1: the run)."""
    print(f"error: {printable(str(message))}", file=sys.stderr)  # every control character escaped: one line
    sys.exit(status)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, whose bad flag values stop the script as every other error
    does: one line ("error: argument --lr: invalid float value: 'x'"), exit 2."""

    def error(self, message):
        fail(message)


def number_in(kind, low, high=None, low_open=False, high_open=False, multiple=1):
    """An argparse type: a finite kind (int or float) from low to high (None:
    no bound), each end included unless said open, a multiple of `multiple`.
    Out of range: argparse's own one-line error naming the flag, exit status 2."""
    def parse(text):
        value = kind(text)
        above = value > low if low_open else value >= low
        below = high is None or (value < high if high_open else value <= high)
        if not ((kind is int or math.isfinite(value)) and above and below and (multiple == 1 or value % multiple == 0)):
            said = f"{'above' if low_open else 'at least'} {low}"
            said += "" if high is None else f" and {'below' if high_open else 'at most'} {high}"
            said = f"a multiple of {multiple}, {said}" if multiple > 1 else said
            raise argparse.ArgumentTypeError(f"must be {said}, got {text}")
        return value
    parse.__name__, parse.kind = kind.__name__, kind  # argparse names the type in "invalid int value"
    return parse


crop_size = number_in(int, 8, 2048, multiple=8)  # the encoder halves a crop three times


def inception_choice(text):
    """argparse type of --inception: auto, none, or a weights file that exists."""
    if text not in ("auto", "none") and not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"must be auto, none or a weights file (a regular file that exists), "
                                         f"got {printable(text)}")
    return text


def device(choice, index=0):
    """--device auto, cpu or cuda -> a torch.device, or one line and exit 2 when
    CUDA is asked for and there is none."""
    if choice == "cuda" and not torch.cuda.is_available():
        fail("--device cuda, but no CUDA device is available: --device cpu or auto")
    return torch.device(f"cuda:{index}" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def writable_folder(path, flag="--out"):
    """Make the folder path (and its parents) and write to it now, before any
    work, or stop in one line naming the flag: a file or a device there, a
    link to nothing, no permission, a read-only disk. The probe is a file of
    no name, so there is nothing to plant a link at. -> True if it was made."""
    made = not os.path.isdir(path)
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        why = f"cannot write there ({e.strerror or e})"
        if os.path.lexists(path) and not os.path.isdir(path):  # something other than a folder is there
            why = ("a link to nothing (or a loop of links)" if not os.path.exists(path) else
                   "a file, not a folder" if os.path.isfile(path) else "not a folder (a device or a FIFO)")
        fail(f"{flag} {path}: {why}")
    return made


def new_files(paths, overwrite, inputs=None, flag="--out"):
    """Before any work: each of `paths` (given by `flag`) can be written as a
    file, none of them an input ({what: path}), no folder, none there unless
    overwrite, their folders written to now. One line and exit 2 if not."""
    for path in paths:
        same = [what for what, p in (inputs or {}).items() if os.path.isfile(path) and os.path.samefile(path, p)]
        why = ("give a file name" if not os.path.basename(path) else f"that is the {same[0]} itself" if same else
               "exists and is not a file (a folder?)" if os.path.lexists(path) and not os.path.isfile(path) else
               "exists (--overwrite replaces it)" if os.path.lexists(path) and not overwrite else None)
        if why:
            fail(f"{flag} {path or repr(path)}: {why}")
        writable_folder(os.path.dirname(path) or ".", flag)


def write_new(path, write, overwrite, flag="--out"):
    """save_atomic(write, path) after new_files' checks once more (after minutes
    of work, a file that appeared meanwhile is not replaced unasked), or one line."""
    new_files([path], overwrite, flag=flag)
    try:
        save_atomic(write, path)
    except OSError as e:  # a full disk, a folder made at the name meanwhile
        fail(f"{flag} {path}: cannot write there ({e.strerror or e})")


def checked(call, *args, said=None):
    """call(*args), or stop in one line (exit 2) when it raises ValueError or
    RuntimeError, which the modules below the scripts raise for input they
    cannot use, or a RunError; `said` (a flag and its value) goes before the reason."""
    try:
        return call(*args)
    except (ValueError, RuntimeError, RunError) as e:
        fail(f"{said}: {e}" if said else e)


class Eta:
    """Time left from the recent rate, as tqdm estimates it: an exponential
    moving average of seconds per unit, so a machine that becomes busy (or
    idle) shows in the estimate within a few updates, where the mean rate
    since the start would lag for the rest of the run."""

    def __init__(self, total, done=0, smoothing=0.3):
        self.total, self.done, self.smoothing = total, done, smoothing
        self.seconds_per_unit, self.last = None, time.monotonic()

    def pause(self):
        """Time from here to the next update is not progress (validation, a save)."""
        self.last = time.monotonic()

    def update(self, done):
        """done units so far -> "eta 3m07s"."""
        now = time.monotonic()
        rate = (now - self.last) / max(1, done - self.done)
        self.seconds_per_unit = rate if self.seconds_per_unit is None else \
            self.smoothing * rate + (1 - self.smoothing) * self.seconds_per_unit
        self.done, self.last = done, now
        seconds = self.seconds_per_unit * max(0, self.total - done)
        return f"eta {int(seconds // 60)}m{int(seconds % 60):02d}s"

# -----------------------------------------------------------------------------
# 2. Checkpoints

def save_atomic(write, path):
    """write(f) into a new temporary file beside path, then rename it over
    path: a crash at any moment leaves either the old file or the new one
    whole, never half of one. The temporary file is created exclusively
    (O_EXCL, O_NOFOLLOW), so a link planted at its name is never written
    through, and its name (NAME.tmp and digits, see TEMPORARY) fits in 255
    bytes wherever path's own name does. A link at path itself is replaced,
    not followed."""
    folder, name = os.path.split(os.fspath(path))
    stem = os.fsdecode(os.fsencode(name)[:240])  # room for ".tmp" and ten digits
    for _ in range(100):  # a name taken (by a link, or another process): another one
        tmp = os.path.join(folder, f"{stem}.tmp{secrets.randbelow(10**10)}")
        with contextlib.suppress(FileExistsError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
            break
    else:
        raise FileExistsError(f"{folder or '.'}: no free temporary name for {name}")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C: no half-written temporary file stays behind
        if os.path.lexists(tmp):
            os.remove(tmp)
        raise


# The names save_atomic gives its temporary files, and only those: what a
# crashed save may leave behind, and train.py removes at start.
TEMPORARY = re.compile(r".+\.tmp\d+")


def torch_writer(obj):
    """A write(f) for save_atomic. Serialized in memory first, so a failed
    write surfaces as the OSError it is (torch.save to a file reports it as an
    internal RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return lambda f: f.write(buffer.getbuffer())


def read_checkpoint(path, missing="no such file", unreadable="not a checkpoint file"):
    """A checkpoint's dict (plain types only: weights_only=True), or
    CheckpointError "PATH: why not", in the words of the command that asks."""
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"a {type(path).__name__} where a path to a checkpoint was expected")
    if not os.path.isfile(path):
        raise CheckpointError(f"{printable(path)}: " + ("a folder, not a checkpoint file" if os.path.isdir(path) else
                                                   "not a regular file" if os.path.exists(path) else missing))
    try:
        ckpt = inception.load_tensors(path)
    except Exception as e:  # unpickling, truncated, random bytes: torch raises many kinds
        raise CheckpointError(f"{printable(path)}: {unreadable} ({inception.short_reason(e)})") from None
    wrong = malformed(ckpt)
    if wrong:
        raise CheckpointError(f"{printable(path)}: not a compatible colorizer checkpoint ({wrong})")
    return ckpt


# What each entry of a checkpoint must be, where it is there at all; the same
# for its config, whose every field must be there (model.ColorizerConfig).
CHECKPOINT_TYPES = {"config": dict, "model": dict, "ema": (dict, type(None)), "args": (dict, type(None)),
                    "history": (list, type(None)), "step": int, "inception": (dict, type(None)),
                    "validation": (dict, type(None)), "draws": int, "validated_on": (str, type(None)),
                    "trained_on": (str, type(None))}
CONFIG_VALUES = {"variant": ("attention", "baseline"), "coords": (True, False), "global_branch": (True, False),
                 "width": range(2, 1025), "embed_dim": range(1, 100_001), "padding": ("zeros", "replicate")}


def malformed(ckpt):
    """What is wrong with a checkpoint, in words, or None: a dict with a config
    and weights, each entry of the type train.py writes, every value that a
    script later uses (the config, the Inception record, the history, the
    training size) of its type and range, so that nothing fails on it later."""
    if not isinstance(ckpt, dict):
        return f"a {type(ckpt).__name__}, not a dict"
    for key, kind in CHECKPOINT_TYPES.items():  # a config and weights always
        if (key in ckpt or key in ("config", "model")) and not isinstance(ckpt.get(key), kind):
            return f"{key!r} is a {type(ckpt[key]).__name__}" if key in ckpt else f"no {key!r}"
    config = ckpt["config"]
    for key, allowed in CONFIG_VALUES.items():  # type(): True is an int, 1 == True
        if key not in config or type(config[key]) is not type(allowed[0]) or config[key] not in allowed:
            return f"its config's {key} is {config.get(key)!r}" if key in config else f"its config has no {key}"
    if set(config) - set(CONFIG_VALUES):
        return f"its config has an unknown {sorted(set(config) - set(CONFIG_VALUES))[0]!r}"
    for key in ("model", "ema"):
        if not all(isinstance(v, torch.Tensor) and v.layout == torch.strided and not (v.is_quantized or v.is_nested)
                   and (v.is_floating_point() or v.dtype == torch.int64) for v in (ckpt.get(key) or {}).values()):
            return f"{key!r} holds something other than dense float tensors (and int64 counters)"
    record = ckpt.get("inception") or {}
    if not all(isinstance(record.get(k), str) for k in ("file", "sha256") if k in record):
        return "its 'inception' record holds something other than a file name and a sha256"
    finite = lambda v: type(v) is float and math.isfinite(v) or type(v) is int and abs(v) < 2**63  # noqa: E731
    if not all(isinstance(row, dict) and type(row.get("step")) is int and all(
            finite(v) for k, v in row.items() if k != "step") for row in ckpt.get("history") or []):
        return "'history' holds something other than rows of finite numbers"
    for key in ("step", "draws"):  # counts: of optimizer steps done, of photos drawn
        if not (type(ckpt.get(key, 0)) is int and 0 <= ckpt.get(key, 0) < 2**62):
            return f"{key!r} is {ckpt.get(key)!r}"
    size = (ckpt.get("args") or {}).get("size", 256)
    if not (type(size) is int and 8 <= size <= MAX_SIZE):
        return f"its training size is {size!r}"
    if not all(finite(v) for v in (ckpt.get("validation") or {}).values() if v is not None):
        return "'validation' holds something other than finite numbers"
    return None


def averaged_weights(ckpt):
    """The weights a checkpoint's validation judged, the ones to colorize with:
    the moving average of a train.py ckpt.pt where it has one, else its "model"
    (best.pt and exported copies hold the averaged weights there). Floats as
    float32, whatever they were stored in (the demo is float16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in (ckpt.get("ema") or ckpt["model"]).items()}


def colorizer_from(ckpt, said, weights=None):
    """The Colorizer a checkpoint describes, with its averaged weights (or
    `weights`), or CheckpointError "said: why not", naming the first weight
    that does not fit, or saying that the weights hold NaN or infinite values
    (a diverged run's weights colorize every photo black). Built on the meta
    device (no memory, no random initialization), judged there, then given
    the file's tensors: a small file that declares a huge width is refused
    without building it."""
    with torch.device("meta"):
        net = model.Colorizer(model.ColorizerConfig(**ckpt["config"]))
    own, state = net.state_dict(), averaged_weights(ckpt) if weights is None else weights
    try:
        for k in [*own, *state]:  # the first weight that does not fit
            if k not in state or k not in own:
                raise ValueError(f"{k} is {'missing' if k not in state else 'not in this model'}")
            if state[k].shape != own[k].shape:
                raise ValueError(f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}")
            if state[k].is_floating_point() != own[k].is_floating_point():
                raise ValueError(f"{k} is {state[k].dtype}, the model needs {own[k].dtype}")
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"its weights hold NaN or infinite values ({bad[0]}{' and more' if len(bad) > 1 else ''}"
                             f": a diverged run?)")
    except ValueError as e:
        raise CheckpointError(f"{said}: not a compatible colorizer checkpoint ({e})") from None
    net.load_state_dict(state, assign=True)
    return net


def config_from_flags(flags, ckpt=None, source="the checkpoint"):
    """A new colorizer's config from flags.model, .coords, .width, .padding and
    .inception (None: not given), or, with a checkpoint to go on from, the
    checkpoint's config, which the flags may restate but not change."""
    if ckpt is None:
        variant = flags.model or "attention"
        coords = flags.coords or ("on" if variant == "attention" else "off")  # the paper's has them, the baseline not
        return model.ColorizerConfig(variant=variant, coords=coords == "on",
                                     global_branch=flags.inception != "none", width=flags.width or 64,
                                     padding=flags.padding or model.ColorizerConfig.padding)
    config = model.ColorizerConfig(**ckpt["config"])
    has = {"model": config.variant, "coords": "on" if config.coords else "off", "width": config.width,
           "padding": config.padding}
    for flag, value in has.items():
        if getattr(flags, flag) not in (None, value):
            raise ValueError(f"--{flag} {getattr(flags, flag)}, but {source} is "
                             + " ".join(f"--{k} {v}" for k, v in has.items()))
    if flags.inception is not None and (flags.inception != "none") != config.global_branch:
        raise ValueError(f"--inception {flags.inception}, but {source} " + (
            "has a global branch: it needs the Inception weights (--inception auto or PATH)" if config.global_branch
            else "has no global branch (trained with --inception none)"))
    return config


def malformed_flags(parser, flags):
    """What is wrong with the flags a checkpoint recorded (its "args"), judged
    by the parser that would have read them, its types and ranges included,
    in words, or None: a --resume must not train on a learning rate that is a
    string, nor on one that is negative."""
    for action in parser._actions:
        if action.dest not in flags or action.dest == "help" or (flags[action.dest] is None and action.default is None):
            continue
        value, flag = flags[action.dest], action.option_strings[0]
        kind = bool if action.nargs == 0 else getattr(action.type, "kind", str)  # number_in's, else a string
        if type(value) is not kind and not (kind is float and type(value) is int):
            return f"its {flag} is {value!r}, not {'an' if kind is int else 'a'} {kind.__name__}"
        if action.choices and value not in action.choices:
            return f"its {flag} is {value!r}, not one of {', '.join(map(str, action.choices))}"
        try:
            action.type and action.type(str(value))
        except argparse.ArgumentTypeError as e:
            return f"its {flag} {e}"
    return None


def resumable(ckpt):
    """What keeps a checkpoint from being a run to continue, in words, or None."""
    if not (isinstance(ckpt.get("optimizer"), dict) and "param_groups" in ckpt["optimizer"]):
        return "no optimizer state: a model alone is fine-tuned with --init CKPT and another --out"
    if not (isinstance(ckpt.get("args"), dict) and isinstance(ckpt.get("history"), list) and "step" in ckpt
            and isinstance(ckpt.get("best_mse", 0.0), float) and not math.isnan(ckpt.get("best_mse", 0.0))):
        return "no flags, history, step or best validation"
    try:  # set on generators of their own: nothing of this process's changes
        random.Random().setstate(ckpt["rng"]["python"])
        torch.Generator().set_state(ckpt["rng"]["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        return "no random state that Python and PyTorch can take"
    return None


def describe(ckpt):
    """"step N, validation MSE X": what a checkpoint is, for the log."""
    val = ckpt.get("validation") or next((r for r in reversed(ckpt.get("history") or []) if "val_mse" in r), {})
    mse = val.get("val_mse")  # a hand-made checkpoint may leave it out, or None
    return f"step {ckpt.get('step', '?')}" + (f", validation MSE {mse:.5f}" if isinstance(mse, (int, float)) else "")


def export_checkpoint(src, dst, start=None, share=1.0, size=None):
    """A train.py checkpoint -> a small inference copy: config, float16 weights,
    training size (or `size`, the short side colorize.py is to use), Inception
    record and the last validation numbers (no optimizer state), written
    atomically. With `start`, the checkpoint a fine-tune began from, the weights
    are share * src's + (1 - share) * start's: a point on the line between the
    model before and after fine-tuning, which can keep much of what each knew
    (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"). This is
    how demo/colorizer.pt was made (docs/demo.md)."""
    if not (0 <= share <= 1 and (size is None or type(size) is int and 8 <= size <= MAX_SIZE and size % 8 == 0)):
        raise ValueError(f"share {share!r} must be from 0 to 1 and size {size!r} a multiple of 8 from 8 to {MAX_SIZE}")
    ckpt = read_checkpoint(src)
    weights = averaged_weights(ckpt)
    if start is not None:
        first = read_checkpoint(start)
        before = averaged_weights(first)
        if {k: v.shape for k, v in before.items()} != {k: v.shape for k, v in weights.items()} or \
                first["config"] != ckpt["config"]:
            raise ValueError(f"{start}: not the architecture of {src}")
        weights = {k: share * v + (1 - share) * before[k] if v.is_floating_point() else v for k, v in weights.items()}
    small = {"config": ckpt["config"], "step": ckpt["step"], "inception": ckpt["inception"],
             "args": {"size": size or ckpt["args"]["size"]},  # validation: the last one (a blend had none)
             "validation": None if start else next((r for r in reversed(ckpt["history"]) if "val_mse" in r), None),
             "model": {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}}
    save_atomic(torch_writer(small), dst)


def open_run(path):
    """A checkpoint file as it is; a train.py run folder as its best.pt (the
    lowest validation MSE), else its ckpt.pt."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        return path
    found = next((p for p in (os.path.join(path, n) for n in (BEST, CHECKPOINT)) if os.path.isfile(p)), None)
    if found is None:
        raise CheckpointError(f"{printable(path)}: a folder without {BEST} or {CHECKPOINT}")
    return found


def open_colorizer(checkpoint, default):
    """What colorize.py and the notebook API colorize with: checkpoint (a file
    or a run folder), or with None the newest run under runs/ or out/, else
    default. -> (the Colorizer with its averaged weights, the checkpoint, its
    path), or CheckpointError in one line; for a checkpoint found by the
    search it says so, and how to choose another."""
    found = [os.path.join(folder, n) for root in RUN_ROOTS if checkpoint is None for folder, _, names in os.walk(root)
             for n in (BEST, CHECKPOINT) if n in names and os.path.isfile(os.path.join(folder, n))]
    found = found and open_run(os.path.dirname(max(found, key=os.path.getmtime)))  # the newest; os.walk follows no link
    path = open_run(checkpoint) if checkpoint is not None else found or default
    try:
        ckpt = read_checkpoint(path, missing="no such checkpoint")
        return colorizer_from(ckpt, printable(path)), ckpt, path
    except CheckpointError as e:
        raise CheckpointError(f"{e} (the newest run under {SEARCHED}; choose another with --checkpoint PATH)"
                              if found else str(e)) from None

# -----------------------------------------------------------------------------
# 3. A training run's folder

def run_files(args, why="holds a run already"):
    """The names of the files train.py writes that --out holds (links too),
    when it may: none a folder, and no run there unless --resume or
    --overwrite. Looked at before any work, and again under the lock."""
    held = [name for name in RUN_FILES if os.path.lexists(os.path.join(args.out, name))]
    folders = [name for name in held if os.path.isdir(os.path.join(args.out, name))]
    if folders:  # no file of train.py's: neither replaced nor continued
        fail(f"--out {args.out}: {', '.join(folders)} is a folder, not train.py's file; move it away or give "
             f"another --out")
    if held and not args.resume and not args.overwrite:  # whoever wrote them, train.py would replace them
        fail(f"--out {args.out} {why} ({', '.join(held)}): --resume to continue it, --overwrite to start over, "
             f"or another --out")
    return held


def start_training(parser, args):
    """Everything train.py checks before any work, in the order it matters,
    each problem one line and exit status 2: the flags that depend on each
    other or on a checkpoint, the checkpoint --resume continues or --init
    starts from, the config, the Inception file, the photos; then the run
    folder is made and locked. Nothing is removed here: with --overwrite the
    old run's files are replaced at the new run's first save (Run), so a
    start that fails later loses nothing. -> what the run starts from."""
    is_main = int(os.environ.get("RANK", 0)) == 0  # only rank 0 logs and writes files
    log = (lambda *a: print(*a, flush=True)) if is_main else (lambda *a: None)  # flushed: log files fill as it runs
    # The flags typed on the command line, which --resume applies (it keeps the run's own value of the others):
    # a second parse into a namespace that holds None for each flag, which argparse then fills with no default.
    typed = parser.parse_args(namespace=argparse.Namespace(**{k: None for k in vars(args)}))
    given = {k for k, v in vars(typed).items() if v is not None}
    for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 still print
        stream.reconfigure(errors="backslashreplace")
    on_stop_signals(lambda *_: fail("interrupted before training began: nothing written", 130))
    # The --resume / --init / --overwrite rules for files: no run in --out is replaced unasked, and the
    # checkpoint --resume continues (--out/ckpt.pt, a run to continue) or --init starts from is read and judged.
    if args.resume and args.init:
        fail("--resume continues a run, --init starts a new one from a checkpoint: give one of them")
    run_files(args)
    path = os.path.join(args.out, CHECKPOINT) if args.resume else args.init
    flag = "--resume" if args.resume else "--init"
    source = f"{flag} {printable(path or '')}"  # who asks, in messages
    try:
        ckpt = read_checkpoint(path, unreadable="not a train.py checkpoint") if path else None
    except CheckpointError as e:
        fail(f"{flag} {e}")
    wrong = args.resume and (resumable(ckpt) or malformed_flags(parser, ckpt["args"]))
    if wrong:  # its recorded flags too: a run must not go on with a string, or a negative number, for --lr
        fail(f"{source}: not a run to continue ({wrong})")
    step = ckpt["step"] if args.resume else 0
    if args.resume:  # the run's own recipe, except the flags typed now (said) and this process's own
        own = ("out", "resume", "overwrite", "init", "device", "workers", "cache", "compile")
        for k, v in ckpt["args"].items():
            if k not in given and k not in own:
                setattr(args, k, v)
        changed = [f"--{k.replace('_', '-')} {getattr(args, k)} (was {ckpt['args'].get(k)})" for k in sorted(given)
                   if k not in ("resume", "out") and ckpt["args"].get(k, getattr(args, k)) != getattr(args, k)]
        log("resume: " + (", ".join(changed) or "with the run's own settings"))
    for flag, wrong, must in [
            ("--max-steps", args.max_steps <= step, f"more than the {step} steps the run has done"),
            ("--balance", args.balance and "RANK" in os.environ, "0 under torchrun"),
            ("--compile", args.compile and (args.device == "cpu" or not torch.cuda.is_available()),
             "left out on the CPU: PyTorch's CPU compiler fails on replicate padding (it runs on CUDA)")]:
        if wrong:
            fail(f"{flag} must be {must}, got {getattr(args, flag[2:].replace('-', '_'))}")
    device(args.device)
    config = checked(config_from_flags, args, ckpt, source)  # a checkpoint's own: flags may restate it
    # built on a network of no memory, judged, then given the file's tensors, now (--resume: the last step's)
    net = checked(colorizer_from, ckpt, source, ckpt["model"] if args.resume else None) if ckpt else None
    ema_net = checked(colorizer_from, ckpt, source, ckpt["ema"]) if args.resume and ckpt.get("ema") else None
    given_inception = checked(inception.open_inception, args.inception, (ckpt or {}).get("inception"),
                              said=f"--inception {printable(args.inception or '')}") \
        if config.global_branch and args.inception not in (None, "auto", "none") else None
    problems = []  # unreadable folders, FIFOs: passed over, said once
    try:
        train_files, val_files = data.split_images(args.data, args.val_fraction, problems, run_folder=args.out)
    except ValueError as e:
        fail(f"--data {e}")
    for problem in problems:
        log(f"warning: {problem}")
    lock, replaces = prepare_folder(args, ckpt) if is_main else (None, [])  # the lock: held until the process ends
    args.inception = args.inception or "auto"
    if args.init:
        log(f"initialized from {printable(args.init)} (step {ckpt.get('step', '?')} of its run)")
    skipped = set()  # files passed over while training: one-line reasons, each said once

    def note_skipped(reasons):
        for reason in set(reasons) - skipped:
            skipped.add(reason)
            log(f"warning: skipped {reason}")
    return types.SimpleNamespace(
        log=log, is_main=is_main, ckpt=ckpt, step=step, config=config, net=net, ema_net=ema_net,
        inception=given_inception[:2] if given_inception else None, train_files=train_files, val_files=val_files,
        lock=lock, replaces=replaces, skipped=skipped, note_skipped=note_skipped,
        # the photos drawn so far (all ranks), where the stream of a resumed run goes on
        draws=ckpt.get("draws", step * args.batch_size * int(os.environ.get("WORLD_SIZE", 1))) if args.resume else 0,
        fine_tune=bool(args.init or ((ckpt or {}).get("args") or {}).get("init")))  # also when --resume continues one


def start_device(args):
    """--device -> (torch.device, rank, world), the seeds set (each rank its
    own), --dtype auto made bfloat16 on CUDA, float32 on the CPU. On CUDA:
    TF32 matmuls and cuDNN's autotuner (fixed crop sizes: it picks the
    fastest kernels once). Under torchrun: the process group, each
    rank on the GPU of its LOCAL_RANK, named, so that collectives (the final
    barrier) know which one it is."""
    dev = device(args.device, index=int(os.environ.get("LOCAL_RANK", 0)))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if "RANK" in os.environ:  # set by torchrun
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                             device_id=dev if dev.type == "cuda" else None)
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if "RANK" in os.environ else (0, 1)
    random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    if args.dtype == "auto":
        args.dtype = "bfloat16" if dev.type == "cuda" else "float32"
    return dev, rank, world


def start_inception(start, dev, memory_format):
    """The frozen Inception on the device, said in the log: --inception PATH as
    start_training checked it, or the default weights, downloaded once (under
    torchrun by rank 0; the others find them in the cache). -> (network, record)."""
    if start.inception is None and "RANK" in os.environ:
        if start.is_main:
            checked(inception.default_inception_path)
        torch.distributed.barrier()
    net, record = start.inception or checked(inception.open_inception, "auto", (start.ckpt or {}).get("inception"))[:2]
    start.log(f"inception: {record['file']} (sha256 {record['sha256'][:12]}...)")
    return net.to(dev, memory_format=memory_format), record


def wrap_for_training(net, compile, dev):
    """What the training step calls: net compiled with --compile, and under
    torchrun in DistributedDataParallel (gradients averaged over the ranks)."""
    net = torch.compile(net) if compile else net
    return torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if "RANK" in os.environ else net


def prepare_folder(args, ckpt=None):
    """Make --out and write to it now, not after the first 500 steps; lock it
    against a second train.py; look again, under the lock, at what
    start_training saw (another train.py may have written a run there, or
    gone on with the one --resume read: ckpt); remove what an interrupted
    save left behind. A folder made here and left empty by a failed start is
    removed again. -> (the lock, held while the process lives; the old run's
    files that --overwrite is to replace)."""
    out = args.out
    if writable_folder(out):
        atexit.register(remove_if_empty, out)
    lock = take_lock(out)
    held = run_files(args, "holds a run, written while this train.py started")  # under the lock: as it stays
    if args.resume:
        step = None
        with contextlib.suppress(Exception):  # mmap: the step without reading the weights
            step = torch.load(os.path.join(out, CHECKPOINT), map_location="cpu", weights_only=True, mmap=True)["step"]
        if step != ckpt["step"]:
            fail(f"--resume: {os.path.join(out, CHECKPOINT)} changed while this run started (step "
                 f"{ckpt['step']}, now {step}): another train.py went on with it; --resume again")
    for name in os.listdir(out):  # after the lock: no other run's save is in flight
        path = os.path.join(out, name)
        if TEMPORARY.fullmatch(name) and name.rpartition(".tmp")[0] in RUN_FILES and not (  # ours, exactly:
                os.path.isdir(path) and not os.path.islink(path)):                          # a file or a link
            os.remove(path)
    return lock, [] if args.resume else held


LOCK = ".lock"


def take_lock(out):
    """An exclusive lock on --out/.lock for as long as this process lives. The
    kernel drops it when the process ends, however it ends (kill -9 too), so a
    crashed run never leaves it stuck. (No fcntl on Windows: no lock there.)
    Opened without following a link, and refused when it is not a regular
    file or holds something other than a process id: a .lock that is not
    train.py's is the user's, and is left as it is."""
    path = os.path.join(out, LOCK)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0), 0o666)
    except OSError as e:  # ELOOP: a link
        fail(f"--out {out}: {LOCK} is " + ("a link" if os.path.islink(path) else f"not usable ({e.strerror})")
             + ", not train.py's lock; move it away or give another --out")
    lock = os.fdopen(fd, "r+")
    pid = lock.read(32) if stat.S_ISREG(os.fstat(fd).st_mode) else "not a file"
    if not re.fullmatch(r"\d*\n?", pid):
        fail(f"--out {out}: {LOCK} is not train.py's lock (it is not a file holding a process id); move it "
             f"away or give another --out")
    if fcntl:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fail(f"--out {out}: another train.py (pid {pid.strip() or '?'}) is writing there; "
                 f"wait for it, stop it, or give another --out")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return lock


def remove_if_empty(out):
    """At exit: a run folder made by this process that holds nothing but the lock goes again."""
    with contextlib.suppress(OSError):
        if set(os.listdir(out)) <= {LOCK}:
            os.remove(os.path.join(out, LOCK))  # take_lock made it, just after the folder
            os.rmdir(out)


class Run:
    """The files of one training run in its --out folder: ckpt.pt (all that
    --resume needs), best.pt (the best validation so far, what colorize.py
    uses), log.csv, loss.png and samples.png, and what goes into them: the
    history of losses and validations. Rank 0 alone writes them. A stop
    signal (StopRequest) saves the step in hand and stops."""

    def __init__(self, args, start, inception_record, validation, optimizer, world):
        self.args, self.config, self.inception_record = args, start.config, inception_record
        self.start, self.optimizer, self.log = start, optimizer, start.log
        self.replaces = list(start.replaces)  # --overwrite: the old run's files, removed once the first save is whole
        self.written = set()  # the files this run has written
        self.path = {name: os.path.join(args.out, name) for name in RUN_FILES}
        self.history, self.best_mse = [], math.inf  # history: one dict per logged step and per evaluation
        # finished: the last save is done, the process on its way out; last_step: from the last step's evaluation on
        self.finished = self.last_step = False
        self.per_step = args.batch_size * world  # photos drawn per step, all ranks: how far the stream is at a step
        # What validation judges and what the stream of photos draws from: digests of the photos'
        # names and sizes, kept in checkpoints, so that a --resume can tell when they changed.
        digest = lambda files: hashlib.sha1(repr([(os.path.relpath(f, args.data), os.path.getsize(f))  # noqa: E731
                                                  for f in files]).encode()).hexdigest()
        self.validated_on, self.trained_on = digest(validation), digest(start.train_files)
        # The loss since the last log line, summed on the device: the GPU never waits for a per-step .item()
        self.loss_sum, self.loss_count, self.images, self.clock = 0, 0, 0, time.monotonic()
        self.eta = Eta(args.max_steps, done=start.step)  # from the recent rate: it follows a machine that gets busy
        self.validating_since = None
        self.stop_request = StopRequest(self, self.log)
        if args.resume:
            self.restore(start.ckpt)
            self.log(f"resumed from {printable(self.path[CHECKPOINT])} at step {start.step}")
        start.ckpt = None  # its tensors: the optimizer's are copied, the weights are the network's own

    def restore(self, ckpt):
        """--resume: the optimizer, history, best so far and random state of the
        run. Validation on other photos than the checkpoint's (photos added or
        removed) gives numbers that do not compare: the best starts over, said."""
        try:  # a hand-edited or damaged state fails here, in one line, not at the first step
            self.optimizer.load_state_dict(ckpt["optimizer"])
            for group in self.optimizer.param_groups:  # Adam's numbers, and a step count and two moments per weight
                numbers = [group.get(k) for k in ("lr", "eps", "weight_decay")] + list(group.get("betas") or [None])
                if len(numbers) != 5 or not all(type(v) in (int, float) and math.isfinite(v) for v in numbers):
                    raise ValueError("its learning rate, betas, eps or weight decay are not numbers")
                for p in group["params"]:
                    state = self.optimizer.state[p]
                    if state and not (set(state) == {"step", "exp_avg", "exp_avg_sq"} and all(
                            torch.is_tensor(v) and v.is_floating_point() and v.shape == (() if k == "step" else p.shape)
                            for k, v in state.items())):
                        raise ValueError(f"its state for a parameter of shape {tuple(p.shape)} is not Adam's")
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            fail(f"--resume {self.path[CHECKPOINT]}: its optimizer state does not fit the model "
                 f"({inception.short_reason(e)})")
        self.history, self.best_mse = ckpt["history"], ckpt.get("best_mse", math.inf)
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        if ckpt.get("validated_on") != self.validated_on:
            self.best_mse = math.inf
            self.log("resume: the validation photos are not the ones the run was judged on (" + (
                "photos added, removed or changed" if ckpt.get("validated_on") else "the checkpoint does not say which")
                + "): the best so far starts over")
        if ckpt.get("trained_on", self.trained_on) != self.trained_on:
            self.log("resume: the training photos are not the ones the run drew from (photos added, removed or "
                     "changed): from here on it draws other photos than an uninterrupted run would")

    def add_loss(self, step, loss, images, lr):
        """A training step's loss (a tensor on the device) and images; every
        --log-every steps their mean is read, checked for NaN/inf, logged with
        the throughput and time left, and kept in the history."""
        self.loss_sum, self.loss_count, self.images = self.loss_sum + loss.detach(), self.loss_count + 1, \
            self.images + images
        if step % self.args.log_every and step != self.args.max_steps:
            return
        loss_sum, now = float(self.loss_sum), time.monotonic()  # read from the device once
        self.stop_if_diverged(step, "loss", loss_sum)
        row = {"step": step, "loss": loss_sum / self.loss_count, "lr": lr,
               "img_per_s": self.images / (now - self.clock)}
        self.history.append(row)
        self.log(f"step {step}/{self.args.max_steps} | loss {row['loss']:.5f} | {row['img_per_s']:.1f} img/s | "
                 f"{self.eta.update(step)}")
        self.loss_sum, self.loss_count, self.images, self.clock = 0, 0, 0, now

    def begin_validation(self, step):
        """Before a validation: no diverged state is validated or saved; its time is no throughput."""
        self.stop_if_diverged(step, "loss", float(self.loss_sum))
        self.validating_since = time.monotonic()

    def add_validation(self, row):
        """A validation's numbers into the history, checked. -> True when they are the best so far."""
        self.stop_if_diverged(row["step"], "validation MSE", row["val_mse"])
        is_best, self.best_mse = row["val_mse"] < self.best_mse, min(self.best_mse, row["val_mse"])
        self.history.append(row)
        return is_best

    def stop_if_asked(self, step, net, ema_net):
        """After a stop signal (StopRequest): save the step in hand, say where,
        exit 130; on the last step, its own save goes on."""
        if not self.stop_request.requested or self.last_step:
            return
        self.stop_if_diverged(step, "loss", float(self.loss_sum))
        if step > self.start.step:
            self.save_checkpoint(step, net, ema_net)
        self.log(f"stopped at step {step}/{self.args.max_steps}: " + (
            f"{printable(self.path[CHECKPOINT])} holds it (--resume continues the run)" if step > self.start.step
            else "nothing to save") + (f"; {printable(self.path[BEST])} is the best validation so far"
                                       if os.path.exists(self.path[BEST]) else ""))
        self.finished = True
        sys.exit(130)

    def finish(self):
        """The last line of a run that went to its end (its last evaluation saved
        everything); under torchrun the ranks wait for rank 0's last save."""
        self.finished = True  # a stop signal from here on has nothing to save
        gray = sum("grayscale" in s for s in self.start.skipped)
        self.log(f"done: {self.args.max_steps} steps, checkpoint {printable(self.path[CHECKPOINT])}, best "
                 f"{printable(self.path[BEST])} (validation MSE {self.best_mse:.5f}). Skipped "
                 f"{len(self.start.skipped) - gray} unreadable files and left out {gray} grayscale photos.")
        if "RANK" in os.environ:
            torch.distributed.barrier()  # else rank 0 finds its peers gone
            torch.distributed.destroy_process_group()

    def last_good(self):
        """Where a run that stops now can go on from, for the line it stops with."""
        return f"{printable(self.path[CHECKPOINT])} is the last good checkpoint, --resume continues from it" \
            if os.path.exists(self.path[CHECKPOINT]) else "no checkpoint was written yet"

    def save(self, write, name):
        """save_atomic, or stop with one line saying why the file could not be
        written (a full disk, a lost mount); the file it replaces stays whole."""
        try:
            save_atomic(write, self.path[name])
            self.written.add(name)
        except OSError as e:
            fail(f"cannot write {self.path[name]}: {e.strerror or e}; {self.last_good()}")

    def save_checkpoint(self, step, net, ema_net, best_weights=None):
        """ckpt.pt: everything --resume needs; step is the number of optimizer
        steps done. best.pt too, holding best_weights, when train.py gives them
        (its best validation so far), with what colorize.py needs. Then log.csv
        and loss.png."""
        common = {"config": dataclasses.asdict(self.config), "step": step, "history": self.history,
                  "inception": self.inception_record, "args": vars(self.args),
                  "draws": self.start.draws + (step - self.start.step) * self.per_step,
                  "validated_on": self.validated_on, "trained_on": self.trained_on}
        if best_weights is not None:
            self.save(torch_writer({**common, "model": best_weights}), BEST)
        self.save(torch_writer({**common, "model": net.state_dict(), "optimizer": self.optimizer.state_dict(),
                                "best_mse": self.best_mse, "ema": ema_net.state_dict() if ema_net else None,
                                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}), CHECKPOINT)
        if self.replaces:  # --overwrite: the new run's first save is whole; what is left of the old run goes
            for name in set(self.replaces) - self.written - {LOG}:  # log.csv: rewritten next (write_log)
                if os.path.lexists(self.path[name]):
                    os.remove(self.path[name])
            print(f"--overwrite: replaced the old run's {', '.join(self.replaces)}", flush=True)
            self.replaces = []
        self.write_log()
        if self.validating_since is not None:  # the time it took is no training throughput
            self.clock += time.monotonic() - self.validating_since
            self.validating_since = None
            self.eta.pause()

    def write_log(self):
        """log.csv (one row per logged step and per evaluation) and loss.png."""
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, ["step", "loss", "lr", "img_per_s", "val_mse", "val_psnr", "val_mse_raw",
                                       "val_mse_gray"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.history)
        self.save(lambda f: f.write(text.getvalue().encode("utf-8")), LOG)
        curves = plot_curves(self.history)
        if curves:
            self.save(lambda f: curves.save(f, format="PNG"), CURVES)

    def write_samples(self, samples):
        """samples.png: uint8 (3, S, 3S) rows of gray | prediction | truth, stacked."""
        grid = torch.cat(samples, dim=1).permute(1, 2, 0).cpu().numpy()   # (rows*S, 3*S, 3)
        self.save(lambda f: Image.fromarray(grid).save(f, format="PNG"), SAMPLES)

    def stop_if_diverged(self, step, what, value):
        """A diverged state is never saved: say so, and whether a good checkpoint exists."""
        if not math.isfinite(value):
            good = f"the last good checkpoint is {printable(self.path[CHECKPOINT])}" \
                if os.path.exists(self.path[CHECKPOINT]) else "no checkpoint was written"
            self.log(f"error: {what} is {value} by step {step}; stopping without saving ({good}); "
                     f"try a lower --lr or --dtype float32.")
            sys.exit(1)


def plot_curves(history, width=640, height=400, pad=56):
    """loss.png: training loss (blue), validation MSE (orange) and the all-gray
    prediction's validation MSE (gray, the bar to clear) against step, log
    scale. -> PIL image, or None before there are two points."""
    series = [([(r["step"], r[key]) for r in history if key in r and r[key] > 0], color, label)
              for key, color, label in (("loss", (31, 119, 180), "train"), ("val_mse", (255, 127, 14), "validation"),
                                        ("val_mse_gray", (150, 150, 150), "all-gray"))]
    points = [p for s, _, _ in series for p in s]
    if len(points) < 2:
        return None
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points) or 1
    y0, y1 = math.log10(min(p[1] for p in points)), math.log10(max(p[1] for p in points))
    y1 = y1 if y1 > y0 else y0 + 1

    def xy(step, value):
        return (pad + (step - x0) / max(x1 - x0, 1) * (width - 2 * pad),
                height - pad - (math.log10(value) - y0) / (y1 - y0) * (height - 2 * pad))
    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    for frac in (0, 0.5, 1):  # axis labels
        value = 10 ** (y0 + frac * (y1 - y0))
        draw.text((4, xy(x0, value)[1] - 6), f"{value:.4f}", fill="black")
        step = round(x0 + frac * (x1 - x0))
        draw.text((xy(step, 10 ** y0)[0] - 12, height - pad + 6), str(step), fill="black")
    draw.text((pad, 16), "MSE (ab/128) against step, log scale", fill="black")
    for k, (s, color, label) in enumerate(series):
        if len(s) > 1:
            draw.line([xy(*p) for p in s], fill=color, width=2)
        for x, y in [xy(*p) for p in s[-1:]]:  # the last point, marked
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        draw.text((width - pad - 170 + 60 * k, 16), label, fill=color)  # the legend
    return img


# -----------------------------------------------------------------------------
# 4. Stopping

# The signals that ask a process to stop: Ctrl-C, and SIGTERM and SIGHUP from
# `timeout`, Slurm or Kubernetes pre-emption, or a closed ssh session.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def on_stop_signals(handler):
    """Call handler(signum, frame) on each of STOP_SIGNALS."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def exit_on_stop(message):
    """For a script with nothing to save: on each of STOP_SIGNALS, message on
    one line and exit 130 (SystemExit, so a save in flight removes its
    temporary file and every output is whole or not there)."""
    def stop(signum, frame):
        print(message, file=sys.stderr)
        sys.exit(130)
    on_stop_signals(stop)


def quiet_when_piped():
    """`script | head`: the script ends quietly when its reader leaves (what it
    writes is whole or not there), as command-line tools do."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


class StopRequest:
    """A stop signal during training: finish the step in hand, save ckpt.pt at
    that step and stop, so --resume continues from there; a second one stops
    at once (ckpt.pt is written atomically, so the last one saved stays whole).
    Under torchrun (which passes Ctrl-C on as SIGTERM) every rank would save a
    different step: each stops at once, none saves, and the last checkpoint
    stays whole for --resume."""

    def __init__(self, run, log):
        self.requested, self.run, self.log = False, run, log
        on_stop_signals(self.on_signal)

    def on_signal(self, signum, frame):
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        # os._exit, not sys.exit, where an exit handler half-run by the signal would print a traceback
        if "RANK" in os.environ:
            self.log(f"{name}: stopped; {self.run.last_good()}")
            os._exit(130)
        if self.run.finished:  # saved, and exiting (loader workers shutting down): nothing left to lose
            self.log("stopped while exiting: every file was already written")
            os._exit(130)
        if self.requested:
            self.log(f"error: interrupted again: stopped without saving; {self.run.last_good()}")
            sys.exit(130)
        self.requested = True
        self.log(f"{name}: " + ("the last step is being saved; stopping once it is" if self.run.last_step else
                                "saving a checkpoint after this step, then stopping")
                 + " (Ctrl-C again to stop at once)")
