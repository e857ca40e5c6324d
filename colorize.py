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
import signal
import sys
import tempfile
from collections import namedtuple

if __name__ == "__main__":  # Ctrl-C while torch loads (seconds): nothing written yet, no traceback
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import data  # noqa: E402
import lab  # noqa: E402
import model  # noqa: E402
import outputs  # noqa: E402
import runs  # noqa: E402
from data import printable  # noqa: E402
from inception import inception_embedding, open_inception  # noqa: E402
from runs import CheckpointError, RunError as ColorizeError  # noqa: E402  (one-line errors, for notebooks)

# The model a fresh clone uses when no checkpoint is given or found (README: The demo model).
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "colorizer.pt")
PAD = 8  # pixels of border added around the network's copy (predict_ab), a multiple of 8
STRIP_ROWS = 256  # full-resolution work runs in strips of rows: bounded memory for any size
MAX_ATTENTION_SIZE = 512  # --attention: a 4:1 panorama at 512 px is 16384 positions, 1 GB of weights
SLOW_ATTENTION_SIZE = 1024  # above it, attention's N^2 work takes minutes a photo on a CPU: said
# A checkpoint loaded for use: the network, its frozen Inception (or None), the
# short side of the network's copy, the device, the file, and "step N, ...".
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
    if device is not None and str(device).split(":")[0] not in ("cpu", "cuda"):
        raise ColorizeError(f"device {device!r}: cpu or cuda")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ColorizeError(f"device {device!r}, but no CUDA device is available")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net, ckpt, path = runs.open_colorizer(checkpoint, DEMO_CHECKPOINT)
    inception_net = None
    if net.config.global_branch:  # a file other than the one it was trained with is a warning here (inception.py)
        try:
            inception_net, _, warning = open_inception(inception or "auto", ckpt.get("inception"), strict=False)
        except (ValueError, RuntimeError) as e:  # the download advice names train.py's flags: cut it
            reason = str(e).splitlines()[0].removesuffix(" Download").rstrip(".")
            raise CheckpointError(f"{printable(path)} needs the Inception-ResNet-v2 weights it was trained with "
                                  f"({reason}); give them with --inception PATH") from None
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        inception_net = inception_net.to(device)
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


@torch.no_grad()
def predict_ab(loaded, copies, return_attention=False):
    """Same-size PIL RGB copies -> predicted a*b* (B, 2, h, w) in Lab units,
    and the attention weights (B, N, N) over the h/8 x w/8 grid when asked."""
    lightness = lab.l_to_net(lab.rgb_to_l(torch.stack([data.to_tensor(c) for c in copies]).to(loaded.device)))
    embedding = None if loaded.inception is None else \
        inception_embedding(loaded.inception, lab.gray_rgb(lightness))  # (B, 1000)
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
        L = lab.rgb_to_l(data.to_tensor(src[y:y + STRIP_ROWS]).to(device))  # (1, rows, W), 0..100
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
    try:
        rgb, alpha = data.image_input(image)  # a path, a PIL image or an array -> PIL RGB, alpha
    except ValueError as e:
        raise ColorizeError(str(e)) from None
    (ab, _, _), = predict_all(loaded, [rgb])
    result = Image.fromarray(full_resolution(rgb, ab, loaded.device))
    if alpha is not None:
        result.putalpha(alpha)
    return result

# -----------------------------------------------------------------------------
# 3. The command: flags checked before any work, models said, every input its own outputs


def parse(argv):
    parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=outputs.OUTPUT_NAMES)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images or folders (recursive)")
    parser.add_argument("-o", "--out", metavar="DIR", help="write into this folder instead of beside each input")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    flags = parser.add_argument_group("model")
    flags.add_argument("--checkpoint", action="append", metavar="PATH",
                       help="a checkpoint or run folder; default: the newest run under runs/ or out/, else the "
                            "bundled demo. Give it again to compare several side by side")
    flags.add_argument("--inception", metavar="PATH", help="Inception-ResNet-v2 weights, if not the cached default")
    flags.add_argument("--size", type=int, help=f"short side of the network's copy, 8 to {runs.MAX_SIZE} "
                                                "(default: the training size)")
    flags.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="auto: cuda if available")
    flags.add_argument("--batch-size", type=int, help="images per forward pass (default: 8 on CUDA, 1 on the CPU)")
    flags = parser.add_argument_group("extras")
    flags.add_argument("--compare", action="store_true", help="also NAME_compare.png: gray | colorized | original")
    flags.add_argument("--attention", action="store_true", help="also NAME_attention.png, its statistics and "
                       "NAME_attention.html, a page that shows where any point looks")
    flags.add_argument("--metrics", action="store_true", help="PSNR, ab MSE and colorfulness against all-gray")
    return parser.parse_args(argv)


def check_flags(args):
    """The flags and --out, before any work: the first problem, one line, exit
    status 2. Sets args.device and args.batch_size."""
    for ok, problem in [
            (args.size is None or 8 <= args.size <= runs.MAX_SIZE,
             f"--size {args.size}: must be 8 to {runs.MAX_SIZE} (the short side, in pixels, the network sees)"),
            (args.batch_size is None or args.batch_size >= 1, f"--batch-size {args.batch_size}: must be 1 or more"),
            (args.device != "cuda" or torch.cuda.is_available(), "--device cuda, but no CUDA device is available"),
            (not (args.out and runs.not_a_folder(args.out)),
             f"--out {printable(args.out or '')}: {runs.not_a_folder(args.out or '.')}"),
            ("" not in [args.out, args.inception, *(args.checkpoint or [])],
             "--out, --checkpoint and --inception take a path: an empty one was given")]:
        if not ok:
            runs.fail(problem)
    if args.out:
        try:  # made and written to now, not found out after the first image (os.access says yes to root)
            os.makedirs(args.out, exist_ok=True)
            tempfile.TemporaryFile(dir=args.out).close()
        except OSError as e:
            runs.fail(f"--out {printable(args.out)}: cannot write there ({e.strerror or e})")
    args.device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    args.batch_size = args.batch_size or (8 if args.device == "cuda" else 1)


def load_models(args):
    """load() for each --checkpoint (or the default), each said in one line,
    with its name for --compare and --metrics. -> (models, names)."""
    models, names = [], []
    for checkpoint in args.checkpoint or [None]:
        try:
            loaded = load(checkpoint, args.device, args.inception)
        except ColorizeError as e:
            runs.fail(e)
        size = args.size or loaded.size  # what the network will see: --size, else the checkpoint's own
        if args.attention and size > MAX_ATTENTION_SIZE:  # N x N float32 weights of a 4:1 copy: size^4 / 256 bytes
            runs.fail(f"--attention with {'--size' if args.size else printable(loaded.path) + ', trained at'} {size}: "
                      f"its N x N attention weights would take up to {size ** 4 / 256 / 2**30:.0f} GB; "
                      f"--size {MAX_ATTENTION_SIZE} or less with --attention")
        if loaded.net.attention is not None and args.device == "cpu" and size > SLOW_ATTENTION_SIZE:
            print(f"note: {printable(loaded.path)} at a short side of {size}: its attention compares each of "
                  f"{(size // 8) ** 2}+ positions with every other, minutes a photo on the CPU; --size "
                  f"{SLOW_ATTENTION_SIZE // 2} is 16 times less work", file=sys.stderr)
        if loaded.path == DEMO_CHECKPOINT and not args.checkpoint:
            print("using the bundled demo model demo/colorizer.pt (trained on 229 photos on a GPU, then on 262 "
                  f"on a CPU; a run of train.py into {runs.SEARCHED} here is used instead)", file=sys.stderr)
        found = "" if args.checkpoint or loaded.path == DEMO_CHECKPOINT else \
            f"; the newest run under {runs.SEARCHED}, --checkpoint PATH chooses another"
        print(f"checkpoint: {printable(loaded.path)} ({loaded.summary}{found})", file=sys.stderr)
        names.append(outputs.model_name(loaded.path, names, len(args.checkpoint or []) > 1))
        models.append(loaded._replace(size=size))
    if args.attention and models[0].net.attention is None:
        print(f"note: {printable(models[0].path)} is a baseline model without attention; no attention maps",
              file=sys.stderr)
    return models, names


def main(argv=None):
    """colorize.py: 0 when every input was colorized, 1 when one failed (said,
    and the others done), 2 for a bad flag or checkpoint (one line), 130 after
    Ctrl-C, SIGTERM or SIGHUP, which stop it as KeyboardInterrupt does, so that
    a save in flight removes its temporary file and every output is whole;
    141 when its standard output is a pipe whose reader left."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    runs.on_stop_signals(interrupt)
    try:
        args = parse(argv)
        check_flags(args)
        models, names = load_models(args)  # the first one writes NAME_color.png
        jobs = outputs.OutputPlan(args)  # every input its own outputs; what exists already is skipped
        metrics = []
        for batch in jobs.batches(args.batch_size):  # [(number, path, stem, rgb, alpha)]
            predictions = [predict_all(m, [item[3] for item in batch], args.attention) for m in models]
            for i, (number, path, stem, rgb, alpha) in enumerate(batch):
                colored = [Image.fromarray(full_resolution(rgb, p[i][0], args.device)) for p in predictions]
                # all-gray, for --compare and --metrics: the input's own L with a*b* = 0, what every model keeps
                gray = Image.fromarray(full_resolution(rgb, torch.zeros(2, 1, 1), args.device)) \
                    if args.compare or args.metrics else None
                images, scores, attention_line = outputs.outputs_for(args, names, path, rgb, alpha, colored, gray,
                                                                     predictions[0][i])
                if not jobs.write(number, path, stem, images):
                    continue
                if attention_line:
                    print(f"attention: {printable(path)}: {attention_line}")
                if scores is not None:
                    print(outputs.metrics_line(path, scores))
                    metrics += [scores] if scores else []
        if metrics:
            outputs.print_means(metrics, names)
        return 1 if jobs.failed else 0
    except KeyboardInterrupt:
        print("interrupted: the outputs written so far are whole; run it again and they are skipped",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `colorize.py DIR | head`: the reader left; nothing is written while printing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exit's flush is quiet too
        print("stopped: standard output was closed; the outputs written so far are whole", file=sys.stderr)
        return 141


if __name__ == "__main__":
    sys.exit(main())
