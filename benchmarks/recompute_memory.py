"""Peak memory of one W2 training step (see bench_transformer.py) with and without
activation recomputation (``TransformerConfig(recompute=True)``).

    python benchmarks/recompute_memory.py

Each setting runs in a fresh process: two warm-up steps (so Adam's moments exist), then
one measured step. Reported: the peak of memory allocated during the step beyond what
was allocated before it (tracemalloc; NumPy reports its buffers to it), which is the
activations, gradients and temporaries; the process's peak RSS (VmHWM), which adds the
interpreter, the parameters and Adam's state; and the step time.
"""
import os
import subprocess
import sys
import time
import tracemalloc

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_transformer import (WORKLOADS, OurRunner, device_batch, make_batch,  # noqa: E402
                               peak_rss_of_this_process_mb)


def child(recompute):
    spec = WORKLOADS["W2"]
    runner = OurRunner(spec, recompute=recompute)
    batch = device_batch("ours", make_batch(spec))
    for _ in range(2):
        runner.train_step(*batch)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    runner.train_step(*batch)
    seconds = time.perf_counter() - started
    step_peak = (tracemalloc.get_traced_memory()[1] - before) / 2 ** 20
    tracemalloc.stop()
    print(step_peak, peak_rss_of_this_process_mb(), seconds)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child(sys.argv[2] == "1")
    print("W2 training step (d_model 256, 8 heads, 3+3 layers, batch 32, length 64, "
          "dropout 0.1), float32, NumPy, one BLAS thread\n")
    print("| recompute | step peak (tracemalloc) | process peak RSS | step time |\n"
          "|---|---|---|---|")
    rows = {}
    for recompute in (False, True):
        out = subprocess.run([sys.executable, __file__, "--child", str(int(recompute))],
                             capture_output=True, text=True, check=True)
        rows[recompute] = peak, rss, seconds = tuple(map(float, out.stdout.split()))
        print(f"| {'yes' if recompute else 'no'} | {peak:.0f} MiB | {rss:.0f} MiB | "
              f"{seconds * 1e3:.0f} ms |", flush=True)
    (p0, r0, s0), (p1, r1, s1) = rows[False], rows[True]
    print(f"\nwith recompute: step peak {1 - p1 / p0:.0%} lower, peak RSS {1 - r1 / r0:.0%} "
          f"lower, step {s1 / s0:.2f}x the time")


if __name__ == "__main__":
    main()
