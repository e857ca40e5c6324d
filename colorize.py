"""Colorize photographs at their own resolution with a trained checkpoint.

    python colorize.py old_photo.jpg                 # writes old_photo_color.png beside it
    python colorize.py scans/ -o colored/ --compare  # a folder, recursively
    python colorize.py photo.jpg --attention         # also: where the model looks

The network sees a resized copy (short side = the checkpoint's training size);
its a*b* prediction is resized bilinearly to the original size and joined with
the original full-resolution L, so the detail
of the output is the detail of the input. Alpha is kept; inputs are never
overwritten. The checkpoint carries its own config: no architecture flags.

From Python (a notebook): colorize.colorize("photo.jpg") returns a PIL image;
load the model once for many images with colorizer = colorize.load() and
colorize.colorize(image, colorizer).
"""
import argparse
import functools
import glob
import os
import sys
import tempfile
import time
import warnings
from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import data
import lab
import model

OUTPUT_SUFFIXES = ("_color.png", "_compare.png", "_attention.png")
# The paper-size model trained on 229 photographs (README, "The demo model"), used when
# no checkpoint is given or found, so a fresh clone colorizes out of the box.
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "colorizer.pt")
STRIP_ROWS = 256  # full-resolution work runs in strips of rows: bounded memory for any size
PAD = 8  # pixels of border added around the network's copy (predict_ab), a multiple of 8
MAX_SIZE = 4096  # --size: beyond this the network's copy alone needs gigabytes
shown = data.shown  # paths for printing: a file name that is not UTF-8 must not end the run
# A checkpoint loaded for use: the network, its frozen Inception (or None), the
# short side of the network's copy, the device, the file, and "step N, ...".
LoadedModel = namedtuple("LoadedModel", "net inception size device path about")


class ColorizeError(Exception):
    """A bad input or checkpoint: the message is the one line the command
    prints after "error: "."""


class CheckpointError(ColorizeError):
    pass


def run_checkpoint(folder):
    """A train.py run folder's best.pt (lowest validation MSE), else its ckpt.pt
    (runs from before best.pt), else None."""
    return next((p for p in (os.path.join(folder, n) for n in ("best.pt", "ckpt.pt")) if os.path.isfile(p)), None)


def find_checkpoint(out_dir="out"):
    """The checkpoint of the newest train.py run under out_dir, or None."""
    found = [p for n in ("best.pt", "ckpt.pt") for p in glob.glob(os.path.join(out_dir, "**", n), recursive=True)]
    return run_checkpoint(os.path.dirname(max(found, key=os.path.getmtime))) if found else None


def export_checkpoint(src, dst):
    """A train.py checkpoint -> a small inference copy: config, float16 weights,
    training size, Inception record and the last validation numbers (no
    optimizer state), written atomically. This is how demo/colorizer.pt was made."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    evals = [row for row in ckpt["history"] if "val_mse" in row]
    small = {"config": ckpt["config"], "step": ckpt["step"], "inception": ckpt["inception"],
             "args": {"size": ckpt["args"]["size"]}, "validation": evals[-1] if evals else None,
             "model": {k: v.half() if v.is_floating_point() else v
                       for k, v in model.evaluated_weights(ckpt).items()}}
    data.save_atomic(lambda tmp: torch.save(small, tmp), dst)


def short_reason(e):
    """An exception's class and first sentence, leaving out torch's advice to
    load with weights_only=False: unsafe for a file from anywhere."""
    text = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else ""
    unsafe = "weights only" in text.lower().replace("_", " ")
    return e.__class__.__name__ + (f": {text[:150]}" if text and not unsafe else "")


def weights_mismatch(net, state):
    """The first weight in state that does not fit net, in words, or None."""
    own = net.state_dict()
    for k in [*own, *state]:
        if k not in state or k not in own:
            return f"{k} is {'missing' if k not in state else 'not in this model'}"
        if state[k].shape != own[k].shape:
            return f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(own[k].shape)}"
    return None


def load(checkpoint=None, device=None, inception=None):
    """Load a checkpoint once, to colorize many images: colorize(image, load()).
    checkpoint: a file, a train.py run folder (its best.pt, else ckpt.pt), or
    None: the newest run under out/, else the bundled demo. device: "cuda",
    "cpu" or None (CUDA when available). inception: the Inception-ResNet-v2
    weights, if not the cached default. -> LoadedModel; CheckpointError with a
    one-line reason."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path = checkpoint or find_checkpoint() or DEMO_CHECKPOINT
    if os.path.isdir(path):
        path = run_checkpoint(path) or path
        if os.path.isdir(path):
            raise CheckpointError(f"{shown(path)}: a folder without best.pt or ckpt.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{shown(path)}: no such checkpoint") from None
    except Exception as e:  # unpickling, truncated, random bytes: torch raises many kinds
        raise CheckpointError(f"{shown(path)}: not a checkpoint file ({short_reason(e)})") from None
    try:
        net = model.Colorizer(model.ColorizerConfig.from_dict(ckpt["config"]))
        state = model.evaluated_weights(ckpt)
        problem = weights_mismatch(net, state)
        if problem is None:
            net.load_state_dict(state)
    except Exception as e:  # not a dict, no config, an unknown config key: all "not usable here"
        problem = short_reason(e)
    if problem:
        raise CheckpointError(f"{shown(path)}: not a compatible colorizer checkpoint ({problem})")
    inception_net = None
    if net.config.global_branch:
        record = ckpt.get("inception") or {}
        try:
            inception = inception or model.default_inception_path()
            if not os.path.exists(inception):
                raise ValueError(f"{inception}: no such file")
            if record.get("sha256") and model.sha256_of(inception) != record["sha256"]:
                print(f"warning: {inception} is not the Inception this model was trained with "
                      f"({record.get('file')}); colors may suffer", file=sys.stderr)
            inception_net = model.load_inception(inception).to(device)
        except (ValueError, RuntimeError) as e:  # model.py's download advice names train.py's flags: cut it
            reason = str(e).splitlines()[0].removesuffix(" Download").rstrip(".")
            raise CheckpointError(f"{shown(path)} needs the Inception-ResNet-v2 weights it was trained with "
                                  f"({reason}); give them with --inception PATH") from None
    val = ckpt.get("validation") or next((r for r in reversed(ckpt.get("history") or []) if "val_mse" in r), None)
    about = f"step {ckpt.get('step', '?')}" + (f", validation MSE {val['val_mse']:.5f}" if val else "")
    size = (ckpt.get("args") or {}).get("size", 256)
    return LoadedModel(net.to(device).eval(), inception_net, size, device, path, about)


def network_size(width, height, short):
    """(w, h) of the network's copy: short side `short`, aspect kept (long side
    at most 4x), both multiples of 8."""
    scale = short / min(width, height)
    w, h = width * scale, height * scale
    if max(w, h) > 4 * short:
        w, h = w * 4 * short / max(w, h), h * 4 * short / max(w, h)
    return max(8, round(w / 8) * 8), max(8, round(h / 8) * 8)


def to_tensor(im):
    """PIL RGB (or its array) -> uint8 (3, H, W), as lab.py takes it."""
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)


@torch.no_grad()
def predict_ab(net, inception, smalls, device, return_attention=False):
    """Same-size PIL RGB copies -> predicted ab (B, 2, h, w) in Lab units, and
    the attention weights (B, N, N) when asked."""
    rgb = torch.stack([to_tensor(s) for s in smalls]).to(device)
    l = lab.l_to_net(lab.rgb_to_l(rgb))                                # (B, 1, h, w)
    embedding = None if inception is None else model.inception_embedding(inception, lab.gray_rgb(l))
    # A model with zero padding (the paper's; this project's before replicate
    # padding) sees where the edge is and paints a faint colored frame there; it
    # paints it on a border of repeated edge pixels instead, which is cut off
    # again. For a replicate-padded model the border changes little.
    l = F.pad(l, (PAD,) * 4, mode="replicate")                        # (B, 1, h + 2P, w + 2P)
    out = net(l, embedding, return_attention=return_attention)
    ab, alpha = out if return_attention else (out, None)
    ab = ab[:, :, PAD:-PAD, PAD:-PAD]                                  # (B, 2, h, w)
    if alpha is not None:  # keep the attention among the picture's own positions
        B, (gh, gw), p = len(ab), (s // 8 + 2 * PAD // 8 for s in ab.shape[2:]), PAD // 8
        alpha = alpha.view(B, gh, gw, gh, gw)[:, p:-p, p:-p, p:-p, p:-p].reshape(B, (gh - 2 * p) * (gw - 2 * p), -1)
        alpha = alpha / alpha.sum(-1, keepdim=True)                    # (B, N, N), rows sum to 1
    return ab * lab.AB_SCALE, alpha


def full_resolution(rgb, ab_small, device="cpu"):
    """Join the original L of a PIL RGB image with ab (2, h, w) resized to its
    size: -> uint8 array (H, W, 3). Works in strips so memory stays bounded."""
    W, H = rgb.size
    ab = [np.asarray(Image.fromarray(c.float().cpu().numpy()).resize((W, H), Image.BILINEAR))
          for c in ab_small]                                           # 2 x (H, W)
    src = np.asarray(rgb)
    out = np.empty((H, W, 3), np.uint8)
    for y in range(0, H, STRIP_ROWS):
        L = lab.rgb_to_l(to_tensor(src[y:y + STRIP_ROWS]).to(device))  # (1, rows, W)
        ab_rows = torch.from_numpy(np.stack([c[y:y + STRIP_ROWS] for c in ab])).to(device)
        strip = lab.lab_to_rgb(torch.cat([L, ab_rows]))                # (3, rows, W)
        out[y:y + STRIP_ROWS] = (strip * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return out


def heat_colors(v):
    """Values in [0, 1] (..., ) -> a black-red-yellow-white ramp (..., 3) in [0, 1]."""
    return torch.stack([(3 * v).clamp(0, 1), (3 * v - 1).clamp(0, 1), (3 * v - 2).clamp(0, 1)], dim=-1)


def attention_figure(small, colored_small, alpha, grid=(2, 2)):
    """The colorized image, then one panel per query point: the attention
    weights of that point over the image as a heat map on the gray picture,
    the query marked with a ring. alpha: (N, N) for the h/8 x w/8 feature grid."""
    w, h = small.size
    fh, fw = h // 8, w // 8
    gray = to_tensor(small.convert("L").convert("RGB")) / 255         # (3, h, w)
    panels = [colored_small]
    for gy in range(grid[1]):
        for gx in range(grid[0]):
            qx, qy = (2 * gx + 1) * fw // (2 * grid[0]), (2 * gy + 1) * fh // (2 * grid[1])
            weights = alpha[qy * fw + qx].reshape(1, 1, fh, fw)
            weights = weights / weights.max()
            heat = F.interpolate(weights, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            blend = 0.35 * gray + 0.65 * heat_colors(heat).permute(2, 0, 1)
            panel = Image.fromarray((blend.clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy())
            cx, cy, r = (qx + 0.5) * 8, (qy + 0.5) * 8, 7
            ImageDraw.Draw(panel).ellipse([cx - r, cy - r, cx + r, cy + r], outline=(0, 255, 255), width=3)
            panels.append(panel)
    return side_by_side(panels, ["colorized"] + [f"attention of ring {k + 1}" for k in range(len(panels) - 1)])


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


def save_png(image, path):
    """Write to a temporary file, then rename: never a half-written output."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # compress_level 1: 3-4x faster than the default, ~15% bigger
    data.save_atomic(lambda tmp: image.save(tmp, format="PNG", compress_level=1), path)


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
                errors.append(f"no images found in {shown(p)} ({', '.join(data.IMAGE_EXTENSIONS)})")
        elif os.path.exists(p):
            jobs.append((p, os.path.join(out_dir, os.path.basename(p)) if out_dir else p))
        else:
            errors.append(f"{shown(p)}: no such file or folder")
    return [(f, os.path.splitext(stem)[0]) for f, stem in jobs], errors, passed_over


def plan_outputs(jobs):
    """Give every input its own outputs, none of them an input (see --help):
    inputs that would share a name get their extension added (x_jpg, x_png) or,
    where that does not tell them apart, a number (x-2), in input order."""
    real_folder = functools.lru_cache(maxsize=None)(os.path.realpath)

    # A folder entry, however spelled: compare entries, as save_png replaces
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


def open_image(path):
    """(PIL RGB, alpha or None, [warnings]) for an image file, or ColorizeError
    with a one-line reason. Warnings from Pillow, libtiff or numpy do not name
    the file they are about: caught here, they come back as "FILE: message"."""
    if not os.path.isfile(path):  # a FIFO would block forever
        raise ColorizeError(f"{shown(path)}: " + ("no such file" if not os.path.exists(path) else "a folder"
                                                  if os.path.isdir(path) else "not a regular file (a FIFO or a device)"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rgb, alpha = data.load_image(path)
        except data.IMAGE_ERRORS as e:
            reason = "image too large (decompression bomb limit)" if isinstance(
                e, Image.DecompressionBombError) else f"not a readable image ({e})"
            raise ColorizeError(f"{shown(path)}: {reason}") from None
    return rgb, alpha, [f"{shown(path)}: {w.message}" for w in caught]


def predict_all(loaded, images, return_attention):
    """ab (2, h, w) in Lab units, attention (N, N) or None, and the network's
    copy, for each PIL RGB image, batching the images whose copies share a size."""
    net, inception, size, device = loaded.net, loaded.inception, loaded.size, loaded.device
    smalls = [im.resize(network_size(*im.size, size), Image.BILINEAR, reducing_gap=3.0) for im in images]
    results = [None] * len(images)
    by_size = {}
    for i, small in enumerate(smalls):
        by_size.setdefault(small.size, []).append(i)
    for indices in by_size.values():
        ab, alpha = predict_ab(net, inception, [smalls[i] for i in indices], device,
                               return_attention and net.attention is not None)
        for k, i in enumerate(indices):
            results[i] = (ab[k], None if alpha is None else alpha[k].float().cpu(), smalls[i])
    return results


def colorize(image, checkpoint=None, device=None):
    """One image, from Python: a path or a PIL image of any mode -> a PIL image
    at full resolution, RGB, or RGBA when the input has alpha. checkpoint: what
    load() takes, or what it returned (load once, colorize many). Raises
    ColorizeError with the one-line message the command would print."""
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load(checkpoint, device)
    if isinstance(image, Image.Image):
        rgb, alpha = data.to_rgb(image)
    else:
        rgb, alpha, caught = open_image(image)
        for message in caught:
            warnings.warn(message)
    (ab, _, _), = predict_all(loaded, [rgb], False)
    result = Image.fromarray(full_resolution(rgb, ab, loaded.device))
    if alpha is not None:
        result.putalpha(alpha)
    return result


def image_metrics(result, original):
    """(PSNR dB, ab MSE in the network's ab/128 units, colorfulness) of a
    uint8 RGB result (H, W, 3) against the original."""
    pred, true = (to_tensor(x)[None] for x in (result, original))
    ab_pred, ab_true = (lab.rgb_to_lab(x)[:, 1:] / lab.AB_SCALE for x in (pred, true))
    return lab.psnr(pred, true).item(), (ab_pred - ab_true).pow(2).mean().item(), lab.colorfulness(pred).item()


def write_outputs(args, names, stem, rgb, alpha, predictions, device):
    """Write NAME_color.png (from the first model) and the extras asked for, for
    one image. -> (paths written, metrics): metrics is None without --metrics,
    {} for a gray input, else {name: (PSNR, ab MSE, colorfulness)}.
    predictions: one (ab, attention, network copy) per model."""
    colored = [Image.fromarray(full_resolution(rgb, ab, device)) for ab, _, _ in predictions]
    result = colored[0]
    if alpha is not None:
        result = result.copy()  # the RGB one is still needed for --compare and --metrics
        result.putalpha(alpha)
    written = []

    def write(image, path):  # an output kept from an earlier run stays, unless --overwrite
        if args.overwrite or not os.path.exists(path):
            save_png(image, path)
            written.append(path)
    write(result, stem + "_color.png")
    has_color = not data.is_grayscale(rgb)
    gray = rgb.convert("L").convert("RGB")
    if args.compare:
        # copies: thumbnail() shrinks in place, and --metrics needs the full size
        panels = [p.copy() for p in [gray] + colored + ([rgb] if has_color else [])]
        labels = ["gray input"] + (names if len(names) > 1 else ["colorized"]) + (["original"] if has_color else [])
        for p in panels:
            p.thumbnail((1024, 1024))
        write(side_by_side(panels, labels), stem + "_compare.png")
    _, attention, small = predictions[0]
    if attention is not None:
        colored_small = colored[0].resize(small.size, Image.BILINEAR)
        write(attention_figure(small, colored_small, attention), stem + "_attention.png")
    if not args.metrics:
        return written, None
    if not has_color:
        return written, {}
    return written, {name: image_metrics(c, rgb)
                     for name, c in zip(names + ["all-gray", "original"], colored + [gray, rgb])}


def metrics_line(path, rows):
    if not rows:
        return f"metrics: {shown(path)}: grayscale input, nothing to compare against"
    return (f"metrics: {shown(path)}: " + " | ".join(f"{n} PSNR {p:.2f} dB, ab MSE {m:.4f}, colorfulness {c:.1f}"
                                                 for n, (p, m, c) in rows.items() if n != "original")
            + f" | original colorfulness {rows['original'][2]:.1f}")


def uncertainty(metrics, name, resamples=2000):
    """How far a mean over these images can be trusted: the PSNR gain over
    all-gray with its standard error, and the ab MSE ratio to all-gray with the
    range of 90% of bootstrap resamplings of the images (two or more). Over a
    few dozen photos both are wide: one nearly gray photo colored wrongly costs
    several dB."""
    gain = np.array([r[name][0] - r["all-gray"][0] for r in metrics])
    mse = np.array([[r[name][1], r["all-gray"][1]] for r in metrics])
    picks = np.random.default_rng(0).integers(0, len(mse), (resamples, len(mse)))
    ratios = np.sort(mse[picks, 0].sum(1) / mse[picks, 1].sum(1))
    se = gain.std(ddof=1) / np.sqrt(len(gain))
    return (f"against all-gray: PSNR {gain.mean():+.2f} dB (standard error {se:.2f}), ab MSE "
            f"{mse[:, 0].sum() / mse[:, 1].sum():.3f}x (90% of resamplings: {ratios[resamples // 20]:.3f}x to "
            f"{ratios[-resamples // 20 - 1]:.3f}x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=(
        "Every input gets its own outputs, and no output replaces an input: inputs that would share "
        "a name (x.jpg and x.png; a/x.jpg and b/x.jpg with -o) get their extension added "
        "(x_jpg_color.png, x_png_color.png) or, where that does not tell them apart, a number "
        "(x-2_color.png), in the order given; so does an output that would be one of the inputs."))
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images or folders (recursive)")
    parser.add_argument("-o", "--out", metavar="DIR", help="write into this folder instead of beside each input")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", action="append", metavar="PATH",
                   help="a train.py checkpoint or run folder (its best.pt, else ckpt.pt); default: the newest "
                        "run in out/, else the bundled demo. Give it again to compare several side by side")
    g.add_argument("--inception", metavar="PATH", help="Inception-ResNet-v2 weights, if not the cached default")
    g.add_argument("--size", type=int,
                   help=f"short side of the network's copy, 8 to {MAX_SIZE} (default: the training size)")
    g.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="auto (the default): cuda when available")
    g.add_argument("--batch-size", type=int,
                   help="images per forward pass (default: 8 on CUDA; 1 on the CPU, where batching "
                        "only adds memory traffic)")
    g = parser.add_argument_group("extras")
    g.add_argument("--compare", action="store_true", help="also NAME_compare.png: gray | colorized | original")
    g.add_argument("--attention", action="store_true",
                   help="also NAME_attention.png: where the attention looks from a few points")
    g.add_argument("--metrics", action="store_true",
                   help="PSNR, ab MSE and colorfulness against color inputs, with all-gray as the floor")
    args = parser.parse_args(argv)

    # Every flag is checked here, before any work: the first problem, one line, exit status 2.
    problem = None
    if args.size is not None and not 8 <= args.size <= MAX_SIZE:
        problem = f"--size {args.size}: must be 8 to {MAX_SIZE} (the short side, in pixels, the network sees)"
    elif args.batch_size is not None and args.batch_size < 1:
        problem = f"--batch-size {args.batch_size}: must be 1 or more"
    elif args.device == "cuda" and not torch.cuda.is_available():
        problem = "--device cuda, but no CUDA device is available"
    elif args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        problem = f"--out {shown(args.out)}: a file, not a folder"
    elif args.out:
        try:  # made and written to now, not found out after the first image (os.access says yes to root)
            os.makedirs(args.out, exist_ok=True)
            tempfile.TemporaryFile(dir=args.out).close()
        except OSError as e:
            problem = f"--out {shown(args.out)}: cannot write there ({e.strerror or e})"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    args.batch_size = args.batch_size or (8 if device == "cuda" else 1)

    models, names = [], []  # the first one writes NAME_color.png
    for checkpoint in args.checkpoint or [None]:
        try:
            loaded = load(checkpoint, device, args.inception)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if loaded.path == DEMO_CHECKPOINT and not args.checkpoint:
            print("using the bundled demo model demo/colorizer.pt (trained on 229 photos for five "
                  "minutes on a GPU; train your own with train.py and it is used instead)", file=sys.stderr)
        print(f"checkpoint: {shown(loaded.path)} ({loaded.about})", file=sys.stderr)
        name = os.path.basename(os.path.dirname(os.path.abspath(loaded.path))) if len(args.checkpoint or []) > 1 \
            else "colorized"
        names.append(f"{name}-{len(names) + 1}" if name in names else name)  # two runs in folders of one name
        models.append(loaded._replace(size=args.size or loaded.size))
    if args.attention and models[0].net.attention is None:
        print(f"note: {shown(models[0].path)} is a baseline model without attention; no attention maps",
              file=sys.stderr)

    jobs, errors, passed_over = collect_inputs(args.paths, args.out)
    jobs = plan_outputs(jobs)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    for w in passed_over:
        print(f"warning: {w}", file=sys.stderr)
    failed, metrics, done, started = len(errors), [], 0, time.time()
    for start in range(0, len(jobs), args.batch_size):
        batch = []  # (number, path, stem, rgb, alpha)
        for number, (path, stem) in enumerate(jobs[start:start + args.batch_size], start + 1):
            # skipped when every output asked for is there; otherwise the missing ones are made
            asked = [stem + s for s, on in zip(OUTPUT_SUFFIXES, (True, args.compare, args.attention)) if on]
            if all(map(os.path.exists, asked)) and not args.overwrite:
                print(f"skip: {', '.join(map(shown, asked))} exist{'s' if len(asked) == 1 else ''} (use --overwrite)")
                continue
            try:
                rgb, alpha, caught = open_image(path)
            except ColorizeError as e:
                print(f"error: {e}", file=sys.stderr)
                failed += 1
                continue
            for message in caught:
                print(f"warning: {message}", file=sys.stderr)
            batch.append((number, path, stem, rgb, alpha))
        predictions = [predict_all(m, [item[3] for item in batch], args.attention) for m in models]
        for i, (number, path, stem, rgb, alpha) in enumerate(batch):
            try:
                written, rows = write_outputs(args, names, stem, rgb, alpha, [p[i] for p in predictions], device)
            except OSError as e:  # disk full, no permission: say so, go on with the rest
                print(f"error: {shown(path)}: cannot write the output ({e})", file=sys.stderr)
                failed += 1
                continue
            done += 1
            line = f"[{number}/{len(jobs)}] {shown(path)} -> {', '.join(map(shown, written))}"
            if len(jobs) > 1:  # as train.py logs: throughput and time left
                rate = done / (time.time() - started)
                left = (len(jobs) - number) / rate
                line += f" | {rate:.2f} img/s | eta {int(left // 60)}m{int(left % 60):02d}s"
            print(line, flush=True)
            if rows is not None:
                print(metrics_line(path, rows))
                metrics += [rows] if rows else []
    if metrics:
        print(f"metrics: mean over {len(metrics)} color images (PSNR on uint8 RGB at full resolution; "
              f"ab MSE in ab/128 units; colorfulness: Hasler-Suesstrunk on |rg|, |yb|)")
        means = {name: [sum(r[name][k] for r in metrics) / len(metrics) for k in range(3)] for name in metrics[0]}
        for name, (p, m, c) in means.items():  # the originals: only their colorfulness means anything
            print(f"metrics:   {name:<12} " + (f"PSNR {p:6.2f} dB | ab MSE {m:.5f} ({m / means['all-gray'][1]:.2f}x "
                                              f"all-gray) | " if name != "original" else "") + f"colorfulness {c:5.1f}")
        for name in names if len(metrics) > 1 else []:
            print(f"metrics:   {name:<12} {uncertainty(metrics, name)}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # every output is written whole or not at all (data.save_atomic)
        sys.exit("interrupted: the outputs written so far are whole; run it again and they are skipped")
