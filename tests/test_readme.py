"""The README's commands, run in the order they stand, at a tiny size: each
exits 0 and writes what the README says it writes.

A newcomer types them top to bottom into one folder (the repository, with a
photo.jpg of their own), so they run here in order in one folder: a copy of
the repository (its files linked) with a photo.jpg and folders of photos for
the README's placeholders. What is changed, and what is not run, follows the
rules below, visible and each for a reason; a command with no promise in
PROMISES fails the test, so the table follows the README.

Each command runs through conftest's run(), in a process of its own.
"""
import os
import re
import shlex
import shutil

from conftest import HERE as ROOT, run

# -----------------------------------------------------------------------------
# The rules

# Lines that are not run, and why.
SKIPPED = [(r"^pip ", "installs packages"),
           (r"^torchrun ", "several processes, one per GPU of a node"),
           (r"^python -m pytest", "the test suite itself")]
# The README's placeholders, and what stands for them here.
PLACEHOLDERS = [(r"\bPATH \[PATH \.\.\.\]", "photo.jpg scans/"),      # a file and a folder
                (r"\b(DIR|MY_PHOTOS)\b", "photos"),                      # a folder of 12 demo photos
                (r"runs/a\b", "runs/first"), (r"runs/b\b", "demo/colorizer.pt")]  # two models to compare
# train.py at a tiny size: a step takes a fraction of a second. (flag, value, when it is added if absent)
TINY_TRAIN = [("--max-steps", "2", "always"), ("--eval-every", "1", "always"), ("--workers", "0", "always"),
              ("--batch-size", "4", "always"), ("--size", "32", "not --resume"),  # a resumed run keeps its size
              ("--width", "8", "neither --resume nor --init"),  # they keep their checkpoint's width
              ("--inception", "none", "neither --resume nor --init")]  # auto downloads 200 MB
RESUMED_STEPS = "4"  # --resume continues a 2-step run: two steps more
# The Colorize section's list is of examples, each on its own: a line that found
# the outputs of the line before would keep them and write nothing. So each of
# its lines runs on fresh copies of the photos, with the runs trained so far.
EXAMPLES_AFTER = "## Colorize"
EXAMPLES_UNTIL = "From Python (a notebook):"

RUN_FILES = ("ckpt.pt", "best.pt", "log.csv", "loss.png", "samples.png")
DONE = r"done: \d+ steps, checkpoint \S+ckpt\.pt, best \S+best\.pt"
METRICS = r"metrics: \S*photo\.jpg: colorized PSNR [\d.]+ dB, ab MSE [\d.]+"  # one photo, one model
SIDE_BY_SIDE = r"metrics:   \S+ +against all-gray: PSNR [-+][\d.]+ dB"  # several photos and models: their means
# What each command promises, in the README's order: a pattern that finds it,
# the files it writes (new, in the folder it runs in) and a line of its output.
PROMISES = [
    (r"^python colorize\.py photo\.jpg --compare$", ["photo_color.png", "photo_compare.png"], None),
    (r"--out runs/first\b", [f"runs/first/{f}" for f in RUN_FILES], DONE),
    (r"--checkpoint runs/first --compare --metrics -o runs/first-colored",
     ["runs/first-colored/photo_color.png", "runs/first-colored/photo_compare.png"], METRICS),
    (r"^python colorize\.py photo\.jpg --attention --checkpoint demo/colorizer\.pt$",
     ["photo_attention.png", "photo_attention.html"], r"attention: photo\.jpg: rings 1-4: entropy .*"),
    # the Colorize section's examples
    (r"photo\.jpg scans/$", ["photo_color.png", "scans/a/x_color.png", "scans/a/y_color.png"], None),
    (r"scans/ -o colored/", ["colored/a/x_color.png", "colored/a/y_color.png"], None),
    (r"photo\.jpg --compare$", ["photo_color.png", "photo_compare.png"], None),
    (r"photo\.jpg --attention$", ["photo_color.png", "photo_attention.png", "photo_attention.html"],
     r"attention: photo\.jpg: rings 1-4: entropy .*"),
    (r"photo\.jpg --metrics$", ["photo_color.png"], METRICS),
    (r"val/ --checkpoint runs/first --checkpoint demo/colorizer\.pt --compare --metrics",
     ["val/v1_color.png", "val/v1_compare.png", "val/v2_color.png", "val/v2_compare.png"], SIDE_BY_SIDE),
    # the Train section
    (r"^python train\.py --data photos --max-steps", [f"out/{f}" for f in RUN_FILES], DONE),
    (r"--resume", [], DONE),
    (r"--out runs/no-inception", [f"runs/no-inception/{f}" for f in RUN_FILES], DONE),
    (r"--init demo/colorizer\.pt", [f"runs/tuned/{f}" for f in RUN_FILES], DONE)]


# -----------------------------------------------------------------------------
# The README's commands


def commands(text):
    """The shell commands of the README's code blocks (not ```python), in order,
    continuation lines joined, each with whether it is one of the Colorize
    section's examples: [(line, example)]. A line that starts with python, pip
    or torchrun is a command; a log line or a diagram is not."""
    found = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M):
        if match.group(1) not in ("", "sh", "bash", "shell"):
            continue
        example = text.rfind(EXAMPLES_AFTER, 0, match.start()) > text.rfind(EXAMPLES_UNTIL, 0, match.start())
        for line in match.group(2).replace("\\\n", " ").splitlines():
            line = " ".join(shlex.split(line, comments=True))  # no comment, single spaces
            if re.match(r"(python|pip|torchrun)\b", line):
                found.append((line, example))
    return found


def tiny(line):
    """A command as it runs here: placeholders filled, train.py at a tiny size."""
    for pattern, value in PLACEHOLDERS:
        line = re.sub(pattern, value, line)
    if " train.py " not in f"{line} ":
        return line
    resume, init = "--resume" in line, "--init" in line
    for flag, value, when in TINY_TRAIN:
        if flag == "--max-steps" and resume:
            value = RESUMED_STEPS
        if re.search(rf"{flag} \S+", line):
            line = re.sub(rf"{flag} \S+", f"{flag} {value}", line)
        elif when == "always" or (when == "not --resume" and not resume) or not (resume or init):
            line = f"{line} {flag} {value}"
    return line


def workspace(folder, runs=None):
    """A clone as a newcomer has it (the repository's files linked, runs/
    empty or `runs` linked), with photo.jpg (the windmills of the quick start's
    picture), photos/ (12 photos), scans/a/ (2) and val/ (2)."""
    os.makedirs(folder)
    for name in os.listdir(ROOT):
        if name.endswith(".py") or name in ("demo", "docs"):
            os.symlink(os.path.join(ROOT, name), os.path.join(folder, name))
    if runs:
        os.symlink(runs, os.path.join(folder, "runs"))
    demo = sorted(os.listdir(os.path.join(ROOT, "demo", "photos")))
    demo = [os.path.join(ROOT, "demo", "photos", n) for n in demo if n.endswith(".jpg")]
    shutil.copy(os.path.join(ROOT, "demo", "photos", "gcompris_categorization_0028.jpg"),
                os.path.join(folder, "photo.jpg"))
    for start, (sub, names) in enumerate([("photos", [f"p{i}.jpg" for i in range(12)]),
                                          ("scans/a", ["x.jpg", "y.jpg"]), ("val", ["v1.jpg", "v2.jpg"])]):
        os.makedirs(os.path.join(folder, sub))
        for k, name in enumerate(names):  # every 23rd photo: all sources, none twice
            shutil.copy(demo[(start * 7 + 23 * k) % len(demo)], os.path.join(folder, sub, name))
    return folder


def test_readme_commands_run_in_order_and_write_what_they_say(tmp_path):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    lines = [(line, example) for line, example in commands(text)
             if not any(re.match(pattern, line) for pattern, _ in SKIPPED)]
    assert len(lines) == len(PROMISES), [line for line, _ in lines]
    main = workspace(tmp_path / "readme")
    for number, ((line, example), (finds, files, said)) in enumerate(zip(lines, PROMISES)):
        line = tiny(line)
        assert re.search(finds, line), (finds, line)  # the README's order is the table's
        cwd = workspace(tmp_path / f"example{number}", runs=main / "runs") if example else main
        before = {f for f in files if os.path.lexists(os.path.join(cwd, f))}
        argv = shlex.split(line)
        assert argv[0] == "python", line
        r = run(*argv[1:], cwd=cwd, timeout=600)
        code, out, err = r.returncode, r.stdout, r.stderr
        assert code == 0 and "Traceback" not in err, (line, code, out[-2000:], err[-2000:])
        missing = [f for f in files if f in before or not os.path.exists(os.path.join(cwd, f))]
        assert not missing, (line, "not written:", missing, out[-2000:], err[-2000:])
        if said:
            assert any(re.match(said, printed) for printed in out.splitlines()), (line, said, out[-2000:])


def test_tiny_fills_the_placeholders_and_shrinks_only_train_py():
    assert tiny("python colorize.py PATH [PATH ...]") == "python colorize.py photo.jpg scans/"
    assert tiny("python train.py --data DIR --resume") == \
        "python train.py --data photos --resume --max-steps 4 --eval-every 1 --workers 0 --batch-size 4"
    assert tiny("python train.py --data MY_PHOTOS --init demo/colorizer.pt --size 128 --max-steps 300") == \
        "python train.py --data photos --init demo/colorizer.pt --size 32 --max-steps 2 --eval-every 1 " \
        "--workers 0 --batch-size 4"
    assert "--inception none" in tiny("python train.py --data DIR")
    assert tiny("python colorize.py val/ --checkpoint runs/a --checkpoint runs/b") == \
        "python colorize.py val/ --checkpoint runs/first --checkpoint demo/colorizer.pt"
