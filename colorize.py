"""Colorize photographs at their own resolution with a trained checkpoint.

    python colorize.py old_photo.jpg                 # writes old_photo_color.png beside it
    python colorize.py scans/ -o colored/ --compare  # a folder, recursively
    python colorize.py photo.jpg --attention         # also: where the model looks

The network sees a resized copy (short side = the checkpoint's training size);
its a*b* prediction is resized bilinearly to the original size and joined with
the original full-resolution L (the DESIGN.md inference path), so the detail
of the output is the detail of the input. Alpha is kept; inputs are never
overwritten. The checkpoint carries its own config: no architecture flags.
"""
import argparse
import glob
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import data
import lab
import model

OUTPUT_SUFFIXES = ("_color.png", "_compare.png", "_attention.png")
STRIP_ROWS = 256  # full-resolution work runs in strips of rows: bounded memory for any size


class CheckpointError(Exception):
    pass


def find_checkpoint(out_dir="out"):
    """The newest ckpt.pt that train.py wrote under out_dir, or None."""
    found = glob.glob(os.path.join(out_dir, "**", "ckpt.pt"), recursive=True)
    return max(found, key=os.path.getmtime) if found else None


def load_colorizer(path, device, inception_path=None):
    """(Colorizer in eval mode, frozen Inception or None, training size) from a
    train.py checkpoint. Raises CheckpointError with a one-line reason."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config = model.ColorizerConfig(**ckpt["config"])
        net = model.Colorizer(config)
        net.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})  # demo weights are fp16
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # unpickling, missing keys, wrong shapes: all "not usable here"
        raise CheckpointError(f"{path}: not a compatible colorizer checkpoint "
                              f"({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None
    inception = None
    if config.global_branch:
        record = ckpt.get("inception") or {}
        try:
            inception_path = inception_path or model.default_inception_path()
            if not os.path.exists(inception_path):
                raise ValueError(f"{inception_path}: no such file")
            if record.get("sha256") and model.sha256_of(inception_path) != record["sha256"]:
                print(f"warning: {inception_path} is not the Inception this model was trained with "
                      f"({record.get('file')}); colors may suffer", file=sys.stderr)
            inception = model.load_inception(inception_path).to(device)
        except (ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path} needs the Inception-ResNet-v2 weights it was trained with: {e}") from None
    size = ckpt.get("args", {}).get("size", 256)
    return net.to(device).eval(), inception, size


def network_size(width, height, short):
    """(w, h) of the network's copy: short side `short`, aspect kept (long side
    at most 4x), both multiples of 8."""
    scale = short / min(width, height)
    w, h = width * scale, height * scale
    if max(w, h) > 4 * short:
        w, h = w * 4 * short / max(w, h), h * 4 * short / max(w, h)
    return max(8, round(w / 8) * 8), max(8, round(h / 8) * 8)


def to_tensor(im):
    """PIL RGB -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div_(255)


@torch.no_grad()
def predict_ab(net, inception, smalls, device, return_attention=False):
    """Same-size PIL RGB copies -> predicted ab (B, 2, h, w) in Lab units, and
    the attention weights (B, N, N) when asked."""
    rgb = torch.stack([to_tensor(s) for s in smalls]).to(device)
    l, _ = lab.lab_to_net(lab.rgb_to_lab(rgb))                         # (B, 1, h, w)
    embedding = None if inception is None else model.inception_embedding(inception, lab.gray_rgb(l))
    out = net(l, embedding, return_attention=return_attention)
    ab, alpha = out if return_attention else (out, None)
    return ab * lab.AB_SCALE, alpha


def full_resolution(rgb, ab_small):
    """Join the original L of a PIL RGB image with ab (2, h, w) resized to its
    size: -> uint8 array (H, W, 3). Works in strips so memory stays bounded."""
    W, H = rgb.size
    ab = [np.asarray(Image.fromarray(c.float().cpu().numpy()).resize((W, H), Image.BILINEAR))
          for c in ab_small]                                           # 2 x (H, W)
    src = np.asarray(rgb)
    out = np.empty((H, W, 3), np.uint8)
    for y in range(0, H, STRIP_ROWS):
        L = lab.rgb_to_lab(to_tensor(src[y:y + STRIP_ROWS]))[:1]      # (1, rows, W)
        ab_rows = torch.from_numpy(np.stack([c[y:y + STRIP_ROWS] for c in ab]))
        strip = lab.lab_to_rgb(torch.cat([L, ab_rows]))                # (3, rows, W)
        out[y:y + STRIP_ROWS] = (strip * 255).round().byte().permute(1, 2, 0).numpy()
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
    gray = to_tensor(small.convert("L").convert("RGB"))               # (3, h, w)
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
    return side_by_side(panels)


def side_by_side(images, gap=4):
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    sheet = Image.new("RGB", (width, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        sheet.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return sheet


def save_png(image, path):
    """Write to a temporary file, then rename: never a half-written output."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    image.save(tmp, compress_level=1)  # level 1: 3-4x faster than the default, ~15% bigger
    os.replace(tmp, path)


def collect_inputs(paths, out_dir):
    """[(input file, output stem)] for files and folders (recursive), and errors
    for paths that do not exist."""
    jobs, errors = [], []
    for p in paths:
        if os.path.isdir(p):
            for f in data.find_images(p):
                if not f.endswith(OUTPUT_SUFFIXES):  # our own outputs from an earlier run
                    rel = os.path.relpath(f, p)
                    jobs.append((f, os.path.join(out_dir, rel) if out_dir else f))
        elif os.path.exists(p):
            jobs.append((p, os.path.join(out_dir, os.path.basename(p)) if out_dir else p))
        else:
            errors.append(f"{p}: no such file or folder")
    return [(f, os.path.splitext(stem)[0]) for f, stem in jobs], errors


def write_outputs(args, path, stem, rgb, alpha, small, ab, alpha_map):
    """Write NAME_color.png (and the extras asked for) for one image; return
    (PSNR, colorfulness, original colorfulness) when --metrics applies."""
    colored = Image.fromarray(full_resolution(rgb, ab))
    result = colored.copy()
    if alpha is not None:
        result.putalpha(alpha)
    save_png(result, stem + "_color.png")
    print(stem + "_color.png")
    has_color = not data.is_grayscale(rgb)
    if args.compare:
        panels = [rgb.convert("L"), colored] + ([rgb] if has_color else [])
        for p in panels:
            p.thumbnail((1024, 1024))
        save_png(side_by_side(panels), stem + "_compare.png")
        print(stem + "_compare.png")
    if alpha_map is not None:
        colored_small = colored.resize(small.size, Image.BILINEAR)
        save_png(attention_figure(small, colored_small, alpha_map.float().cpu()), stem + "_attention.png")
        print(stem + "_attention.png")
    if not args.metrics:
        return None
    if not has_color:
        print(f"metrics: {path}: grayscale input, nothing to compare against")
        return None
    pred, true = (torch.from_numpy(np.array(x)).permute(2, 0, 1)[None] for x in (colored, rgb))
    row = lab.psnr(pred, true).item(), lab.colorfulness(pred).item(), lab.colorfulness(true).item()
    print(f"metrics: {path}: PSNR {row[0]:.2f} dB | colorfulness {row[1]:.1f} (original {row[2]:.1f})")
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images or folders (recursive)")
    parser.add_argument("-o", "--out", help="write into this folder instead of beside each input")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", help="a train.py checkpoint (default: the newest in out/)")
    g.add_argument("--inception", help="Inception-ResNet-v2 weights, if not the cached default")
    g.add_argument("--size", type=int, help="short side of the network's copy (default: the training size)")
    g.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    g.add_argument("--batch-size", type=int, default=8, help="images of one size per forward pass")
    g = parser.add_argument_group("extras")
    g.add_argument("--compare", action="store_true", help="also NAME_compare.png: gray | colorized | original")
    g.add_argument("--attention", action="store_true",
                   help="also NAME_attention.png: where the attention looks from a few points")
    g.add_argument("--metrics", action="store_true", help="PSNR and colorfulness against color inputs")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.device == "cuda" or
                          (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    checkpoint = args.checkpoint or find_checkpoint()
    if checkpoint is None:
        print("error: no checkpoint in out/; train one (python train.py --data DIR) "
              "or pass --checkpoint PATH", file=sys.stderr)
        return 2
    try:
        net, inception, size = load_colorizer(checkpoint, device, args.inception)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = args.size or size
    if args.attention and net.attention is None:
        print(f"note: {checkpoint} is a baseline model without attention; no attention maps",
              file=sys.stderr)
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    jobs, errors = collect_inputs(args.paths, args.out)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    failed, metrics = len(errors), []
    for start in range(0, len(jobs), args.batch_size):
        loaded = []  # (path, stem, rgb, alpha, small)
        for path, stem in jobs[start:start + args.batch_size]:
            target = stem + "_color.png"
            if os.path.exists(target) and not args.overwrite:
                print(f"skip: {target} exists (use --overwrite)")
                continue
            try:
                rgb, alpha = data.load_image(path)
            except data.IMAGE_ERRORS as e:
                reason = "image too large (decompression bomb limit)" if isinstance(
                    e, Image.DecompressionBombError) else f"not a readable image ({e})"
                print(f"error: {path}: {reason}", file=sys.stderr)
                failed += 1
                continue
            small = rgb.resize(network_size(*rgb.size, size), Image.BILINEAR, reducing_gap=3.0)
            loaded.append((path, stem, rgb, alpha, small))
        by_size = {}
        for item in loaded:
            by_size.setdefault(item[4].size, []).append(item)
        for group in by_size.values():
            ab, alpha_maps = predict_ab(net, inception, [g[4] for g in group], device,
                                        return_attention=args.attention and net.attention is not None)
            for i, (path, stem, rgb, alpha, small) in enumerate(group):
                try:
                    row = write_outputs(args, path, stem, rgb, alpha, small, ab[i],
                                        None if alpha_maps is None else alpha_maps[i])
                except OSError as e:  # disk full, no permission: say so, go on with the rest
                    print(f"error: {path}: cannot write the output ({e})", file=sys.stderr)
                    failed += 1
                    continue
                if row:
                    metrics.append(row)
    if metrics:
        mean = [sum(col) / len(metrics) for col in zip(*metrics)]
        print(f"metrics: mean of {len(metrics)} images: PSNR {mean[0]:.2f} dB | colorfulness "
              f"{mean[1]:.1f} (originals {mean[2]:.1f}); colorfulness is Hasler-Suesstrunk on |rg|, |yb|")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
