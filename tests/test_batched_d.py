"""Issue 27: the discriminators' update in two batched calls (attnfast/models/segments.py,
GANTrainer._d_scores) against the original's five separate calls: BatchNorm per segment equals one
BatchNorm call per segment (outputs, gradients, running statistics, num_batches_tracked), and the
trainer's logits, gradients and training steps equal the separate calls' up to rounding."""
import pytest
import torch
from test_train import damsm_checkpoint, tiny_config  # noqa: F401 - fixtures
from torch import nn

from attnfast.models import D_NET
from attnfast.models.segments import SegmentBatchNorm2d, batch_segments
from attnfast.trainer.gan import GANTrainer
from attnfast.trainer.speed import SpeedOptions

CPU = torch.device("cpu")


def _pair(channels: int, momentum=0.1):
    """A SegmentBatchNorm2d and an nn.BatchNorm2d with the same (random) parameters and buffers."""
    seg, ref = SegmentBatchNorm2d(channels, momentum=momentum), nn.BatchNorm2d(channels, momentum=momentum)
    with torch.no_grad():
        for module in (seg, ref):
            module.weight.copy_(torch.linspace(0.5, 1.5, channels))
            module.bias.copy_(torch.linspace(-0.2, 0.3, channels))
            module.running_mean.copy_(torch.linspace(-1, 1, channels))
            module.running_var.copy_(torch.linspace(0.5, 2, channels))
    return seg, ref


@pytest.mark.parametrize("segments", [(4, 4), (5, 5, 4), (1, 3), (7,), (2, 9, 1, 3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_segment_batch_norm_equals_one_batch_norm_per_segment(segments, dtype):
    channels = 3
    seg, ref = _pair(channels)
    seg, ref = seg.to(dtype), ref.to(dtype)
    x = torch.randn(sum(segments), channels, 5, 3, dtype=dtype) * 3 + 1
    x_seg, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    with batch_segments(seg, segments):
        out = seg(x_seg)
    expected = torch.cat([ref(part) for part in x_ref.split(list(segments))])
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(out, expected)
    assert torch.equal(x_seg.grad, x_ref.grad)
    torch.testing.assert_close(seg.weight.grad, ref.weight.grad)      # the per-segment sums, added in another order
    torch.testing.assert_close(seg.bias.grad, ref.bias.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(seg, name), getattr(ref, name)), name
    assert int(seg.num_batches_tracked) == len(segments)
    assert seg.segments is None                                           # reset after the context


def test_segment_batch_norm_gradcheck_float64():
    seg, _ = _pair(2)
    seg = seg.double()
    x = torch.randn(7, 2, 3, 3, dtype=torch.float64, requires_grad=True)

    def f(inp):
        with batch_segments(seg, (3, 4)):
            return seg(inp)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))                          # a gradient penalty's double backward


def test_segment_batch_norm_outside_the_context_and_in_eval_is_batch_norm():
    seg, ref = _pair(4)
    x = torch.randn(6, 4, 2, 2)
    assert torch.equal(seg(x), ref(x))                                    # no segments: plain BatchNorm
    seg.eval(), ref.eval()
    with batch_segments(seg, (3, 3)):
        assert torch.equal(seg(x), ref(x))                                # eval: running statistics, per sample
    assert set(seg.state_dict()) == set(ref.state_dict())


def test_segment_errors_and_the_context_resets_on_error():
    seg, _ = _pair(2)
    with pytest.raises(ValueError, match="sum of the batch segments"), batch_segments(seg, (3, 3)):
        seg(torch.randn(5, 2, 2, 2))
    assert seg.segments is None
    with pytest.raises(ValueError, match="positive sizes"), batch_segments(seg, (3, 0)):
        pass
    with pytest.raises(ValueError, match="positive sizes"), batch_segments(seg, ()):
        pass


def test_every_discriminator_batch_norm_is_per_segment():
    for resolution in (32, 64, 128, 256):
        netD = D_NET(resolution, ndf=4, nef=8)
        norms = [m for m in netD.modules() if isinstance(m, nn.BatchNorm2d)]
        assert norms and all(isinstance(m, SegmentBatchNorm2d) for m in norms), resolution


# ---------------------------------------------------------------------- the trainer's D update
def _trainers(tmp_path, damsm_checkpoint, *extra):
    """Two trainers with the same weights: the batched D update (default) and the separate calls."""
    out = []
    for name, batched in (("batched", True), ("separate", False)):
        torch.manual_seed(5)
        out.append(GANTrainer(tiny_config(*extra), tmp_path / name, CPU, damsm_checkpoint,
                              speed=SpeedOptions(batched_d=batched, dataset_on_device_mb=0)))
    return out


@pytest.mark.parametrize("extra", [(), ("gan.projection=true",)])
def test_d_scores_and_gradients_equal_the_separate_calls(tmp_path, damsm_checkpoint, extra):
    batched, separate = _trainers(tmp_path, damsm_checkpoint, *extra)
    torch.manual_seed(0)
    size = 6
    sentence = torch.randn(size, batched.config["model"]["embedding_dim"])
    for i, (net_b, net_s) in enumerate(zip(batched.netsD, separate.netsD, strict=True)):
        side = net_b.resolution
        real, fake = torch.rand(size, 3, side, side) * 2 - 1, torch.rand(size, 3, side, side) * 2 - 1
        scores_b = batched._d_scores(net_b, real, fake, sentence, sentence)
        scores_s = separate._d_scores(net_s, real, fake, sentence, sentence)
        assert [tuple(s.shape) for s in scores_b] == [(size,), (size,), (size - 1,), (size,), (size,)]
        for got, want in zip(scores_b, scores_s, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        sum(s.sum() for s in scores_b).backward()
        sum(s.sum() for s in scores_s).backward()
        grads_b = {k: p.grad for k, p in net_b.named_parameters()}
        for k, p in net_s.named_parameters():
            # float32 sums in another order: compared at the scale of the gradient (cancellation)
            error = (grads_b[k] - p.grad).abs().max().item()
            assert error <= 1e-4 * p.grad.abs().max().item() + 1e-7, (f"D{i} {k}", error)
        buffers_b = dict(net_b.named_buffers())
        for k, b in net_s.named_buffers():                                 # running stats, step counts
            torch.testing.assert_close(buffers_b[k], b, rtol=1e-5, atol=1e-6, msg=f"D{i} {k}")


@pytest.mark.parametrize("extra", [(), ("gan.diffaugment=color,translation,cutout", "gan.gp=magp", "gan.loss=hinge")])
def test_training_steps_equal_the_separate_calls_up_to_rounding(tmp_path, damsm_checkpoint, extra):
    """Two steps from the same seed: every loss and every weight as with the separate calls (the first
    D update differs only by the rounding of the batched convolutions; Adam's first steps magnify
    rounding in near-zero gradients to +-lr, hence the looser weight tolerance)."""
    histories, states = [], []
    for trainer in _trainers(tmp_path, damsm_checkpoint, *extra):
        torch.manual_seed(11)
        batches = trainer.batches()
        histories.append([trainer.train_step(next(batches)) for _ in range(2)])
        states.append({k: v.clone() for k, v in trainer.netG.state_dict().items()}
                      | {f"D{i}.{k}": v.clone() for i, d in enumerate(trainer.netsD) for k, v in d.state_dict().items()})
    for step, (got, want) in enumerate(zip(*histories, strict=True)):
        assert set(got) == set(want)
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-3 if step else 1e-4, atol=1e-5,
                                       msg=f"step {step + 1} {name}")
    lr = tiny_config()["gan"]["d_lr"]
    for name, value in states[1].items():
        torch.testing.assert_close(states[0][name], value, rtol=1e-4, atol=2.5 * lr, msg=name)
