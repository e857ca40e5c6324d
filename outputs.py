"""colorize.py's command around its story (load -> predict -> full resolution -> save).

  0. Before any work: the flags and --out checked (one line, exit status 2),
     each model said in one line.
  1. Inputs and their outputs: files and folders in, one output stem for each
     input; none replaces an input or another input's output; what exists is
     kept (unless --overwrite); written atomically, never through a link under
     --out, with progress; the exit status, and a loud last line when nothing
     was written.
  2. The extras of one input: the --compare strip (side_by_side), the
     --attention figure and page (drawn by attention_maps.py), and the
     metrics: PSNR, a*b* MSE and colorfulness per photo, then the means
     against all-gray, and how far a mean over few photos can be trusted.
"""
import functools
import os
import sys
import time
from collections import namedtuple

import numpy as np
from PIL import Image, ImageDraw

import attention_maps
import data
import lab
import runs
from data import OUTPUT_SUFFIXES, printable

# -----------------------------------------------------------------------------
# 0. Before any work: the flags, --out, and each model said

MAX_ATTENTION_SIZE = 512  # --attention: a 4:1 panorama at 512 px is 16384 positions, 1 GB of weights
SLOW_ATTENTION_SIZE = 1024  # above it, attention's N^2 work takes minutes a photo on a CPU: said
OUTPUT_NAMES = ("Every input gets its own outputs, and no output replaces an input: inputs that would share a name "
                "(x.jpg and x.png; a/x.jpg and b/x.jpg with -o) get their extension added (x_jpg_color.png, "
                "x_png_color.png) or, where that does not tell them apart, a number (x-2_color.png), in the "
                "order given; so does an output that would be one of the inputs.")


def command_line(argv, doc):
    """colorize.py's flags (doc: its docstring), checked with --out before any
    work: the first problem, one line, exit status 2. --out is made and written
    to now, not found out after the first image (os.access says yes to root).
    Sets args.device and args.batch_size."""
    parser = runs.ArgumentParser(description=doc.split("\n\n")[0], epilog=OUTPUT_NAMES)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images or folders (recursive)")
    parser.add_argument("-o", "--out", metavar="DIR", help="write into this folder instead of beside each input")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    flags = parser.add_argument_group("model")
    flags.add_argument("--checkpoint", action="append", metavar="PATH", help="a checkpoint or run folder (default: "
                       "the newest run under runs/ or out/, else the bundled demo); again: several side by side")
    flags.add_argument("--inception", metavar="PATH", help="Inception-ResNet-v2 weights, if not the cached default")
    flags.add_argument("--size", type=runs.number_in(int, 8, runs.MAX_SIZE),
                       help="short side of the network's copy in pixels (default: the training size)")
    flags.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="auto: cuda if available")
    flags.add_argument("--batch-size", type=runs.number_in(int, 1, 4096),
                       help="images per forward pass (default: 8 on CUDA, 1 on the CPU)")
    flags = parser.add_argument_group("extras")
    flags.add_argument("--compare", action="store_true", help="also NAME_compare.png: gray | colorized | original")
    flags.add_argument("--attention", action="store_true", help="also NAME_attention.png, its statistics, and "
                       "NAME_attention.html, a page that shows where any point looks")
    flags.add_argument("--metrics", action="store_true", help="PSNR, ab MSE and colorfulness against all-gray, "
                       "also where the outputs exist and are kept")
    args = parser.parse_args(argv)
    if "" in [args.out, args.inception, *(args.checkpoint or [])]:
        runs.fail("--out, --checkpoint and --inception take a path: an empty one was given")
    if args.out:
        runs.writable_folder(args.out)
    args.device = runs.device(args.device).type
    args.batch_size = args.batch_size or (8 if args.device == "cuda" else 1)
    return args


# -----------------------------------------------------------------------------
# 1. Inputs and their outputs

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
    taken = {entry(path) for path, _ in jobs} | {os.path.realpath(path) for path, _ in jobs}  # no output may
    # replace an input, nor the file behind an input that is a link
    planned = {}  # entry of an input: (the input, the stem of its outputs)
    for path, stem in jobs:
        if entry(path) in planned:
            continue  # the same file named twice
        shared = extensions[entry(stem)]
        if len(shared) > 1 and len(set(shared)) == len(shared) and os.path.splitext(path)[1]:
            stem += "_" + os.path.splitext(path)[1][1:].lower()
        candidate, n = stem, 1
        while any(entry(candidate + s) in taken for s in OUTPUT_SUFFIXES):
            n += 1
            candidate = f"{stem}-{n}"
        taken.update(entry(candidate + s) for s in OUTPUT_SUFFIXES)
        planned[entry(path)] = (path, candidate)
    return list(planned.values())


def save_output(output, path, out=None):
    """A PIL image as PNG, or the text of a page, written to a temporary file
    and renamed: never a half-written output. Under --out (`out`) the folders
    on the way are made one at a time, and one that is a link is refused, so
    that an output under --out stays under it, whatever was planted there."""
    folder = out
    for part in os.path.relpath(os.path.dirname(path), out).split(os.sep) if out else []:
        folder = os.path.join(folder, part)
        if os.path.islink(folder):
            raise OSError(f"{printable(folder)} is a link, and no output is written through one")
        if not os.path.isdir(folder):
            os.mkdir(folder)
    # compress_level 1: 3-4x faster than the default, ~15% bigger
    runs.save_atomic(lambda f: f.write(output.encode("utf-8")) if isinstance(output, str) else
                     output.save(f, format="PNG", compress_level=1), path)


# One input to colorize: its number in the plan, its file, the stem of its
# outputs, the image read, and the suffixes of the outputs to write (none: --metrics only).
Input = namedtuple("Input", "number path stem rgb alpha todo")


class OutputPlan:
    """colorize.py's inputs and outputs, to the exit status: every input file
    with the stem of its outputs (see plan_outputs), read in batches, written
    atomically, with progress, the lines of --attention and --metrics, and
    their means. An output that exists is kept (unless --overwrite), and an
    input whose every output exists is skipped, but for --metrics, which need
    no file. Failures are counted, said in one line each, and the rest goes on."""

    def __init__(self, args):
        """Files and folders (recursive) in, each file with its output stem;
        one-line errors (a missing path, a folder without images) and warnings
        (what the folder walks passed over: unreadable folders, FIFOs)."""
        self.args, self.names, self.metrics, self.failed, self.done, self.written, self.skipped = \
            args, [], [], 0, 0, 0, 0
        self.needs_gray = args.compare or args.metrics  # all-gray: a panel of --compare, the bar of --metrics
        jobs, passed_over = [], []  # [(input file, its output file, before its extension is cut)]
        for p in args.paths:
            if os.path.isdir(p):
                found = [f for f in data.find_images(p, passed_over)
                         if not f.endswith(OUTPUT_SUFFIXES)]  # our own outputs from an earlier run
                jobs += [(f, os.path.join(args.out, os.path.relpath(f, p)) if args.out else f) for f in found]
                if not found:
                    self.error(None, f"no images found in {printable(p)} ({', '.join(data.IMAGE_EXTENSIONS)})")
            elif os.path.exists(p):
                jobs.append((p, os.path.join(args.out, os.path.basename(p)) if args.out else p))
            else:
                self.error(None, f"{printable(p)}: no such file or folder")
        for w in passed_over:
            print(f"warning: {w}", file=sys.stderr)
        self.jobs = plan_outputs([(f, os.path.splitext(stem)[0]) for f, stem in jobs])
        self.eta = runs.Eta(len(self.jobs))

    def use(self, loaded, demo):
        """A model colorize.load() returned, said in one line (demo: the bundled
        demo's path, said as such when no --checkpoint chose it), at --size when
        given, refused (exit 2) where --attention would need gigabytes. -> the
        model to colorize with; the first one writes NAME_color.png."""
        args, path = self.args, printable(loaded.path)
        size = args.size or loaded.size  # what the network will see: --size, else the checkpoint's own
        if args.attention and size > MAX_ATTENTION_SIZE:  # N x N float32 weights of a 4:1 copy: size^4 / 256 bytes
            runs.fail(f"--attention with {'--size' if args.size else path + ', trained at'} {size}: its N x N "
                      f"attention weights would take up to {size ** 4 / 256 / 2**30:.0f} GB; --size "
                      f"{MAX_ATTENTION_SIZE} or less with --attention")
        if loaded.net.attention is not None and args.device == "cpu" and size > SLOW_ATTENTION_SIZE:
            print(f"note: {path} at a short side of {size}: its attention compares each of {(size // 8) ** 2}+ "
                  f"positions with every other, minutes to hours a photo on the CPU; --size "
                  f"{SLOW_ATTENTION_SIZE // 2} is {(size / (SLOW_ATTENTION_SIZE // 2)) ** 4:.0f} times less work",
                  file=sys.stderr)
        found = "" if args.checkpoint else f"; the newest run under {runs.SEARCHED}, --checkpoint PATH chooses another"
        if loaded.path == demo and not args.checkpoint:
            found = (f"; the bundled demo model, trained on 229 photos on a GPU, then on 262 on a CPU; a run of "
                     f"train.py into {runs.SEARCHED} here is used instead")
        print(f"checkpoint: {path} ({loaded.summary}{found})", file=sys.stderr)
        # its name in --compare strips and --metrics: its run folder's when several are compared, numbered when
        # two folders share a name
        several = len(args.checkpoint or []) > 1
        name = printable(os.path.basename(os.path.dirname(os.path.abspath(loaded.path)))) if several else "colorized"
        self.names.append(f"{name}-{len(self.names) + 1}" if name in self.names else name)
        if args.attention and len(self.names) == 1 and loaded.net.attention is None:
            print(f"note: {path} is a baseline model without attention; no attention maps", file=sys.stderr)
            args.attention = False  # none asked for, none missing
        return loaded._replace(size=size)

    def batches(self, batch_size):
        """Lists of up to batch_size Inputs to colorize, read as they are needed."""
        self.started = time.monotonic()  # the clock starts at the first photo: loading models is no progress
        self.eta.pause()
        extras = {"_compare.png": self.args.compare, "_attention.png": self.args.attention,
                  "_attention.html": self.args.attention}
        asked, batch = [s for s in OUTPUT_SUFFIXES if extras.get(s, True)], []
        for number, (path, stem) in enumerate(self.jobs, 1):
            folders = [stem + s for s in asked if os.path.isdir(stem + s)]
            if folders:  # neither skipped as done nor replaced, --overwrite or not
                self.error(path, f"{printable(folders[0])} is a folder, where its output goes")
                continue
            todo = [s for s in asked if self.args.overwrite or not os.path.lexists(stem + s)]  # a link to nothing too
            if not todo:
                self.skipped += 1
                print(f"skip: {', '.join(printable(stem + s) for s in asked)} exist{'s' if len(asked) == 1 else ''} "
                      f"(use --overwrite)")
                if not self.args.metrics:
                    continue
            try:
                rgb, alpha, caught = data.open_image(path)
            except ValueError as e:
                self.error(None, e)
                continue
            for message in caught:
                print(f"warning: {message}", file=sys.stderr)
            batch.append(Input(number, path, stem, rgb, alpha, todo))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def error(self, path, reason):
        print(f"error: {printable(path) + ': ' if path else ''}{reason}", file=sys.stderr)
        self.failed += 1

    def save(self, job, colored, gray, prediction):
        """Make one input's outputs (see outputs_for), write those not there
        when it was read, and say so: its progress line, then its attention
        line, then its metrics (PSNR, ab MSE, colorfulness), kept for the means."""
        images, attention_line = outputs_for(self.names, job, colored, gray, prediction)
        todo = {job.stem + s: output for s, output in images.items()  # {file: output}, those not there when read
                if self.args.overwrite or not os.path.lexists(job.stem + s)}
        try:
            for path, output in todo.items():
                save_output(output, path, self.args.out)
                self.written += 1
        except OSError as e:  # disk full, no permission, a link on the way: said, and on with the rest
            return self.error(job.path, f"cannot write the output ({e})")
        if todo:
            self.done += 1
            line = f"[{job.number}/{len(self.jobs)}] {printable(job.path)} -> {', '.join(map(printable, todo))}"
            if len(self.jobs) > 1:  # as train.py logs: throughput and time left
                line += f" | {self.done / (time.monotonic() - self.started):.2f} img/s | {self.eta.update(job.number)}"
            print(line, flush=True)
        if attention_line:
            print(f"attention: {printable(job.path)}: {attention_line}")
        if self.args.metrics and data.is_grayscale(job.rgb):
            print(f"metrics: {printable(job.path)}: grayscale input, nothing to compare against")
        elif self.args.metrics:
            scores = {name: image_metrics(c, job.rgb)
                      for name, c in zip(self.names + ["all-gray", "original"], colored + [gray, job.rgb])}
            print(f"metrics: {printable(job.path)}: " + " | ".join(
                f"{n} PSNR {p:.2f} dB, ab MSE {m:.4f}, colorfulness {c:.1f}" for n, (p, m, c) in scores.items()
                if n != "original") + f" | original colorfulness {scores['original'][2]:.1f}")
            self.metrics.append(scores)

    def finish(self):
        """The means over the color images of --metrics, each model beside
        all-gray, and (two or more images) how far each mean can be trusted;
        then the exit status: 1 when an input failed, 3 when nothing was
        written because every output existed (said loudly), else 0."""
        if self.metrics:
            print(f"metrics: mean over {len(self.metrics)} color images (PSNR on uint8 RGB at full resolution; "
                  f"ab MSE in ab/128 units; colorfulness: Hasler-Suesstrunk on |rg|, |yb|)")
            means = {name: np.mean([r[name] for r in self.metrics], axis=0) for name in self.metrics[0]}
            for name, (p, m, c) in means.items():  # the originals: only their colorfulness means anything
                said = f"PSNR {p:6.2f} dB | ab MSE {m:.5f} ({m / means['all-gray'][1]:.2f}x all-gray) | "
                print(f"metrics:   {name:<12} {said if name != 'original' else ''}colorfulness {c:5.1f}")
            for name in self.names if len(self.metrics) > 1 else []:
                print(f"metrics:   {name:<12} {uncertainty(self.metrics, name)}")
        if self.skipped and not self.written:
            print("nothing written: every output exists already and was kept (an earlier run's, maybe another "
                  "model's); --overwrite replaces them, -o DIR writes new ones elsewhere", file=sys.stderr)
        return 1 if self.failed else 3 if self.skipped and not self.written else 0


# -----------------------------------------------------------------------------
# 2. The extras of one input: --compare, --attention, --metrics

def outputs_for(names, job, colored, gray, prediction):
    """{suffix: PIL image, or the text of a page} for the outputs job.todo
    names: NAME_color.png from the first model's colorized image (colored: one
    per model, at full size), and the extras; and a line of statistics of the
    attention weights, when drawn (else None). names: the models'; gray:
    all-gray, the input's L with a*b* = 0 (for --compare and --metrics);
    prediction: the first model's (a*b*, attention or None, network's copy)."""
    images, attention_line = {}, None
    if "_color.png" in job.todo:  # with alpha, a new image: the RGB one goes on to --compare and --metrics
        images["_color.png"] = colored[0] if job.alpha is None else \
            Image.merge("RGBA", (*colored[0].split(), job.alpha))
    if "_compare.png" in job.todo:  # copies: thumbnail() shrinks in place, and --metrics needs the full size
        original = [] if data.is_grayscale(job.rgb) else [job.rgb]
        panels = [p.copy() for p in [gray] + colored + original]
        for p in panels:
            p.thumbnail((1024, 1024))
        images["_compare.png"] = side_by_side(panels, ["gray input"] + names + ["original"] * len(original))
    _, attention, copy = prediction
    if attention is not None and {"_attention.png", "_attention.html"} & set(job.todo):
        colored_copy = colored[0].resize(copy.size, Image.BILINEAR)
        panels, labels, attention_line = attention_maps.attention_figure(copy, colored_copy, attention)
        images["_attention.png"] = side_by_side(panels, labels)
        images["_attention.html"] = attention_maps.attention_page(colored_copy, attention, os.path.basename(job.path))
    return images, attention_line


def side_by_side(images, labels):
    """Images in a row on white, 4 px apart, each under an 18 px strip with its label."""
    sheet = Image.new("RGB", (sum(im.width + 4 for im in images) - 4, 18 + max(im.height for im in images)), "white")
    draw, x = ImageDraw.Draw(sheet), 0
    for im, label in zip(images, labels):
        sheet.paste(im.convert("RGB"), (x, 18))
        draw.text((x + 4, 3), label, fill="black")
        x += im.width + 4
    return sheet


def image_metrics(result, original):
    """(PSNR dB, a*b* MSE in the network's ab/128 units, colorfulness) of a PIL
    RGB result against the original, by lab's formulas, which run in strips of
    rows: bounded memory at any size."""
    pred, true = data.to_tensor(result)[None], data.to_tensor(original)[None]  # (1, 3, H, W) uint8
    return lab.psnr(pred, true).item(), lab.ab_mse(pred, true).item(), lab.colorfulness(pred).item()


def uncertainty(metrics, name, resamples=2000):
    """How far a mean over these images can be trusted: the PSNR gain over
    all-gray with its standard error, and the ab MSE ratio to all-gray with the
    range of 90% of bootstrap resamplings of the images (two or more)."""
    gain = np.array([r[name][0] - r["all-gray"][0] for r in metrics])
    mse = np.array([[r[name][1], r["all-gray"][1]] for r in metrics])
    picks = np.random.default_rng(0).integers(0, len(mse), (resamples, len(mse)))  # (resamples, images)
    low, high = np.percentile(mse[picks, 0].sum(1) / mse[picks, 1].sum(1), [5, 95], method="nearest")
    return (f"against all-gray: PSNR {gain.mean():+.2f} dB (standard error {gain.std(ddof=1) / len(gain) ** 0.5:.2f}), "
            f"ab MSE {mse[:, 0].sum() / mse[:, 1].sum():.3f}x (90% of resamplings: {low:.3f}x to {high:.3f}x)")
