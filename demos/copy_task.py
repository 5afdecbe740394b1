"""Copy or reverse a random sequence with the encoder-decoder Transformer.

The first task of The Annotated Transformer. The source is a random string of 3 to 10
digits, the target the same string backwards (``--task reverse``, the default) or as it
is (``--task copy``). Nothing but attention can solve it: output position i must find
source position n - 1 - i (or i), so the decoder learns to look at exactly one source
token per step. ``attention_maps.py`` draws that look as an anti-diagonal.

What to watch: the loss falls from about 5.6 towards 0 (at first it is above ln(13) =
2.6, a uniform guess: the fresh tied output layer predicts the token just read; see
docs/walkthrough.md, section 8); the progress lines show the exact-match accuracy
(every token right, and the end in the right place) on held-out sequences, decoded
greedily one token at a time, climbing to 99-100%.

Held-out data: 1000 sequences are drawn first; training batches are drawn fresh at
every step, and a drawn sequence that is in the held-out set is replaced, so the model
is scored only on sequences it never trained on.

    python demos/copy_task.py                  # about a minute on a 2-core CPU
    python demos/copy_task.py --task copy --steps 300
"""
import common  # first: it limits BLAS threads before NumPy loads
from common import Vocabulary, seq2seq_batch, seq2seq_loss

from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.nn import Transformer, TransformerConfig

VOCABULARY = Vocabulary("0123456789")


def make_parser(path=__file__, doc=__doc__):
    """The flags of this demo (``attention_maps.py`` adds its own)."""
    parser = common.make_parser(path, doc, steps=600, batch_size=64, lr=2e-3, warmup=100,
                                d_model=64, layers=2, heads=4)
    parser.add_argument("--task", choices=["reverse", "copy"], default="reverse")
    parser.add_argument("--min-len", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=10)
    parser.add_argument("--held-out", type=int, default=1000, help="held-out sequences")
    return parser


def random_sequence(rng, args):
    length = rng.integers(args.min_len, args.max_len + 1)
    return rng.integers(3, len(VOCABULARY), length).tolist()  # ids of the digits


def target_of(sequence, task):
    return sequence[::-1] if task == "reverse" else sequence


def build_model(args):
    return Transformer(TransformerConfig(
        src_vocab_size=len(VOCABULARY), tgt_vocab_size=len(VOCABULARY),
        d_model=args.d_model, num_heads=args.heads, num_encoder_layers=args.layers,
        num_decoder_layers=args.layers, d_ff=4 * args.d_model, dropout=0.0,
        max_len=args.max_len + 2, share_embeddings=True))


def make_data(args):
    """The held-out sequences, their targets, and a function drawing training batches
    (src, tgt) in which no held-out sequence appears."""
    possible = sum(10 ** n for n in range(args.min_len, args.max_len + 1))
    if args.held_out > possible // 2:
        raise ValueError(f"copy_task: --held-out {args.held_out} leaves too few of the "
                         f"{possible} possible sequences to train on; hold out fewer")
    rng = np.random.default_rng(args.seed)
    held_out, unseen = [], set()
    while len(held_out) < args.held_out:
        sequence = random_sequence(rng, args)
        if tuple(sequence) not in unseen:
            held_out.append(sequence)
            unseen.add(tuple(sequence))

    def next_batch():
        sources = []
        while len(sources) < args.batch_size:
            sequence = random_sequence(rng, args)
            if tuple(sequence) not in unseen:
                sources.append(sequence)
        return seq2seq_batch(sources, [target_of(s, args.task) for s in sources])

    return held_out, [target_of(s, args.task) for s in held_out], next_batch


def train_model(args):
    """Build and train a model as the command line says; returns it with the held-out
    sources and targets (``attention_maps.py`` reuses this)."""
    held_out, targets, next_batch = make_data(args)
    model = build_model(args)
    common.describe(model)
    common.train(model, args, next_batch, seq2seq_loss,
                 common.exact_match_eval(held_out, targets, args.max_len + 1))
    return model, held_out, targets


def main(argv=None):
    args = common.start(make_parser(), argv)
    model, held_out, targets = train_model(args)
    accuracy = common.report_translations(model, held_out, targets, args.max_len + 1,
                                          VOCABULARY)
    return common.finish(args, exact_match=round(accuracy, 4))


if __name__ == "__main__":
    main()
