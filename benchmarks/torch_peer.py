"""The same encoder-decoder in PyTorch (torch.nn.Transformer), for same-run comparisons.

Only the benchmark imports this file, and only when torch is installed.
"""
import math
import warnings

import torch
from torch import nn


# torch's encoder warns that its eval-mode nested-tensor fast path is a prototype.
warnings.filterwarnings("ignore", message=".*nested tensors is in prototype.*")


class SinusoidalPositions(nn.Module):
    def __init__(self, d_model, max_len=512):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * div)
        table[:, 1::2] = torch.cos(position * div)
        self.register_buffer("table", table)

    def forward(self, x):
        return x + self.table[: x.shape[1]]


class TorchSeq2Seq(nn.Module):
    """Embeddings scaled by sqrt(d_model), sinusoidal positions, classic post-LN
    torch.nn.Transformer with ReLU FFN, output projection."""

    def __init__(self, vocab, d_model, heads, d_ff, layers, dropout, pad_id=0):
        super().__init__()
        self.d_model, self.pad_id = d_model, pad_id
        self.src_embed = nn.Embedding(vocab, d_model)
        self.tgt_embed = nn.Embedding(vocab, d_model)
        self.positions = SinusoidalPositions(d_model)
        self.dropout = nn.Dropout(dropout)
        self.transformer = nn.Transformer(d_model, heads, layers, layers, d_ff, dropout,
                                          batch_first=True)
        self.generator = nn.Linear(d_model, vocab)

    def embed(self, table, ids):
        return self.dropout(self.positions(table(ids) * math.sqrt(self.d_model)))

    def encode(self, src):
        return self.transformer.encoder(self.embed(self.src_embed, src),
                                        src_key_padding_mask=src == self.pad_id)

    def decode(self, memory, src, tgt):
        causal = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=torch.bool)
        h = self.transformer.decoder(self.embed(self.tgt_embed, tgt), memory, tgt_mask=causal,
                                     tgt_key_padding_mask=tgt == self.pad_id,
                                     memory_key_padding_mask=src == self.pad_id)
        return self.generator(h)

    def forward(self, src, tgt):
        return self.decode(self.encode(src), src, tgt)


class TorchRunner:
    """One training step and greedy decoding for the benchmark, in PyTorch."""

    def __init__(self, spec, device="cpu", seed=0):
        torch.manual_seed(seed)
        self.device = device
        self.model = TorchSeq2Seq(spec.vocab, spec.d_model, spec.heads, spec.d_ff,
                                  spec.layers, spec.dropout).to(device)
        self.loss = nn.CrossEntropyLoss(ignore_index=0, label_smoothing=spec.label_smoothing)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, betas=(0.9, 0.98),
                                          eps=1e-9)

    def tensor(self, array):
        return torch.from_numpy(array).to(self.device)

    def train_step(self, src, tgt_in, tgt_out):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.tensor(src), self.tensor(tgt_in))
        loss = self.loss(logits.reshape(-1, logits.shape[-1]), self.tensor(tgt_out).reshape(-1))
        loss.backward()
        self.optimizer.step()
        return loss.item()

    @torch.no_grad()
    def greedy(self, src, new_tokens, bos):
        """Greedy decoding without a cache: the whole prefix is re-decoded each step."""
        self.model.eval()
        src = self.tensor(src)
        memory = self.model.encode(src)
        out = torch.full((src.shape[0], 1), bos, dtype=src.dtype, device=src.device)
        for _ in range(new_tokens):
            logits = self.model.decode(memory, src, out)
            out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        return out.cpu().numpy()

    def synchronize(self):
        if self.device != "cpu":
            torch.cuda.synchronize()
