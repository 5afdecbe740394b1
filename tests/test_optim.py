"""Optimizers against their written formulas (a plain NumPy reimplementation) and against
PyTorch; parameter groups, state dicts, gradient clipping and the schedules."""
import functools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer.nn import Module, Parameter
from minitransformer.optim import (SGD, Adam, AdamW, Optimizer, clip_grad_norm, noam,
                                   param_groups_for_weight_decay, warmup_constant,
                                   warmup_cosine)
from strategies import arrays, host, small_shapes


def param(array, dtype=np.float64):
    return Parameter(mt.tensor(np.asarray(array, dtype=dtype)).data)


def set_grad(p, array):
    p.grad = mt.tensor(np.asarray(array, dtype=p.dtype)).data


# ---- the formulas, written out in NumPy -------------------------------------------
def reference_adam(p, grads, lr, betas, eps, weight_decay, decoupled):
    beta1, beta2 = betas
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def reference_sgd(p, grads, lr, momentum, weight_decay):
    velocity = None
    for g in grads:
        g = g + weight_decay * p
        velocity = g if velocity is None else momentum * velocity + g
        p = p - lr * velocity
    return p


OPTIMIZERS = {
    "Adam": lambda params, lr, wd: Adam(params, lr=lr, betas=(0.8, 0.95), eps=1e-6,
                                        weight_decay=wd),
    "AdamW": lambda params, lr, wd: AdamW(params, lr=lr, betas=(0.8, 0.95), eps=1e-6,
                                          weight_decay=wd),
    "SGD": lambda params, lr, wd: SGD(params, lr=lr, momentum=0.9, weight_decay=wd),
}
REFERENCES = {
    "Adam": functools.partial(reference_adam, betas=(0.8, 0.95), eps=1e-6, decoupled=False),
    "AdamW": functools.partial(reference_adam, betas=(0.8, 0.95), eps=1e-6, decoupled=True),
    "SGD": functools.partial(reference_sgd, momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@given(data=st.data(), shape=small_shapes, lr=st.sampled_from([1e-3, 0.1]),
       weight_decay=st.sampled_from([0.0, 0.1]))
def test_matches_the_written_formula(name, data, shape, lr, weight_decay):
    start = data.draw(arrays(shape))
    grads = [data.draw(arrays(shape)) for _ in range(4)]
    p = param(start)
    optimizer = OPTIMIZERS[name]([p], lr, weight_decay)
    for g in grads:
        set_grad(p, g)
        optimizer.step()
    expected = REFERENCES[name](start, grads, lr=lr, weight_decay=weight_decay)
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_stays_float32_and_grad_is_untouched(name):
    p = param(np.ones((3, 4)), dtype=np.float32)
    optimizer = OPTIMIZERS[name]([p], np.float64(0.01), np.float64(0.1))  # NumPy options too
    for _ in range(2):
        set_grad(p, np.full((3, 4), 0.5))
        optimizer.step()
    assert p.dtype == np.float32
    assert all(v.dtype == np.float32 for v in optimizer.state[id(p)].values()
               if hasattr(v, "dtype"))
    np.testing.assert_array_equal(host(p.grad), np.full((3, 4), 0.5, np.float32))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_parameters_without_grad_are_skipped(name):
    used, unused = param([1.0, 2.0]), param([3.0, 4.0])
    optimizer = OPTIMIZERS[name]([used, unused], 0.1, 0.1)
    set_grad(used, [1.0, 1.0])
    optimizer.step()
    np.testing.assert_array_equal(unused.numpy(), [3.0, 4.0])
    assert id(unused) not in optimizer.state
    assert not np.allclose(used.numpy(), [1.0, 2.0])


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_matches_torch_over_20_steps(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    starts = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    ours = [param(a) for a in starts]
    theirs = [torch.tensor(a, requires_grad=True) for a in starts]
    options = {"lr": 0.05, "weight_decay": 0.1}
    if name == "SGD":
        ours_opt, their_opt = SGD(ours, momentum=0.9, **options), torch.optim.SGD(
            theirs, momentum=0.9, **options)
    else:
        options.update(betas=(0.9, 0.99), eps=1e-8)
        ours_opt = {"Adam": Adam, "AdamW": AdamW}[name](ours, **options)
        their_opt = getattr(torch.optim, name)(theirs, **options)
    for _ in range(20):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            set_grad(p, g)
            t.grad = torch.tensor(g)
        ours_opt.step()
        their_opt.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.numpy(), t.detach().numpy(), rtol=1e-11, atol=1e-13)


# ---- parameter groups and options ---------------------------------------------------
def test_param_group_options_override_the_defaults():
    fast, frozen = param([1.0]), param([1.0])
    optimizer = SGD([{"params": [fast]}, {"params": [frozen], "lr": 0.0}], lr=0.5)
    set_grad(fast, [1.0])
    set_grad(frozen, [1.0])
    optimizer.step()
    np.testing.assert_allclose(fast.numpy(), [0.5])
    np.testing.assert_allclose(frozen.numpy(), [1.0])
    optimizer.lr = 0.25  # a schedule sets every group
    assert [g["lr"] for g in optimizer.param_groups] == [0.25, 0.25]
    assert optimizer.lr == 0.25


def test_bad_arguments_are_named():
    p = param([1.0])
    with pytest.raises(ValueError, match="empty"):
        Adam([])
    with pytest.raises(TypeError, match="model.parameters()"):
        Adam(Module())
    with pytest.raises(TypeError, match="item 1 is list"):
        Adam([p, [1.0]])
    with pytest.raises(TypeError, match="item 0 is int64"):
        Adam([mt.tensor([1, 2])])
    with pytest.raises(ValueError, match="more than once"):
        Adam([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['momentum'\]"):
        Adam([{"params": [p], "momentum": 0.9}])
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1"):
        SGD([p], lr=-1)
    with pytest.raises(ValueError, match="betas"):
        Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr must be"):
        Adam([p]).lr = float("nan")


class Tiny(Module):
    """A matrix, a bias and a norm gain: two kinds of parameter for weight decay."""

    def __init__(self):
        self.weight = param(np.ones((2, 3)))
        self.bias = param(np.ones(2))
        self.gain = param(np.ones(2))


def test_a_new_optimizer_owns_its_options():
    """The base class knows no option but lr: a subclass declares its own (here ``scale``,
    which no built-in optimizer has) and groups, checks and state dicts handle it."""
    class SignSGD(Optimizer):
        def __init__(self, params, lr, scale=1.0):
            super().__init__(params, lr=lr, scale=scale)

        def _update(self, p, state, group):
            p.data -= group["lr"] * group["scale"] * p.xp.sign(p.grad)

    p, q = param([1.0, -2.0]), param([0.0, 0.0])
    optimizer = SignSGD([{"params": [p], "scale": 2.0}], lr=0.25)
    set_grad(p, [3.0, -0.5])
    optimizer.step()
    np.testing.assert_allclose(host(p.data), [0.5, -1.5])
    resumed = SignSGD([q], lr=1.0)
    resumed.load_state_dict(optimizer.state_dict())
    assert resumed.param_groups[0]["scale"] == 2.0 and resumed.lr == 0.25
    with pytest.raises(ValueError, match="SignSGD: scale must be a finite number >= 0"):
        SignSGD([p], lr=0.1, scale=-1.0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['betas'\]"):
        SignSGD([{"params": [p], "betas": (0.9, 0.99)}], lr=0.1)


def test_weight_decay_groups_decay_only_matrices():
    model = Tiny()
    groups = param_groups_for_weight_decay(model, 0.5)
    assert [[id(p) for p in g["params"]] for g in groups] == [
        [id(model.weight)], [id(model.bias), id(model.gain)]]
    optimizer = AdamW(groups, lr=0.1)
    for p in model.parameters():
        set_grad(p, np.zeros(p.shape))  # no gradient signal: only decay moves anything
    optimizer.step()
    np.testing.assert_allclose(model.weight.numpy(), np.full((2, 3), 1 - 0.1 * 0.5))
    np.testing.assert_array_equal(model.bias.numpy(), np.ones(2))
    np.testing.assert_array_equal(model.gain.numpy(), np.ones(2))


# ---- state dicts --------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_continues_identically(name):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((2, 3)) for _ in range(5)]
    a = param(np.ones((2, 3)))
    first = OPTIMIZERS[name]([a], 0.1, 0.01)
    for g in grads[:3]:
        set_grad(a, g)
        first.step()
    saved = first.state_dict()
    b = param(a.numpy())
    second = OPTIMIZERS[name]([b], 99.0, 0.0)  # options come back from the state dict
    second.load_state_dict(saved)
    assert second.param_groups[0]["lr"] == 0.1
    for g in grads[3:]:
        for p, opt in ((a, first), (b, second)):
            set_grad(p, g)
            opt.step()
    np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dicts_are_copies_not_aliases(name):
    # A state dict is a snapshot: later steps of either optimizer must not write into it
    # (one dict may be loaded into several optimizers, or saved after the loading).
    a = param(np.ones((2, 3)), np.float32)
    first = OPTIMIZERS[name]([a], 0.1, 0.01)
    for _ in range(2):
        set_grad(a, np.full((2, 3), 0.5))
        first.step()
    saved = first.state_dict()
    snapshot = {k: v.copy() for k, v in saved["state"][0].items() if hasattr(v, "copy")}
    assert snapshot, "the optimizer should keep array state"
    b = param(a.numpy(), np.float32)
    second = OPTIMIZERS[name]([b], 0.1, 0.01)
    second.load_state_dict(saved)
    for p, opt in ((a, first), (b, second)):
        set_grad(p, np.full((2, 3), -2.0))
        opt.step()
    for key, value in snapshot.items():
        np.testing.assert_array_equal(saved["state"][0][key], value, err_msg=key)


def test_load_state_dict_mismatches_are_clear():
    a = param(np.ones((2, 3)))
    adam = Adam([a])
    set_grad(a, np.ones((2, 3)))
    adam.step()
    saved = adam.state_dict()
    with pytest.raises(ValueError, match=r"sizes \[1\], this optimizer \[2\]"):
        Adam([param(np.ones((2, 3))), param(np.ones(1))]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(2, 3\), "
                                         r"but the parameter has shape \(3, 2\)"):
        Adam([param(np.ones((3, 2)))]).load_state_dict(saved)
    with pytest.raises(ValueError, match="another kind of optimizer"):
        SGD([param(np.ones((2, 3)))], lr=0.1).load_state_dict(saved)


# ---- gradient clipping --------------------------------------------------------------
@given(data=st.data(), count=st.integers(1, 3), max_norm=st.floats(0.1, 10.0))
def test_clip_grad_norm(data, count, max_norm):
    grads = [data.draw(arrays(data.draw(small_shapes))) for _ in range(count)]
    params = [param(g) for g in grads] + [param([1.0])]  # the last one has no grad
    for p, g in zip(params, grads):
        set_grad(p, g)
    norm = clip_grad_norm(params, max_norm)
    expected = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert norm == pytest.approx(expected, rel=1e-12)
    scale = min(1.0, max_norm / (expected + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(host(p.grad), g * scale, rtol=1e-12)
    clipped = math.sqrt(sum(float((host(p.grad) ** 2).sum()) for p in params[:-1]))
    assert clipped <= max_norm * (1 + 1e-9)
    assert params[-1].grad is None


def test_clip_grad_norm_rejects_a_bad_max_norm():
    with pytest.raises(ValueError, match="max_norm must be > 0, got 0"):
        clip_grad_norm([param([1.0])], 0)


# ---- schedules ----------------------------------------------------------------------
def test_noam_known_values():
    # the Transformer base model: d_model 512, 4000 warmup steps
    assert noam(4000, 512, 4000) == pytest.approx((512 * 4000) ** -0.5)  # the peak
    assert noam(1, 512, 4000) == pytest.approx(512 ** -0.5 * 4000 ** -1.5)
    assert noam(16000, 512, 4000, factor=2.0) == pytest.approx(2 * 512 ** -0.5 * 16000 ** -0.5)
    assert noam(0, 512, 4000) == noam(1, 512, 4000)


@given(warmup=st.integers(1, 500), step=st.integers(1, 2000), d_model=st.integers(1, 1024))
def test_noam_rises_until_warmup_then_falls(warmup, step, d_model):
    peak = noam(warmup, d_model, warmup)
    assert noam(step, d_model, warmup) <= peak * (1 + 1e-12)
    following = noam(step + 1, d_model, warmup)
    if step < warmup:
        assert following > noam(step, d_model, warmup)
    else:
        assert following < noam(step, d_model, warmup)


def test_warmup_cosine_known_values():
    lr = functools.partial(warmup_cosine, max_lr=1.0, warmup=10, total=110, min_lr=0.1)
    assert lr(0) == lr(1) == pytest.approx(0.1)
    assert lr(5) == pytest.approx(0.5)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)  # half way down the cosine
    assert lr(110) == pytest.approx(0.1)
    assert lr(10_000) == pytest.approx(0.1)


@given(warmup=st.integers(0, 100), extra=st.integers(1, 300), step=st.integers(1, 500),
       min_lr=st.floats(0.0, 0.5))
def test_warmup_cosine_is_bounded_and_monotone_in_pieces(warmup, extra, step, min_lr):
    total = warmup + extra
    lr = functools.partial(warmup_cosine, max_lr=1.0, warmup=warmup, total=total,
                           min_lr=min_lr)
    floor = 0.0 if step < warmup else min_lr  # the warmup climbs from 0, as in nanoGPT
    assert floor <= lr(step) <= 1.0 + 1e-12
    if step < total:
        assert lr(step) > 0.0
    if step < warmup:
        assert lr(step + 1) > lr(step)
    elif step >= warmup and step < total:
        assert lr(step + 1) < lr(step)
    elif step >= total:
        assert lr(step) == pytest.approx(min_lr)


@given(warmup=st.integers(0, 100), step=st.integers(0, 300))
def test_warmup_constant(warmup, step):
    value = warmup_constant(step, 0.5, warmup)
    expected = 0.5 if step >= warmup else 0.5 * max(step, 1) / warmup
    assert value == pytest.approx(expected)
    assert 0.0 < value <= 0.5


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="noam: warmup must be an integer >= 1, got 0"):
        noam(1, 512, 0)
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        warmup_constant(-1, 0.1, 10)
    with pytest.raises(ValueError, match="total must be an integer greater than warmup=10"):
        warmup_cosine(1, 0.1, warmup=10, total=10)
    assert noam(np.int64(5), 64, 10) == noam(5, 64, 10)  # NumPy integers are integers
