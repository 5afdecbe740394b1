"""Training-step and decoding benchmarks of the encoder-decoder, ours against PyTorch.

    python benchmarks/bench_transformer.py                 # W1, W2, W3 on NumPy
    python benchmarks/bench_transformer.py --workloads W2  # one workload
    python benchmarks/bench_transformer.py --backend cupy  # on a GPU (torch on CUDA)

Workloads (float32, fixed-seed random tokens, ~10% tail padding with pad id 0, label
smoothing 0.1, Adam(1e-3, (0.9, 0.98), 1e-9), dropout 0.1, post-LN, ReLU FFN,
sinusoidal positions, embeddings scaled by sqrt(d_model)):
    W1  vocab 32,   d_model 64,  4 heads, d_ff 256,  2+2 layers, length 16, batch 64
    W2  vocab 4000, d_model 256, 8 heads, d_ff 1024, 3+3 layers, length 64, batch 32
    W3  W2's model: greedy decoding of 64 tokens, batch 8, source length 64

A training step is the whole thing: zero grad, forward, loss, backward, optimizer. We
report the median of 20 steps after 5 warm-up steps, with our steps and torch's
interleaved so that both see the same machine state. Peak RSS is measured in a fresh
child process per engine, which runs the same steps and nothing else.
"""
import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import minitransformer as mt  # noqa: E402
from minitransformer import functional as F  # noqa: E402
from minitransformer import generate  # noqa: E402
from minitransformer.nn.models import Transformer, TransformerConfig  # noqa: E402
from minitransformer.optim import Adam  # noqa: E402


@dataclass(frozen=True)
class Workload:
    name: str
    vocab: int
    d_model: int
    heads: int
    d_ff: int
    layers: int
    length: int
    batch: int
    dropout: float = 0.1
    label_smoothing: float = 0.1


WORKLOADS = {
    "W1": Workload("W1", vocab=32, d_model=64, heads=4, d_ff=256, layers=2, length=16, batch=64),
    "W2": Workload("W2", vocab=4000, d_model=256, heads=8, d_ff=1024, layers=3, length=64,
                   batch=32),
}
DECODE_BATCH, DECODE_NEW_TOKENS, BOS = 8, 64, 1


def make_batch(spec, seed=0):
    """src, tgt_in, tgt_out int64 (B, L); the last ~10% of positions of each row are pad 0."""
    rng = np.random.default_rng(seed)
    src = rng.integers(2, spec.vocab, (spec.batch, spec.length))
    tgt = rng.integers(2, spec.vocab, (spec.batch, spec.length + 1))
    for row in range(spec.batch):
        pad = rng.integers(0, max(2, spec.length // 5))  # 0-20%, about 10% on average
        if pad:
            src[row, -pad:] = 0
            tgt[row, -pad:] = 0
    tgt[:, 0] = BOS
    return src, tgt[:, :-1], tgt[:, 1:]


def training_flops(spec):
    """Matmul FLOPs of one training step: 2mnk per forward matmul, times 3 (the backward
    pass does two matmuls of the same size per forward one)."""
    B, L, D, F_, V, N = spec.batch, spec.length, spec.d_model, spec.d_ff, spec.vocab, spec.layers
    attention = 4 * 2 * B * L * D * D + 2 * 2 * B * L * L * D   # projections, QKᵀ and PV
    ffn = 2 * 2 * B * L * D * F_
    forward = N * (attention + ffn) + N * (2 * attention + ffn) + 2 * B * L * D * V
    return 3 * forward


class OurRunner:
    def __init__(self, spec, seed=0, recompute=False):
        mt.manual_seed(seed)
        config = TransformerConfig(src_vocab_size=spec.vocab, tgt_vocab_size=spec.vocab,
                                   d_model=spec.d_model, num_heads=spec.heads,
                                   num_encoder_layers=spec.layers,
                                   num_decoder_layers=spec.layers, d_ff=spec.d_ff,
                                   dropout=spec.dropout, tie_output_embedding=False,
                                   recompute=recompute)
        self.spec = spec
        self.model = Transformer(config)
        self.optimizer = Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)

    def train_step(self, src, tgt_in, tgt_out):
        self.model.train()
        self.optimizer.zero_grad()
        logits = self.model(src, tgt_in)
        loss = F.cross_entropy(logits, tgt_out, ignore_index=0,
                               label_smoothing=self.spec.label_smoothing)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def greedy(self, src, new_tokens, use_cache):
        start = np.full((src.shape[0], 1), BOS)
        return mt.tensor(generate.greedy(self.model, start, new_tokens, src=src,
                                         use_cache=use_cache)).numpy()

    def synchronize(self):
        mt.backend.synchronize()


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_rate(n=1024, repeats=10):
    """Measured float32 GFLOP/s of one large matmul on this machine's BLAS."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def device_batch(runner_kind, arrays):
    if runner_kind == "ours":
        return [mt.tensor(a).data for a in arrays]
    return list(arrays)


def make_runner(kind, spec, backend):
    if kind == "ours":
        mt.set_backend(backend)
        return OurRunner(spec)
    from torch_peer import TorchRunner
    return TorchRunner(spec, device="cuda" if backend == "cupy" else "cpu")


def bench_training(spec, kinds, backend, warmup=5, steps=20):
    batch = make_batch(spec)
    runners = {k: make_runner(k, spec, backend) for k in kinds}
    inputs = {k: device_batch(k, batch) for k in kinds}
    times = {k: [] for k in kinds}
    for i in range(warmup + steps):
        for k in kinds:  # interleaved: ours, torch, ours, torch, ...
            runner = runners[k]
            runner.synchronize()
            seconds = timed(lambda: (runner.train_step(*inputs[k]), runner.synchronize()))
            if i >= warmup:
                times[k].append(seconds)
    return {k: statistics.median(t) for k, t in times.items()}


def bench_decoding(spec, kinds, backend, repeats=3):
    src = make_batch(spec)[0][:DECODE_BATCH]
    results = {}
    runners = {k: make_runner(k, spec, backend) for k in kinds}
    variants = [("ours", True), ("ours", False)] if "ours" in kinds else []
    variants += [("torch", False)] if "torch" in kinds else []
    for k, cache in variants:
        runner = runners[k]
        call = (lambda: runner.greedy(src, DECODE_NEW_TOKENS, cache)) if k == "ours" else \
            (lambda: runner.greedy(src, DECODE_NEW_TOKENS, BOS))
        call()
        results[(k, cache)] = min(timed(call) for _ in range(repeats))
    return results


def peak_rss_mb(kind, workload, backend):
    """Peak RSS (MiB) of a fresh process running 8 training steps of ``workload``."""
    out = subprocess.run([sys.executable, __file__, "--rss-child", kind, workload,
                          "--backend", backend], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def rss_child(kind, workload, backend):
    spec = WORKLOADS[workload]
    runner = make_runner(kind, spec, backend)
    batch = device_batch(kind, make_batch(spec))
    for _ in range(8):
        runner.train_step(*batch)
    print(peak_rss_of_this_process_mb())


def peak_rss_of_this_process_mb():
    """VmHWM from /proc: unlike ru_maxrss, which Linux carries over from the parent
    across fork and exec, it counts this process alone."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_available(backend):
    try:
        import torch
    except ImportError:
        return False
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count())))
    return backend == "numpy" or torch.cuda.is_available()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3"])
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS children")
    parser.add_argument("--rss-child", nargs=2, metavar=("KIND", "WORKLOAD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        if args.rss_child[0] == "torch":
            torch_available(args.backend)
        return rss_child(*args.rss_child, args.backend)

    kinds = ["ours"] + (["torch"] if not args.no_torch and torch_available(args.backend) else [])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}, backend {args.backend}"
          + (f", torch {__import__('torch').__version__}" if "torch" in kinds else
             ", torch not installed (no ratios)"))
    peak = matmul_rate()
    print(f"float32 matmul (1024^3) on this machine: {peak:.0f} GFLOP/s\n")
    for name in args.workloads:
        if name == "W3":
            results = bench_decoding(WORKLOADS["W2"], kinds, args.backend)
            print(f"W3 greedy decoding, {DECODE_BATCH} x {DECODE_NEW_TOKENS} new tokens, "
                  "source length 64 (best of 3)")
            for (kind, cache), seconds in results.items():
                line = f"  {kind:5s} {'with' if cache else 'without'} KV cache: {seconds:7.3f} s"
                if ("torch", False) in results and kind == "ours":
                    line += f"   torch-without-cache / this = " \
                            f"{results[('torch', False)] / seconds:.2f}x"
                print(line)
            continue
        spec = WORKLOADS[name]
        medians = bench_training(spec, kinds, args.backend)
        tokens = 2 * spec.batch * spec.length
        flops = training_flops(spec)
        print(f"{name} training step (median of 20 after 5 warm-up), {tokens} tokens/step")
        for kind, seconds in medians.items():
            rss = "" if args.no_rss else f", peak RSS {peak_rss_mb(kind, name, args.backend):6.0f} MiB"
            print(f"  {kind:5s} {seconds * 1e3:8.1f} ms  {tokens / seconds:9.0f} tok/s  "
                  f"{flops / seconds / 1e9:6.1f} GFLOP/s ({flops / seconds / 1e9 / peak:4.0%} of "
                  f"matmul peak){rss}")
        if "torch" in medians:
            print(f"  ours/torch time ratio: {medians['ours'] / medians['torch']:.2f}")
        print()


if __name__ == "__main__":
    main()
