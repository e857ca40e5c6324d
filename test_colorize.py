"""Tests: python -m pytest   (CPU only, a few minutes on two cores)

Each test compares against a reference where one exists: Lab against
scikit-image's published values, the Inception against timm's key set and
parameter count, weight files against the logits of the model that wrote them,
the attention against a loop over its formula, the CLIs run as a user runs them.

The file: imports, helpers and fixtures, then one section per promise of the
project, in this order, each with the tests that keep it:

 1. Lab conversion is exact (lab.py)
        test_rgb_to_lab_matches_published_values
        test_lab_to_rgb_matches_published_out_of_gamut_values
        test_lab_round_trip_batched_and_unbatched
        test_lab_in_strips_gives_the_same_numbers_as_one_pass
        test_uint8_input_gives_the_numbers_of_float_input
        test_rgb_to_l_is_the_l_of_rgb_to_lab
        test_lab_is_differentiable_everywhere_including_black
        test_lab_to_rgb_clips_to_unit_range
        test_network_scaling_round_trips
        test_gray_rgb_has_the_same_lightness_and_no_color
 2. The output keeps the input's L: colorization changes only a*b*
        test_colorize_py_keeps_the_inputs_lightness_in_every_mode_and_size
        test_the_python_api_keeps_the_inputs_lightness
 3. The colorizer is the paper's network (model.py)
        test_colorizer_output_has_the_input_size
        test_variants_differ_as_the_paper_says
        test_coords_and_attention_are_switched_one_at_a_time
        test_colorizer_refuses_bad_inputs
        test_attention_on_both_paths_is_the_papers_formula
        test_colorizer_returns_attention_maps_for_visualization
        test_replicate_padding_sees_no_edge_and_old_checkpoints_keep_zeros
        test_coord_channels_span_minus_one_to_one
        test_small_colorizer_overfits_a_colored_checkerboard
 4. The Inception and its weights load from every published form (inception.py)
        test_inception_matches_timm_keys_shapes_and_parameter_count
        test_inception_stem_sizes_at_299
        test_inception_input_is_normalized_with_mean_and_std_one_half
        test_inception_embedding_takes_gray_images_to_logits
        test_every_weight_format_loads_and_gives_identical_logits
        test_the_format_is_known_by_the_bytes_whatever_the_name
        test_weights_older_than_num_batches_tracked_load_and_nothing_else_may_be_missing
        test_safetensors_reader_reads_half_precision_and_empty_tensors
        test_safetensors_reader_refuses_malformed_files
        test_strict_loading_names_missing_unexpected_and_misshaped_keys
        test_a_file_that_is_not_weights_is_refused_clearly
        test_a_weights_path_that_is_not_a_regular_file_is_refused_before_it_is_opened
        test_download_checks_sha256_and_leaves_nothing_behind
        test_offline_download_explains_the_manual_steps
        test_download_without_a_length_shows_megabytes_and_any_failure_leaves_nothing
        test_two_downloads_at_once_each_write_their_own_file
        test_weights_timm_downloaded_are_used_without_a_download
        test_hf_hub_offline_never_downloads_and_a_hub_file_of_another_sha256_is_ignored
        test_an_empty_or_relative_xdg_cache_home_is_ignored
        test_a_cache_folder_that_cannot_be_made_or_written_is_one_line
 5. Photos are read as a viewer shows them (data.py)
        test_load_image_takes_any_mode_to_rgb
        test_float_and_16_bit_transparent_images_keep_their_tones
        test_a_photo_tagged_with_another_color_space_is_read_as_displayed
        test_load_image_applies_exif_orientation
        test_find_images_recurses_and_ignores_case
        test_folders_of_links_are_followed_and_link_cycles_end
        test_split_is_deterministic_holds_out_some_and_uses_train_val_folders
        test_empty_or_missing_folder_is_a_clear_error
        test_validation_is_never_the_training_set_and_a_broken_held_out_file_is_replaced
        test_dataset_crops_and_passes_over_bad_and_gray_files
        test_train_reports_corrupt_and_grayscale_files_and_goes_on
        test_cached_dataset_decodes_once_and_gives_the_same_crops
        test_training_decodes_large_jpegs_in_draft_mode
        test_balance_gives_each_source_its_share
        test_an_empty_val_folder_is_an_error_not_validation_on_training_photos
        test_byte_identical_copies_never_land_on_both_sides_of_the_split
        test_every_part_of_a_panorama_is_trained_on
 6. Training learns, and is judged against all-gray (train.py)
        test_train_cli_writes_checkpoint_samples_curves_and_resumes
        test_training_drives_the_loss_down
        test_train_keeps_the_best_checkpoint_and_the_weight_average
        test_diverging_loss_stops_and_never_saves_a_diverged_state
        test_train_with_inception_weights_records_them
        test_fine_tuning_averages_from_the_weights_it_starts_from
        test_init_fine_tunes_the_bundled_demo
        test_torchrun_two_processes_on_cpu_hold_the_same_weights
        test_coords_switch_through_train_and_init
        test_progress_follows_a_clock_that_only_goes_forward
        test_a_worker_that_fails_ends_the_run_in_seconds
 7. Checkpoints: written atomically, resumed, refused in one line when bad
        test_train_says_why_a_checkpoint_cannot_be_written
        test_train_refuses_a_missing_or_corrupt_checkpoint_to_resume
        test_resume_and_init_take_what_they_can_and_refuse_the_rest
        test_resume_writes_where_it_read_and_odd_run_states_are_one_line
        test_colorize_missing_or_incompatible_checkpoint_exits_2
        test_bad_checkpoints_get_a_short_safe_reason
        test_nan_and_malformed_checkpoints_are_one_line
        test_odd_checkpoint_entries_and_api_inputs_are_one_line
        test_fifo_checkpoints_are_refused_not_waited_on
        test_export_makes_a_half_precision_inference_copy
        test_export_blends_a_fine_tune_with_its_start_and_sets_the_size
        test_checkpoint_choice_prefers_best_pt_of_the_newest_run
        test_the_checkpoint_found_by_search_says_where_and_how_to_choose
        test_the_newest_run_search_does_not_follow_links_round_in_circles
        test_a_resumed_run_draws_the_same_photos_and_reaches_the_same_weights
        test_a_resume_after_photos_were_added_starts_the_best_over_and_says_so
        test_a_checkpoints_flags_and_state_of_the_wrong_kind_are_one_line_on_resume
 8. Run folders are never replaced unasked
        test_train_never_replaces_a_run_unasked
        test_a_run_written_while_another_started_is_seen_under_the_lock
        test_any_file_train_writes_makes_a_folder_a_run
        test_overwrite_removes_the_old_runs_files_before_the_new_run_writes
        test_a_second_train_on_the_same_out_is_refused_and_a_killed_one_leaves_no_stuck_lock
        test_run_folder_inside_data_and_colorize_outputs_are_not_trained_on
        test_an_unwritable_cache_is_one_line_and_leaves_no_empty_run_folder
        test_the_lock_is_never_written_through_a_link_nor_over_a_users_file
        test_start_up_removes_only_its_own_temporary_files
 9. Signals stop cleanly
        test_ctrl_c_saves_the_step_in_hand_and_resume_goes_on
        test_sigterm_and_sighup_save_like_ctrl_c
        test_a_second_ctrl_c_while_train_exits_is_one_line
        test_colorize_stopped_by_sigterm_exits_130_and_leaves_no_temporary_file
        test_colorize_whose_reader_left_stops_in_one_line
        test_ctrl_c_while_torch_loads_is_one_line
        test_ctrl_c_under_torchrun_stops_every_rank_in_one_line_each
10. Bad input is one line
        test_train_checks_every_flag_before_any_work
        test_train_checks_files_and_folders_before_any_work
        test_train_refuses_missing_or_empty_data_in_one_line
        test_compile_on_the_cpu_is_refused_in_one_line
        test_train_names_files_whose_names_are_not_utf8
        test_bad_flags_are_one_line_before_any_work
        test_an_attention_model_too_slow_at_its_size_on_the_cpu_says_so_before_work
        test_attention_at_a_size_that_would_need_gigabytes_is_refused
        test_colorize_reports_bad_files_and_writes_the_good_ones
        test_a_fifo_is_passed_over_in_a_folder_and_an_error_when_named
        test_a_folder_without_images_is_an_error_and_folders_take_what_files_take
        test_unreadable_folders_are_reported_not_skipped_silently
        test_names_that_are_not_utf8_are_shown_escaped
        test_a_file_name_with_a_newline_is_printed_on_one_line
        test_warnings_name_the_file_they_are_about
        test_attention_is_refused_at_a_checkpoints_own_size_that_would_need_gigabytes
        test_a_corrupt_exif_is_a_bad_file_like_any_other
        test_a_decoder_warning_in_training_names_its_file_once
11. colorize.py gives every input its own outputs
        test_colorize_every_mode_at_full_size_without_touching_inputs
        test_colorize_folder_into_out_dir_with_compare_attention_and_metrics
        test_colorize_compares_several_checkpoints_side_by_side
        test_inputs_that_share_an_output_name_each_get_their_own
        test_overwrite_never_writes_over_an_input_named_like_an_output
        test_colorize_a_24_megapixel_photo_in_bounded_memory
        test_python_api_colorizes_paths_and_images_and_raises_one_line_errors
        test_python_api_takes_arrays_turns_pil_images_upright_and_refuses_the_impossible
        test_temporary_files_are_never_written_through_links
        test_a_folder_at_an_output_name_is_an_error_for_that_input
        test_names_up_to_255_bytes_are_written
12. Where attention looks
        test_attention_statistics_tell_uniform_weights_from_peaked_ones
        test_the_attention_explorer_embeds_the_models_own_weights
        test_the_explorer_keeps_peaked_weights_and_its_size_bounded
        test_the_explorer_page_holds_any_file_name_as_text
        test_the_explorer_opens_from_disk_and_its_fragment_chooses_the_point
13. The metrics say how far they can be trusted
        test_psnr_and_colorfulness_against_hand_computed_values
        test_metrics_say_how_far_a_mean_over_few_images_can_be_trusted
        test_all_gray_is_the_inputs_own_lightness_with_no_color
14. The bundled demo model
        test_bundled_demo_checkpoint_is_small_and_loads_with_weights_only
        test_a_fresh_clone_colorizes_with_the_bundled_demo
        test_the_demo_paints_the_held_out_faces_warm
15. The course (docs/)
        test_overfit_one_photo_learns_its_photo
        test_faces_reads_warm_skin_in_the_originals_and_green_in_a_green_copy
        test_course_commands_keep_their_promises
        test_exercise_checker_says_the_shipped_stubs_are_not_written_yet
        test_exercise_solutions_pass_the_checker_by_flag_and_by_path
        test_exercise_checker_catches_a_subtly_wrong_solution
        test_exercise_checker_bad_arguments_are_one_line_errors
        test_overfit_one_photo_never_replaces_a_file_unasked_and_says_a_bad_out_in_one_line
        test_attention_task_runs_and_keeps_its_outputs
        test_attention_task_bad_flags_are_one_line
        test_attention_task_mine_says_which_exercise_is_missing
        test_attention_task_measures_the_receptive_field_of_an_untrained_baseline_that_passes_no_gradient
        test_attention_task_says_an_unwritable_out_before_training
        test_attention_task_ctrl_c_is_one_line_and_leaves_no_half_written_file
        test_overfit_one_photo_refuses_flags_that_cannot_work_before_any_work
        test_overfit_one_photo_refuses_a_photo_without_color
        test_overfit_one_photo_that_diverges_writes_no_picture
        test_overfit_one_photo_says_an_unwritable_out_before_training
        test_overfit_one_photo_ctrl_c_is_one_line_and_writes_nothing
        test_faces_says_a_bad_picture_or_argument_in_one_line
        test_exercise_checker_counts_a_sys_exit_or_keyboard_interrupt_of_the_students_as_a_failure
        test_exercise_checker_ctrl_c_is_one_line_even_inside_the_students_code
16. Benchmarks and the GPU check
        test_bench_flags_are_one_line_errors_before_any_work
        test_gpu_check_runs_every_step_on_the_cpu
        test_gpu_check_records_what_did_not_run_and_fails
        test_bench_photos_it_cannot_use_and_a_huge_batch_are_one_line_before_any_work
        test_bench_measures_with_one_jpeg_and_ctrl_c_after_colorize_is_one_line
"""


import argparse
import base64
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import attention_maps
import colorize
import data
import inception
import lab
import model
import outputs
import runs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "docs"))
import faces  # noqa: E402  (docs/faces.py)


# -----------------------------------------------------------------------------
# Helpers and fixtures

torch.set_num_threads(2)


# Helpers: running the scripts as a user does

HERE = os.path.dirname(os.path.abspath(__file__))


# Each command-line test runs a script in a process of its own, as a user does,
# and a fresh Python spends about two seconds importing torch before the
# script's first line: over the suite, most of its time. So run() asks a helper
# process that imported torch, numpy and PIL once (and has run nothing since, so
# it may fork) to fork a child per command. The child is still a process of its
# own: its argv, working folder, environment, stdout, stderr, exit status, and
# atexit clean-up, as `python SCRIPT ARGS` would have them.
FORK_SERVER = r"""
import atexit, gc, json, os, runpy, signal, sys, threading, time, traceback
import numpy, PIL.Image, torch
reply = os.fdopen(os.dup(1), "w")
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, path, flags in [(0, os.devnull, os.O_RDONLY), (1, req["stdout"], os.O_WRONLY),
                                (2, req["stderr"], os.O_WRONLY)]:
            os.dup2(os.open(path, flags), fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        numpy.random.seed()  # a fresh process would not share its parent's numpy seed
        code = 0
        try:
            argv = req["argv"]
            if argv[0] == "-c":
                sys.argv, sys.path[0] = ["-c", *argv[2:]], ""
                exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
            elif argv[0] == "-m":
                sys.argv, sys.path[0] = argv[1:], os.getcwd()
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            elif not os.path.isfile(argv[0]):
                print(f"python: can't open file {argv[0]!r}", file=sys.stderr)
                code = 2
            else:
                sys.argv, sys.path[0] = argv, os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else (print(e.code, file=sys.stderr), 1)[1])
        except KeyboardInterrupt:
            traceback.print_exc()
            code = -signal.SIGINT  # as Python: killed by the signal
        except BaseException:
            traceback.print_exc()
            code = 1
        threading._shutdown()  # what the interpreter does at exit: threads, then atexit, then objects freed
        atexit._run_exitfuncs()
        gc.collect()
        sys.stdout.flush(), sys.stderr.flush()
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code)
    deadline = time.monotonic() + (req["timeout"] or float("inf"))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
        time.sleep(0.01)
    reply.write(json.dumps(code) + "\n")
    reply.flush()
"""


_fork_server = []


def run(*cmd, timeout=300, cwd=HERE, env=None):
    """python CMD... in cwd: a subprocess.CompletedProcess, as subprocess.run(capture_output=True, text=True).
    An environment that changes what Python or OpenMP read at start-up gets a fresh process."""
    env = dict(os.environ if env is None else env)
    startup = lambda e: {k: v for k, v in e.items() if k.startswith(("PYTHON", "OMP_", "MKL_"))}  # noqa: E731
    if startup(env) != startup(os.environ):
        return subprocess.run([sys.executable, *map(str, cmd)], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)
    if not _fork_server:
        _fork_server.append(subprocess.Popen([sys.executable, "-c", FORK_SERVER], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True, cwd=HERE))
    server = _fork_server[0]
    argv = [str(c) for c in cmd]
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        open(out, "w").close(), open(err, "w").close()
        try:
            server.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env,
                                           "stdout": out, "stderr": err, "timeout": timeout}) + "\n")
            server.stdin.flush()
            code = json.loads(server.stdout.readline())
        except BaseException:  # the helper may be out of step now: a new one for the next command
            server.kill()
            _fork_server.clear()
            raise
        stdout, stderr = open(out).read(), open(err).read()
    if code is None:
        raise subprocess.TimeoutExpired([sys.executable, *argv], timeout, stdout, stderr)
    return subprocess.CompletedProcess([sys.executable, *argv], code, stdout, stderr)


def one_error_line(r, *words):
    """A refusal as a user sees it: exit 2, one line on stderr, no traceback."""
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.strip().count("\n") == 0, r.stderr
    for w in words:
        assert str(w) in r.stderr, r.stderr


def colorize_cli(*args, cwd=HERE, timeout=120):
    return run(os.path.join(HERE, "colorize.py"), *args, cwd=cwd, timeout=timeout)


# Helpers: photos

def make_photo(path, size=(96, 64), seed=0, **save_args):
    """A small color picture: smooth gradients in two hues plus noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = rng.uniform(0.2, 0.8, 3)
    img = np.stack([base[0] + 0.3 * x, base[1] + 0.3 * y, base[2] - 0.3 * x * y], -1)
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path, **save_args)
    return path


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    for i in range(6):
        make_photo(d / f"p{i}.jpg", size=(80 + 8 * i, 64), seed=i)
    return d


def odd_images(d):
    """Every Pillow mode colorize.py promises, at an odd size (333 x 517)."""
    src = Image.open(make_photo(d / "src.png", size=(333, 517)))
    gray16 = Image.fromarray(np.asarray(src.convert("L"), dtype=np.uint16) * 257)
    p_alpha = src.convert("P")
    p_alpha.info["transparency"] = 0
    made = {"gray.png": src.convert("L"), "gray_alpha.png": src.convert("LA"), "rgb.jpg": src,
            "rgba.png": src.convert("RGBA"), "palette.png": src.convert("P"),
            "palette_alpha.png": p_alpha, "cmyk.jpg": src.convert("CMYK"),
            "gray16.png": gray16, "gray16.tif": gray16}
    for name, im in made.items():
        im.save(d / name)
    os.remove(d / "src.png")
    return sorted(made)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


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


def checkerboard(size=64, cell=16):
    """An RGB checkerboard of orange and blue squares: two lightnesses, two colors."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((yy // cell + xx // cell) % 2).bool()
    rgb = torch.empty(3, size, size)
    for c, (a, b) in enumerate(zip((1.0, 0.9, 0.2), (0.1, 0.2, 0.8))):
        rgb[c] = torch.where(mask, torch.tensor(a), torch.tensor(b))
    return rgb


def lightness(image):
    """L* (H, W), 0 to 100, of a PIL image's RGB channels."""
    return lab.rgb_to_lab(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))[0]


def assert_keeps_lightness(source, out, what):
    """out, colorized from source (the RGB picture as data.py reads the input),
    is at source's size and has source's L pixel for pixel, to within the
    rounding to 8 bits (0.25 L* at most), wherever lab_to_rgb clipped no channel
    at the gamut's edge; and it has color, so a*b* did change."""
    assert out.size == source.size, (what, out.size, source.size)
    rgb = np.array(out.convert("RGB"))
    inside = torch.from_numpy(((rgb > 0) & (rgb < 255)).all(-1))  # no channel clipped here
    assert inside.float().mean() > 0.95, (what, inside.float().mean())
    difference = (lightness(out) - lightness(source)).abs()[inside]
    assert difference.max() < 0.3, (what, difference.max())
    chroma = lab.rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1))[1:].norm(dim=0).mean()
    assert chroma > 3, (what, chroma)


# Helpers: runs and checkpoints

TINY = ["--inception", "none", "--width", "8", "--size", "32", "--batch-size", "4", "--workers", "0"]


@pytest.fixture(scope="module")
def tiny_ckpt(photo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    return out / "ckpt.pt"


def fake_run(folder, step, files=("best.pt", "ckpt.pt"), **config):
    """A run folder as train.py writes it, with an untrained tiny model. ckpt.pt's
    "model" weights are the wrong shape: only its "ema" weights load."""
    folder.mkdir(parents=True, exist_ok=True)
    config = model.ColorizerConfig(**{"width": 8, "global_branch": False, **config})
    weights = model.Colorizer(config).state_dict()
    common = {"config": dataclasses.asdict(config), "step": step, "inception": None, "args": {"size": 32},
              "history": [{"step": step, "val_mse": step / 1000}]}
    if "best.pt" in files:
        torch.save({**common, "model": weights}, folder / "best.pt")
    if "ckpt.pt" in files:
        torch.save({**common, "model": {k: torch.zeros(1) for k in weights}, "ema": weights,
                    "optimizer": {}, "best_mse": step / 1000}, folder / "ckpt.pt")
    return folder


DEMO = os.path.join(HERE, "demo", "colorizer.pt")


# Windmills under a blue sky, one of the photographs held out from the demo's training
HELD_OUT_PHOTO = os.path.join(HERE, "demo", "photos", "gcompris_categorization_0028.jpg")


def signal_a_training_run(photo_dir, out_dir, signum, max_steps=100000):
    """Start a train.py with a loader worker that cannot finish (max_steps),
    wait until it has logged a training step, then send signum to its whole
    process group. -> (exit status, stdout, stderr, the last step logged before
    the signal). Generous deadlines: the machine may be busy."""
    cmd = [sys.executable, "train.py", "--data", str(photo_dir), "--out", str(out_dir), "--max-steps",
           str(max_steps), "--eval-every", str(max_steps), "--log-every", "1", *TINY, "--workers", "1"]
    p = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    out, err = [], []

    def collect(stream, lines):
        for line in stream:
            lines.append(line)
    readers = [threading.Thread(target=collect, args=pipe, daemon=True) for pipe in ((p.stdout, out), (p.stderr, err))]
    for reader in readers:
        reader.start()
    step_line = re.compile(rf"step (\d+)/{max_steps} \| loss")
    try:
        deadline = time.monotonic() + 300
        while not any(step_line.match(line) for line in list(out)):
            assert p.poll() is None, "train.py ended before its first step:\n" + "".join(out + err)[-3000:]
            assert time.monotonic() < deadline, "no training step logged in 300 s:\n" + "".join(out + err)[-3000:]
            time.sleep(0.05)
        logged = max(int(m.group(1)) for m in map(step_line.match, list(out)) if m)
        os.killpg(p.pid, signum)
        p.wait(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    for reader in readers:
        reader.join(timeout=60)
    return p.returncode, "".join(out), "".join(err), logged


def _held_out(name):
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big") / 2**32


# Helpers: Lab

# scikit-image 0.26 rgb2lab, its published values
RGB2LAB = [
    ((1, 0, 0), (53.240588, 80.092308, 67.202751)),
    ((0, 1, 0), (87.735099, -86.183030, 83.179703)),
    ((0, 0, 1), (32.295673, 79.185591, -107.857300)),
    ((1, 1, 1), (100.0, -0.002455, 0.004653)),
    ((0.5, 0.5, 0.5), (53.388965, -0.001468, 0.002784)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
]


# scikit-image lab2rgb, out of gamut, to 3 decimals
LAB2RGB = [
    ((50, -12, 85), (0.501, 0.481, 0.0)),
    ((50, 12, -85), (0.0, 0.482, 1.0)),
    ((90, -4, -47), (0.578, 0.914, 1.0)),
]


def pixel(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype).view(3, 1, 1)


# Helpers: the colorizer

VARIANTS = [("attention", True), ("attention", False), ("baseline", True), ("baseline", False)]


def attention_by_the_formula(att, h):
    """model.Attention's formula (paper 3.5) computed independently: a loop over
    query positions t, in float64, from the module's own weights W_a and W_c.
    h (B, C, H, W) -> out (B, C, H, W), alpha (B, N, N), positions s = y * W + x."""
    B, C, H, W = h.shape
    W_a = att.W_a.weight[:, :, 0, 0].detach().double()  # (C, C)
    W_c = att.W_c.weight[:, :, 0, 0].detach().double()  # (C, 2C)
    out = torch.zeros(B, C, H, W, dtype=torch.float64)
    alpha = torch.zeros(B, H * W, H * W, dtype=torch.float64)
    for b in range(B):
        positions = [h[b, :, y, x].double() for y in range(H) for x in range(W)]
        for t, h_t in enumerate(positions):
            q_t = W_a @ h_t
            scores = torch.stack([q_t @ h_s for h_s in positions]) / math.sqrt(C)
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            c_t = sum(w * h_s for w, h_s in zip(weights, positions))
            out[b, :, t // W, t % W] = torch.tanh(W_c @ torch.cat([c_t, h_t]))
            alpha[b, t] = weights
    return out, alpha


# Helpers: the Inception and its weight files

@pytest.fixture(scope="module")
def inception_net():
    """A randomly initialized Inception with non-trivial BatchNorm statistics,
    so a wrongly loaded buffer changes the logits."""
    torch.manual_seed(0)
    net = inception.InceptionResNetV2()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(1)
    return torch.rand(2, 3, 99, 99) * 2 - 1  # small input: the net only needs >= 75 px


def write_safetensors(tensors, path, metadata=None):
    """Writes the safetensors layout by hand (the reference format, so the
    reader is tested against bytes it did not write itself)."""
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.uint8: "U8"}
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def raw_safetensors(path, header, data=b"", length=None):
    head = json.dumps(header).encode() if isinstance(header, dict) else header
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head) if length is None else length) + head + data)
    return path


@pytest.fixture(scope="module")
def weight_files(inception_net, tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    state = inception_net.state_dict()
    files = {}
    files["safetensors"] = d / "model.safetensors"
    write_safetensors(state, files["safetensors"], metadata={"format": "pt"})
    files["pth"] = d / "plain.pth"
    torch.save(state, files["pth"])
    files["bin nested state_dict"] = d / "pytorch_model.bin"
    torch.save({"state_dict": state, "epoch": 3}, files["bin nested state_dict"])
    files["pt nested model"] = d / "ckpt.pt"
    torch.save({"model": state}, files["pt nested model"])
    # Cadene's pretrainedmodels: last_linear, 1001 classes with background at row 0
    cadene = {k.replace("classif.", "last_linear."): v for k, v in state.items()}
    cadene["last_linear.weight"] = torch.cat([torch.randn(1, 1536), state["classif.weight"]])
    cadene["last_linear.bias"] = torch.cat([torch.randn(1), state["classif.bias"]])
    files["cadene 1001"] = d / "inceptionresnetv2-520b38e4.pth"
    torch.save(cadene, files["cadene 1001"])
    return files


class FakeResponse(io.BytesIO):
    headers = {"Content-Length": "11"}


def isolated_caches(monkeypatch, tmp_path):
    """This project's and Hugging Face's caches under tmp_path, online: the
    user's own caches and settings stay out of the test. Returns cache_dir()."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "xdg" / "colorize"


def no_network(url, timeout):
    raise AssertionError("nothing should be downloaded here")


def hub_snapshot(hub, data):
    """A file as huggingface_hub keeps it: blobs/<sha256>, linked from snapshots/<revision>/."""
    repo = hub / "models--timm--inception_resnet_v2.tf_in1k"
    sha = hashlib.sha256(data).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    (repo / "snapshots" / "e5a4b3c2").mkdir(parents=True)
    os.symlink(os.path.join("..", "..", "blobs", sha), repo / "snapshots" / "e5a4b3c2" / "model.safetensors")
    return repo / "snapshots" / "e5a4b3c2" / "model.safetensors", sha


# Helpers: attention pages

def explorer_weights(page, n):
    """The weights an explorer page embeds, as the (Q, N) floats it draws."""
    codes = torch.frombuffer(bytearray(base64.b64decode(page["weights"])), dtype=torch.uint8)
    return attention_maps.dequantize(codes.view(-1, n), n)


def browser():
    """Debian's headless Chromium, or None (.ci/run installs it; a bare machine may lack it)."""
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


# Helpers: the course

TINY_TASK = ("--steps", "5", "--width", "4")  # docs/attention_task.py: two models of width 4, five steps each
TINY_COURSE = [(r"--max-steps \d+", "--max-steps 2"), (r"--eval-every \d+", "--eval-every 1"),
               (r"--size 128", "--size 32"), (r"--width 32", "--width 8"), (r"--workers 1", "--workers 0"),
               (r"(overfit_one_photo\.py \S+)", r"\1 --steps 3 --size 32 --width 4"),
               (r"(attention_task\.py)", r"\1 --steps 3 --width 4")]
# What each command block of docs/course.md promises, in the page's order: a
# pattern that finds the block, its exit status, the files it writes (under
# the repository's runs/), and what the last line of its output says.
DONE = r"done: \d+ steps, checkpoint runs/\S+/ckpt\.pt, best runs/\S+/best\.pt \(validation MSE [\d.]+\)\..*"
COURSE_PROMISES = [
    (r"-o runs/lab1 ", 0, [f"lab1/{p}_{s}" for p in ("gcompris_categorization_0028", "kphotoalbum_bar55")
                          for s in ("color.png", "compare.png", "attention.png", "attention.html")],
     r"metrics:   colorized +against all-gray: PSNR [-+][\d.]+ dB \(standard error [\d.]+\), ab MSE [\d.]+x .*"),
    (r"overfit_one_photo", 0, ["overfit.png"], r"wrote runs/overfit\.png: gray \| prediction \| original"),
    (r"--out runs/first", 0, [f"first/{f}" for f in ("ckpt.pt", "best.pt", "log.csv", "loss.png", "samples.png")],
     DONE),
    (r"-o runs/lab4 ", 0, ["lab4/kphotoalbum_bar55_attention.html", "lab4-first/gcompris_categorization_0028_attention.png"],
     r"attention: demo/photos/gcompris_categorization_0028\.jpg: rings 1-4: entropy [\d./]+ of uniform, .*"),
    (r"exercises/check\.py", 1, [], r"0 of 4 pass"),  # the stubs as shipped: the students' to write
    (r"attention_task\.py\n.*--near", 0, [f"attention-{d}/attention_task.{e}" for d in ("task", "near")
                                          for e in ("png", "html")],
     r"baseline \d+\.\d\dx all-gray, attention \d+\.\d\dx all-gray"),
    (r"--mine", 2, [], None),  # as shipped: "error: --mine: ... is not written yet", on stderr
    (r"--out runs/baseline", 0, ["baseline/best.pt", "no-coords/best.pt"], DONE),
    (r"--balance 1", 0, ["plain/ckpt.pt", "balanced/ckpt.pt", "lab8-balanced/kphotoalbum_bar55_compare.png"],
     r"mean a\* over \d faces: runs/lab8-balanced: [-+][\d.]+"),
    (r"--padding zeros", 0, ["zeros/best.pt"],
     r"runs/no-coords chroma on the outer 4 pixels: [-\d.]+ in the middle: [-\d.]+")]


EXERCISE_NAMES = ["coord_channels", "attention_forward", "fusion_forward", "colorization_loss"]


# -----------------------------------------------------------------------------
# 1. Lab conversion is exact (lab.py)
# sRGB to CIELAB and back against scikit-image's values: batched, in strips, from uint8, differentiable, clipped.

@pytest.mark.parametrize("rgb,expected", RGB2LAB)
def test_rgb_to_lab_matches_published_values(rgb, expected):
    got = lab.rgb_to_lab(pixel(rgb)).flatten()
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-3), got


@pytest.mark.parametrize("lab_value,expected", LAB2RGB)
def test_lab_to_rgb_matches_published_out_of_gamut_values(lab_value, expected):
    got = lab.lab_to_rgb(pixel(lab_value)).flatten()
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1.5e-3), got


def test_lab_round_trip_batched_and_unbatched():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 16, 24, dtype=torch.float64)
    batched = lab.rgb_to_lab(rgb)
    assert batched.shape == rgb.shape
    assert torch.allclose(lab.rgb_to_lab(rgb[1]), batched[1])  # (3, H, W) gives the same
    assert torch.allclose(lab.lab_to_rgb(batched), rgb, atol=1e-6)
    L = batched[:, 0]
    assert L.min() >= 0 and L.max() <= 100
    # float32 agrees with float64 closely enough for 8-bit images
    assert torch.allclose(lab.rgb_to_lab(rgb.float()).double(), batched, atol=2e-3)
    for empty in ((0, 3, 4, 4), (1, 3, 0, 4), (1, 3, 4, 0)):  # no pixels: no error either
        assert lab.lab_to_rgb(lab.rgb_to_lab(torch.zeros(empty, dtype=torch.uint8))).shape == empty


def test_lab_in_strips_gives_the_same_numbers_as_one_pass():
    x = torch.rand(2, 3, 37, 23, dtype=torch.float64)
    one_pass = lab._rgb_to_lab(x)
    # 2-row strips; equal up to the order of float64 sums in the 3x3 products
    assert torch.allclose(lab._in_strips(lab._rgb_to_lab, x, elements=100), one_pass, rtol=0, atol=1e-12)
    assert torch.allclose(lab._in_strips(lab._lab_to_rgb, one_pass, elements=100), lab._lab_to_rgb(one_pass),
                          rtol=0, atol=1e-12)
    big = torch.rand(3, 700, 600)  # over 2**20 values: rgb_to_lab splits it itself
    assert torch.allclose(lab.rgb_to_lab(big), lab._rgb_to_lab(big), atol=1e-4)  # float32, L up to 100


def test_uint8_input_gives_the_numbers_of_float_input():
    rgb8 = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    as_float = lab.rgb_to_lab(rgb8.double() / 255)
    assert lab.rgb_to_lab(rgb8).dtype == torch.float32
    assert torch.allclose(lab.rgb_to_lab(rgb8).double(), as_float, atol=1e-3)
    assert torch.allclose(lab.rgb_to_l(rgb8).double(), as_float[:, :1], atol=1e-3)
    # published values hold through the table too
    assert torch.allclose(lab.rgb_to_lab(torch.tensor([255, 0, 0], dtype=torch.uint8).view(3, 1, 1)).flatten(),
                          torch.tensor(RGB2LAB[0][1]), atol=1e-3)


def test_rgb_to_l_is_the_l_of_rgb_to_lab():
    rgb = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    assert torch.allclose(lab.rgb_to_l(rgb), lab.rgb_to_lab(rgb)[:, :1], rtol=0, atol=1e-10)


def test_lab_is_differentiable_everywhere_including_black():
    rgb = torch.cat([torch.zeros(1, 3, 2, 2), torch.rand(1, 3, 2, 2)]).requires_grad_()
    lab.lab_to_rgb(lab.rgb_to_lab(rgb)).sum().backward()
    assert torch.isfinite(rgb.grad).all()


def test_lab_to_rgb_clips_to_unit_range():
    wild = torch.tensor([[100.0, 120.0, -120.0], [0.0, -100.0, 100.0]]).T.reshape(3, 1, 2)
    out = lab.lab_to_rgb(wild)
    assert out.min() >= 0 and out.max() <= 1


def test_network_scaling_round_trips():
    lab_img = lab.rgb_to_lab(torch.rand(2, 3, 8, 8))
    lightness, ab = lab.lab_to_net(lab_img)
    assert lightness.shape == (2, 1, 8, 8) and ab.shape == (2, 2, 8, 8)
    assert lightness.min() >= -1 and lightness.max() <= 1 and ab.abs().max() <= 1
    assert torch.allclose(lab.net_to_lab(lightness, ab), lab_img)


def test_gray_rgb_has_the_same_lightness_and_no_color():
    lightness, _ = lab.lab_to_net(lab.rgb_to_lab(torch.rand(1, 3, 8, 8, dtype=torch.float64)))
    gray = lab.gray_rgb(lightness)
    assert gray.shape == (1, 3, 8, 8)
    back = lab.rgb_to_lab(gray)
    assert torch.allclose(back[:, :1] / 50 - 1, lightness, atol=1e-4)
    assert back[:, 1:].abs().max() < 0.01


# -----------------------------------------------------------------------------
# 2. The output keeps the input's L: colorization changes only a*b*
# colorize.py and colorize.colorize(): the output's L is the input's, pixel for pixel, at full resolution.

def test_colorize_py_keeps_the_inputs_lightness_in_every_mode_and_size(tmp_path):
    """The central promise: colorization changes only a*b*. colorize.py on every
    mode it takes (333 x 517), a small photo (40 x 32) and a 1000 x 120 panorama
    (wider than the network's 4:1): each output's L is its input's, pixel for
    pixel, at full resolution, though the network saw a copy 64 px high (32 for
    the panorama)."""
    names = odd_images(tmp_path) + ["small.png", "wide.jpg"]
    make_photo(tmp_path / "small.png", size=(40, 32), seed=1)
    make_photo(tmp_path / "wide.jpg", size=(1000, 120), seed=2)
    r = colorize_cli(*[tmp_path / n for n in names], "--checkpoint", DEMO, "--size", 64)
    assert r.returncode == 0, r.stderr
    for n in names:
        stem, ext = os.path.splitext(n)  # gray16.png and gray16.tif: one output each, named by extension
        out = Image.open(tmp_path / (stem + ("_" + ext[1:] if stem == "gray16" else "") + "_color.png"))
        assert_keeps_lightness(data.load_image(tmp_path / n)[0], out, n)


def test_the_python_api_keeps_the_inputs_lightness(tmp_path):
    """colorize.colorize() from a notebook keeps the L of whatever it is given:
    a path, PIL images of several modes, arrays of 8-bit color and float gray."""
    colorizer = colorize.load(DEMO, device="cpu")._replace(size=64)  # the network's copy: 64 px high
    path = make_photo(tmp_path / "p.png", size=(250, 170))
    photo = Image.open(path)
    for what, image in [("path", path), ("RGB", photo.convert("RGB")), ("L", photo.convert("L")),
                        ("RGBA", photo.convert("RGBA")), ("uint8 array", np.asarray(photo)),
                        ("float gray array", np.asarray(photo.convert("L"), dtype=np.float32) / 255)]:
        source, _ = data.image_input(image)
        assert_keeps_lightness(source, colorize.colorize(image, colorizer), what)


# -----------------------------------------------------------------------------
# 3. The colorizer is the paper's network (model.py)
# Shapes, the variants and their switches, CoordConv, padding, the attention against its formula, overfitting.

@pytest.mark.parametrize("variant,global_branch", VARIANTS)
@pytest.mark.parametrize("size", [(64, 64), (48, 104)])
def test_colorizer_output_has_the_input_size(variant, global_branch, size):
    net = model.Colorizer(model.ColorizerConfig(variant=variant, global_branch=global_branch, width=16))
    lightness = torch.rand(2, 1, *size) * 2 - 1
    ab = net(lightness, torch.randn(2, 1000) if global_branch else None)
    assert ab.shape == (2, 2, *size)


def test_variants_differ_as_the_paper_says():
    att = model.Colorizer(model.ColorizerConfig(variant="attention"))
    base = model.Colorizer(model.ColorizerConfig(variant="baseline"))
    assert att.attention is not None and att.encoder.layers[0][0].in_channels == 3  # L + x + y
    assert base.attention is None and base.encoder.layers[0][0].in_channels == 1
    assert att.fusion.conv.in_channels == 256 + 1000
    nog = model.Colorizer(model.ColorizerConfig(global_branch=False))
    assert nog.fusion.conv.in_channels == 256


def test_coords_and_attention_are_switched_one_at_a_time():
    """The 2x2 of the course's ablation: attention and CoordConv apart, the
    paper's model (both) and Deep Koalarization's (neither) as the defaults."""
    for variant, coords, channels in [("attention", False, 1), ("baseline", True, 3)]:
        net = model.Colorizer(model.ColorizerConfig(variant=variant, coords=coords, width=8, global_branch=False))
        assert (net.attention is not None) == (variant == "attention")
        assert net.encoder.layers[0][0].in_channels == channels
    old = {"variant": "baseline", "global_branch": False, "width": 8}  # a checkpoint from before --coords
    assert model.ColorizerConfig.from_dict(old).coords is False


def test_colorizer_refuses_bad_inputs():
    net = model.Colorizer(model.ColorizerConfig(width=8))
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 1, 30, 32), torch.zeros(1, 1000))
    with pytest.raises(ValueError, match="embedding"):
        net(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="unknown variant"):
        model.ColorizerConfig(variant="transformer")


def test_attention_on_both_paths_is_the_papers_formula():
    """The fused path (scaled_dot_product_attention, no N x N matrix) and the
    readable one (return_weights=True, and its alpha) against a plain loop over
    query positions: q_t = W_a h_t, alpha_ts = softmax_s(q_t . h_s / sqrt(C)),
    c_t = sum_s alpha_ts h_s, out_t = tanh(W_c [c_t; h_t]). A map that is not
    square (4 x 6), a batch of 2."""
    torch.manual_seed(0)
    att = model.Attention(16)
    h = 2 * torch.randn(2, 16, 4, 6)
    expected_out, expected_alpha = attention_by_the_formula(att, h)
    assert expected_alpha.max() > 0.3 and expected_alpha.min() < 1e-3  # far from uniform: the order of s matters
    with torch.no_grad():
        fused = att(h)
        readable, alpha = att(h, return_weights=True)
    assert fused.shape == readable.shape == (2, 16, 4, 6) and alpha.shape == (2, 24, 24)
    for path, got, expected in [("fused", fused, expected_out), ("readable", readable, expected_out),
                                ("alpha", alpha, expected_alpha)]:
        error = (got.double() - expected).abs().max().item()
        assert error < 1e-5, (path, error)


def test_colorizer_returns_attention_maps_for_visualization():
    net = model.Colorizer(model.ColorizerConfig(global_branch=False, width=8)).eval()
    ab, alpha = net(torch.zeros(1, 1, 32, 48), return_attention=True)
    assert ab.shape == (1, 2, 32, 48) and alpha.shape == (1, 4 * 6, 4 * 6)


def test_replicate_padding_sees_no_edge_and_old_checkpoints_keep_zeros():
    """A constant gray photo is the same everywhere, so a model without
    coordinates should color it the same everywhere: with replicate padding it
    does; zero padding marks the edges (the colored frame)."""
    torch.manual_seed(0)
    flat = torch.full((1, 1, 48, 64), 0.3)
    spread = {}
    for padding in ("zeros", "replicate"):
        net = model.Colorizer(model.ColorizerConfig("baseline", global_branch=False, width=8, padding=padding))
        with torch.no_grad():
            spread[padding] = net.eval()(flat).std(dim=(2, 3)).max().item()
    assert spread["replicate"] < 1e-6 < spread["zeros"], spread
    assert model.ColorizerConfig.from_dict({"variant": "attention", "width": 8}).padding == "zeros"  # made before it
    with pytest.raises(ValueError, match="padding"):
        model.ColorizerConfig(padding="reflect")


def test_coord_channels_span_minus_one_to_one():
    grid = model.coord_channels(torch.zeros(2, 1, 3, 5))
    assert grid.shape == (2, 2, 3, 5)
    assert torch.equal(grid[0, 0, 0], torch.linspace(-1, 1, 5))   # x varies along width
    assert torch.equal(grid[0, 1, :, 0], torch.linspace(-1, 1, 3))  # y along height


@pytest.mark.parametrize("variant", ["attention", "baseline"])
def test_small_colorizer_overfits_a_colored_checkerboard(variant):
    torch.manual_seed(0)
    lightness, ab = lab.lab_to_net(lab.rgb_to_lab(checkerboard())[None])
    net = model.Colorizer(model.ColorizerConfig(variant=variant, width=16))
    emb = torch.randn(1, 1000)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(120):
        loss = torch.nn.functional.mse_loss(net(lightness, emb), ab)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, losses[::20]


# -----------------------------------------------------------------------------
# 4. The Inception and its weights load from every published form (inception.py)
# timm's keys and shapes, every file format, the safetensors reader, the download, the caches, offline.

def test_inception_matches_timm_keys_shapes_and_parameter_count(inception_net):
    state = inception_net.state_dict()
    assert len(state) == 1306
    assert sum(k.endswith("num_batches_tracked") for k in state) == 204
    assert sum(p.numel() for p in inception_net.parameters()) == 55_843_464
    expected_shapes = {
        "conv2d_1a.conv.weight": (32, 3, 3, 3),
        "mixed_5b.branch0.conv.weight": (96, 192, 1, 1),
        "repeat.0.branch0.conv.weight": (32, 320, 1, 1),
        "mixed_6a.branch0.conv.weight": (384, 320, 3, 3),
        "mixed_7a.branch0.1.conv.weight": (384, 256, 3, 3),
        "repeat_1.0.branch0.conv.weight": (192, 1088, 1, 1),
        "block8.branch0.conv.weight": (192, 2080, 1, 1),
        "mixed_5b.branch1.1.conv.weight": (64, 48, 5, 5),
        "mixed_5b.branch3.1.conv.weight": (64, 192, 1, 1),
        "repeat.9.conv2d.weight": (320, 128, 1, 1),
        "repeat.9.conv2d.bias": (320,),
        "mixed_6a.branch1.2.conv.weight": (384, 256, 3, 3),
        "repeat_1.19.branch1.1.conv.weight": (160, 128, 1, 7),
        "repeat_1.19.branch1.2.conv.weight": (192, 160, 7, 1),
        "mixed_7a.branch2.2.conv.weight": (320, 288, 3, 3),
        "repeat_2.8.branch1.1.conv.weight": (224, 192, 1, 3),
        "block8.conv2d.weight": (2080, 448, 1, 1),
        "conv2d_7b.conv.weight": (1536, 2080, 1, 1),
        "classif.weight": (1000, 1536),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "repeat_2.9.conv2d.weight" not in state and "block8.relu" not in str(list(state))


def test_inception_stem_sizes_at_299():
    net = inception.InceptionResNetV2().eval()
    x = torch.zeros(1, 3, 299, 299)
    sizes = {}
    with torch.no_grad():
        for name, module in net.named_children():
            if name == "classif":
                break
            x = module(x)
            sizes[name] = tuple(x.shape[1:])
    assert sizes["conv2d_1a"] == (32, 149, 149)
    assert sizes["maxpool_5a"] == (192, 35, 35)
    assert sizes["mixed_5b"] == (320, 35, 35)
    assert sizes["mixed_6a"] == (1088, 17, 17)
    assert sizes["mixed_7a"] == (2080, 8, 8)
    assert sizes["conv2d_7b"] == (1536, 8, 8)


def test_inception_input_is_normalized_with_mean_and_std_one_half(inception_net):
    """Gray 0.5 is the middle of [-1, 1]: the logits of an all-zeros input."""
    gray = torch.full((1, 3, 64, 80), 0.5)
    with torch.no_grad():
        expected = inception_net(torch.zeros(1, 3, 299, 299))
    got = inception.inception_embedding(inception_net, gray)
    assert torch.allclose(got, expected), f"max difference {(got - expected).abs().max():.1e}"


def test_inception_embedding_takes_gray_images_to_logits(inception_net):
    gray = torch.rand(2, 1, 64, 80).expand(2, 3, 64, 80)
    emb = inception.inception_embedding(inception_net, gray)
    assert emb.shape == (2, 1000) and torch.isfinite(emb).all()
    assert not emb.requires_grad


@pytest.mark.parametrize("kind", ["safetensors", "pth", "bin nested state_dict",
                                  "pt nested model", "cadene 1001"])
def test_every_weight_format_loads_and_gives_identical_logits(kind, weight_files, inception_net, probe):
    loaded = inception.load_inception(weight_files[kind])
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.equal(loaded(probe), inception_net(probe))


def test_the_format_is_known_by_the_bytes_whatever_the_name(weight_files, inception_net, probe, tmp_path):
    """A safetensors file saved as .bin, a Hugging Face blob (no extension), and a
    torch file saved as .safetensors all load (hard links: the same bytes, new names)."""
    for kind, name in [("safetensors", "pytorch_model.bin"), ("safetensors", "0f1e2d3c4b5a6978"),
                       ("pth", "model.safetensors")]:
        os.link(weight_files[kind], tmp_path / name)
        loaded = inception.load_inception(tmp_path / name)
        with torch.no_grad():
            assert torch.equal(loaded(probe), inception_net(probe)), name


def test_weights_older_than_num_batches_tracked_load_and_nothing_else_may_be_missing(inception_net, probe, tmp_path):
    """Cadene's 2017 file predates BatchNorm's num_batches_tracked buffer: torch's
    strict load takes it, keeping the module's own buffers; so must load_strict."""
    old = {k: v for k, v in inception_net.state_dict().items() if not k.endswith(".num_batches_tracked")}
    torch.save(old, tmp_path / "inceptionresnetv2-520b38e4.pth")
    loaded = inception.load_inception(tmp_path / "inceptionresnetv2-520b38e4.pth")
    with torch.no_grad():
        assert torch.equal(loaded(probe), inception_net(probe))
    del old["conv2d_1a.bn.running_var"]
    torch.save(old, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing \(1\): conv2d_1a\.bn\.running_var$"):
        inception.load_inception(tmp_path / "broken.pth")


def test_safetensors_reader_reads_half_precision_and_empty_tensors(tmp_path):
    tensors = {"h": torch.randn(3, 4).half(), "b": torch.randn(5).bfloat16(),
               "i": torch.arange(6).view(2, 3), "e": torch.zeros(0, 4)}
    write_safetensors(tensors, tmp_path / "t.safetensors")
    got = inception.read_safetensors(tmp_path / "t.safetensors")
    assert set(got) == set(tensors)
    for k, t in tensors.items():
        assert got[k].dtype == t.dtype and torch.equal(got[k], t), k


@pytest.mark.parametrize("case,why", [
    ("empty", "too short"),
    ("huge header", "does not fit"),
    ("not json", "not JSON"),
    ("json list", "not a JSON object"),
    ("bad dtype", "no known dtype"),
    ("bad shape", "bad shape"),
    ("offsets outside", "outside"),
    ("size mismatch", "needs"),
    ("truncated", "outside"),
])
def test_safetensors_reader_refuses_malformed_files(tmp_path, case, why):
    p = tmp_path / f"{case.replace(' ', '_')}.safetensors"
    ok = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    if case == "empty":
        p.write_bytes(b"\x01\x02")
    elif case == "huge header":
        raw_safetensors(p, ok, bytes(16), length=2**63)
    elif case == "not json":
        raw_safetensors(p, b"{not json", bytes(16))
    elif case == "json list":
        raw_safetensors(p, b"[1, 2]", bytes(16))
    elif case == "bad dtype":
        raw_safetensors(p, {"w": {"dtype": "F33", "shape": [2, 2], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "bad shape":
        raw_safetensors(p, {"w": {"dtype": "F32", "shape": [-2, 2], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "offsets outside":
        raw_safetensors(p, {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}}, bytes(16))
    elif case == "size mismatch":
        raw_safetensors(p, {"w": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}}, bytes(16))
    elif case == "truncated":
        write_safetensors({"w": torch.randn(64, 64)}, p)
        p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match=why) as err:
        inception.read_safetensors(p)
    assert str(p) in str(err.value)


def test_strict_loading_names_missing_unexpected_and_misshaped_keys(inception_net, tmp_path):
    state = dict(inception_net.state_dict())
    del state["repeat.3.branch0.conv.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["classif.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ValueError) as err:
        inception.load_inception(tmp_path / "broken.pth")
    msg = str(err.value)
    for part in ("missing (1): repeat.3.branch0.conv.weight", "unexpected (1): extra.weight",
                 "classif.bias (7,) != (1000,)", "broken.pth"):
        assert part in msg


def test_a_file_that_is_not_weights_is_refused_clearly(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: cannot be read"):
        inception.read_state_dict(junk)
    torch.save({"lr": 0.1}, tmp_path / "config.pt")
    with pytest.raises(ValueError, match="no state dict"):
        inception.read_state_dict(tmp_path / "config.pt")
    # a pickle of objects: refused, without torch's advice to load it unsafely
    torch.save({"state_dict": {}, "args": argparse.Namespace(lr=0.1)}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match="objects other than tensors, which are not loaded") as refused:
        inception.read_state_dict(tmp_path / "objects.pt")
    assert "weights_only" not in str(refused.value)


def test_a_weights_path_that_is_not_a_regular_file_is_refused_before_it_is_opened(tmp_path):
    os.mkfifo(tmp_path / "weights.safetensors")

    def blocked(*_):
        raise TimeoutError("open() waited for a writer to the FIFO")
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        for path, why in [(tmp_path / "weights.safetensors", "not a regular file"),
                          (tmp_path, "not a regular file"), (tmp_path / "gone.pth", "no such file")]:
            for read in (inception.read_state_dict, inception.read_safetensors, inception.sha256_of, inception.load_inception):
                with pytest.raises(ValueError) as err:
                    read(path)
                assert str(err.value) == f"{path}: {why}", read
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_download_checks_sha256_and_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(inception.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"not weights"))
    with pytest.raises(RuntimeError, match="sha256"):
        inception.default_inception_path()
    assert os.listdir(tmp_path / "colorize") == []
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(b"not weights").hexdigest())
    path = inception.default_inception_path()
    assert open(path, "rb").read() == b"not weights"
    assert os.listdir(tmp_path / "colorize") == [os.path.basename(path)]


def test_offline_download_explains_the_manual_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(url, timeout):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(inception.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError) as err:
        inception.default_inception_path()
    assert inception.INCEPTION_URL in str(err.value) and "--inception none" in str(err.value)


@pytest.mark.parametrize("error", [None, TimeoutError("timed out"), ConnectionResetError("reset"),
                                   KeyboardInterrupt()])
def test_download_without_a_length_shows_megabytes_and_any_failure_leaves_nothing(tmp_path, monkeypatch,
                                                                                 capsys, error):
    """No Content-Length: '2 MB', not '2/0 MB'. A stall, a broken connection or
    Ctrl-C after the first megabyte: no .part file, and the progress line ended."""
    cache = isolated_caches(monkeypatch, tmp_path)
    body = bytes(3 << 20)

    class Response(io.BytesIO):
        headers = {}

        def read(self, n=-1):
            if error is not None and self.tell():
                raise error
            return super().read(n)
    monkeypatch.setattr(inception.urllib.request, "urlopen", lambda url, timeout: Response(body))
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(body).hexdigest())
    if error is None:
        assert open(inception.default_inception_path(), "rb").read() == body
        assert os.listdir(cache) == ["inception_resnet_v2.tf_in1k.safetensors"]
    else:
        with pytest.raises(KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else RuntimeError):
            inception.default_inception_path()
        assert os.listdir(cache) == []
    progress = capsys.readouterr().err.split("\n", 1)[1]  # after the "downloading ..." line
    assert progress == ("\r  1 MB\r  2 MB\r  3 MB\n" if error is None else "\r  1 MB\n")


def test_two_downloads_at_once_each_write_their_own_file(tmp_path, monkeypatch):
    """A second process starts and finishes while the first is under way: each
    writes its own temporary file, and the first then takes the finished one."""
    cache = isolated_caches(monkeypatch, tmp_path)
    body = b"the weights"
    pids = iter(range(1000, 2000))
    monkeypatch.setattr(inception.os, "getpid", lambda: next(pids))
    monkeypatch.setattr(inception, "INCEPTION_SHA256", hashlib.sha256(body).hexdigest())
    second = []  # the second process's result

    class Racing(io.BytesIO):
        headers = {"Content-Length": str(len(body))}

        def read(self, n=-1):
            if not second:
                second.append("started")
                second.append(inception.default_inception_path())
            return super().read(n)
    monkeypatch.setattr(inception.urllib.request, "urlopen", lambda url, timeout: Racing(body))
    path = inception.default_inception_path()
    assert second[1] == path and open(path, "rb").read() == body
    assert os.listdir(cache) == [os.path.basename(path)]


@pytest.mark.parametrize("where", ["HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HOME"])
def test_weights_timm_downloaded_are_used_without_a_download(tmp_path, monkeypatch, where):
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    setting, hub = {"HF_HUB_CACHE": (tmp_path / "hub", tmp_path / "hub"),
                    "HF_HOME": (tmp_path / "hf", tmp_path / "hf" / "hub"),
                    "XDG_CACHE_HOME": (tmp_path / "xdg", tmp_path / "xdg" / "huggingface" / "hub"),
                    "HOME": (tmp_path / "home", tmp_path / "home" / ".cache" / "huggingface" / "hub")}[where]
    monkeypatch.setenv(where, str(setting))
    f = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, f)
    path, sha = hub_snapshot(hub, f.getvalue())
    monkeypatch.setattr(inception, "INCEPTION_SHA256", sha)
    monkeypatch.setattr(inception.urllib.request, "urlopen", no_network)
    assert inception.default_inception_path() == str(path)
    assert inception.default_inception_path(download=False) == str(path)  # torchrun's other ranks


@pytest.mark.parametrize("offline", ["1", "true", "YES"])
def test_hf_hub_offline_never_downloads_and_a_hub_file_of_another_sha256_is_ignored(tmp_path, monkeypatch,
                                                                                    offline):
    cache = isolated_caches(monkeypatch, tmp_path)
    hub_snapshot(tmp_path / "hub", b"another revision")
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(inception.urllib.request, "urlopen", no_network)
    with pytest.raises(RuntimeError) as err:
        inception.default_inception_path()
    msg = str(err.value)
    assert inception.INCEPTION_URL in msg and "--inception none" in msg and "HF_HUB_OFFLINE" in msg.splitlines()[0]
    assert inception.default_inception_path(download=False) == str(cache / "inception_resnet_v2.tf_in1k.safetensors")
    assert not cache.exists()


@pytest.mark.parametrize("xdg", ["", "relative/cache"])
def test_an_empty_or_relative_xdg_cache_home_is_ignored(tmp_path, monkeypatch, xdg):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", xdg)
    assert inception.cache_dir() == str(tmp_path / ".cache" / "colorize")


def test_a_cache_folder_that_cannot_be_made_or_written_is_one_line(tmp_path, monkeypatch):
    isolated_caches(monkeypatch, tmp_path)
    monkeypatch.setattr(inception.urllib.request, "urlopen", no_network)
    (tmp_path / "file").write_text("XDG_CACHE_HOME names a file")
    (tmp_path / "readonly" / "colorize").mkdir(parents=True)
    for xdg in (tmp_path / "file", tmp_path / "readonly"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
        if xdg.name == "readonly":  # as root, chmod cannot make it read-only: access() says so instead
            monkeypatch.setattr(inception.os, "access", lambda path, mode: False)
        with pytest.raises(RuntimeError) as err:
            inception.default_inception_path()
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(str(xdg / "colorize") + ": "), msg
        assert "XDG_CACHE_HOME" in msg and "--inception PATH" in msg


# -----------------------------------------------------------------------------
# 5. Photos are read as a viewer shows them (data.py)
# Modes, EXIF, ICC profiles, folders and links, the split, bad files passed over, the cache, draft decoding, balance.

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


def test_cached_dataset_decodes_once_and_gives_the_same_crops(tmp_path, monkeypatch):
    good = make_photo(tmp_path / "good.jpg", size=(300, 200))
    Image.open(good).convert("L").save(tmp_path / "gray.jpg")
    make_photo(tmp_path / "more.png", size=(1000, 600))  # a PNG decodes at full size: 1.7 MB
    files = [str(tmp_path / n) for n in ("gray.jpg", "good.jpg", "more.png")]
    plain, cached = data.ImageFolder(files, size=64), data.ImageFolder(files, size=64, cache_mb=1)
    assert list(cached.cache) == files[:2]  # not more.png: past 1 MB; the gray one is kept as its reason
    assert cached.cached_bytes == 300 * 200 * 4 and cached.cached_photos() == 1
    crops = []
    for i in range(4):
        random.seed(i)
        crops.append(plain[0][0])
    monkeypatch.setattr(data, "load_image", lambda *a, **k: pytest.fail("decoded again"))
    for i in range(4):
        random.seed(i)
        rgb, skipped = cached[0]
        assert torch.equal(rgb, crops[i])  # the same random crop and flip as from the file
        assert "gray.jpg: grayscale" in skipped[0]


def test_training_decodes_large_jpegs_in_draft_mode(tmp_path, monkeypatch):
    """bench.py's decode rows: for a 12-megapixel photo the JPEG decoder's own
    downscaling is several times faster than a full decode, with or without a
    reduce() after it. The dataset must ask for it, keeping 2x the crop."""
    big = tmp_path / "big.jpg"
    Image.open(make_photo(tmp_path / "src.png")).resize((1024, 768)).save(big, quality=90)
    assert data.load_image(big, draft=64)[0].size == (128, 96)    # 1/8: both sides still >= 64
    assert data.load_image(big, draft=150)[0].size == (256, 192)  # 1/4
    assert data.load_image(big)[0].size == (1024, 768)
    asked = []
    load_image = data.load_image
    monkeypatch.setattr(data, "load_image", lambda path, **kw: asked.append(kw) or load_image(path, **kw))
    rgb, _ = data.ImageFolder([str(big)], size=48, train=True)[0]
    assert asked == [{"draft": 96}] and rgb.shape == (3, 48, 48)


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


def test_an_empty_val_folder_is_an_error_not_validation_on_training_photos(photo_dir, tmp_path):
    data_dir = tmp_path / "d"
    shutil.copytree(photo_dir, data_dir / "train")
    (data_dir / "val").mkdir()
    (data_dir / "val" / "README").write_text("validation photos go here")
    (data_dir / "val" / "photo.heic").write_bytes(b"not for Pillow")
    r = run("train.py", "--data", data_dir, "--out", tmp_path / "run", "--max-steps", 2, *TINY)
    assert r.returncode == 2 and "val holds no image" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "run").exists()


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


# -----------------------------------------------------------------------------
# 6. Training learns, and is judged against all-gray (train.py)
# The loss goes down; validation, best.pt, the average, divergence, the Inception, --init, torchrun, --coords.

def test_train_cli_writes_checkpoint_samples_curves_and_resumes(photo_dir, tmp_path):
    out = tmp_path / "run"
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 6, "--eval-every", 3,
            "--log-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    assert "step 6/6 | loss" in r.stdout and "img/s | eta" in r.stdout
    assert "data: 5 of the 5 training photos decoded into memory once" in r.stdout, r.stdout
    for name in ("ckpt.pt", "best.pt", "samples.png", "loss.png", "log.csv"):
        assert (out / name).exists(), name
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["config"]["width"] == 8 and ckpt["inception"] is None
    assert Image.open(out / "samples.png").size == (3 * 32, 32)  # gray | prediction | truth
    rows = (out / "log.csv").read_text().splitlines()
    # a header, 3 logged steps, and validation before the first step and at steps 3 and 6
    assert rows[0] == "step,loss,lr,img_per_s,val_mse,val_psnr,val_mse_raw,val_mse_gray" and len(rows) == 1 + 3 + 3
    assert rows[1].startswith("0,,,,0.") and rows[2].startswith("2,0.")  # the untrained model comes first

    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 10, "--eval-every", 3,
            "--log-every", 2, "--resume", *TINY)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout and "at step 6" in r.stdout
    assert "step 8/10 | loss" in r.stdout and "step 2/" not in r.stdout
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 10
    steps = [row["step"] for row in ckpt["history"] if "loss" in row]
    assert steps == [2, 4, 6, 8, 10]  # the same curve, continued
    assert [row["step"] for row in ckpt["history"] if "val_mse" in row] == [0, 3, 6, 9, 10]  # step 6 not twice


def test_training_drives_the_loss_down(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 60, "--eval-every", 60,
            "--log-every", 10, "--lr", "3e-3", *TINY)
    assert r.returncode == 0, r.stderr
    losses = [row["loss"] for row in torch.load(tmp_path / "ckpt.pt", weights_only=True)["history"]
              if "loss" in row]
    assert losses[-1] < losses[0] / 2, losses


def test_train_keeps_the_best_checkpoint_and_the_weight_average(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 12, "--eval-every", 3,
            "--schedule", "cosine", "--warmup", 2, "--log-every", 1, *TINY)
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    evals = [row for row in ckpt["history"] if "val_mse" in row]
    assert [row["step"] for row in evals] == [0, 3, 6, 9, 12] and all("val_mse_raw" in row for row in evals)
    assert best["step"] == min(evals, key=lambda row: row["val_mse"])["step"]
    assert ckpt["best_mse"] == min(row["val_mse"] for row in evals)
    assert "optimizer" not in best and ckpt["ema"].keys() == ckpt["model"].keys()
    if best["step"] == 12:  # best.pt holds the averaged weights, not the last step's
        assert all(torch.equal(best["model"][k], ckpt["ema"][k]) for k in best["model"])
    lrs = [row["lr"] for row in ckpt["history"] if "lr" in row]
    assert lrs[0] < lrs[1] and lrs[-1] < max(lrs) / 10  # warmup, then the cosine decay


@pytest.mark.parametrize("every", [1, 2])  # 2: --eval-every a multiple of --log-every
def test_diverging_loss_stops_and_never_saves_a_diverged_state(photo_dir, tmp_path, every):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 200, "--eval-every", every,
            "--log-every", 2, "--lr", "1e30", "--warmup", 0, *TINY)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"(loss|validation MSE) is (nan|inf)", r.stdout), r.stdout
    for name in ("ckpt.pt", "best.pt"):
        if (tmp_path / name).exists():
            ckpt = torch.load(tmp_path / name, weights_only=True)
            assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    said = "the last good checkpoint is" if (tmp_path / "ckpt.pt").exists() else "no checkpoint was written"
    assert said in r.stdout, r.stdout


def test_train_with_inception_weights_records_them(photo_dir, tmp_path, inception_net):
    weights = tmp_path / "irv2.safetensors"
    write_safetensors(inception_net.state_dict(), weights)
    # bf16 autocast, as on a GPU: the frozen Inception and the colorizer in the same precision
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--max-steps", 2,
            "--eval-every", 2, "--inception", weights, "--dtype", "bfloat16", *TINY[2:])
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["global_branch"] is True
    assert ckpt["inception"] == {"file": "irv2.safetensors", "sha256": inception.sha256_of(weights)}


def test_fine_tuning_averages_from_the_weights_it_starts_from(photo_dir, tmp_path):
    """--init: the moving average starts at the checkpoint's weights (no ramp
    from a random start), so after two steps it has barely left them, however
    far the weights themselves went. --balance: the shares said, bad values refused."""
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "a", "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    start = model.averaged_weights(torch.load(tmp_path / "a" / "best.pt", weights_only=True))
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "b", "--init", tmp_path / "a" / "best.pt",
            "--max-steps", 1, "--eval-every", 1, "--lr", "1e-2", "--warmup", 0, "--ema", "0.99", "--balance", 1, *TINY)
    assert r.returncode == 0, r.stderr
    assert "data: --balance 1: (names without _) 100%" in r.stdout, r.stdout
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "b", "--resume", "--max-steps", 2)  # still a fine-tune
    assert r.returncode == 0, r.stderr
    tuned = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)
    key = "encoder.layers.0.0.weight"  # the first conv
    moved, averaged = (tuned[w][key].float() - start[key].float() for w in ("model", "ema"))
    assert moved.norm() > 0 and averaged.norm() < 0.05 * moved.norm()  # 1 - 0.99**2 = 2% of the way
    for bad in ("-1", "nan", "5"):
        one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "c", "--balance", bad, *TINY[:2]),
                       "--balance", "from 0 to 4")


def test_init_fine_tunes_the_bundled_demo(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--init", "demo/colorizer.pt",
            "--max-steps", 2, "--eval-every", 2, "--size", 32, "--batch-size", 2, "--workers", 0)
    assert r.returncode == 0, r.stderr
    tuned = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    demo = torch.load("demo/colorizer.pt", weights_only=True)
    assert model.ColorizerConfig.from_dict(tuned["config"]) == model.ColorizerConfig.from_dict(demo["config"])
    assert tuned["step"] == 2
    before = tuned["history"][0]  # the demo itself, validated on these photos before the first step
    assert before["step"] == 0 and "val_mse" in before and "step 0/2 | val mse" in r.stdout


def test_torchrun_two_processes_on_cpu_hold_the_same_weights(photo_dir, tmp_path):
    """torchrun --nproc-per-node 2: only rank 0 speaks and writes, and both ranks
    end with the same parameters, those of ckpt.pt (DDP averages the gradients).
    Each rank is train.py run as a script by a wrapper that then saves that
    rank's parameters. BatchNorm's running statistics are each rank's own (the
    last step updates them from its own batch): buffers are not compared."""
    wrapper = tmp_path / "rank.py"
    wrapper.write_text(
        "import os, runpy, sys\nimport torch\n"
        f"train = {os.path.join(HERE, 'train.py')!r}\n"
        "sys.argv, sys.path[0] = [train, *sys.argv[1:]], os.path.dirname(train)\n"
        "net = runpy.run_path(train, run_name='__main__')['net']  # train.py's globals when it has finished\n"
        "torch.save({name: p.detach() for name, p in net.named_parameters()},\n"
        f"           os.path.join({str(tmp_path)!r}, 'rank' + os.environ['RANK'] + '.pt'))\n")
    out = tmp_path / "run"
    r = run("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", 2,
            wrapper, "--data", photo_dir, "--out", out, "--max-steps", 4, "--eval-every", 4,
            "--log-every", 2, *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done: 4 steps") == 1  # only rank 0 speaks
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "ckpt.pt"]
    ckpt = torch.load(out / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 4
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert rank0.keys() == rank1.keys() and len(rank0) > 20, sorted(rank0)
    for name, weights in rank0.items():
        assert torch.equal(weights, rank1[name]), name
        assert torch.equal(weights, ckpt["model"][name]), name  # the weights rank 0 saved


def test_coords_switch_through_train_and_init(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "a", "--max-steps", 2, "--eval-every", 2,
            "--model", "baseline", "--coords", "on", *TINY)
    assert r.returncode == 0, r.stderr
    config = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["config"]
    assert config["variant"] == "baseline" and config["coords"] is True
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "b", "--init", tmp_path / "a" / "best.pt",
                       "--coords", "off", *TINY[:2]), "--coords off", "--coords on")


def test_progress_follows_a_clock_that_only_goes_forward(photo_dir, tmp_path):
    """A wall clock stepped back (NTP, a suspended laptop) must not print
    negative img/s or ETAs, nor write them into log.csv."""
    step_back = ("import runpy, sys, time\n"
                 "t = [2e9]\n"
                 "def stepping_back():\n"
                 "    t[0] -= 100\n"
                 "    return t[0]\n"
                 "time.time = stepping_back\n"
                 "sys.argv = ['train.py'] + sys.argv[1:]\n"
                 "runpy.run_path('train.py', run_name='__main__')\n")
    r = run("-c", step_back, "--data", photo_dir, "--out", tmp_path / "run", "--max-steps", 4, "--log-every", 1,
            "--eval-every", 4, *TINY)
    assert r.returncode == 0, r.stderr
    rates = [float(x) for x in re.findall(r"\| ([-\d.]+) img/s", r.stdout)]
    assert len(rates) == 4 and min(rates) > 0 and "eta -" not in r.stdout, r.stdout
    assert all(float(row["img_per_s"]) > 0 for row in csv.DictReader(open(tmp_path / "run" / "log.csv"))
               if row["img_per_s"])


def test_a_worker_that_fails_ends_the_run_in_seconds(tmp_path):
    """Every training photo grayscale, one loader worker: the error line and
    exit status 2 at once (it used to wait for ever for a worker that
    ignores SIGTERM, holding --out/.lock)."""
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    for i in range(6):
        Image.open(make_photo(tmp_path / "d" / "train" / f"g{i}.jpg", size=(40, 40), seed=i)).convert("L").convert(
            "RGB").save(tmp_path / "d" / "train" / f"g{i}.jpg")
    make_photo(tmp_path / "d" / "val" / "c.jpg", size=(40, 40))
    start = time.monotonic()
    r = run("train.py", "--data", tmp_path / "d", "--out", tmp_path / "run", "--max-steps", 5, *TINY[:-1], "1",
            timeout=120)
    assert r.returncode == 2 and "no usable color image among 6 files" in r.stderr, r.stderr
    assert time.monotonic() - start < 60


# -----------------------------------------------------------------------------
# 7. Checkpoints: written atomically, resumed, refused in one line when bad
# --resume and --init rules, unwritable, malformed, NaN, FIFO and unpicklable checkpoints, export, the search.

def test_train_says_why_a_checkpoint_cannot_be_written(photo_dir, tmp_path):

    def small_files():  # as if the disk were full: writes past 64 kB fail
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    r = subprocess.run([sys.executable, "train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", "2",
                        "--eval-every", "2", *TINY], cwd=HERE, capture_output=True, text=True, timeout=300,
                       preexec_fn=small_files)
    one_error_line(r, "cannot write", tmp_path / "best.pt", "too large")
    assert not list(tmp_path.glob("*.tmp*"))


def test_train_refuses_a_missing_or_corrupt_checkpoint_to_resume(photo_dir, tmp_path):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--resume", *TINY)
    assert r.returncode == 2 and "ckpt.pt: no such file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "ckpt.pt").write_bytes(b"half a checkpoint")
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--resume", *TINY)
    assert r.returncode == 2 and "not a train.py checkpoint" in r.stderr and "Traceback" not in r.stderr


def test_resume_and_init_take_what_they_can_and_refuse_the_rest(photo_dir, tmp_path):
    run_dir, exported = tmp_path / "run", tmp_path / "small.pt"
    r = run("train.py", "--data", photo_dir, "--out", run_dir, "--max-steps", 4, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    one_error_line(run("train.py", "--data", photo_dir, "--out", run_dir, "--resume", "--max-steps", 4),
                   "--max-steps", "4 steps")
    one_error_line(run("train.py", "--data", photo_dir, "--out", run_dir, "--resume", "--width", 16, "--max-steps", 8),
                   "--width 16", "--width 8")
    # the run's own recipe goes on; a typed --lr applies (and is said)
    r = run("train.py", "--data", photo_dir, "--out", run_dir, "--resume", "--max-steps", 6, "--lr", "5e-4")
    assert r.returncode == 0, r.stderr
    assert "--lr 0.0005 (was 0.001)" in r.stdout
    ckpt = torch.load(run_dir / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["args"]["size"] == 32 and ckpt["args"]["lr"] == 5e-4

    runs.export_checkpoint(run_dir / "best.pt", exported)
    resumable = tmp_path / "exported"
    resumable.mkdir()
    (resumable / "ckpt.pt").write_bytes(exported.read_bytes())
    one_error_line(run("train.py", "--data", photo_dir, "--out", resumable, "--resume"), "--init")
    one_error_line(run("train.py", "--data", photo_dir, "--init", exported, "--model", "baseline"),
                   "--model baseline", "--init")
    one_error_line(run("train.py", "--data", photo_dir, "--init", exported, "--inception", exported),
                   "no global branch")
    one_error_line(run("train.py", "--data", photo_dir, "--init", exported, "--padding", "zeros"),
                   "--padding zeros", "--padding replicate")
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "tuned", "--init", exported,
            "--max-steps", 2, "--eval-every", 2, *TINY[2:])
    assert r.returncode == 0, r.stderr
    assert "initialized from" in r.stdout
    assert torch.load(tmp_path / "tuned" / "ckpt.pt", weights_only=True)["step"] == 2


def test_resume_writes_where_it_read_and_odd_run_states_are_one_line(photo_dir, tmp_path):
    r = run(os.path.join(HERE, "train.py"), "--data", photo_dir, "--out", "runs/a", "--max-steps", 2,
            "--eval-every", 2, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shutil.copytree(tmp_path / "runs" / "a", tmp_path / "out")
    before = (tmp_path / "runs" / "a" / "ckpt.pt").read_bytes()
    r = run(os.path.join(HERE, "train.py"), "--data", photo_dir, "--resume", "--max-steps", 4, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)["step"] == 4  # the run it read
    assert (tmp_path / "runs" / "a" / "ckpt.pt").read_bytes() == before  # not the folder its flags named
    ckpt = torch.load(tmp_path / "out" / "ckpt.pt", weights_only=True)
    for name, broken in [("rng", {k: v for k, v in ckpt.items() if k != "rng"}), ("step", {**ckpt, "step": -3}),
                         ("history", {**ckpt, "history": [{"step": "a", "val_mse": "b"}]})]:
        folder = tmp_path / name
        folder.mkdir()
        torch.save(broken, folder / "ckpt.pt")
        one_error_line(run("train.py", "--data", photo_dir, "--out", folder, "--resume", "--max-steps", 9), "--resume")
    one_error_line(run("train.py", "--data", photo_dir, "--out", photo_dir, *TINY), "--out", "folder of its own")
    one_error_line(run("train.py", "--data", photo_dir, "--lr", "abc"), "--lr", "abc")  # argparse's own check


def test_colorize_missing_or_incompatible_checkpoint_exits_2(tmp_path, photo_dir):
    img = photo_dir / "p0.jpg"
    r = run("colorize.py", img, "--checkpoint", tmp_path / "nope.pt")
    assert r.returncode == 2 and "no such checkpoint" in r.stderr and "Traceback" not in r.stderr
    torch.save({"config": {"variant": "attention"}, "model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    r = run("colorize.py", img, "--checkpoint", tmp_path / "other.pt")
    assert r.returncode == 2 and "not a compatible colorizer checkpoint" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        r = run("colorize.py", img, "--device", "cuda")
        assert r.returncode == 2 and "no CUDA device" in r.stderr and "Traceback" not in r.stderr


def test_bad_checkpoints_get_a_short_safe_reason(tmp_path):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(3000))
    good = fake_run(tmp_path / "run", 4, files=("best.pt",)) / "best.pt"
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:2000])
    ckpt = torch.load(good, weights_only=True)
    key = next(iter(ckpt["model"]))
    shape = tuple(ckpt["model"][key].shape)
    ckpt["model"][key] = torch.zeros(3, 5)
    torch.save(ckpt, tmp_path / "shape.pt")
    fake_run(tmp_path / "global", 4, files=("best.pt",), global_branch=True)
    for bad, said in [("random.pt", "not a checkpoint file (UnpicklingError"),
                      ("cut.pt", "not a checkpoint file (RuntimeError"),
                      ("shape.pt", f"{key} has shape (3, 5), the model needs {shape}"),
                      ("global", "--inception PATH")]:
        r = colorize_cli(img, "--checkpoint", tmp_path / bad, "--inception", tmp_path / "nope.safetensors")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("error: ") and said in r.stderr, r.stderr
        assert "weights_only" not in r.stderr and "--inception none" not in r.stderr, r.stderr


def test_nan_and_malformed_checkpoints_are_one_line(tmp_path, photo_dir):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    good = fake_run(tmp_path / "run", 4, files=("best.pt",)) / "best.pt"
    ckpt = torch.load(good, weights_only=True)
    nan = {**ckpt, "model": {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in ckpt["model"].items()}}
    torch.save(nan, tmp_path / "nan.pt")
    r = colorize_cli(img, "--checkpoint", tmp_path / "nan.pt")
    assert r.returncode == 2 and "NaN or infinite" in r.stderr and not (tmp_path / "p_color.png").exists()
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "t", "--init", tmp_path / "nan.pt",
                       *TINY[:2]), "--init", "NaN or infinite")
    ckpt = torch.load(good, weights_only=True)
    for name, broken in [("width", {**ckpt, "config": {**ckpt["config"], "width": "8"}}),
                         ("zero", {**ckpt, "config": {**ckpt["config"], "width": 0}}),
                         ("huge", {**ckpt, "config": {**ckpt["config"], "width": 100000}}),
                         ("list", {**ckpt, "model": list(ckpt["model"].values())}),
                         ("args", {**ckpt, "args": [32]}), ("history", {**ckpt, "history": "0.01"})]:
        torch.save(broken, tmp_path / f"{name}.pt")
        r = colorize_cli(img, "--checkpoint", tmp_path / f"{name}.pt")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (name, r.stderr)
        assert "not a compatible colorizer checkpoint" in r.stderr, (name, r.stderr)
        if name in ("width", "zero", "huge", "list"):
            one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "t", "--init",
                               tmp_path / f"{name}.pt", *TINY[:2]), "--init", f"{name}.pt")


def test_odd_checkpoint_entries_and_api_inputs_are_one_line(tmp_path):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    good = torch.load(fake_run(tmp_path / "run", 4, files=("best.pt",)) / "best.pt", weights_only=True)
    for name, broken in [("size", {**good, "args": {"size": "big"}}), ("huge", {**good, "args": {"size": 10**9}}),
                         ("validation", {**good, "validation": {"val_mse": "x"}}),
                         ("step", {**good, "step": True}),
                         ("sparse", {**good, "model": {k: v.to_sparse() if v.dim() else v
                                                       for k, v in good["model"].items()}})]:
        torch.save(broken, tmp_path / f"{name}.pt")
        r = colorize_cli(img, "--checkpoint", tmp_path / f"{name}.pt")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "compatible" in r.stderr, (name, r.stderr)
    # validation numbers left out or None (a hand-made file): it is said without them
    for name, odd in [("none", {**good, "validation": {"val_mse": None}}), ("other", {**good, "validation": {"psnr": 2.0}})]:
        torch.save(odd, tmp_path / f"{name}.pt")
        r = colorize_cli(img, "--checkpoint", tmp_path / f"{name}.pt", "--overwrite")
        assert r.returncode == 0 and f"{name}.pt (step 4)" in r.stderr, (name, r.stderr)
    r = colorize_cli(img, "--size", "abc")
    assert r.returncode == 2 and r.stderr.startswith("error: argument --size") and r.stderr.count("\n") == 1
    with pytest.raises(colorize.ColorizeError, match="cpu or cuda"):
        colorize.load(DEMO, device="tpu")
    with pytest.raises(colorize.ColorizeError, match="not an image"):
        colorize.colorize(None, DEMO)


def test_fifo_checkpoints_are_refused_not_waited_on(tmp_path, photo_dir):
    os.mkfifo(tmp_path / "pipe.pt")
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli(img, "--checkpoint", tmp_path / "pipe.pt", timeout=60)
    assert r.returncode == 2 and "pipe.pt: not a regular file" in r.stderr, r.stderr
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--init", tmp_path / "pipe.pt",
                       *TINY, timeout=60), "--init", "not a regular file")
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--inception",
                       tmp_path / "pipe.pt", timeout=60), "--inception", "regular file")


def test_export_makes_a_half_precision_inference_copy(tiny_ckpt, tmp_path):
    runs.export_checkpoint(tiny_ckpt, tmp_path / "small.pt")
    small = torch.load(tmp_path / "small.pt", weights_only=True)
    assert "optimizer" not in small and small["args"] == {"size": 32}
    assert small["validation"]["step"] == 2
    assert os.path.getsize(tmp_path / "small.pt") < os.path.getsize(tiny_ckpt) / 2
    img = make_photo(tmp_path / "x.jpg")
    r = run("colorize.py", img, "--checkpoint", tmp_path / "small.pt")
    assert r.returncode == 0 and (tmp_path / "x_color.png").exists(), r.stderr


def test_export_blends_a_fine_tune_with_its_start_and_sets_the_size(tmp_path):
    net = model.Colorizer(model.ColorizerConfig(variant="attention", global_branch=False, width=8))
    ckpts = []
    for i in range(2):
        torch.manual_seed(i)
        state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
        ckpts.append({"config": dataclasses.asdict(net.config), "step": 10 * i, "inception": None, "args": {"size": 64},
                      "history": [{"step": 0, "val_mse": 0.1}], "model": state})
        torch.save(ckpts[-1], tmp_path / f"{i}.pt")
    runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "blend.pt", start=tmp_path / "0.pt", share=0.25, size=96)
    blend = torch.load(tmp_path / "blend.pt", weights_only=True)
    key = "encoder.layers.0.0.weight"
    expected = 0.25 * ckpts[1]["model"][key] + 0.75 * ckpts[0]["model"][key]
    assert torch.allclose(blend["model"][key].float(), expected, atol=2e-3)
    assert blend["args"] == {"size": 96} and blend["validation"] is None and blend["step"] == 10
    other = model.Colorizer(model.ColorizerConfig(variant="attention", global_branch=False, width=16))
    torch.save({**ckpts[0], "model": other.state_dict()}, tmp_path / "wide.pt")
    with pytest.raises(ValueError, match="not the architecture"):
        runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "x.pt", start=tmp_path / "wide.pt")
    torch.save({**ckpts[0], "config": {**ckpts[0]["config"], "padding": "zeros"}}, tmp_path / "zeros.pt")
    with pytest.raises(ValueError, match="not the architecture"):
        runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "x.pt", start=tmp_path / "zeros.pt")
    for share, size in [(float("nan"), None), (1.5, None), (0.5, 0), (0.5, 100), (0.5, "64")]:
        with pytest.raises(ValueError, match="must be from 0 to 1"):
            runs.export_checkpoint(tmp_path / "1.pt", tmp_path / "x.pt", start=tmp_path / "0.pt", share=share, size=size)
    assert not (tmp_path / "x.pt").exists()


def test_checkpoint_choice_prefers_best_pt_of_the_newest_run(tmp_path):
    old, new = fake_run(tmp_path / "out" / "old", 9), fake_run(tmp_path / "out" / "new", 4)
    for f in old.iterdir():
        os.utime(f, (1, 1))
    make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli("p.jpg", cwd=tmp_path)
    assert r.returncode == 0 and f"checkpoint: {os.path.join('out', 'new', 'best.pt')} (step 4" in r.stderr, r.stderr
    assert colorize.load(old).path == str(old / "best.pt")
    os.remove(old / "best.pt")  # a run from before best.pt: its ckpt.pt, with the averaged ("ema") weights
    assert colorize.load(old).path == str(old / "ckpt.pt")
    runs.export_checkpoint(old / "ckpt.pt", tmp_path / "small.pt")
    runs.export_checkpoint(new / "best.pt", tmp_path / "small_best.pt")
    for small in ("small.pt", "small_best.pt"):
        assert colorize.load(tmp_path / small).size == 32


def test_the_checkpoint_found_by_search_says_where_and_how_to_choose(tmp_path):
    (tmp_path / "out" / "other").mkdir(parents=True)
    torch.save({"config": {"variant": "attention"}, "model": {"w": torch.zeros(1)}},
               tmp_path / "out" / "other" / "best.pt")  # some other tool's best.pt
    make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli("p.jpg", cwd=tmp_path)
    assert r.returncode == 2 and "newest run under runs/ or out/" in r.stderr and "--checkpoint" in r.stderr, r.stderr
    fake_run(tmp_path / "out" / "mine", 4)
    r = colorize_cli("p.jpg", cwd=tmp_path)
    assert r.returncode == 0 and "newest run under runs/ or out/, --checkpoint PATH chooses another" in r.stderr, r.stderr
    # runs/, where the README and the course train, is searched too: the newest of both wins
    fake_run(tmp_path / "runs" / "first", 7)
    r = colorize_cli("p.jpg", cwd=tmp_path)
    assert r.returncode == 0 and f"checkpoint: {os.path.join('runs', 'first', 'best.pt')} (step 7" in r.stderr, r.stderr


def test_the_newest_run_search_does_not_follow_links_round_in_circles(tmp_path):
    run_dir = fake_run(tmp_path / "out" / "run", 4)
    os.symlink("..", run_dir / "up")
    os.symlink("../..", run_dir / "up2")
    make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli("p.jpg", cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and os.path.join("out", "run", "best.pt") in r.stderr, r.stderr
    # a link to nothing where a checkpoint would be is no run (and no traceback)
    (tmp_path / "runs" / "gone").mkdir(parents=True)
    os.symlink(tmp_path / "nothing", tmp_path / "runs" / "gone" / "best.pt")
    r = colorize_cli("p.jpg", "--overwrite", cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and os.path.join("out", "run", "best.pt") in r.stderr, r.stderr


def test_a_resumed_run_draws_the_same_photos_and_reaches_the_same_weights(photo_dir, tmp_path):
    """6 steps in one go, and 3 + 3 with --resume (one loader worker, and none):
    the same photos, crops and losses, and the same weights at the end."""
    for workers in ("0", "1"):
        flags = [*TINY[:-1], workers, "--eval-every", 3, "--log-every", 1, "--batch-size", 2]
        whole, half = tmp_path / f"whole{workers}", tmp_path / f"half{workers}"
        assert run("train.py", "--data", photo_dir, "--out", whole, "--max-steps", 6, *flags).returncode == 0
        assert run("train.py", "--data", photo_dir, "--out", half, "--max-steps", 3, *flags).returncode == 0
        r = run("train.py", "--data", photo_dir, "--out", half, "--max-steps", 6, "--resume", *flags)
        assert r.returncode == 0, r.stderr
        losses = [{row["step"]: row["loss"] for row in csv.DictReader(open(d / "log.csv")) if row["loss"]}
                  for d in (whole, half)]
        assert losses[0] == losses[1] and len(losses[0]) == 6, losses
        a, b = (torch.load(d / "ckpt.pt", weights_only=True) for d in (whole, half))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert a["draws"] == b["draws"] == 12


def test_a_resume_after_photos_were_added_starts_the_best_over_and_says_so(photo_dir, tmp_path):
    d = tmp_path / "d"
    shutil.copytree(photo_dir, d)
    flags = ["--data", d, "--out", tmp_path / "run", "--eval-every", 2, "--val-fraction", 0.3, *TINY]
    assert run("train.py", *flags, "--max-steps", 2).returncode == 0
    r = run("train.py", *flags, "--max-steps", 4, "--resume")
    assert r.returncode == 0 and "best so far starts over" not in r.stdout, r.stdout  # the same photos: goes on
    assert "training photos are not the ones" not in r.stdout
    for i in range(12):
        make_photo(d / f"new{i}.jpg", size=(48, 40), seed=50 + i)
    r = run("train.py", *flags, "--max-steps", 6, "--resume")
    assert r.returncode == 0 and "the best so far starts over" in r.stdout, r.stdout
    assert "the training photos are not the ones the run drew from" in r.stdout, r.stdout  # its draws: said too
    assert "step 6/6 | val mse" in r.stdout and "| best so far" in r.stdout.split("step 6/6 | val mse")[1].split("\n")[0]


def test_a_checkpoints_flags_and_state_of_the_wrong_kind_are_one_line_on_resume(photo_dir, tmp_path):
    flags = ["--data", photo_dir, "--out", tmp_path / "run", "--eval-every", 2, *TINY]
    assert run("train.py", *flags, "--max-steps", 2).returncode == 0
    good = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    for key, value, says in [("lr", "0.1", "its --lr is '0.1', not a float"), ("ema", None, "its --ema is None"),
                             ("min_crop", "x", "its --min-crop is 'x'"), ("schedule", "bogus", "not one of"),
                             ("balance", True, "its --balance is True")]:
        torch.save({**good, "args": {**good["args"], key: value}}, tmp_path / "run" / "ckpt.pt")
        r = run("train.py", *flags, "--max-steps", 4, "--resume")
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, (key, r.stderr[-800:])
    # the state it continues: random generators, the optimizer's moments, the count of photos drawn
    adam = good["optimizer"]
    first = min(adam["state"])
    for name, edit, says in [
            ("rng torch", {"rng": {**good["rng"], "torch": torch.zeros(3)}}, "random state"),
            ("rng python", {"rng": {**good["rng"], "python": (1, 2)}}, "random state"),
            ("draws", {"draws": 10**30}, "'draws' is 1000000000000000000000000000000"),
            ("best_mse", {"best_mse": math.nan}, "best validation"),
            ("param groups", {"optimizer": {**adam, "param_groups": []}}, "optimizer state does not fit"),
            ("moments", {"optimizer": {**adam, "state": {**adam["state"], first: {
                **adam["state"][first], "exp_avg": torch.zeros(1)}}}}, "optimizer state does not fit")]:
        torch.save({**good, **edit}, tmp_path / "run" / "ckpt.pt")
        r = run("train.py", *flags, "--max-steps", 4, "--resume")
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, (name, r.stderr[-800:])


# -----------------------------------------------------------------------------
# 8. Run folders are never replaced unasked
# A finished run, any file train.py writes, --overwrite, the lock, a run inside --data, an unwritable cache.

def test_train_never_replaces_a_run_unasked(photo_dir, tmp_path):
    args = ["train.py", "--data", photo_dir, "--out", tmp_path, "--max-steps", 2, "--eval-every", 2, *TINY]
    assert run(*args).returncode == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    one_error_line(run(*args), "--resume", "--overwrite", tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    (tmp_path / "ckpt.pt.tmp99999").write_bytes(b"left by a killed save")
    (tmp_path / "log.csv.tmp12345").mkdir()  # a folder at such a name is no save of train.py's
    r = run(*args, "--overwrite", "--seed", 1)
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.glob("*.tmp*")] == ["log.csv.tmp12345"]  # a killed save's leftovers: gone
    # a folder where train.py writes a file is refused, --overwrite or not
    (tmp_path / "log.csv").unlink()
    (tmp_path / "log.csv").mkdir()
    for more in ([], ["--overwrite"], ["--resume", "--max-steps", 4]):
        one_error_line(run(*args, *more), "log.csv is a folder")


def test_a_run_written_while_another_started_is_seen_under_the_lock(tmp_path):
    """What start_checkpoint saw is looked at again once the lock is held: a
    run another train.py wrote meanwhile is not replaced, and a --resume whose
    ckpt.pt another train.py went on with does not continue a stale copy."""
    fake_run(tmp_path / "new", 4, files=("ckpt.pt",))  # written after the first look, before the lock
    new = argparse.Namespace(out=str(tmp_path / "new"), resume=False, overwrite=False)
    with pytest.raises(SystemExit) as stop:
        runs.prepare_folder(new, print)
    assert stop.value.code == 2 and (tmp_path / "new" / "ckpt.pt").exists()
    fake_run(tmp_path / "old", 9, files=("ckpt.pt",))  # read at step 4; step 9 now
    old = argparse.Namespace(out=str(tmp_path / "old"), resume=True, overwrite=False)
    with pytest.raises(SystemExit) as stop:
        runs.prepare_folder(old, print, {"step": 4})
    assert stop.value.code == 2
    fake_run(tmp_path / "same", 9, files=("ckpt.pt",))
    same = argparse.Namespace(out=str(tmp_path / "same"), resume=True, overwrite=False)
    runs.prepare_folder(same, print, {"step": 9}).close()  # unchanged: it goes on


@pytest.mark.parametrize("present", ["log.csv", "samples.png", "best.pt"])
def test_any_file_train_writes_makes_a_folder_a_run(photo_dir, tmp_path, present):
    (tmp_path / present).write_bytes(b"the user's own")
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path, *TINY), "--overwrite", present)
    assert (tmp_path / present).read_bytes() == b"the user's own"


def test_overwrite_removes_the_old_runs_files_before_the_new_run_writes(photo_dir, tmp_path):
    fake_run(tmp_path, 999)
    for name in ("loss.png", "samples.png", "log.csv"):
        (tmp_path / name).write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    d = tmp_path / "data"  # a validation split that stops the new run before its first save
    (d / "train").mkdir(parents=True)
    (d / "val").mkdir()
    make_photo(d / "train" / "a.jpg")
    (d / "val" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    r = run("train.py", "--data", d, "--out", tmp_path, "--overwrite", *TINY)
    one_error_line(r, "validation")
    assert "--overwrite: removed the old run's" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "data", "notes.txt"]


def test_a_second_train_on_the_same_out_is_refused_and_a_killed_one_leaves_no_stuck_lock(photo_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # as a running train.py holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (out / "ckpt.pt.tmp4242").write_bytes(b"the other run's save in flight")
        one_error_line(run("train.py", "--data", photo_dir, "--out", out, "--overwrite", *TINY),
                       "another train.py", "--out")
        assert (out / "ckpt.pt.tmp4242").exists()  # its save in flight was not touched
    cmd = [sys.executable, "train.py", "--data", str(photo_dir), "--out", str(out), "--overwrite", "--max-steps",
           "100000", "--eval-every", "100000", *TINY]
    p = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if "| loss" in line:
            break
    p.kill()  # kill -9: no clean-up at all
    p.wait()
    r = run("train.py", "--data", photo_dir, "--out", out, "--overwrite", "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr


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


def test_an_unwritable_cache_is_one_line_and_leaves_no_empty_run_folder(photo_dir, tmp_path):
    (tmp_path / "not-a-folder").write_text("x")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "not-a-folder"), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": ""}
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--inception", "auto", *TINY[2:],
            timeout=120, env=env)
    one_error_line(r, "not-a-folder", "XDG_CACHE_HOME")
    assert not (tmp_path / "run").exists()  # made for the run, removed again: nothing was written


def test_the_lock_is_never_written_through_a_link_nor_over_a_users_file(photo_dir, tmp_path):
    """--out/.lock: a link to a file elsewhere is refused (the file unchanged),
    and so is a .lock of the user's own in a folder with no run yet."""
    target = tmp_path / "precious.txt"
    target.write_text("mine\n")
    out = tmp_path / "run"
    out.mkdir()
    os.symlink(target, out / ".lock")
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, *TINY)
    assert r.returncode == 2 and ".lock is a link" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert target.read_text() == "mine\n" and os.path.islink(out / ".lock")
    os.remove(out / ".lock")
    (out / ".lock").write_text("my notes about locks\n")
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, *TINY)
    assert r.returncode == 2 and "not train.py's lock" in r.stderr, r.stderr
    assert (out / ".lock").read_text() == "my notes about locks\n"


def test_start_up_removes_only_its_own_temporary_files(photo_dir, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    mine = ["log.csv.tmpl", "ckpt.pt.tmp-backup", "best.pt.tmp", "notes.tmp123"]
    for name in mine + ["ckpt.pt.tmp8231", "samples.png.tmp40"]:
        (out / name).write_text("x")
    r = run("train.py", "--data", photo_dir, "--out", out, "--max-steps", 2, "--eval-every", 2, *TINY)
    assert r.returncode == 0, r.stderr
    left = set(os.listdir(out))
    assert set(mine) <= left and not {"ckpt.pt.tmp8231", "samples.png.tmp40"} & left, left


# -----------------------------------------------------------------------------
# 9. Signals stop cleanly
# Ctrl-C, SIGTERM and SIGHUP in train.py and colorize.py, and Ctrl-C while torch loads.

def test_ctrl_c_saves_the_step_in_hand_and_resume_goes_on(photo_dir, tmp_path):
    """Ctrl-C reaches every process of the terminal (the loader worker too):
    train.py finishes the step, saves ckpt.pt there and stops in one line. The
    run cannot finish (100000 steps) and the signal is sent after a logged
    step: it lands during training, and only 130 is a clean stop."""
    returncode, out, err, logged = signal_a_training_run(photo_dir, tmp_path, signal.SIGINT)
    assert returncode == 130 and "Traceback" not in err, (returncode, out[-2000:], err[-2000:])
    assert "Ctrl-C: saving a checkpoint after this step, then stopping" in out, out
    stopped = re.search(r"stopped at step (\d+)/100000: (\S+) holds it \(--resume continues the run\)", out)
    assert stopped and stopped.group(2) == str(tmp_path / "ckpt.pt"), out
    step = int(stopped.group(1))
    assert logged <= step < 100000, (logged, step)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == step
    r = run("train.py", "--data", photo_dir, "--out", tmp_path, "--resume", "--max-steps", step + 2)
    assert r.returncode == 0 and f"at step {step}" in r.stdout, r.stderr
    assert f"step {step + 1}/{step + 2} | loss" in r.stdout and "step 1/" not in r.stdout, r.stdout
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == step + 2


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_like_ctrl_c(photo_dir, tmp_path, signame):
    # as timeout, Slurm or a closed ssh session do: to the whole process group
    returncode, out, err, logged = signal_a_training_run(photo_dir, tmp_path, getattr(signal, signame))
    assert returncode == 130 and "Traceback" not in err, err
    assert f"{signame}: saving a checkpoint" in out, out
    step = int(re.search(r"stopped at step (\d+)/100000", out).group(1))
    assert logged <= step < 100000, (logged, step)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == step


STOP_WHILE_EXITING = """
import atexit, os, signal, sys, time
import runs
class Run:  # what StopRequest asks of train.py's run
    finished = False
    def last_good(self):
        return "run/ckpt.pt is the last good checkpoint"
run = Run()
runs.StopRequest(run, lambda *a: print(*a, flush=True))
os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: train.py saves the step in hand
run.finished = True  # ... and has saved it; now its loader workers shut down, in an exit handler
atexit.register(lambda: (print("exiting", flush=True), time.sleep(30)))
"""


def test_a_second_ctrl_c_while_train_exits_is_one_line(tmp_path):
    """Once everything is saved, a Ctrl-C during the exit (loader workers
    shutting down) stops at once, says nothing was lost, and prints no
    traceback from the exit handler it interrupts."""
    p = subprocess.Popen([sys.executable, "-c", STOP_WHILE_EXITING], cwd=HERE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("exiting"):
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130 and "Traceback" not in err and not err.strip(), err
    assert out.strip().splitlines()[-1] == "stopped while exiting: every file was already written", out


def test_colorize_stopped_by_sigterm_exits_130_and_leaves_no_temporary_file(tmp_path):
    for i in range(30):
        make_photo(tmp_path / f"p{i}.jpg", size=(400, 300), seed=i)
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "colorize.py"), str(tmp_path), "--checkpoint", DEMO],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("[2/"):
            break
    p.terminate()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_colorize_whose_reader_left_stops_in_one_line(tiny_ckpt, tmp_path):
    """colorize.py DIR | head: when the pipe closes, one line on stderr, exit
    141 as a killed pipeline's, no traceback, and every output written is whole."""
    photos = [make_photo(tmp_path / f"p{i}.jpg", size=(40, 32), seed=i) for i in range(3)]
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "colorize.py"), *map(str, photos), "--checkpoint",
                          str(tiny_ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdout.close()  # the reader leaves before the first line
    err = p.stderr.read()
    assert p.wait(timeout=120) == 141 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "stopped: standard output was closed; the outputs written so far are whole"
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    assert all(Image.open(f).size == (40, 32) for f in tmp_path.glob("*_color.png"))


@pytest.mark.parametrize("script", ["train.py", "colorize.py"])
def test_ctrl_c_while_torch_loads_is_one_line(tmp_path, script):
    p = subprocess.Popen([sys.executable, script, "--help"], cwd=HERE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the script is importing torch (a second or more)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert "Traceback" not in err and p.returncode in (0, 130), err


def test_ctrl_c_under_torchrun_stops_every_rank_in_one_line_each(photo_dir, tmp_path):
    """Ctrl-C during training under torchrun: no rank says "before training
    began", none prints a traceback (SystemExit from half-run exit handlers),
    rank 0 says in one line where the last checkpoint is, and it stays whole."""
    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          os.path.join(HERE, "train.py"), "--data", str(photo_dir), "--out", str(out),
                          "--max-steps", "100000", "--eval-every", "2", "--log-every", "1", *map(str, TINY)],
                         cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "ckpt.pt").exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(p.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    stdout, stderr = p.communicate(timeout=120)
    # (torchrun's own launcher prints a traceback of its SignalException: not ours)
    ours = [line for line in stderr.splitlines() if "train.py" in line or "SystemExit" in line]
    assert "before training began" not in stdout + stderr and not ours, (stdout[-1500:], ours)
    assert re.search(r"stopped; .*ckpt\.pt is the last good checkpoint, --resume continues from it", stdout), stdout
    assert torch.load(out / "ckpt.pt", weights_only=True)["step"] >= 2


# -----------------------------------------------------------------------------
# 10. Bad input is one line
# Flags and files of train.py and colorize.py: exit 2 before any work, or one line per bad file, the rest done.

@pytest.mark.parametrize("flag,value", [
    ("--batch-size", 0), ("--eval-every", 0), ("--log-every", 0), ("--lr", "nan"), ("--lr", "-1"),
    ("--workers", -1), ("--cache", -1), ("--width", 0), ("--width", 1), ("--val-images", 0), ("--size", 0), ("--size", -8),
    ("--size", 100000), ("--size", 30), ("--max-steps", 0), ("--ema", 1), ("--val-fraction", 0),
    ("--seed", -1), ("--seed", 2**63 - 1)])
def test_train_checks_every_flag_before_any_work(photo_dir, tmp_path, flag, value):
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "run", *TINY, flag, value)
    one_error_line(r, flag)
    assert not (tmp_path / "run").exists()


def test_train_checks_files_and_folders_before_any_work(photo_dir, tmp_path):
    one_error_line(run("train.py", "--data", photo_dir, "--inception", tmp_path), "--inception")
    (tmp_path / "junk.safetensors").write_bytes(b"\x08" + bytes(71))  # a weights file in name only
    r = run("train.py", "--data", photo_dir, "--out", tmp_path / "junk", "--inception", tmp_path / "junk.safetensors",
            *TINY[2:])
    one_error_line(r, "--inception", "junk.safetensors")
    assert not (tmp_path / "junk").exists() and "data:" not in r.stdout  # before the photos are read
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        one_error_line(run("train.py", "--data", photo_dir, "--out", out, *TINY), "--out", out)
    one_error_line(run("train.py", "--data", photo_dir, "--out", "/dev/null", *TINY), "--out /dev/null: not a folder")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "dangling", *TINY), "a link to nothing")
    # a validation split with nothing usable in it (old scans, broken files) stops before step 1
    d = tmp_path / "data"
    (d / "train").mkdir(parents=True)
    (d / "val").mkdir()
    make_photo(d / "train" / "a.jpg")
    Image.open(d / "train" / "a.jpg").convert("L").save(d / "val" / "scan.png")
    (d / "val" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    r = run("train.py", "--data", d, "--out", tmp_path / "run", *TINY)
    assert "scan.png: grayscale" in r.stdout and "broken.jpg: unreadable" in r.stdout
    one_error_line(r, "--data", "validation")
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_train_refuses_missing_or_empty_data_in_one_line(tmp_path):
    for folder in (tmp_path / "missing", tmp_path):
        r = run("train.py", "--data", folder, "--inception", "none")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.strip().count("\n") == 0 and str(folder) in r.stderr


def test_compile_on_the_cpu_is_refused_in_one_line(photo_dir, tmp_path):
    one_error_line(run("train.py", "--data", photo_dir, "--out", tmp_path / "run", "--device", "cpu", "--compile",
                       *TINY), "--compile", "CUDA")
    assert not (tmp_path / "run").exists()


def test_train_names_files_whose_names_are_not_utf8(photo_dir, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for p in photo_dir.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    bad = os.path.join(os.fsencode(d), b"caf\xe9.jpg")  # Latin-1 bytes, as old cameras wrote them
    with open(bad, "wb") as f:
        f.write(b"not a jpeg")
    r = run("train.py", "--data", d, "--out", tmp_path / "run", "--max-steps", 4, "--eval-every", 4,
            "--val-fraction", 0.5, *TINY)
    assert r.returncode == 0, r.stderr
    assert "caf\\xe9.jpg: unreadable" in r.stdout, r.stdout


@pytest.mark.parametrize("flags, message", [
    (["-o", "FILE"], "--out FILE: a file, not a folder"),
    (["-o", "FILE/sub"], "--out FILE/sub: cannot write there"),
    (["--size", "0"], "--size 0: must be 8 to 4096"),
    (["--size", "100000"], "--size 100000: must be 8 to 4096"),
    (["--batch-size", "0"], "--batch-size 0: must be 1 or more"),
    (["-o", ""], "--out, --checkpoint and --inception take a path: an empty one"),
    (["-o", "/dev/null"], "--out /dev/null: not a folder (a device or a FIFO)"),
    (["--checkpoint", ""], "--out, --checkpoint and --inception take a path: an empty one")])
def test_bad_flags_are_one_line_before_any_work(tmp_path, flags, message):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    (tmp_path / "FILE").write_text("a file")
    r = colorize_cli(img, *[f.replace("FILE", str(tmp_path / "FILE")) for f in flags], "--checkpoint", DEMO)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: " + message.replace("FILE", str(tmp_path / "FILE"))), r.stderr
    assert not (tmp_path / "p_color.png").exists() and (tmp_path / "FILE").read_text() == "a file"


def test_an_attention_model_too_slow_at_its_size_on_the_cpu_says_so_before_work(tiny_ckpt, tmp_path):
    """At a short side of 2048 attention compares 65536+ positions with each
    other: minutes a photo on a CPU. Said before the first photo, with what
    to do, and it stops cleanly when the user takes the advice."""
    photo = make_photo(tmp_path / "p.jpg", size=(40, 32))
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "colorize.py"), str(photo), "--checkpoint",
                          str(tiny_ckpt), "--size", "2048", "--device", "cpu"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if line.startswith(("note:", "error:", "Traceback")):
            break
    p.terminate()
    out, err = p.communicate(timeout=60)
    assert line.startswith("note: ") and "65536+ positions" in line and "--size 512" in line, line + err
    assert p.returncode == 130 and not (tmp_path / "p_color.png").exists(), err


def test_attention_at_a_size_that_would_need_gigabytes_is_refused(tmp_path):
    img = make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli(img, "--attention", "--size", 2048, "--checkpoint", DEMO)
    assert r.returncode == 2 and r.stderr.startswith("error: --attention with --size 2048") and "GB" in r.stderr


def test_colorize_reports_bad_files_and_writes_the_good_ones(tiny_ckpt, tmp_path):
    good = [make_photo(tmp_path / f"good{i}.jpg", seed=i) for i in range(2)]
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello, I am not a picture")
    (tmp_path / "cut.jpg").write_bytes(good[0].read_bytes()[:400])
    Image.new("1", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 megapixels, a few kB
    bad = ["empty.jpg", "text.png", "cut.jpg", "bomb.png", "missing.jpg"]
    r = run("colorize.py", tmp_path / "empty.jpg", good[0], tmp_path / "text.png", tmp_path / "cut.jpg",
            tmp_path / "bomb.png", tmp_path / "missing.jpg", good[1], "--checkpoint", tiny_ckpt)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if not line.startswith("checkpoint: ")]
    assert len(errors) == len(bad)
    for name in bad:
        assert sum(name in line and line.startswith("error: ") for line in errors) == 1, (name, errors)
    assert "decompression bomb" in r.stderr and "no such file" in r.stderr
    for g in good:
        assert (tmp_path / (g.stem + "_color.png")).exists()


def test_a_fifo_is_passed_over_in_a_folder_and_an_error_when_named(tmp_path):
    make_photo(tmp_path / "ok.jpg", size=(40, 32))
    os.mkfifo(tmp_path / "pipe.jpg")
    r = colorize_cli(tmp_path, tmp_path / "pipe.jpg", "--checkpoint", DEMO, timeout=60)
    assert r.returncode == 1 and (tmp_path / "ok_color.png").exists(), r.stderr
    lines = r.stderr.splitlines()
    assert any(line.startswith("warning: ") and "pipe.jpg: not a regular file" in line for line in lines), lines
    assert any(line.startswith("error: ") and "pipe.jpg: not a regular file" in line for line in lines), lines


def test_a_folder_without_images_is_an_error_and_folders_take_what_files_take(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no pictures here")
    (tmp_path / "gifs").mkdir()
    Image.open(make_photo(tmp_path / "src.png", size=(40, 32))).save(tmp_path / "gifs" / "old.gif")
    r = colorize_cli(tmp_path / "empty", tmp_path / "gifs", "--checkpoint", DEMO)
    assert r.returncode == 1
    assert f"error: no images found in {tmp_path / 'empty'}" in r.stderr
    assert (tmp_path / "gifs" / "old_color.png").exists()


def test_unreadable_folders_are_reported_not_skipped_silently(tmp_path):
    """As root, chmod 000 does not stop reading: os.scandir is made to refuse one folder."""
    (tmp_path / "locked").mkdir()
    make_photo(tmp_path / "locked" / "hidden.jpg", size=(40, 32))
    make_photo(tmp_path / "ok.jpg", size=(40, 32))
    code = ("import os, sys, colorize\n"
            "real = os.scandir\n"
            "def scandir(p='.'):\n"
            "    if os.path.basename(os.fspath(p)) == 'locked':\n"
            "        raise PermissionError(13, 'Permission denied', os.fspath(p))\n"
            "    return real(p)\n"
            "os.scandir = scandir\n"
            f"sys.exit(colorize.main([{str(tmp_path)!r}, '--checkpoint', {DEMO!r}]))")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    assert f"warning: {tmp_path / 'locked'}: cannot read this folder (Permission denied)" in r.stderr
    assert (tmp_path / "ok_color.png").exists()


def test_names_that_are_not_utf8_are_shown_escaped(tmp_path):
    name = os.fsdecode(b"caf\xff.jpg")
    make_photo(os.path.join(tmp_path, name), size=(40, 32))
    (tmp_path / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"not a picture")
    assert len(data.find_images(tmp_path)) == 2
    r = colorize_cli(tmp_path, "--checkpoint", DEMO)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "caf\\xff.jpg ->" in r.stdout and "error: " in r.stderr and "bad\\xff.jpg" in r.stderr
    assert os.path.exists(os.path.join(tmp_path, os.fsdecode(b"caf\xff_color.png")))
    _, skipped = data.ImageFolder([os.path.join(tmp_path, os.fsdecode(b"bad\xff.jpg")),
                                   os.path.join(tmp_path, name)], size=16)[0]
    assert "bad\\xff.jpg: unreadable" in skipped[0]
    skipped[0].encode("utf-8")  # printable by train.py


def test_a_file_name_with_a_newline_is_printed_on_one_line(tmp_path):
    make_photo(tmp_path / "two\nlines.jpg", size=(40, 32))
    r = colorize_cli(tmp_path, "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert "two\\nlines.jpg ->" in r.stdout and len(r.stdout.strip().splitlines()) == 1, r.stdout


def test_warnings_name_the_file_they_are_about(tmp_path):
    img = make_photo(tmp_path / "big.png", size=(40, 40))  # 1600 pixels: over a limit of 1000
    code = ("import sys, colorize, PIL.Image\n"
            "PIL.Image.MAX_IMAGE_PIXELS = 1000\n"
            f"sys.exit(colorize.main([{str(img)!r}, '--checkpoint', {DEMO!r}]))")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    assert f"warning: {img}: Image size (1600 pixels) exceeds limit" in r.stderr, r.stderr


def test_attention_is_refused_at_a_checkpoints_own_size_that_would_need_gigabytes(tmp_path):
    """The guard reads the size the model will see: --size, else the checkpoint's."""
    fake_run(tmp_path / "big", 3)
    ckpt = torch.load(tmp_path / "big" / "best.pt", weights_only=True)
    ckpt["args"]["size"] = 1024
    torch.save(ckpt, tmp_path / "big.pt")
    make_photo(tmp_path / "p.jpg", size=(40, 32))
    r = colorize_cli(tmp_path / "p.jpg", "--checkpoint", tmp_path / "big.pt", "--attention", timeout=120)
    assert r.returncode == 2 and "--attention with" in r.stderr and "trained at 1024" in r.stderr, r.stderr[-500:]
    assert not (tmp_path / "p_color.png").exists()
    r = colorize_cli(tmp_path / "p.jpg", "--checkpoint", tmp_path / "big.pt", "--attention", "--size", 64)
    assert r.returncode == 0 and (tmp_path / "p_attention.html").exists(), r.stderr


def test_a_corrupt_exif_is_a_bad_file_like_any_other(tmp_path, monkeypatch):
    """What Pillow raises for a corrupt EXIF block (TypeError for a tag of the
    wrong type, struct.error for a short one) is an unreadable image: one line,
    and the next photo is done; the API raises ColorizeError."""
    bad, good = make_photo(tmp_path / "broken.jpg", size=(40, 32)), make_photo(tmp_path / "fine.jpg", size=(40, 32))
    patch = ("import PIL.ImageOps, runpy, struct, sys\n"
             "real = PIL.ImageOps.exif_transpose\n"
             "def corrupt(im, **kw):\n"
             "    if str(getattr(im, 'filename', '')).endswith('broken.jpg'):\n"
             "        raise (TypeError('unsupported operand type(s)') if 'type' in sys.argv[-1] else\n"
             "               struct.error('unpack requires a buffer of 4 bytes'))\n"
             "    return real(im, **kw)\n"
             "PIL.ImageOps.exif_transpose = corrupt\n"
             "sys.argv = sys.argv[1:-1]\n"
             "runpy.run_path('colorize.py', run_name='__main__')\n")
    for kind in ("type", "struct"):
        r = run("-c", patch, "colorize.py", bad, good, "--checkpoint", DEMO, "--overwrite", kind)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-1000:]
        assert re.search(r"error: .*broken\.jpg: not a readable image", r.stderr) and (tmp_path / "fine_color.png").exists()
    monkeypatch.setattr(ImageOps, "exif_transpose", lambda im, **kw: (_ for _ in ()).throw(TypeError("bad tag")))
    with pytest.raises(colorize.ColorizeError, match="broken.jpg: not a readable image"):
        colorize.colorize(bad, colorize.load(DEMO, device="cpu"))


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


# -----------------------------------------------------------------------------
# 11. colorize.py gives every input its own outputs
# Every mode at full size, folders, --compare/--attention/--metrics, colliding names, 24 MP, the Python API.

def test_colorize_every_mode_at_full_size_without_touching_inputs(tiny_ckpt, tmp_path):
    names = odd_images(tmp_path)
    before = {n: digest(tmp_path / n) for n in names}
    r = run("colorize.py", *[tmp_path / n for n in names], "--checkpoint", tiny_ckpt)
    assert r.returncode == 0, r.stderr
    for n in names:
        stem, ext = os.path.splitext(n)  # gray16.png and gray16.tif: one output each, named by extension
        out = tmp_path / (stem + ("_" + ext[1:] if stem == "gray16" else "") + "_color.png")
        assert str(out) in r.stdout
        im = Image.open(out)
        assert im.size == (333, 517), n
        assert im.mode == ("RGBA" if "alpha" in n or n == "rgba.png" else "RGB"), n
        assert digest(tmp_path / n) == before[n], n
    # the full-resolution L is the input's: lightness matches to rounding
    src_l = lab.rgb_to_lab(torch.from_numpy(np.array(Image.open(tmp_path / "gray.png").convert("RGB")))
                           .permute(2, 0, 1).float() / 255)[0]
    out_l = lab.rgb_to_lab(torch.from_numpy(np.array(Image.open(tmp_path / "gray_color.png")))
                           .permute(2, 0, 1).float() / 255)[0]
    assert (src_l - out_l).abs().mean() < 1.0
    # a second run skips what exists, --overwrite redoes it
    r = run("colorize.py", tmp_path / "rgb.jpg", "--checkpoint", tiny_ckpt)
    assert r.returncode == 0 and "skip:" in r.stdout and "exists" in r.stdout
    r = run("colorize.py", tmp_path / "rgb.jpg", "--checkpoint", tiny_ckpt, "--overwrite")
    assert r.returncode == 0 and "rgb_color.png" in r.stdout
    # asking for an extra output later makes just that one; the kept output is not rewritten
    kept = digest(tmp_path / "rgb_color.png")
    r = run("colorize.py", tmp_path / "rgb.jpg", "--checkpoint", tiny_ckpt, "--compare")
    assert r.returncode == 0 and "rgb_compare.png" in r.stdout and "rgb_color.png" not in r.stdout, r.stdout
    assert (tmp_path / "rgb_compare.png").exists() and digest(tmp_path / "rgb_color.png") == kept


def test_colorize_folder_into_out_dir_with_compare_attention_and_metrics(tiny_ckpt, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    make_photo(src / "color.jpg", size=(120, 80))
    Image.open(make_photo(src / "sub" / "x.png", size=(64, 96))).convert("L").save(src / "sub" / "old.png")
    os.remove(src / "sub" / "x.png")
    out = tmp_path / "out"
    r = run("colorize.py", src, "-o", out, "--checkpoint", tiny_ckpt, "--compare", "--attention",
            "--metrics", "--batch-size", 4)
    assert r.returncode == 0, r.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*_*")) == sorted([
        "color_color.png", "color_compare.png", "color_attention.png", "color_attention.html",
        os.path.join("sub", "old_color.png"), os.path.join("sub", "old_compare.png"),
        os.path.join("sub", "old_attention.png"), os.path.join("sub", "old_attention.html")])
    assert not list(src.rglob("*_color.png"))
    # compare: gray | colorized | original for a color input, gray | colorized for a gray one
    assert Image.open(out / "color_compare.png").size == (3 * 120 + 2 * 4, 18 + 80)  # 18: captions
    assert Image.open(out / "sub" / "old_compare.png").size == (2 * 64 + 4, 18 + 96)
    # attention: the colorized picture and four heat maps at the network's size (short side 32)
    att = Image.open(out / "color_attention.png")
    assert att.size == (5 * 48 + 4 * 4, 18 + 32)
    # metrics: per color image, then the mean; the gray input is said to have none
    line = [line for line in r.stdout.splitlines() if "color.jpg: colorized PSNR" in line][0]
    psnr_value = float(line.split("PSNR ")[1].split(" dB")[0])
    assert 5 < psnr_value < 60
    assert "all-gray PSNR" in line and "original colorfulness" in line
    assert "old.png: grayscale input" in r.stdout and "mean over 1 color images" in r.stdout
    assert "|rg|, |yb|" in r.stdout
    # attention: how concentrated the weights printable are, one line per image
    assert re.search(r"attention: .*color\.jpg: rings 1-4: entropy [\d./]+ of uniform, top 5% of positions hold",
                     r.stdout), r.stdout


def test_colorize_compares_several_checkpoints_side_by_side(tiny_ckpt, photo_dir, tmp_path):
    other = tmp_path / "baseline"
    r = run("train.py", "--data", photo_dir, "--out", other, "--max-steps", 2, "--eval-every", 2,
            "--model", "baseline", *TINY)
    assert r.returncode == 0, r.stderr
    img, img2 = make_photo(tmp_path / "pic.jpg", size=(72, 48)), make_photo(tmp_path / "pic2.jpg", seed=1)
    r = run("colorize.py", "--checkpoint", tiny_ckpt, "--checkpoint", other / "ckpt.pt", img, img2, "--compare",
            "--metrics")
    assert r.returncode == 0, r.stderr
    # gray | first model | second model | original
    assert Image.open(tmp_path / "pic_compare.png").size == (4 * 72 + 3 * 4, 18 + 48)
    means = [line for line in r.stdout.splitlines() if line.startswith("metrics:   ")]
    names = [tiny_ckpt.parent.name, "baseline"]
    assert [line.split()[1] for line in means] == names + ["all-gray", "original"] + names
    assert all(" against all-gray: PSNR " in line and "90% of resamplings" in line for line in means[4:])


def test_inputs_that_share_an_output_name_each_get_their_own(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("x.jpg", "x.png"):
        make_photo(d / name, size=(40, 32))
    r = colorize_cli(d, "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in d.glob("*_color.png")) == ["x_jpg_color.png", "x_png_color.png"]
    assert "[1/2]" in r.stdout and "[2/2]" in r.stdout and "img/s | eta" in r.stdout
    assert re.search(r"^checkpoint: .*colorizer\.pt \(step \d+", r.stderr, re.M), r.stderr
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        make_photo(tmp_path / sub / "x.jpg", size=(40, 32))
    r = colorize_cli(tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.jpg", "-o", tmp_path / "out", "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x-2_color.png", "x_color.png"]


def test_overwrite_never_writes_over_an_input_named_like_an_output(tmp_path):
    make_photo(tmp_path / "a.jpg", size=(40, 32))
    make_photo(tmp_path / "a_color.png", size=(40, 32), seed=1)
    before = digest(tmp_path / "a_color.png")
    r = colorize_cli(tmp_path / "a.jpg", tmp_path / "a_color.png", "--overwrite", "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert digest(tmp_path / "a_color.png") == before
    assert (tmp_path / "a-2_color.png").exists() and (tmp_path / "a_color_color.png").exists()
    # an input that is a link to what would be another input's output: the file behind it is kept too
    (tmp_path / "l").mkdir()
    make_photo(tmp_path / "l" / "x.jpg", size=(40, 32))
    make_photo(tmp_path / "l" / "x_color.png", size=(40, 32), seed=2)
    os.symlink("x_color.png", tmp_path / "l" / "pic.png")
    before = digest(tmp_path / "l" / "x_color.png")
    r = colorize_cli(tmp_path / "l" / "x.jpg", tmp_path / "l" / "pic.png", "--overwrite", "--checkpoint", DEMO)
    assert r.returncode == 0 and digest(tmp_path / "l" / "pic.png") == before, r.stderr
    assert (tmp_path / "l" / "x-2_color.png").exists()


def test_colorize_a_24_megapixel_photo_in_bounded_memory(tiny_ckpt, tmp_path):
    """6000 x 4000, with --metrics: full size out, and the process stays far
    below this machine's memory (the full-resolution work and the metrics run
    in strips; the metrics over the whole image at once took 136 bytes a pixel)."""
    big = tmp_path / "big.jpg"
    Image.open(make_photo(tmp_path / "src.png", size=(300, 200))).resize((6000, 4000)).save(big, quality=90)
    code = ("import sys, colorize\n"
            f"rc = colorize.main([{str(big)!r}, '--checkpoint', {str(tiny_ckpt)!r}, '--metrics'])\n"
            "peak = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
            "print('PEAK_KB', peak)\nsys.exit(rc)")
    r = run("-c", code)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "big_color.png").size == (6000, 4000) and "big.jpg: colorized PSNR" in r.stdout
    peak_mb = int(r.stdout.split("PEAK_KB")[1].split()[0]) / 1024
    assert peak_mb < 2500, peak_mb  # under 1 GB measured; the whole image in float32 Lab at once: several GB


def test_python_api_colorizes_paths_and_images_and_raises_one_line_errors(tmp_path):
    path = make_photo(tmp_path / "p.png", size=(50, 30))
    colorizer = colorize.load(DEMO, device="cpu")
    out = colorize.colorize(path, colorizer)
    assert out.size == (50, 30) and out.mode == "RGB"
    rgba = Image.open(path).convert("RGBA")
    rgba.putalpha(128)
    out = colorize.colorize(rgba, colorizer)
    assert out.mode == "RGBA" and out.getpixel((0, 0))[3] == 128
    assert colorize.colorize(Image.open(path).convert("L"), DEMO).size == (50, 30)
    with pytest.raises(colorize.ColorizeError, match=r"missing\.jpg: no such file$"):
        colorize.colorize(tmp_path / "missing.jpg", colorizer)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(colorize.CheckpointError, match="bad.pt: not a checkpoint file"):
        colorize.colorize(path, tmp_path / "bad.pt")


def test_python_api_takes_arrays_turns_pil_images_upright_and_refuses_the_impossible(tmp_path):
    colorizer = colorize.load(DEMO, device="cpu")
    path = make_photo(tmp_path / "p.jpg", size=(60, 40))
    rgb = np.asarray(Image.open(path))
    assert colorize.colorize(rgb, colorizer).size == (60, 40)
    assert colorize.colorize(rgb[..., 0].astype(np.float32) / 255, colorizer).size == (60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees": a phone photo held upright
    Image.open(path).save(tmp_path / "turned.jpg", exif=exif)
    from_path = colorize.colorize(tmp_path / "turned.jpg", colorizer)
    from_image = colorize.colorize(Image.open(tmp_path / "turned.jpg"), colorizer)
    assert from_path.size == from_image.size == (40, 60)
    with pytest.raises(colorize.ColorizeError, match="empty image"):
        colorize.colorize(Image.new("RGB", (0, 0)), colorizer)
    with pytest.raises(colorize.ColorizeError, match="not an image"):
        colorize.colorize(np.zeros((2, 3, 4, 5)), colorizer)
    # 0-255 in another dtype would read as almost white: refused, with what to give instead
    with pytest.raises(colorize.ColorizeError, match="dtype int64 is not an image: give uint8"):
        colorize.colorize(rgb.astype(np.int64), colorizer)
    with pytest.raises(colorize.ColorizeError, match="must hold values from 0 to 1, this one [0-9.]+ to 1.8"):
        colorize.colorize(rgb.astype(np.float64) / 127, colorizer)
    # a lazily opened image is decoded by colorize(): a truncated file is an image error, not an OSError
    whole = make_photo(tmp_path / "whole.jpg", size=(200, 150)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[:len(whole) // 2])  # its header whole, half its pixels
    with pytest.raises(colorize.ColorizeError, match="the PIL image is not a readable image"):
        colorize.colorize(Image.open(tmp_path / "cut.jpg"), colorizer)
    if not torch.cuda.is_available():
        with pytest.raises(colorize.ColorizeError, match="no CUDA device"):
            colorize.load(DEMO, device="cuda")


def test_temporary_files_are_never_written_through_links(tmp_path):
    """Links planted at every name a save's temporary file could have had
    (the old NAME.tmpPID) are not followed: the file outside stays as it was,
    and the output is a file of its own, not a link."""
    photo = make_photo(tmp_path / "p.jpg", size=(40, 32))
    outside = tmp_path / "outside.txt"
    outside.write_text("not a PNG")
    for pid in range(1, 4096):  # where the old code wrote: p_color.png.tmp<pid>
        os.symlink(outside, tmp_path / f"p_color.png.tmp{pid}")
    r = colorize_cli(photo, "--checkpoint", DEMO)
    assert r.returncode == 0, r.stderr
    assert outside.read_text() == "not a PNG"
    assert not os.path.islink(tmp_path / "p_color.png") and Image.open(tmp_path / "p_color.png").size == (40, 32)
    # and a link at the output's own name is replaced by the output, not written through
    os.remove(tmp_path / "p_color.png")
    os.symlink(outside, tmp_path / "p_color.png")
    r = colorize_cli(photo, "--checkpoint", DEMO, "--overwrite")
    assert r.returncode == 0 and outside.read_text() == "not a PNG" and not os.path.islink(tmp_path / "p_color.png")
    (tmp_path / "sub").mkdir()
    got = []
    runs.save_atomic(lambda f: got.extend(os.listdir(tmp_path / "sub")), tmp_path / "sub" / "x.bin")
    assert len(got) == 1 and runs.TEMPORARY.fullmatch(got[0]) and got[0].startswith("x.bin.tmp"), got
    assert os.listdir(tmp_path / "sub") == ["x.bin"]


def test_a_folder_at_an_output_name_is_an_error_for_that_input(tmp_path):
    photos = [make_photo(tmp_path / f"{n}.jpg", size=(40, 32)) for n in ("a", "b")]
    (tmp_path / "a_color.png").mkdir()
    for more in ([], ["--overwrite"]):
        r = colorize_cli(*photos, "--checkpoint", DEMO, *more)
        assert r.returncode == 1 and "a.jpg: " in r.stderr and "a_color.png is a folder" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and (tmp_path / "a_color.png").is_dir() and (tmp_path / "b_color.png").is_file()


def test_names_up_to_255_bytes_are_written(tmp_path):
    """The temporary name fits wherever the output's name does."""
    for length in (246, 250, 255):  # the output's name, in bytes
        stem = "a" * (length - len("_color.png"))
        photo = make_photo(tmp_path / f"{stem}.jpg", size=(40, 32))
        r = colorize_cli(photo, "--checkpoint", DEMO)
        assert r.returncode == 0, (length, r.stderr)
        assert (tmp_path / f"{stem}_color.png").exists()


# -----------------------------------------------------------------------------
# 12. Where attention looks
# The statistics, the figure, the explorer page: the model's own weights, its size, in a real browser.

def test_attention_statistics_tell_uniform_weights_from_peaked_ones():
    uniform, peaked = torch.full((3, 400), 1 / 400), torch.eye(400)[:3]
    entropy, top, _ = attention_maps.attention_stats(uniform)
    assert torch.allclose(entropy, torch.ones(3)) and torch.allclose(top, torch.full((3,), 0.05))
    entropy, top, _ = attention_maps.attention_stats(peaked)
    assert torch.allclose(entropy, torch.zeros(3), atol=1e-6) and torch.allclose(top, torch.ones(3))
    # the figure: uniform weights draw no heat at all (the panel is the dimmed gray picture)
    copy = Image.new("RGB", (160, 80), (100, 150, 200))
    *row, line = attention_maps.attention_figure(copy, copy, torch.full((200, 200), 1 / 200))
    sheet = outputs.side_by_side(*row)
    gray_level = np.asarray(copy.convert("L"))[0, 0]
    panel = np.asarray(sheet)[18:, 164:324]  # ring 1's panel: red is 0.35 gray (the ring is cyan: no red)
    assert panel[..., 0].max() <= round(0.35 * gray_level) + 1, panel[..., 0].max()
    assert "entropy 1.00/1.00/1.00/1.00 of uniform" in line and "top 5% of positions hold 5%/5%/5%/5%" in line
    *row, line = attention_maps.attention_figure(copy, copy, torch.eye(200))
    sheet = outputs.side_by_side(*row)
    assert "entropy 0.00" in line and "hold 100%" in line
    assert np.asarray(sheet)[18:, 164:324, 0].max() > 200  # all the weight on one position: full heat there


def test_the_attention_explorer_embeds_the_models_own_weights(tiny_ckpt, tmp_path):
    """NAME_attention.html is one file that needs nothing from outside, and the
    weights it draws are the model's alpha to within half a quantization step."""
    photo = make_photo(tmp_path / "p.jpg", size=(120, 80))
    r = run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--attention")
    assert r.returncode == 0, r.stderr
    text = open(tmp_path / "p_attention.html", encoding="utf-8").read()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)|https?://|@import|url\(""", text)  # self-contained
    page = attention_maps.read_page_data(text)
    loaded = colorize.load(tiny_ckpt, device="cpu")
    (_, alpha, copy), = colorize.predict_all(loaded, [Image.open(photo).convert("RGB")], return_attention=True)
    assert (page["width"], page["height"]) == copy.size and page["grid"] == [copy.height // 8, copy.width // 8]
    n = alpha.shape[1]
    assert page["stride"] == 1 and explorer_weights(page, n).shape == alpha.shape  # every query, at this size
    step = 2 ** (1 / 32)  # half a step of 1/16 of a doubling
    ratio = explorer_weights(page, n) / alpha.double()
    assert ((ratio >= 1 / step - 1e-6) & (ratio <= step + 1e-6)).all(), (ratio.min(), ratio.max())
    entropy, top, _ = attention_maps.attention_stats(alpha)
    assert torch.allclose(torch.tensor(page["entropy"]), entropy, atol=6e-4)
    assert torch.allclose(torch.tensor(page["top5"]), top, atol=6e-4)


def test_the_explorer_keeps_peaked_weights_and_its_size_bounded():
    """Weights far from uniform come back as exactly as near ones (within the
    stored range of 1/256 to 128 times uniform); a grid too large for every
    query embeds every stride-th one, and the page stays a few MB."""
    picture = Image.new("RGB", (64, 48), (90, 120, 60))
    alpha = torch.softmax(3 * torch.randn(48, 48, generator=torch.Generator().manual_seed(0)), dim=-1)
    page = attention_maps.read_page_data(attention_maps.attention_page(picture, alpha, "peaked"))
    back, n = explorer_weights(page, 48), 48
    kept = (alpha * n > 1 / 250) & (alpha * n < 125)
    ratio = back[kept] / alpha.double()[kept]
    assert ratio.min() > 2 ** (-1 / 32) - 1e-6 and ratio.max() < 2 ** (1 / 32) + 1e-6
    assert (back[alpha * n < 1 / 260] <= 1.01 / 256 / n).all()  # below the range: its floor
    assert kept.float().mean() > 0.5 and (alpha * n).max() > 16  # a spread of weights, some far above uniform
    stride, rows, cols, queries = attention_maps.page_queries((64, 256), 64 * 256)
    assert stride > 1 and rows * cols * 64 * 256 <= attention_maps.PAGE_BYTES and queries[1] == stride
    with pytest.raises(ValueError, match="needs"):
        attention_maps.attention_page(picture, alpha[:40, :40])


def test_the_explorer_page_holds_any_file_name_as_text():
    """A name is data: not UTF-8, holding the page's own placeholders, or
    what would open a comment in the script element, the page stays one page
    with one data block, and the name comes back as it is shown."""
    picture = Image.new("RGB", (32, 16), (90, 120, 60))
    alpha = torch.full((8, 8), 1 / 8)
    for name in ("caf\udce9.png", "DATA_001 TITLE.png", "b<!--<script>.png", "x</script><b>&amp;.png"):
        page = attention_maps.attention_page(picture, alpha, name)
        page.encode("utf-8")  # writable as the file it is saved to
        assert page.count('id="data"') == 1 and page.count("<script") == 2, name
        assert page.count("</script>") == 2 and "<!--" not in page
        assert attention_maps.read_page_data(page)["title"] == data.printable(name)


@pytest.mark.skipif(not browser() and not os.environ.get("CI"), reason="no headless Chromium here")
def test_the_explorer_opens_from_disk_and_its_fragment_chooses_the_point(tiny_ckpt, tmp_path):
    """In a real browser, from a file:// URL: the fragment #x=..,y=.. selects
    the query (said under the pictures), and two fragments draw two views."""
    photo = make_photo(tmp_path / "p.jpg", size=(160, 96))
    assert run("colorize.py", photo, "--checkpoint", tiny_ckpt, "--attention").returncode == 0
    page = tmp_path / "p_attention.html"
    page_data = attention_maps.read_page_data(page.read_text())
    gh, gw = page_data["grid"]
    shots = []
    for k, (x, y) in enumerate([(0.1, 0.1), (0.9, 0.8)]):
        url = f"{page.as_uri()}#x={x},y={y}"
        common = [browser(), "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=3000"]
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        qx, qy = min(gw - 1, int(x * gw)), min(gh - 1, int(y * gh))
        stats = re.search(r'<div id="stats">([^<]*)', dom).group(1)
        assert f"(grid cell {qx}, {qy} of {gw} x {gh})" in stats, stats
        assert f"entropy {page_data['entropy'][qy * gw + qx]:.2f} of uniform" in stats, stats
        shot = tmp_path / f"view{k}.png"
        subprocess.run([*common, "--window-size=900,600", f"--screenshot={shot}", url], capture_output=True,
                       timeout=120)
        shots.append(np.asarray(Image.open(shot).convert("RGB")).astype(int))
    assert np.abs(shots[0] - shots[1]).sum() > 0  # the ring and the heat moved


# -----------------------------------------------------------------------------
# 13. The metrics say how far they can be trusted
# PSNR and colorfulness against values by hand; a mean over few images with its uncertainty.

def test_psnr_and_colorfulness_against_hand_computed_values():
    a = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, 0] = 48  # one error of 48 in 48 values: MSE 48, PSNR = 20 log10(255 / sqrt(48))
    assert lab.psnr(b, a).item() == pytest.approx(20 * math.log10(255 / math.sqrt(48)))
    gray = torch.full((1, 3, 8, 8), 128, dtype=torch.uint8)
    assert lab.colorfulness(gray).item() == 0
    red = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 255  # rg = 255, yb = 127.5 everywhere: no spread, 0.3 * |mean|
    assert lab.colorfulness(red).item() == pytest.approx(0.3 * math.hypot(255, 127.5))


def test_metrics_say_how_far_a_mean_over_few_images_can_be_trusted():
    rows = [{"m": (21, 0.01, 5), "all-gray": (20, 0.02, 0)}, {"m": (23, 0.03, 9), "all-gray": (20, 0.04, 0)}]
    text = outputs.uncertainty(rows, "m")
    assert text.startswith("against all-gray: PSNR +2.00 dB (standard error 1.00), ab MSE 0.667x"), text
    low, high = map(float, re.findall(r"([\d.]+)x", text.split("resamplings: ")[1]))
    assert 0.5 <= low < 0.667 < high <= 0.75  # between the two images' own ratios


def test_all_gray_is_the_inputs_own_lightness_with_no_color(tiny_ckpt, tmp_path):
    # Saturated red, green and blue: Pillow's Rec. 601 luma grays them far from their CIE L*
    pixels = np.zeros((48, 96, 3), np.uint8)
    pixels[:, :32, 0], pixels[:, 32:64, 1], pixels[:, 64:, 2] = 230, 200, 255
    pixels += np.random.default_rng(0).integers(0, 20, pixels.shape, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    r = run("colorize.py", tmp_path / "rgb.png", "--checkpoint", tiny_ckpt, "--metrics", "--compare")
    assert r.returncode == 0, r.stderr
    said = float(re.search(r"all-gray PSNR ([\d.]+) dB", r.stdout).group(1))
    # what the model keeps: the photo's own L, with a* = b* = 0
    L = lab.rgb_to_lab(torch.from_numpy(pixels).permute(2, 0, 1)[None])[:, :1]
    gray = (lab.lab_to_rgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], 1)) * 255).round().byte()
    truth = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    assert said == pytest.approx(lab.psnr(gray, truth).item(), abs=0.006)
    luma = torch.from_numpy(np.array(Image.fromarray(pixels).convert("L").convert("RGB"))).permute(2, 0, 1)[None]
    assert abs(lab.psnr(luma, truth).item() - said) > 0.5  # the two grays do differ here
    # the compare sheet shows that same gray as "gray input"
    panel = np.asarray(Image.open(tmp_path / "rgb_compare.png").convert("RGB"))[18:, :96]
    assert np.abs(panel.astype(int) - gray[0].permute(1, 2, 0).numpy()).max() <= 1


# -----------------------------------------------------------------------------
# 14. The bundled demo model
# Small, loads with weights_only, used by a fresh clone, paints the sky blue and the held-out faces warm.

def test_bundled_demo_checkpoint_is_small_and_loads_with_weights_only():
    assert os.path.getsize(DEMO) < 15 * 2**20
    ckpt = torch.load(DEMO, map_location="cpu", weights_only=True)
    config = model.ColorizerConfig.from_dict(ckpt["config"])
    assert config.global_branch is False and ckpt["inception"] is None
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    model.Colorizer(config).load_state_dict({k: v.float() for k, v in ckpt["model"].items()})


def test_a_fresh_clone_colorizes_with_the_bundled_demo(tmp_path):
    """No checkpoint given or found (an empty working folder): the demo is used,
    said once, and on a held-out photo it paints the sky blue."""
    src = HELD_OUT_PHOTO if os.path.exists(HELD_OUT_PHOTO) else make_photo(tmp_path / "p.jpg", (256, 160))
    Image.open(src).convert("L").save(tmp_path / "old.jpg")
    r = run(os.path.join(HERE, "colorize.py"), "old.jpg", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("bundled demo model") == 1
    out = np.array(Image.open(tmp_path / "old_color.png"))
    ab = lab.rgb_to_lab(torch.from_numpy(out).permute(2, 0, 1).float() / 255)[1:]
    if src == HELD_OUT_PHOTO:
        chroma = ab.pow(2).sum(0).sqrt().mean().item()
        sky_b = ab[1, :ab.shape[1] // 5].mean().item()  # the top fifth of the picture is sky
        assert chroma > 5 and sky_b < -10, (chroma, sky_b)  # all-gray: 0 and 0; blue: b* < 0


def test_the_demo_paints_the_held_out_faces_warm():
    """The promise of the demo's fine-tune: on the validation photos with people
    (docs/faces.txt), every face has a* > 0 (the first demo painted them green)."""
    loaded = colorize.load(DEMO, device="cpu")
    for name, box in faces.read_boxes(os.path.join(HERE, "docs", "faces.txt")):
        photo = Image.open(os.path.join(HERE, "demo", "photos", name))
        a, b = faces.face_ab(colorize.colorize(photo.convert("L"), loaded), box)
        assert a > 0 and b > 0, (name, box, a, b)


# -----------------------------------------------------------------------------
# 15. The course (docs/)
# overfit_one_photo.py, faces.py, the commands of course.md, the exercise checker of docs/exercises.

def test_overfit_one_photo_learns_its_photo(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    r = run("docs/overfit_one_photo.py", photo, "--steps", 40, "--size", 32, "--width", 8, "--out", tmp_path / "o.png")
    assert r.returncode == 0, r.stderr
    ratios = [float(x) for x in re.findall(r"\(([\d.]+)x all-gray\)", r.stdout)]
    assert ratios[0] > 1 and ratios[-1] < 0.5, ratios  # from worse than all-gray to far better
    assert Image.open(tmp_path / "o.png").size == (3 * 32, 32)  # gray | prediction | original
    r = run("docs/overfit_one_photo.py", tmp_path / "missing.jpg")
    assert r.returncode != 0 and "missing.jpg" in r.stderr and "Traceback" not in r.stderr


def test_faces_reads_warm_skin_in_the_originals_and_green_in_a_green_copy(tmp_path):
    """docs/faces.py: every box of docs/faces.txt lies on warm skin (a* > 0) in
    its original, and a copy painted green reads as green there."""
    said = run("docs/faces.py").stdout  # no folders: the originals alone
    originals = [float(a) for a in re.findall(r"original: a\* *([-+][\d.]+)", said)]
    assert len(originals) == 4 and min(originals) > 5, said
    for name in {line.split()[0] for line in open(os.path.join(HERE, "docs", "faces.txt")) if line[0] != "#"}:
        rgb = torch.from_numpy(np.array(Image.open(os.path.join(HERE, "demo", "photos", name)))).permute(2, 0, 1)
        green = lab.rgb_to_lab(rgb)
        green[1], green[2] = -10.0, 10.0  # every pixel a* = -10, b* = +10
        out = (lab.lab_to_rgb(green) * 255).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(out).save(tmp_path / (name[:-4] + "_color.png"))
    r = run("docs/faces.py", tmp_path)
    painted = [float(a) for a in re.findall(re.escape(str(tmp_path)) + r": a\* *([-+][\d.]+)", r.stdout)]
    assert len(painted) == 4 and all(-12 < a < -8 for a in painted), r.stdout
    assert f"mean a* over 4 faces: {tmp_path}: -" in r.stdout


def test_course_commands_keep_their_promises(tmp_path):
    """Every command block of docs/course.md, in order, as a student runs them
    from the repository, at a tiny size: each exits as the page says, writes
    the files it names, and ends with the line the page shows the form of."""
    text = open(os.path.join(HERE, "docs", "course.md")).read()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    assert len(blocks) == len(COURSE_PROMISES), len(blocks)
    for name in os.listdir(HERE):  # the repository, as cloned (runs/ starts empty)
        if name.endswith(".py") or name in ("demo", "docs"):
            os.symlink(os.path.join(HERE, name), tmp_path / name)
    for block, (finds, status, files, last_line) in zip(blocks, COURSE_PROMISES):
        assert re.search(finds, block), (finds, block)  # the page's order is the table's
        for pattern, tiny in TINY_COURSE:
            block = re.sub(pattern, tiny, block)
        r = subprocess.run(["bash", "-euc", block], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert r.returncode == status and "Traceback" not in r.stderr, (block, r.stdout[-2000:], r.stderr[-2000:])
        missing = [f for f in files if not (tmp_path / "runs" / f).exists()]
        assert not missing, (block, missing)
        if last_line:
            assert re.fullmatch(last_line, r.stdout.splitlines()[-1]), (block, r.stdout[-1000:])
        else:
            assert re.fullmatch(r"error: .*\n", r.stderr), (block, r.stderr)


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


def test_overfit_one_photo_never_replaces_a_file_unasked_and_says_a_bad_out_in_one_line(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    before = digest(photo)
    small = ["--steps", 2, "--size", 16, "--width", 4]
    for out, overwrite, says in [(photo, True, "that is the photo itself"), (photo, False, "that is the photo itself"),
                                 (tmp_path / "notes.txt", False, "exists (--overwrite replaces it)"),
                                 (tmp_path, True, "exists and is not a file"),
                                 (tmp_path / "notes.txt" / "o.png", False, "cannot write there")]:
        (tmp_path / "notes.txt").write_text("mine")
        r = run("docs/overfit_one_photo.py", photo, *small, "--out", out, *(["--overwrite"] if overwrite else []))
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, (out, r.stderr)
        assert digest(photo) == before and (tmp_path / "notes.txt").read_text() == "mine"
    r = run("docs/overfit_one_photo.py", photo, *small, "--out", tmp_path / "notes.txt", "--overwrite")
    assert r.returncode == 0 and Image.open(tmp_path / "notes.txt").size == (3 * 16, 16), r.stderr


def test_attention_task_runs_and_keeps_its_outputs(tmp_path):
    out = tmp_path / "task"
    r = run("docs/attention_task.py", *TINY_TASK, "--out", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # The receptive field is computed, not quoted: a number, square, and smaller than the
    # 114 px between cue and disk on both sides of a pixel (else the task would not need attention).
    field = [re.fullmatch(r"receptive field: (\d+) x (\d+) px \(computed: gradient of one output pixel\)", line)
             for line in lines]
    field = [m for m in field if m]
    assert len(field) == 1, r.stdout
    height, width = map(int, field[0].groups())
    assert height == width and 64 <= width < 2 * 114
    assert re.fullmatch(r"baseline \d+\.\d\dx all-gray, attention \d+\.\d\dx all-gray", lines[-1]), lines[-1]
    # Four held-out examples, each a row of five 256 x 64 panels (4 px apart) under an 18 px caption strip.
    with Image.open(out / "attention_task.png") as figure:
        assert figure.format == "PNG" and figure.size == (5 * 256 + 4 * 4, 4 * (18 + 64) + 3 * 6)
    page = (out / "attention_task.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and attention_maps.read_page_data(page)["grid"] == [8, 32]
    assert sorted(p.name for p in out.iterdir()) == ["attention_task.html", "attention_task.png"]  # no temporary left

    # Run again: refused in one line naming the file, before any training, and the files stay as they were.
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = run("docs/attention_task.py", *TINY_TASK, "--out", out)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and "attention_task.png" in r.stderr
    assert "--overwrite" in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = run("docs/attention_task.py", *TINY_TASK, "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr


def test_attention_task_bad_flags_are_one_line(tmp_path):
    for flags, flag in [(("--steps", "0"), "--steps"), (("--width", "x"), "--width"), (("--coords", "maybe"), "--coords"),
                        (("--seed", "-1"), "--seed"), (("--out", __file__), "--out")]:
        r = run("docs/attention_task.py", *flags, "--out", tmp_path / "never") if flag != "--out" else run("docs/attention_task.py", *flags)
        assert r.returncode == 2, (flags, r.stderr)
        assert r.stderr.count("\n") == 1 and re.match(f"error: (argument )?{flag}", r.stderr), (flags, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "never").exists()
    r = run("docs/attention_task.py", "--no-such-flag")
    assert r.returncode == 2 and r.stderr.startswith("error: unrecognized arguments: --no-such-flag")


def test_attention_task_mine_says_which_exercise_is_missing(tmp_path):
    """With the exercises as they ship (every body a NotImplementedError), --mine stops at once
    and names the first one it needs, pointing to check.py; a student's finished file passes."""
    exercises = open(os.path.join(HERE, "docs/exercises/exercises.py"), encoding="utf-8").read()
    if exercises.count("raise NotImplementedError") < 4:
        pytest.skip("docs/exercises/exercises.py has been written")
    r = run("docs/attention_task.py", *TINY_TASK, "--out", tmp_path / "mine", "--mine")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert re.fullmatch(r"error: --mine: \w+ of docs/exercises/exercises.py is not written yet; "
                        r"run python docs/exercises/check.py\n", r.stderr), r.stderr


# The course scripts under hostile input: one line, before the work; Ctrl-C one line

def script(name):
    return os.path.join(HERE, name)


def no_traceback(r):
    assert "Traceback" not in r.stderr, r.stderr


def interrupt_at(cmd, line_starts, cwd=HERE, timeout=120):
    """Run cmd, send SIGINT once a line of its stdout starts with line_starts:
    (returncode, stdout up to then and after, stderr)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its lines come as they are printed
    p = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith(line_starts):
            break
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, "".join(seen) + out, err


def assert_interrupted(code, out, err, expected_line):
    assert any(line.startswith(expected_line) for line in out.splitlines()), (out, err)  # it got there
    assert code == 130 and "Traceback" not in err, (code, err)
    assert err.count("\n") == 1 and err.startswith("interrupted"), err


# docs/attention_task.py
def test_attention_task_measures_the_receptive_field_of_an_untrained_baseline_that_passes_no_gradient(tmp_path):
    """At --seed 1 the untrained width-4 baseline has every ReLU of a layer
    off at the pixel measured (no gradient reaches the input): the field is
    still measured, 131 px as at any other seed. Below width 4 the decoder
    cannot paint the task's colors: refused in one line, before any work."""
    r = run(script("docs/attention_task.py"), "--steps", 1, "--width", 4, "--seed", 1, "--out", tmp_path / "a")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "receptive field: 131 x 131 px (computed: gradient of one output pixel)" in r.stdout.splitlines()
    for width in (2, 3):
        r = run(script("docs/attention_task.py"), "--steps", 1, "--width", width, "--out", tmp_path / "b")
        one_error_line(r, "--width", "4 to 256")
        assert r.stdout == ""
    assert not (tmp_path / "b").exists()


OPEN_REFUSED = """
import os, runpy, sys
out, script, *argv = sys.argv[1:]
real_open = os.open
def open_(path, flags, *rest, **kw):  # as a read-only folder (as root, chmod cannot make one)
    p = os.path.abspath(os.fspath(path))
    if (p == out or os.path.dirname(p) == out) and flags & (os.O_WRONLY | os.O_RDWR):
        raise PermissionError(13, "Permission denied", os.fspath(path))
    return real_open(path, flags, *rest, **kw)
os.open = open_
sys.argv = [script, *argv]
runpy.run_path(script, run_name="__main__")
"""


def test_attention_task_says_an_unwritable_out_before_training(tmp_path):
    """A folder at an output's name, with --overwrite, and an --out that
    cannot be written: one line, exit 2, before the first step of training."""
    out = tmp_path / "task"
    (out / "attention_task.png").mkdir(parents=True)
    r = run(script("docs/attention_task.py"), "--steps", 1, "--width", 4, "--out", out, "--overwrite")
    one_error_line(r, "attention_task.png", "a folder")
    assert r.stdout == "" and os.listdir(out) == ["attention_task.png"]
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    r = run("-c", OPEN_REFUSED, readonly, script("docs/attention_task.py"), "--steps", 1, "--width", 4,
            "--out", readonly)
    one_error_line(r, f"--out {readonly}", "cannot write there", "Permission denied")
    assert r.stdout == "" and os.listdir(readonly) == []


def test_attention_task_ctrl_c_is_one_line_and_leaves_no_half_written_file(tmp_path):
    out = tmp_path / "task"
    code, stdout, err = interrupt_at([script("docs/attention_task.py"), "--steps", 100000, "--width", 4,
                                      "--out", out], "baseline step 1/")
    assert_interrupted(code, stdout, err, "baseline step 1/")
    assert os.listdir(out) == []


# docs/overfit_one_photo.py

@pytest.mark.parametrize("flags,words", [
    (["--lr", "nan"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--width", "100000"], "--width"), (["--width", "1", "--size", "16"], "--width"),
    (["--size", "8", "--width", "1"], "--width"), (["--size", "8", "--width", "4"], "--size"),
    (["--size", "80000"], "--size"),
    (["--width", "1024", "--size", "16"], "GB"), (["--out", ""], "--out")])
def test_overfit_one_photo_refuses_flags_that_cannot_work_before_any_work(tmp_path, flags, words):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    before = digest(photo)
    args = ["--steps", 2, "--size", 16, "--width", 4, "--out", tmp_path / "o.png"]
    r = run(script("docs/overfit_one_photo.py"), photo, *args, *flags)
    one_error_line(r, words)
    assert r.stdout == "", r.stdout  # not one step trained
    assert sorted(os.listdir(tmp_path)) == ["p.jpg"] and digest(photo) == before


def test_overfit_one_photo_refuses_a_photo_without_color(tmp_path):
    """A flat gray photo (or a grayscale one): nothing to learn, and all-gray is
    already perfect (its MSE 0), so the ratio to it would be meaningless."""
    for name, im in [("flat.png", Image.new("RGB", (64, 48), (128, 128, 128))),
                     ("gray.jpg", Image.open(make_photo(tmp_path / "src.png", size=(64, 48))).convert("L"))]:
        im.save(tmp_path / name)
        r = run(script("docs/overfit_one_photo.py"), tmp_path / name, "--steps", 2, "--size", 16, "--width", 4,
                "--out", tmp_path / "o.png")
        one_error_line(r, name, "no color")
        assert r.stdout == "" and not (tmp_path / "o.png").exists()


def test_overfit_one_photo_that_diverges_writes_no_picture(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    r = run(script("docs/overfit_one_photo.py"), photo, "--steps", 3, "--size", 16, "--width", 4, "--lr", "1e30",
            "--out", tmp_path / "o.png")
    assert r.returncode == 1 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "--lr" in r.stderr and not (tmp_path / "o.png").exists()


def test_overfit_one_photo_says_an_unwritable_out_before_training(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    r = run("-c", OPEN_REFUSED, readonly, script("docs/overfit_one_photo.py"), photo, "--steps", 2, "--size", 16,
            "--width", 4, "--out", readonly / "o.png")
    one_error_line(r, "cannot write there", "Permission denied")
    assert r.stdout == "" and os.listdir(readonly) == []


def test_overfit_one_photo_ctrl_c_is_one_line_and_writes_nothing(tmp_path):
    photo = make_photo(tmp_path / "p.jpg", size=(64, 48))
    code, out, err = interrupt_at([script("docs/overfit_one_photo.py"), photo, "--steps", 100000, "--size", 32,
                                   "--width", 4, "--out", tmp_path / "o.png"], "step 1/")
    assert_interrupted(code, out, err, "step 1/")
    assert os.listdir(tmp_path) == ["p.jpg"]


# docs/faces.py

BOXED = "kphotoalbum_anne_helene_color.png"  # the first photo docs/faces.txt has a box on


def test_faces_says_a_bad_picture_or_argument_in_one_line(tmp_path):
    """A corrupt NAME_color.png, one too small for its box, a FIFO at the name
    (never waited on), a file given as a folder, an unknown flag: one line
    naming it, exit 2; --help is help, not a folder."""
    (tmp_path / BOXED).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    one_error_line(run(script("docs/faces.py"), tmp_path), BOXED, "not a readable image")
    Image.new("RGB", (4, 4), (200, 150, 120)).save(tmp_path / BOXED)
    one_error_line(run(script("docs/faces.py"), tmp_path), BOXED, "outside the 4x4 picture")
    os.remove(tmp_path / BOXED)
    os.mkfifo(tmp_path / BOXED)
    one_error_line(run(script("docs/faces.py"), tmp_path, timeout=20), BOXED, "not a regular file")
    one_error_line(run(script("docs/faces.py"), tmp_path / BOXED), BOXED, "not a folder")
    one_error_line(run(script("docs/faces.py"), tmp_path / "missing"), "missing", "no such folder")
    one_error_line(run(script("docs/faces.py"), "--no-such-flag"), "--no-such-flag")
    r = run(script("docs/faces.py"), "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: ") and "FOLDER" in r.stdout, r.stdout + r.stderr


# docs/exercises/check.py

def solutions():
    return open(os.path.join(HERE, "docs", "exercises", "solutions.py")).read()


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


def test_exercise_checker_ctrl_c_is_one_line_even_inside_the_students_code(tmp_path):
    """A real Ctrl-C while the student's function runs stops the check (130),
    in one line: it is not counted as that exercise's failure."""
    path = tmp_path / "slow.py"
    path.write_text(re.sub(r"(def attention_forward\(.*\):\n)", r"\1    import time; time.sleep(60)\n", solutions()))
    code, out, err = interrupt_at([script("docs/exercises/check.py"), path], "exercise 1 coord_channels: pass")
    assert_interrupted(code, out, err, "exercise 1 coord_channels: pass")
    assert "exercise 2" not in out


# -----------------------------------------------------------------------------
# 16. Benchmarks and the GPU check
# bench.py's flags, and .ci/gpu-check's steps run on the CPU, with what did not run recorded.

def test_bench_flags_are_one_line_errors_before_any_work(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    cases = [(["--batch-size", "-1"], "--batch-size -1"), (["--peak-tflops", "-5"], "--peak-tflops -5"),
             (["--photos", tmp_path / "missing"], "--photos"), (["--photos", tmp_path / "file"], "--photos"),
             (["--compile", "--device", "cpu"], "--compile")]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "--device cuda"))
    for flags, words in cases:
        r = run("bench.py", "--quick", *flags, timeout=120)
        one_error_line(r, words)
        assert "Traceback" not in r.stderr and r.stdout == "", r.stdout  # nothing measured


def test_gpu_check_runs_every_step_on_the_cpu(photo_dir, tmp_path):
    """.ci/gpu-check --device cpu --quick: the steps of the GPU check at tiny
    sizes (bench.py --quick, train.py on random Inception weights, torchrun,
    --resume, colorize.py compared), and one summary file."""
    out = tmp_path / "out"
    r = run(".ci/gpu-check", "--device", "cpu", "--quick", "--photos", photo_dir, out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert os.listdir(out) == ["summary.md"]
    summary = (out / "summary.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in summary.splitlines()
            if line.startswith("| ") and " | " in line}
    for step in ["bench.py --device cpu", "train.py", "torchrun --nproc-per-node 1", "--resume of the torchrun run",
                 "colorize.py --device cpu --batch-size 3", "colorize.py --device cpu, compared"]:
        assert rows[step][0] == "ok", (step, rows[step])
    assert rows["bench.py --device cpu --compile"][0] == "left out"
    assert "step 4/4, loss" in rows["--resume of the torchrun run"][2]
    assert "3 photos: max difference" in rows["colorize.py --device cpu, compared"][2]
    for stage in ["lab round trip", "train step (bare)", "data loading", "decode + crop", "train.py loop",
                  "colorize.py per image", "attention block"]:
        assert stage in rows, stage
    assert "| train step (bare) | attention + global, 64x64, batch 2 |" in summary
    assert "the Inception's share of the step" in summary
    assert "**7 of 7 steps passed**" in summary


def test_gpu_check_records_what_did_not_run_and_fails(photo_dir, tmp_path):
    r = run(".ci/gpu-check", "--device", "cpu", "--quick", "--photos", tmp_path, tmp_path / "out")
    assert r.returncode != 0 and "no JPEGs in" in r.stderr
    r = run(".ci/gpu-check", "--device", "cpu", "--quick", "--photos", photo_dir, "--budget", 0, tmp_path / "out")
    assert r.returncode == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| train.py | skipped | 0 | no time left in the budget |" in summary
    assert "not passed: bench.py --device cpu, train.py" in summary


def test_bench_photos_it_cannot_use_and_a_huge_batch_are_one_line_before_any_work(tmp_path):
    """A --photos folder of broken JPEGs only, or of grayscale ones only, and a
    --batch-size no memory holds: one line, exit 2, nothing measured."""
    broken, gray = tmp_path / "broken", tmp_path / "gray"
    broken.mkdir(), gray.mkdir()
    (broken / "b.jpg").write_bytes(open(make_photo(tmp_path / "p.jpg"), "rb").read()[:300])
    Image.open(tmp_path / "p.jpg").convert("L").convert("RGB").save(gray / "g.jpg")
    for flags, words in [(["--photos", broken], ["--photos", "b.jpg", "unreadable"]),
                         (["--photos", gray], ["--photos", "g.jpg", "grayscale"]),
                         (["--batch-size", "1000000000000"], ["--batch-size 1000000000000"])]:
        r = run(script("bench.py"), "--quick", *flags, timeout=120)
        one_error_line(r, *words)
        assert r.stdout == "", r.stdout


def test_bench_measures_with_one_jpeg_and_ctrl_c_after_colorize_is_one_line(tmp_path):
    """One JPEG: every row that needs photos runs (the train.py loop included:
    its validation photo must not be a copy of the ones it trains on). A Ctrl-C
    after colorize.main has run (it makes the stop signals its own) is still
    bench.py's: one line, exit 130."""
    make_photo(tmp_path / "only.jpg", size=(160, 120))
    code, out, err = interrupt_at([script("bench.py"), "--quick", "--photos", tmp_path], "colorize.py per image",
                                  cwd=HERE)
    assert "train.py loop" in out, (out[-2000:], err[-2000:])
    assert_interrupted(code, out, err, "colorize.py per image")
    assert err == "interrupted: bench.py writes nothing, so nothing is lost\n"
