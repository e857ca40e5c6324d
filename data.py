"""Reading images: any image file as sRGB, and image folders -> uint8 RGB crops.

    rgb, alpha = load_image("photo.jpg")  # any mode, EXIF rotation, ICC profile -> PIL RGB
    dataset = ImageFolder(train_files, size=256, train=True)
    rgb, skipped = dataset[0]        # (3, 256, 256) uint8, and any files passed over

colorize.py reads its inputs here too (open_image for files, image_input for
the notebook API's paths, PIL images and arrays): one way to read a photo.

Every image under a folder (recursively) is used; with DIR/train and DIR/val
present those are the split, otherwise about 5% of the files are held out by a
hash of their path, so the split never changes between runs. Crops stay uint8
RGB: the Lab conversion runs batched on the training device (lab.py), not here.

Bad data never stops a run: an unreadable file, or a grayscale photo (it has no
color to learn from), is passed over for the next file and reported by name.
"""
import atexit
import collections
import hashlib
import io
import itertools
import math
import os
import random
import signal
import struct
import sys
import time
import warnings

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps

# What Pillow opens, found the same way in folders as when named: a GIF's first
# frame, PNM/TGA from old scanners and tools, JPEG's rarer extensions.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif",
                    ".ppm", ".pgm", ".pbm", ".pnm", ".tga")
VAL_FRACTION = 0.05
# What colorize.py writes beside each input: never a training photo.
OUTPUT_SUFFIXES = ("_color.png", "_compare.png", "_attention.png", "_attention.html")
# Everything Pillow raises for a file it cannot decode (UnidentifiedImageError
# and "image file is truncated" are OSErrors; bombs have their own class; a
# corrupt EXIF block, read for the orientation, can raise TypeError,
# struct.error, KeyError or IndexError).
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, TypeError, struct.error, KeyError,
                IndexError)


def printable(path):
    """A path as printable text on one line. A name that is not UTF-8 comes from
    os as a str with surrogates, which print() cannot encode: its bytes become
    \\xff escapes; a newline or other control character becomes \\n, \\x1b..."""
    text = os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def find_images(root, problems=None, leave_out=()):
    """All image files under root, recursively, sorted. Links to folders are
    followed (ImageNet-style trees of links), each real folder once, so a link
    cycle ends. Passed over, with a one-line reason appended to the list
    `problems` when one is given: folders that cannot be read, and image names
    that are not regular files (opening a FIFO would wait forever). Folders in
    leave_out (train.py's own run folder) are not searched."""
    problems = [] if problems is None else problems
    found, seen = [], {os.path.realpath(folder) for folder in leave_out}
    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=lambda e: problems.append(
            f"{printable(e.filename)}: cannot read this folder ({e.strerror or e}), skipped")):
        if os.path.realpath(folder) in seen:
            subfolders[:] = []  # reached again through a link, or left out
            continue
        seen.add(os.path.realpath(folder))
        for path in (os.path.join(folder, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)):
            if os.path.isfile(path):
                found.append(path)
            else:
                problems.append(f"{printable(path)}: not a regular file (a FIFO, device or broken link), skipped")
    return sorted(found)


def held_out_by_hash(root):
    """True when the split is made by a hash of the names (no DIR/train + DIR/val)."""
    return not (os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "val")))


def split_images(root, val_fraction=VAL_FRACTION, problems=None, run_folder=None):
    """(train files, val files) for a data folder: DIR/train and DIR/val, or
    val_fraction of the files held out by a hash of their path. Left out, and
    said once in `problems`: a run folder inside DIR (its samples.png and
    loss.png are no photos) and files named like colorize.py's outputs.
    Raises ValueError with a one-line reason when there is nothing to train
    on, or when validation would be on training photos."""
    problems = [] if problems is None else problems
    if not os.path.isdir(root):
        raise ValueError(f"{root}: " + ("a file, not a folder of images" if os.path.exists(root) else "no such folder"))
    if run_folder and os.path.realpath(run_folder) == os.path.realpath(root):
        raise ValueError(f"{printable(root)} is also --out: give the run a folder of its own")
    inside = run_folder and os.path.realpath(run_folder).startswith(os.path.join(os.path.realpath(root), ""))
    if inside:
        problems.append(f"the run folder {printable(run_folder)} is inside {printable(root)}: its images are left out")

    def photos(folder):
        files = find_images(folder, problems, leave_out=[run_folder] if inside else [])
        # colorize.py's outputs, and a train.py run's pictures beside its checkpoint: no photos
        outputs = {f for f in files if f.endswith(OUTPUT_SUFFIXES) or os.path.basename(f) in ("samples.png", "loss.png")
                   and any(os.path.exists(os.path.join(os.path.dirname(f), n)) for n in ("ckpt.pt", "best.pt"))}
        if outputs:
            problems.append(f"{len(outputs)} files in {printable(folder)} are named like colorize.py's outputs "
                            f"({', '.join('*' + s for s in OUTPUT_SUFFIXES)}, or a run's samples.png and loss.png; "
                            f"e.g. {printable(min(outputs))}) and are left out; rename them to train on them")
        return [f for f in files if f not in outputs]
    if not held_out_by_hash(root):
        train, val = photos(os.path.join(root, "train")), photos(os.path.join(root, "val"))
        if train and not val:  # else validation would silently be on the training photos
            raise ValueError(f"{printable(os.path.join(root, 'val'))} holds no image ({', '.join(IMAGE_EXTENSIONS)}): "
                             f"put validation photos there, or remove it to hold out photos of train/ by a hash")
        in_both = copies_of(train, val)  # whatever their names: a copy, a link
        if in_both:
            raise ValueError(f"{printable(root)}: {len(in_both)} of the {len(val)} photos in val/ are in train/ too "
                             f"(byte-identical, e.g. {printable(min(in_both))}): validation must be on "
                             f"photos the model never trained on")
    else:
        files = photos(root)
        if len(files) == 1:
            problems.append(f"{printable(files[0])} is the only photo: it is both the training and the validation set")
            return files, files

        def held_out(path):  # stable across runs and machines, unlike hash()
            digest = hashlib.sha1(os.fsencode(os.path.relpath(path, root))).digest()
            return int.from_bytes(digest[:4], "big") / 2**32
        val = [f for f in files if held_out(f) < val_fraction] or sorted(files, key=held_out)[:1]
        train = sorted(set(files) - set(val))  # files are sorted: their order
        if files and not train:
            raise ValueError(f"{printable(root)}: --val-fraction {val_fraction} holds out all {len(files)} photos, "
                             f"leaving none to train on")
        copies = copies_of(val, train)  # a folder and its backup: both sides
        if copies and len(copies) == len(train):
            raise ValueError(f"{printable(root)}: all {len(train)} training photos are byte-identical copies of "
                             f"validation photos (e.g. {printable(min(copies))}): nothing is left to train on")
        if copies:
            train = [f for f in train if f not in copies]
            problems.append(f"{len(copies)} training files are byte-identical copies of validation photos (e.g. "
                            f"{printable(min(copies))}): left out of training, so validation is on photos it never saw")
    if not train:
        raise ValueError(f"{printable(root)}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    return train, val


def copies_of(originals, files):
    """The files whose bytes are those of one of `originals` (empty ones
    aside). Only files of the same size as an original are read (rarely any
    but true copies)."""
    def digest(path):
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).digest()
    sizes = {os.path.getsize(p) for p in originals} - {0}  # empty files are alike, but no photos
    candidates = [f for f in files if os.path.getsize(f) in sizes]
    wanted = {os.path.getsize(f) for f in candidates}
    known = {digest(p) for p in originals if os.path.getsize(p) in wanted}  # each file read once at most
    return {f for f in candidates if digest(f) in known}


def load_image(path, draft=None):
    """Open any image as (RGB PIL image, alpha channel or None), EXIF rotation
    applied, in sRGB. draft: for JPEGs, let the decoder downscale by 2, 4 or 8
    while both sides stay >= draft pixels, which makes large photos decode fast."""
    with Image.open(path) as im:
        if draft and im.format == "JPEG":
            im.draft("RGB", (draft, draft))
        im = ImageOps.exif_transpose(im)  # also forces the full decode
    return to_rgb(to_srgb(im))


def to_srgb(im):
    """A photo tagged with another color space (Adobe RGB or ProPhoto from a
    scanner, a camera's wide gamut) -> the sRGB values a viewer shows, which
    is what lab.py assumes; read as sRGB, such a scan comes out darker and
    duller than it looks. Untagged and sRGB-tagged images, and profiles
    that cannot be read, pass as they are; an alpha channel is kept."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return im
        return ImageCms.profileToProfile(im, profile, ImageCms.createProfile("sRGB"),
                                         outputMode="RGBA" if im.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im


def to_rgb(im):
    """Any PIL image -> (RGB PIL image, alpha channel or None). 16- and 32-bit
    grayscale (I;16 PNG/TIFF scans, float TIFFs) keep their full range instead
    of Pillow's clipping convert('L'); float images in [0, 1] are scaled up."""
    alpha = None
    if im.mode.startswith("I") or im.mode == "F":  # first: convert("RGBA") would clip 16-bit values
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if "transparency" in im.info:  # a transparent gray value: matched before the values are scaled
            alpha = Image.fromarray(np.where(arr == im.info["transparency"], 0, 255).astype(np.uint8), "L")
        peak = (1.0 if im.mode == "F" and arr.max() <= 1 else
                65535.0 if arr.max() > 255 or im.mode.startswith("I;16") else 255.0)
        im = Image.fromarray(np.clip(arr / peak * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        alpha = im.getchannel("A")
    return (im if im.mode == "RGB" else im.convert("RGB")), alpha  # RGB as it is: no copy of a photo


def to_tensor(im):
    """A PIL image or its array (H, W, C) or (H, W) -> (C, H, W) of its dtype
    (uint8 for RGB and L: what lab.py takes). lab.to_uint8 is the way back."""
    return torch.from_numpy(np.atleast_3d(np.array(im))).permute(2, 0, 1)


def open_image(path, draft=None):
    """(PIL RGB, alpha or None, [warnings]) for an image file (draft: as
    load_image's), or ValueError with a one-line reason. Warnings from Pillow,
    libtiff or numpy do not name the file they are about: caught here, they
    come back as "FILE: message"."""
    if not os.path.isfile(path):  # a FIFO would block forever
        raise ValueError(f"{printable(path)}: " + ("no such file" if not os.path.exists(path) else "a folder"
                                            if os.path.isdir(path) else "not a regular file (a FIFO or a device)"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rgb, alpha = load_image(path, draft=draft)
        except IMAGE_ERRORS as e:
            reason = "image too large (decompression bomb limit)" if isinstance(
                e, Image.DecompressionBombError) else f"not a readable image ({e})"
            raise ValueError(f"{printable(path)}: {reason}") from None
    return rgb, alpha, [f"{printable(path)}: {w.message}" for w in caught]


def image_input(image):
    """(PIL RGB, alpha or None) for the notebook API: a path (as the command
    opens it; warnings come back as Python warnings), a PIL image of any mode,
    turned upright by its EXIF orientation and taken to sRGB as a path is, or
    a numpy array (H, W), (H, W, 3) or (H, W, 4) of uint8, or floats in [0, 1].
    Anything else: ValueError, one line."""
    if isinstance(image, np.ndarray):
        shape, kind = image.shape, image.dtype.kind
        if len(shape) not in (2, 3) or len(shape) == 3 and shape[2] not in (3, 4) or (
                image.dtype != np.uint8 and kind != "f"):  # 0-255 in int64 would read as white, 16 bits clip
            raise ValueError(f"an array of shape {shape} and dtype {image.dtype} is not an image: give uint8 "
                             f"(0-255) or floats in [0, 1], of shape (H, W), (H, W, 3) or (H, W, 4)")
        if kind == "f" and not np.isfinite(image).all():
            raise ValueError("a float array with NaN or infinite values is not an image: give floats in [0, 1]")
        if kind == "f" and not ((image >= 0) & (image <= 1)).all():  # an empty array passes, said below
            raise ValueError(f"a float array must hold values from 0 to 1, this one {image.min():g} to "
                             f"{image.max():g}: divide by 255 (or 65535), or give uint8")
        image = Image.fromarray(image if kind != "f" else (image * 255).round().astype(np.uint8))
    if not isinstance(image, (str, os.PathLike, Image.Image)):
        raise ValueError(f"a {type(image).__name__} is not an image: give a path, a PIL image or a numpy array")
    if isinstance(image, Image.Image):
        try:  # a lazily opened image is decoded only now: a truncated file fails here
            rgb, alpha = to_rgb(to_srgb(ImageOps.exif_transpose(image)))
        except IMAGE_ERRORS as e:
            raise ValueError(f"the PIL image is not a readable image ({e})") from None
    else:
        rgb, alpha, caught = open_image(image)
        for message in caught:
            warnings.warn(message)
    if 0 in rgb.size:
        raise ValueError(f"an empty image ({rgb.width}x{rgb.height})")
    return rgb, alpha


def is_grayscale(rgb, tolerance=6):
    """True when (almost) no pixel of a PIL RGB image has color: the channels
    agree to within `tolerance` levels for 99% of a thumbnail's pixels."""
    thumb = np.asarray(rgb.resize((64, 64), Image.NEAREST), dtype=np.int16)
    spread = thumb.max(axis=2) - thumb.min(axis=2)
    return float(np.percentile(spread, 99)) <= tolerance


def random_resized_crop(im, size, min_area=0.25, rng=random):
    """A random crop of min_area-100% of the area and aspect 3:4 to 4:3, resized
    to size x size. Small crops of a photo upscale to mush, hence 25%, not 8%."""
    W, H = im.size
    for _ in range(10):
        area = W * H * rng.uniform(min_area, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= W and 0 < h <= H:
            break
    else:  # a panorama (wider than about 5:1) fits no such crop: a square of its short
        w = h = min(W, H)  # side, anywhere along it, so every part of it is trained on (not only the centre)
    x, y = rng.randint(0, W - w), rng.randint(0, H - h)
    return im.resize((size, size), Image.BILINEAR, box=(x, y, x + w, y + h))


def center_crop(im, size):
    """Resize the short side to size, then take the central size x size."""
    W, H = im.size
    s = min(W, H)
    return im.resize((size, size), Image.BILINEAR, box=((W - s) // 2, (H - s) // 2, (W + s) // 2, (H + s) // 2))


class ImageFolder(torch.utils.data.Dataset):
    """files -> (uint8 RGB (3, size, size), [one-line reasons for files passed over]).

    cache_mb: decode files once, now, in order, and keep them in memory until
    they take this many MB (the rest are decoded for every crop). Decoding a
    JPEG is most of a crop's cost, and a few hundred photos, seen thousands of
    times each, fit in a few hundred MB. Loader workers forked afterwards
    share that memory and only crop (a worker that is spawned, not forked,
    gets a copy of its own)."""

    def __init__(self, files, size=256, train=True, min_area=0.25, cache_mb=0, seed=0):
        self.files, self.size, self.train, self.min_area, self.seed = files, size, train, min_area, seed
        self.cache = {}  # path -> (PIL RGB image, None), or (None, the reason it is passed over)
        self.warned = set()  # files whose decoder warnings were said (once a process)
        cached_bytes, started = 0, time.monotonic()
        for path in files if cache_mb > 0 else []:
            rgb, reason = self.load(path)
            nbytes = 4 * rgb.width * rgb.height if rgb is not None else 0  # Pillow keeps RGB in 4 bytes
            if cached_bytes + nbytes > cache_mb * 2**20:
                break  # full: the rest are decoded for every crop (and not all once more, now)
            self.cache[path] = rgb, reason
            cached_bytes += nbytes
        self.cache_note = (f"{sum(rgb is not None for rgb, _ in self.cache.values())} of the {len(files)} training "
                           f"photos decoded into memory once ({cached_bytes / 2**20:.0f} MB of --cache {cache_mb}, "
                           f"{time.monotonic() - started:.1f} s)")

    def __len__(self):
        return len(self.files)

    def load(self, path):
        """(PIL RGB image, None), or (None, a one-line reason to pass the file over).
        What the decoder warns of (a corrupt EXIF) is said once, with the file."""
        try:
            rgb, _, said = open_image(path, draft=2 * self.size)
        except ValueError as e:  # "FILE: unreadable (why)": train.py counts these apart from the grayscale ones
            why = str(e).removeprefix(f"{printable(path)}: ")
            return None, f"{printable(path)}: unreadable " + (why.removeprefix("not a readable image ")
                                                               if why.startswith("not a readable") else f"({why})")
        for message in sorted(set(said)) if path not in self.warned else []:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        self.warned.add(path)
        return (None, f"{printable(path)}: grayscale, no color to learn") if is_grayscale(rgb) else (rgb, None)

    def __getitem__(self, index):
        """index: a file's number, or (number, draw) from Draws: the draw number,
        with the seed, then decides the crop and flip, the same in any worker."""
        index, rng = (index[0], random.Random(f"{self.seed}/{index[1]}")) if isinstance(index, tuple) else \
            (index, random)
        skipped = []
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            rgb, reason = self.cache[path] if path in self.cache else self.load(path)
            if reason:
                skipped.append(reason)
                continue
            if self.train:  # each step makes a new image: a cached one is shared by every crop and worker
                rgb = random_resized_crop(rgb, self.size, self.min_area, rng)
                if rng.random() < 0.5:
                    rgb = rgb.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                rgb = center_crop(rgb, self.size)
            return to_tensor(rgb), skipped  # (3, S, S)
        raise ValueError(f"no usable color image among {len(self.files)} files; first: {skipped[0]}")


def source_of(path):
    """A photo's source, for --balance: its folder and the start of its name up
    to the first _ (demo/photos: gcompris_..., kphotoalbum_..., see SOURCES.txt),
    or the folder alone for a name without one."""
    name = os.path.basename(path).lower()
    return os.path.join(os.path.dirname(path), name.split("_")[0]) if "_" in name[1:] else os.path.dirname(path)


def balance_weights(files, power):
    """Sampling weight of each file: 1 / n**power, n the files of its source.
    power 0: every photo alike, so a source of 200 photos is sampled 10x as
    often as one of 20; power 1: every source alike."""
    counts = collections.Counter(map(source_of, files))
    return [counts[source_of(f)] ** -power for f in files]


def describe(args, train_set, val_set, weights, world):
    """What train.py says of its data: the photos decoded into memory (--cache),
    the training and validation photos, and (--balance) each source's share."""
    lines = [f"data: {train_set.cache_note}{' in each training process' if world > 1 else ''}"] if args.cache else []
    lines.append(f"data: {len(train_set)} training and {len(val_set)} validation images in {printable(args.data)}")
    if weights:
        lines.append(f"data: --balance {args.balance:g}: {source_shares(train_set.files, weights, args.data)}")
    return "\n".join(lines)


def source_shares(files, weights, root, most=8):
    """"gcompris 17%, kphotoalbum 17%, ...": the share of the draws each source
    gets, the largest `most` of them."""
    shares, total = collections.Counter(), sum(weights)
    for f, w in zip(files, weights):
        shares[source_of(f)] += w / total
    more = f", and {len(shares) - most} more sources" if len(shares) > most else ""
    name = lambda k: "(names without _)" if k == os.path.normpath(root) else os.path.relpath(k, root)  # noqa: E731
    return ", ".join(f"{name(k)} {v:.0%}" for k, v in sorted(shares.most_common(most))) + more


class Draws(torch.utils.data.Sampler):
    """The training stream, for ever: (file number, draw number), epoch after
    epoch, a new shuffle each (from the seed and the epoch), or drawn in
    proportion to `weights`; under torchrun, every world-th draw from `rank`
    on. It begins at draw `start`: a resumed run takes the photos, and (the
    draw number seeding each crop) the crops, the uninterrupted run would have."""

    def __init__(self, n, seed=0, weights=None, rank=0, world=1, start=0):
        self.n, self.seed, self.rank, self.world, self.start = n, seed, rank, world, start
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def __iter__(self):
        for epoch in itertools.count(self.start // self.n):  # the epochs before the start are skipped whole
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = (torch.multinomial(self.weights, self.n, replacement=True, generator=g)
                     if self.weights is not None else torch.randperm(self.n, generator=g))
            for draw, i in enumerate(order.tolist(), start=epoch * self.n):
                if draw >= self.start and draw % self.world == self.rank:
                    yield i, draw


def batches(dataset, batch_size, workers, note_skipped, seed=0, rank=0, world=1, pin_memory=False, weights=None,
            start=0):
    """Training batches of uint8 crops for ever (Draws: from draw `start`, this
    rank's share). Files passed over are handed to note_skipped as one-line
    reasons. One loader for the whole run, so its workers start once; when a
    worker fails (every file unreadable), or at the end, they are stopped then
    and there: they ignore SIGTERM (ignore_ctrl_c), so multiprocessing's
    SIGTERM at exit would not stop them, and the exit would wait for ever."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=Draws(len(dataset), seed, weights, rank, world, start),
        num_workers=workers, collate_fn=collate, worker_init_fn=ignore_ctrl_c, pin_memory=pin_memory,
        prefetch_factor=4 if workers else None)

    def forever():
        stream = iter(loader)
        try:
            for rgb, reasons in stream:
                note_skipped(reasons)
                yield rgb
        except ValueError as e:  # every file unreadable or grayscale, said in a worker: the last line is the reason
            raise ValueError(str(e).strip().splitlines()[-1].removeprefix("ValueError: ")) from None
        finally:  # the workers stop now, told by the loader itself
            getattr(stream, "_shutdown_workers", lambda: None)()
            del stream
    generator = forever()
    atexit.register(generator.close)
    return generator


def validation_set(files, size, limit, log, spare=None):
    """The validation images: the first `limit` usable files, checked now, not
    after the first --eval-every steps; the others are passed over, said in the
    log. When none is usable and `spare` (the training files of a hash split)
    is given, its first usable file is moved from training into validation.
    None usable at all: ValueError."""
    val_set = ImageFolder([], size, train=False)
    for path in files:
        if len(val_set) == limit:
            break
        reason = val_set.load(path)[1]
        if reason is None:
            val_set.files.append(path)
        else:
            log(f"warning: validation: skipped {reason}")
    for path in spare if spare and not val_set.files and len(spare) > 1 else []:
        if val_set.load(path)[1] is None:
            spare.remove(path)
            val_set.files.append(path)
            log(f"warning: validation: none of the {len(files)} held-out files is usable; {printable(path)} is "
                f"held out from training instead")
            break
    if not val_set.files:
        raise ValueError(f"no readable color image among the {len(files)} validation files")
    return val_set


def default_workers():
    """Loader processes per training process: the CPU cores this process may
    use, shared by the processes of the node (torchrun sets LOCAL_WORLD_SIZE),
    less one for the training loop. One worker decodes and crops a few hundred
    photos a second (bench.py); a GPU trains this model at thousands."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", 1)) - 1)


def ignore_ctrl_c(worker_id):
    """A loader worker's start: Ctrl-C (and a cluster's SIGTERM or SIGHUP)
    reaches every process of the group, and only the training process should
    act on it (train.py saves and stops cleanly; its workers end with it)."""
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def collate(batch):
    """Stack the crops; gather the reasons for files passed over."""
    return torch.stack([rgb for rgb, _ in batch]), [s for _, skipped in batch for s in skipped]
