"""Mixed precision: the loss scaler's state machine; float16 copies of float32 master
weights; softmax, attention and the loss accumulating in float32; fit(precision="float16")
tracking the float32 run; an overflowing step skipped, not applied."""
import itertools

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.optim import SGD, Adam
from minitransformer.precision import LossScaler, half_precision
from strategies import host


def test_loss_scaler_state_machine():
    scaler = LossScaler(scale=8.0, growth_interval=3)
    expected = [  # (finite?, scale after, clean steps after, skipped after)
        (True, 8, 1, 0), (True, 8, 2, 0), (True, 16, 0, 0),    # grows after 3 clean steps
        (True, 16, 1, 0), (False, 8, 0, 1),                    # an overflow halves, resets
        (True, 8, 1, 1), (True, 8, 2, 1), (False, 4, 0, 2),    # ... even one step short
        (True, 4, 1, 2), (True, 4, 2, 2), (True, 8, 0, 2)]
    for finite, scale, clean, skipped in expected:
        scaler.update(finite)
        assert (scaler.scale, scaler.clean_steps, scaler.skipped_steps) == (scale, clean, skipped)


def test_unscale_divides_and_detects_overflow():
    p = mt.tensor(np.ones(3, np.float32), requires_grad=True)
    p.grad = np.array([2.0, 4.0, 8.0], np.float32)
    scaler = LossScaler(scale=4.0)
    assert scaler.unscale_([p]) and p.grad.tolist() == [0.5, 1.0, 2.0]
    p.grad = np.array([1.0, np.inf, 0.0], np.float32)
    assert not scaler.unscale_([p]) and scaler.scale == 2.0


@pytest.mark.parametrize("options, error, message", [
    (dict(scale=0.0), ValueError, "LossScaler: scale must be a finite number > 0, got 0.0"),
    (dict(scale="big"), TypeError, "LossScaler: scale must be a number, got 'big'"),
    (dict(growth_interval=0), ValueError, "growth_interval must be a positive integer, got 0"),
    (dict(growth_interval=2.0), TypeError, "growth_interval must be an integer, got 2.0"),
    (dict(factor=1), ValueError, r"factor must be > 1 \(.*\), got 1"),
])
def test_loss_scaler_rejects_bad_settings(options, error, message):
    with pytest.raises(error, match=message):
        LossScaler(**options)
    assert LossScaler(growth_interval=np.int64(3)).growth_interval == 3


def test_the_scale_stays_within_float16s_range():
    """Growth stops at 2^24; an overflow at 2^-24 is the model's own inf or nan, which
    would otherwise halve the scale to 0 and skip every step from then on, silently."""
    scaler = LossScaler(scale=2.0 ** 23, growth_interval=1)
    for _ in range(3):
        scaler.update(True)
    assert scaler.scale == 2.0 ** 24 and scaler.clean_steps == 0
    scaler = LossScaler(scale=2.0 ** -23)
    scaler.update(False)
    assert scaler.scale == 2.0 ** -24
    with pytest.raises(FloatingPointError, match="even with the loss scaled by 5.96046e-08, "
                                                 "so float16 overflow is not the cause"):
        scaler.update(False)
    assert (scaler.scale, scaler.skipped_steps) == (2.0 ** -24, 1)


def test_loss_scaler_state_round_trips_and_is_checked():
    scaler = LossScaler(scale=8.0, growth_interval=3)
    for finite in (True, False, True):
        scaler.update(finite)
    again = LossScaler(growth_interval=3)
    again.load_state_dict(scaler.state_dict())
    assert again.state_dict() == scaler.state_dict() == {
        "scale": 4.0, "clean_steps": 1, "skipped_steps": 1}
    with pytest.raises(ValueError, match=r"keys \['clean_steps', 'scale', 'skipped_steps'\]"):
        again.load_state_dict({"scale": 1.0})
    with pytest.raises(ValueError, match="clean_steps must be an integer >= 0, got -1"):
        again.load_state_dict({**scaler.state_dict(), "scale": 2.0, "clean_steps": -1})
    assert again.scale == 4.0  # a refused state changes nothing


def test_half_precision_computes_in_float16_and_keeps_float32_masters():
    mt.manual_seed(0)
    model = mt.nn.GPT(mt.nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2, num_layers=1,
                                      dropout=0.0))
    ids = mt.tensor(np.random.default_rng(0).integers(0, 11, (2, 8)))
    masters = [p.numpy() for p in model.parameters()]
    with half_precision(model):
        assert {p.dtype for p in model.parameters()} == {np.dtype(np.float16)}
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits, ids[:, 1:])
        assert logits.dtype == np.float16 and loss.dtype == np.float32
        loss.backward()
    for p, master in zip(model.parameters(), masters):
        assert p.dtype == np.float32 and p.grad.dtype == np.float32
        np.testing.assert_array_equal(p.numpy(), master)  # the masters are untouched


def test_half_precision_adds_to_the_gradients_already_there():
    """Documented: the float32 gradients of the block are added to any the parameters had
    (gradient accumulation over float16 micro-batches depends on it)."""
    model = mt.nn.Linear(3, 2)
    x = mt.tensor(np.ones((4, 3), np.float32))
    model(x).sum().backward()  # float32: dW = 4 everywhere, db = 4
    with half_precision(model):
        model(x * 0.5).sum().backward()  # float16: 2 and 4, exact in float16
    np.testing.assert_array_equal(host(model.weight.grad), np.full((2, 3), 6.0, np.float32))
    np.testing.assert_array_equal(host(model.bias.grad), np.full(2, 8.0, np.float32))
    assert model.weight.grad.dtype == np.float32


@pytest.mark.parametrize("attention", ["plain", "blockwise"])
def test_float16_softmax_attention_and_loss_accumulate_in_float32(attention):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 2048)) * 4).astype(np.float16).astype(np.float64)
    exact = np.exp(x - x.max(axis=1, keepdims=True))
    exact /= exact.sum(axis=1, keepdims=True)
    half = mt.tensor(x, dtype="float16")
    y = F.softmax(half)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.numpy(), exact, rtol=1e-3, atol=1e-7)  # output rounding
    targets = rng.integers(0, 2048, 2)
    loss = F.cross_entropy(half, targets)
    expected = -np.log(exact[[0, 1], targets]).mean()
    assert loss.dtype == np.float32 and abs(loss.item() - expected) < 1e-5
    q, k, v = (mt.tensor(rng.standard_normal((1, 2, 300, 8)), dtype="float16")
               for _ in range(3))
    attend = (lambda *t: F.blockwise_attention(*t, block_size=64)) if attention == \
        "blockwise" else (lambda *t: F.scaled_dot_product_attention(*t)[0])
    out = attend(q, k, v)
    wide = attend(*(mt.tensor(t.numpy(), dtype="float32") for t in (q, k, v)))
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.numpy(), wide.numpy(), atol=2e-3)


def train(precision, steps=6, optimizer=Adam, **options):
    mt.manual_seed(0)
    model = mt.nn.GPT(mt.nn.GPTConfig(17, max_len=12, d_model=16, num_heads=2,
                                      num_layers=2, dropout=0.1))
    data = mt.tensor(np.random.default_rng(1).integers(0, 17, (4, 4, 12)))
    batches = itertools.cycle(data[i] for i in range(len(data)))
    optimizer = optimizer(model.parameters(), lr=3e-3 if optimizer is Adam else 0.5)
    history = mt.fit(model, optimizer, batches, lambda m, b: F.cross_entropy(
        m(b[:, :-1]), b[:, 1:]), steps, log_every=0, precision=precision, **options)
    return model, optimizer, history


def test_float16_training_tracks_float32():
    """Stated tolerance: over 6 SGD steps (lr 0.5) the losses agree to 2e-3 and the
    weights to 3e-3 (float16 keeps 11 significant bits: 5e-4 relative rounding per
    operation; measured 4e-4 with the CPU's dropout draws, 2.2e-3 with the GPU's). Adam would amplify the noise of gradients that are truly 0 (the key
    bias's) into full steps of +-lr, so SGD shows the gradients' own accuracy."""
    model32, _, history32 = train("float32", optimizer=SGD)
    model16, _, history16 = train("float16", optimizer=SGD)
    assert history16.skipped == []
    np.testing.assert_allclose(history16.losses, history32.losses, atol=2e-3)
    for a, b in zip(model16.parameters(), model32.parameters()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=3e-3)
    assert not np.array_equal(model16.parameters()[2].numpy(), model32.parameters()[2].numpy())


def test_an_overflowing_step_is_skipped_not_applied():
    mt.manual_seed(0)
    untrained = [p.numpy() for p in train("float16", steps=1,
                                          loss_scaler=LossScaler(2.0 ** 60))[0].parameters()]
    scaler = LossScaler(scale=2.0 ** 60)  # float16 gradients times 2^60 overflow
    model, optimizer, history = train("float16", steps=3, loss_scaler=scaler)
    assert history.skipped == [1, 2, 3] and scaler.scale == 2.0 ** 57
    assert len(history.losses) == 3 and np.isfinite(history.losses).all()
    for p, before in zip(model.parameters(), untrained):
        np.testing.assert_array_equal(p.numpy(), before)  # nothing applied
    assert optimizer.state == {}  # Adam never stepped: no moments yet
    scaler = LossScaler(2.0 ** 30)
    model, _, history = train("float16", steps=30, loss_scaler=scaler)
    assert history.skipped[0] == 1 and len(history.skipped) < 30  # it came down, went on
    assert scaler.scale == 2.0 ** (30 - len(history.skipped)) and scaler.clean_steps > 0


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_a_nan_gradient_of_the_model_itself_stops_a_float16_run():
    """A finite loss with a nan gradient (sqrt at 0) is no overflow: after the scale has
    come down to 2^-24 the run stops with FloatingPointError, as it does in float32."""
    mt.manual_seed(0)
    model = mt.nn.Linear(2, 1)
    x = mt.tensor(np.ones((3, 2), np.float32))
    scaler = LossScaler(scale=2.0 ** -22)
    with pytest.raises(FloatingPointError, match="float16 overflow is not the cause"):
        mt.fit(model, SGD(model.parameters(), lr=0.1), itertools.repeat(None),
               lambda m, _: mt.ops.sqrt((m(x) * 0).sum()), 10, log_every=0,
               precision="float16", loss_scaler=scaler)
    assert scaler.skipped_steps == 2


def test_skipped_steps_keep_one_gradient_norm_per_step():
    _, _, history = train("float16", steps=3, loss_scaler=LossScaler(2.0 ** 60),
                          clip_norm=1.0)
    assert history.skipped == [1, 2, 3] and len(history.grad_norms) == 3
    assert not np.isfinite(history.grad_norms).any()


def test_fit_checks_the_precision_options():
    model = mt.nn.Linear(2, 2)
    def fit(**options):
        mt.fit(model, Adam(model.parameters()), [0], lambda m, b: None, 1, log_every=0,
               **options)
    with pytest.raises(ValueError, match="precision must be 'float32' or 'float16', got 'x'"):
        fit(precision="x")
    with pytest.raises(ValueError, match="loss_scaler is for precision='float16'"):
        fit(loss_scaler=LossScaler())
    with pytest.raises(TypeError, match="loss_scaler must be a precision.LossScaler, got "
                                        r"float; e.g. LossScaler\(scale=1024.0\)"):
        fit(precision="float16", loss_scaler=1024.0)
    model.to(dtype="float64")
    with pytest.raises(TypeError, match="keeps float32 master weights, but the model has "
                                        "float64 parameters"):
        fit(precision="float16")
