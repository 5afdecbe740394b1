"""Checkpoints: round trips, the file format, exact resumption of a run with dropout,
and clear errors for corrupt or mismatched files."""
import dataclasses
import json
import os
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest

import minitransformer as mt
from minitransformer import functional as F
from minitransformer.checkpoint import load_checkpoint, save_checkpoint
from minitransformer.nn import Module, Parameter
from minitransformer.optim import SGD, Adam, AdamW, warmup_cosine
from minitransformer.precision import LossScaler
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


def resave(tmp_path, path, name="changed.npz", drop=(), meta=None, **meta_changes):
    """A copy of checkpoint ``path`` without the entries ``drop``, its meta replaced by
    ``meta`` (raw bytes or JSON) or changed by ``meta_changes`` (the optimizer's dict is
    updated, other fields replaced)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files if key not in drop}
    if "meta" in drop:
        meta = None
    elif meta is None:
        meta = json.loads(arrays["meta"].tobytes())
        for key, value in meta_changes.items():
            merge = key == "optimizer" and isinstance(value, dict)
            meta[key] = {**meta[key], **value} if merge else value
    if meta is not None:
        raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
        arrays["meta"] = np.frombuffer(raw, np.uint8)
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


def append_entry(path, name, shape, dtype="<f4", zero_mib=0):
    """Add an entry to the archive at ``path`` whose .npy header claims ``shape``, with
    ``zero_mib`` MiB of zeros as its data, deflated (a few KiB on disk)."""
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive, \
            warnings.catch_warnings(action="ignore"):  # zipfile warns of a duplicate name
        with archive.open(name + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": dtype, "fortran_order": False, "shape": shape})
            for _ in range(zero_mib):
                f.write(bytes(2 ** 20))


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


def test_the_documented_example_entries_are_real(tmp_path):
    """The module docstring's example names are entries of a real GPT checkpoint."""
    import re
    from minitransformer import checkpoint
    examples = re.findall(r"e\.g\. ``((?:model|optim)/\S+)``", checkpoint.__doc__)
    assert len(examples) == 2
    model = mt.nn.GPT(mt.nn.GPTConfig(11, max_len=8, d_model=8, num_heads=2, num_layers=1))
    optimizer = Adam(model.parameters())
    F.cross_entropy(model(mt.tensor(np.ones((1, 4), np.int64))), mt.tensor(
        np.ones((1, 4), np.int64))).backward()
    optimizer.step()
    save_checkpoint(tmp_path / "gpt.npz", model, optimizer, step=1)
    with np.load(tmp_path / "gpt.npz", allow_pickle=False) as archive:
        assert set(examples) <= set(archive.files), sorted(archive.files)


def test_resume_continues_exactly(tmp_path):
    """Train 8 steps with dropout, Adam and a schedule, saving at step 4; a fresh model and
    optimizer loaded from that checkpoint reproduce steps 5-8 exactly (on the GPU too,
    where dropout draws from the GPU generator)."""
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


def test_a_float16_run_resumes_with_its_loss_scale(tmp_path):
    """The loss scaler's state rides in the checkpoint: resumed at step 3, a float16 run
    ends with the scale, clean steps and weights of the run that went straight through
    (without it, the scale would restart at 2^15)."""
    path = tmp_path / "step3.npz"
    options = dict(steps=6, log_every=0, precision="float16")

    def save_at_3(step, history):
        if step == 3:
            save_checkpoint(path, model, optimizer, step, loss_scaler=scaler)

    model, scaler = MLP(Config()), LossScaler(scale=2.0 ** 10, growth_interval=2)
    optimizer = Adam(model.parameters())
    fit(model, optimizer, random_batch, classification_loss, seed=0, callback=save_at_3,
        loss_scaler=scaler, **options)
    resumed, resumed_scaler = MLP(Config(), seed=99), LossScaler(growth_interval=2)
    resumed_optimizer = Adam(resumed.parameters())
    step = load_checkpoint(path, resumed, resumed_optimizer,
                           loss_scaler=resumed_scaler)["step"]
    assert resumed_scaler.state_dict() == {"scale": 2.0 ** 11, "clean_steps": 1,
                                           "skipped_steps": 0}
    fit(resumed, resumed_optimizer, random_batch, classification_loss, start_step=step,
        loss_scaler=resumed_scaler, **options)
    assert resumed_scaler.state_dict() == scaler.state_dict()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value)


def test_a_loss_scaler_state_is_checked_before_anything_is_assigned(tmp_path):
    model, _ = trained(steps=1)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model)
    with pytest.raises(ValueError, match="no loss scaler state; pass loss_scaler=None"):
        load_checkpoint(path, model, loss_scaler=LossScaler())
    save_checkpoint(path, model, loss_scaler=LossScaler())
    bad = resave(tmp_path, path, loss_scaler={"scale": -1.0, "clean_steps": 0,
                                              "skipped_steps": 0})
    fresh, scaler = MLP(Config(), seed=5), LossScaler(scale=8.0)
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=r"changed\.npz: LossScaler: scale must be a finite "
                                         r"number > 0, got -1\.0"):
        load_checkpoint(bad, fresh, loss_scaler=scaler)
    assert scaler.scale == 8.0
    for name, value in before.items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value)


def test_loading_into_a_different_shape_names_the_parameter(tmp_path):
    model, _ = trained(steps=1)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model)
    wider = MLP(Config(hidden=16))
    with pytest.raises(ValueError, match=r"run\.npz.*'w1' has shape \(8, 6\) in the "
                                         r"checkpoint but \(16, 6\) in the model"):
        load_checkpoint(path, wider, strict_config=False)


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


def test_a_refused_checkpoint_changes_nothing(tmp_path):
    """Everything is checked before anything is assigned: the model, the optimizer and the
    random generator are untouched by a checkpoint that is refused late in the checks."""
    model, optimizer = trained(steps=2, optimizer_type=AdamW)
    path = tmp_path / "adamw.npz"
    save_checkpoint(path, model, optimizer)
    fresh = MLP(Config(), seed=5)
    before, draw = fresh.state_dict(), mt.backend.get_rng_state()
    sgd = SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="holds AdamW state, which cannot be loaded into SGD"):
        load_checkpoint(path, fresh, sgd)
    bad_lr = resave(tmp_path, path, optimizer={"param_groups": [{"lr": -1.0, "params": [0, 1, 2, 3]}]})
    adamw = AdamW(fresh.parameters())
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -1.0"):
        load_checkpoint(bad_lr, fresh, adamw)
    for name, value in before.items():
        np.testing.assert_array_equal(fresh.state_dict()[name], value)
    assert sgd.state == adamw.state == {} and adamw.lr == 1e-3
    assert mt.backend.get_rng_state() == draw


def test_a_model_configured_differently_is_refused(tmp_path):
    """num_heads and activation change no shape, so only the saved config can tell."""
    def gpt(**changes):
        return mt.nn.GPT(mt.nn.GPTConfig(**{**dict(vocab_size=7, max_len=6, d_model=8,
                                                   num_heads=2, num_layers=1), **changes}))
    path, original = tmp_path / "gpt.npz", gpt()
    save_checkpoint(path, original)
    with pytest.raises(ValueError, match=r"the checkpoint's model has num_heads=2, "
                                         r"activation='gelu', but this model has num_heads=4, "
                                         r"activation='relu'.*strict_config=False"):
        load_checkpoint(path, gpt(num_heads=4, activation="relu"))
    other = gpt(num_heads=4)
    load_checkpoint(path, other, strict_config=False)  # asked for: the weights load
    for name, value in original.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value)
    assert load_checkpoint(path, gpt())["step"] == 0


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


HOSTILE_META = {  # name: what replaces the meta entry, or changes to it
    "a list": dict(meta=b"[1, 2]"),
    "not UTF-8": dict(meta=b'{"format": "\xff"}'),
    "nested 100000 deep": dict(meta=b"[" * 100_000 + b"]" * 100_000),
    "no step": dict(meta=json.dumps({"format": "minitransformer-checkpoint",
                                     "version": 1}).encode()),
    "step a string": dict(step="3"),
    "version a string": dict(version="1"),
    "version true": dict(version=True),
    "model_config a list": dict(model_config=[1]),
    "rng_state empty": dict(rng_state={"x": 1}),
    "rng_state of another generator": dict(rng_state={"bit_generator": "MT19937"}),
    "rng_state garbage": dict(rng_state={"state": {"state": "x", "inc": []}}),
    "gpu_rng_seed a string": dict(gpu_rng_seed="7"),
    "gpu_rng_seed negative": dict(gpu_rng_seed=-1),
    "optimizer a list": dict(optimizer=[1]),
    "optimizer type a number": dict(optimizer={"type": 3}),
    "param_groups not dicts": dict(optimizer={"param_groups": [1]}),
    "param indices strings": dict(optimizer={"param_groups": [{"params": ["a"]}]}),
    "state index not a number": dict(optimizer={"state": {"x": {}}}),
    "state index a superscript": dict(optimizer={"state": {"\u00b2": {}}}),
    "state value a string": dict(optimizer={"state": {"0": {"step": "a"}}}),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_META))
def test_hostile_metadata_is_one_clear_error(tmp_path, case):
    model, optimizer = trained(steps=1)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model, optimizer)
    bad = resave(tmp_path, path, **HOSTILE_META[case])
    before = model.state_dict()
    with pytest.raises(ValueError, match="is not a readable minitransformer checkpoint .*"
                                         "only files written by save_checkpoint"):
        load_checkpoint(bad, model, optimizer)
    for name, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[name], value)


def test_a_newer_format_asks_for_an_upgrade(tmp_path):
    model, _ = trained(steps=1)
    save_checkpoint(tmp_path / "run.npz", model)
    newer = resave(tmp_path, tmp_path / "run.npz", version=2, step=None)
    with pytest.raises(ValueError, match=r"changed\.npz has format version 2, newer than "
                                         r"this minitransformer's 1; upgrade"):
        load_checkpoint(newer, model)


def test_names_shapes_and_sizes_are_checked_before_any_data_is_read(tmp_path):
    """From the zip directory and the .npy headers alone: a huge claimed shape is a
    shape error, not a MemoryError, and an unexpected entry is refused before its
    (deflated, 32 MiB) data is decompressed."""
    model, _ = trained(steps=1)
    path = tmp_path / "run.npz"
    save_checkpoint(path, model)
    huge = resave(tmp_path, path, "huge.npz", drop=["model/w1"])
    append_entry(huge, "model/w1", (2 ** 40,))
    with pytest.raises(ValueError, match=r"model/w1.npy size must be 4398046511232 bytes "
                                         r"\(as its .npy header says\), got 128"):
        load_checkpoint(huge, model)

    bomb = resave(tmp_path, path, "bomb.npz")
    append_entry(bomb, "model/extra", (2 ** 23,), zero_mib=32)
    assert bomb.stat().st_size < 2 ** 20
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="unexpected 'extra'"):
            load_checkpoint(bomb, model)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2 ** 20

    unreadable = {"meta claims 2**40 bytes": ("meta", (2 ** 40,), "|u1"),
                  "size disagrees with the header": ("model/w1", (8, 7), "<f4"),
                  "name twice": ("model/w2", (3, 8), "<f4")}
    for case, (name, shape, dtype) in unreadable.items():
        bad = resave(tmp_path, path, f"{case}.npz", drop=[name] if case != "name twice" else [])
        append_entry(bad, name, shape, dtype)
        with pytest.raises(ValueError, match="is not a readable"):
            load_checkpoint(bad, model)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_honour_the_umask(tmp_path, umask):
    model, _ = trained(steps=1)
    previous = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "run.npz", model)
    finally:
        os.umask(previous)
    assert (tmp_path / "run.npz").stat().st_mode & 0o777 == 0o666 & ~umask


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
        during.extend(os.listdir(tmp_path))
        raise KeyboardInterrupt

    during = []

    monkeypatch.setattr(np, "savez", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path, model)["step"] == 1
    assert os.listdir(tmp_path) == ["run.npz"]
    # While it is written, the temporary is hidden from listings and *.npz patterns,
    # and names the checkpoint it is for.
    temporary, = set(during) - {"run.npz"}
    assert temporary.startswith(".run.npz.") and temporary.endswith(".tmp")
