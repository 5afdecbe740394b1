"""Losses, each fused into one node: cross-entropy (log-softmax and negative
log-likelihood, against class ids or probability targets) and the distillation loss
of Hinton et al. (2015), a temperature-softened KL divergence from teacher to student."""
from ..autograd import Function, as_array
from .common import floating, indices, row_slices, widened


class CrossEntropy(Function):
    """Mean over the counted rows of -sum_c y_c log softmax(z)_c, the target distribution
    y = (1 - e) onehot(target) + e / C for label smoothing e: logits z (N, C) (or
    (..., C), flattened), targets (N,). As sum_c y_c = 1, d/dz = softmax(z) - y,
    divided by the count, and zero on ignored rows."""
    def forward(self, logits, targets, counted, smoothing):
        xp = self.xp
        self.shape, self.targets, self.counted = logits.shape, targets, counted
        self.smoothing = smoothing
        z = widened(logits.reshape(-1, logits.shape[-1]))  # float32 sums for float16 logits
        self.rows = xp.arange(z.shape[0])
        self.exps = xp.empty_like(z)  # softmax = exps / total, in backward
        picked, self.total = xp.empty(z.shape[0], z.dtype), xp.empty(z.shape[0], z.dtype)
        mean_shifted = xp.zeros(z.shape[0], z.dtype)
        for rows in row_slices(z):  # block by block, so that each block's passes hit the cache
            block = z[rows]
            if counted is not None:  # ignored rows must not matter, even if inf or NaN
                block = xp.where(counted[rows, None], block, z.dtype.type(0))
            shifted = xp.subtract(block, block.max(axis=1, keepdims=True), out=self.exps[rows])
            picked[rows] = shifted[xp.arange(len(shifted)), targets[rows]]
            if smoothing:
                mean_shifted[rows] = shifted.mean(axis=1)
            self.total[rows] = xp.exp(shifted, out=shifted).sum(axis=1)
        log_total = xp.log(self.total)
        # -log softmax = log_total - shifted: at the target, and averaged over classes
        losses = (1 - smoothing) * (log_total - picked) + smoothing * (log_total - mean_shifted)
        self.count = z.shape[0]
        if counted is not None:
            self.count = int(counted.sum())
            losses *= counted
        return xp.asarray(losses.sum() / max(self.count, 1), dtype=z.dtype)

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


class SoftCrossEntropy(Function):
    """Mean over the N rows of -sum_c y_c log softmax(z)_c for probability targets y:
    logits z and targets (N, C) (or (..., C), flattened); y is smoothed to
    (1 - e) y + e / C. d/dz = softmax(z) sum_c y_c - y, divided by N (the sum is 1 for
    distributions; it is kept so that any non-negative y gets its true gradient)."""
    def forward(self, logits, targets, smoothing):
        xp = self.xp
        self.shape = logits.shape
        z = widened(logits.reshape(-1, logits.shape[-1]))  # float32 sums for float16 logits
        y = targets.reshape(z.shape).astype(z.dtype)  # a copy, never the caller's array
        if smoothing:
            y *= 1 - smoothing
            y += smoothing / z.shape[1]
        log_p = z - z.max(axis=1, keepdims=True)
        log_p -= xp.log(xp.exp(log_p).sum(axis=1, keepdims=True))
        self.y, self.log_p, self.count = y, log_p, max(z.shape[0], 1)
        return xp.asarray(-(y * log_p).sum() / self.count, dtype=z.dtype)

    def backward(self, grad):
        gz = self.xp.exp(self.log_p)
        gz *= self.y.sum(axis=1, keepdims=True)
        gz -= self.y
        gz *= grad / self.count
        return gz.reshape(self.shape)


def cross_entropy(logits, targets, ignore_index=None, label_smoothing=0.0):
    """Mean cross-entropy of ``logits`` (N, C) or (B, L, C) -- classes last, where
    PyTorch wants (B, C, L) -- against integer ``targets`` (N,) or (B, L), or against
    probability targets (soft labels, e.g. a teacher's) of the logits' own shape.

    Otherwise exactly ``torch.nn.functional.cross_entropy``: positions whose target is
    ``ignore_index`` count neither in the sum nor in the mean's denominator; with
    ``label_smoothing`` e the target is (1 - e) one-hot + e / C. When every position is
    ignored the loss is 0 with zero gradient (PyTorch returns NaN). Probability
    targets are data, not differentiated, and take no ``ignore_index``; every row counts.
    """
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy: logits must be (N, C) or (B, L, C), "
                         f"got shape {logits.shape}")
    floating("cross_entropy", logits=logits)
    targets = as_array(targets, logits.device)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], "
                         f"got {label_smoothing}")
    if targets.dtype.kind == "f":
        if targets.shape != logits.shape or ignore_index is not None:
            raise ValueError(f"cross_entropy: probability targets (float dtype) must have "
                             f"the logits' shape {logits.shape} and no ignore_index; got "
                             f"shape {targets.shape}, ignore_index={ignore_index} (class "
                             f"ids must be integers)")
        return SoftCrossEntropy.apply(logits, targets=targets, smoothing=label_smoothing)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: targets have shape {targets.shape}, expected "
                         f"{logits.shape[:-1]} for logits of shape {logits.shape}")
    targets, counted = targets.reshape(-1), None
    if ignore_index is not None:
        counted = targets != ignore_index
        targets = targets * counted  # ignored rows point at class 0 and are zeroed later
    targets = indices(targets, logits, logits.shape[-1], "cross_entropy: targets")
    return CrossEntropy.apply(logits, targets=targets, counted=counted,
                              smoothing=label_smoothing)


class Distillation(Function):
    """T² KL(p || q) averaged over the N rows, p = softmax(t / T) the teacher's and
    q = softmax(s / T) the student's distribution: logits s, t (N, C) (or (..., C)).
    Differentiating KL = sum_c p_c (log p_c - log q_c) through both softmaxes:
      d/ds = T (q - p) / N,   d/dt = T p (log p - log q - KL_row) / N.
    The T² keeps the student's gradient near (s - t) / (C N) for large T, so a change
    of temperature needs no change of learning rate (Hinton et al., section 2)."""
    def forward(self, student, teacher, temperature):
        xp, c = self.xp, student.shape[-1]
        self.shape, self.t = student.shape, temperature
        logs = []
        for logits in (student, teacher):
            z = widened(logits.reshape(-1, c)) / temperature  # float32 for float16
            z -= z.max(axis=1, keepdims=True)
            z -= xp.log(xp.exp(z).sum(axis=1, keepdims=True))
            logs.append(z)
        self.log_q, self.log_p = logs
        self.p, self.count = xp.exp(self.log_p), max(logs[0].shape[0], 1)
        self.kl_rows = (self.p * (self.log_p - self.log_q)).sum(axis=1, keepdims=True)
        return xp.asarray(temperature ** 2 * self.kl_rows.sum() / self.count,
                          dtype=self.p.dtype)

    def backward(self, grad):
        step, (wants_student, wants_teacher) = grad * self.t / self.count, self.needs_input_grad
        g_student = g_teacher = None
        if wants_student:
            g_student = (self.xp.exp(self.log_q) - self.p) * step
            g_student = g_student.reshape(self.shape)
        if wants_teacher:
            g_teacher = self.log_p - self.log_q
            g_teacher -= self.kl_rows
            g_teacher *= self.p * step
            g_teacher = g_teacher.reshape(self.shape)
        return g_student, g_teacher


def distillation_loss(student_logits, teacher_logits, temperature=1.0):
    """Knowledge distillation's soft-target loss: T² KL(softmax(teacher / T) ||
    softmax(student / T)), the mean over rows of logits (N, C) or (B, L, C), both of one
    shape. Equal to PyTorch's ``T**2 * kl_div(log_softmax(s / T), log_softmax(t / T),
    reduction="batchmean", log_target=True)`` on (N, C). Hinton et al. train on
    ``a * distillation_loss(s, t, T) + (1 - a) * cross_entropy(s, labels)``. Pass the
    teacher's logits detached (or computed under ``no_grad``) to train only the student.
    """
    if student_logits.ndim < 2 or teacher_logits.shape != student_logits.shape:
        raise ValueError(f"distillation_loss: student and teacher logits must have one "
                         f"shape (N, C) or (B, L, C), got {student_logits.shape} and "
                         f"{teacher_logits.shape}")
    floating("distillation_loss", student_logits=student_logits,
             teacher_logits=teacher_logits)
    if not temperature > 0:
        raise ValueError(f"distillation_loss: temperature must be positive, got "
                         f"{temperature}")
    return Distillation.apply(student_logits, teacher_logits, temperature=temperature)
