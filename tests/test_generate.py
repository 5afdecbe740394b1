"""Decoding: the KV cache changes nothing but speed; greedy, sampling and beam search
agree with their definitions."""
import itertools
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitransformer as mt
from minitransformer import generate
from minitransformer.nn.models import GPT, GPTConfig, Transformer, TransformerConfig
from strategies import host


def tiny_gpt(seed, vocab=11, max_len=8):
    mt.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, max_len=max_len, d_model=16, num_heads=2,
                         num_layers=2))


def tiny_seq2seq(seed, vocab=10):
    mt.manual_seed(seed)
    return Transformer(TransformerConfig(src_vocab_size=vocab, tgt_vocab_size=vocab,
                                         d_model=16, num_heads=2, num_encoder_layers=1,
                                         num_decoder_layers=2, d_ff=32))


@settings(max_examples=6)
@given(seed=st.integers(0, 1000), prompt_len=st.integers(1, 4), new=st.integers(1, 9))
def test_gpt_cache_gives_the_same_tokens(seed, prompt_len, new):
    model = tiny_gpt(seed)  # prompt + new may pass max_len=8: the context is then cropped
    prompt = np.random.default_rng(seed).integers(0, 11, (2, prompt_len))
    cached = generate.greedy(model, prompt, new, use_cache=True)
    recomputed = generate.greedy(model, prompt, new, use_cache=False)
    np.testing.assert_array_equal(host(cached), host(recomputed))
    beams = [host(generate.beam_search(model, prompt, min(new, 4), beam_size=3,
                                       use_cache=c)[0]) for c in (True, False)]
    np.testing.assert_array_equal(*beams)


@settings(max_examples=6)
@given(seed=st.integers(0, 1000))
def test_seq2seq_cache_gives_the_same_tokens(seed):
    model = tiny_seq2seq(seed)
    src = np.random.default_rng(seed).integers(3, 10, (3, 5))
    src[0, 3:] = 0  # padding
    bos = np.ones((3, 1), dtype=np.int64)
    for search in (lambda **kw: generate.greedy(model, bos, 7, src=src, eos_id=2, **kw),
                   lambda **kw: generate.beam_search(model, bos, 7, beam_size=3, src=src,
                                                     eos_id=2, **kw)[0]):
        np.testing.assert_array_equal(host(search(use_cache=True)),
                                      host(search(use_cache=False)))


def test_greedy_rows_keep_eos_once_they_produce_it():
    model = tiny_gpt(0, vocab=5)
    model.eval()
    rng = np.random.default_rng(0)
    for p in model.parameters():  # large random weights: varied tokens, not one repeated
        p.data = mt.tensor(rng.normal(0.0, 1.0, p.shape).astype(np.float32)).data
    prompt = (np.arange(8) % 5)[:, None]
    free = host(generate.greedy(model, prompt, 6))
    stopped = host(generate.greedy(model, prompt, 6, eos_id=1))
    assert stopped.shape == free.shape  # some rows never produce eos: no early stop
    went_on = 0
    for row, (f, s) in enumerate(zip(free, stopped)):
        hits = np.flatnonzero(f[1:] == 1)
        end = len(f) if not hits.size else 2 + hits[0]  # up to and including the eos
        np.testing.assert_array_equal(s[:end], f[:end], err_msg=f"row {row}")
        assert (s[end:] == 1).all(), f"row {row} went on after eos: {s}"
        went_on += bool((f[end:] != 1).any())
    assert went_on  # without eos_id some row would have gone on: the case under test


def test_beam_of_one_is_greedy():
    model = tiny_gpt(5)
    prompt = np.array([[1, 2], [3, 4]])
    best, _ = generate.beam_search(model, prompt, 6, beam_size=1, alpha=0.0)
    np.testing.assert_array_equal(host(best), host(generate.greedy(model, prompt, 6)))


def sequence_log_prob(model, prompt, continuation):
    tokens = np.concatenate([prompt, continuation])[None]
    with mt.no_grad():
        logp = host(mt.functional.log_softmax(model(mt.tensor(tokens))).data)[0]
    n = len(prompt)
    return sum(logp[n - 1 + i, t] for i, t in enumerate(continuation))


def test_wide_beam_finds_the_most_probable_sequence():
    vocab, steps = 3, 3
    model = tiny_gpt(7, vocab=vocab)
    model.eval()
    prompt = np.array([1, 0])
    best, score = generate.beam_search(model, prompt[None], steps, beam_size=vocab ** 2,
                                       alpha=0.0)
    brute = max(itertools.product(range(vocab), repeat=steps),
                key=lambda c: sequence_log_prob(model, prompt, np.array(c)))
    np.testing.assert_array_equal(host(best)[0, 2:], brute)
    np.testing.assert_allclose(host(score)[0], sequence_log_prob(model, prompt, np.array(brute)),
                               rtol=1e-5)


class ScriptedLM(mt.nn.Module):
    """A stand-in GPT whose next-token probabilities over 4 tokens come from ``table``
    (generated tokens so far -> probabilities; uniform for any other prefix)."""
    config = types.SimpleNamespace(max_len=8)

    def __init__(self, table):
        self.table, self.unused = table, mt.nn.Parameter(mt.tensor(np.zeros(1)).data)

    def forward(self, tokens):
        rows = [self.table.get(tuple(row[1:]), [0.25] * 4) for row in host(tokens).tolist()]
        return mt.tensor(np.log(np.array(rows))[:, None, :])


def test_beam_search_prunes_by_summed_log_probability_and_picks_by_normalised_score():
    # Documented: each step keeps the beams with the highest *summed* log-probability,
    # finished ones included; only the final pick divides by the length penalty. Here
    # the finished [eos] (log 0.3, length 1) outranks [1, 2] on the sum at step 2, so it
    # survives and wins at the end (-1.204 against [1, 1, 1]'s -2.159 / (8/6)^2 = -1.214).
    # Pruning by normalised scores would drop it at step 2 (-1.204 < [1, 2]'s
    # log(0.6 * 0.4) / (7/6)^2 = -1.048) and return [1, 1, 1].
    eos, alpha = 0, 2.0
    model = ScriptedLM({(): [0.3, 0.6, 0.05, 0.05], (1,): [0.04, 0.55, 0.4, 0.01],
                        (1, 1): [0.1, 0.35, 0.3, 0.25], (1, 2): [0.1, 0.35, 0.3, 0.25]})
    best, score = generate.beam_search(model, np.ones((1, 1), np.int64), 3, beam_size=2,
                                       alpha=alpha, eos_id=eos, use_cache=False)
    np.testing.assert_array_equal(host(best)[0, 1:2], [eos])
    assert (host(best)[0, 1:] == eos).all()
    np.testing.assert_allclose(host(score)[0], np.log(0.3), rtol=1e-6)
    assert np.log(0.6 * 0.55 * 0.35) / generate.length_penalty(3, alpha) < np.log(0.3)


def test_beam_scores_count_a_finished_hypothesis_only_up_to_its_eos():
    # Documented: score = summed log-probability / length_penalty(generated length), where
    # a hypothesis that produced eos_id ends there (the eos padding after it costs nothing
    # and adds no length).
    model = tiny_seq2seq(2)
    model.eval()
    with mt.no_grad():
        model.generator.bias.data[2] += 2.0  # eos likely, so that some rows end early
    src = np.random.default_rng(2).integers(3, 10, (4, 5))
    bos = np.ones((4, 1), np.int64)
    best, score = generate.beam_search(model, bos, 6, beam_size=3, alpha=1.0, src=src,
                                       eos_id=2)
    best, score = host(best), host(score)
    with mt.no_grad():
        logits = model(mt.tensor(src).data, mt.tensor(best[:, :-1]).data)
        logp = host(mt.functional.log_softmax(logits).data)
    ended_early = 0
    for row, tokens in enumerate(best[:, 1:]):
        length = (list(tokens).index(2) + 1) if 2 in tokens else len(tokens)
        ended_early += length < len(tokens)
        total = sum(logp[row, i, t] for i, t in enumerate(tokens[:length]))
        np.testing.assert_allclose(score[row], total / generate.length_penalty(length, 1.0),
                                   rtol=1e-5)
    assert 0 < ended_early < len(best)  # the case under test happened


def test_length_penalty():
    assert generate.length_penalty(1, 0.0) == 1.0
    assert generate.length_penalty(1, 1.0) == 1.0
    assert generate.length_penalty(7, 0.5) == pytest.approx(2 ** 0.5)


def test_sampling_is_seeded_and_respects_top_k():
    model = tiny_gpt(2)
    prompt = np.zeros((64, 1), np.int64)
    mt.manual_seed(11)
    first = host(generate.sample(model, prompt, 3, temperature=2.0, top_k=2))
    mt.manual_seed(11)
    again = host(generate.sample(model, prompt, 3, temperature=2.0, top_k=2))
    np.testing.assert_array_equal(first, again)
    with mt.no_grad():
        model.eval()
        top2 = set(np.argsort(host(model(mt.tensor(prompt[:1])).data)[0, -1])[-2:])
    assert set(first[:, 1]) <= top2 and len(set(first[:, 1])) == 2
    greedy = host(generate.greedy(model, prompt[:2], 3))
    np.testing.assert_array_equal(host(generate.sample(model, prompt[:2], 3, top_k=1)), greedy)


def test_sampling_distribution_written_out():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    dist = lambda **kw: host(generate.sampling_distribution(mt.tensor(logits).data, **kw))  # noqa
    np.testing.assert_allclose(dist(), np.exp(logits), rtol=1e-12)
    # nucleus 0.7: 0.5 alone is short of it, 0.5 + 0.3 reaches it
    np.testing.assert_allclose(dist(top_p=0.7), [[0.625, 0.375, 0, 0], [0, 0, 0.375, 0.625]])
    np.testing.assert_allclose(dist(top_p=0.85)[0], [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0])
    np.testing.assert_allclose(dist(top_p=0.3)[0], [1, 0, 0, 0])
    np.testing.assert_allclose(dist(top_k=3, top_p=0.9)[0], [0.5, 0.3, 0.15, 0] / np.float64(0.95))
    # temperature 0.5 squares the probabilities before the nucleus is taken: 25:9:2.25:.25
    squared = np.array([0.25, 0.09, 0.0225, 0.0025])
    np.testing.assert_allclose(dist(temperature=0.5, top_p=0.9)[0],
                               [0.25 / 0.34, 0.09 / 0.34, 0, 0], rtol=1e-12)
    np.testing.assert_allclose(dist(temperature=0.5)[0], squared / squared.sum(), rtol=1e-12)


@pytest.mark.parametrize("options", [{}, dict(temperature=0.7, top_k=4, top_p=0.5)])
def test_sampling_follows_the_distribution(options):
    """20000 draws of the first token: every frequency within 4.5 standard errors of the
    exact probability from sampling_distribution (a wrong distribution fails; the seed
    makes it repeatable), and no token outside the top-k/nucleus is ever drawn."""
    model = tiny_gpt(4, vocab=6)
    model.eval()
    prompt = np.zeros((20000, 1), np.int64)
    mt.manual_seed(0)
    drawn = host(generate.sample(model, prompt, 1, **options))[:, 1]
    with mt.no_grad():
        logits = model(mt.tensor(prompt[:1])).data[:, -1].astype(np.float64)
    expected = host(generate.sampling_distribution(logits, **options))[0]
    observed = np.bincount(drawn, minlength=6) / len(drawn)
    assert (observed[expected == 0] == 0).all()
    tolerance = 4.5 * np.sqrt(expected * (1 - expected) / len(drawn))
    assert (np.abs(observed - expected) <= tolerance).all(), (observed, expected)
    if options:
        assert 1 < (expected > 0).sum() < 4  # the nucleus bites on this model


def test_bad_arguments():
    model = tiny_gpt(0)
    with pytest.raises(ValueError, match="temperature"):
        generate.sample(model, np.zeros((1, 1), np.int64), 2, temperature=0)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\], got 0"):
        generate.sample(model, np.zeros((1, 1), np.int64), 2, top_p=0)
    with pytest.raises(ValueError, match="integer"):
        generate.greedy(model, np.zeros((1, 1)), 2)
    with pytest.raises(ValueError, match="beam_size"):
        generate.beam_search(model, np.zeros((1, 1), np.int64), 2, beam_size=0)
