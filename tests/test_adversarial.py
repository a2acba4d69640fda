"""The D loss in one weighted BCE call (attnfast.ops.adversarial, issue 27) against the reference's five
BCE means: values and gradients to float32 rounding, with and without the unconditional head, every
dtype the trainer passes (float32, bf16 logits under autocast), and the fallback without a
mismatched pair."""
import pytest
import torch

from attnfast.ops.adversarial import discriminator_loss_one_call
from attnfast.reference.gan_losses import discriminator_loss_from_logits
from attnfast.trainer.gan_options import GANOptions


def _logits(batch: int, uncond: bool, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sizes = [batch, batch, batch - 1] + ([batch, batch] if uncond else [])
    return [(torch.randn(n, generator=generator) * 4).to(dtype).requires_grad_(True) for n in sizes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("uncond", [True, False])
@pytest.mark.parametrize("batch", [2, 5, 16])
def test_one_call_equals_the_reference(dtype, uncond, batch):
    fast_in = _logits(batch, uncond, dtype, seed=batch)
    ref_in = [t.detach().clone().requires_grad_(True) for t in fast_in]
    fast, ref = discriminator_loss_one_call(*fast_in), discriminator_loss_from_logits(*ref_in)
    assert fast.dtype == ref.dtype == torch.promote_types(dtype, torch.float32) and fast.dim() == 0
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(fast, ref, rtol=tol, atol=tol)
    fast.backward()
    ref.backward()
    for a, b in zip(fast_in, ref_in, strict=True):
        assert a.grad.dtype == dtype
        torch.testing.assert_close(a.grad.double(), b.grad.double(), rtol=1e-2 if dtype == torch.bfloat16 else tol,
                                   atol=1e-4 if dtype == torch.bfloat16 else tol)


def test_no_mismatched_pair_falls_back_to_the_reference():
    logits = _logits(1, True, torch.float32, seed=0)            # wrong_cond has no rows (B = 1)
    fast, ref = discriminator_loss_one_call(*logits), discriminator_loss_from_logits(*logits)
    assert torch.equal(fast, ref) or (fast.isnan() and ref.isnan())


def test_gan_options_pick_it_for_the_batched_update_only():
    options = GANOptions()
    logits = [t.detach() for t in _logits(6, True, torch.float32, seed=3)]
    one = options.d_loss(*logits, one_call=True)
    five = options.d_loss(*logits)
    assert torch.equal(five, discriminator_loss_from_logits(*logits))
    assert torch.equal(one, discriminator_loss_one_call(*logits))
    torch.testing.assert_close(one, five)
