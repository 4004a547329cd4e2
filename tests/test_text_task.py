"""The ``text`` task: character-level language modelling on CPython's help text
(``pydoc_data.topics``): its vocabulary, split and batches, the bits-per-character loss,
training on every backend, the CLI, the comparison tool, the memory check and bad input."""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import fpbench
from fpbench import Jacobi, RNNSpec, Sequential, suite_problems
from fpbench.cli import main
from fpbench.registry import parse_target
from fpbench.tasks import (
    TEXT_HELDOUT,
    TEXT_VOCAB,
    encode_text,
    make_task,
    readout_loss,
    task_sizes,
    text_corpus,
    text_split_sizes,
    text_vocabulary,
)
from fpbench.testing import TOLERANCES

TRAIN = importlib.import_module("fpbench.train")  # (fpbench.train is the function)
ROOT = Path(__file__).resolve().parents[1]

# T = 64 keeps the measured windows few (726 of the held-out text), so the final evaluation is cheap
SPEC = RNNSpec(
    cell="gru", input_size=TEXT_VOCAB, hidden_size=8, seq_len=64, batch=8, dtype="float64", contraction=0.8
)

_cache: dict = {}


def numpy_text_train(solver, steps: int, spec: RNNSpec = SPEC, lr: float = 0.05) -> fpbench.TrainResult:
    key = (solver, steps, spec, lr)
    if key not in _cache:
        _cache[key] = fpbench.train(spec, solver, "numpy", steps=steps, task="text", lr=lr)
    return _cache[key]


def test_vocabulary_and_split_are_fixed_by_the_corpus():
    corpus = text_corpus()
    n_train, n_held = text_split_sizes()
    assert n_train + n_held == len(corpus) > 100_000 and n_held == round(TEXT_HELDOUT * len(corpus))
    vocab = text_vocabulary()
    assert len(vocab) == len(set(vocab)) == TEXT_VOCAB - 1 and " " in vocab and "e" in vocab
    counts = [corpus[:n_train].count(ch) for ch in vocab]
    assert counts == sorted(counts, reverse=True)  # most frequent first
    codes = encode_text("the \x00")  # a character outside the vocabulary is the rare symbol
    assert codes.tolist() == [vocab.index("t"), vocab.index("h"), vocab.index("e"), 0, TEXT_VOCAB - 1]
    assert vocab[0] == " "


def test_windows_batches_and_held_out_text_are_deterministic():
    a, b = make_task("text", SPEC, seed=3), make_task("text", SPEC, seed=3)
    T, n = SPEC.seq_len, (text_split_sizes()[1] - 1) // SPEC.seq_len
    assert a.kind == "next_char" and a.output_size == TEXT_VOCAB and a.loss_unit == "bits per character"
    assert a.x_heldout.shape == a.x_train.shape == (T, n, TEXT_VOCAB) and a.y_heldout.shape == (T, n)
    assert task_sizes("text", SPEC) == (n, n, TEXT_VOCAB)
    np.testing.assert_array_equal(a.x_heldout, b.x_heldout)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    # the held-out windows are the last characters, in order: the targets are the inputs one later
    held = encode_text(text_corpus()[text_split_sizes()[0] :])
    np.testing.assert_array_equal(a.x_heldout.argmax(2).T.ravel(), held[: n * T])
    np.testing.assert_array_equal(a.y_heldout.T.ravel(), held[1 : n * T + 1])
    x0, y0 = a.minibatch(0)
    assert x0.shape == (T, SPEC.batch, TEXT_VOCAB) and (x0.sum(2) == 1).all()
    np.testing.assert_array_equal(x0[1:].argmax(2), y0[:-1])
    np.testing.assert_array_equal(x0, b.minibatch(0)[0])
    assert not np.array_equal(x0, a.minibatch(1)[0])
    assert not np.array_equal(x0, make_task("text", SPEC, seed=4).minibatch(0)[0])


def test_bits_per_character_readout_and_its_gradient():
    """Uniform logits are log2(V) bits a character; the gradient matches finite differences."""
    rng = np.random.default_rng(0)
    T, B, H, V = 3, 2, 4, 5
    h = rng.standard_normal((T, B, H))
    y = rng.integers(0, V, size=(T, B))
    loss, *_ = readout_loss("next_char", h, y, np.zeros((V, H)), np.zeros(V))
    assert loss == pytest.approx(math.log2(V), rel=1e-12)
    w, b = rng.standard_normal((V, H)), rng.standard_normal(V)
    loss, dh, dw, db, logits = readout_loss("next_char", h, y, w, b)
    p = np.exp(logits - logits.max(2, keepdims=True))
    p /= p.sum(2, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log2(np.take_along_axis(p, y[..., None], 2))), rel=1e-12)
    eps = 1e-6
    for arr, grad in ((h, dh), (w, dw), (b, db)):
        i = tuple(rng.integers(0, s) for s in arr.shape)
        arr[i] += eps
        up = readout_loss("next_char", h, y, w, b)[0]
        arr[i] -= 2 * eps
        down = readout_loss("next_char", h, y, w, b)[0]
        arr[i] += eps
        assert grad[i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9)


def test_untrained_model_is_near_log2_vocab_and_training_lowers_it():
    r = numpy_text_train(Sequential(), steps=25)
    assert r.loss_unit == "bits per character" and not r.diverged
    assert abs(r.losses[0] - math.log2(TEXT_VOCAB)) < 0.1, r.losses[0]
    assert r.losses[-5:].mean() < r.losses[0] - 1.0, r.losses
    assert r.heldout_loss < math.log2(TEXT_VOCAB) - 1.0 and abs(r.gap) < 1e-9
    # eval_loss is the exact recurrence's bits per character on the measured training windows
    task = make_task("text", SPEC, 0)
    prob = fpbench.tasks.zero_state_problem(
        SPEC, task.x_train, {k: r.params[k] for k in fpbench.spec.PARAM_NAMES}
    )
    exact = readout_loss(
        "next_char", fpbench.reference_states(prob), task.y_train, r.params["W_out"], r.params["b_out"]
    )
    assert r.eval_loss == pytest.approx(exact[0], rel=1e-12)


def test_truncated_model_has_a_gap_on_text():
    r = numpy_text_train(Jacobi(1, backward="unrolled"), steps=25)
    assert (r.forward_iterations == 1).all() and r.losses[-5:].mean() < r.losses[0] - 1.0
    assert r.gap != 0.0 and r.eval_loss == pytest.approx(r.train_loss + r.gap)


def test_text_training_on_every_backend_matches_numpy(target):
    """Two steps of the truncated model (one-hot inputs, the per-step readout) on each backend
    match the NumPy float64 training; its gap is measured the same way."""
    solver = Jacobi(2, backward="unrolled")
    spec = dataclasses.replace(SPEC, batch=242)  # the 726 measured windows in 3 batches
    try:
        r = fpbench.train(
            dataclasses.replace(spec, dtype="float32"), solver, target, steps=2, task="text", lr=0.05
        )
    except fpbench.UnsupportedError as e:
        pytest.skip(f"{target}: {e}")
    ref = numpy_text_train(solver, steps=2, spec=spec)
    rtol = 10 * TOLERANCES["float32"]["rel_rms"]
    np.testing.assert_allclose(r.losses, ref.losses, rtol=rtol)
    for name in ("train_loss", "eval_loss", "heldout_loss"):
        assert getattr(r, name) == pytest.approx(getattr(ref, name), rel=rtol), name
    assert r.gap == pytest.approx(ref.gap, abs=1e-4) and r.backend == parse_target(target)[0]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"input_size": 8}, f"feeds each character one-hot: set input_size={TEXT_VOCAB}"),
        ({"seq_len": 100_000}, "seq_len must be at most"),
    ],
)
def test_a_spec_the_text_task_cannot_use_is_refused_before_anything_is_built(monkeypatch, change, match):
    monkeypatch.setattr(TRAIN, "make_task", lambda *a, **k: pytest.fail("built the task"))
    with pytest.raises(ValueError, match=match):
        fpbench.train(dataclasses.replace(SPEC, **change), Sequential(), steps=1, task="text")


def test_text_data_goes_through_the_memory_check(monkeypatch):
    """The one-hot windows are counted before the task is built: a limit just under the
    estimate refuses, and the estimate bounds the peak a short run allocates."""
    need = TRAIN.estimate_train_memory(SPEC, Sequential(), "numpy", "text")
    n = task_sizes("text", SPEC)[0]
    assert need > 2 * SPEC.seq_len * n * TEXT_VOCAB * 8  # both sets' one-hot inputs
    monkeypatch.setattr(TRAIN, "make_task", lambda *a, **k: pytest.fail("built the task"))
    monkeypatch.setattr(fpbench.memory, "available_memory", lambda: need - 1)
    with pytest.raises(fpbench.InsufficientMemoryError, match="estimate_train_memory"):
        fpbench.train(SPEC, Sequential(), steps=1, task="text")
    monkeypatch.undo()
    text_corpus.cache_clear()
    text_vocabulary.cache_clear()
    tracemalloc.start()
    try:
        fpbench.train(SPEC, Sequential(), steps=1, task="text")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= need < 10 * peak, (peak, need)


def test_cli_trains_the_text_task(capsys):
    argv = ["train", "--task", "text", "--hidden", "4", "--batch", "4", "--dtype", "float64", "--steps", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "loss:      bits per character" in out and f"input_size={TEXT_VOCAB}" in out
    assert "help text" in out and "heldout_loss=" in out and "gap=" in out
    assert main([*argv, "--input-size", "8"]) == 2
    assert f"set input_size={TEXT_VOCAB}" in capsys.readouterr().err
    assert main([*argv[:-2], "--seq-len", "100000", "--steps", "1"]) == 2
    assert "seq_len must be at most" in capsys.readouterr().err


def _tool(monkeypatch):
    path = ROOT / "tools" / "train_compare.py"
    spec = importlib.util.spec_from_file_location("train_compare", path)
    tool = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "train_compare", tool)  # (its dataclass looks itself up there)
    spec.loader.exec_module(tool)
    return tool


def test_train_compare_tool_text(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    tool = _tool(monkeypatch)
    out, k_fig = tmp_path / "text.md", tmp_path / "k.png"
    argv = ["--task", "text", "--steps", "3", "--seq-len", "64", "--hidden", "3", "--batch", "2"]
    argv += ["--ks", "1,2", "--methods", "jacobi_unrolled", "--smooth", "2", "--out", str(out)]
    assert tool.main([*argv, "--k-figure", str(k_fig)]) == 0
    text = out.read_text()
    assert "Losses: bits per character." in text and f"I = {TEXT_VOCAB}" in text
    assert "| `bptt (sequential)` |" in text and "| `jacobi(2) unrolled` |" in text
    assert "newton" not in text and k_fig.stat().st_size > 0 and "(k.png)" in text
    with pytest.raises(SystemExit):
        tool.main(["--methods", "bptt,adam"])
    assert tool.parse_methods("newton,bptt") == ("bptt", "newton")


def test_text_suite(monkeypatch):
    """``TrainText`` is n/a in a grid that does not train the text task; in one that does,
    its tracks are the final bits per character and the gap, and ``suite_problem`` describes
    the spec it trains."""
    from benchmarks import bench_train as bt
    from benchmarks import grids

    assert grids.TRAIN_TEXT_INPUT_SIZE == TEXT_VOCAB
    assert grids.TRAIN_GRIDS["default"].text_steps > 0 and grids.TRAIN_GRIDS["main"].text_steps == 0
    monkeypatch.setattr(bt, "TG", dataclasses.replace(bt.TG, text_steps=0))
    with pytest.raises(NotImplementedError, match="does not train the text task"):
        bt.TrainText().setup("numpy:cpu", "jacobi_unrolled", 2)
    monkeypatch.setattr(bt, "TG", dataclasses.replace(bt.TG, text_steps=2, text_seq_len=64, text_hidden=4))
    suite = bt.TrainText()
    suite.setup("numpy:cpu", "jacobi_unrolled", 2)
    train, ev, held, gap = (
        suite.track_train_bpc(),
        suite.track_eval_bpc(),
        suite.track_heldout_bpc(),
        suite.track_gap(),
    )
    assert 0 < train < 7 and 0 < held < 7 and gap == pytest.approx(ev - train)
    spec = bt.text_spec()
    monkeypatch.setattr(suite_problems, "TRAIN_GRIDS", {**suite_problems.TRAIN_GRIDS, "quick": bt.TG})
    got = suite_problems.suite_problem("quick", "TrainText", {"method": "jacobi_unrolled", "budget": 2})
    want = {f: getattr(spec, f) for f in ("cell", "seq_len", "hidden_size", "batch", "input_size", "dtype")}
    assert {k: got[k] for k in want} == want and got["backward"] == "unrolled" and got["budget"] == 2
