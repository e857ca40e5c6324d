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
# A small model trained on 15 photographs (README, "The demo model"), used when
# no checkpoint is given or found, so a fresh clone colorizes out of the box.
DEMO_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "colorizer.pt")
STRIP_ROWS = 256  # full-resolution work runs in strips of rows: bounded memory for any size


class CheckpointError(Exception):
    pass


def find_checkpoint(out_dir="out"):
    """The newest ckpt.pt that train.py wrote under out_dir, or None."""
    found = glob.glob(os.path.join(out_dir, "**", "ckpt.pt"), recursive=True)
    return max(found, key=os.path.getmtime) if found else None


def export_checkpoint(src, dst):
    """A train.py checkpoint -> a small inference copy: config, float16 weights,
    training size, Inception record and the last validation numbers (no
    optimizer state), written atomically. This is how demo/colorizer.pt was made."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    evals = [row for row in ckpt["history"] if "val_mse" in row]
    small = {"config": ckpt["config"], "step": ckpt["step"], "inception": ckpt["inception"],
             "args": {"size": ckpt["args"]["size"]}, "validation": evals[-1] if evals else None,
             "model": {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}}
    data.save_atomic(lambda tmp: torch.save(small, tmp), dst)


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
    """PIL RGB (or its array) -> uint8 (3, H, W), as lab.py takes it."""
    return torch.from_numpy(np.array(im)).permute(2, 0, 1)


@torch.no_grad()
def predict_ab(net, inception, smalls, device, return_attention=False):
    """Same-size PIL RGB copies -> predicted ab (B, 2, h, w) in Lab units, and
    the attention weights (B, N, N) when asked."""
    rgb = torch.stack([to_tensor(s) for s in smalls]).to(device)
    l = lab.l_to_net(lab.rgb_to_l(rgb))                                # (B, 1, h, w)
    embedding = None if inception is None else model.inception_embedding(inception, lab.gray_rgb(l))
    out = net(l, embedding, return_attention=return_attention)
    ab, alpha = out if return_attention else (out, None)
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


def predict_all(colorizer, images, device, return_attention):
    """ab (2, h, w) in Lab units, attention (N, N) or None, and the network's
    copy, for each PIL RGB image, batching the images whose copies share a size."""
    name, net, inception, size = colorizer
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


def image_metrics(result, original):
    """(PSNR dB, ab MSE in the network's ab/128 units, colorfulness) of a
    uint8 RGB result (H, W, 3) against the original."""
    pred, true = (to_tensor(x)[None] for x in (result, original))
    ab_pred, ab_true = (lab.rgb_to_lab(x)[:, 1:] / lab.AB_SCALE for x in (pred, true))
    return lab.psnr(pred, true).item(), (ab_pred - ab_true).pow(2).mean().item(), lab.colorfulness(pred).item()


def write_outputs(args, names, path, stem, rgb, alpha, predictions, device):
    """Write NAME_color.png (from the first model) and the extras asked for, for
    one image; return {name: (PSNR, ab MSE, colorfulness)} when --metrics applies.
    predictions: one (ab, attention, network copy) per model."""
    colored = [Image.fromarray(full_resolution(rgb, ab, device)) for ab, _, _ in predictions]
    result = colored[0]
    if alpha is not None:
        result = result.copy()  # the RGB one is still needed for --compare and --metrics
        result.putalpha(alpha)
    save_png(result, stem + "_color.png")
    print(stem + "_color.png")
    has_color = not data.is_grayscale(rgb)
    gray = rgb.convert("L").convert("RGB")
    if args.compare:
        # copies: thumbnail() shrinks in place, and --metrics needs the full size
        panels = [p.copy() for p in [gray] + colored + ([rgb] if has_color else [])]
        labels = ["gray input"] + (names if len(names) > 1 else ["colorized"]) + (["original"] if has_color else [])
        for p in panels:
            p.thumbnail((1024, 1024))
        save_png(side_by_side(panels, labels), stem + "_compare.png")
        print(stem + "_compare.png")
    _, attention, small = predictions[0]
    if attention is not None:
        colored_small = colored[0].resize(small.size, Image.BILINEAR)
        save_png(attention_figure(small, colored_small, attention), stem + "_attention.png")
        print(stem + "_attention.png")
    if not args.metrics:
        return None
    if not has_color:
        print(f"metrics: {path}: grayscale input, nothing to compare against")
        return None
    rows = {name: image_metrics(c, rgb) for name, c in zip(names + ["all-gray", "original"], colored + [gray, rgb])}
    print(f"metrics: {path}: " + " | ".join(f"{n} PSNR {p:.2f} dB, ab MSE {m:.4f}, colorfulness {c:.1f}"
                                          for n, (p, m, c) in rows.items() if n != "original")
          + f" | original colorfulness {rows['original'][2]:.1f}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images or folders (recursive)")
    parser.add_argument("-o", "--out", metavar="DIR", help="write into this folder instead of beside each input")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist already")
    g = parser.add_argument_group("model")
    g.add_argument("--checkpoint", action="append", metavar="PATH",
                   help="a train.py checkpoint (default: the newest in out/, else the bundled demo); "
                        "give it again to compare several side by side")
    g.add_argument("--inception", metavar="PATH", help="Inception-ResNet-v2 weights, if not the cached default")
    g.add_argument("--size", type=int, help="short side of the network's copy (default: the training size)")
    g.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="auto (the default): cuda when available")
    g.add_argument("--batch-size", type=int,
                   help="images per forward pass (default: 8 on CUDA; 1 on the CPU, where batching "
                        "only adds memory traffic)")
    g = parser.add_argument_group("extras")
    g.add_argument("--compare", action="store_true", help="also NAME_compare.png: gray | colorized | original")
    g.add_argument("--attention", action="store_true",
                   help="also NAME_attention.png: where the attention looks from a few points")
    g.add_argument("--metrics", action="store_true", help="PSNR and colorfulness against color inputs")
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but no CUDA device is available", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.device == "cuda" or
                          (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    args.batch_size = args.batch_size or (8 if device.type == "cuda" else 1)
    checkpoints = args.checkpoint or [find_checkpoint() or DEMO_CHECKPOINT]
    if checkpoints == [DEMO_CHECKPOINT]:
        print("using the bundled demo model demo/colorizer.pt (small, trained on 15 "
              "photos; train your own with train.py and it is used instead)", file=sys.stderr)
    colorizers = []  # (name, net, inception, size), the first one writes NAME_color.png
    for path in checkpoints:
        try:
            net, inception, size = load_colorizer(path, device, args.inception)
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        name = os.path.basename(os.path.dirname(os.path.abspath(path))) if len(checkpoints) > 1 else "colorized"
        if name in [c[0] for c in colorizers]:  # two runs in folders of the same name
            name = f"{name}-{len(colorizers) + 1}"
        colorizers.append((name, net, inception, args.size or size))
    names = [c[0] for c in colorizers]
    if args.attention and colorizers[0][1].attention is None:
        print(f"note: {checkpoints[0]} is a baseline model without attention; no attention maps",
              file=sys.stderr)
    if args.out:
        os.makedirs(args.out, exist_ok=True)

    jobs, errors = collect_inputs(args.paths, args.out)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    failed, metrics = len(errors), []
    for start in range(0, len(jobs), args.batch_size):
        loaded = []  # (path, stem, rgb, alpha)
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
            loaded.append((path, stem, rgb, alpha))
        predictions = [predict_all(c, [item[2] for item in loaded], device, args.attention) for c in colorizers]
        for i, (path, stem, rgb, alpha) in enumerate(loaded):
            try:
                rows = write_outputs(args, names, path, stem, rgb, alpha, [p[i] for p in predictions], device)
            except OSError as e:  # disk full, no permission: say so, go on with the rest
                print(f"error: {path}: cannot write the output ({e})", file=sys.stderr)
                failed += 1
                continue
            if rows:
                metrics.append(rows)
    if metrics:
        print(f"metrics: mean over {len(metrics)} color images (PSNR on uint8 RGB at full resolution; "
              f"ab MSE in ab/128 units; colorfulness: Hasler-Suesstrunk on |rg|, |yb|)")
        for name in metrics[0]:
            p, m, c = (sum(r[name][k] for r in metrics) / len(metrics) for k in range(3))
            print(f"metrics:   {name:<12} PSNR {p:6.2f} dB | ab MSE {m:.4f} | colorfulness {c:5.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
