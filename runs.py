"""The run folder: checkpoints, logs and the rules that keep a user's files safe.

train.py and colorize.py tell the paper's story; this file holds the
bookkeeping around it, so that neither has to stop mid-story to do it:

  1. Checkpoints: read with a one-line reason when they cannot be (never
     torch's advice to unpickle an untrusted file), written atomically (a crash
     at any moment leaves the last good file whole), exported small, found.
  2. A training run's folder (train.py --out): what counts as a run, the
     --resume / --init / --overwrite rules in one place, its log.csv, loss.png
     and samples.png, and how it stops on Ctrl-C.
  3. colorize.py's outputs: every input gets its own, none replaces an input.

Nothing here changes what the model learns or predicts.
"""
import atexit
import copy
import csv
import dataclasses
import functools
import io
import math
import os
import random
import signal
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import data
import model
from data import printable

# What train.py writes into --out. A folder holding any of them holds a run.
CHECKPOINT, BEST, LOG, CURVES, SAMPLES = "ckpt.pt", "best.pt", "log.csv", "loss.png", "samples.png"
RUN_FILES = (CHECKPOINT, BEST, LOG, CURVES, SAMPLES)
OUTPUT_SUFFIXES = data.OUTPUT_SUFFIXES  # what colorize.py writes beside (or for) each input


class RunError(Exception):
    """A bad flag, file or checkpoint: the message is the one line the command
    prints after "error: "."""


class CheckpointError(RunError):
    pass


def fail(message, status=2):
    """Stop a script with one line on stderr (exit 2: the user's input; 1: the run)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def save_atomic(write, path):
    """write(tmp) then rename tmp over path, so a crash at any moment leaves
    either the old file or the new one whole, never half of one."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk, Ctrl-C: no half-written temporary file stays behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# -----------------------------------------------------------------------------
# 1. Checkpoints

def short_reason(e):
    """An exception's class and first sentence, leaving out torch's advice to
    load with weights_only=False: unsafe for a file from anywhere."""
    text = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
    unsafe = "weights only" in text.lower().replace("_", " ")
    return e.__class__.__name__ + (f": {text[:150]}" if text and not unsafe else "")


def read_checkpoint(path, missing="no such file", unreadable="not a checkpoint file"):
    """A checkpoint's dict (plain types only: weights_only=True), or
    CheckpointError "PATH: why not", in the words of the command that asks."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{printable(path)}: " + ("a folder, not a checkpoint file" if os.path.isdir(path) else
                                                   "not a regular file" if os.path.exists(path) else missing))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling, truncated, random bytes: torch raises many kinds
        raise CheckpointError(f"{printable(path)}: {unreadable} ({short_reason(e)})") from None
    wrong = malformed(ckpt)
    if wrong:
        raise CheckpointError(f"{printable(path)}: not a compatible colorizer checkpoint ({wrong})")
    return ckpt


# What each entry of a checkpoint must be, where it is there at all.
CHECKPOINT_TYPES = {"config": dict, "model": dict, "ema": (dict, type(None)), "args": (dict, type(None)),
                    "history": (list, type(None)), "step": int, "inception": (dict, type(None)),
                    "validation": (dict, type(None))}


def malformed(ckpt):
    """What is wrong with a checkpoint's structure, in words, or None: a dict
    with a config and weights, each entry of the type train.py writes."""
    if not isinstance(ckpt, dict):
        return f"a {type(ckpt).__name__}, not a dict"
    for key in ("config", "model"):
        if key not in ckpt:
            return f"no {key!r}"
    for key, kind in CHECKPOINT_TYPES.items():
        if key in ckpt and not isinstance(ckpt[key], kind):
            return f"{key!r} is a {type(ckpt[key]).__name__}"
    for key in ("model", "ema"):
        if not all(isinstance(v, torch.Tensor) and v.layout == torch.strided and not v.is_complex()
                   for v in (ckpt.get(key) or {}).values()):
            return f"{key!r} holds something other than dense real tensors"
    number = (int, float)
    if not all(isinstance(row, dict) and isinstance(row.get("step"), int) and all(
            isinstance(v, number) for k, v in row.items() if k != "step") for row in ckpt.get("history") or []):
        return "'history' holds something other than rows of numbers"
    if not (ckpt.get("step", 0) if isinstance(ckpt.get("step", 0), int) else -1) >= 0:
        return f"'step' is {ckpt.get('step')!r}"
    size = (ckpt.get("args") or {}).get("size", 256)
    if not (isinstance(size, int) and 8 <= size <= 4096):
        return f"its training size is {size!r}"
    if not all(isinstance(v, number) for v in (ckpt.get("validation") or {}).values() if v is not None):
        return "'validation' holds something other than numbers"
    return None


def resumable(ckpt):
    """What keeps a checkpoint from being a run to continue, in words, or None."""
    if not (isinstance(ckpt.get("optimizer"), dict) and "param_groups" in ckpt["optimizer"]):
        return "no optimizer state"
    if not (isinstance(ckpt.get("rng"), dict) and {"torch", "python"} <= set(ckpt["rng"])):
        return "no random state"
    if not (isinstance(ckpt.get("args"), dict) and isinstance(ckpt.get("history"), list) and "step" in ckpt
            and isinstance(ckpt.get("best_mse", 0.0), float)):
        return "no flags, history, step or best validation"
    return None


def nonfinite(state):
    """"weights hold NaN or infinite values (...)" for a state dict with any, else None:
    a diverged run's weights colorize every photo black."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    return f"its weights hold NaN or infinite values ({bad[0]}{' and more' if len(bad) > 1 else ''}: a diverged run?)" \
        if bad else None


def colorizer_from(ckpt, path):
    """The Colorizer a checkpoint describes, with its averaged weights, or
    CheckpointError naming the first thing that does not fit."""
    try:
        net = model.Colorizer(model.ColorizerConfig.from_dict(ckpt["config"]))
        state = averaged_weights(ckpt)
        problem = weights_mismatch(net, state) or nonfinite(state)
        if problem is None:
            net.load_state_dict(state)
    except Exception as e:  # not a dict, no config, an unknown config key: all "not usable here"
        problem = short_reason(e)
    if problem:
        raise CheckpointError(f"{printable(path)}: not a compatible colorizer checkpoint ({problem})")
    return net


def inception_for(ckpt, path, inception, device):
    """The frozen Inception-ResNet-v2 that a global-branch checkpoint needs: the
    file `inception`, else the cached default. A different file than the one
    the model was trained with is a warning: colors may suffer."""
    record = ckpt.get("inception") or {}
    try:
        inception = inception or model.default_inception_path()
        if not os.path.exists(inception):
            raise ValueError(f"{inception}: no such file")
        if record.get("sha256") and model.sha256_of(inception) != record["sha256"]:
            print(f"warning: {inception} is not the Inception this model was trained with "
                  f"({record.get('file')}); colors may suffer", file=sys.stderr)
        return model.load_inception(inception).to(device)
    except (ValueError, RuntimeError) as e:  # model.py's download advice names train.py's flags: cut it
        reason = str(e).splitlines()[0].removesuffix(" Download").rstrip(".")
        raise CheckpointError(f"{printable(path)} needs the Inception-ResNet-v2 weights it was trained with "
                              f"({reason}); give them with --inception PATH") from None


def choose_checkpoint(checkpoint, demo):
    """(path, checkpoint dict, Colorizer) for colorize.py: a file, a run folder (its best.pt,
    else ckpt.pt), or None: the newest run under runs/ or out/, else the bundled demo.
    CheckpointError with one line; for a checkpoint found by the search, it
    says so and how to choose another."""
    found = None if checkpoint else find_checkpoint()
    path = checkpoint or found or demo
    if os.path.isdir(path):
        path = run_checkpoint(path) or path
        if os.path.isdir(path):
            raise CheckpointError(f"{printable(path)}: a folder without best.pt or ckpt.pt")
    try:
        ckpt = read_checkpoint(path, missing="no such checkpoint")
        net = colorizer_from(ckpt, path)
    except CheckpointError as e:
        raise CheckpointError(f"{e} (the newest run under {SEARCHED}; choose another with --checkpoint PATH)"
                              if found else str(e)) from None
    return path, ckpt, net


def describe(ckpt):
    """"step N, validation MSE X": what a checkpoint is, for the log."""
    val = ckpt.get("validation") or next((r for r in reversed(ckpt.get("history") or []) if "val_mse" in r), None)
    return f"step {ckpt.get('step', '?')}" + (f", validation MSE {val['val_mse']:.5f}" if val else "")


def averaged_weights(ckpt):
    """The weights a checkpoint's validation judged, the ones to colorize with:
    the moving average of a train.py ckpt.pt where it has one, else its "model"
    (best.pt and exported copies hold the averaged weights there). Floats as
    float32, whatever they were stored in (the demo is float16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in (ckpt.get("ema") or ckpt["model"]).items()}


def torch_writer(obj):
    """A write(path) for save_atomic. Serialized in memory first, so a failed
    write surfaces as the OSError it is (torch.save to a path reports it as an
    internal RuntimeError)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)

    def write(path):
        with open(path, "wb") as f:
            f.write(buffer.getbuffer())
    return write


def export_checkpoint(src, dst, start=None, share=1.0, size=None):
    """A train.py checkpoint -> a small inference copy: config, float16 weights,
    training size (or `size`, the short side colorize.py is to use), Inception
    record and the last validation numbers (no optimizer state), written
    atomically. With `start`, the checkpoint a fine-tune began from, the weights
    are share * src's + (1 - share) * start's: a point on the line between the
    model before and after fine-tuning, which can keep much of what each knew
    (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"). This is
    how demo/colorizer.pt was made (docs/demo.md)."""
    size_ok = size is None or (isinstance(size, int) and 8 <= size <= 4096 and size % 8 == 0)
    if not (0 <= share <= 1 and size_ok):
        raise ValueError(f"share {share!r} must be from 0 to 1 and size {size!r} a multiple of 8 from 8 to 4096")
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    weights = averaged_weights(ckpt)
    if start is not None:
        first = torch.load(start, map_location="cpu", weights_only=True)
        before = averaged_weights(first)
        if {k: v.shape for k, v in before.items()} != {k: v.shape for k, v in weights.items()} or \
                model.ColorizerConfig.from_dict(first["config"]) != model.ColorizerConfig.from_dict(ckpt["config"]):
            raise ValueError(f"{start}: not the architecture of {src}")
        weights = {k: share * v + (1 - share) * before[k] if v.is_floating_point() else v for k, v in weights.items()}
    evals = [row for row in ckpt["history"] if "val_mse" in row]
    small = {"config": ckpt["config"], "step": ckpt["step"], "inception": ckpt["inception"],
             "args": {"size": size or ckpt["args"]["size"]},
             "validation": evals[-1] if evals and start is None else None,  # a blend was not validated
             "model": {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}}
    save_atomic(torch_writer(small), dst)


def run_checkpoint(folder):
    """A train.py run folder's best.pt (lowest validation MSE), else its ckpt.pt
    (runs from before best.pt), else None."""
    return next((p for p in (os.path.join(folder, n) for n in (BEST, CHECKPOINT)) if os.path.isfile(p)), None)


# Where colorize.py looks for runs when no --checkpoint is given: runs/, where the
# README and the course train (--out runs/NAME), and out/, train.py's default --out.
RUN_ROOTS = ("runs", "out")
SEARCHED = " or ".join(f"{root}/" for root in RUN_ROOTS)


def find_checkpoint(roots=RUN_ROOTS):
    """The checkpoint of the newest train.py run under any of the folders roots, or None."""
    found = [os.path.join(folder, n) for root in roots for folder, _, names in os.walk(root)  # links not followed
             for n in (BEST, CHECKPOINT) if n in names]
    return run_checkpoint(os.path.dirname(max(found, key=os.path.getmtime))) if found else None


def weights_mismatch(net, state):
    """The first weight in state that does not fit net, in words, or None."""
    own = net.state_dict()
    for k in [*own, *state]:
        if k not in state or k not in own:
            return f"{k} is {'missing' if k not in state else 'not in this model'}"
        if state[k].shape != own[k].shape:
            return f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}"
    return None


# -----------------------------------------------------------------------------
# 2. A training run's folder

def flags_typed(parser, args):
    """The names of the flags typed on the command line (a second parse with
    every default None): --resume keeps the run's own value of the others."""
    defaults = {k: parser.get_default(k) for k in vars(args)}
    parser.set_defaults(**{k: None for k in vars(args)})
    given = {k for k, v in vars(parser.parse_args()).items() if v is not None}
    parser.set_defaults(**defaults)
    return given


# Flags that belong to this process, not to the run: --resume never takes them from the checkpoint.
OWN_FLAGS = ("out", "resume", "overwrite", "init", "device", "workers", "cache", "compile")


def start(args, flags_given, log):
    """The --resume / --init / --overwrite rules, in one place. -> (checkpoint
    or None, step to start at). --resume takes the run's own recipe from its
    ckpt.pt, except flags typed now (said in the log)."""
    ckpt_path = os.path.join(args.out, CHECKPOINT)
    if args.resume and args.init:
        fail("--resume continues a run, --init starts a new one from a checkpoint: give one of them")
    try:
        ckpt = read_checkpoint(ckpt_path if args.resume else args.init, unreadable="not a train.py checkpoint") \
            if args.resume or args.init else None
        if ckpt is not None:
            model.ColorizerConfig.from_dict(ckpt["config"])
    except CheckpointError as e:
        fail(f"{'--resume' if args.resume else '--init'} {e}")
    except Exception as e:  # a dict without a usable config: not one of ours
        fail(f"{'--resume' if args.resume else '--init'} {printable(ckpt_path if args.resume else args.init)}: "
             f"not a train.py checkpoint ({short_reason(e)})")
    if args.resume:
        if "optimizer" not in ckpt:
            fail(f"--resume: {ckpt_path} holds only a model, not a run to continue; fine-tune from it "
                 f"with --init {ckpt_path} and another --out")
        why_not = resumable(ckpt)
        if why_not:
            fail(f"--resume: {ckpt_path} is not a run to continue ({why_not})")
        for k, v in ckpt["args"].items():
            if k not in flags_given and k not in OWN_FLAGS:
                setattr(args, k, v)
        changed = [f"--{k.replace('_', '-')} {getattr(args, k)} (was {ckpt['args'].get(k)})" for k in sorted(flags_given)
                   if k not in ("resume", "out") and ckpt["args"].get(k, getattr(args, k)) != getattr(args, k)]
        log("resume: " + (", ".join(changed) or "with the run's own settings"))
        return ckpt, ckpt["step"]
    held = [name for name in RUN_FILES if os.path.lexists(os.path.join(args.out, name))]
    if held and not args.overwrite:  # whoever wrote them, train.py would replace them
        fail(f"--out {args.out} holds a run already ({', '.join(held)}): --resume to continue it, "
             f"--overwrite to start over, or another --out")
    diverged = nonfinite(averaged_weights(ckpt)) if args.init else None
    if diverged:
        fail(f"--init {args.init}: {diverged}")
    return ckpt, 0


def model_config(args, ckpt):
    """The colorizer's architecture: the checkpoint's (--resume, --init), which
    flags may restate but not change, or the flags' for a new model."""
    if ckpt is None:
        attention = (args.model or "attention") == "attention"
        coords = args.coords == "on" if args.coords else attention  # the paper: both; Deep Koalarization: neither
        return model.ColorizerConfig(variant="attention" if attention else "baseline", coords=coords,
                                     global_branch=args.inception != "none", width=args.width or 64,
                                     padding=args.padding or model.ColorizerConfig.padding)
    config = model.ColorizerConfig.from_dict(ckpt["config"])
    source = f"{'--resume' if args.resume else '--init'} {os.path.join(args.out, CHECKPOINT) if args.resume else args.init}"
    has = f"--model {config.variant} --coords {'on' if config.coords else 'off'} --width {config.width} " \
          f"--padding {config.padding}"
    for flag, asked, value in [("--model", args.model, config.variant), ("--width", args.width, config.width),
                               ("--padding", args.padding, config.padding),
                               ("--coords", args.coords and args.coords == "on", config.coords)]:
        if asked is not None and asked != value:
            fail(f"{flag} {getattr(args, flag[2:])}, but {source} is {has}")
    if args.inception == "none" and config.global_branch:
        fail(f"--inception none, but {source} has a global branch: it needs the Inception weights "
             f"(--inception auto or PATH)")
    if args.inception not in (None, "none") and not config.global_branch:
        fail(f"--inception {args.inception}, but {source} has no global branch (trained with --inception none)")
    return config


def prepare_folder(args, log):
    """Make --out and write to it now, not after the first 500 steps; lock it
    against a second train.py; with --overwrite, remove the old run's files
    (so an early stop cannot leave its best.pt behind); remove what an
    interrupted save left behind. A folder made here and left empty by a
    failed start is removed again. -> the lock, held while the process lives."""
    out = args.out
    made = not os.path.isdir(out)
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        fail(f"--out {out}: " + ("a file, not a folder" if os.path.isfile(out) else
                                f"cannot write there ({e.strerror})"))
    if made:
        atexit.register(remove_if_empty, out)
    lock = take_lock(out)
    if args.overwrite and not args.resume:
        old = [name for name in RUN_FILES if os.path.lexists(os.path.join(out, name))]
        for name in old:
            os.remove(os.path.join(out, name))
        if old:
            log(f"--overwrite: removed the old run's {', '.join(old)}")
    for name in os.listdir(out):  # after the lock: no other run's save is in flight
        if ".tmp" in name and name.split(".tmp")[0] in RUN_FILES:
            os.remove(os.path.join(out, name))
    return lock


LOCK = ".lock"


def take_lock(out):
    """An exclusive lock on --out/.lock for as long as this process lives. The
    kernel drops it when the process ends, however it ends (kill -9 too), so a
    crashed run never leaves it stuck. (No fcntl on Windows: no lock there.)"""
    lock = open(os.path.join(out, LOCK), "a+")
    if fcntl is None:
        return lock
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        fail(f"--out {out}: another train.py (pid {lock.read().strip() or '?'}) is writing there; "
             f"wait for it, stop it, or give another --out")
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def remove_if_empty(out):
    """At exit: a run folder made by this process that holds nothing but the lock goes again."""
    try:
        if set(os.listdir(out)) <= {LOCK}:
            if os.path.exists(os.path.join(out, LOCK)):
                os.remove(os.path.join(out, LOCK))
            os.rmdir(out)
    except OSError:
        pass


def open_inception(args, ckpt, device, memory_format, is_main, distributed, log):
    """The frozen Inception-ResNet-v2 of the global branch and its record
    (file name and sha256, kept in checkpoints), for --inception auto or PATH.
    A resumed or fine-tuned model must see the Inception it was trained with."""
    try:
        if args.inception == "auto":
            if is_main:  # one download, then the other ranks find it in the cache
                model.default_inception_path()
            if distributed:
                torch.distributed.barrier()
            path = model.default_inception_path(download=False)
        else:
            path = args.inception
        if not os.path.exists(path):
            raise ValueError(f"{path}: no such file")
        inception = model.load_inception(path).to(device, memory_format=memory_format)
    except (ValueError, RuntimeError) as e:
        fail(e)
    record, trained_with = {"file": os.path.basename(path), "sha256": model.sha256_of(path)}, (ckpt or {}).get("inception")
    if trained_with and trained_with["sha256"] != record["sha256"]:
        fail(f"{path} is not the Inception the checkpoint was trained with "
             f"({trained_with['file']}, sha256 {trained_with['sha256'][:12]}...)")
    log(f"inception: {path} (sha256 {record['sha256'][:12]}...)")
    return inception, record


def load_weights(net, args, ckpt, log):
    """The colorizer's weights from --init or --resume, and the moving average
    of the weights (a copy of the network, with --ema) that validation judges."""
    try:
        if args.init:
            model.load_strict(net, averaged_weights(ckpt), args.init)
            log(f"initialized from {args.init} (step {ckpt.get('step', '?')} of its run)")
        elif ckpt:
            model.load_strict(net, ckpt["model"], os.path.join(args.out, CHECKPOINT))
        ema_net = copy.deepcopy(net).requires_grad_(False) if args.ema > 0 else None
        if ema_net is not None and args.resume and ckpt.get("ema"):
            model.load_strict(ema_net, ckpt["ema"], os.path.join(args.out, CHECKPOINT))
    except ValueError as e:
        fail(e)
    return ema_net


class Run:
    """The files of one training run in its --out folder: ckpt.pt (all that
    --resume needs), best.pt (the best validation so far, what colorize.py
    uses), log.csv, loss.png and samples.png. Rank 0 alone writes them."""

    def __init__(self, args, config, inception_record):
        self.args, self.config, self.inception_record = args, config, inception_record
        self.path = {name: os.path.join(args.out, name) for name in RUN_FILES}
        self.history, self.best_mse = [], math.inf  # history: one dict per logged step and per evaluation

    def restore(self, ckpt, optimizer):
        """--resume: the optimizer, history, best so far and random state of the run."""
        optimizer.load_state_dict(ckpt["optimizer"])
        self.history, self.best_mse = ckpt["history"], ckpt.get("best_mse", math.inf)
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])

    def last_good(self):
        return f"{self.path[CHECKPOINT]} is the last good checkpoint" if os.path.exists(self.path[CHECKPOINT]) else ""

    def save(self, write, name):
        """save_atomic, or stop with one line saying why the file could not be
        written (a full disk, a lost mount); the file it replaces stays whole."""
        try:
            save_atomic(write, self.path[name])
        except OSError as e:
            fail(f"cannot write {self.path[name]}: {e.strerror or e}" + (f"; {self.last_good()}" if self.last_good()
                                                                        else ""))

    def save_checkpoint(self, step, net, ema_net, optimizer, is_best):
        """ckpt.pt: everything --resume needs; step is the number of optimizer
        steps done. best.pt, when this evaluation is the best so far: the
        averaged weights (with --ema) and what colorize.py needs."""
        common = {"config": dataclasses.asdict(self.config), "step": step, "history": self.history,
                  "inception": self.inception_record, "args": vars(self.args)}
        if is_best:
            self.save(torch_writer({**common, "model": (ema_net or net).state_dict()}), BEST)
        self.save(torch_writer({**common, "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                                "best_mse": self.best_mse, "ema": ema_net.state_dict() if ema_net else None,
                                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()}}), CHECKPOINT)

    def write_log(self):
        """log.csv (one row per logged step and per evaluation) and loss.png."""
        columns = ["step", "loss", "lr", "img_per_s", "val_mse", "val_psnr", "val_mse_raw", "val_mse_gray"]

        def write(path):
            with open(path, "w", newline="") as f:
                writer = csv.DictWriter(f, columns)
                writer.writeheader()
                writer.writerows({k: row.get(k, "") for k in columns} for row in self.history)
        self.save(write, LOG)
        curves = plot_curves(self.history)
        if curves:
            self.save(lambda p: curves.save(p, format="PNG"), CURVES)

    def write_samples(self, samples):
        """samples.png: uint8 (3, S, 3S) rows of gray | prediction | truth, stacked."""
        grid = torch.cat(samples, dim=1).permute(1, 2, 0).cpu().numpy()   # (rows*S, 3*S, 3)
        self.save(lambda p: Image.fromarray(grid).save(p, format="PNG"), SAMPLES)

    def add_evaluation(self, row, log):
        """An evaluation into the history, and its log line: the validation MSE
        beside the all-gray prediction's. -> whether it is the best so far."""
        is_best, self.best_mse = row["val_mse"] < self.best_mse, min(self.best_mse, row["val_mse"])
        self.history.append(row)
        log(f"step {row['step']}/{self.args.max_steps} | val mse {row['val_mse']:.5f} "
            f"({row['val_mse'] / row['val_mse_gray']:.2f}x all-gray"
            + (f"; last weights {row['val_mse_raw']:.5f})" if "val_mse_raw" in row else ")")
            + f" | val psnr {row['val_psnr']:.2f} dB" + (" | best so far" if is_best else ""))
        return is_best

    def add_loss(self, row, eta, log):
        """A logged step (its mean loss since the last) into the history, and its log line."""
        self.history.append(row)
        log(f"step {row['step']}/{self.args.max_steps} | loss {row['loss']:.5f} | {row['img_per_s']:.1f} img/s | "
            f"eta {int(eta // 60)}m{int(eta % 60):02d}s")

    def stop(self, step, start_step, net, ema_net, optimizer, loss, log):
        """After a Ctrl-C (StopRequest): save the step in hand, say where, exit 130."""
        self.stop_if_diverged(step, "loss", loss, log)
        if step > start_step:
            self.save_checkpoint(step, net, ema_net, optimizer, is_best=False)
            self.write_log()
        log(f"stopped at step {step}/{self.args.max_steps}: " + (
            f"{self.path[CHECKPOINT]} holds it (--resume continues the run)" if step > start_step else
            "nothing to save") + (f"; {self.path[BEST]} is the best validation so far"
                                  if os.path.exists(self.path[BEST]) else ""))
        sys.exit(130)

    def stop_if_diverged(self, step, what, value, log):
        """A diverged state is never saved: say so, and whether a good checkpoint exists."""
        if not math.isfinite(value):
            good = (f"the last good checkpoint is {self.path[CHECKPOINT]}" if os.path.exists(self.path[CHECKPOINT])
                    else "no checkpoint was written")
            log(f"error: {what} is {value} by step {step}; stopping without saving ({good}); "
                f"try a lower --lr or --dtype float32.")
            sys.exit(1)


def plot_curves(history, width=640, height=400, pad=56):
    """loss.png: training loss (blue), validation MSE (orange) and the all-gray
    prediction's validation MSE (gray, the bar to clear) against step, log
    scale. -> PIL image, or None before there are two points."""
    series = [([(r["step"], r[key]) for r in history if key in r and r[key] > 0], color)
              for key, color in (("loss", (31, 119, 180)), ("val_mse", (255, 127, 14)), ("val_mse_gray", (150, 150, 150)))]
    points = [p for s, _ in series for p in s]
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
    for s, color in series:
        if len(s) > 1:
            draw.line([xy(*p) for p in s], fill=color, width=2)
        for p in s[-1:] if len(s) > 1 else s:
            x, y = xy(*p)
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
    draw.text((pad, 16), "MSE (ab/128) against step, log scale", fill="black")
    for k, label in enumerate(["train", "validation", "all-gray"]):
        draw.text((width - pad - 170 + 60 * k, 16), label, fill=series[k][1])
    return img


# The signals that ask a process to stop: Ctrl-C, and SIGTERM and SIGHUP from
# `timeout`, Slurm or Kubernetes pre-emption, or a closed ssh session.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def on_stop_signals(handler):
    """Call handler(signum, frame) on each of STOP_SIGNALS."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


class StopRequest:
    """A stop signal during training: finish the step in hand, save ckpt.pt at
    that step and stop, so --resume continues from there; a second one stops
    at once (ckpt.pt is written atomically, so the last one saved stays whole).
    Under torchrun every rank would stop at a different step: there
    torchrun's own handling applies."""

    def __init__(self, run, log):
        self.requested, self.run, self.log = False, run, log
        on_stop_signals(self.on_signal)

    def on_signal(self, signum, frame):
        if self.requested:
            self.log("error: interrupted again: stopped without saving" +
                     (f"; {self.run.last_good()}" if self.run.last_good() else ""))
            sys.exit(130)
        self.requested = True
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"{name}: saving a checkpoint after this step, then stopping (Ctrl-C again to stop at once)")


# -----------------------------------------------------------------------------
# 3. colorize.py's outputs

def collect_inputs(paths, out_dir):
    """[(input file, output stem)] for files and folders (recursive), one-line
    errors (a missing path, a folder without images) and warnings (what the
    folder walks passed over: unreadable folders, FIFOs)."""
    jobs, errors, passed_over = [], [], []
    for p in paths:
        if os.path.isdir(p):
            found = [f for f in data.find_images(p, passed_over)
                     if not f.endswith(OUTPUT_SUFFIXES)]  # our own outputs from an earlier run
            jobs += [(f, os.path.join(out_dir, os.path.relpath(f, p)) if out_dir else f) for f in found]
            if not found:
                errors.append(f"no images found in {printable(p)} ({', '.join(data.IMAGE_EXTENSIONS)})")
        elif os.path.exists(p):
            jobs.append((p, os.path.join(out_dir, os.path.basename(p)) if out_dir else p))
        else:
            errors.append(f"{printable(p)}: no such file or folder")
    return [(f, os.path.splitext(stem)[0]) for f, stem in jobs], errors, passed_over


def plan_outputs(jobs):
    """Give every input its own outputs, none of them an input: inputs that
    would share a name get their extension added (x_jpg, x_png) or, where that
    does not tell them apart, a number (x-2), in input order."""
    real_folder = functools.lru_cache(maxsize=None)(os.path.realpath)

    # A folder entry, however spelled: compare entries, as save_output replaces
    # entries by renaming and never writes through a link.
    def entry(path):
        return os.path.join(real_folder(os.path.dirname(path)), os.path.basename(path))
    extensions = {}
    for path, stem in jobs:
        extensions.setdefault(entry(stem), []).append(os.path.splitext(path)[1].lower())
    taken = {entry(path) for path, _ in jobs}  # no output may replace an input
    inputs, planned = set(), []
    for path, stem in jobs:
        if entry(path) in inputs:
            continue  # the same file named twice
        inputs.add(entry(path))
        shared = extensions[entry(stem)]
        if len(shared) > 1 and len(set(shared)) == len(shared) and os.path.splitext(path)[1]:
            stem += "_" + os.path.splitext(path)[1][1:].lower()
        candidate, n = stem, 1
        while any(entry(candidate + s) in taken for s in OUTPUT_SUFFIXES):
            n += 1
            candidate = f"{stem}-{n}"
        taken.update(entry(candidate + s) for s in OUTPUT_SUFFIXES)
        planned.append((path, candidate))
    return planned


def save_output(output, path):
    """A PIL image as PNG, or the text of a page, written to a temporary file
    and renamed: never a half-written output."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if isinstance(output, str):
        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(output)
        save_atomic(write, path)
    else:  # compress_level 1: 3-4x faster than the default, ~15% bigger
        save_atomic(lambda tmp: output.save(tmp, format="PNG", compress_level=1), path)


def side_by_side(images, labels=None, gap=4, header=18):
    """Images in a row on white; with labels, a caption strip above each."""
    top = header if labels else 0
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    sheet = Image.new("RGB", (width, top + max(im.height for im in images)), "white")
    draw, x = ImageDraw.Draw(sheet), 0
    for i, im in enumerate(images):
        sheet.paste(im.convert("RGB"), (x, top))
        if labels:
            draw.text((x + 4, 3), labels[i], fill="black")
        x += im.width + gap
    return sheet


def open_image(path):
    """(PIL RGB, alpha or None, [warnings]) for an image file, or RunError with
    a one-line reason. Warnings from Pillow, libtiff or numpy do not name the
    file they are about: caught here, they come back as "FILE: message"."""
    if not os.path.isfile(path):  # a FIFO would block forever
        raise RunError(f"{printable(path)}: " + ("no such file" if not os.path.exists(path) else "a folder"
                                            if os.path.isdir(path) else "not a regular file (a FIFO or a device)"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rgb, alpha = data.load_image(path)
        except data.IMAGE_ERRORS as e:
            reason = "image too large (decompression bomb limit)" if isinstance(
                e, Image.DecompressionBombError) else f"not a readable image ({e})"
            raise RunError(f"{printable(path)}: {reason}") from None
    return rgb, alpha, [f"{printable(path)}: {w.message}" for w in caught]


MAX_ATTENTION_SIZE = 512  # --attention: a 4:1 panorama at 512 px is 16384 positions, 1 GB of weights


def image_input(image):
    """(PIL RGB, alpha or None) for the notebook API: a path (as the command
    opens it; warnings come back as Python warnings), a PIL image of any mode,
    turned upright by its EXIF orientation as a path is, or a numpy array
    (H, W), (H, W, 3) or (H, W, 4) of uint8, or floats in [0, 1]."""
    if isinstance(image, np.ndarray):
        try:
            image = Image.fromarray(image if image.dtype == np.uint8 else
                                    (np.clip(image, 0, 1) * 255).round().astype(np.uint8))
        except (TypeError, ValueError):
            raise RunError(f"an array of shape {image.shape} and dtype {image.dtype} is not an image "
                           f"((H, W), (H, W, 3) or (H, W, 4))") from None
    if not isinstance(image, (str, os.PathLike, Image.Image)):
        raise RunError(f"a {type(image).__name__} is not an image: give a path, a PIL image or a numpy array")
    if isinstance(image, Image.Image):
        rgb, alpha = data.to_rgb(ImageOps.exif_transpose(image))
    else:
        rgb, alpha, caught = open_image(image)
        for message in caught:
            warnings.warn(message)
    if 0 in rgb.size:
        raise RunError(f"an empty image ({rgb.width}x{rgb.height})")
    return rgb, alpha


def check_colorize_flags(args, max_size):
    """colorize.py's flags and --out, checked before any work: RunError with the
    first problem in one line. Sets args.device and args.batch_size."""
    problem = None
    if args.size is not None and not 8 <= args.size <= max_size:
        problem = f"--size {args.size}: must be 8 to {max_size} (the short side, in pixels, the network sees)"
    elif args.batch_size is not None and args.batch_size < 1:
        problem = f"--batch-size {args.batch_size}: must be 1 or more"
    elif args.device == "cuda" and not torch.cuda.is_available():
        problem = "--device cuda, but no CUDA device is available"
    elif args.attention and args.size and args.size > MAX_ATTENTION_SIZE:  # N x N weights: size^4 bytes
        problem = (f"--attention with --size {args.size}: its N x N attention weights would take up to "
                   f"{4 * (args.size // 8) ** 2 * (4 * args.size // 8) ** 2 / 2**30:.0f} GB; "
                   f"--size {MAX_ATTENTION_SIZE} or less with --attention")
    elif args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        problem = f"--out {printable(args.out)}: a file, not a folder"
    elif args.out:
        try:  # made and written to now, not found out after the first image (os.access says yes to root)
            os.makedirs(args.out, exist_ok=True)
            tempfile.TemporaryFile(dir=args.out).close()
        except OSError as e:
            problem = f"--out {printable(args.out)}: cannot write there ({e.strerror or e})"
    if problem:
        raise RunError(problem)
    args.device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    args.batch_size = args.batch_size or (8 if args.device == "cuda" else 1)


def load_models(args, load, demo):
    """colorize.py's models: load(checkpoint, device, inception) for each
    --checkpoint (or the default), each said in one line, with its name for
    --compare and --metrics. -> (models, names); RunError for a bad one."""
    models, names = [], []
    for checkpoint in args.checkpoint or [None]:
        loaded = load(checkpoint, args.device, args.inception)
        if loaded.path == demo and not args.checkpoint:
            print("using the bundled demo model demo/colorizer.pt (trained on 229 photos on a GPU, then "
                  f"on 262 on a CPU; a run of train.py into {SEARCHED} here is used instead)", file=sys.stderr)
        found = "" if args.checkpoint or loaded.path == demo else \
            f"; the newest run under {SEARCHED}, --checkpoint PATH chooses another"
        print(f"checkpoint: {printable(loaded.path)} ({loaded.summary}{found})", file=sys.stderr)
        names.append(model_name(loaded.path, names, len(args.checkpoint or []) > 1))
        models.append(loaded._replace(size=args.size or loaded.size))
    if args.attention and models[0].net.attention is None:
        print(f"note: {printable(models[0].path)} is a baseline model without attention; no attention maps",
              file=sys.stderr)
    return models, names


def run_command(main):
    """colorize.py's exit status: main()'s, or 130 after Ctrl-C, SIGTERM or
    SIGHUP, which stop it as KeyboardInterrupt does, so that a save in flight
    removes its temporary file (save_atomic) and every output is whole."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    on_stop_signals(interrupt)
    try:
        return main()
    except KeyboardInterrupt:
        print("interrupted: the outputs written so far are whole; run it again and they are skipped",
              file=sys.stderr)
        return 130


OUTPUT_NAMES = ("Every input gets its own outputs, and no output replaces an input: inputs that would share a name "
                "(x.jpg and x.png; a/x.jpg and b/x.jpg with -o) get their extension added (x_jpg_color.png, "
                "x_png_color.png) or, where that does not tell them apart, a number (x-2_color.png), in the "
                "order given; so does an output that would be one of the inputs.")


def model_name(path, names, several):
    """A model's name in --compare strips and --metrics: its run folder's, when
    several are compared (numbered when two folders share a name)."""
    name = os.path.basename(os.path.dirname(os.path.abspath(path))) if several else "colorized"
    return f"{name}-{len(names) + 1}" if name in names else name


class OutputPlan:
    """colorize.py's jobs: every input file with the stem of its outputs (see
    plan_outputs), read in batches, written atomically, with progress. An image
    whose every output asked for exists is skipped (unless --overwrite);
    otherwise just the missing outputs are made. Failures are counted, said
    in one line each, and the rest goes on."""

    def __init__(self, args):
        self.args, self.done, self.started = args, 0, time.time()
        jobs, errors, passed_over = collect_inputs(args.paths, args.out)
        self.jobs, self.failed = plan_outputs(jobs), len(errors)
        for e in errors:
            print(f"error: {e}", file=sys.stderr)
        for w in passed_over:
            print(f"warning: {w}", file=sys.stderr)

    def batches(self, batch_size):
        """Lists of (number, path, stem, PIL RGB, alpha or None) to colorize."""
        extras = {"_compare.png": self.args.compare, "_attention.png": self.args.attention,
                  "_attention.html": self.args.attention}
        asked = [s for s in OUTPUT_SUFFIXES if extras.get(s, True)]
        for start in range(0, len(self.jobs), batch_size):
            batch = []
            for number, (path, stem) in enumerate(self.jobs[start:start + batch_size], start + 1):
                if all(os.path.exists(stem + s) for s in asked) and not self.args.overwrite:
                    print(f"skip: {', '.join(printable(stem + s) for s in asked)} exist{'s' if len(asked) == 1 else ''} "
                          f"(use --overwrite)")
                    continue
                try:
                    rgb, alpha, caught = open_image(path)
                except RunError as e:
                    print(f"error: {e}", file=sys.stderr)
                    self.failed += 1
                    continue
                for message in caught:
                    print(f"warning: {message}", file=sys.stderr)
                batch.append((number, path, stem, rgb, alpha))
            yield batch

    def write(self, number, path, stem, images):
        """Save {suffix: image} for one input (an output kept from an earlier
        run stays, unless --overwrite) and print its progress line. -> True
        when written, False when the disk refused (said, counted)."""
        written = []
        try:
            for suffix, image in images.items():
                if self.args.overwrite or not os.path.exists(stem + suffix):
                    save_output(image, stem + suffix)
                    written.append(stem + suffix)
        except OSError as e:  # disk full, no permission: say so, go on with the rest
            print(f"error: {printable(path)}: cannot write the output ({e})", file=sys.stderr)
            self.failed += 1
            return False
        self.done += 1
        line = f"[{number}/{len(self.jobs)}] {printable(path)} -> {', '.join(map(printable, written))}"
        if len(self.jobs) > 1:  # as train.py logs: throughput and time left
            rate = self.done / (time.time() - self.started)
            left = (len(self.jobs) - number) / rate
            line += f" | {rate:.2f} img/s | eta {int(left // 60)}m{int(left % 60):02d}s"
        print(line, flush=True)
        return True


def metrics_line(path, scores):
    if not scores:
        return f"metrics: {printable(path)}: grayscale input, nothing to compare against"
    return (f"metrics: {printable(path)}: " + " | ".join(f"{n} PSNR {p:.2f} dB, ab MSE {m:.4f}, colorfulness {c:.1f}"
                                                 for n, (p, m, c) in scores.items() if n != "original")
            + f" | original colorfulness {scores['original'][2]:.1f}")


def print_means(metrics, names):
    """The means over the color images of --metrics, each model beside
    all-gray, and (two or more images) how far each mean can be trusted."""
    print(f"metrics: mean over {len(metrics)} color images (PSNR on uint8 RGB at full resolution; "
          f"ab MSE in ab/128 units; colorfulness: Hasler-Suesstrunk on |rg|, |yb|)")
    means = {name: [sum(r[name][k] for r in metrics) / len(metrics) for k in range(3)] for name in metrics[0]}
    for name, (p, m, c) in means.items():  # the originals: only their colorfulness means anything
        print(f"metrics:   {name:<12} " + (f"PSNR {p:6.2f} dB | ab MSE {m:.5f} ({m / means['all-gray'][1]:.2f}x "
                                          f"all-gray) | " if name != "original" else "") + f"colorfulness {c:5.1f}")
    for name in names if len(metrics) > 1 else []:
        print(f"metrics:   {name:<12} {uncertainty(metrics, name)}")


def uncertainty(metrics, name, resamples=2000):
    """How far a mean over these images can be trusted: the PSNR gain over
    all-gray with its standard error, and the ab MSE ratio to all-gray with the
    range of 90% of bootstrap resamplings of the images (two or more)."""
    gain = np.array([r[name][0] - r["all-gray"][0] for r in metrics])
    mse = np.array([[r[name][1], r["all-gray"][1]] for r in metrics])
    picks = np.random.default_rng(0).integers(0, len(mse), (resamples, len(mse)))
    ratios = np.sort(mse[picks, 0].sum(1) / mse[picks, 1].sum(1))
    se = gain.std(ddof=1) / np.sqrt(len(gain))
    return (f"against all-gray: PSNR {gain.mean():+.2f} dB (standard error {se:.2f}), ab MSE "
            f"{mse[:, 0].sum() / mse[:, 1].sum():.3f}x (90% of resamplings: {ratios[resamples // 20]:.3f}x to "
            f"{ratios[-resamples // 20 - 1]:.3f}x)")
