"""Smoke tests of the demos: each one's ``main`` runs in-process with a tiny model for a
few steps, prints its configuration, progress, metrics and examples, and returns its
final metrics. (The full-size runs and their figures are in the README.)"""
import datetime
import pathlib
import re
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import minitransformer as mt

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "demos"))

import common  # noqa: E402
import copy_task  # noqa: E402
import date_translation  # noqa: E402
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


def test_copy_task_learns_to_copy(backend, capsys):
    # Short sequences over a tiny model: learnable in a few seconds, and a broken
    # model, loss, mask or decoder would leave the accuracy near 0.
    metrics, _ = run_demo(copy_task, backend, capsys, "--task", "copy", "--steps", "150",
                          "--min-len", "2", "--max-len", "3", "--held-out", "50",
                          "--lr", "1e-2", "--warmup", "20", "--d-model", "32")
    assert metrics["exact_match"] >= 0.9


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
    assert date_translation.iso(date) == date.strftime("%Y-%m-%d")
    assert date.strftime("%a") in written[-1] and date.strftime("%A") in written[3]
    assert set("".join(written)) <= set(date_translation.VOCABULARY.symbols)


def test_ordinal_suffixes():
    days = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 30, 31]
    assert [date_translation.ordinal(d) for d in days] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "30th",
        "31st"]


def test_cupy_flag_without_a_gpu_exits_with_a_clear_message(capsys):
    if mt.gpu_available():
        pytest.skip("a GPU is present, so --backend cupy works")
    with pytest.raises(SystemExit) as exit_info:
        copy_task.main(["--backend", "cupy", "--steps", "1"])
    assert exit_info.value.code == 2
    assert "CuPy" in capsys.readouterr().err
    mt.set_backend("numpy")


def test_vocabulary_round_trip():
    vocabulary = common.Vocabulary("cab")
    assert vocabulary.symbols[3:] == ["a", "b", "c"] and len(vocabulary) == 6
    ids = vocabulary.encode("abc")
    assert ids == [3, 4, 5]
    assert vocabulary.decode([common.BOS, *ids, common.EOS, 3]) == "abc"
    plain = common.Vocabulary("ba", specials=False)
    assert plain.encode("ab") == [0, 1] and plain.decode([1, 0]) == "ba"
