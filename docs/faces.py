"""Is the skin warm? Mean a* (red+, green-) and b* (yellow+, blue-) over hand-marked faces.

    python colorize.py demo/photos/kphotoalbum_bar55.jpg -o runs/faces-demo
    python docs/faces.py runs/faces-demo [more folders of NAME_color.png, one per model]

docs/faces.txt lists the faces of demo/photos's validation photos as boxes. For
each face this prints the original's mean a* and b* and those of NAME_color.png
in every folder given. Skin is warm: a* above 0 (the originals here: a* +12 to
+18, b* +9 to +20). A colorizer that never saw people paints it green (a* below 0).
"""
import os, sys  # noqa: E401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the repository's files
import data, lab, runs  # noqa: E401,E402


def read_boxes(path):
    """faces.txt -> [(photo name, (x0, y0, x1, y1))], in the file's order."""
    rows = [line.split() for line in open(path) if line.strip() and not line.startswith("#")]
    return [(name, tuple(int(v) for v in box)) for name, *box in rows]


def face_ab(image, box):
    """Mean (a*, b*) of a PIL image inside box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height):
        raise ValueError(f"box {box} is empty or outside the {image.width}x{image.height} picture "
                         "(docs/faces.txt's boxes are for each photo at its own size)")
    ab = lab.rgb_to_lab(data.to_tensor(image.convert("RGB").crop(box)))[1:]  # (3, h, w) uint8 -> (2, h, w)
    return tuple(ab.mean(dim=(1, 2)).tolist())


def main(folders, photos=os.path.join(REPO, "demo", "photos"), boxes=os.path.join(REPO, "docs", "faces.txt")):
    for folder in folders:
        if not os.path.isdir(folder):
            runs.fail(f"{folder}: " + ("not a folder" if os.path.exists(folder) else "no such folder")
                      + " (give folders of NAME_color.png)")
    means = {}
    for name, box in read_boxes(boxes):
        stem = os.path.splitext(name)[0]
        sources = [("original", os.path.join(photos, name))] + [(f, os.path.join(f, stem + "_color.png"))
                                                                 for f in folders]
        cells = []
        for label, path in sources:
            if not os.path.exists(path):
                continue
            image = runs.checked(data.open_image, path)[0]  # a broken file or a FIFO: one line, no hang
            a, b = runs.checked(face_ab, image, box, said=path)  # not a picture of that photo: one line
            means.setdefault(label, []).append(a)
            cells.append(f"{label}: a* {a:+5.1f} b* {b:+5.1f}")
        print(f"{stem} {box}: " + " | ".join(cells))
    for label, values in means.items():
        print(f"mean a* over {len(values)} faces: {label}: {sum(values) / len(values):+.1f}")
    return means


if __name__ == "__main__":
    runs.quiet_when_piped()  # `faces.py ... | head` (it writes nothing)
    parser = runs.ArgumentParser(description=__doc__.split("\n\n")[0])  # a bad argument: one line, exit status 2
    parser.add_argument("folders", nargs="*", metavar="FOLDER", help="a folder of NAME_color.png, one per model")
    main(parser.parse_args().folders)
