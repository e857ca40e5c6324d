"""The documentation says what is true: every link and anchor of README.md and
docs/*.md resolves, the course's scripts stay short enough to read, and the
exercise checker names the mistakes the course asks about.

Self-contained: the repository root goes on sys.path here, nothing comes from a
conftest. Run it alone with `python -m pytest tests/test_docs.py`.
"""
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
COURSE_SCRIPTS = ["docs/overfit_one_photo.py", "docs/attention_task.py", "docs/faces.py", "docs/exercises/check.py"]


# -----------------------------------------------------------------------------
# Markdown, as GitHub reads it


def prose(text):
    """The text outside fenced code blocks and inline code spans: what a link or
    a heading can be in (a `[x](y)` inside code is code)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"(`+)[^`].*?\1", "", text, flags=re.S)


def slug(heading):
    """GitHub's anchor for a heading: its text (links by their text, no tags),
    lowercased, every character but letters, digits, spaces, - and _ dropped,
    and spaces turned into -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text):
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub. The
    headings are read with their code spans (`--near` gives near), so from the
    text without the fences only."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", text, flags=re.M):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def links(text):
    """The targets of every inline link and image, and of HTML's href and src."""
    text = prose(text)
    targets = re.findall(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return targets + re.findall(r"""(?:href|src)=["']([^"']+)["']""", text)


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


def broken_links(page):
    """What is wrong with each relative link of a page: a file or folder that
    is not there, or an #anchor that no heading of its target page makes."""
    problems = []
    for target in links(read(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path \
            else os.path.join(ROOT, page)
        if not os.path.exists(resolved):
            problems.append(f"{target}: no {os.path.relpath(resolved, ROOT)}")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(read(resolved)):
            problems.append(f"{target}: no heading #{anchor} in {os.path.relpath(resolved, ROOT)}")
    return problems


def test_slugs_follow_githubs_rules():
    assert slug("Exercise 4: is attention query-dependent?") == "exercise-4-is-attention-query-dependent"
    assert slug("The 2x2: attention x CoordConv") == "the-2x2-attention-x-coordconv"
    assert slug("The full recipe (GPU)") == "the-full-recipe-gpu"
    assert slug("On the 45 validation photographs, by source") == "on-the-45-validation-photographs-by-source"
    assert slug("Colorize `demo/photos` with a\\*b\\*") == "colorize-demophotos-with-ab"
    assert slug("Read [the page](x.md) first") == "read-the-page-first"
    assert slug("snake_case and dashes - kept") == "snake_case-and-dashes---kept"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n### A\n") == {"a", "a-1", "a-2"}
    assert links("[x](a.md#b) `[y](no.md)` ![z](p.png \"t\")\n```\n[w](no.md)\n```\n") == ["a.md#b", "p.png"]


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_and_anchor_resolves(page):
    """Files, folders, images and #anchors, each from the page's own folder,
    the way GitHub and a local Markdown viewer resolve them."""
    assert links(read(page)), f"{page} links nothing: the link reader is broken"
    assert broken_links(page) == [], page


# -----------------------------------------------------------------------------
# The course's scripts: read in class, so short lines and a short overfit script


@pytest.mark.parametrize("script", sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.py"), recursive=True)))
def test_course_scripts_have_no_line_over_120_characters(script):
    long = [n for n, line in enumerate(open(script, encoding="utf-8"), 1) if len(line.rstrip("\n")) > 120]
    assert long == [], f"{os.path.relpath(script, ROOT)}: lines {long} are over 120 characters"


def test_overfit_one_photo_is_at_most_80_lines_and_the_method_comes_first():
    """The course reads it in class ("the whole method in 80 lines"): the
    method, the function overfit, stands before the flags and the guards."""
    lines = read("docs/overfit_one_photo.py").splitlines()
    assert len(lines) <= 80, len(lines)
    method = next(n for n, line in enumerate(lines) if line.startswith("def overfit("))
    guards = next(n for n, line in enumerate(lines) if "ArgumentParser(" in line)
    assert method < guards


def test_the_course_says_how_long_the_method_is():
    """course.md gives the length of overfit_one_photo.py's method, the function overfit: it is that long."""
    import ast
    said = re.search(r"the whole method in one function of (\d+) lines", read("docs/course.md"))
    assert said, "course.md no longer says how long the method is"
    tree = ast.parse(read("docs/overfit_one_photo.py"))
    method = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "overfit")
    assert int(said.group(1)) == method.end_lineno - method.lineno + 1


# -----------------------------------------------------------------------------
# The course's scripts in a pipe whose reader has left (`... | head`)


def run(args, cwd=ROOT, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, timeout=300, **kwargs)


@pytest.mark.parametrize("script,args", [
    ("docs/exercises/check.py", []),
    ("docs/faces.py", []),
    ("docs/overfit_one_photo.py", ["demo/photos/gnome-faces_tomatoes.jpg", "--steps", 2, "--size", 16,
                                   "--width", 4, "--out", "{tmp}/o.png"]),
    ("docs/attention_task.py", ["--steps", 1, "--width", 4, "--out", "{tmp}/task"])])
def test_course_scripts_stop_quietly_when_the_reader_of_their_output_leaves(tmp_path, script, args):
    """`python docs/faces.py | head -1`: no BrokenPipeError traceback on the
    terminal when head has read what it wanted and gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has left before the first line
    try:
        r = run([script, *(str(a).format(tmp=tmp_path) for a in args)], stdout=write_end, stderr=subprocess.PIPE,
                text=True)
    finally:
        os.close(write_end)
    assert "Traceback" not in r.stderr and "BrokenPipeError" not in r.stderr, r.stderr
    assert r.stderr.count("\n") <= 1 and r.returncode != 0, (r.returncode, r.stderr)  # it stopped, in a line at most


# -----------------------------------------------------------------------------
# Exercise 5's checker names the mistakes the course's questions are about


MISTAKES = [  # (the right code in solutions.py, the mistake, the exercise, what the checker's line must name)
    ("/ math.sqrt(C)", "", "exercise 2 attention_forward", "without the 1/sqrt(C)"),
    ("/ math.sqrt(C)", "/ C", "exercise 2 attention_forward", "divided by sqrt(C) twice"),
    ("/ math.sqrt(C)", "/ math.sqrt(C) / math.sqrt(C)", "exercise 2 attention_forward", "divided by sqrt(C) twice"),
    ("torch.cat([context, h], dim=1)", "torch.cat([h, context], dim=1)", "exercise 2 attention_forward",
     "the context goes first"),
    ("torch.cat([feats, tiled], dim=1)", "torch.cat([tiled, feats], dim=1)", "exercise 3 fusion_forward",
     "concatenate feats first"),
]


@pytest.mark.parametrize("right,wrong,exercise,names", MISTAKES)
def test_exercise_checker_names_the_courses_mistakes(tmp_path, right, wrong, exercise, names):
    solutions = read("docs/exercises/solutions.py")
    assert solutions.count(right) == 1, right  # else the variant would not be this one mistake
    (tmp_path / "mine.py").write_text(solutions.replace(right, wrong))
    r = run(["docs/exercises/check.py", tmp_path / "mine.py"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout.splitlines()[-1] == "3 of 4 pass", r.stdout + r.stderr
    line = next(line for line in r.stdout.splitlines() if line.startswith(exercise))
    assert "largest error" in line and "; that is " in line and names in line, line


def test_exercise_checker_names_a_missing_scale_on_the_fused_path_alone(tmp_path):
    """A student whose readable path is right and whose fused path leaves out
    the scale (scaled_dot_product_attention(..., scale=1)): named from the output alone."""
    mine = read("docs/exercises/solutions.py") + '''

_right = attention_forward


def attention_forward(attention, h, return_attention=False):
    if return_attention:
        return _right(attention, h, True)
    B, C, H, W = h.shape
    keys = h.flatten(2).transpose(1, 2)
    queries = attention.W_a(h).flatten(2).transpose(1, 2)
    context = F.scaled_dot_product_attention(queries, keys, keys, scale=1.0)
    return torch.tanh(attention.W_c(torch.cat([context.transpose(1, 2).reshape(B, C, H, W), h], dim=1))), None
'''
    (tmp_path / "mine.py").write_text(mine)
    r = run(["docs/exercises/check.py", tmp_path / "mine.py"], capture_output=True, text=True)
    line = next(line for line in r.stdout.splitlines() if line.startswith("exercise 2"))
    assert "out: largest error" in line and "return_attention=False" in line and "without the 1/sqrt(C)" in line, line


def test_exercise_checker_names_nothing_it_does_not_recognize(tmp_path):
    """A softmax over the wrong dimension keeps its own hint, and no mistake's name."""
    solutions = read("docs/exercises/solutions.py")
    wrong = solutions.replace("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=1)")
    (tmp_path / "mine.py").write_text(wrong)
    r = run(["docs/exercises/check.py", tmp_path / "mine.py"], capture_output=True, text=True)
    line = next(line for line in r.stdout.splitlines() if line.startswith("exercise 2"))
    assert "rows sum to" in line and "that is" not in line, line


# -----------------------------------------------------------------------------
# The README's account of the modules


def project_imports():
    """Each top-level module of the repository (tests aside) -> the set of
    the repository's modules it imports, read from its source."""
    import ast
    modules = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "*.py"))
               if not os.path.basename(p).startswith(("test_", "conftest"))}
    found = {}
    for name in modules:
        names = set()
        for node in ast.walk(ast.parse(read(f"{name}.py"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[name] = (names & modules) - {name}
    return found


def test_readme_says_what_each_module_imports():
    """The README's "Imports flow one way" paragraph names, for every module,
    the modules of ours it imports ("`a` and `b` import nothing of ours;
    `c` imports `a` and `b`"), and says true."""
    text = " ".join(read("README.md").split())
    paragraph = text[text.index("Imports flow one way"):]
    paragraph = paragraph[:paragraph.index(". ")]
    said = {}
    for subjects, verb, objects in re.findall(r"((?:`\w+`(?:, | and )?)+) (imports?) ((?:nothing of ours)|"
                                              r"(?:`\w+`(?:, | and )?)+)", paragraph):
        for subject in re.findall(r"`(\w+)`", subjects):
            said[subject] = set(re.findall(r"`(\w+)`", objects))
    assert said == project_imports()
