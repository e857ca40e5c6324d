"""Check the four exercises against the model they were taken from.

    python docs/exercises/check.py              # yours: docs/exercises/exercises.py
    python docs/exercises/check.py --solutions  # the answers: 4 of 4 pass
    python docs/exercises/check.py FILE.py      # any file with the four functions

Each function runs on random inputs (fixed seeds; several shapes, batches of
more than one, maps that are not square) beside its counterpart in model.py:
model.coord_channels, model.Attention.forward (both of its paths, and the
attention weights alpha), model.Fusion.forward, and the F.mse_loss of train.py's
training step. The gradients are compared too, because training goes through
them. One line per exercise: pass, not written yet, or the first difference;
then "N of 4 pass". Exit status 0 when all pass, 1 otherwise, 2 for a bad argument,
130 after Ctrl-C.
"""
import math, os, runpy, sys  # noqa: E401

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository root, for model.py
import runs  # noqa: E402  (first: a Ctrl-C while torch loads stops in one line; one-line errors)
import torch, torch.nn.functional as F  # noqa: E401,E402
import model  # noqa: E402

TOLERANCE = 1e-5  # float32 is good to ~1e-7 here; a real mistake is off by far more


class Failed(Exception):
    """The student's function failed a case; the message is the line to print."""


class Interrupted(BaseException):
    """Ctrl-C, SIGTERM or SIGHUP, raised by the signal handler: not a KeyboardInterrupt,
    so that one the student's code raises is told apart from it (a failure, not a stop)."""


def interrupted(signum, frame):
    raise Interrupted


def kind(value):
    """What a function returned, in words, when it is not what was expected."""
    return "None (a missing return?)" if value is None else type(value).__name__


def call(function, *args, watch=(), case=""):
    """The student's code, with its errors turned into one line (no traceback);
    none of the tensors of `watch` ((name, tensor) pairs) may change in place."""
    before = [(name, tensor, tensor.detach().clone()) for name, tensor in watch]
    try:
        result = function(*args)
    except NotImplementedError:
        raise Failed("not written yet (NotImplementedError)") from None
    except SystemExit as e:  # sys.exit(0) in an exercise is no pass: it returned nothing to check
        raise Failed(f"called sys.exit({e.code!r}) instead of returning") from None
    except (Exception, KeyboardInterrupt) as e:  # whatever the student's code raised is the answer to print
        raise Failed(f"raised {': '.join([type(e).__name__] + str(e).strip().splitlines()[:1])}"[:300]) from None
    for name, tensor, copy in before:
        if not torch.equal(tensor, copy):
            raise Failed(f"changed its input {name} in place for {case}")
    return result


def difference(got, expected):
    """How `got` differs from the tensor `expected` (its shape, its dtype, its numbers
    within the tolerance, relative to expected's largest value), or "" when it does not."""
    if not isinstance(got, torch.Tensor):
        return f"returned {kind(got)}, expected a tensor of shape {tuple(expected.shape)}"
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype} (that of the input)"
    got, expected = got.detach().double(), expected.detach().double()
    tolerance = TOLERANCE * max(1.0, expected.abs().max().item())
    error = (got - expected).abs().nan_to_num(nan=math.inf).flatten()  # a NaN is as wrong as can be
    worst = error.argmax()
    if error[worst] <= tolerance:
        return ""
    shown = f"{tolerance:.0e}".replace("e-0", "e-")
    if expected.dim() == 0:  # the loss: one number
        return f"got {got.item():.4g}, expected {expected.item():.4g} (tolerance {shown})"
    where = tuple(int(i) for i in torch.unravel_index(worst, expected.shape))
    if got.flatten()[worst].isnan():
        return f"NaN at {where}"
    return f"largest error {error[worst].item():.2g} at {where} (tolerance {shown})"


def compare(what, got, expected, case, hint=lambda: ""):
    """Failed, naming `what` and the case, unless `got` is `expected`; hint() says more."""
    why = difference(got, expected)
    if why:
        raise Failed(f"{what + ': ' if what else ''}{why} for {case}{hint()}")


def compare_with_gradients(what, got, expected, inputs, case, hint=lambda: ""):
    """compare, then the gradients of one random weighting of the output with respect
    to each of `inputs` (name -> tensor): the student's graph against the reference's."""
    compare(what, got, expected, case, hint)
    if not got.requires_grad:
        raise Failed(f"the output carries no gradient (a .detach(), .data or NumPy on the way?) for {case}")
    names, tensors = zip(*inputs.items())
    weighting = torch.randn(expected.shape, generator=torch.Generator().manual_seed(1))
    expected_grads = torch.autograd.grad(expected, tensors, weighting)
    # materialize_grads: an input the output does not use has a gradient of zeros (not None)
    got_grads = call(lambda: torch.autograd.grad(got, tensors, weighting, materialize_grads=True))
    for name, grad, expected_grad in zip(names, got_grads, expected_grads):
        compare(f"gradient of {name}", grad, expected_grad, case)


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -----------------------------------------------------------------------------
# The four exercises, each on its cases


def check_coord_channels(coord_channels):
    for seed, (shape, dtype) in enumerate([((2, 3, 7, 5), torch.float32), ((1, 1, 4, 4), torch.float32),
                                           ((3, 2, 6, 9), torch.float64)]):
        x = randn(*shape, seed=seed).to(dtype)
        case = f"x {shape}" + (f" {dtype}" if dtype != torch.float32 else "")
        # (B, 2, H, W): the student's against model.py's
        compare(None, call(coord_channels, x, watch=[("x", x)], case=case), model.coord_channels(x), case)


def row_sums(alpha):
    """A wrong alpha whose rows do not sum to 1 (each position's look is a
    softmax over s): say so, it points at the softmax's dimension."""
    sums = alpha.detach().double().sum(-1) if isinstance(alpha, torch.Tensor) else torch.ones(1)  # (B, N)
    wrong = sums.isfinite().all() and not torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
    return f"; its rows sum to {sums.min():.2g} .. {sums.max():.2g}, not 1" if wrong else ""


def attention_mistake(attention, h, got, got_alpha):
    """The course's mistakes in the attention, recognized by their numbers: the
    reference computed under each one, compared with what the student's code
    returned (alpha too, when it did). "; that is ..." naming it, or ""."""
    C = h.shape[1]
    with torch.no_grad():
        keys = h.flatten(2).transpose(1, 2)                              # (B, N, C)
        scores = attention.W_a(h).flatten(2).transpose(1, 2) @ keys.transpose(1, 2)  # (B, N, N), unscaled
        for scale, context_first, says in [
                (1, True, "alpha without the 1/sqrt(C): divide the scores q_t . h_s by sqrt(C) before the softmax"),
                (C, True, "the scores divided by sqrt(C) twice (by C): divide them by sqrt(C) once"),
                (math.sqrt(C), False, "tanh(W_c [h_t; c_t]): the context goes first, [c_t; h_t]")]:
            alpha = torch.softmax(scores / scale, dim=-1)
            context = (alpha @ keys).transpose(1, 2).reshape(h.shape)    # (B, C, H, W)
            out = torch.tanh(attention.W_c(torch.cat([context, h] if context_first else [h, context], dim=1)))
            if not difference(got, out) and (got_alpha is None or not difference(got_alpha, alpha)):
                return f"; that is {says}"
    return ""


def check_attention_forward(attention_forward):
    # (B, C, H, W), return_attention: the readable path (with alpha) first, then the fused one
    cases = [((2, 8, 3, 5), True), ((2, 8, 3, 5), False), ((1, 16, 4, 4), False), ((3, 4, 2, 7), True)]
    for seed, (shape, return_attention) in enumerate(cases):
        torch.manual_seed(seed)                                   # the module's weights
        attention = model.Attention(shape[1])
        h = randn(*shape, seed=seed).requires_grad_()
        case = f"h {shape}, return_attention={return_attention}"
        expected, expected_alpha = model.Attention.forward(attention, h, return_attention)
        got = call(attention_forward, attention, h, return_attention, watch=[("h", h)], case=case)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise Failed(f"returned {kind(got)}, expected (out, alpha) for {case}")
        got, got_alpha = got[0], got[1] if return_attention else None
        mistake = lambda: attention_mistake(attention, h, got, got_alpha)  # noqa: E731
        if return_attention:                                      # (B, N, N): where each t looks
            compare("alpha", got_alpha, expected_alpha, case, lambda: row_sums(got_alpha) + mistake())
        # (B, C, H, W); with the gradients of h, W_a.weight and W_c.weight
        compare_with_gradients("out", got, expected, {"h": h, **dict(attention.named_parameters())}, case, mistake)


def fusion_mistake(fusion, feats, embedding, got):
    """The embedding concatenated before the features, recognized by its numbers: "; that is ..." or ""."""
    with torch.no_grad():
        tiled = embedding[:, :, None, None].expand(-1, -1, *feats.shape[2:])  # (B, E, h, w)
        wrong = F.relu(fusion.conv(torch.cat([tiled, feats], dim=1)))
    return "" if difference(got, wrong) else ("; that is ReLU(conv([embedding; feats])): concatenate feats first, "
                                              "then the tiled embedding (fusion.conv's weights are for that order)")


def check_fusion_forward(fusion_forward):
    # (B, C, h, w), E: E = 0 is a model without the global branch (embedding None)
    for seed, (shape, embed_dim) in enumerate([((2, 8, 3, 5), 6), ((1, 4, 4, 4), 0), ((3, 6, 2, 7), 10)]):
        torch.manual_seed(seed)
        fusion = model.Fusion(shape[1], embed_dim)
        feats = randn(*shape, seed=seed).requires_grad_()
        embedding = randn(shape[0], embed_dim, seed=seed + 100).requires_grad_() if embed_dim else None
        case = f"feats {shape}, embedding " + (str(tuple(embedding.shape)) if embed_dim else "None")
        expected = model.Fusion.forward(fusion, feats, embedding)
        inputs = {"feats": feats, **({"embedding": embedding} if embed_dim else {})}
        got = call(fusion_forward, fusion, feats, embedding, watch=inputs.items(), case=case)
        compare_with_gradients(None, got, expected, {**inputs, **dict(fusion.named_parameters())}, case,  # conv's too
                               lambda: fusion_mistake(fusion, feats, embedding, got) if embed_dim else "")


def check_colorization_loss(colorization_loss):
    for seed, shape in enumerate([(2, 2, 8, 8), (1, 2, 5, 7), (4, 2, 3, 3)]):
        pred_ab = randn(*shape, seed=seed).tanh().requires_grad_()  # the network ends in a tanh
        true_ab = randn(*shape, seed=seed + 100) * 0.3             # a*b*/128 of real photos is small
        case = f"pred_ab and true_ab {shape}"
        expected = F.mse_loss(pred_ab, true_ab)                   # as in train.py's training step
        got = call(colorization_loss, pred_ab, true_ab, watch=[("pred_ab", pred_ab), ("true_ab", true_ab)], case=case)
        compare_with_gradients(None, got, expected, {"pred_ab": pred_ab}, case)  # shape (): one number


EXERCISES = [("coord_channels", check_coord_channels), ("attention_forward", check_attention_forward),
             ("fusion_forward", check_fusion_forward), ("colorization_loss", check_colorization_loss)]


# -----------------------------------------------------------------------------
# The command


def main():
    parser = runs.ArgumentParser(description="Check docs/exercises/exercises.py (or FILE) against model.py.")
    which = parser.add_mutually_exclusive_group()  # both: one line, exit status 2
    which.add_argument("file", nargs="?", metavar="FILE.py", help="the file to check (default: exercises.py here)")
    which.add_argument("--solutions", action="store_true", help="check solutions.py, the answers")
    args = parser.parse_args()
    path = args.file or os.path.join(HERE, "solutions.py" if args.solutions else "exercises.py")
    if not (os.path.isfile(path) and path.endswith(".py")):
        runs.fail(f"{path}: " + ("no such file" if not os.path.exists(path) else "not a Python file (.py)"))

    # A syntax error, a bad import, a sys.exit(0) at the top: the student's file, so exit 1 (not 2, nor a pass's 0).
    try:
        functions = runpy.run_path(path)  # its names (its `if __name__ == "__main__":` part does not run)
    except (Exception, KeyboardInterrupt, SystemExit) as e:
        why = f"it calls sys.exit({e.code!r})" if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"
        print(f"{path} does not run: {why}".splitlines()[0])
        print(f"0 of {len(EXERCISES)} pass")
        return 1

    said = []  # "pass", or why not
    for number, (name, check) in enumerate(EXERCISES, 1):
        try:
            if not callable(functions.get(name)):
                raise Failed(f"missing (no function {name} in {path})")
            check(functions[name])
            said.append("pass")
        except Failed as failed:
            said.append(str(failed))
        print(f"exercise {number} {name}: {said[-1]}")
    print(f"{said.count('pass')} of {len(EXERCISES)} pass")
    return 0 if said.count("pass") == len(EXERCISES) else 1


if __name__ == "__main__":
    runs.on_stop_signals(interrupted)
    runs.quiet_when_piped()  # `check.py | head` (it writes nothing)
    try:
        sys.exit(main())
    except Interrupted:
        print("interrupted: check.py writes nothing, so nothing is lost", file=sys.stderr)
        sys.exit(130)
