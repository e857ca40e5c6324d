"""The exercise checker (docs/exercises/check.py) is fair: the stubs as
shipped are "not written yet", the solutions pass, a subtly wrong one fails
on its line, a student's sys.exit or KeyboardInterrupt is that exercise's
failure, and bad arguments and Ctrl-C are one line."""

import os
import re

from conftest import HERE, assert_interrupted, interrupt_at, posix_only, run, script


EXERCISE_NAMES = ["coord_channels", "attention_forward", "fusion_forward", "colorization_loss"]


def solutions():
    return open(os.path.join(HERE, "docs", "exercises", "solutions.py")).read()


def test_exercise_checker_says_the_shipped_stubs_are_not_written_yet():
    r = run("docs/exercises/check.py")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines == [f"exercise {i} {name}: not written yet (NotImplementedError)"
                     for i, name in enumerate(EXERCISE_NAMES, 1)] + ["0 of 4 pass"], r.stdout
    assert r.stderr == ""


def test_exercise_solutions_pass_the_checker_by_flag_and_by_path():
    for args in (["--solutions"], [os.path.join(HERE, "docs", "exercises", "solutions.py")]):
        r = run("docs/exercises/check.py", *args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == [f"exercise {i} {name}: pass"
                                         for i, name in enumerate(EXERCISE_NAMES, 1)] + ["4 of 4 pass"]


def test_exercise_checker_catches_a_subtly_wrong_solution(tmp_path):
    solutions = open(os.path.join(HERE, "docs", "exercises", "solutions.py")).read()
    # (the exercise it breaks, the right code, the mistake, what its line must say)
    mistakes = [
        ("attention_forward", "torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=1)",
         "alpha: largest error"),  # the attention weights are compared themselves, not only the output
        ("coord_channels", "torch.stack([x_channel, y_channel])", "torch.stack([y_channel, x_channel])",
         "largest error"),
    ]
    for name, right, wrong, says in mistakes:
        assert solutions.count(right) == 1, right  # else the variant would not be this one mistake
        path = tmp_path / f"wrong_{name}.py"
        path.write_text(solutions.replace(right, wrong))
        r = run("docs/exercises/check.py", path)
        assert r.returncode == 1, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert len(lines) == 5 and lines[-1] == "3 of 4 pass", r.stdout
        failing = [line for line in lines[:-1] if not line.endswith(": pass")]
        assert len(failing) == 1 and failing[0].startswith(f"exercise {EXERCISE_NAMES.index(name) + 1} {name}: "), \
            r.stdout
        assert says in failing[0] and "(tolerance 1e-5)" in failing[0], failing[0]


def test_exercise_checker_bad_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not python")
    for args in ([tmp_path / "missing.py"], [tmp_path / "notes.txt"], [tmp_path],
                 ["--solutions", tmp_path / "missing.py"], ["--no-such-flag"]):
        r = run("docs/exercises/check.py", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stdout == "" and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, (args, r.stderr)


def test_exercise_checker_counts_a_sys_exit_or_keyboard_interrupt_of_the_students_as_a_failure(tmp_path):
    """sys.exit(0), at the top of the file or in an exercise, would end the
    check with status 0 and no line: a pass. A KeyboardInterrupt the student's
    code raises is that exercise's failure, not a traceback."""
    top = tmp_path / "exits_at_import.py"
    top.write_text(solutions() + "\nimport sys\nsys.exit(0)\n")
    r = run(script("docs/exercises/check.py"), top)
    assert r.returncode == 1 and r.stderr == "", r.stdout + r.stderr
    assert r.stdout.splitlines() == [f"{top} does not run: it calls sys.exit(0)", "0 of 4 pass"], r.stdout
    for name, body, says in [("coord_channels", "import sys; sys.exit(0)", "called sys.exit(0) instead of returning"),
                             ("fusion_forward", "raise KeyboardInterrupt", "raised KeyboardInterrupt")]:
        path = tmp_path / f"{name}.py"
        code = re.sub(rf"(def {name}\(.*\):\n)", rf"\1    {body}\n", solutions())
        assert code != solutions()
        path.write_text(code)
        r = run(script("docs/exercises/check.py"), path)
        assert r.returncode == 1 and r.stderr == "", r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[-1] == "3 of 4 pass" and [line for line in lines if not line.endswith(": pass")] == [
            f"exercise {EXERCISE_NAMES.index(name) + 1} {name}: {says}",
            "3 of 4 pass"], r.stdout


@posix_only  # Ctrl-C as SIGINT
def test_exercise_checker_ctrl_c_is_one_line_even_inside_the_students_code(tmp_path):
    """A real Ctrl-C while the student's function runs stops the check (130),
    in one line: it is not counted as that exercise's failure."""
    path = tmp_path / "slow.py"
    path.write_text(re.sub(r"(def attention_forward\(.*\):\n)", r"\1    import time; time.sleep(60)\n", solutions()))
    code, out, err = interrupt_at([script("docs/exercises/check.py"), path], "exercise 1 coord_channels: pass")
    assert_interrupted(code, out, err, "exercise 1 coord_channels: pass")
    assert "exercise 2" not in out
