"""Exercise 2 of the course: teach a small colorizer one photo by heart; gray | prediction | original to --out.

    python docs/overfit_one_photo.py demo/photos/gnome-faces_tomatoes.jpg --out runs/overfit.png

The method is the function overfit: Lab, L in, a*b* out, MSE on a*b*. On one photo the loss falls far below all-gray's
in a minute: the model can represent color; whether it can guess colors it never saw is what train.py measures."""
import os, sys  # noqa: E401
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's files
import runs  # noqa: E402  (first: a Ctrl-C while torch loads stops in one line)
import torch, torch.nn.functional as F  # noqa: E401,E402
from PIL import Image  # noqa: E402
import data, lab, model  # noqa: E401,E402


def overfit(pixels, steps, width, lr):
    """The method. pixels: a square color photo (3, S, S) uint8 -> gray | prediction | original, one picture (PIL)."""
    torch.manual_seed(0)
    pixels = pixels[None]                                   # (1, 3, S, S)
    lightness, ab = lab.lab_to_net(lab.rgb_to_lab(pixels))  # the input (1, 1, S, S), the target (1, 2, S, S)
    gray_mse = ab.pow(2).mean().item()                      # all-gray's MSE: predicting no color at all
    net = model.Colorizer(model.ColorizerConfig(global_branch=False, width=width))  # the paper's, small, no Inception
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for step in range(1, steps + 1):                        # predict a*b*, MSE against the truth, one Adam step
        loss = F.mse_loss(net(lightness), ab)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if not loss.isfinite():                             # diverged: a picture of it would be noise
            runs.fail(f"the loss is {loss.item()} at step {step}: --lr {lr} is too high for this photo", status=1)
        if step == 1 or step % max(1, steps // 10) == 0:
            print(f"step {step}/{steps} | mse {loss.item():.5f} ({loss.item() / gray_mse:.3f}x all-gray)")
    with torch.no_grad():                                   # eval: BatchNorm's running averages, as colorize.py
        pred = net.eval()(lightness)
    print(f"final, in eval mode: mse {F.mse_loss(pred, ab).item():.5f} (all-gray {gray_mse:.5f})")
    colored = lab.lab_to_rgb(lab.net_to_lab(lightness, pred))  # (1, 3, S, S) in [0, 1]
    sheet = torch.cat([lab.to_uint8(lab.gray_rgb(lightness)), lab.to_uint8(colored), pixels], dim=3)  # (1, 3, S, 3S)
    return Image.fromarray(sheet[0].permute(1, 2, 0).numpy())


runs.exit_on_stop("interrupted: no half-written output is left")  # Ctrl-C, SIGTERM, SIGHUP: one line, 130
runs.quiet_when_piped()
parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0])  # a bad flag: one line, exit status 2
parser.add_argument("photo", help="a color photograph")
parser.add_argument("--steps", type=runs.number_in(int, 1, 10**6), default=100)
parser.add_argument("--size", type=runs.number_in(int, 16, 512, multiple=8), default=128)  # within a laptop's memory
parser.add_argument("--width", type=runs.number_in(int, 2, 128), default=16)  # channels of the first conv
parser.add_argument("--lr", type=runs.number_in(float, 0, low_open=True), default=3e-3)
parser.add_argument("--out", default="overfit.png", help="gray | prediction | original, as a PNG")
parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
args = parser.parse_args()
photo = data.ImageFolder([args.photo], args.size, train=False)  # as train.py validates: the center crop, in color
pixels = runs.checked(photo.__getitem__, 0)[0]             # (3, S, S) uint8; unreadable or gray: one line
runs.new_files([args.out], args.overwrite, inputs={"photo": args.photo})  # said now, not after the training
sheet = overfit(pixels, args.steps, args.width, args.lr)
runs.write_new(args.out, lambda f: sheet.save(f, format="PNG"), args.overwrite)  # whole, or not at all
print(f"wrote {args.out}: gray | prediction | original")
