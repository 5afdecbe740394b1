"""The O(n^2) lab: time and peak memory of one attention forward + backward against
sequence length, plain (``scaled_dot_product_attention``, which keeps the (L, L)
weights) against blockwise (``blockwise_attention``, FlashAttention-style tiles).

    python benchmarks/attention_scaling.py                     # 128 ... 4096, NumPy
    python benchmarks/attention_scaling.py --lengths 256 1024 --causal
    python benchmarks/attention_scaling.py --plot runs/attention_scaling.png

Inputs: q, k, v of shape (batch, heads, L, head_dim), float32, random; one forward and
a backward pass with a random upstream gradient. Time: the best of ``--repeats`` runs.
Peak memory: the most memory allocated at once during one forward + backward, beyond
the inputs, measured with ``tracemalloc`` (NumPy reports every array buffer it
allocates to it); on CuPy it is not measured. The plot (log-log, needs matplotlib)
shows both against L: plain memory grows as L^2, blockwise as L.
"""
import argparse
import os
import sys
import time
import tracemalloc

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # as the demos and tests; override to compare

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minitransformer as mt  # noqa: E402
from minitransformer import functional as F  # noqa: E402


def attention(kind, q, k, v, causal, block_size):
    if kind == "blockwise":
        return F.blockwise_attention(q, k, v, causal=causal, block_size=block_size)
    lq, lk = q.shape[-2], k.shape[-2]
    mask = mt.masks.causal_mask(lq, lk, q.device) if causal else None
    return F.scaled_dot_product_attention(q, k, v, mask)[0]


def forward_backward(kind, inputs, upstream, causal, block_size):
    for t in inputs:
        t.grad = None
    attention(kind, *inputs, causal, block_size).backward(upstream)
    mt.backend.xp(inputs[0].device).asarray(inputs[0].grad).sum().item()  # wait for a GPU


def measure(kind, length, args):
    """(best seconds, peak MiB or None) of one forward + backward at ``length``."""
    rng = np.random.default_rng(0)
    shape = (args.batch, args.heads, length, args.head_dim)
    inputs = [mt.tensor(rng.standard_normal(shape, dtype=np.float32), requires_grad=True)
              for _ in range(3)]
    upstream = mt.tensor(rng.standard_normal(shape, dtype=np.float32))

    def run():
        forward_backward(kind, inputs, upstream, args.causal, args.block_size)
    run()  # warm-up
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    peak = None
    if args.backend == "numpy":
        for t in inputs:
            t.grad = None
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        run()
        peak = (tracemalloc.get_traced_memory()[1] - before) / 2 ** 20
        tracemalloc.stop()
    return min(seconds), peak


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: pip install matplotlib)")
        return
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("plain", "o"), ("blockwise", "s")):
        points = [(n, r[kind]) for n, r in results.items() if r[kind] is not None]
        lengths = [n for n, _ in points]
        left.loglog(lengths, [s * 1e3 for _, (s, _) in points], marker=marker, label=kind)
        if points and points[0][1][1] is not None:
            right.loglog(lengths, [m for _, (_, m) in points], marker=marker, label=kind)
    for axes, what in ((left, "time of forward + backward (ms)"), (right, "peak memory (MiB)")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("sequence length L")
        axes.set_ylabel(what)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle("attention: plain keeps the (L, L) weights, blockwise never does")
    figure.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"plot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+",
                        default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--causal", action="store_true", help="causal attention")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--plot", default="runs/attention_scaling.png")
    args = parser.parse_args()
    mt.set_backend(args.backend)
    print(f"batch {args.batch}, {args.heads} heads of {args.head_dim}, float32, "
          f"block {args.block_size}, {'causal' if args.causal else 'no mask'}, backend "
          f"{args.backend}, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}, best of "
          f"{args.repeats}\n")
    print("| L | plain ms | blockwise ms | time blockwise/plain | plain MiB | blockwise MiB | "
          "memory plain/blockwise |\n|---|---|---|---|---|---|---|")
    results = {}
    for length in args.lengths:
        row = results[length] = {}
        for kind in ("plain", "blockwise"):
            try:
                row[kind] = measure(kind, length, args)
            except MemoryError:
                row[kind] = None
        cells = [f"{length}"]
        (ps, pm), (bs, bm) = (row[k] or (None, None) for k in ("plain", "blockwise"))
        cells += [f"{ps * 1e3:.1f}" if ps else "out of memory", f"{bs * 1e3:.1f}",
                  f"{bs / ps:.2f}x" if ps else "",
                  f"{pm:.1f}" if pm else "n/a", f"{bm:.1f}" if bm else "n/a",
                  f"{pm / bm:.1f}x" if pm and bm else ""]
        print("| " + " | ".join(cells) + " |", flush=True)
    if args.plot:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
