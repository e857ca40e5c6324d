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
import argparse
import os
import signal
import sys
from collections import namedtuple

if __name__ == "__main__":  # Ctrl-C while torch loads (seconds): nothing written yet, no traceback
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import attention_maps  # noqa: E402
import data  # noqa: E402
import lab  # noqa: E402
import model  # noqa: E402
import runs  # noqa: E402
from data import printable  # noqa: E402
from runs import CheckpointError, RunError as ColorizeError  # noqa: E402, F401  (one-line errors, for notebooks)

# The model a fresh clone uses when no checkpoint is given or found (README: The demo model).
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "colorizer.pt")
PAD = 8  # pixels of border added around the network's copy (predict_ab), a multiple of 8
STRIP_ROWS = 256  # full-resolution work runs in strips of rows: bounded memory for any size
MAX_SIZE = 4096  # --size: beyond this the network's copy alone needs gigabytes
# A checkpoint loaded for use: the network, its frozen Inception (or None), the
# short side of the network's copy, the device, the file, and "step N, ...".
LoadedModel = namedtuple("LoadedModel", "net inception size device path summary")

# -----------------------------------------------------------------------------
# 1. The inference path: load, predict a*b* on a small copy, join with the full-resolution L


def load(checkpoint=None, device=None, inception=None):
    """Load a checkpoint once, to colorize many images: colorize(image, load()).
    checkpoint: a file, a train.py run folder, or None: the newest run under
    runs/ or out/, else the bundled demo. device: "cuda", "cpu" or None (CUDA when
    available). inception: Inception-ResNet-v2 weights, if not the cached default."""
    if device is not None and str(device).split(":")[0] not in ("cpu", "cuda"):
        raise ColorizeError(f"device {device!r}: cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ColorizeError(f"device {device!r}, but no CUDA device is available")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    path, ckpt, net = runs.choose_checkpoint(checkpoint, DEMO_CHECKPOINT)  # CheckpointError: one line
    inception_net = runs.inception_for(ckpt, path, inception, device) if net.config.global_branch else None
    size = (ckpt.get("args") or {}).get("size", 256)
    return LoadedModel(net.to(device).eval(), inception_net, size, device, path, runs.describe(ckpt))


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
def predict_ab(loaded, copies, return_attention=False):
    """Same-size PIL RGB copies -> predicted a*b* (B, 2, h, w) in Lab units,
    and the attention weights (B, N, N) over the h/8 x w/8 grid when asked."""
    lightness = lab.l_to_net(lab.rgb_to_l(torch.stack([to_tensor(c) for c in copies]).to(loaded.device)))
    embedding = None if loaded.inception is None else \
        model.inception_embedding(loaded.inception, lab.gray_rgb(lightness))  # (B, 1000)
    # A zero-padded model (the paper's) sees where the edge is and paints a faint
    # colored frame there; it paints it on a border of repeated edge pixels
    # instead, which is cut off again. For a replicate-padded model it changes little.
    lightness = F.pad(lightness, (PAD,) * 4, mode="replicate")       # (B, 1, h + 2P, w + 2P)
    ab, alpha = loaded.net(lightness, embedding, return_attention=True) if return_attention else \
        (loaded.net(lightness, embedding), None)
    ab = ab[:, :, PAD:-PAD, PAD:-PAD]                                  # (B, 2, h, w)
    if alpha is not None:  # keep the attention among the picture's own positions
        B, (gh, gw), p = len(ab), (s // 8 + 2 * PAD // 8 for s in ab.shape[2:]), PAD // 8
        alpha = alpha.view(B, gh, gw, gh, gw)[:, p:-p, p:-p, p:-p, p:-p].reshape(B, (gh - 2 * p) * (gw - 2 * p), -1)
        alpha = alpha / alpha.sum(-1, keepdim=True)                    # (B, N, N), rows sum to 1
    return ab * lab.AB_SCALE, alpha


def full_resolution(rgb, ab_small, device="cpu"):
    """Join the original L of a PIL RGB image with a*b* (2, h, w) resized to its
    size: -> uint8 array (H, W, 3). In strips of rows, so memory stays bounded."""
    W, H = rgb.size
    ab = [np.asarray(Image.fromarray(c.float().cpu().numpy()).resize((W, H), Image.BILINEAR))
          for c in ab_small]                                           # 2 x (H, W)
    src, out = np.asarray(rgb), np.empty((H, W, 3), np.uint8)
    for y in range(0, H, STRIP_ROWS):
        L = lab.rgb_to_l(to_tensor(src[y:y + STRIP_ROWS]).to(device))  # (1, rows, W), 0..100
        ab_rows = torch.from_numpy(np.stack([c[y:y + STRIP_ROWS] for c in ab])).to(device)
        strip = lab.lab_to_rgb(torch.cat([L, ab_rows]))                # (3, rows, W)
        out[y:y + STRIP_ROWS] = (strip * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return out


def predict_all(loaded, images, return_attention=False):
    """For each PIL RGB image: a*b* (2, h, w), attention (N, N) or None, and the
    network's copy; images whose copies share a size go through in one batch."""
    copies = [im.resize(network_size(*im.size, loaded.size), Image.BILINEAR, reducing_gap=3.0) for im in images]
    results, by_size = [None] * len(images), {}
    for i, copy in enumerate(copies):
        by_size.setdefault(copy.size, []).append(i)
    for indices in by_size.values():
        ab, alpha = predict_ab(loaded, [copies[i] for i in indices], return_attention and loaded.net.attention is not None)
        for k, i in enumerate(indices):
            results[i] = (ab[k], None if alpha is None else alpha[k].float().cpu(), copies[i])
    return results


def colorize(image, checkpoint=None, device=None):
    """One image, from Python: a path, a PIL image of any mode or a numpy array -> a PIL image
    at full resolution, RGB, or RGBA when the input has alpha. checkpoint: what
    load() takes, or what it returned. Raises ColorizeError with the one-line
    message the command would print."""
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load(checkpoint, device)
    rgb, alpha = runs.image_input(image)  # a path, a PIL image or an array -> PIL RGB, alpha
    (ab, _, _), = predict_all(loaded, [rgb])
    result = Image.fromarray(full_resolution(rgb, ab, loaded.device))
    if alpha is not None:
        result.putalpha(alpha)
    return result

# -----------------------------------------------------------------------------
# 2. The extras: where the attention looks (drawn by attention_maps.py), and how
#    far the colors beat all-gray (runs.py prints the means and how far they can be trusted)


def image_metrics(result, original):
    """(PSNR dB, a*b* MSE in the network's ab/128 units, colorfulness) of a
    uint8 RGB result (H, W, 3) against the original."""
    pred, true = (to_tensor(x)[None] for x in (result, original))
    ab_pred, ab_true = (lab.rgb_to_lab(x)[:, 1:] / lab.AB_SCALE for x in (pred, true))
    return lab.psnr(pred, true).item(), (ab_pred - ab_true).pow(2).mean().item(), lab.colorfulness(pred).item()


def outputs_for(args, names, path, rgb, alpha, predictions):
    """{suffix: PIL image, or the text of a page} for one image (NAME_color.png
    from the first model, the extras asked for), its metrics (None without --metrics, {} for a gray
    input, else {name: (PSNR, ab MSE, colorfulness)}) and, with --attention,
    a line of statistics of the attention weights printable (else None)."""
    colored = [Image.fromarray(full_resolution(rgb, ab, args.device)) for ab, _, _ in predictions]
    result = colored[0].copy()  # the RGB one is still needed for --compare and --metrics
    if alpha is not None:
        result.putalpha(alpha)
    images, has_color, gray = {"_color.png": result}, not data.is_grayscale(rgb), rgb.convert("L").convert("RGB")
    if args.compare:  # copies: thumbnail() shrinks in place, and --metrics needs the full size
        panels = [p.copy() for p in [gray] + colored + ([rgb] if has_color else [])]
        for p in panels:
            p.thumbnail((1024, 1024))
        labels = ["gray input"] + (names if len(names) > 1 else ["colorized"]) + (["original"] if has_color else [])
        images["_compare.png"] = runs.side_by_side(panels, labels)
    _, attention, copy = predictions[0]
    attention_line = None
    if attention is not None:
        colored_copy = colored[0].resize(copy.size, Image.BILINEAR)
        images["_attention.png"], attention_line = attention_maps.attention_figure(copy, colored_copy, attention)
        images["_attention.html"] = attention_maps.attention_page(colored_copy, attention, os.path.basename(path))
    if not args.metrics or not has_color:
        return images, {} if args.metrics else None, attention_line
    return images, {name: image_metrics(c, rgb) for name, c in zip(names + ["all-gray", "original"],
                                                                   colored + [gray, rgb])}, attention_line

# -----------------------------------------------------------------------------
# 3. The command (the rules for flags, files and output names live in runs.py)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=runs.OUTPUT_NAMES)
    parser.error = runs.fail  # a bad flag value: one line, "error: argument --size: ...", exit status 2
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images or folders (recursive)")
    parser.add_argument("-o", "--out", metavar="DIR", help="write into this folder instead of beside each input")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    flags = parser.add_argument_group("model")
    flags.add_argument("--checkpoint", action="append", metavar="PATH",
                       help="a checkpoint or run folder; default: the newest run under runs/ or out/, else the bundled "
                            "demo. Give it again to compare several side by side")
    flags.add_argument("--inception", metavar="PATH", help="Inception-ResNet-v2 weights, if not the cached default")
    flags.add_argument("--size", type=int, help=f"short side of the network's copy, 8 to {MAX_SIZE} (default: "
                                                "the training size)")
    flags.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="auto: cuda if available")
    flags.add_argument("--batch-size", type=int, help="images per forward pass (default: 8 on CUDA, 1 on the CPU)")
    flags = parser.add_argument_group("extras")
    flags.add_argument("--compare", action="store_true", help="also NAME_compare.png: gray | colorized | original")
    flags.add_argument("--attention", action="store_true", help="also NAME_attention.png, its statistics and NAME_attention.html, "
                       "a page that shows where any point looks")
    flags.add_argument("--metrics", action="store_true", help="PSNR, ab MSE and colorfulness against all-gray")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    try:
        runs.check_colorize_flags(args, MAX_SIZE)  # every flag, before any work
        models, names = runs.load_models(args, load, DEMO_CHECKPOINT)  # the first one writes NAME_color.png
    except runs.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    jobs = runs.OutputPlan(args)  # every input its own outputs; what exists already is skipped
    metrics = []
    for batch in jobs.batches(args.batch_size):  # [(number, path, stem, rgb, alpha)]
        predictions = [predict_all(m, [item[3] for item in batch], args.attention) for m in models]
        for i, (number, path, stem, rgb, alpha) in enumerate(batch):
            images, scores, attention_line = outputs_for(args, names, path, rgb, alpha, [p[i] for p in predictions])
            if not jobs.write(number, path, stem, images):
                continue
            if attention_line:
                print(f"attention: {printable(path)}: {attention_line}")
            if scores is not None:
                print(runs.metrics_line(path, scores))
                metrics += [scores] if scores else []
    if metrics:
        runs.print_means(metrics, names)
    return 1 if jobs.failed else 0


if __name__ == "__main__":
    sys.exit(runs.run_command(main))  # Ctrl-C, SIGTERM: outputs whole or not at all, exit status 130
