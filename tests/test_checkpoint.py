"""Checkpoints: round trips, the file format, exact resumption of a run with dropout,
and clear errors for corrupt or mismatched files."""
import dataclasses
import json
import os

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.checkpoint import load_checkpoint, save_checkpoint
from minitransformer.nn import Module, Parameter
from minitransformer.optim import SGD, Adam, warmup_cosine
from minitransformer.train import fit


@dataclasses.dataclass
class Config:
    n_in: int = 6
    hidden: int = 8
    n_classes: int = 3
    dropout: float = 0.3


class MLP(Module):
    """Linear -> ReLU -> dropout -> Linear: small, but its training consumes randomness."""

    def __init__(self, config, seed=0):
        rng = np.random.default_rng(seed)

        def weight(*shape):
            scale = 1 / np.sqrt(shape[-1])
            return Parameter(mt.tensor(rng.standard_normal(shape) * scale, dtype=np.float32).data)
        self.config = config
        self.w1, self.b1 = weight(config.hidden, config.n_in), weight(config.hidden)
        self.w2, self.b2 = weight(config.n_classes, config.hidden), weight(config.n_classes)

    def forward(self, x):
        h = F.dropout(F.relu(F.linear(x, self.w1, self.b1)), self.config.dropout, self.training)
        return F.linear(h, self.w2, self.b2)


def random_batch():
    """Drawn from the library's CPU generator, whose state the checkpoint stores."""
    rng = mt.backend.rng("cpu")
    return rng.standard_normal((5, 6)), rng.integers(0, 3, size=5)


def classification_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(mt.tensor(x, dtype=np.float32)), mt.tensor(y))


def trained(steps=3, optimizer_type=Adam):
    model = MLP(Config())
    optimizer = optimizer_type(model.parameters(), lr=0.01)
    fit(model, optimizer, random_batch, classification_loss, steps=steps, seed=0, log_every=0)
    return model, optimizer


def assert_same_state(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert sorted(a["state"]) == sorted(b["state"])
    for i in a["state"]:
        assert sorted(a["state"][i]) == sorted(b["state"][i])
        for key, value in a["state"][i].items():
            np.testing.assert_array_equal(b["state"][i][key], value)


def test_round_trip(tmp_path):
    model, optimizer = trained()
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, optimizer, step=3, config=Config(hidden=8),
                    extra={"vocab": ["a", "b"], "best": 0.5})
    expected_draw = mt.backend.rng("cpu").random(4)

    fresh_model = MLP(Config(), seed=1)
    fresh_optimizer = Adam(fresh_model.parameters(), lr=0.5)
    mt.manual_seed(1234)
    info = load_checkpoint(path, fresh_model, fresh_optimizer)

    assert info == {"step": 3, "config": dataclasses.asdict(Config()),
                    "extra": {"vocab": ["a", "b"], "best": 0.5}}
    assert Config(**info["config"]) == Config()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(fresh_model.state_dict()[name], value)
    assert_same_state(optimizer.state_dict(), fresh_optimizer.state_dict())
    assert all(fresh_optimizer.state[id(p)]["exp_avg"].dtype == np.float32
               for p in fresh_model.parameters())
    np.testing.assert_array_equal(mt.backend.rng("cpu").random(4), expected_draw)


def test_the_file_is_a_plain_npz_without_pickle(tmp_path):
    model, optimizer = trained(steps=1, optimizer_type=SGD)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, optimizer, step=1, config={"lr": 0.01})
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["meta", "model/b1", "model/b2", "model/w1",
                                         "model/w2"]  # plain SGD keeps no arrays
        meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
        assert archive["model/w1"].shape == (8, 6)
    assert meta["step"] == 1 and meta["config"] == {"lr": 0.01}
    assert meta["optimizer"]["type"] == "SGD"
    assert meta["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert os.listdir(tmp_path) == ["run.npz"]  # the temporary file is gone


def test_resume_continues_exactly(tmp_path, backend):
    """Train 8 steps with dropout, Adam and a schedule, saving at step 4; a fresh model and
    optimizer loaded from that checkpoint reproduce steps 5-8 exactly."""
    if backend == "cupy":
        pytest.skip("dropout draws from the GPU generator, whose state checkpoints do not "
                    "hold (backend.get_rng_state covers the CPU generator)")
    path = tmp_path / "step4.npz"
    options = dict(schedule=lambda step: warmup_cosine(step, 0.05, warmup=2, total=8),
                   clip_norm=1.0, log_every=0)

    def save_at_4(step, history):
        if step == 4:
            save_checkpoint(path, model, optimizer, step=step, config=Config())

    model = MLP(Config())
    optimizer = Adam(model.parameters())
    full = fit(model, optimizer, random_batch, classification_loss, steps=8, seed=0,
               callback=save_at_4, **options)

    resumed_model = MLP(Config(), seed=99)
    resumed_optimizer = Adam(resumed_model.parameters())
    mt.manual_seed(99)  # whatever the generator did meanwhile, the checkpoint restores it
    step = load_checkpoint(path, resumed_model, resumed_optimizer)["step"]
    rest = fit(resumed_model, resumed_optimizer, random_batch, classification_loss, steps=8,
               start_step=step, **options)

    assert rest.steps == [5, 6, 7, 8]
    assert rest.losses == full.losses[4:]  # exactly, not approximately
    assert len(set(full.losses)) == 8
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed_model.state_dict()[name], value)


def test_loading_into_a_different_shape_names_the_parameter(tmp_path):
    model, _ = trained(steps=1)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model)
    wider = MLP(Config(hidden=16))
    with pytest.raises(ValueError, match=r"run\.npz.*'w1' has shape \(8, 6\) in the state "
                                         r"dict but \(16, 6\) in the model"):
        load_checkpoint(path, wider)


def test_optimizer_mismatches_are_clear(tmp_path):
    model, optimizer = trained(steps=1)
    without, with_adam = tmp_path / "model_only.npz", tmp_path / "adam.npz"
    save_checkpoint(without, model)
    save_checkpoint(with_adam, model, optimizer)
    assert load_checkpoint(without, model)["step"] == 0
    with pytest.raises(ValueError, match="no optimizer state; pass optimizer=None"):
        load_checkpoint(without, model, Adam(model.parameters()))
    with pytest.raises(ValueError, match="holds Adam state, which cannot be loaded into SGD"):
        load_checkpoint(with_adam, model, SGD(model.parameters(), lr=0.1))


def test_corrupt_files_give_a_clear_error(tmp_path):
    model, _ = trained(steps=1)
    good = tmp_path / "good.npz"
    save_checkpoint(good, model)
    data = good.read_bytes()
    cases = {
        "truncated.npz": data[: len(data) // 2],
        "noise.npz": bytes(range(256)) * 4,
        "empty.npz": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.savez(tmp_path / "no_meta.npz", w=np.ones(2))
    np.save(tmp_path / "array.npy", np.ones(2))
    meta = np.frombuffer(json.dumps({"format": "something-else"}).encode(), np.uint8)
    np.savez(tmp_path / "foreign.npz", meta=meta)
    for name in [*cases, "no_meta.npz", "array.npy", "foreign.npz"]:
        with pytest.raises(ValueError, match="is not a readable minitransformer checkpoint"):
            load_checkpoint(tmp_path / name, model)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz", model)


def test_a_failed_save_leaves_the_old_checkpoint_intact(tmp_path):
    model, _ = trained(steps=1)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, step=1)
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_checkpoint(path, model, step=2, extra={"weights": np.ones(3)})
    with pytest.raises(TypeError):
        save_checkpoint(path, model, step=3, extra={"ok": True}, config=object())
    assert load_checkpoint(path, model)["step"] == 1
    assert os.listdir(tmp_path) == ["run.npz"]


def test_a_crash_while_writing_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    model, _ = trained(steps=1)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, step=1)

    def crash_half_way(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path, model)["step"] == 1
    assert os.listdir(tmp_path) == ["run.npz"]
