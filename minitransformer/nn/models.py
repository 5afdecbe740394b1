"""Three whole models, each configured by a small dataclass (the nanoGPT style):

  Transformer        the encoder-decoder of "Attention Is All You Need" (translation,
                     the copy task), post-LN by default.
  GPT                a decoder-only language model: causal, pre-LN, learned positions,
                     output layer tied to the token embedding; or, by its options, a
                     LLaMA-style one (RMSNorm, RoPE, SwiGLU, grouped-query, no biases).
  EncoderClassifier  a BERT-style encoder: word + position + token-type embeddings,
                     post-LN, exact GELU, a [CLS] pooler and a classification head;
                     configurable to hold a real BERT such as all-MiniLM-L6-v2.

Token ids are integer (B, L) arrays or Tensors on the model's device (or Python lists).
Attention masks are boolean, True = may attend, broadcastable to (B, H, Lq, Lk); the
models build them from ``pad_id`` (padding) and causality when none is given.
"""
import math
from dataclasses import dataclass

from .. import backend
from ..autograd import Tensor
from ..masks import alibi_bias, causal_mask, combine_masks, padding_mask
from ..recompute import recompute
from .attention import KVCache, MultiHeadAttention
from .checks import check_device, check_features, check_ids, check_mask
from .layers import (Dropout, Embedding, LayerNorm, LearnedPositionalEmbedding, Linear,
                     RelativePositionBias, SinusoidalPositionalEncoding)
from .module import Module, ModuleList
from .transformer import Decoder, Encoder, TransformerBlock, make_norm


def _configure_memory(model, config):
    """Every attention sub-layer of ``model`` computes as ``config.attention`` says, and
    every stack recomputes its layers in backward if ``config.recompute``."""
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.use_attention(config.attention, config.attention_block_size)
        if isinstance(module, (Encoder, Decoder)):
            module.recompute = config.recompute


@dataclass
class TransformerConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    layer_norm_eps: float = 1e-5
    max_len: int = 5000
    pad_id: int | None = 0            # None: no padding mask
    tie_output_embedding: bool = True  # generator.weight is tgt_embedding.weight
    share_embeddings: bool = False     # one table for source and target (joint vocabulary)
    attention: str = "plain"          # or "blockwise": same output, O(L) memory
    attention_block_size: int = 128
    recompute: bool = False           # remake each layer's activations in backward
    positions: str = "sinusoidal"     # or "t5": a learned relative bias in the attention


def _check_choice(owner, name, value, choices):
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {choices}, got {value!r}")


class Transformer(Module):
    """The encoder-decoder Transformer. forward(src (B, Ls), tgt (B, Lt), src_mask=None,
    tgt_mask=None) -> logits (B, Lt, tgt_vocab_size).

    Embeddings are scaled by sqrt(d_model) and start as N(0, 1/d_model), so the sum with
    the sinusoidal positions has unit scale and a tied output layer starts with small
    logits. With ``positions="t5"`` there are no sinusoids: a ``RelativePositionBias``
    (bidirectional) is added to the encoder's self-attention scores and another (causal)
    to the decoder's, each shared by its stack's layers, as in T5.
    ``src_mask`` is a key mask broadcastable to (B, H, 1, Ls), by default
    ``source_mask(src)``; ``tgt_mask`` broadcasts to (B, H, Lt, Lt), by default
    ``target_mask(tgt)`` (causal and padding).

    Decoding: ``memory = encode(src, src_mask)`` once, then ``decode(memory, tgt, src_mask,
    cache=cache)`` per step with ``cache = new_cache()`` and only the new target tokens.
    """

    def __init__(self, config):
        c = self.config = config
        if c.share_embeddings and c.src_vocab_size != c.tgt_vocab_size:
            raise ValueError(f"Transformer: share_embeddings needs src_vocab_size == "
                             f"tgt_vocab_size, got {c.src_vocab_size} and {c.tgt_vocab_size}")
        std = c.d_model ** -0.5
        self.src_embedding = Embedding(c.src_vocab_size, c.d_model, std=std)
        self.tgt_embedding = (self.src_embedding if c.share_embeddings else
                              Embedding(c.tgt_vocab_size, c.d_model, std=std))
        _check_choice("Transformer", "positions", c.positions, ("sinusoidal", "t5"))
        t5 = c.positions == "t5"
        self.positions = None if t5 else SinusoidalPositionalEncoding(c.d_model, c.max_len)
        self.encoder_bias = RelativePositionBias(c.num_heads) if t5 else None
        self.decoder_bias = RelativePositionBias(c.num_heads, bidirectional=False) if t5 else None
        self.dropout = Dropout(c.dropout)
        stack = (c.d_model, c.num_heads, c.d_ff, c.dropout, c.activation, c.norm_first,
                 c.layer_norm_eps)
        self.encoder = Encoder(c.num_encoder_layers, *stack)
        self.decoder = Decoder(c.num_decoder_layers, *stack)
        self.generator = Linear(c.d_model, c.tgt_vocab_size)
        if c.tie_output_embedding:
            self.generator.weight = self.tgt_embedding.weight
        _configure_memory(self, c)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None):
        src, src_mask = self._check_source(src, src_mask)
        tgt, tgt_mask = self._check_target(tgt, tgt_mask, src.shape[0], cache=None)
        return self._decode(self._encode(src, src_mask), tgt, src_mask, tgt_mask, None)

    def encode(self, src, src_mask=None):
        """src (B, Ls) -> memory (B, Ls, d_model)."""
        return self._encode(*self._check_source(src, src_mask))

    def decode(self, memory, tgt, src_mask=None, tgt_mask=None, cache=None):
        """memory (B, Ls, D), tgt (B, Lt) -> logits (B, Lt, tgt_vocab_size).

        With a ``cache`` (from ``new_cache()``), ``tgt`` holds only the positions after
        the ``len(cache)`` already decoded, and the default ``tgt_mask`` is causal only.
        ``src_mask`` should be the one the memory was encoded with.
        """
        check_features("Transformer", "memory", memory, self.config.d_model)
        check_device("Transformer", "memory", memory, self.device)
        tgt, tgt_mask = self._check_target(tgt, tgt_mask, memory.shape[0], cache)
        src_mask = self._check_src_mask(src_mask, *memory.shape[:2])
        return self._decode(memory, tgt, src_mask, tgt_mask, cache)

    def source_mask(self, src):
        """The key padding mask (B, 1, 1, Ls) of ``src``, or None without a pad_id."""
        return None if self.config.pad_id is None else padding_mask(src, self.config.pad_id)

    def target_mask(self, tgt, past=0):
        """Causal mask (1, 1, Lt, past + Lt) for ``tgt`` (B, Lt) that follows ``past``
        cached positions, combined with its padding mask when there is no cache."""
        length = tgt.shape[1]
        causal = causal_mask(length, past + length, self.device)
        if past or self.config.pad_id is None:
            return causal
        return combine_masks(padding_mask(tgt, self.config.pad_id), causal)

    def new_cache(self):
        """An empty ``KVCache`` for incremental decoding with ``decode``."""
        return KVCache(self.config.num_decoder_layers, cross_attention=True)

    # The public methods check their arguments once; these take them checked.
    def _encode(self, src, src_mask):
        x = self._embed(self.src_embedding, src, start=0)
        bias = None if self.encoder_bias is None else self.encoder_bias(src.shape[1])
        return self.encoder(x, mask=src_mask, bias=bias)

    def _decode(self, memory, tgt, src_mask, tgt_mask, cache):
        past, length = (0 if cache is None else len(cache)), tgt.shape[1]
        x = self._embed(self.tgt_embedding, tgt, start=past)
        bias = None if self.decoder_bias is None else self.decoder_bias(length, past + length)
        return self.generator(self.decoder(x, memory, self_mask=tgt_mask, memory_mask=src_mask,
                                           cache=cache, self_bias=bias))

    def _embed(self, embedding, ids, start):
        x = embedding.lookup(ids) * math.sqrt(self.config.d_model)
        return self.dropout(x if self.positions is None else self.positions(x, start))

    def _check_source(self, src, src_mask):
        src = check_ids("Transformer", "src", src, self.config.src_vocab_size, self.device)
        src_mask = self.source_mask(src) if src_mask is None else src_mask
        return src, self._check_src_mask(src_mask, *src.shape)

    def _check_src_mask(self, src_mask, batch, src_len):
        # One mask serves the encoder's self-attention and the decoder's cross-attention,
        # so it must be a key mask: the same for every query.
        return check_mask("Transformer", "src_mask", src_mask,
                          (batch, self.config.num_heads, 1, src_len), self.device)

    def _check_target(self, tgt, tgt_mask, batch, cache):
        c = self.config
        tgt = check_ids("Transformer", "tgt", tgt, c.tgt_vocab_size, self.device)
        if tgt.shape[0] != batch:
            raise ValueError(f"Transformer: memory has batch size {batch} but tgt "
                             f"has {tgt.shape[0]}")
        past, length = (0 if cache is None else len(cache)), tgt.shape[1]
        tgt_mask = self.target_mask(tgt, past) if tgt_mask is None else tgt_mask
        return tgt, check_mask("Transformer", "tgt_mask", tgt_mask,
                               (batch, c.num_heads, length, past + length), self.device)


@dataclass
class GPTConfig:
    vocab_size: int
    max_len: int = 256            # the context length (nanoGPT's block_size)
    d_model: int = 384
    num_heads: int = 6
    num_layers: int = 6
    d_ff: int | None = None       # default 4 * d_model
    dropout: float = 0.1
    activation: str = "gelu"      # or "relu", "swiglu", "geglu"
    layer_norm_eps: float = 1e-5
    tie_weights: bool = True      # lm_head.weight is token_embedding.weight
    attention: str = "plain"          # or "blockwise": same output, O(L) memory
    attention_block_size: int = 128
    recompute: bool = False           # remake each layer's activations in backward
    norm: str = "layer"           # or "rms"
    positions: str = "learned"    # or "sinusoidal", "rope", "alibi", "t5", "none"
    num_kv_heads: int | None = None  # grouped-query attention; default num_heads
    bias: bool = True             # biases in every Linear and LayerNorm
    rope_base: float = 10000.0


GPT_POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "t5", "none")


class GPT(Module):
    """A decoder-only language model. forward(ids (B, L), cache=None) -> logits (B, L, V).

    Each block is a pre-LN, causal ``TransformerBlock``; a final norm and a
    bias-free output layer (tied to the token embedding) follow. Embeddings start as
    N(0, 0.02²), as in GPT-2 (with sinusoids: N(0, 1/d_model), scaled by sqrt(d_model),
    as in ``Transformer``, or the fixed unit-scale positions would drown them).
    For generation, make ``cache = new_cache()`` and pass only the new tokens at each
    step; positions continue from ``len(cache)``.

    ``positions``: added to the embeddings ("learned", at most ``max_len`` of them;
    "sinusoidal"), rotating queries and keys ("rope"), biasing the attention scores
    ("alibi"; "t5", one causal ``RelativePositionBias`` for all blocks), or "none" (the
    causal mask alone tells a token how many came before it). All but "learned" run on
    sequences longer than ``max_len``, the length trained on. A LLaMA-style model is
    ``GPTConfig(norm="rms", positions="rope", activation="swiglu", num_kv_heads=2,
    bias=False)``.
    """

    def __init__(self, config):
        c = self.config = config
        _check_choice("GPT", "positions", c.positions, GPT_POSITIONS)
        d_ff = c.d_ff or 4 * c.d_model
        self.token_scale = math.sqrt(c.d_model) if c.positions == "sinusoidal" else 1.0
        std = 0.02 if self.token_scale == 1 else 1 / self.token_scale
        self.token_embedding = Embedding(c.vocab_size, c.d_model, std=std)
        self.position_embedding = None  # for the schemes that act inside attention
        if c.positions == "learned":
            self.position_embedding = LearnedPositionalEmbedding(c.max_len, c.d_model)
        elif c.positions == "sinusoidal":  # a fixed table, longer than the context
            self.position_embedding = SinusoidalPositionalEncoding(c.d_model, max(c.max_len, 5000))
        self.relative_bias = (RelativePositionBias(c.num_heads, bidirectional=False)
                              if c.positions == "t5" else None)
        self.dropout = Dropout(c.dropout)
        self.blocks = ModuleList(
            TransformerBlock(c.d_model, c.num_heads, d_ff, c.dropout, c.activation,
                             norm_first=True, layer_norm_eps=c.layer_norm_eps, norm=c.norm,
                             num_kv_heads=c.num_kv_heads, bias=c.bias, causal=True,
                             rotary_base=c.rope_base if c.positions == "rope" else None)
            for _ in range(c.num_layers))
        self.final_norm = make_norm(c.norm, c.d_model, c.layer_norm_eps, c.bias)
        self.lm_head = Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_weights:
            self.lm_head.weight = self.token_embedding.weight
        _configure_memory(self, c)

    def forward(self, ids, cache=None):
        c, device = self.config, self.device
        ids = check_ids("GPT", "ids", ids, c.vocab_size, device)
        past, length = (0 if cache is None else len(cache)), ids.shape[1]
        if c.positions == "learned" and past + length > c.max_len:
            raise ValueError(f"GPT: {past} cached + {length} new positions exceed "
                             f"max_len={c.max_len}; crop the context to the last "
                             f"{c.max_len} tokens")
        x = self.token_embedding.lookup(ids)  # (B, L) -> (B, L, D)
        if self.token_scale != 1:
            x = x * self.token_scale
        if self.position_embedding is not None:
            x = self.position_embedding(x, start=past)
        x = self.dropout(x)
        wide = x.dtype if x.dtype.itemsize > 4 else None  # float64 model: float64 slopes
        bias = (Tensor(alibi_bias(c.num_heads, length, past + length, device, wide))
                if c.positions == "alibi" else None)
        if self.relative_bias is not None:
            bias = self.relative_bias(length, past + length)
        for i, block in enumerate(self.blocks):
            if c.recompute and cache is None:  # the bias may carry a graph (T5): an input
                x = recompute(lambda h, b, block=block: block(h, bias=b), x, bias)
            else:
                x = block(x, cache=None if cache is None else cache.self_attention[i], bias=bias)
        return self.lm_head(self.final_norm(x))  # (B, L, D) -> (B, L, vocab_size)

    def new_cache(self):
        """An empty ``KVCache`` for incremental generation."""
        return KVCache(self.config.num_layers)


@dataclass
class EncoderClassifierConfig:
    vocab_size: int
    max_len: int = 512
    type_vocab_size: int = 2          # segment (sentence A/B) ids; 0: no such embedding
    d_model: int = 256
    num_heads: int = 4
    num_layers: int = 4
    d_ff: int = 1024
    dropout: float = 0.1
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_id: int | None = 0            # the default attention mask hides these ids
    num_classes: int | None = 2       # None: no classification head (an encoder only)
    attention: str = "plain"          # or "blockwise": same output, O(L) memory
    attention_block_size: int = 128
    recompute: bool = False           # remake each layer's activations in backward


class EncoderClassifier(Module):
    """A BERT-style encoder with a classification head.

    encode(ids (B, L), attention_mask=None, token_type_ids=None) -> hidden (B, L, D);
    pool(hidden) -> tanh(pooler(hidden[:, 0])) (B, D), the [CLS] summary;
    forward(ids, attention_mask=None, token_type_ids=None) -> logits (B, num_classes).

    ``attention_mask`` (B, L) is Hugging Face's: nonzero/True for real tokens, 0 for
    padding; by default the tokens equal to ``pad_id`` are hidden. Embeddings are summed
    (word + position + token type), normalised and passed through post-LN layers; there
    is no sqrt(d_model) scaling.

    Its parameters hold Hugging Face ``BertModel``'s under other names, listed once in
    ``pretrained.sentence_encoder`` (``bert_parameter_names``); ``classifier.*`` holds
    ``BertForSequenceClassification``'s ``classifier.*``.
    Both use (out_features, in_features) Linear weights, so no transposes are needed.
    """

    def __init__(self, config):
        c = self.config = config
        self.token_embedding = Embedding(c.vocab_size, c.d_model, std=0.02)
        self.position_embedding = LearnedPositionalEmbedding(c.max_len, c.d_model)
        self.token_type_embedding = (Embedding(c.type_vocab_size, c.d_model, std=0.02)
                                     if c.type_vocab_size else None)
        self.embedding_norm = LayerNorm(c.d_model, c.layer_norm_eps)
        self.dropout = Dropout(c.dropout)
        self.encoder = Encoder(c.num_layers, c.d_model, c.num_heads, c.d_ff, c.dropout,
                               c.activation, norm_first=False,
                               layer_norm_eps=c.layer_norm_eps)
        self.pooler = Linear(c.d_model, c.d_model)
        self.classifier = Linear(c.d_model, c.num_classes) if c.num_classes else None
        _configure_memory(self, c)

    def encode(self, ids, attention_mask=None, token_type_ids=None):
        c, device = self.config, self.device
        ids = check_ids("EncoderClassifier", "ids", ids, c.vocab_size, device)
        x = self.token_embedding.lookup(ids)
        if self.token_type_embedding is not None:
            if token_type_ids is None:  # all segment 0: nothing to check
                token_type_ids = backend.xp(device).zeros(ids.shape, dtype=ids.dtype)
            else:
                token_type_ids = check_ids("EncoderClassifier", "token_type_ids",
                                           token_type_ids, c.type_vocab_size, device)
            if token_type_ids.shape != ids.shape:
                raise ValueError(f"EncoderClassifier: token_type_ids has shape "
                                 f"{token_type_ids.shape}, expected ids' shape {ids.shape}")
            x = x + self.token_type_embedding.lookup(token_type_ids)
        x = self.dropout(self.embedding_norm(self.position_embedding(x)))
        return self.encoder(x, mask=self._key_mask(ids, attention_mask, device))

    def pool(self, hidden):
        """hidden (B, L, D) -> tanh(pooler(hidden[:, 0])) (B, D), as BERT's pooler."""
        return self.pooler(hidden[:, 0]).tanh()  # (B, L, D) -> (B, D)

    def forward(self, ids, attention_mask=None, token_type_ids=None):
        if self.classifier is None:
            raise ValueError("EncoderClassifier: built with num_classes=None, so it has no "
                             "classification head; use encode() or pool()")
        pooled = self.pool(self.encode(ids, attention_mask, token_type_ids))
        return self.classifier(self.dropout(pooled))

    def _key_mask(self, ids, attention_mask, device):
        """The (B, 1, 1, L) boolean key mask from ``attention_mask`` or ``pad_id``."""
        if attention_mask is None:
            return None if self.config.pad_id is None else padding_mask(ids, self.config.pad_id)
        data = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
        if not backend.is_array(data) or data.shape != ids.shape:
            raise ValueError(f"EncoderClassifier: attention_mask has shape "
                             f"{getattr(data, 'shape', type(data).__name__)}, expected ids' "
                             f"shape {ids.shape} (1 for tokens, 0 for padding)")
        check_device("EncoderClassifier", "attention_mask", data, device)
        return (data != 0)[:, None, None, :]  # (B, L) -> (B, 1, 1, L)
