"""The training loop: learning, gradient accumulation, schedules, evaluation, logging,
clipping, and the errors that stop a run."""
import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.nn import Module, Parameter
from minitransformer.optim import SGD, Adam
from minitransformer.train import count_tokens, fit
from strategies import host


class Affine(Module):
    """y = x W^T + b, from Parameters and primitive ops only."""

    def __init__(self, n_in=3, n_out=2, dtype=np.float64, seed=0):
        rng = np.random.default_rng(seed)
        self.weight = Parameter(mt.tensor(rng.standard_normal((n_out, n_in)), dtype=dtype).data)
        self.bias = Parameter(mt.tensor(np.zeros(n_out), dtype=dtype).data)

    def forward(self, x):
        return x @ self.weight.T + self.bias


def mse(model, batch):
    x, y = batch
    diff = model(mt.tensor(x, dtype=model.weight.dtype)) - mt.tensor(y, dtype=model.weight.dtype)
    return (diff * diff).mean()


def regression_batches(n, batch_size=8, seed=0):
    """``n`` batches (x, y) of a fixed linear map plus noise."""
    rng = np.random.default_rng(seed)
    true_weight = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]])
    batches = []
    for _ in range(n):
        x = rng.standard_normal((batch_size, 3))
        batches.append((x, x @ true_weight.T + 0.01 * rng.standard_normal((batch_size, 2))))
    return batches


def test_fit_learns_a_linear_map():
    model = Affine(dtype=np.float32)
    history = fit(model, Adam(model.parameters(), lr=0.05), itertools.cycle(
        regression_batches(10)), mse, steps=150, log_every=0)
    assert history.steps == list(range(1, 151))
    assert history.losses[0] > 1.0 and max(history.losses[-10:]) < 0.01
    assert model.weight.dtype == np.float32
    np.testing.assert_allclose(model.weight.numpy(), [[1, -2, 0.5], [0, 1, 3]], atol=0.05)


@settings(max_examples=6)
@given(k=st.sampled_from([2, 3, 4]), seed=st.integers(0, 100))
def test_accumulation_equals_one_big_batch(k, seed):
    """k micro-batches of 2 with accumulate_steps=k == one batch of 2k, for a mean loss."""
    big = regression_batches(3, batch_size=2 * k, seed=seed)
    small = [(x[i:i + 2], y[i:i + 2]) for x, y in big for i in range(0, 2 * k, 2)]
    runs = []
    for batches, accumulate_steps in ((big, 1), (small, k)):
        model = Affine()
        history = fit(model, Adam(model.parameters(), lr=0.1), batches, mse, steps=3,
                      accumulate_steps=accumulate_steps, log_every=0)
        runs.append((model, history))
    (one, one_history), (many, many_history) = runs
    np.testing.assert_allclose(many_history.losses, one_history.losses, rtol=1e-12)
    for a, b in zip(one.parameters(), many.parameters()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12, atol=1e-14)


def test_schedule_sets_the_learning_rate_of_every_step():
    model = Affine()
    optimizer = SGD(model.parameters(), lr=123.0)
    history = fit(model, optimizer, itertools.cycle(regression_batches(2)), mse, steps=6,
                  start_step=2, schedule=lambda step: 0.01 * step, log_every=0)
    assert history.steps == [3, 4, 5, 6]
    assert history.lrs == pytest.approx([0.03, 0.04, 0.05, 0.06])
    assert optimizer.lr == pytest.approx(0.06)


def test_eval_runs_in_eval_mode_without_a_graph_every_interval_and_at_the_end():
    seen = []

    def evaluate(model):
        seen.append((model.training, mt.is_grad_enabled()))
        return {"loss": 0.5}

    model = Affine()
    history = fit(model, SGD(model.parameters(), lr=0.01), itertools.cycle(
        regression_batches(2)), mse, steps=5, eval_fn=evaluate, eval_every=2, log_every=0)
    assert [step for step, _ in history.evals] == [2, 4, 5]
    assert history.evals[0][1] == {"loss": 0.5}
    assert seen == [(False, False)] * 3
    assert model.training


def test_progress_lines(capsys):
    model = Affine()
    fit(model, SGD(model.parameters(), lr=0.1), itertools.cycle(regression_batches(2)), mse,
        steps=4, log_every=2, eval_fn=lambda m: {"acc": 0.25, "n": 3}, eval_every=4)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"step 2/4 \| loss \d+\.\d{4} \| lr 1\.000e-01 \| [\d,]+ tok/s",
                        lines[0]), lines[0]
    assert lines[1].startswith("step 4/4 ") and lines[1].endswith("| eval acc 0.2500 n 3")
    fit(model, SGD(model.parameters(), lr=0.1), itertools.cycle(regression_batches(2)), mse,
        steps=4, log_every=0)
    assert capsys.readouterr().out == ""


def test_tokens_are_counted_from_the_batch():
    ids = np.zeros((3, 5), dtype=np.int64)
    assert count_tokens((ids, np.zeros(3))) == 15
    assert count_tokens({"input_ids": mt.tensor(ids), "labels": np.zeros(3)}) == 15
    assert count_tokens([[ids]]) == 15
    assert count_tokens("not an array") == 0

    model = Affine()
    history = fit(model, SGD(model.parameters(), lr=0.01), itertools.cycle(
        regression_batches(2, batch_size=4)), mse, steps=3, accumulate_steps=2, log_every=0)
    assert history.tokens == [2 * 4 * 3] * 3  # two micro-batches of x with shape (4, 3)
    history = fit(model, SGD(model.parameters(), lr=0.01), itertools.cycle(
        regression_batches(2)), mse, steps=2, count_tokens=lambda batch: 7, log_every=0)
    assert history.tokens == [7, 7]


def test_clip_norm_bounds_the_update():
    model = Affine()
    before = [p.numpy() for p in model.parameters()]
    history = fit(model, SGD(model.parameters(), lr=1.0), regression_batches(1), mse, steps=1,
                  clip_norm=1e-3, log_every=0)
    assert history.grad_norms[0] > 1.0  # the raw gradient was large ...
    moved = math.sqrt(sum(((p.numpy() - b) ** 2).sum()
                          for p, b in zip(model.parameters(), before)))
    assert moved == pytest.approx(1e-3, rel=1e-4)  # ... and the step was clipped to 1e-3


def test_seed_makes_a_run_reproducible():
    def noisy_batch():  # data drawn from the library's generator, which seed= resets
        x = mt.backend.rng().standard_normal((4, 3))
        return x, x.sum(axis=1, keepdims=True).repeat(2, axis=1)

    def run(seed):
        model = Affine()
        return fit(model, SGD(model.parameters(), lr=0.05), noisy_batch, mse, steps=5,
                   seed=seed, log_every=0).losses

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_a_non_finite_loss_stops_with_the_step_named():
    model = Affine()
    snapshots = {}
    calls = itertools.count(1)

    def loss_fn(model, batch):
        loss = mse(model, batch)
        return loss * float("nan") if next(calls) == 6 else loss

    def remember(step, history):
        snapshots[step] = [p.numpy() for p in model.parameters()]

    with pytest.raises(FloatingPointError, match=r"loss is nan at step 3 \(micro-batch 2 "
                                                 r"of 2\); the parameters are as after step 2"):
        fit(model, SGD(model.parameters(), lr=0.1), itertools.cycle(regression_batches(2)),
            loss_fn, steps=10, accumulate_steps=2, callback=remember, log_every=0)
    assert sorted(snapshots) == [1, 2]
    for p, saved in zip(model.parameters(), snapshots[2]):
        np.testing.assert_array_equal(p.numpy(), saved)
        assert not np.isnan(host(p.grad)).any()  # the nan never reached a gradient


def test_bad_inputs_are_named():
    model = Affine()
    optimizer = SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match=r"ran out at step 2 \(micro-batch 2 of 2\)"):
        fit(model, optimizer, regression_batches(3), mse, steps=5, accumulate_steps=2,
            log_every=0)
    with pytest.raises(TypeError, match="batches must be an iterable .* got int"):
        fit(model, optimizer, 7, mse, steps=1)
    with pytest.raises(TypeError, match=r"one-element Tensor, got shape \(8, 2\)"):
        fit(model, optimizer, regression_batches(1), lambda m, b: m(mt.tensor(b[0])),
            steps=1, log_every=0)
    with pytest.raises(ValueError, match="accumulate_steps must be an integer >= 1, got 0"):
        fit(model, optimizer, regression_batches(1), mse, steps=1, accumulate_steps=0)
    with pytest.raises(ValueError, match="start_step=5 leaves nothing to do with steps=5"):
        fit(model, optimizer, regression_batches(1), mse, steps=5, start_step=5)
    with pytest.raises(ValueError, match="clip_norm must be > 0"):
        fit(model, optimizer, regression_batches(1), mse, steps=1, clip_norm=0.0)
