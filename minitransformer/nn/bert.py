"""BERT's two ways of being trained, on top of ``EncoderClassifier``'s encoder:

  mask_tokens          the masked-language-model corruption of a batch of token ids
  MaskedLanguageModel  pre-training: predict the original token at each chosen position
                       (the head: dense, GELU, LayerNorm, then the word embeddings again)
  TokenClassifier      fine-tuning for tagging (NER): one label per word piece

Sentence classification needs nothing new: ``EncoderClassifier`` has the [CLS] head.
"""
from .. import backend
from .. import functional as F
from .layers import Dropout, LayerNorm, Linear, _constant
from .module import Module


def mask_tokens(ids, mask_id, special_ids, vocab_size, p=0.15, ignore_index=-100,
                rng=None):
    """BERT's masking (Devlin et al., 2019, section 3.1): choose each token that is not
    special (padding, [CLS], [SEP], ...) with probability ``p``; of the chosen, replace
    80% by ``mask_id``, 10% by a random non-special token and leave 10% unchanged, so
    the model must also check tokens that look fine. ids (B, L) integer array ->
    (inputs (B, L), labels (B, L)): labels hold the original id where chosen and
    ``ignore_index`` elsewhere, ready for ``cross_entropy(..., ignore_index=...)``.
    ``rng``: a generator of the ids' device (default ``backend.rng`` of it).
    """
    xp = backend.get_array_module(ids)
    if getattr(ids, "dtype", None) is None or ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise ValueError(f"mask_tokens: ids must be a (B, L) integer array, got "
                         f"{getattr(ids, 'shape', type(ids).__name__)} of dtype "
                         f"{getattr(ids, 'dtype', None)}")
    named = list(special_ids) + [mask_id]
    low, high = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    if min(named + [low]) < 0 or max(named + [high]) >= vocab_size:
        raise ValueError(f"mask_tokens: ids, special_ids and mask_id must lie in [0, "
                         f"vocab_size={vocab_size}), got {sorted(set(named))} and ids in "
                         f"[{low}, {high}]")
    rng = rng or backend.rng(backend.device_of(ids))
    special = xp.zeros(vocab_size, dtype=bool)
    special[xp.asarray(named)] = True
    ordinary = xp.flatnonzero(~special)  # the ids a random replacement may take
    draw, which = rng.random(ids.shape), rng.random(ids.shape)
    chosen = (draw < p) & ~special[ids]
    labels = xp.where(chosen, ids, ignore_index)
    random_ids = ordinary[(rng.random(ids.shape) * len(ordinary)).astype(ids.dtype)]
    inputs = xp.where(chosen & (which < 0.8), mask_id, ids)
    inputs = xp.where(chosen & (which >= 0.8) & (which < 0.9), random_ids, inputs)
    return inputs.astype(ids.dtype), labels


class MaskedLMHead(Module):
    """hidden (B, L, D) -> logits (B, L, V): decoder(LayerNorm(GELU(dense(hidden)))).
    The decoder's weight *is* the word-embedding table (V, D) (tied, as in BERT: the
    same vector reads a word in and writes it out); it has its own bias (V,)."""

    def __init__(self, embedding, layer_norm_eps=1e-12):
        vocab_size, d_model = embedding.weight.shape
        self.dense = Linear(d_model, d_model)
        self.norm = LayerNorm(d_model, layer_norm_eps)
        self.decoder_weight = embedding.weight
        self.decoder_bias = _constant(0.0, (vocab_size,))

    def forward(self, hidden):
        h = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(h, self.decoder_weight, self.decoder_bias)


class MaskedLanguageModel(Module):
    """An ``EncoderClassifier`` (``bert``, any ``num_classes``) with a ``MaskedLMHead``:
    forward(ids (B, L), attention_mask=None) -> logits (B, L, vocab_size)."""

    def __init__(self, bert):
        self.bert = bert
        self.head = MaskedLMHead(bert.token_embedding, bert.config.layer_norm_eps)

    def forward(self, ids, attention_mask=None):
        return self.head(self.bert.encode(ids, attention_mask))


class TokenClassifier(Module):
    """An ``EncoderClassifier`` (``bert``) with a linear layer on every position:
    forward(ids (B, L), attention_mask=None) -> logits (B, L, num_labels). Train with
    ``cross_entropy(logits, labels, ignore_index=-100)``, the labels made by
    ``pretrained.align_labels`` (one label per word, on its first piece)."""

    def __init__(self, bert, num_labels, dropout=0.1):
        self.bert = bert
        self.dropout = Dropout(dropout)
        self.classifier = Linear(bert.config.d_model, num_labels)

    def forward(self, ids, attention_mask=None):
        return self.classifier(self.dropout(self.bert.encode(ids, attention_mask)))
