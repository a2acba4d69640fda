"""Issue 8 (training at full speed): the unpacked LSTM, the text feature cache, the CUDA-graph step's
static-buffer logic and fallbacks, torch.compile of the step, AMP dtypes, the train CLI flags.

The CPU tests check every piece the CUDA-graph path runs (the static-buffer step equals the eager
step; the capture/fallback decisions); the capture itself is under ``@pytest.mark.gpu``.
"""
import logging

import pytest
import torch
from test_train import TINY, tiny_config
from tolerances import assert_close

from attnfast import train as train_cli
from attnfast.engine import amp as amp_lib
from attnfast.models import RNN_ENCODER
from attnfast.models.text_encoding import encode_text
from attnfast.ops import fast_autograd
from attnfast.trainer import common
from attnfast.trainer import text_cache as text_cache_module
from attnfast.trainer.damsm import train_damsm
from attnfast.trainer.gan import GANTrainer
from attnfast.trainer.graphs import GraphedGANStep, batch_shapes, run_blockers
from attnfast.trainer.speed import SpeedOptions
from attnfast.trainer.text_cache import TextFeatureCache

CPU = torch.device("cpu")


def _captions(batch, num_words, lens, vocab=30):
    lens = torch.as_tensor(lens)
    caps = torch.randint(1, vocab, (batch, num_words))
    caps[torch.arange(num_words)[None, :] >= lens[:, None]] = 0
    return caps, lens


# ---------------------------------------------------------------------- unpacked RNN
@pytest.mark.parametrize("rnn_type,nlayers,bidirectional", [("LSTM", 1, True), ("GRU", 1, True),
                                                            ("LSTM", 2, True), ("LSTM", 1, False)])
def test_unpacked_rnn_equals_packed(rnn_type, nlayers, bidirectional):
    enc = RNN_ENCODER(30, ninput=16, nhidden=32, rnn_type=rnn_type, nlayers=nlayers,
                      bidirectional=bidirectional).eval()
    caps, lens = _captions(7, 18, [1, 18, 5, 7, 18, 2, 1])      # lengths 1 and max included
    for total in (None, 18, 21):
        words_p, sent_p = enc(caps, lens, total_length=total)
        words_u, sent_u = enc(caps, lens, total_length=total, packed=False)
        if total is None:  # the packed path pads to max(cap_lens) = T here
            assert words_p.shape == words_u.shape
        assert_close(words_u, words_p.double(), name="words")
        assert_close(sent_u, sent_p.double(), name="sentence")
        assert (words_u[0, :, 1:] == 0).all() and (words_u[5, :, 2:] == 0).all()


def test_unpacked_rnn_with_initial_state_and_device_lengths():
    enc = RNN_ENCODER(30, ninput=8, nhidden=16).eval()
    caps, lens = _captions(4, 10, [3, 10, 1, 6])
    hidden = tuple(torch.randn_like(h) for h in enc.init_hidden(4))
    packed = enc(caps, lens, hidden)
    unpacked = enc(caps, lens.to(torch.int32), hidden, packed=False)
    for a, b in zip(unpacked, packed, strict=True):
        assert_close(a, b.double())


def test_unpacked_rnn_errors_name_the_argument():
    enc = RNN_ENCODER(30, ninput=8, nhidden=16).eval()
    caps, lens = _captions(3, 10, [3, 10, 1])
    with pytest.raises(ValueError, match="cap_lens must lie in"):
        enc(caps, torch.tensor([0, 3, 3]), packed=False)
    with pytest.raises(ValueError, match="cap_lens must have shape"):
        enc(caps, torch.tensor([3, 3]), packed=False)
    with pytest.raises(ValueError, match="total_length must be >= T"):
        enc(caps, lens, total_length=8, packed=False)


# ---------------------------------------------------------------------- text cache
def _encoder():
    return RNN_ENCODER(30, ninput=8, nhidden=16, n_steps=10).eval().requires_grad_(False)


def test_text_cache_hits_values_and_bound():
    enc = _encoder()
    cache = TextFeatureCache(enc, 10, max_bytes=3 * (16 * 10 + 16) * 4)   # room for 3 entries
    caps, lens = _captions(4, 10, [3, 10, 1, 6])
    idx, cidx = torch.tensor([5, 6, 7, 8]), torch.tensor([0, 1, 0, 2])
    words, sent = cache.lookup(caps, lens, idx, cidx)
    ref_words, ref_sent = encode_text(enc, caps, lens, 10)
    assert_close(words, ref_words.double(), name="cached words")
    assert_close(sent, ref_sent.double(), name="cached sentence")
    assert words.dtype == torch.float32 and words.shape == (4, 16, 10)
    assert cache.misses == 4 and len(cache) == 3                          # bounded: the oldest dropped
    again_w, again_s = cache.lookup(caps[1:], lens[1:], idx[1:], cidx[1:])
    assert cache.hits == 3 and cache.misses == 4
    assert torch.equal(again_w, words[1:]) and torch.equal(again_s, sent[1:])
    # an entry is the caption's own encoding, whatever shared its batch
    single = cache.lookup(caps[2:3], lens[2:3], idx[2:3], cidx[2:3])[0]
    assert torch.equal(single[0], words[2])


def test_text_cache_is_emptied_when_the_encoder_changes_and_refuses_training_mode():
    enc = _encoder()
    cache = TextFeatureCache(enc, 10, max_bytes=1 << 20)
    caps, lens = _captions(2, 10, [3, 10])
    idx, cidx = torch.tensor([0, 1]), torch.tensor([0, 0])
    before = cache.lookup(caps, lens, idx, cidx)[1]
    state = {k: v + 0.1 for k, v in enc.state_dict().items()}
    enc.load_state_dict(state)
    after = cache.lookup(caps, lens, idx, cidx)[1]
    assert cache.misses == 4 and not torch.allclose(before, after)
    assert_close(after, encode_text(enc, caps, lens, 10)[1].double())
    # the same key with other tokens is another entry (a changed caption is never served stale)
    other = caps.clone()
    other[0, 0] = (other[0, 0] % 29) + 1
    cache.lookup(other, lens, idx, cidx)
    assert cache.misses == 5
    enc.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        cache.lookup(caps, lens, idx, cidx)
    with pytest.raises(ValueError, match="holds no entry"):
        TextFeatureCache(_encoder(), 10, max_bytes=100)
    with pytest.raises(ValueError, match="indices must be a"):
        TextFeatureCache(_encoder(), 10, max_bytes=1 << 20).lookup(caps, lens, torch.tensor([0]), cidx)


def test_batched_text_cache_encodes_a_batch_of_misses_in_one_call(monkeypatch):
    """Issue 27: ``batched`` encodes a batch with misses in one (unpacked) encoder call and stores
    its misses; the entries equal the per-caption ones up to float rounding, are each their own
    storage, and do not depend on their batch-mates (bit for bit, at the same batch size)."""
    enc = _encoder()
    calls = []
    encode = text_cache_module.encode_text
    monkeypatch.setattr(text_cache_module, "encode_text",
                        lambda e, c, l, n, **k: calls.append(c.shape[0]) or encode(e, c, l, n, **k))
    batched = TextFeatureCache(enc, 10, max_bytes=1 << 20, batched=True)
    single = TextFeatureCache(enc, 10, max_bytes=1 << 20)
    caps, lens = _captions(5, 10, [3, 10, 1, 6, 3])
    caps[4] = caps[0]
    idx, cidx = torch.tensor([5, 6, 7, 8, 5]), torch.tensor([0, 1, 0, 2, 0])   # row 4 repeats row 0
    words, sent = batched.lookup(caps, lens, idx, cidx)
    assert calls == [5] and batched.misses == 4 and batched.hits == 1
    ref_words, ref_sent = single.lookup(caps, lens, idx, cidx)
    assert calls[1:] == [1, 1, 1, 1]
    assert_close(words, ref_words.double(), name="batched words")
    assert_close(sent, ref_sent.double(), name="batched sentence")
    assert torch.equal(words[4], words[0])
    calls.clear()
    more, _ = batched.lookup(caps[1:3], lens[1:3], idx[1:3], cidx[1:3])       # all hits: no call
    assert calls == [] and torch.equal(more, words[1:3])
    entry = batched.entries[(6, 1, tuple(caps[1].tolist()))][0]
    assert entry.untyped_storage().nbytes() == entry.numel() * 4               # not a view of the batch
    # batch-invariance: caption 1 encoded again among other captions (a fresh cache, same B = 5)
    other_caps, other_lens = _captions(5, 10, [10, 2, 7, 4, 9])
    other_caps[3], other_lens[3] = caps[1], lens[1]
    fresh = TextFeatureCache(enc, 10, max_bytes=1 << 20, batched=True)
    again, again_sent = fresh.lookup(other_caps, other_lens, torch.tensor([1, 2, 3, 6, 4]),
                                     torch.tensor([0, 0, 0, 1, 0]))
    assert torch.equal(again[3], words[1]) and torch.equal(again_sent[3], sent[1])


# ---------------------------------------------------------------------- GAN steps
@pytest.fixture(scope="module")
def damsm_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("damsm_speed")
    train_damsm(tiny_config(), out, CPU, steps=1, progress=False)
    return out / "damsm.pt"


def _trainer(tmp_path, damsm_ckpt, name, seed=0, amp="off", **speed):
    torch.manual_seed(seed)
    return GANTrainer(tiny_config(), tmp_path / name, CPU, damsm_ckpt, amp, speed=SpeedOptions(**speed))


def _params(trainer):
    out = {f"G.{k}": v for k, v in trainer.netG.state_dict().items()}
    out.update({f"EMA.{k}": v for k, v in trainer.ema.model.state_dict().items()})
    for i, d in enumerate(trainer.netsD):
        out.update({f"D{i}.{k}": v for k, v in d.state_dict().items()})
    return out


def _assert_same_state(a, b, exact=False):
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        if exact or not pa[key].is_floating_point():
            assert torch.equal(pa[key], pb[key]), key
        else:
            assert_close(pa[key], pb[key].double(), name=key)


def _steps(trainer, step_fn, batches, seed):
    out = []
    for k, batch in enumerate(batches):
        torch.manual_seed(seed + k)
        out.append({n: float(v) for n, v in step_fn(batch).items()})
        trainer.step += 1
    return out


def test_static_buffer_step_equals_the_eager_step(tmp_path, damsm_ckpt, fresh_seed):
    eager = _trainer(tmp_path, damsm_ckpt, "eager")
    static = _trainer(tmp_path, damsm_ckpt, "static")
    static_step = GraphedGANStep(static, warmup=1, capture=False)
    it = eager.batches()
    batches = [next(it) for _ in range(2)]
    ref = _steps(eager, eager.eager_step, batches, fresh_seed)
    got = _steps(static, static_step, batches, fresh_seed)
    for r, g in zip(ref, got, strict=True):
        assert r.keys() == g.keys()
        for name in r:
            assert g[name] == pytest.approx(r[name], rel=1e-5, abs=1e-6), name
    _assert_same_state(eager, static)
    assert static.ema.updates == eager.ema.updates == 2
    static_step.flush_checks()                                      # finite: no error


def test_static_step_without_text_cache_runs_the_unpacked_encoder(tmp_path, damsm_ckpt, fresh_seed):
    eager = _trainer(tmp_path, damsm_ckpt, "eager", text_cache_mb=0)
    static = _trainer(tmp_path, damsm_ckpt, "static", text_cache_mb=0)
    assert static.text_cache is None
    static_step = GraphedGANStep(static, warmup=1, capture=False)
    # the encoder's unpacked path equals the packed one to rounding (tested above); Adam's first
    # step turns rounding in near-zero gradients into +-lr, so both sides use the unpacked path here
    packed_text = eager._text
    eager._text = lambda captions, cap_lens, packed=True: packed_text(captions, cap_lens, packed=False)
    batch = next(eager.batches())
    ref = _steps(eager, eager.eager_step, [batch], fresh_seed)[0]
    got = _steps(static, static_step, [batch], fresh_seed)[0]
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
    _assert_same_state(eager, static)


def test_cached_text_keeps_training_identical_to_uncached_within_rounding(tmp_path, damsm_ckpt, fresh_seed):
    cached = _trainer(tmp_path, damsm_ckpt, "cached")
    plain = _trainer(tmp_path, damsm_ckpt, "plain", text_cache_mb=0)
    batch = next(cached.batches())
    a = _steps(cached, cached.eager_step, [batch, batch], fresh_seed)
    b = _steps(plain, plain.eager_step, [batch, batch], fresh_seed)
    # Adam's first update turns rounding in near-zero gradients into +-lr on those weights (see the
    # test above): the D updates inside step 1 already move its G losses by ~1e-5 relative, and step 2
    # (after G's and D's updates) by up to ~1.4e-4 (measured over random seeds), checked at 1e-3
    assert a[0] == pytest.approx(b[0], rel=1e-4, abs=1e-5)
    assert a[1] == pytest.approx(b[1], rel=1e-3, abs=1e-5)
    assert cached.text_cache.hits == batch["captions"].shape[0]


def test_graph_fallbacks_are_logged_once_and_run_the_eager_step(tmp_path, damsm_ckpt, caplog, fresh_seed):
    trainer = _trainer(tmp_path, damsm_ckpt, "g", graphs=True)
    reference = _trainer(tmp_path, damsm_ckpt, "r")
    assert trainer.graphed is not None
    assert run_blockers(trainer) == [f"CUDA graphs need a CUDA device, this run is on {CPU}"]
    it = trainer.batches()
    batches = [next(it) for _ in range(2)]
    with caplog.at_level(logging.WARNING, logger="attnfast"):
        got = _steps(trainer, trainer.train_step, batches, fresh_seed)
    ref = _steps(reference, reference.eager_step, batches, fresh_seed)
    assert got == ref
    _assert_same_state(trainer, reference, exact=True)
    messages = [r.getMessage() for r in caplog.records if "--graphs" in r.getMessage()]
    assert messages == ["attnfast: --graphs falls back to eager: CUDA graphs need a CUDA device, this run is on cpu"]


def test_graph_blockers_and_shape_change(tmp_path, damsm_ckpt, caplog, fresh_seed):
    trainer = _trainer(tmp_path, damsm_ckpt, "g", amp="bf16")
    trainer.amp = "fp16"                       # what run_blockers reads; fp16 itself needs CUDA
    assert any("GradScaler" in r for r in run_blockers(trainer))
    trainer.amp = "bf16"
    trainer.extras.colour = 1.0
    assert any("optional generator terms" in r for r in run_blockers(trainer))
    trainer.extras.colour = 0.0
    step = GraphedGANStep(trainer, warmup=1, capture=False)
    it = trainer.batches()
    full = next(it)
    small = {k: (v[:3] if torch.is_tensor(v) else [x[:3] for x in v] if k == "images" else v[:3])
             for k, v in full.items()}
    assert batch_shapes(small) != batch_shapes(full)
    with caplog.at_level(logging.WARNING, logger="attnfast"):
        step(full)
        trainer.step += 1
        losses = step(small)                    # eager, logged once
        trainer.step += 1
        step(small)
        trainer.step += 1
    assert all(torch.isfinite(v) for v in losses.values())
    assert sum("differs from the captured" in r.getMessage() for r in caplog.records) == 1
    assert step.static_steps == 1


def test_graph_step_reports_a_nan_at_the_next_check(tmp_path, damsm_ckpt, monkeypatch):
    trainer = _trainer(tmp_path, damsm_ckpt, "nan")
    step = GraphedGANStep(trainer, warmup=1, capture=False)
    it = trainer.batches()
    step(next(it))
    trainer.step += 1
    real = trainer.image_encoder.forward
    monkeypatch.setattr(trainer.image_encoder, "forward", lambda x: tuple(t * float("nan") for t in real(x)))
    step(next(it))                              # no host read: nothing raised yet
    trainer.step += 1
    with pytest.raises(common.NonFiniteLoss, match=r"loss .w_loss. became non-finite between steps 1 and 2"):
        step.flush_checks()
    step.flush_checks()                         # flags consumed


def test_compiled_step_runs_and_matches_eager(tmp_path, damsm_ckpt, fresh_seed):
    torch._dynamo.reset()
    eager = _trainer(tmp_path, damsm_ckpt, "eager")
    compiled = _trainer(tmp_path, damsm_ckpt, "compiled", compile=True, compile_backend="eager")
    batch = next(eager.batches())
    ref = _steps(eager, eager.eager_step, [batch], fresh_seed)[0]
    got = _steps(compiled, compiled.train_step, [batch], fresh_seed)[0]
    assert got == pytest.approx(ref, rel=1e-4, abs=1e-5)
    _assert_same_state(eager, compiled)
    assert set(compiled.netG.state_dict()) == set(eager.netG.state_dict())   # keys unchanged by compile
    torch._dynamo.reset()


def test_bf16_step_keeps_losses_and_batch_norm_statistics_in_fp32(tmp_path, damsm_ckpt):
    trainer = _trainer(tmp_path, damsm_ckpt, "bf16", amp="bf16")
    losses = trainer.train_step(next(trainer.batches()))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    norms = [m for m in list(trainer.netG.modules()) + [m for d in trainer.netsD for m in d.modules()]
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.running_mean.dtype == torch.float32 and m.running_var.dtype == torch.float32
                         for m in norms)
    assert all(int(m.num_batches_tracked) >= 1 for m in norms)        # statistics were updated


def test_trainer_picks_the_exact_cache_and_adam_in_fp32_and_the_fast_ones_under_autocast(tmp_path, damsm_ckpt):
    fp32 = _trainer(tmp_path, damsm_ckpt, "fp32")
    assert not fp32.text_cache.batched
    assert all(o.defaults["foreach"] and not o.defaults["fused"] for o in [fp32.optimizerG, *fp32.optimizersD])
    bf16 = _trainer(tmp_path, damsm_ckpt, "bf16", amp="bf16")
    assert bf16.text_cache.batched
    assert all(o.defaults["fused"] for o in [bf16.optimizerG, *bf16.optimizersD])


def test_foreach_adam_is_bit_identical_to_the_per_parameter_loop():
    torch.manual_seed(0)
    params = [torch.randn(6, 4, 3, 3), torch.randn(5), torch.randn(3, 2)]
    results = []
    for opts in ({"foreach": False}, {"foreach": True}):
        copies = [p.clone().requires_grad_(True) for p in params]
        opt = torch.optim.Adam(copies, lr=4e-4, betas=(0.5, 0.999), **opts)
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            for c in copies:
                c.grad = torch.randn(c.shape, generator=gen)
            opt.step()
        results.append(copies)
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
    assert SpeedOptions().adam(params, 1e-3, (0.5, 0.999), CPU).defaults["foreach"]


def test_default_amp_mode(monkeypatch):
    expected = "bf16" if amp_lib.cpu_has_native_bf16() else "off"
    assert amp_lib.default_mode(CPU) == expected
    assert amp_lib.resolve("auto", CPU) == expected
    monkeypatch.setattr(amp_lib, "cpu_has_native_bf16", lambda: True)
    assert amp_lib.resolve("auto", CPU) == "bf16"
    monkeypatch.setattr(amp_lib, "cpu_has_native_bf16", lambda: False)
    assert amp_lib.resolve("auto", CPU) == "off"
    assert amp_lib.resolve("bf16", CPU) == "bf16"                       # an explicit mode is kept
    assert amp_lib.resolve("off", CPU) == "off"
    with pytest.raises(ValueError, match="--amp must be one of"):
        amp_lib.resolve("fp8", CPU)


def test_speed_options_validate():
    with pytest.raises(ValueError, match="compile backend"):
        SpeedOptions(compile_backend="nope")
    with pytest.raises(ValueError, match="--text-cache-mb"):
        SpeedOptions(text_cache_mb=-1)


def test_train_cli_speed_flags(tmp_path, damsm_ckpt, caplog, capsys):
    args = ["--stage", "gan", "--damsm", str(damsm_ckpt), "--out", str(tmp_path), "--steps", "1",
            "--no-progress", "--graphs"]
    for override in TINY:
        args += ["--set", override]
    args += ["--text-cache-mb", "8"]
    with caplog.at_level(logging.WARNING, logger="attnfast"):
        assert train_cli.main(args) == 0
    assert "--graphs falls back to eager" in caplog.text
    assert (tmp_path / "gan.pt").is_file()
    assert train_cli.main(args[:-2] + ["--text-cache-mb", "-1"]) == 2
    assert "--text-cache-mb must be >= 0" in capsys.readouterr().err


# ---------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("text_cache_mb", [64.0, 0.0])
def test_captured_graph_step_equals_the_eager_step(tmp_path, damsm_ckpt, text_cache_mb, fresh_seed):
    cuda = torch.device("cuda")
    config = tiny_config()
    torch.manual_seed(0)
    graphed = GANTrainer(config, tmp_path / "g", cuda, damsm_ckpt, "off",
                         speed=SpeedOptions(graphs=True, graph_warmup=2, text_cache_mb=text_cache_mb))
    torch.manual_seed(0)
    eager = GANTrainer(config, tmp_path / "e", cuda, damsm_ckpt, "off",
                       speed=SpeedOptions(graphs=False, text_cache_mb=text_cache_mb))
    # the same update rule as the graphed run's capturable fused Adam
    eager.optimizerG = torch.optim.Adam(eager.netG.parameters(), lr=config["gan"]["g_lr"],
                                        betas=tuple(config["gan"]["betas"]), fused=True)
    eager.optimizersD = [torch.optim.Adam(d.parameters(), lr=config["gan"]["d_lr"],
                                          betas=tuple(config["gan"]["betas"]), fused=True) for d in eager.netsD]
    it = graphed.batches()
    batches = [next(it) for _ in range(5)]                    # 2 warm-up, capture, 2 replays
    got = _steps(graphed, graphed.train_step, batches, fresh_seed)
    ref = _steps(eager, eager.eager_step, batches, fresh_seed)
    assert graphed.graphed.graphs is not None, graphed.graphed.blockers
    # step 1: the same weights, so only rounding (unpacked vs packed LSTM, kernel choice) differs;
    # later steps also carry Adam's amplification of near-zero gradients (see below)
    assert got[0] == pytest.approx(ref[0], rel=1e-4, abs=1e-5)
    for r, g in zip(ref[1:], got[1:], strict=True):
        assert g == pytest.approx(r, rel=2e-2, abs=1e-3)
    # Adam turns rounding differences of near-zero gradients into up to +-lr per step: parameters
    # are compared to that bound
    bound = 2 * config["gan"]["g_lr"] * len(batches)
    for (key, a), b in zip(_params(graphed).items(), _params(eager).values(), strict=True):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-3, atol=bound, msg=key)
    graphed.flush_checks()


# ---------------------------------------------------------------------- sampling at scale
@pytest.fixture(scope="module")
def gan_ckpt(tmp_path_factory, damsm_ckpt):
    from attnfast.trainer.gan import train_gan
    out = tmp_path_factory.mktemp("gan_speed")
    train_gan(tiny_config(), out, CPU, damsm_ckpt, steps=1, progress=False)
    return out / "gan.pt"


def test_sample_npz_matches_png_and_fused_matches_unfused(tmp_path, gan_ckpt):
    import numpy as np
    from PIL import Image

    from attnfast import sample as sample_cli
    captions = ["a large red circle in the center", "a small blue square in the top left"]
    runs = {}
    for name, fmt, fuse in (("png", "png", True), ("npz", "npz", True), ("raw", "npz", False)):
        torch.manual_seed(0)                   # the CA noise comes from the global RNG
        summary = sample_cli.sample(gan_ckpt, captions, tmp_path / name, n=3, batch=4, seed=1,
                                    progress=False, fmt=fmt, fuse=fuse)
        assert summary["images"] == 6
        runs[name] = summary
    data = np.load(tmp_path / "npz" / "images.npz")
    assert data["images"].shape == (6, 128, 128, 3) and data["images"].dtype == np.uint8
    assert data["caption_ids"].tolist() == [0, 0, 0, 1, 1, 1] and data["sample_ids"].tolist() == [0, 1, 2] * 2
    assert data["captions"][3] == captions[1]
    png = np.asarray(Image.open(tmp_path / "png" / "0001_a_small_blue_square_in_the_top_left_2.png"))
    assert np.array_equal(png, data["images"][5])
    raw = np.load(tmp_path / "raw" / "images.npz")["images"].astype(int)
    assert np.abs(raw - data["images"].astype(int)).max() <= 2     # BN folding: float rounding only
    with pytest.raises(sample_cli.SampleError, match="--format must be png or npz"):
        sample_cli.sample(gan_ckpt, captions, tmp_path, fmt="gif", progress=False)


def test_graphed_generator_pads_the_last_batch_and_falls_back_without_cuda():
    from attnfast.engine.graphed_generator import GraphedGenerator
    calls = []

    def fn(captions, cap_lens, noise):
        calls.append(captions.shape[0])
        return [noise * 2], [noise[:, :1]]
    run = GraphedGenerator(fn, batch=4, device=CPU, graphs=True)
    assert not run.graphs                                   # no CUDA: eager
    noise = torch.randn(3, 5)
    fakes, _maps = run(torch.ones(3, 6, dtype=torch.long), torch.ones(3, dtype=torch.long), noise)
    assert torch.equal(fakes[0], noise * 2) and calls == [3]
    with pytest.raises(ValueError, match="got 5 rows"):
        run(torch.ones(5, 6, dtype=torch.long), torch.ones(5, dtype=torch.long), torch.randn(5, 5))


@pytest.mark.gpu
def test_graphed_generator_equals_eager_on_cuda(gan_ckpt):
    from functools import partial

    from attnfast import sample as sample_cli
    from attnfast.engine.graphed_generator import GraphedGenerator
    from attnfast.models.inference import fuse_for_inference
    cuda = torch.device("cuda")
    netG, text_encoder, vocab, config = sample_cli.load_generator(gan_ckpt, cuda)
    netG = fuse_for_inference(netG)
    words_num = config["dataset"]["words_num"]
    ids, lens, _, _ = sample_cli.encode_captions(["a large red circle in the center", "a small blue square"],
                                              vocab, words_num)
    ids, lens = ids[[0, 1, 0, 1, 1]], lens[[0, 1, 0, 1, 1]]
    noise = torch.randn(5, config["model"]["z_dim"])
    eps = torch.randn(8, config["model"]["condition_dim"], device=cuda)
    fn = partial(sample_cli.generate, netG, text_encoder, words_num=words_num, packed=False)
    run = GraphedGenerator(lambda c, l, z: fn(c, l, z, eps=eps[:c.shape[0]]), batch=8, device=cuda)
    for _ in range(2):                                      # capture, then replay
        fakes, maps = run(ids, lens, noise)
        ref, ref_maps = sample_cli.generate(netG, text_encoder, ids, lens, noise.to(cuda), words_num, eps=eps[:5])
        assert run.graph is not None, run.failed
        for a, b in zip(fakes + maps, ref + ref_maps, strict=True):
            assert_close(a.cpu(), b.cpu().double())


# ---------------------------------------------------------------------- capture control flow (CPU)
class _FakeCuda:
    """Stand-ins for the torch.cuda calls of the capture paths, so that their control flow runs on
    the CPU: "capturing" runs the body once (as one step would), a replay only counts."""

    def __init__(self, monkeypatch, fail: bool = False):
        import contextlib
        self.captures, self.replays, self.fail = 0, 0, fail
        fake = self

        class Graph:
            def replay(self):
                fake.replays += 1

        @contextlib.contextmanager
        def graph(_graph, pool=None):
            fake.captures += 1
            if fake.fail:
                raise RuntimeError("operation not permitted when stream is capturing")
            yield

        class Stream:
            def __init__(self, *args, **kwargs):
                pass

            def wait_stream(self, other):
                pass

        for name, value in {"CUDAGraph": Graph, "graph": graph, "Stream": Stream,
                            "current_stream": lambda *a: Stream(), "synchronize": lambda *a: None,
                            "stream": lambda s: contextlib.nullcontext(),
                            "graph_pool_handle": lambda: None}.items():
            monkeypatch.setattr(torch.cuda, name, value)


def test_capture_happens_once_after_warmup_and_each_later_step_replays(tmp_path, damsm_ckpt, monkeypatch):
    fake = _FakeCuda(monkeypatch)
    trainer = _trainer(tmp_path, damsm_ckpt, "fake", graphs=True, graph_warmup=2)
    trainer.graphed.blockers = []                     # as on a CUDA device
    it = trainer.batches()
    counts = []
    for _ in range(5):
        trainer.train_step(next(it))
        trainer.step += 1
        counts.append((fake.captures, fake.replays))
    # 2 warm-up steps; step 3 captures both halves and replays them; steps 4, 5 replay
    assert counts == [(0, 0), (0, 0), (2, 2), (2, 4), (2, 6)]
    assert trainer.ema.updates == 5 and trainer.graphed.static_steps == 5
    trainer.flush_checks()


def test_a_failing_capture_falls_back_to_eager_with_one_message(tmp_path, damsm_ckpt, monkeypatch, caplog):
    fake = _FakeCuda(monkeypatch, fail=True)
    trainer = _trainer(tmp_path, damsm_ckpt, "fail", graphs=True, graph_warmup=1)
    trainer.graphed.blockers = []
    it = trainer.batches()
    with caplog.at_level(logging.WARNING, logger="attnfast"):
        for _ in range(4):
            losses = trainer.train_step(next(it))
            trainer.step += 1
    assert fake.captures == 1 and fake.replays == 0 and trainer.graphed.graphs is None
    assert all(torch.isfinite(v) for v in losses.values()) and trainer.ema.updates == 4
    messages = [r.getMessage() for r in caplog.records if "--graphs" in r.getMessage()]
    assert len(messages) == 1 and "the capture failed (RuntimeError: operation not permitted" in messages[0]


def test_graphed_generator_capture_flow(monkeypatch):
    from attnfast.engine.graphed_generator import GraphedGenerator
    fake = _FakeCuda(monkeypatch)
    seen = []

    def fn(captions, cap_lens, noise):
        seen.append(captions.shape[0])
        return [noise * 2], [noise[:, :1]]
    run = GraphedGenerator(fn, batch=4, device=CPU, graphs=True, warmup=2)
    run.graphs = True                                   # as on a CUDA device
    noise = torch.randn(3, 5)
    fakes, maps = run(torch.ones(3, 6, dtype=torch.long), torch.ones(3, dtype=torch.long), noise)
    assert seen == [4, 4, 4] and fake.captures == 1 and fake.replays == 1   # padded to the batch
    assert torch.equal(fakes[0], noise * 2) and maps[0].shape == (3, 1)      # the padding is dropped
    run(torch.ones(4, 6, dtype=torch.long), torch.ones(4, dtype=torch.long), torch.randn(4, 5))
    assert seen == [4, 4, 4] and fake.replays == 2


def test_channels_last_is_the_cpu_bf16_default_and_trains_like_nchw(tmp_path, damsm_ckpt, fresh_seed):
    """channels_last None resolves per run: on for bf16 on the CPU with the NHWC GLU kernel (NHWC weights,
    images and activations), off in fp32 and when asked; one bf16 step in NHWC gives the NCHW step's
    losses within bf16 rounding, and its generator's images come out NHWC."""
    kernel = fast_autograd.nhwc_glu_kernel_available()
    auto = _trainer(tmp_path, damsm_ckpt, "auto", amp="bf16")
    nchw = _trainer(tmp_path, damsm_ckpt, "nchw", amp="bf16", channels_last=False)
    assert auto.speed.channels_last is kernel and nchw.speed.channels_last is False
    assert _trainer(tmp_path, damsm_ckpt, "fp32").speed.channels_last is False
    assert SpeedOptions().resolved(CPU, "bf16").channels_last is kernel
    assert SpeedOptions(channels_last=True).resolved(CPU, "off").channels_last is True   # an explicit choice is kept
    if not kernel:
        pytest.skip("attnfast._C is not built: no NHWC default")
    conv_weights = [m.weight for m in [*auto.netG.modules(), *auto.netsD[0].modules(), *auto.image_encoder.modules()]
                    if isinstance(m, torch.nn.Conv2d) and m.weight.shape[2:] != (1, 1)]
    assert conv_weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights)
    batch = next(auto.batches())
    a = _steps(auto, auto.eager_step, [batch], fresh_seed)[0]
    b = _steps(nchw, nchw.eager_step, [batch], fresh_seed)[0]
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-2, abs=1e-3), name   # measured <= 2.4e-3 over 8 seeds
    inputs = auto.step_inputs(batch)
    with torch.no_grad(), auto.autocast():
        words, sentence, mask = inputs["text"]
        fakes, _, _, _ = auto.netG(torch.randn(batch["captions"].shape[0], 8), sentence, words, mask)
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in fakes)
