"""Colorize photographs at their own resolution with a trained checkpoint.

    python colorize.py old_photo.jpg                 # writes old_photo_color.png beside it
    python colorize.py scans/ -o colored/ --compare  # a folder, recursively
    python colorize.py photo.jpg --attention         # also: where the model looks

The network sees a resized copy (short side = the checkpoint's training size)
and predicts its a*b*; they are resized bilinearly to the original size and
joined with the original full-resolution L, so the detail of the output is the
detail of the input. The checkpoint carries its own config: no architecture
flags. From Python (a notebook): colorize.colorize("photo.jpg") returns a PIL
image; colorizer = colorize.load() once, then colorize.colorize(image, colorizer).
"""
import os
import sys
from collections import namedtuple

import runs  # first: a Ctrl-C while torch loads (seconds) stops in one line
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import data
import lab
import outputs
from data import printable
from inception import inception_embedding, open_inception
from runs import CheckpointError, RunError as ColorizeError  # one-line errors, for notebooks

# The model a fresh clone uses when no checkpoint is given or found (README: The demo model).
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "colorizer.pt")
PAD = 8  # pixels of border added around the network's copy (predict_ab), a multiple of 8
STRIP_ROWS = 256  # full-resolution work runs in strips of rows: bounded memory for any size
# A checkpoint loaded: the network, its frozen Inception or None, the short side of its copy, device, file, "step N".
LoadedModel = namedtuple("LoadedModel", "net inception size device path summary")


# -----------------------------------------------------------------------------
# 1. The inference path: load, predict a*b* on a small copy, join with the full-resolution L

def load(checkpoint=None, device=None, inception=None):
    """Load a checkpoint once, to colorize many images: colorize(image, load()).
    checkpoint: a file, a train.py run folder, or None: the newest run under
    runs/ or out/, else the bundled demo. device: "cuda", "cpu" or None (CUDA when
    available). inception: Inception-ResNet-v2 weights, if not the cached default.
    CheckpointError with one line; for a checkpoint found by the search, it
    says so and how to choose another."""
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, TypeError):
        raise ColorizeError(f"device {printable(str(device))[:40]}: cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise ColorizeError(f"device {device}: cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ColorizeError(f"device {device}, but no CUDA device is available")
    net, ckpt, path = runs.open_colorizer(checkpoint, DEMO_CHECKPOINT)
    inception_net = None
    if net.config.global_branch:  # a file other than the one it was trained with is a warning here (inception.py)
        try:
            inception_net, _, warning = open_inception(inception or "auto", ckpt.get("inception"), strict=False)
        except (ValueError, RuntimeError) as e:  # the download advice names train.py's flags: cut it
            raise CheckpointError(f"{printable(path)} needs the Inception-ResNet-v2 weights it was trained with "
                                  f"({str(e).split('; download ')[0]}); give them with --inception PATH") from None
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        inception_net = inception_net.to(device)
    size = (ckpt.get("args") or {}).get("size", 256)
    return LoadedModel(net.to(device).eval(), inception_net, size, device, path, runs.describe(ckpt))


def network_size(width, height, short):
    """(w, h) of the network's copy: short side `short`, aspect kept (long side at most 4x), multiples of 8."""
    scale = min(short / min(width, height), 4 * short / max(width, height))
    return max(8, round(width * scale / 8) * 8), max(8, round(height * scale / 8) * 8)


@torch.no_grad()
def predict_ab(loaded, copies, return_attention=False):
    """Same-size PIL RGB copies -> predicted a*b* (B, 2, h, w) in Lab units,
    and the attention weights (B, N, N) over the h/8 x w/8 grid when asked."""
    rgb = torch.stack([data.to_tensor(c) for c in copies]).to(loaded.device)  # (B, 3, h, w) uint8
    lightness = lab.l_to_net(lab.rgb_to_l(rgb))                      # (B, 1, h, w) in [-1, 1]
    embedding = None if loaded.inception is None else \
        inception_embedding(loaded.inception, lab.gray_rgb(lightness))       # (B, 1000)
    # A zero-padded model (the paper's) sees where the edge is and paints a faint colored frame there; it
    # paints it on a border of repeated edge pixels instead, cut off again (a replicate-padded model: little change).
    lightness = F.pad(lightness, (PAD,) * 4, mode="replicate")       # (B, 1, h + 2P, w + 2P)
    ab, alpha = loaded.net(lightness, embedding, return_attention=True) if return_attention else \
        (loaded.net(lightness, embedding), None)
    ab = ab[:, :, PAD:-PAD, PAD:-PAD]                                  # (B, 2, h, w)
    if alpha is not None:  # keep the attention among the picture's own positions, not the border's
        B, gh, gw, cut = len(ab), ab.shape[2] // 8, ab.shape[3] // 8, PAD // 8  # the picture's grid, border cells
        alpha = alpha.view(B, gh + 2 * cut, gw + 2 * cut, gh + 2 * cut, gw + 2 * cut)  # (B, query y, x, key y, x)
        alpha = alpha[:, cut:-cut, cut:-cut, cut:-cut, cut:-cut].reshape(B, gh * gw, gh * gw)  # (B, N, N), N = gh * gw
        alpha = alpha / alpha.sum(-1, keepdim=True)                    # rows sum to 1 again
    return ab * lab.AB_SCALE, alpha


def predict_all(loaded, images, return_attention=False):
    """For each PIL RGB image: a*b* (2, h, w), attention (N, N) or None, and the
    network's copy; images whose copies share a size go through in one batch."""
    copies = [im.resize(network_size(*im.size, loaded.size), Image.BILINEAR, reducing_gap=3.0) for im in images]
    results = {}
    for size in dict.fromkeys(copy.size for copy in copies):  # each size once, in order
        indices = [i for i, copy in enumerate(copies) if copy.size == size]
        ab, alpha = predict_ab(loaded, [copies[i] for i in indices], return_attention)  # a baseline's alpha: None
        for k, i in enumerate(indices):
            results[i] = (ab[k], None if alpha is None else alpha[k].float().cpu(), copies[i])
    return [results[i] for i in range(len(images))]


def full_resolution(rgb, ab_small, device="cpu"):
    """Join the original L of a PIL RGB image with a*b* (2, h, w) resized to its
    size: -> PIL RGB at full size. In strips of rows, so memory stays bounded."""
    W, H = rgb.size
    ab = [np.asarray(Image.fromarray(c.float().cpu().numpy()).resize((W, H), Image.BILINEAR))
          for c in ab_small]                                           # 2 x (H, W)
    src, out = np.asarray(rgb), np.empty((H, W, 3), np.uint8)
    for y in range(0, H, STRIP_ROWS):
        L = lab.rgb_to_l(data.to_tensor(src[y:y + STRIP_ROWS]).to(device))  # (1, rows, W), 0..100
        ab_rows = torch.from_numpy(np.stack([c[y:y + STRIP_ROWS] for c in ab])).to(device)  # (2, rows, W)
        strip = lab.to_uint8(lab.lab_to_rgb(torch.cat([L, ab_rows])))  # (3, rows, W)
        out[y:y + STRIP_ROWS] = strip.permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(out)


def colorize(image, checkpoint=None, device=None):
    """One image, from Python: a path, a PIL image of any mode or a numpy array
    -> PIL RGB at full resolution, RGBA when it has alpha. checkpoint: what
    load() takes, or what it returned. ColorizeError: the command's one line."""
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load(checkpoint, device)
    try:
        rgb, alpha = data.image_input(image)  # a path, a PIL image or an array -> PIL RGB, alpha
    except ValueError as e:
        raise ColorizeError(str(e)) from None
    (ab, _, _), = predict_all(loaded, [rgb])
    result = full_resolution(rgb, ab, loaded.device)
    if alpha is not None:
        result.putalpha(alpha)
    return result


# -----------------------------------------------------------------------------
# 2. The command: load -> predict -> full resolution -> save, for every input (outputs.py: the rest)

def main(argv=None):
    """colorize.py: exit status 0 when every input was colorized, 1 when one
    failed (said, the rest done), 2 for a bad flag or checkpoint (one line), 3
    when nothing was written as every output existed (said, with what to do),
    130 when stopped by Ctrl-C, SIGTERM or SIGHUP (a save in flight removes its
    temporary file: every output is whole), 141 when its reader left."""
    runs.exit_on_stop("interrupted: the outputs written so far are whole; run it again and they are skipped")
    try:
        args = outputs.command_line(argv, __doc__)  # the flags and --out, checked before any work
        plan = outputs.OutputPlan(args)  # every input its own outputs; what exists already is kept
        try:  # each model said in one line; the first one writes NAME_color.png
            models = [plan.use(load(path, args.device, args.inception), DEMO_CHECKPOINT)
                      for path in args.checkpoint or [None]]
        except ColorizeError as e:
            runs.fail(e)
        for batch in plan.batches(args.batch_size):  # [outputs.Input(number, path, stem, rgb, alpha, todo)]
            predictions = [predict_all(m, [job.rgb for job in batch], args.attention) for m in models]
            for i, job in enumerate(batch):
                colored = [full_resolution(job.rgb, p[i][0], args.device) for p in predictions]
                # all-gray, for --compare and --metrics: the input's own L with a*b* = 0, what every model keeps
                gray = full_resolution(job.rgb, torch.zeros(2, 1, 1), args.device) if plan.needs_gray else None
                plan.save(job, colored, gray, predictions[0][i])
        return plan.finish()
    except BrokenPipeError:  # `colorize.py DIR | head`: the reader left; nothing is written while printing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's flush is quiet too
        print("stopped: standard output was closed; the outputs written so far are whole", file=sys.stderr)
        return 141


if __name__ == "__main__":
    sys.exit(main())
