"""NER helpers: word -> word-piece label alignment (first piece labelled, the rest and
[CLS]/[SEP] ignored) and exact-span BIO precision/recall/F1 on hand-written cases."""
import pytest

from minitransformer.pretrained import (WordPieceTokenizer, align_labels, bio_spans,
                                        first_pieces, span_f1)

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "ok", "##on", "##k", "##wo", "met",
         "in", "paris", "."]


def test_align_labels_labels_first_pieces_only():
    tokenizer = WordPieceTokenizer(VOCAB)
    ids, labels = align_labels(tokenizer, ["Okonkwo", "met", "Zed", "in", "Paris", "."],
                               [1, 0, 1, 0, 3, 0])
    assert ids == [2, 5, 6, 7, 8, 9, 1, 10, 11, 12, 3]  # Zed is [UNK]
    assert labels == [-100, 1, -100, -100, -100, 0, 1, 0, 3, 0, -100]
    assert first_pieces(range(len(ids)), labels) == [1, 5, 6, 7, 8, 9]  # one per word


def test_align_labels_truncates_like_encode_and_checks_lengths():
    tokenizer = WordPieceTokenizer(VOCAB, max_length=4)
    ids, labels = align_labels(tokenizer, ["Okonkwo", "met"], [1, 0])
    assert ids == tokenizer.encode("Okonkwo met") == [2, 5, 6, 3]
    assert labels == [-100, 1, -100, -100]
    with pytest.raises(ValueError, match="2 words but 1 labels; give one label per word"):
        align_labels(tokenizer, ["a", "b"], [0])


@pytest.mark.parametrize("tags, spans", [
    (["O", "O"], set()),
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    (["B-PER", "B-PER", "I-PER"], {("PER", 0, 1), ("PER", 1, 3)}),
    (["I-ORG", "I-ORG", "O"], {("ORG", 0, 2)}),              # conlleval: I starts a span
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),
    (["O", "B-DATE", "I-DATE", "I-DATE"], {("DATE", 1, 4)}),  # runs to the end
])
def test_bio_spans(tags, spans):
    assert bio_spans(tags) == spans


def test_span_f1_counts_exact_spans_only():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "O", "O", "B-LOC"],  # PER cut short: wrong; LOC right
                 ["B-ORG", "B-PER"]]            # ORG right; PER spurious
    scores = span_f1(true, predicted)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert span_f1(true, true) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert span_f1([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="a sequence has 2 true tags but 1 predicted"):
        span_f1([["O", "O"]], [["O"]])
