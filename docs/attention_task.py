"""The attention task: a color that only attention can find.

    python docs/attention_task.py                 # baseline and attention: about 75 s on two cores
    python docs/attention_task.py --near          # the counter-experiment: the cue next to the disk
    python docs/attention_task.py --coords on     # both models with CoordConv
    python docs/attention_task.py --mine          # with your functions of docs/exercises/exercises.py

Each generated 64 x 256 picture holds a striped square near its left edge (the
cue) and a disk far to the right. The disk is red when the stripes run
across, green when they run up and down; both colors have the same L, so the
disk's own pixels say nothing about its color. Everything else is gray.
A convolutional colorizer sees only a window around each pixel (its receptive
field, computed below). The cue lies farther from the disk than that, so the
baseline cannot know the color and does best by painting the disk the mean
of the two, a dull orange. Attention lets the disk's positions look at the whole
picture, the cue included. Both models train on the same batches from the
same seed; the last line says how far each is from all-gray on the disk.
Writes --out DIR/attention_task.png (held-out examples and where a disk position
looks) and DIR/attention_task.html (the attention explorer of one of them).
"""
import os, sys, traceback  # noqa: E401
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the repository's files
import runs  # noqa: E402  (first: a Ctrl-C while torch loads stops in one line)
import torch, torch.nn.functional as F  # noqa: E401,E402
from PIL import Image  # noqa: E402
import attention_maps, lab, model, outputs  # noqa: E401,E402

H, W = 64, 256        # the picture; the network's grid is H/8 x W/8 = 8 x 32
CUE, RADIUS = 32, 16  # the striped square's side, the disk's radius (px)
DISK_L = 60.0         # the disk's lightness, the same for both classes
CUE_X, DISK_X = (0, 8), (170, W - RADIUS - 4)  # where the cue's left edge and the disk's centre may be
FAR = DISK_X[0] - RADIUS - CUE_X[1] - CUE      # the least gap between them: 114 px
# a*b* of class 0 (stripes across: red) and class 1 (up and down: green), both in gamut at L 60.
# Not opposite: their mean, the best a model blind to the cue can do, is a dull orange, which scores
# 45^2 / (45^2 + 26^2) = 0.75x all-gray: the baseline too has to find the disk to get there.
COLORS = torch.tensor([[45.0, 26.0], [-45.0, 26.0]])
HELD_OUT_SEED = 1_000_000  # the measurement's pictures; --seed stays below it


runs.exit_on_stop("interrupted: no half-written output is left")  # Ctrl-C, SIGTERM, SIGHUP
runs.quiet_when_piped()  # `attention_task.py | head`
parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0])  # a bad flag: one line, exit status 2
parser.add_argument("--seed", type=runs.number_in(int, 0, HELD_OUT_SEED - 1), default=0,
                    help="the models' initialization and the training batches")
parser.add_argument("--steps", type=runs.number_in(int, 1, 100_000), default=400, help="optimizer steps for each model")
# Below 4 the decoder's last hidden layer (width // 2 channels) has one channel, and
# one channel cannot carry gray, red and green: they do not lie on one line in a*b*.
parser.add_argument("--width", type=runs.number_in(int, 4, 256), default=16, help="channels of the first encoder conv")
parser.add_argument("--coords", choices=["on", "off"], default="off", help="CoordConv, for both models")
parser.add_argument("--near", action="store_true", help="put the cue next to the disk, inside the receptive field")
parser.add_argument("--out", default="runs/attention-task", help="folder for attention_task.png and .html")
parser.add_argument("--overwrite", action="store_true", help="replace earlier output files")
parser.add_argument("--mine", action="store_true", help="use your functions of docs/exercises/exercises.py")
args = parser.parse_args()
files = [os.path.join(args.out, "attention_task" + ext) for ext in (".png", ".html")]
runs.new_files(files, args.overwrite)  # refused now, not after minutes of training

# -----------------------------------------------------------------------------
# 1. The data: pictures made on the fly, in Lab


def make_batch(n, generator):
    """n pictures: lightness (n, 1, H, W) and a*b* (n, 2, H, W) in the network's
    units, the disk's and the cue's pixels (n, H, W) each, the class (n,) and
    the disk's centre (x, y) (n, 2)."""
    def draw(lo, hi):  # n whole numbers from lo to hi, one per picture: (n, 1, 1)
        return torch.randint(lo, hi + 1, (n, 1, 1), generator=generator)

    label = draw(0, 1)                                            # both classes equally likely
    disk_x, disk_y = draw(*DISK_X), draw(RADIUS + 2, H - RADIUS - 3)
    # Far: the cue near the left edge, FAR px or more from the disk. Near: 2-8 px left of the disk.
    cue_x = disk_x - RADIUS - CUE - draw(2, 8) if args.near else draw(*CUE_X)
    cue_y = draw(0, H - CUE)
    ys, xs = torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W)
    L = (50 + 10 * torch.randn(n, H, W, generator=generator)).clamp(0, 100)  # gray noise
    in_cue = (xs >= cue_x) & (xs < cue_x + CUE) & (ys >= cue_y) & (ys < cue_y + CUE)
    along = torch.where(label == 0, ys - cue_y, xs - cue_x)      # (n, H, W): class 0's stripes run across
    L = torch.where(in_cue, 20 + 60 * (along // 4 % 2), L)        # stripes 4 px wide, L 20 and 80
    disk = (xs - disk_x) ** 2 + (ys - disk_y) ** 2 <= RADIUS ** 2  # (n, H, W)
    L = torch.where(disk, DISK_L, L)
    ab = torch.where(disk[:, None], COLORS[label[:, 0, 0]][:, :, None, None], 0.0)  # (n, 2, H, W)
    centre = torch.cat([disk_x, disk_y], dim=2)[:, 0]               # (n, 2)
    return lab.l_to_net(L[:, None]), ab / lab.AB_SCALE, disk, in_cue, label.flatten(), centre


def picture(lightness, ab):
    """(1, H, W) and (2, H, W) in network units -> a PIL RGB picture."""
    rgb = lab.lab_to_rgb(lab.net_to_lab(lightness, ab))          # (3, H, W) in [0, 1]
    return Image.fromarray(lab.to_uint8(rgb).permute(1, 2, 0).numpy())


# -----------------------------------------------------------------------------
# 2. The models (with --mine, your functions inside them), and the receptive field


def make_net(variant, width=args.width):
    torch.manual_seed(args.seed)
    return model.Colorizer(model.ColorizerConfig(variant=variant, coords=args.coords == "on",
                                                 global_branch=False, width=width))


loss_fn = F.mse_loss
if args.mine:  # your functions take the place of the model's own
    sys.path.insert(0, os.path.join(HERE, "exercises"))
    try:
        import exercises
        functions = [getattr(exercises, name) for name in
                     ("coord_channels", "attention_forward", "fusion_forward", "colorization_loss")]
    except Exception as e:  # not there, it does not run, or a function is missing
        runs.fail(f"--mine: docs/exercises/exercises.py: {type(e).__name__}: {e}; run python docs/exercises/check.py")
    # In that order: Encoder.forward looks coord_channels up at each call; the forwards take (self, ...)
    model.coord_channels, model.Attention.forward, model.Fusion.forward, loss_fn = functions
    # A tiny model through both attention paths and the loss: an unwritten
    # exercise stops the script here, not after the first model's training.
    probe, tiny = make_net("attention", width=2), torch.zeros(1, 1, 16, 16)
    try:
        with torch.no_grad():
            loss_fn(probe(tiny, return_attention=True)[0], probe(tiny))
    except NotImplementedError as e:  # raised by the stub itself: the last function of the traceback
        runs.fail(f"--mine: {traceback.extract_tb(e.__traceback__)[-1].name} of docs/exercises/exercises.py is not "
                  "written yet; run python docs/exercises/check.py")


# Which input pixels can change one output pixel? Those where its gradient is
# nonzero. Random weights are enough for that, with every ReLU taken out (the fusion's
# too): an untrained layer of few channels (a small --width) can have every ReLU off at
# a pixel, and then no gradient gets through at all. Eval mode, so that BatchNorm's
# batch statistics do not tie every pixel to every other. At 320 x 320 it stays clear of the edges.
wiring = make_net("baseline").eval()
for relu in [m for m in wiring.modules() if isinstance(m, torch.nn.ReLU)]:
    relu.forward = lambda x: x
wiring.fusion.forward = lambda feats, embedding: wiring.fusion.conv(feats)  # its F.relu left out
x = torch.randn(1, 1, 320, 320, requires_grad=True)
wiring(x)[0, :, 160, 160].sum().backward()
ys, xs = torch.nonzero(x.grad[0, 0], as_tuple=True)             # the pixels that matter
print(f"receptive field: {ys.max() - ys.min() + 1} x {xs.max() - xs.min() + 1} px "
      f"(computed: gradient of one output pixel)")
print(f"it reaches {160 - xs.min()} px left and {xs.max() - 160} px right of its pixel; the cue is "
      + ("2-8 px from the disk (--near)" if args.near else f"at least {FAR} px from the disk"))

# -----------------------------------------------------------------------------
# 3. Training: the same batches, in the same order, for both models


def train(variant):
    net = make_net(variant)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    # The rate rises over the first 100 steps. At full rate from the start, the rush to turn the
    # random first colors gray can kill all of the decoder's last ReLUs, and then the picture stays gray.
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 100))
    stream = torch.Generator().manual_seed(args.seed)          # the same pictures for both models
    for step in range(1, args.steps + 1):
        lightness, ab = make_batch(16, stream)[:2]                # (16, 1, H, W), (16, 2, H, W)
        loss = loss_fn(net(lightness), ab)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warmup.step()
        if step == 1 or step % max(1, args.steps // 4) == 0:
            print(f"{variant} step {step}/{args.steps} | loss {loss.item():.5f}")
    return net.eval()  # BatchNorm's running averages from here on


nets = {variant: train(variant) for variant in ("baseline", "attention")}

# -----------------------------------------------------------------------------
# 4. Measurement: MSE on the disks of 128 held-out pictures, against all-gray

lightness, ab, disk, cue, label, centre = make_batch(128, torch.Generator().manual_seed(HELD_OUT_SEED))
with torch.no_grad():
    preds = {variant: net(lightness) for variant, net in nets.items()}  # (128, 2, H, W) each
    alpha = nets["attention"](lightness, return_attention=True)[1]  # (128, N, N), N = 8 * 32
gray_mse = ab.pow(2).sum(1)[disk].mean()                         # all-gray predicts a*b* = 0
ratio = {variant: ((pred - ab).pow(2).sum(1)[disk].mean() / gray_mse).item() for variant, pred in preds.items()}

# Where does the disk's centre look? Its row of alpha, and the grid cells that are mostly cue.
grid = (H // 8, W // 8)
query = (centre[:, 1] // 8) * grid[1] + centre[:, 0] // 8       # (128,) the centre's cell, row by row
looks = alpha[torch.arange(len(query)), query]                   # (128, N), each row sums to 1
on_cue = F.avg_pool2d(cue[:, None].float(), 8).flatten(1) > 0.5  # (128, N)
for c, name in enumerate(["red", "green"]):
    share, peak = (looks * on_cue).sum(1)[label == c].mean(), looks[label == c].max(1).values.mean() * looks.shape[1]
    print(f"{name} disks: their centre's attention puts {share:.1%} of its weight on the cue "
          f"(uniform: {on_cue[label == c].float().mean():.1%}), {peak:.1f}x uniform at its peak")

# -----------------------------------------------------------------------------
# 5. The figure and the explorer page


# Four held-out pictures, two of each class, one row each: five captioned panels.
examples = [i for c in (0, 1) for i in torch.nonzero(label == c).flatten()[:2].tolist()]
rows = []
for i in examples:
    gray = picture(lightness[i], torch.zeros(2, H, W))
    heat = attention_maps.heat_panel(gray, looks[i], grid, peak=16, query=tuple((centre[i] // 8).tolist()))
    truth = "truth (stripes across: red)" if label[i] == 0 else "truth (stripes up and down: green)"
    panels = {"gray input": gray, **{variant: picture(lightness[i], pred[i]) for variant, pred in preds.items()},
              truth: picture(lightness[i], ab[i]),
              f"disk centre looks: peak {looks[i].max() * looks.shape[1]:.1f}x uniform": heat}
    rows.append(outputs.side_by_side(list(panels.values()), list(panels)))
sheet = Image.new("RGB", (rows[0].width, len(rows) * (rows[0].height + 6) - 6), "white")
for k, row in enumerate(rows):
    sheet.paste(row, (0, k * (row.height + 6)))
i = examples[0]
page = attention_maps.attention_page(picture(lightness[i], preds["attention"][i]), alpha[i],
                                     "The attention task (the attention model)")
runs.write_new(files[0], lambda f: sheet.save(f, format="PNG"), args.overwrite)  # each whole, or not at all
runs.write_new(files[1], lambda f: f.write(page.encode("utf-8")), args.overwrite)
print(f"wrote {files[0]} and {files[1]}")
print(f"baseline {ratio['baseline']:.2f}x all-gray, attention {ratio['attention']:.2f}x all-gray")
