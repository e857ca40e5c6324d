"""What colorize.py writes: every input its own outputs, and the lines of --metrics.

  1. Inputs and their outputs: files and folders in, one output stem for each
     input; none replaces an input or another input's output; what exists is
     kept (unless --overwrite); written atomically, with progress.
  2. The extras of one input: the --compare strip (side_by_side), the
     --attention figure and page (drawn by attention_maps.py), and the
     metrics: PSNR, a*b* MSE and colorfulness per photo, then the means
     against all-gray, and how far a mean over few photos can be trusted.
"""
import functools
import math
import os
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

import attention_maps
import data
import lab
import runs
from data import OUTPUT_SUFFIXES, printable

# -----------------------------------------------------------------------------
# 1. Inputs and their outputs

OUTPUT_NAMES = ("Every input gets its own outputs, and no output replaces an input: inputs that would share a name "
                "(x.jpg and x.png; a/x.jpg and b/x.jpg with -o) get their extension added (x_jpg_color.png, "
                "x_png_color.png) or, where that does not tell them apart, a number (x-2_color.png), in the "
                "order given; so does an output that would be one of the inputs.")


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
    taken = {entry(path) for path, _ in jobs} | {os.path.realpath(path) for path, _ in jobs}  # no output may
    # replace an input, nor the file behind an input that is a link
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
        runs.save_atomic(lambda f: f.write(output.encode("utf-8")), path)
    else:  # compress_level 1: 3-4x faster than the default, ~15% bigger
        runs.save_atomic(lambda f: output.save(f, format="PNG", compress_level=1), path)


def model_name(path, names, several):
    """A model's name in --compare strips and --metrics: its run folder's, when
    several are compared (numbered when two folders share a name)."""
    name = printable(os.path.basename(os.path.dirname(os.path.abspath(path)))) if several else "colorized"
    return f"{name}-{len(names) + 1}" if name in names else name


class OutputPlan:
    """colorize.py's jobs: every input file with the stem of its outputs (see
    plan_outputs), read in batches, written atomically, with progress. An image
    whose every output asked for exists is skipped (unless --overwrite);
    otherwise just the missing outputs are made. Failures are counted, said
    in one line each, and the rest goes on."""

    def __init__(self, args):
        self.args, self.done, self.started = args, 0, time.monotonic()
        self.eta = runs.Eta(0)
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
                folders = [stem + s for s in asked if os.path.isdir(stem + s)]
                if folders:  # neither skipped as done nor replaced, --overwrite or not
                    print(f"error: {printable(path)}: {printable(folders[0])} is a folder, where its output goes",
                          file=sys.stderr)
                    self.failed += 1
                    continue
                if all(os.path.exists(stem + s) for s in asked) and not self.args.overwrite:
                    print(f"skip: {', '.join(printable(stem + s) for s in asked)} exist{'s' if len(asked) == 1 else ''} "
                          f"(use --overwrite)")
                    continue
                try:
                    rgb, alpha, caught = data.open_image(path)
                except ValueError as e:
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
            rate = self.done / (time.monotonic() - self.started)
            self.eta.total = len(self.jobs)
            line += f" | {rate:.2f} img/s | {self.eta.update(number)}"
        print(line, flush=True)
        return True


# -----------------------------------------------------------------------------
# 2. The extras of one input: --compare, --attention, --metrics

def outputs_for(args, names, path, rgb, alpha, colored, gray, prediction):
    """{suffix: PIL image, or the text of a page} for one input: NAME_color.png
    from the first model's colorized image (colored: one per model, at full
    size), and the extras asked for; its metrics (None without --metrics, {}
    for a gray input, else {name: (PSNR, ab MSE, colorfulness)}); and with
    --attention, a line of statistics of the attention weights (else None).
    gray: all-gray, the input's L with a*b* = 0 (for --compare and --metrics);
    prediction: the first model's (a*b*, attention or None, network's copy)."""
    result = colored[0].copy()  # the RGB one is still needed for --compare and --metrics
    if alpha is not None:
        result.putalpha(alpha)
    images, has_color = {"_color.png": result}, not data.is_grayscale(rgb)
    if args.compare:  # copies: thumbnail() shrinks in place, and --metrics needs the full size
        panels = [p.copy() for p in [gray] + colored + ([rgb] if has_color else [])]
        for p in panels:
            p.thumbnail((1024, 1024))
        labels = ["gray input"] + (names if len(names) > 1 else ["colorized"]) + (["original"] if has_color else [])
        images["_compare.png"] = side_by_side(panels, labels)
    _, attention, copy = prediction
    attention_line = None
    if attention is not None:
        colored_copy = colored[0].resize(copy.size, Image.BILINEAR)
        panels, labels, attention_line = attention_maps.attention_figure(copy, colored_copy, attention)
        images["_attention.png"] = side_by_side(panels, labels)
        images["_attention.html"] = attention_maps.attention_page(colored_copy, attention, os.path.basename(path))
    if not args.metrics or not has_color:
        return images, {} if args.metrics else None, attention_line
    return images, {name: image_metrics(c, rgb) for name, c in zip(names + ["all-gray", "original"],
                                                                   colored + [gray, rgb])}, attention_line


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


def image_metrics(result, original, rows=256):
    """(PSNR dB, a*b* MSE in the network's ab/128 units, colorfulness) of a
    uint8 RGB result (H, W, 3) against the original, in strips of rows, so
    memory stays bounded at any size: sums of squared errors, and of the
    opponent channels and their squares, which lab.colorfulness's formula
    needs (its mean and standard deviation)."""
    result, original = np.asarray(result), np.asarray(original)
    sums = np.zeros(6)  # RGB squared error, a*b* squared error, rg, rg^2, yb, yb^2
    for y in range(0, result.shape[0], rows):
        pred, true = (data.to_tensor(x[y:y + rows])[None] for x in (result, original))  # (1, 3, rows, W) uint8
        ab_pred, ab_true = (lab.rgb_to_lab(x)[:, 1:] / lab.AB_SCALE for x in (pred, true))
        r, g, b = pred.double().unbind(1)
        rg, yb = (r - g).abs(), ((r + g) / 2 - b).abs()
        sums += [(pred.double() - true.double()).pow(2).sum().item(), (ab_pred - ab_true).double().pow(2).sum().item(),
                 rg.sum().item(), rg.pow(2).sum().item(), yb.sum().item(), yb.pow(2).sum().item()]
    n = result.shape[0] * result.shape[1]
    mse, ab_mse, rg, rg2, yb, yb2 = sums / [3 * n, 2 * n, n, n, n, n]
    colorfulness = math.sqrt(max(0.0, rg2 - rg ** 2 + yb2 - yb ** 2)) + 0.3 * math.sqrt(rg ** 2 + yb ** 2)
    return 20 * math.log10(255 / math.sqrt(mse)) if mse else math.inf, float(ab_mse), colorfulness


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
