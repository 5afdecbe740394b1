"""Neural-network modules, built on ``minitransformer.functional``.

Read in this order: module (containers) -> layers -> attention -> transformer (blocks)
-> models (whole networks) -> bert (pre-training and tagging heads)
-> vit (the Vision Transformer) -> quantize (int8 weights for inference).
"""
from .attention import AttentionCache, KVCache, MultiHeadAttention
from .bert import MaskedLanguageModel, MaskedLMHead, TokenClassifier, mask_tokens
from .layers import (Dropout, Embedding, LayerNorm, LearnedPositionalEmbedding, Linear,
                     RelativePositionBias, RMSNorm, SinusoidalPositionalEncoding,
                     relative_position_bucket)
from .models import (GPT, EncoderClassifier, EncoderClassifierConfig, GPTConfig,
                     Transformer, TransformerConfig)
from .module import Module, ModuleList, Parameter
from .quantize import QuantizedLinear, quantize_int8, weight_bytes
from .transformer import (Decoder, DecoderLayer, Encoder, EncoderLayer, FeedForward,
                          TransformerBlock)
from .vit import ViT, ViTConfig
