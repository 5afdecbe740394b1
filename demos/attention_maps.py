"""Look inside a trained Transformer: heat maps of its attention weights, as PNG files.

Trains the reverse task of ``copy_task.py`` (about a minute; or loads it from
``--checkpoint``), reverses one sequence, and draws every attention layer's weights for
it, one panel per head, each row a query and each column a key it may attend to:

  encoder_layer<i>.png        the source attending to itself
  decoder_layer<i>_self.png   the output attending to what it has written (causal:
                              nothing above the diagonal)
  decoder_layer<i>_cross.png  the output attending to the source

What to look for: in the cross-attention of the last decoder layer, writing the k-th
output digit looks at the k-th digit from the end of the source, an anti-diagonal. It
is where the model reads the digit it is about to write. (``--task copy`` gives a
diagonal instead.) Heads of earlier layers often attend by position or by content.

    pip install -e ".[plot]"                     # matplotlib, only this demo needs it
    python demos/attention_maps.py               # writes runs/attention/*.png
    python demos/attention_maps.py --checkpoint runs/reverse.npz --text 31415926
"""
import os
import sys

import common  # first: it limits BLAS threads before NumPy loads
import copy_task
from copy_task import VOCABULARY

from minitransformer import backend, generate, load_checkpoint, no_grad, save_checkpoint
from minitransformer.backend import host as np  # NumPy, for the data made on the host


def make_parser():
    parser = copy_task.make_parser(__file__, __doc__)
    parser.add_argument("--out", default="runs/attention", help="folder for the PNG files")
    parser.add_argument("--text", default="4815162342", help="the digits to reverse")
    parser.add_argument("--checkpoint", help="load the model from this file if it exists; "
                        "else train it and save it there")
    return parser


def import_pyplot():
    """matplotlib's pyplot, drawing to files only; or exit with how to install it."""
    try:
        import matplotlib
    except ImportError:
        sys.exit("attention_maps.py draws with matplotlib, which is not installed; "
                 "install it with: pip install -e \".[plot]\"  (or: pip install matplotlib)")
    matplotlib.use("Agg")  # no window, no display needed
    import matplotlib.pyplot as pyplot
    return pyplot


def trained_model(args):
    """(model, task): the model of ``--checkpoint`` if that file exists (built with the
    same size flags), else a freshly trained one, saved to ``--checkpoint`` if given."""
    if args.checkpoint and os.path.exists(args.checkpoint):
        model = copy_task.build_model(args)
        saved = load_checkpoint(args.checkpoint, model)
        task = saved["extra"]["task"]
        print(f"loaded {args.checkpoint}: the {task} task after {saved['step']} steps")
        return model, task
    model, _, _ = copy_task.train_model(args)
    if args.checkpoint:
        save_checkpoint(args.checkpoint, model, step=args.steps, config=model.config,
                        extra={"task": args.task})
        print(f"saved {args.checkpoint}")
    return model, args.task


def attend(model, text):
    """Decode ``text`` greedily, then run the model once on its own output so that every
    attention layer keeps its weights for the whole sequence. Returns the decoded ids:
    BOS, the output, EOS (if the model wrote one)."""
    src = np.asarray([VOCABULARY.encode(text)])
    decoded = generate.greedy(model, np.asarray([[common.BOS]]), len(text) + 1, src=src,
                              eos_id=common.EOS)
    model.eval()
    with no_grad():
        model(common.on_device(src), decoded[:, :-1])
    return backend.to_numpy(decoded)[0].tolist()


def draw(pyplot, weights, rows, columns, title, path):
    """One figure: a heat map per head of ``weights`` (H, Lq, Lk), labelled with tokens."""
    heads = len(weights)
    figure, axes = pyplot.subplots(1, heads, figsize=(2.2 + 2.6 * heads, 3.4),
                                   squeeze=False, constrained_layout=True)
    for head, axis in enumerate(axes[0]):
        image = axis.imshow(weights[head], cmap="viridis", vmin=0.0, vmax=1.0)
        axis.set_title(f"head {head + 1}", fontsize=10)
        axis.set_xticks(range(len(columns)), columns, fontsize=8)
        axis.set_yticks(range(len(rows)), rows if head == 0 else [], fontsize=8)
        axis.set_xlabel("key (attended to)", fontsize=8)
    axes[0][0].set_ylabel("query", fontsize=8)
    figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="weight")
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    pyplot.close(figure)
    print(f"wrote {path}")


def main(argv=None):
    pyplot = import_pyplot()
    args = common.start(make_parser(), argv)
    if not (set(args.text) <= set("0123456789") and
            args.min_len <= len(args.text) <= args.max_len):
        sys.exit(f"attention_maps.py: --text must be {args.min_len} to {args.max_len} "
                 f"digits, got {args.text!r}")
    model, task = trained_model(args)
    ids = attend(model, args.text)
    output = VOCABULARY.decode(ids)
    print(f"{task}: {args.text!r} -> {output!r}")

    source = list(args.text)
    tokens = [VOCABULARY.symbols[i] for i in ids]  # <s>, the output digits, </s>
    read = tokens[:-1]  # decoder position i reads token i and writes token i + 1
    rows = [f"writes {token}" for token in tokens[1:]]
    os.makedirs(args.out, exist_ok=True)
    paths = []
    for i, layer in enumerate(model.encoder.layers):
        paths.append(os.path.join(args.out, f"encoder_layer{i + 1}.png"))
        draw(pyplot, layer.self_attn.attention_weights.numpy()[0], source, source,
             f"Encoder layer {i + 1}: source attending to source ({args.text!r})", paths[-1])
    for i, layer in enumerate(model.decoder.layers):
        paths.append(os.path.join(args.out, f"decoder_layer{i + 1}_self.png"))
        draw(pyplot, layer.self_attn.attention_weights.numpy()[0], rows, read,
             f"Decoder layer {i + 1} self-attention: output attending to the output so far",
             paths[-1])
        paths.append(os.path.join(args.out, f"decoder_layer{i + 1}_cross.png"))
        draw(pyplot, layer.cross_attn.attention_weights.numpy()[0], rows, source,
             f"Decoder layer {i + 1} cross-attention: output attending to the source "
             f"({task})", paths[-1])
    return common.finish(args, images=len(paths), output=output)


if __name__ == "__main__":
    main()
