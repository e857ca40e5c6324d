"""Exercise 2 of the course: teach a small colorizer one photograph by heart.

    python docs/overfit_one_photo.py demo/photos/gnome-faces_tomatoes.jpg
    python docs/overfit_one_photo.py PHOTO --steps 100 --size 128 --width 16 --out runs/overfit.png

The whole idea of the paper in a few lines: the photo becomes Lab, the network
sees L and predicts a*b*, the loss is the MSE between the a*b* it predicts and
the true ones. With one photo to learn and nothing to generalize to, the loss
falls far below the all-gray prediction's within a minute on a laptop, and the
output looks like the original: the model can represent color; whether it can
guess color for photos it never saw is what train.py measures. Writes
gray | prediction | original side by side into --out.
"""
import math
import os
import signal
import sys
import tempfile
import time

# Ctrl-C while torch loads (seconds): one line, no traceback; nothing is written yet
signal.signal(signal.SIGINT, lambda *_: (print("interrupted", file=sys.stderr), os._exit(130)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's files
import data  # noqa: E402
import lab  # noqa: E402
import model  # noqa: E402
import runs  # noqa: E402


runs.exit_on_stop("interrupted: no half-written output is left")  # Ctrl-C, SIGTERM, SIGHUP
parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0])  # a bad flag: one line, exit status 2
parser.add_argument("photo", help="a color photograph")
parser.add_argument("--steps", type=int, default=100, help="optimizer steps")
parser.add_argument("--size", type=int, default=128, help="the photo is center-cropped to this square, a multiple of 8")
parser.add_argument("--width", type=int, default=16, help="channels of the first encoder conv")
parser.add_argument("--lr", type=float, default=3e-3, help="Adam's learning rate")
parser.add_argument("--out", default="overfit.png", help="gray | prediction | original, as a PNG")
parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
args = parser.parse_args()


def training_bytes(width, size):
    """About the memory training takes: 16 bytes per parameter (the weight, its
    gradient, Adam's two moments) and about 40 per pixel and channel of width
    (the activations the backward pass keeps; measured)."""
    with torch.device("meta"):  # the model's shapes, no memory
        net = model.Colorizer(model.ColorizerConfig(global_branch=False, width=width))
    return 16 * sum(p.numel() for p in net.parameters()) + 40 * width * size ** 2


MEMORY_GB = 8  # what a laptop can give: beyond it the machine swaps, or the process is killed
# (estimated where --width and --size are in range: their own lines below say the rest)
need = training_bytes(args.width, args.size) / 2**30 if 2 <= args.width <= 1024 and 16 <= args.size <= 1024 else 0
exists = os.path.lexists(args.out)  # --out: never the photo, never another file unasked
for ok, problem in [  # every flag and file before any work: one line, exit status 2
        (args.steps >= 1, "--steps must be at least 1"),
        (math.isfinite(args.lr) and args.lr > 0, f"--lr must be a positive number, got {args.lr}"),
        # Below 2 the decoder's next-to-last layer (width // 2 channels) has none.
        (2 <= args.width <= 1024, f"--width must be from 2 to 1024, got {args.width}"),
        # At 8 the encoder's last map is 1 x 1: BatchNorm cannot train on one value per channel.
        (16 <= args.size <= 1024 and args.size % 8 == 0, f"--size must be a multiple of 8 from 16 to 1024, "
                                                          f"got {args.size}"),
        (need <= MEMORY_GB, f"--width {args.width} at --size {args.size} needs about {need:.0f} GB to train, "
                            f"more than the {MEMORY_GB} GB this script allows: a smaller --width or --size"),
        (os.path.basename(args.out), f"--out {args.out!r}: give a file name for the PNG"),
        (not os.path.exists(args.out) or not os.path.exists(args.photo) or not os.path.samefile(args.out, args.photo),
         f"--out {args.out}: that is the photo itself"),
        (not exists or os.path.isfile(args.out), f"--out {args.out}: exists and is not a file"),
        (not exists or args.overwrite, f"--out {args.out}: exists (--overwrite replaces it)")]:
    if not ok:
        runs.fail(problem)
rgb = data.center_crop(runs.checked(data.open_image, args.photo)[0], args.size)
if data.is_grayscale(rgb):  # train.py leaves such photos out too
    runs.fail(f"{args.photo}: no color (grayscale) at its center: nothing to learn; give a color photo")
try:  # written to now, not after the training
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tempfile.TemporaryFile(dir=os.path.dirname(args.out) or ".").close()
except OSError as e:
    runs.fail(f"--out {args.out}: cannot write there ({e.strerror or e})")
torch.manual_seed(0)

# The data: one photo, as the network sees it.
pixels = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)[None]  # (1, 3, S, S) uint8
lightness, ab = lab.lab_to_net(lab.rgb_to_lab(pixels))               # (1, 1, S, S), (1, 2, S, S)
gray_mse = ab.pow(2).mean().item()                                    # predicting no color at all

# The model: the paper's colorizer, small, without the Inception branch.
net = model.Colorizer(model.ColorizerConfig(global_branch=False, width=args.width))
optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)

# The loop: predict a*b*, MSE against the truth, one Adam step.
start = time.time()
for step in range(1, args.steps + 1):
    loss = F.mse_loss(net(lightness), ab)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if not math.isfinite(loss.item()):  # diverged: a picture of it would be noise
        runs.fail(f"the loss is {loss.item()} at step {step}: --lr {args.lr} is too high for this photo; try a "
                  f"lower one", status=1)
    if step == 1 or step % max(1, args.steps // 10) == 0:
        print(f"step {step}/{args.steps} | mse {loss.item():.5f} ({loss.item() / gray_mse:.3f}x all-gray) "
              f"| {time.time() - start:.0f} s")

# What it learned: its prediction joined with the photo's own L.
net.eval()  # BatchNorm's running averages, as colorize.py uses the model
with torch.no_grad():
    pred = net(lightness)
    print(f"final, in eval mode: mse {F.mse_loss(pred, ab).item():.5f} (all-gray {gray_mse:.5f})")
    colored = (lab.lab_to_rgb(lab.net_to_lab(lightness, pred))[0] * 255).round().byte().permute(1, 2, 0).numpy()
gray = Image.fromarray((lab.gray_rgb(lightness)[0] * 255).round().byte().permute(1, 2, 0).numpy())  # its own L
sheet = Image.new("RGB", (3 * args.size, args.size))
for k, im in enumerate([gray, Image.fromarray(colored), rgb]):
    sheet.paste(im, (k * args.size, 0))
try:  # written whole or not at all
    runs.save_atomic(lambda f: sheet.save(f, format="PNG"), args.out)
except OSError as e:
    runs.fail(f"--out {args.out}: cannot write there ({e.strerror or e})")
print(f"wrote {args.out}: gray | prediction | original")
