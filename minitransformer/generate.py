"""Decoding: greedy search, sampling (temperature, top-k, top-p) and beam search.

Every algorithm here sees a model through one small interface, a *stepper*: give it the
tokens decoded so far, (B, T), and it returns the logits of the next token, (B, V).
``LanguageModelStepper`` wraps a decoder-only ``GPT``; ``Seq2SeqStepper`` wraps an
encoder-decoder ``Transformer`` (it encodes the source once). With ``use_cache=True``
a stepper feeds the model only the new token and keeps every layer's keys and values
in a ``KVCache``, so one step costs O(T) instead of recomputing the whole prefix;
``use_cache=False`` recomputes, and the tests prove both give the same tokens.

Token arrays are integer (B, T) backend arrays; all functions run under ``no_grad``.
"""
import contextlib
import math

from . import arguments, backend
from .autograd import Tensor, as_array, no_grad
from .functional import log_softmax
from .functional.common import widened


def _as_ids(tokens, device, what):
    data = as_array(tokens, device)
    if data.ndim != 2 or data.dtype.kind not in "iu":
        raise ValueError(f"{what} must be an integer (B, T) array of token ids, got shape "
                         f"{data.shape} and dtype {data.dtype}")
    return data


class LanguageModelStepper:
    """Next-token logits from a decoder-only model (``GPT``). A context longer than the
    model's ``max_len`` is cropped to its last ``max_len`` tokens (and the cache refilled)."""

    def __init__(self, model, use_cache=True):
        self.model, self.use_cache = model, use_cache
        self.max_len = model.config.max_len
        self.cache, self.fed = None, 0  # fed: how many of the tokens the cache has seen

    def logits(self, tokens):
        if not self.use_cache:
            return self.model(tokens[:, -self.max_len:]).data[:, -1]
        new = tokens[:, self.fed:]
        if self.cache is None or len(self.cache) + new.shape[1] > self.max_len:
            self.cache = self.model.new_cache()  # start over on the cropped context
            new = tokens[:, -self.max_len:]
        self.fed = tokens.shape[1]
        return self.model(new, cache=self.cache).data[:, -1]

    def reorder(self, rows):
        if self.cache is not None:
            self.cache.select(rows)


class Seq2SeqStepper:
    """Next-token logits from an encoder-decoder ``Transformer`` for a fixed source
    ``src`` (B, Ls), which is encoded once."""

    def __init__(self, model, src, use_cache=True):
        self.model, self.use_cache = model, use_cache
        self.src_mask = model.source_mask(src)
        self.memory = model.encode(src, self.src_mask)
        self.cache = model.new_cache() if use_cache else None

    def logits(self, tokens):
        new = tokens if self.cache is None else tokens[:, len(self.cache):]
        return self.model.decode(self.memory, new, self.src_mask, cache=self.cache).data[:, -1]

    def reorder(self, rows):
        self.memory = Tensor(self.memory.data[rows])
        if self.src_mask is not None:
            self.src_mask = self.src_mask[rows]
        if self.cache is not None:
            self.cache.select(rows)


def _stepper(model, src, use_cache):
    return (LanguageModelStepper(model, use_cache) if src is None
            else Seq2SeqStepper(model, src, use_cache))


def _append(tokens, new, xp):
    return xp.concatenate([tokens, new[:, None].astype(tokens.dtype)], axis=1)


def greedy(model, tokens, max_new_tokens, src=None, eos_id=None, use_cache=True):
    """Append the most likely next token ``max_new_tokens`` times.

    tokens: (B, T0) prompt (for a ``Transformer``: the start tokens, e.g. BOS, with the
    source in ``src`` (B, Ls)). Returns (B, T0 + n). Once a row has produced ``eos_id``,
    it keeps producing ``eos_id``; decoding stops early when every row has.
    """
    return _decode("greedy", model, tokens, max_new_tokens, src, eos_id, use_cache, choose=None)


def _sampling_options(owner, temperature, top_k, top_p):
    """temperature > 0, top_k a positive int or None, top_p in (0, 1] or None."""
    temperature = arguments.positive_number(owner, "temperature", temperature)
    if top_k is not None:
        top_k = arguments.positive_integer(owner, "top_k", top_k)
    if top_p is not None:
        top_p = arguments.fraction(owner, "top_p", top_p, "(0, 1]")
    return temperature, top_k, top_p


def sampling_distribution(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution ``sample`` draws from: logits (B, V) -> probabilities (B, V).

    softmax(logits / temperature), restricted to the ``top_k`` most likely tokens, then
    to the nucleus (Holtzman et al., 2020): the most likely tokens whose probabilities,
    added in decreasing order, first reach ``top_p`` (tokens tied with the last one are
    kept too); renormalised. Zero elsewhere."""
    owner = "sampling_distribution"
    temperature, top_k, top_p = _sampling_options(owner, temperature, top_k, top_p)
    logits = as_array(logits)
    if logits.ndim != 2 or logits.dtype.kind not in "iuf":
        raise ValueError(f"{owner}: logits must be a real (B, V) array, got shape "
                         f"{logits.shape} and dtype {logits.dtype}")
    xp = backend.get_array_module(logits)
    logits = widened(logits) / temperature  # float16 sums stall: the nucleus would be wrong
    top = logits.max(axis=-1, keepdims=True)
    bad = ~xp.isfinite(top[:, 0])  # NaN, +inf, or every token at -inf
    if bool(bad.any()):
        row = int(bad.argmax())
        raise ValueError(f"{owner}: each row of logits / temperature needs a finite "
                         f"largest value, but row {row} has {float(top[row, 0])}; check "
                         "the logits for NaN or inf (or raise a tiny temperature)")
    if top_k is not None and top_k < logits.shape[-1]:
        kth = xp.partition(logits, -top_k, axis=-1)[:, -top_k, None]
        logits = xp.where(logits < kth, -xp.inf, logits)
    probs = xp.exp(logits - top)
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        ranked = -xp.sort(-probs, axis=-1)
        before = xp.cumsum(ranked, axis=-1) - ranked  # the mass of the more likely tokens
        kept = (before < top_p).sum(axis=-1, keepdims=True)  # >= 1, as before[0] = 0
        cutoff = xp.take_along_axis(ranked, kept - 1, axis=-1)
        probs = xp.where(probs >= cutoff, probs, 0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def sample(model, tokens, max_new_tokens, temperature=1.0, top_k=None, src=None,
           eos_id=None, use_cache=True, top_p=None):
    """Like ``greedy``, but draw each token from ``sampling_distribution(logits,
    temperature, top_k, top_p)``. Seed with ``mt.manual_seed``."""
    temperature, top_k, top_p = _sampling_options("sample", temperature, top_k, top_p)

    def choose(logits, xp):
        probs = sampling_distribution(logits, temperature, top_k, top_p)
        cumulative = xp.cumsum(probs, axis=-1)
        # inverse-CDF sampling: the first token whose cumulative mass passes the draw;
        # drawing up to the last cumulative value (not 1) never lands past the last
        # token that has any probability, whatever the round-off
        draws = backend.rng(backend.device_of(logits)).random((logits.shape[0], 1))
        return (cumulative < draws * cumulative[:, -1:]).sum(axis=-1)

    return _decode("sample", model, tokens, max_new_tokens, src, eos_id, use_cache, choose)


@contextlib.contextmanager
def _inference(model):
    """Eval mode and no graph while decoding; yields the model's device and restores
    its training mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            yield model.device
    finally:
        model.train(was_training)


def _check_lengths(owner, max_new_tokens, eos_id):
    """The arguments every decoder takes, as ints: max_new_tokens >= 0, eos_id >= 0."""
    max_new_tokens = arguments.integer(owner, "max_new_tokens", max_new_tokens, low=0)
    if eos_id is not None:
        eos_id = arguments.integer(owner, "eos_id", eos_id, low=0)
    return max_new_tokens, eos_id


def _next_logits(owner, stepper, tokens, eos_id, xp):
    """The next-token logits (B, V), refused when they hold NaN (a NaN would decode as
    token 0 or a NaN score) or when ``eos_id`` cannot be produced."""
    logits = stepper.logits(tokens)
    if eos_id is not None and eos_id >= logits.shape[-1]:
        raise ValueError(f"{owner}: eos_id={eos_id} is outside the model's vocabulary "
                         f"[0, {logits.shape[-1]}); pass the id of its end token")
    bad_rows = xp.isnan(logits).any(axis=-1)
    if bool(bad_rows.any()):
        raise FloatingPointError(
            f"{owner}: the model's next-token logits contain NaN (row "
            f"{int(bad_rows.argmax())}, at sequence length {tokens.shape[1]}); its "
            "parameters or inputs hold NaN or inf -- check the checkpoint and training")
    return logits


def _decode(owner, model, tokens, max_new_tokens, src, eos_id, use_cache, choose):
    max_new_tokens, eos_id = _check_lengths(owner, max_new_tokens, eos_id)
    with _inference(model) as device:
        xp = backend.xp(device)
        tokens = _as_ids(tokens, device, "tokens")
        src = None if src is None else _as_ids(src, device, "src")
        stepper = _stepper(model, src, use_cache)
        done = xp.zeros(tokens.shape[0], dtype=bool)
        for _ in range(max_new_tokens):
            logits = _next_logits(owner, stepper, tokens, eos_id, xp)
            new = logits.argmax(axis=-1) if choose is None else choose(logits, xp)
            if eos_id is not None:
                new = xp.where(done, eos_id, new)
                done |= new == eos_id
            tokens = _append(tokens, new, xp)
            if eos_id is not None and bool(done.all()):
                break
        return tokens


def length_penalty(length, alpha):
    """GNMT's length normalisation ((5 + length) / 6) ** alpha (Wu et al., 2016):
    beam scores are divided by it, so that longer hypotheses are not unfairly punished
    for summing more negative log-probabilities. alpha = 0 turns it off."""
    return ((5.0 + length) / 6.0) ** alpha


def beam_search(model, tokens, max_new_tokens, beam_size=4, alpha=0.6, src=None,
                eos_id=None, use_cache=True):
    """Keep the ``beam_size`` most probable continuations of each row.

    Each step keeps the ``beam_size`` hypotheses with the highest *summed*
    log-probability, finished ones (which repeat ``eos_id`` at no cost) included; only the
    final pick divides by ``length_penalty(generated length, alpha)``. Live hypotheses all
    have the same length, so the sum ranks them as the normalised score would (Hugging
    Face and fairseq rank them so too, but keep finished ones apart, holding no beam).

    Returns ``(best, scores)``: best (B, T0 + n) tokens (rows that ended early are padded
    with ``eos_id``) and scores (B,): the normalised score of each row's pick.
    """
    beam_size = arguments.positive_integer("beam_search", "beam_size", beam_size)
    max_new_tokens, eos_id = _check_lengths("beam_search", max_new_tokens, eos_id)
    if not math.isfinite(alpha):
        raise ValueError(f"beam_search: alpha must be a finite number, got {alpha}")
    with _inference(model) as device:
        xp = backend.xp(device)
        tokens = _as_ids(tokens, device, "tokens")
        batch, K = tokens.shape[0], beam_size
        # Each row becomes K beams; only the first is live at the start, so the first step
        # does not pick K copies of the same token.
        expand = xp.repeat(xp.arange(batch), K)
        tokens = tokens[expand]
        src = None if src is None else _as_ids(src, device, "src")[expand]
        stepper = _stepper(model, src, use_cache)
        scores = xp.tile(xp.asarray([0.0] + [-math.inf] * (K - 1)), batch)
        lengths = xp.zeros(batch * K)
        done = xp.zeros(batch * K, dtype=bool)
        for _ in range(max_new_tokens):
            logits = _next_logits("beam_search", stepper, tokens, eos_id, xp)
            logp = log_softmax(Tensor(logits)).data.astype(scores.dtype)
            vocab = logp.shape[-1]
            if eos_id is not None:  # a finished beam may only repeat eos, at no cost
                logp[done] = -math.inf
                logp[done, eos_id] = 0.0
            candidates = (scores[:, None] + logp).reshape(batch, K * vocab)
            best = xp.argsort(-candidates, axis=-1)[:, :K]
            scores = xp.take_along_axis(candidates, best, axis=-1).reshape(-1)
            rows = (xp.arange(batch)[:, None] * K + best // vocab).reshape(-1)
            new = (best % vocab).reshape(-1)
            tokens, lengths, done = tokens[rows], lengths[rows], done[rows]
            stepper.reorder(rows)
            lengths += ~done
            if eos_id is not None:
                done |= new == eos_id
            tokens = _append(tokens, new, xp)
            if bool(done.all()):
                break
        final = (scores / length_penalty(lengths, alpha)).reshape(batch, K)
        winner = final.argmax(axis=-1)
        rows = xp.arange(batch) * K + winner
        return tokens[rows], final[xp.arange(batch), winner]
