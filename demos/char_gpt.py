"""A character-level GPT trained on the Python language reference that ships with Python.

Every Python install carries the text behind ``help("for")``, ``help("assert")`` and
friends in ``pydoc_data.topics``: about 79 topics, 460,000 characters of technical
English with code snippets. A small decoder-only Transformer (``GPT``) learns to predict
each next character from the 128 before it.

What to watch: the validation loss in nats per character, next to the baseline of a
unigram model (the character frequencies of the training text, no context at all). A
model that learned nothing scores the baseline; one that learned spelling, words and
layout scores far below it. Then the samples: text written one character at a time by
``generate.sample`` (temperature 0.8, top-k 10), which should look like the reference's
English and code.

Held-out data: every tenth topic in alphabetical order (``assert``, ``bitwise``, ...,
about 6% of the text) is validation text; the model never trains on those topics, nor
is it scored on the paragraphs that they share with training topics.

    python demos/char_gpt.py        # about five minutes on a 2-core CPU
"""
import math

import common  # first: it limits BLAS threads before NumPy loads
from common import Vocabulary, on_device

from minitransformer import backend, generate, no_grad
from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.functional import cross_entropy
from minitransformer.nn import GPT, GPTConfig

PROMPTS = ["The ", "A class ", "   >>> "]


def make_parser():
    parser = common.make_parser(__file__, __doc__, steps=650, batch_size=32, lr=3e-3,
                                warmup=50, d_model=128, layers=3, heads=4)
    parser.add_argument("--context", type=int, default=128,
                        help="characters of context (default %(default)s)")
    parser.add_argument("--sample-length", type=int, default=200,
                        help="characters per sample (default %(default)s)")
    parser.add_argument("--eval-windows", type=int, default=None,
                        help="validation windows to score (default: the whole text)")
    return parser


def load_corpus():
    """(training text, validation text): the topics, split by topic. Topics share
    sections (``help("else")`` prints the text of ``help("if")``), so a paragraph of a
    held-out topic that also appears in a training topic is left out of validation."""
    from pydoc_data.topics import topics  # the standard library's help() texts
    names = sorted(topics)
    held_out = names[::10]
    train = "\n\n".join(topics[name].strip() for name in names if name not in held_out)
    seen = set(train.split("\n\n"))
    valid = "\n\n".join(paragraph for name in held_out
                         for paragraph in topics[name].strip().split("\n\n")
                         if paragraph not in seen)
    return train, valid


def unigram_cross_entropy(train_ids, valid_ids, vocab_size):
    """Nats per character of the best context-free model: character frequencies of the
    training text (plus one, so no character has probability 0) scored on ``valid_ids``."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    return float(-np.log(counts / counts.sum())[valid_ids].mean())


def windows(ids, length):
    """Consecutive, non-overlapping (length + 1)-character windows (the last character of
    one is the first of the next), so every character after the first is predicted once."""
    count = (len(ids) - 1) // length
    return np.stack([ids[i * length:i * length + length + 1] for i in range(count)])


def lm_loss(model, batch):
    """Predict every character of a window from those before it."""
    return cross_entropy(model(batch[:, :-1]), batch[:, 1:])


def validation_loss(model, valid_windows, batch_size):
    """Mean nats per character over ``valid_windows`` (in batches, all the same length)."""
    total = 0.0
    with no_grad():
        for i in range(0, len(valid_windows), batch_size):
            batch = valid_windows[i:i + batch_size]
            total += lm_loss(model, on_device(batch)).item() * len(batch)
    return total / len(valid_windows)


def main(argv=None):
    args = common.start(make_parser(), argv)
    train_text, valid_text = load_corpus()
    vocabulary = Vocabulary(train_text + valid_text, specials=False)  # every character
    train_ids = np.asarray(vocabulary.encode(train_text))
    valid_ids = np.asarray(vocabulary.encode(valid_text))
    valid_windows = windows(valid_ids, args.context)[:args.eval_windows]
    # the baseline scores exactly the characters that the model will predict
    baseline = unigram_cross_entropy(train_ids, valid_windows[:, 1:].ravel(), len(vocabulary))
    print(f"corpus: {len(train_ids):,} training and {len(valid_ids):,} validation characters, "
          f"{len(vocabulary)} distinct; unigram baseline {baseline:.3f} nats/char")

    rng = np.random.default_rng(args.seed)

    def next_batch():  # random windows of the training text
        starts = rng.integers(0, len(train_ids) - args.context - 1, args.batch_size)
        return on_device(np.stack([train_ids[s:s + args.context + 1] for s in starts]))

    model = GPT(GPTConfig(vocab_size=len(vocabulary), max_len=args.context,
                          d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
                          dropout=0.0))
    common.describe(model)
    progress_windows = valid_windows[:64]  # a sample, to keep progress lines cheap
    common.train(model, args, next_batch, lm_loss,
                 lambda model: {"valid_loss": validation_loss(model, progress_windows, 32)})

    model.eval()
    loss = validation_loss(model, valid_windows, args.batch_size)
    print(f"validation loss {loss:.3f} nats/char ({loss / math.log(2):.2f} bits) over "
          f"{len(valid_windows) * args.context:,} characters; unigram baseline "
          f"{baseline:.3f} nats/char ({baseline / math.log(2):.2f} bits)")
    print("samples (temperature 0.8, top-k 10):")
    for prompt in PROMPTS:
        tokens = np.asarray([vocabulary.encode(prompt)])
        out = generate.sample(model, tokens, args.sample_length, temperature=0.8, top_k=10)
        print("-" * 72 + "\n" + vocabulary.decode(backend.to_numpy(out)[0].tolist()))
    print("-" * 72)
    return common.finish(args, valid_loss=round(loss, 4), unigram_baseline=round(baseline, 4))


if __name__ == "__main__":
    main()
