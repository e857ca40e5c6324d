"""Photos are read as a viewer shows them, and trained on as said (data.py):
modes, EXIF, ICC profiles, folders and links, the split, bad files passed
over, the cache, reduced-size decoding, --balance."""

import hashlib
import os
import random
import shutil
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data
from conftest import DEMO, TINY, colorize_cli, make_photo, one_error_line, posix_only, run


def linear_rgb_profile():
    """The bytes of an ICC v2 RGB profile with sRGB's primaries and a gamma of
    1.0 (linear light), as a scanner might tag its output."""
    def s15(x):
        return struct.pack(">i", round(x * 65536))

    def xyz(x, y, z):
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 256) + bytes(2)  # gamma 1.0 in u8Fixed8
    text = b"linear RGB\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
            (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)), (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    start, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, content in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", start + len(body), len(content))
        body += content
    header = (struct.pack(">I", start + len(body)) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + bytes(12) + b"acsp" + bytes(4 * 4 + 8 + 4) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4 + 16 + 28))
    return header + struct.pack(">I", len(tags)) + table + body


def _held_out(name):
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big") / 2**32


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "RGB"])
def test_load_image_takes_any_mode_to_rgb(tmp_path, mode):
    rgb = Image.open(make_photo(tmp_path / "src.png"))
    if mode == "I;16":
        gray16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        im = Image.fromarray(gray16)  # uint16 -> mode I;16
    else:
        im = rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im.save(path)
    out, alpha = data.load_image(path)
    assert out.mode == "RGB" and out.size == (96, 64)
    assert (alpha is not None) == (mode in ("LA", "RGBA"))
    if mode == "I;16":  # 16-bit values scale down to the full 8-bit range, not clipped at 255
        assert np.abs(np.asarray(out)[..., 0].astype(int) - np.asarray(rgb.convert("L"))).max() <= 1


def test_float_and_16_bit_transparent_images_keep_their_tones(tmp_path):
    ramp = np.linspace(0, 1, 64 * 48).reshape(48, 64)
    Image.fromarray(ramp.astype(np.float32), "F").save(tmp_path / "float.tif")
    rgb, alpha = data.load_image(tmp_path / "float.tif")
    assert alpha is None and abs(np.asarray(rgb)[..., 0].astype(float) - ramp * 255).max() <= 1
    Image.fromarray((ramp * 65535).astype(np.uint16)).save(tmp_path / "gray16.png", transparency=0)
    im = Image.open(tmp_path / "gray16.png")
    assert im.mode.startswith("I") and im.info["transparency"] == 0
    rgb, alpha = data.load_image(tmp_path / "gray16.png")
    assert abs(np.asarray(rgb)[..., 0].astype(float) - ramp * 255).max() <= 1  # not washed out to white
    assert np.asarray(alpha)[0, 0] == 0 and (np.asarray(alpha) == 255).mean() > 0.99


def test_a_photo_tagged_with_another_color_space_is_read_as_displayed(tmp_path):
    # Linear-light 128 is sRGB 188: read as sRGB, the photo would be 20 L* darker than it looks.
    Image.new("RGB", (16, 16), (128, 64, 32)).save(tmp_path / "scan.png", icc_profile=linear_rgb_profile())
    rgb, _ = data.load_image(tmp_path / "scan.png")
    assert abs(rgb.getpixel((0, 0))[0] - 188) <= 2, rgb.getpixel((0, 0))
    Image.new("RGBA", (16, 16), (128, 128, 128, 77)).save(tmp_path / "alpha.png", icc_profile=linear_rgb_profile())
    rgb, alpha = data.load_image(tmp_path / "alpha.png")
    assert abs(rgb.getpixel((0, 0))[1] - 188) <= 2 and alpha.getpixel((0, 0)) == 77
    Image.new("RGB", (16, 16), (128, 64, 32)).save(tmp_path / "plain.png")  # untagged: sRGB, as it is
    assert data.load_image(tmp_path / "plain.png")[0].getpixel((0, 0)) == (128, 64, 32)


def test_load_image_applies_exif_orientation(tmp_path):
    im = Image.open(make_photo(tmp_path / "src.png", size=(96, 64)))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif)
    assert data.load_image(tmp_path / "rot.jpg")[0].size == (64, 96)


def test_find_images_recurses_and_ignores_case(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    make_photo(tmp_path / "x.JPG")
    make_photo(tmp_path / "a" / "y.png")
    make_photo(tmp_path / "a" / "b" / "z.WebP")
    (tmp_path / "notes.txt").write_text("not an image")
    found = [os.path.relpath(p, tmp_path) for p in data.find_images(tmp_path)]
    assert found == [os.path.join("a", "b", "z.WebP"), os.path.join("a", "y.png"), "x.JPG"]


@posix_only  # links
def test_folders_of_links_are_followed_and_link_cycles_end(tmp_path):
    real = tmp_path / "real" / "cat"
    real.mkdir(parents=True)
    make_photo(real / "a.jpg", size=(40, 32))
    tree = tmp_path / "tree" / "train"
    tree.mkdir(parents=True)
    os.symlink(real, tree / "cat")
    os.symlink(tmp_path / "tree", tree / "loop")  # a cycle
    assert data.find_images(tmp_path / "tree") == [str(tree / "cat" / "a.jpg")]
    r = colorize_cli(tmp_path / "tree", "-o", tmp_path / "out", "--checkpoint", DEMO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "train" / "cat" / "a_color.png").exists()


def test_split_is_deterministic_holds_out_some_and_uses_train_val_folders(tmp_path):
    for i in range(40):
        (tmp_path / f"{i}.jpg").touch()
    train, val = data.split_images(tmp_path)
    assert 1 <= len(val) <= 8 and len(train) + len(val) == 40 and not set(train) & set(val)
    assert data.split_images(tmp_path) == (train, val)
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    (tmp_path / "train" / "t.png").touch()
    (tmp_path / "val" / "v.png").touch()
    assert data.split_images(tmp_path) == ([str(tmp_path / "train" / "t.png")], [str(tmp_path / "val" / "v.png")])


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no images found"):
        data.split_images(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        data.split_images(tmp_path / "nope")
    (tmp_path / "one.jpg").touch()
    with pytest.raises(ValueError, match="one.jpg: a file, not a folder"):
        data.split_images(tmp_path / "one.jpg")


def test_validation_is_never_the_training_set_and_a_broken_held_out_file_is_replaced(photo_dir, tmp_path):
    d = tmp_path / "data"
    for sub in ("train", "val"):
        (d / sub).mkdir(parents=True)
        for p in list(photo_dir.iterdir())[:3]:
            (d / sub / p.name).write_bytes(p.read_bytes())
    one_error_line(run("train.py", "--data", d, "--out", tmp_path / "a", *TINY), "val/", "train/", "never")
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "b", "--val-fraction", 0.999, *TINY),
                   "--val-fraction", "none to train on")
    # twelve good photos and one broken file, which the hash split happens to hold out
    d = tmp_path / "dozen"
    d.mkdir()
    good = [n for n in (f"good{i}.jpg" for i in range(100)) if _held_out(n) >= 0.05][:12]
    for i, name in enumerate(good):
        make_photo(d / name, seed=i)
    broken = next(n for n in (f"x{i}.jpg" for i in range(1000)) if _held_out(n) < 0.05)
    (d / broken).write_bytes(b"\xff\xd8 truncated")
    r = run("train.py", "--data", d, "--out", tmp_path / "c", "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "held out from training instead" in r.stdout and "data: 11 training and 1 validation images" in r.stdout


def test_an_empty_val_folder_is_an_error_not_validation_on_training_photos(photo_dir, tmp_path):
    data_dir = tmp_path / "d"
    shutil.copytree(photo_dir, data_dir / "train")
    (data_dir / "val").mkdir()
    (data_dir / "val" / "README").write_text("validation photos go here")
    (data_dir / "val" / "photo.heic").write_bytes(b"not for Pillow")
    r = run("train.py", "--data", data_dir, "--out", tmp_path / "run", "--max-steps", 2, *TINY)
    assert r.returncode == 2 and "val holds no image" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "run").exists()


@posix_only  # a link in val/
def test_byte_identical_copies_never_land_on_both_sides_of_the_split(tmp_path):
    """A photo folder and its backup under one --data: each validation photo's
    copy is left out of training (said), whatever its name."""
    (tmp_path / "photos").mkdir()
    for i in range(40):
        make_photo(tmp_path / "photos" / f"p{i}.jpg", size=(32, 24), seed=i)
    shutil.copytree(tmp_path / "photos", tmp_path / "backup")
    os.rename(tmp_path / "backup" / "p3.jpg", tmp_path / "backup" / "p3 (copy).jpg")
    problems = []
    train, val = data.split_images(str(tmp_path), 0.1, problems)
    digests = lambda files: {open(f, "rb").read() for f in files}  # noqa: E731
    assert val and not digests(train) & digests(val), (len(train), len(val))
    assert len(train) + len(val) < 80 and any("byte-identical copies of validation photos" in p for p in problems)
    # one photo is both sets, as said; copies of one photo only are nothing to train on
    (tmp_path / "one").mkdir()
    shutil.copy(tmp_path / "photos" / "p0.jpg", tmp_path / "one")
    problems = []
    assert data.split_images(str(tmp_path / "one"), 0.1, problems) == ([str(tmp_path / "one" / "p0.jpg")],) * 2
    assert any("is the only photo" in p for p in problems)
    for i in range(1, 12):
        shutil.copy(tmp_path / "photos" / "p0.jpg", tmp_path / "one" / f"p0 ({i}).jpg")
    with pytest.raises(ValueError, match=r"all \d+ training photos are byte-identical copies of validation photos"):
        data.split_images(str(tmp_path / "one"), 0.1)
    # DIR/train + DIR/val: a copy under another name, or a link, is no validation photo
    for side in ("train", "val"):
        (tmp_path / "tv" / side).mkdir(parents=True)
    for i in range(4):
        shutil.copy(tmp_path / "photos" / f"p{i}.jpg", tmp_path / "tv" / "train")
    make_photo(tmp_path / "tv" / "val" / "new.jpg", size=(32, 24), seed=99)
    assert len(data.split_images(str(tmp_path / "tv"))[1]) == 1
    shutil.copy(tmp_path / "photos" / "p1.jpg", tmp_path / "tv" / "val" / "holdout.jpg")
    os.symlink(tmp_path / "tv" / "train" / "p2.jpg", tmp_path / "tv" / "val" / "link.jpg")
    with pytest.raises(ValueError, match="2 of the 3 photos in val/ are in train/ too"):
        data.split_images(str(tmp_path / "tv"))


def test_run_folder_inside_data_and_colorize_outputs_are_not_trained_on(photo_dir, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for p in photo_dir.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    make_photo(d / "p0_color.png")  # what colorize.py wrote here (or a photo named like it)
    args = ["train.py", "--data", d, "--out", d / "run", "--max-steps", 2, "--eval-every", 2, *TINY]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert "1 files in" in r.stdout and "p0_color.png" in r.stdout and "rename them" in r.stdout
    assert "data: 5 training and 1 validation images" in r.stdout, r.stdout  # 6 photos, not 7, nor samples.png
    r = run(*args[:-len(TINY) - 4], "--resume", "--max-steps", 4)
    assert r.returncode == 0 and "data: 5 training and 1 validation images" in r.stdout, r.stdout + r.stderr


def test_dataset_crops_and_passes_over_bad_and_gray_files(tmp_path):
    good = make_photo(tmp_path / "good.jpg", size=(300, 200))
    (tmp_path / "broken.jpg").write_bytes(good.read_bytes()[:300])
    Image.open(good).convert("L").save(tmp_path / "gray.jpg")
    files = [str(tmp_path / n) for n in ("broken.jpg", "gray.jpg", "good.jpg")]
    for train in (True, False):
        rgb, skipped = data.ImageFolder(files, size=64, train=train)[0]
        assert rgb.shape == (3, 64, 64) and rgb.dtype == torch.uint8
        assert len(skipped) == 2
        assert "broken.jpg: unreadable" in skipped[0] and "gray.jpg: grayscale" in skipped[1]


@pytest.mark.parametrize("cache", ["0", "1024"])  # decoded for every crop, or once, up front
def test_train_reports_corrupt_and_grayscale_files_and_goes_on(photo_dir, tmp_path, cache):
    d = tmp_path / "data"
    d.mkdir()
    for p in photo_dir.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    Image.open(photo_dir / "p0.jpg").convert("L").save(d / "old.png")
    r = run("train.py", "--data", d, "--out", tmp_path / "run", "--max-steps", 8, "--eval-every", 8,
            *TINY[:-2], "--workers", "1", "--cache", cache)
    assert r.returncode == 0, r.stderr
    assert ("decoded into memory" in r.stdout) == (cache != "0")
    assert "corrupt.jpg: unreadable" in r.stdout and "old.png: grayscale" in r.stdout
    assert "Skipped 1 unreadable files and left out 1 grayscale photos" in r.stdout


def test_a_decoder_warning_in_training_names_its_file_once(tmp_path, monkeypatch, capsys, recwarn):
    """Pillow's "Corrupt EXIF data" names no file: train.py's loader says it
    once, with the file, instead of two raw lines for every crop."""
    path = make_photo(tmp_path / "exif.jpg", size=(40, 32))
    real = data.load_image

    def warning_load(p, draft=None):
        warnings.warn("Corrupt EXIF data.  Expecting to read 12 bytes but only got 2.", UserWarning)
        return real(p, draft)
    monkeypatch.setattr(data, "load_image", warning_load)
    dataset = data.ImageFolder([str(path)], size=16, train=True)
    for _ in range(3):
        assert dataset[0][0].shape == (3, 16, 16)
    err = capsys.readouterr().err
    assert err == f"warning: {path}: Corrupt EXIF data.  Expecting to read 12 bytes but only got 2.\n", err
    assert not [w for w in recwarn if "EXIF" in str(w.message)]


def test_cached_dataset_decodes_once_and_gives_the_same_crops(tmp_path, monkeypatch):
    """--cache MB: the photos that fit are decoded once, up front, and said;
    a photo past the limit is decoded for every crop; a cached photo gives the
    crops its file would."""
    good = make_photo(tmp_path / "good.jpg", size=(300, 200))  # 0.23 MB decoded
    Image.open(good).convert("L").save(tmp_path / "gray.jpg")
    make_photo(tmp_path / "more.png", size=(1000, 600))  # a PNG decodes at full size: 2.3 MB, past 1 MB
    files = [str(tmp_path / n) for n in ("gray.jpg", "good.jpg", "more.png")]
    plain, cached = data.ImageFolder(files, size=64), data.ImageFolder(files, size=64, cache_mb=1)
    # what train.py prints after "data: " (the gray photo is kept as its reason to be passed over)
    assert cached.cache_note.startswith("1 of the 3 training photos decoded into memory once (0 MB of --cache 1"), \
        cached.cache_note
    crops = []
    for i in range(4):
        random.seed(i)
        crops.append(plain[0][0])
    decoded = []
    load_image = data.load_image
    monkeypatch.setattr(data, "load_image", lambda path, **kw: decoded.append(os.path.basename(path))
                        or load_image(path, **kw))
    for i in range(4):
        random.seed(i)
        rgb, skipped = cached[0]
        assert torch.equal(rgb, crops[i])  # the same random crop and flip as from the file
        assert "gray.jpg: grayscale" in skipped[0]
    assert decoded == []  # neither the gray photo nor the good one was decoded again
    for _ in range(2):
        assert cached[2][0].shape == (3, 64, 64)
    assert decoded == ["more.png", "more.png"]


def test_training_decodes_large_jpegs_at_a_reduced_size(tmp_path, monkeypatch):
    """For a 12-megapixel photo the JPEG decoder's own downscaling (by 2, 4 or
    8) is several times faster than a full decode (docs/benchmarks.md). The
    dataset decodes at the smallest such size that keeps 2x the crop."""
    big = tmp_path / "big.jpg"
    Image.open(make_photo(tmp_path / "src.png")).resize((1024, 768)).save(big, quality=90)
    assert data.load_image(big, draft=64)[0].size == (128, 96)    # 1/8: both sides still >= 64
    assert data.load_image(big, draft=150)[0].size == (256, 192)  # 1/4
    assert data.load_image(big)[0].size == (1024, 768)
    decoded = []
    load_image = data.load_image

    def recorded(path, **kw):
        rgb, alpha = load_image(path, **kw)
        decoded.append(rgb.size)
        return rgb, alpha
    monkeypatch.setattr(data, "load_image", recorded)
    rgb, _ = data.ImageFolder([str(big)], size=48, train=True)[0]
    assert decoded == [(128, 96)] and rgb.shape == (3, 48, 48)  # 1/8 keeps the 2 x 48 = 96 px short side


def test_balance_gives_each_source_its_share(tmp_path):
    files = [f"d/gcompris_{i}.jpg" for i in range(8)] + ["d/people_a.jpg", "d/people_b.jpg", "d/sub/gcompris_x.jpg"]
    assert [data.source_of(f) for f in files[::4]] == ["d/gcompris", "d/gcompris", "d/people"]
    assert [data.source_of(f) for f in ("d/Cover.jpg", "d/GCompris_9.JPG", "d/_x.jpg")] == ["d", "d/gcompris", "d"]
    assert data.source_shares(files, [1.0] * 11, "d", most=2) == "gcompris 73%, people 18%, and 1 more sources"
    share = lambda w, src: sum(x for f, x in zip(files, w) if data.source_of(f) == src) / sum(w)  # noqa: E731
    alike = data.balance_weights(files, 0)
    assert alike == [1.0] * 11 and share(alike, "d/gcompris") == 8 / 11
    even = data.balance_weights(files, 1)  # three sources: d/gcompris, d/people, d/sub/gcompris
    assert all(abs(share(even, s) - 1 / 3) < 1e-9 for s in ("d/gcompris", "d/people", "d/sub/gcompris"))
    # the loader draws in those proportions: 12 of 13 photos one source, the other one half the time
    for i in range(12):
        make_photo(tmp_path / f"many_{i}.jpg", size=(40, 40), seed=i)
    make_photo(tmp_path / "one_x.jpg", size=(40, 40), seed=99)
    folder = sorted(str(f) for f in tmp_path.iterdir())
    drawn = []

    class Counted(data.ImageFolder):
        def __getitem__(self, index):  # (file number, draw number), from data.Draws
            drawn.append(os.path.basename(self.files[index[0]]))
            return super().__getitem__(index)
    dataset = Counted(folder, size=8, train=True)
    torch.manual_seed(0)
    batches = data.batches(dataset, 13, 0, lambda reasons: None, weights=data.balance_weights(folder, 1))
    for _ in range(20):
        next(batches)
    assert 0.4 < drawn.count("one_x.jpg") / len(drawn) < 0.6, drawn.count("one_x.jpg")


def test_every_part_of_a_panorama_is_trained_on(tmp_path):
    """A 10:1 panorama, red on its left fifth, blue on its right fifth: the
    training crops come from all along it, not only from its centre."""
    pano = np.full((60, 600, 3), 128, np.uint8)
    pano[:, :120] = (200, 30, 30)
    pano[:, -120:] = (30, 30, 200)
    Image.fromarray(pano).save(tmp_path / "pano.png")
    dataset = data.ImageFolder([str(tmp_path / "pano.png")], size=16, train=True)
    crops = []
    for k in range(60):
        random.seed(k)
        crops.append(dataset[0][0].float().mean(dim=(1, 2)))  # (R, G, B) means
    assert any(c[0] > c[2] + 40 for c in crops) and any(c[2] > c[0] + 40 for c in crops)
