"""Which position schemes extrapolate? The same small GPT, six ways of telling it where
each character is, trained on one context length and scored on longer ones.

The six schemes (``GPTConfig.positions``):
  learned     a trained vector per position, added to the embedding (GPT-2); it has no
              vector past the trained length, so it cannot run longer at all
  sinusoidal  the fixed sinusoids of "Attention Is All You Need", added likewise
  rope        queries and keys rotated by their position (RoFormer, LLaMA)
  alibi       a fixed penalty on the scores, growing with the distance (Press et al.)
  t5          a learned bias per head and log-spaced distance bucket (T5)
  none        no positions at all: only the causal mask says how many came before

Each model trains on windows of ``--context`` characters of the Python reference
(``pydoc_data.topics``, as ``char_gpt.py``; every tenth topic held out) with the same
seed, data order and recipe. Then every held-out character is predicted three times:
from windows of 1x, 2x and 4x the trained length. The characters scored are the same
in each column; only how far back the model may look changes. More context should help,
or at least not hurt: a scheme whose loss rises with the window fails to extrapolate.

Prints a table of held-out nats per character and saves a plot (with matplotlib) to
``runs/position_extrapolation.png``.

    python demos/position_extrapolation.py     # 3.7 minutes on a busy 2-core CPU
"""
import os

import common  # first: it limits BLAS threads before NumPy loads
from char_gpt import load_corpus, lm_loss, validation_loss
from common import Vocabulary, on_device

from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.nn import GPT, GPTConfig
from minitransformer.nn.models import GPT_POSITIONS

SCALES = (1, 2, 4)


def make_parser():
    parser = common.make_parser(__file__, __doc__, steps=300, batch_size=32, lr=3e-3,
                                warmup=30, d_model=64, layers=2, heads=4)
    parser.add_argument("--context", type=int, default=64,
                        help="characters of context in training (default %(default)s)")
    parser.add_argument("--positions", nargs="+", default=list(GPT_POSITIONS),
                        choices=GPT_POSITIONS, help="schemes to compare (default: all)")
    parser.add_argument("--eval-chars", type=int, default=None,
                        help="held-out characters to score (default: all of them)")
    parser.add_argument("--plot", default="runs/position_extrapolation.png",
                        help="where to save the plot (default %(default)s)")
    return parser


def held_out_windows(valid_ids, context, limit):
    """{scale: (N, scale * context + 1) windows}: the same characters, cut into windows
    of each length (the last character of one window is the first of the next)."""
    longest = max(SCALES) * context
    count = min(len(valid_ids) - 1, limit or len(valid_ids)) // longest
    inputs = valid_ids[:count * longest].reshape(-1, longest)
    targets = valid_ids[1:count * longest + 1].reshape(-1, longest)
    return {scale: np.concatenate([inputs.reshape(-1, scale * context),
                                   targets.reshape(-1, scale * context)[:, -1:]], axis=1)
            for scale in SCALES}


def train_and_score(positions, args, train_ids, vocab_size, valid):
    """Train a GPT with ``positions``; return {scale: held-out loss, or None}."""
    common.mt.manual_seed(args.seed)  # the same weights, where the schemes share them
    rng = np.random.default_rng(args.seed)  # ... and the same batches

    def next_batch():
        starts = rng.integers(0, len(train_ids) - args.context - 1, args.batch_size)
        return on_device(np.stack([train_ids[s:s + args.context + 1] for s in starts]))

    model = GPT(GPTConfig(vocab_size=vocab_size, max_len=args.context, d_model=args.d_model,
                          num_heads=args.heads, num_layers=args.layers, dropout=0.0,
                          positions=positions))
    print(f"--- positions={positions}: {model.num_parameters():,} parameters")
    progress = valid[1][:32]
    common.train(model, args, next_batch, lm_loss,
                 lambda model: {"valid_loss": validation_loss(model, progress, 32)})
    model.eval()
    return {scale: None if positions == "learned" and scale > 1 else
            validation_loss(model, windows, max(args.batch_size // scale, 1))
            for scale, windows in valid.items()}


def print_table(results, context):
    header = "positions   " + "".join(f"{f'{s}x = {s * context}':>14}" for s in SCALES)
    print(header + "\n" + "-" * len(header))
    for positions, losses in results.items():
        cells = "".join(f"{'n/a' if losses[s] is None else f'{losses[s]:.3f}':>14}"
                        for s in SCALES)
        print(f"{positions:<12}{cells}")


def plot(results, args):
    """A line per scheme: held-out loss against the evaluation length."""
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is not installed (pip install -e \".[plot]\")")
        return
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as pyplot
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for positions, losses in results.items():
        scored = [s for s in SCALES if losses[s] is not None]
        axes.plot([s * args.context for s in scored], [losses[s] for s in scored], "o-",
                  label=positions)
    axes.axvline(args.context, color="grey", linestyle=":", label="trained length")
    axes.set_xscale("log", base=2)
    axes.minorticks_off()
    axes.set(xticks=[s * args.context for s in SCALES],
             xticklabels=[s * args.context for s in SCALES], xlabel="evaluation window",
             ylabel="held-out loss (nats/char)", title="Which positions extrapolate?")
    axes.legend()
    os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
    figure.savefig(args.plot, dpi=120, bbox_inches="tight")
    pyplot.close(figure)
    print(f"plot saved to {args.plot}")


def main(argv=None):
    args = common.start(make_parser(), argv)
    train_text, valid_text = load_corpus()
    vocabulary = Vocabulary(train_text + valid_text, specials=False)
    train_ids = np.asarray(vocabulary.encode(train_text))
    valid = held_out_windows(np.asarray(vocabulary.encode(valid_text)), args.context,
                             args.eval_chars)
    print(f"corpus: {len(train_ids):,} training characters; "
          f"{valid[1].shape[0] * args.context:,} held-out characters scored at each length")
    results = {positions: train_and_score(positions, args, train_ids, len(vocabulary), valid)
               for positions in args.positions}
    print("\nheld-out loss (nats/char) by evaluation window; trained on "
          f"{args.context} characters")
    print_table(results, args.context)
    plot(results, args)
    return common.finish(args, **{f"{p}_{s}x": None if loss is None else round(loss, 4)
                                  for p, losses in results.items()
                                  for s, loss in losses.items()})


if __name__ == "__main__":
    main()
