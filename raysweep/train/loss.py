"""Next-token cross-entropy that never holds the whole batch's logits in fp32.

The plain `F.cross_entropy(logits.float(), ...)` keeps, for a batch of N tokens over a vocabulary
of V, the logits, an fp32 copy of them (on GPU, where autocast makes them bf16), the fp32
log-softmax it saves for backward and, in backward, two more N×V gradients. With SmolLM2's
49,152-token vocabulary that is ≈ 0.2 GB per fp32 copy per 1,024-token sequence, the largest part
of a 135M model's step (the public reproduction of the paper measured ~80% of GPU memory).

`cross_entropy` below computes the same function chunk by chunk over tokens: the forward keeps
the logits as they are (bf16 under autocast) and one fp32 log-sum-exp per token; the backward
rebuilds each chunk's softmax from them. Peak extra memory is one chunk of fp32 temporaries plus
the logits' gradient in the logits' own dtype. Plain torch (no library): Liger's and Apple's
fused linear cross-entropy kernels would also skip the logits themselves, but they replace the
model's output layer, need Triton (no CPU path) and are not installable on the machines the
project runs on; this keeps the model untouched (DDP, torch.compile, LoRA and checkpoints see the
same module).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Elements of one chunk's fp32 temporaries: 16M elements (64 MB), e.g. 341 tokens of a 49,152
# vocabulary or 8,192 tokens of a 2,048 one. A batch whose logits fit in one chunk takes the plain
# path, bit for bit what it always was.
CHUNK_ELEMENTS = 1 << 24


def chunk_tokens(vocab: int, elements: int = CHUNK_ELEMENTS) -> int:
    """Tokens per chunk for a vocabulary: at least one."""
    return max(1, elements // max(1, vocab))


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Sum of next-token losses over N tokens, computed `chunk` tokens at a time (see the module doc)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        n = logits.size(0)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        total = torch.zeros((), dtype=torch.float32, device=logits.device)
        for i in range(0, n, chunk):
            part = logits[i : i + chunk].float()
            lse[i : i + chunk] = torch.logsumexp(part, dim=-1)
            picked = part.gather(1, targets[i : i + chunk, None]).squeeze(1)
            total += (lse[i : i + chunk] - picked).sum()
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        chunk, n = ctx.chunk, logits.size(0)
        grad = torch.empty_like(logits)
        for i in range(0, n, chunk):
            log_p = logits[i : i + chunk].float() - lse[i : i + chunk, None]
            t = targets[i : i + chunk, None]
            # softmax minus the one-hot target; at the target p − 1 = expm1(log p), exact where p is near 1
            p = log_p.exp().scatter_(1, t, torch.expm1(log_p.gather(1, t)))
            grad[i : i + chunk] = (p * grad_total).to(logits.dtype)
        return grad, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean", chunk: int | None = None) -> torch.Tensor:
    """Next-token cross-entropy of `logits` (..., V) against `targets` (...): the mean (or the sum)
    over tokens, in fp32 whatever the logits' dtype. Chunked over tokens when the logits exceed one
    chunk (`chunk` tokens; default from CHUNK_ELEMENTS), plain otherwise: the same function either
    way, to float rounding (tests/train/test_loss.py)."""
    v = logits.size(-1)
    flat, tgt = logits.reshape(-1, v), targets.reshape(-1)
    chunk = chunk or chunk_tokens(v)
    if flat.size(0) <= chunk:
        return F.cross_entropy(flat.float(), tgt, reduction=reduction)
    total = _ChunkedCrossEntropy.apply(flat, tgt, chunk)
    return total / tgt.numel() if reduction == "mean" else total
