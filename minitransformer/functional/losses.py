"""Cross-entropy: log-softmax and negative log-likelihood fused into one node."""
from ..autograd import Function
from .common import array_like, indices


class CrossEntropy(Function):
    """Mean over the counted rows of -sum_c y_c log softmax(z)_c, the target distribution
    y = (1 - e) onehot(target) + e / C for label smoothing e: logits z (N, C) (or
    (..., C), flattened), targets (N,). As sum_c y_c = 1, d/dz = softmax(z) - y,
    divided by the count, and zero on ignored rows."""
    def forward(self, logits, targets, counted, smoothing):
        xp = self.xp
        self.shape, self.targets, self.counted = logits.shape, targets, counted
        self.smoothing = smoothing
        z = logits.reshape(-1, logits.shape[-1])
        self.rows = xp.arange(z.shape[0])
        shifted = z - z.max(axis=1, keepdims=True)
        picked = shifted[self.rows, targets]
        mean_shifted = shifted.mean(axis=1) if smoothing else 0
        self.exps = xp.exp(shifted, out=shifted)  # softmax = exps / total, in backward
        self.total = self.exps.sum(axis=1)
        log_total = xp.log(self.total)
        # -log softmax = log_total - shifted: at the target, and averaged over classes
        losses = (1 - smoothing) * (log_total - picked) + smoothing * (log_total - mean_shifted)
        self.count = z.shape[0]
        if counted is not None:
            self.count = int(counted.sum())
            losses *= counted
        return xp.asarray(losses.sum() / max(self.count, 1), dtype=logits.dtype)

    def backward(self, grad):
        # Backward runs once per graph (the engine frees it), so exps may be overwritten.
        step = grad / max(self.count, 1)
        gz = self.exps
        gz *= (step / self.total)[:, None]
        gz[self.rows, self.targets] -= (1 - self.smoothing) * step
        if self.smoothing:
            gz -= self.smoothing / gz.shape[1] * step
        if self.counted is not None:
            gz[~self.counted] = 0
        return gz.reshape(self.shape)


def cross_entropy(logits, targets, ignore_index=None, label_smoothing=0.0):
    """Mean cross-entropy of ``logits`` (N, C) or (B, L, C) -- classes last, where
    PyTorch wants (B, C, L) -- against integer ``targets`` (N,) or (B, L).

    Otherwise exactly ``torch.nn.functional.cross_entropy``: positions whose target is
    ``ignore_index`` count neither in the sum nor in the mean's denominator; with
    ``label_smoothing`` e the target is (1 - e) one-hot + e / C. When every position is
    ignored the loss is 0 with zero gradient (PyTorch returns NaN).
    """
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy: logits must be (N, C) or (B, L, C), "
                         f"got shape {logits.shape}")
    targets = array_like(targets, logits)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets have shape {targets.shape}, expected "
                         f"{logits.shape[:-1]} for logits of shape {logits.shape}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], "
                         f"got {label_smoothing}")
    targets, counted = targets.reshape(-1), None
    if ignore_index is not None:
        counted = targets != ignore_index
        targets = targets * counted  # ignored rows point at class 0 and are zeroed later
    targets = indices(targets, logits, logits.shape[-1], "cross_entropy: targets")
    return CrossEntropy.apply(logits, targets=targets, counted=counted,
                              smoothing=label_smoothing)
