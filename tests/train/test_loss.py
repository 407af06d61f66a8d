"""The chunked cross-entropy is the plain one: the same values and gradients, whatever the chunk."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from raysweep.train.loss import chunk_tokens, cross_entropy


@settings(max_examples=40, deadline=None)
@given(
    tokens=st.integers(1, 300),
    vocab=st.integers(2, 400),
    chunk=st.integers(1, 64),
    scale=st.floats(0.1, 30.0),
    seed=st.integers(0, 2**31 - 1),
    reduction=st.sampled_from(["mean", "sum"]),
)
def test_chunked_equals_plain_in_value_and_gradient(tokens, vocab, chunk, scale, seed, reduction):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(tokens, vocab, generator=g, dtype=torch.float64) * scale).float()
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    plain = F.cross_entropy(a, targets, reduction=reduction)
    chunked = cross_entropy(b, targets, reduction=reduction, chunk=chunk)
    plain.backward()
    chunked.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-5, abs=1e-5)
    # per-token gradients lie in [-1, 1]; at a target whose p is near 1 the plain p − 1 loses digits
    assert torch.allclose(b.grad, a.grad, rtol=1e-4, atol=5e-6)


def test_bf16_logits_get_an_fp32_loss_and_a_bf16_gradient():
    """On GPU the logits come from autocast in bf16: the loss is computed in fp32 either way."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, 300, generator=g).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, 300, (2, 50), generator=g)
    loss = cross_entropy(logits, targets, chunk=7)
    assert loss.dtype == torch.float32
    plain = F.cross_entropy(logits.detach().float().reshape(-1, 300), targets.reshape(-1))
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16


def test_a_batch_within_one_chunk_takes_the_plain_path_bit_for_bit():
    """Small studies' logits fit in one chunk: their losses are exactly what they always were."""
    logits, targets = torch.randn(64, 128), torch.randint(0, 128, (64,))
    assert chunk_tokens(128) >= 64
    assert torch.equal(cross_entropy(logits, targets), F.cross_entropy(logits, targets))


@pytest.mark.gpu_path
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_chunked_loss_at_smollm2s_49152_vocabulary(dtype):
    """At the paper's vocabulary a micro-batch spans many chunks (341 tokens each): the chunked loss
    and its gradient equal the plain fp32 ones, for fp32 logits and for the bf16 ones autocast makes."""
    vocab, g = 49_152, torch.Generator().manual_seed(3)
    tokens = 3 * chunk_tokens(vocab) + 17  # four chunks, the last a partial one
    logits = (torch.randn(tokens, vocab, generator=g) * 4).to(dtype)
    targets = torch.randint(0, vocab, (tokens,), generator=g)
    a, b = logits.detach().float().requires_grad_(), logits.clone().requires_grad_()
    plain = F.cross_entropy(a, targets)
    chunked = cross_entropy(b, targets)
    assert chunk_tokens(vocab) < tokens and chunked.dtype == torch.float32
    plain.backward()
    chunked.backward()
    assert chunked.item() == pytest.approx(plain.item(), rel=1e-6)
    atol = 1e-8 if dtype == torch.float32 else 2e-3 / tokens  # a bf16 gradient keeps 8 bits of p − 1
    assert torch.allclose(b.grad.float(), a.grad, rtol=1e-2 if dtype == torch.bfloat16 else 1e-4, atol=atol)
