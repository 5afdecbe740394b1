"""BERT's WordPiece tokenizer, in plain Python, from a ``vocab.txt`` (one token a line).

Text becomes token ids in two stages, exactly as Hugging Face's fast ``BertTokenizer``
(the one sentence-transformers uses) does it:

1. Basic tokenization: drop control characters, turn every kind of whitespace into a
   space, put spaces around CJK ideographs (Chinese text has no spaces, so each ideograph
   is a word), strip accents ("café" -> "cafe"), lower-case, then split on spaces and
   around every punctuation character ("don't!" -> "don", "'", "t", "!").
2. WordPiece: each word is cut greedily into the longest vocabulary pieces from the
   left; pieces after the first carry a ``##`` prefix ("unaffable" -> "una", "##ffa",
   "##ble"). A word that cannot be cut this way becomes ``[UNK]`` as a whole.

Special tokens written in the text ("[MASK]", "[SEP]", ...) are kept whole, as in
Hugging Face. The ids are then framed as ``[CLS] ... [SEP]`` and truncated to
``max_length``.

Character classes come from Python's ``unicodedata``; the reference's tables are older,
so a character that a recent Unicode version added (such as U+061D, punctuation since
Unicode 14) can split differently there. No other difference is known: the ids agree
with the reference's on every string of tests/fixtures/minilm_reference.npz.
"""
import functools
import re
import unicodedata

from .. import backend

# Blocks of CJK ideographs, as in the Hugging Face ``tokenizers`` BertNormalizer. Only
# ideographs become one-character words; Hangul and kana are tokenized like other letters.
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(char):
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_control(char):
    """Control, format and private-use characters (Unicode Cc, Cf, Co), except the
    common whitespace. Unassigned code points (Cn) stay, as in the reference, and end
    up as [UNK]."""
    return char not in "\t\n\r" and unicodedata.category(char) in ("Cc", "Cf", "Co")


# Texts reuse a small set of characters, so the per-character rules below are cached:
# tokenizing then costs a dictionary lookup per character.
@functools.lru_cache(maxsize=8192)
def _clean(char):
    """One character as basic tokenization rewrites it: dropped (""), whitespace made a
    space, a CJK ideograph made a word of its own, anything else kept."""
    if char == "\ufffd" or _is_control(char):  # U+FFFD stands for undecodable bytes
        return ""
    if char.isspace():
        return " "
    return f" {char} " if _is_cjk(char) else char


@functools.lru_cache(maxsize=8192)
def _is_punctuation(char):
    """Unicode punctuation, plus every ASCII non-alphanumeric symbol (so "$", "+", "^"
    and "`" split words too, although Unicode files them as symbols)."""
    code = ord(char)
    return (33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
            or unicodedata.category(char).startswith("P"))


def basic_tokenize(text, lowercase=True):
    """``text`` split into words and punctuation marks, normalized as BERT expects."""
    text = "".join(map(_clean, text))
    if lowercase:  # accents are stripped whenever the vocabulary is lower-cased
        text = "".join(c for c in unicodedata.normalize("NFD", text)
                       if unicodedata.category(c) != "Mn")
        # One character at a time, as the reference does: str.lower() on the whole text
        # would turn a word-final Greek sigma into "ς", which the reference keeps as "σ".
        text = "".join(c.lower() for c in text)
    words = []
    for word in text.split():
        start = 0
        for i, char in enumerate(word):
            if _is_punctuation(char):
                words += [word[start:i], char] if i > start else [char]
                start = i + 1
        if start < len(word):
            words.append(word[start:])
    return words


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceTokenizer:
    """Turns sentences into BERT token ids.

    ``vocab``: the tokens, in id order. ``max_length``: the longest id sequence produced,
    ``[CLS]`` and ``[SEP]`` included (longer texts are truncated). ``lowercase``: fold case
    and strip accents, for "uncased" models.
    """

    def __init__(self, vocab, max_length=512, lowercase=True, max_chars_per_word=100):
        self.ids = {token: i for i, token in enumerate(vocab)}
        missing = [t for t in SPECIAL_TOKENS[:4] if t not in self.ids]
        if missing:
            raise ValueError(f"WordPieceTokenizer: vocab lacks the special tokens {missing}")
        if max_length < 2:
            raise ValueError(f"WordPieceTokenizer: max_length must be at least 2 (room for "
                             f"[CLS] and [SEP]), got {max_length}")
        self.max_length, self.lowercase = max_length, lowercase
        self.max_chars_per_word = max_chars_per_word
        self.pad_id, self.unk_id = self.ids["[PAD]"], self.ids["[UNK]"]
        self.cls_id, self.sep_id = self.ids["[CLS]"], self.ids["[SEP]"]
        specials = "|".join(re.escape(t) for t in SPECIAL_TOKENS if t in self.ids)
        self._special_split = re.compile(f"({specials})")  # the group keeps the matches

    @classmethod
    def from_file(cls, path, **options):
        """A tokenizer from a ``vocab.txt`` with one token per line (line n is id n)."""
        with open(path, encoding="utf-8") as f:
            return cls(f.read().splitlines(), **options)

    def tokenize(self, text):
        """``text`` as WordPiece tokens (strings), without [CLS]/[SEP] or truncation."""
        pieces = []
        for i, part in enumerate(self._special_split.split(text)):
            if i % 2:  # odd parts are the special tokens themselves
                pieces.append(part)
                continue
            for word in basic_tokenize(part, self.lowercase):
                pieces += self._word_pieces(word)
        return pieces

    def _word_pieces(self, word):
        """Greedy longest-match-first: the longest vocabulary prefix, then again on the
        rest with "##"; ``[UNK]`` for the whole word when some rest has no match."""
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    break
            else:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def encode(self, text):
        """``[CLS] tokens [SEP]`` as a list of ids, at most ``max_length`` long."""
        if not isinstance(text, str):
            raise TypeError(f"WordPieceTokenizer.encode: text must be a str, got "
                            f"{type(text).__name__}")
        body = [self.ids[piece] for piece in self.tokenize(text)]
        return [self.cls_id] + body[:self.max_length - 2] + [self.sep_id]

    def batch(self, texts):
        """Token ids of ``texts``, right-padded to the longest; see ``pad``."""
        return self.pad([self.encode(t) for t in texts])

    def pad(self, encoded):
        """Id lists (from ``encode``) right-padded with ``[PAD]`` to the longest.

        Returns host NumPy arrays ``ids`` (N, L) int64 and ``attention_mask`` (N, L)
        bool, True at real tokens and False at padding.
        """
        encoded = list(encoded)  # any iterable: read once, before measuring it
        length = max((len(e) for e in encoded), default=0)
        ids = backend.host.full((len(encoded), length), self.pad_id, dtype="int64")
        attention_mask = backend.host.zeros((len(encoded), length), dtype=bool)
        for row, e in enumerate(encoded):
            ids[row, :len(e)] = e
            attention_mask[row, :len(e)] = True
        return ids, attention_mask
