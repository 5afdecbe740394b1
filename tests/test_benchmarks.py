"""The benchmark's code paths run (a smoke test with a tiny workload and a few steps, on
every backend: the strict CuPy stand-in runs its --backend cupy path). No timing is
asserted: performance figures come from running the benchmark itself."""
import pathlib
import sys

import numpy as np

import minitransformer as mt

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_transformer as bench  # noqa: E402

TINY = bench.Workload("tiny", vocab=12, d_model=8, heads=2, d_ff=16, layers=1, length=6,
                      batch=3)


def test_bench_transformer_training_and_decoding_run(backend, monkeypatch):
    medians = bench.bench_training(TINY, ["ours"], backend, warmup=1, steps=2)
    assert list(medians) == ["ours"] and medians["ours"] > 0
    runner = bench.OurRunner(TINY)
    batch = bench.device_batch("ours", bench.make_batch(TINY))
    assert all(mt.backend.device_of(a) == mt.backend.default_device() for a in batch)
    before = [p.numpy() for p in runner.model.parameters()]
    losses = [runner.train_step(*batch) for _ in range(3)]
    assert all(isinstance(loss, float) and np.isfinite(loss) for loss in losses)
    assert all(not np.array_equal(b, p.numpy()) for b, p in zip(before, runner.model.parameters())
               if p.grad is not None)  # every parameter with a gradient was updated
    monkeypatch.setattr(bench, "DECODE_NEW_TOKENS", 3)
    decoded = bench.bench_decoding(TINY, ["ours"], backend, repeats=1)
    assert sorted(decoded) == [("ours", False), ("ours", True)]
    src = bench.make_batch(TINY)[0][:2]
    with_cache, without = (runner.greedy(src, 3, cache) for cache in (True, False))
    assert with_cache.shape == (2, 4)
    np.testing.assert_array_equal(with_cache, without)
