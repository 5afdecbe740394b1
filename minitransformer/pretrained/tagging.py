"""Tagging words with a word-piece model (named-entity recognition, as BERT does it).

Labels belong to words, the model sees word pieces: "Okonkwo" may be "ok", "##on",
"##k", "##wo". ``align_labels`` gives each word's label to its first piece and
``ignore_index`` to the rest and to [CLS]/[SEP], so the loss counts every word once;
predictions are read back from the first pieces the same way (``first_pieces``).

Entities are scored as the CoNLL evaluation scores them: exact spans. In BIO tags a span
starts at ``B-X`` and runs over the ``I-X`` after it; an ``I-X`` that follows neither
``B-X`` nor ``I-X`` starts a span of its own (the conlleval rule). A predicted span is
right only when its type, start and end all match.
"""


def align_labels(tokenizer, words, labels, ignore_index=-100):
    """words (list of str), labels (one int per word) -> (ids, piece_labels), two lists
    as long as ``[CLS] pieces [SEP]``, truncated as ``tokenizer.encode`` truncates."""
    if len(words) != len(labels):
        raise ValueError(f"align_labels: {len(words)} words but {len(labels)} labels; "
                         f"give one label per word")
    ids, piece_labels = [tokenizer.cls_id], [ignore_index]
    for word, label in zip(words, labels):
        pieces = [tokenizer.ids[p] for p in tokenizer.tokenize(word)] or [tokenizer.unk_id]
        ids += pieces
        piece_labels += [label] + [ignore_index] * (len(pieces) - 1)
    keep = tokenizer.max_length - 1
    return ids[:keep] + [tokenizer.sep_id], piece_labels[:keep] + [ignore_index]


def first_pieces(piece_values, piece_labels, ignore_index=-100):
    """The values (e.g. predicted tags) at the positions whose label is not ignored:
    one per word, in order."""
    return [v for v, label in zip(piece_values, piece_labels) if label != ignore_index]


def bio_spans(tags):
    """The set of entity spans (type, start, end exclusive) in a list of BIO tags."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, tag_kind = tag.partition("-")
        if start is not None and (prefix != "I" or tag_kind != kind):
            spans.add((kind, start, i))
            start = None
        if prefix == "B" or (prefix == "I" and start is None):
            start, kind = i, tag_kind
    return spans


def span_f1(true_sequences, predicted_sequences):
    """Micro-averaged precision, recall and F1 over exact entity spans, from lists of
    BIO tag sequences. Returns a dict; with no spans to find or none predicted, the
    undefined ratios are 0."""
    if len(true_sequences) != len(predicted_sequences):
        raise ValueError(f"span_f1: {len(true_sequences)} true sequences but "
                         f"{len(predicted_sequences)} predicted")
    correct = found = wanted = 0
    for true, predicted in zip(true_sequences, predicted_sequences):
        if len(true) != len(predicted):
            raise ValueError(f"span_f1: a sequence has {len(true)} true tags but "
                             f"{len(predicted)} predicted")
        true_spans, predicted_spans = bio_spans(true), bio_spans(predicted)
        correct += len(true_spans & predicted_spans)
        found, wanted = found + len(predicted_spans), wanted + len(true_spans)
    precision = correct / found if found else 0.0
    recall = correct / wanted if wanted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
