"""Translate dates written by people into ISO 8601 with the encoder-decoder Transformer.

A small translation task whose data the standard library writes for us: a date such as
2021-03-03 is rendered in one of ten styles ("3rd of March 2021", "Wednesday, March 3,
2021", "03.03.2021", "3 MAR 2021", ...) and the model, reading characters, must write
"2021-03-03". It has to learn month names and their abbreviations, ordinal suffixes,
which number is the day in each style, and to pad single digits with a zero.

What to watch: the loss drops fast once the model can copy the year, then more slowly
while it learns months and days; held-out exact match (the whole date right) passes
98% near the end. The examples show wrong answers first, if there are any.

Held-out data: 1000 calendar days between 1900 and 2099 are set aside, each rendered
in one random style; training draws only from the other 72,000 days, so every
held-out answer is a date the model never wrote during training.

    python demos/date_translation.py   # about two and a half minutes on a 2-core CPU
"""
import calendar
import datetime

import common  # first: it limits BLAS threads before NumPy loads
from common import Vocabulary, seq2seq_batch, seq2seq_loss

from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.nn import Transformer, TransformerConfig

FIRST_DAY, LAST_DAY = datetime.date(1900, 1, 1), datetime.date(2099, 12, 31)


def ordinal(day):
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def styles(date):
    """The ways a person might write ``date``."""
    d, y = date.day, date.year
    month, short = calendar.month_name[date.month], calendar.month_abbr[date.month]
    weekday = calendar.day_name[date.weekday()]
    return [f"{ordinal(d)} of {month} {y}",
            f"{month} {d}, {y}",
            f"{d} {month} {y}",
            f"{weekday}, {month} {d}, {y}",
            f"{short} {d} {y}",
            f"{d} {short.upper()} {y}",
            f"{d:02}.{date.month:02}.{y}",
            f"{y}/{date.month}/{d}",
            f"the {ordinal(d)} of {month.lower()}, {y}",
            f"{weekday[:3]} {ordinal(d)} {short} {y}"]


# Every character any style can write: one year has every month, weekday and day of
# the month; the digits cover every year.
VOCABULARY = Vocabulary("0123456789-" + "".join(
    "".join(styles(datetime.date(2021, 1, 1) + datetime.timedelta(days=n))) for n in range(365)))


def make_parser():
    parser = common.make_parser(__file__, __doc__, steps=1500, batch_size=64, lr=2e-3,
                                warmup=150, d_model=64, layers=2, heads=4)
    parser.add_argument("--held-out", type=int, default=1000, help="held-out days")
    return parser


def make_data(args):
    """Held-out sources and targets (id lists), and a function drawing training batches
    from the remaining days."""
    rng = np.random.default_rng(args.seed)
    days = rng.permutation((LAST_DAY - FIRST_DAY).days + 1)
    held_out_days, training_days = days[:args.held_out], days[args.held_out:]

    def example(day):
        date = FIRST_DAY + datetime.timedelta(days=int(day))
        written = str(rng.choice(styles(date)))
        return VOCABULARY.encode(written), VOCABULARY.encode(date.isoformat())

    held_out = [example(day) for day in held_out_days]

    def next_batch():
        batch = [example(day) for day in rng.choice(training_days, args.batch_size)]
        return seq2seq_batch(*zip(*batch))

    sources, targets = map(list, zip(*held_out))
    return sources, targets, next_batch


def build_model(args):
    return Transformer(TransformerConfig(
        src_vocab_size=len(VOCABULARY), tgt_vocab_size=len(VOCABULARY),
        d_model=args.d_model, num_heads=args.heads, num_encoder_layers=args.layers,
        num_decoder_layers=args.layers, d_ff=4 * args.d_model, dropout=0.0, max_len=64,
        share_embeddings=True))


def main(argv=None):
    args = common.start(make_parser(), argv)
    sources, targets, next_batch = make_data(args)
    answer_length = len("2021-03-03") + 1  # and EOS
    model = build_model(args)
    common.describe(model)
    common.train(model, args, next_batch, seq2seq_loss,
                 common.exact_match_eval(sources, targets, answer_length))
    accuracy = common.report_translations(model, sources, targets, answer_length,
                                          VOCABULARY, count=8)
    return common.finish(args, exact_match=round(accuracy, 4))


if __name__ == "__main__":
    main()
