"""Are the brackets balanced? An encoder-only classifier (BERT-style) learns to tell.

``([]{})`` is balanced, ``([)]`` is not. Strings hold 2 to 8 pairs of brackets; the
wrong ones are made from right ones by swapping two brackets, or by changing the kind
of one closing bracket, so counting brackets is not enough: whether ``)`` is right
depends on which bracket is still open, which may be far to its left. Self-attention
lets each position look anywhere in the string; the [CLS] position's summary goes
through a pooler to a two-way classifier.

What to watch: the loss starts at ln 2 = 0.69 (a coin toss) and stays near it for a
while before the model finds the structure; held-out accuracy then climbs from the 50%
of guessing to 95% or more. The examples show the model's mistakes first.

Held-out data: a fixed tenth of all strings, picked by a checksum of the string, is
never trained on; 2000 of them (half balanced) are the test set.

    python demos/brackets.py        # about two minutes on a 2-core CPU
"""
import math
import zlib

import common  # first: it limits BLAS threads before NumPy loads
from common import BOS, Vocabulary, on_device, pad

from minitransformer import backend, no_grad
from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.functional import cross_entropy
from minitransformer.nn import EncoderClassifier, EncoderClassifierConfig

PAIRS = {"(": ")", "[": "]", "{": "}"}
VOCABULARY = Vocabulary("".join(PAIRS) + "".join(PAIRS.values()))  # BOS serves as [CLS]


def make_parser():
    parser = common.make_parser(__file__, __doc__, steps=3000, batch_size=64, lr=7e-4,
                                warmup=100, d_model=64, layers=3, heads=4)
    parser.add_argument("--max-pairs", type=int, default=8, help="longest string / 2")
    parser.add_argument("--held-out", type=int, default=2000, help="held-out strings")
    return parser


def is_balanced(text):
    """The classic stack check: every closing bracket closes the last one still open."""
    still_open = []
    for character in text:
        if character in PAIRS:
            still_open.append(character)
        elif not still_open or PAIRS[still_open.pop()] != character:
            return False
    return not still_open


def random_balanced(rng, pairs):
    """A random balanced string of ``pairs`` bracket pairs, nesting at random depths."""
    text, still_open, opens_left = [], [], pairs
    while opens_left or still_open:
        if opens_left and (not still_open or rng.random() < 0.5):
            still_open.append(rng.choice(list(PAIRS)))
            text.append(still_open[-1])
            opens_left -= 1
        else:
            text.append(PAIRS[still_open.pop()])
    return "".join(text)


def corrupt(rng, text):
    """Swap two different brackets, or give one closing bracket another kind."""
    text = list(text)
    if rng.random() < 0.5:
        i, j = rng.choice(len(text), 2, replace=False)
        text[i], text[j] = text[j], text[i]
    else:
        closing = [i for i, c in enumerate(text) if c not in PAIRS]
        i = rng.choice(closing)
        text[i] = rng.choice([c for c in PAIRS.values() if c != text[i]])
    return "".join(text)


def random_example(rng, args, balanced):
    """A string with ``is_balanced(string) == balanced``."""
    while True:
        text = random_balanced(rng, int(rng.integers(2, args.max_pairs + 1)))
        if not balanced:
            text = corrupt(rng, text)
        if is_balanced(text) == balanced:
            return text


def encode(texts):
    """Strings -> (B, 1 + L) ids on the device: [CLS], the brackets, padding."""
    return on_device(pad([[BOS, *VOCABULARY.encode(text)] for text in texts]))


def is_held_out(text):
    """Whether ``text`` is in the fixed tenth of all strings kept for testing, chosen by
    a checksum. Every length and label is split alike: had the test set been the first
    strings drawn, it would have taken all 18 balanced strings of two pairs, leaving
    none of them to train on."""
    return zlib.crc32(text.encode()) % 10 == 0


def make_data(args):
    """Held-out strings and labels (half of them balanced), and a function drawing
    training batches (ids, labels), half balanced, that never contain a held-out string."""
    # balanced strings of n pairs: Catalan(n) nestings, times a kind for every pair
    balanced_strings = sum(math.comb(2 * n, n) // (n + 1) * len(PAIRS) ** n
                           for n in range(2, args.max_pairs + 1))
    if args.held_out > balanced_strings // 40:  # a tenth are held out; take few of those
        raise ValueError(f"brackets: --held-out {args.held_out} is too many for the "
                         f"{balanced_strings} balanced strings; hold out fewer")
    rng = np.random.default_rng(args.seed)

    def draw(balanced, held_out):
        while True:
            text = random_example(rng, args, balanced)
            if is_held_out(text) == held_out:
                return text

    test = {}
    while len(test) < args.held_out:
        balanced = len(test) % 2 == 0
        test.setdefault(draw(balanced, held_out=True), balanced)

    def next_batch():
        labels = rng.permutation(np.arange(args.batch_size) % 2)
        texts = [draw(bool(label), held_out=False) for label in labels]
        return encode(texts), on_device(labels)

    return list(test), [int(label) for label in test.values()], next_batch


def classify(model, texts, batch_size=500):
    """Predicted labels (1 = balanced) of ``texts``."""
    predicted = []
    with no_grad():
        for i in range(0, len(texts), batch_size):
            logits = model(encode(texts[i:i + batch_size]))
            predicted += backend.to_numpy(logits.data.argmax(axis=-1)).tolist()
    return predicted


def accuracy(predicted, labels):
    return sum(p == t for p, t in zip(predicted, labels)) / len(labels)


def classifier_loss(model, batch):
    ids, labels = batch
    return cross_entropy(model(ids), labels)


def main(argv=None):
    args = common.start(make_parser(), argv)
    texts, labels, next_batch = make_data(args)
    model = EncoderClassifier(EncoderClassifierConfig(
        vocab_size=len(VOCABULARY), max_len=2 * args.max_pairs + 1, type_vocab_size=0,
        d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
        d_ff=4 * args.d_model, dropout=0.0, num_classes=2))
    common.describe(model)
    common.train(model, args, next_batch, classifier_loss, lambda model: {
        "accuracy": accuracy(classify(model, texts[:500]), labels[:500])})
    model.eval()
    predicted = classify(model, texts)
    held_out_accuracy = accuracy(predicted, labels)
    print(f"held-out accuracy: {held_out_accuracy:.2%} of {len(texts)} strings "
          f"(guessing: 50%)")
    names = {0: "unbalanced", 1: "balanced"}
    common.print_examples(texts, [names[p] for p in predicted], [names[t] for t in labels],
                          count=8)
    return common.finish(args, accuracy=round(held_out_accuracy, 4))


if __name__ == "__main__":
    main()
