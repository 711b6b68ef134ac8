import pytest
import torch

import tasks
from model import GPT, GPTConfig
from rollout import filter_logits, sample, sample_naive, score_rollouts, suppressed_ids


def prompts_of(tok, n, seed=0):
    return [tok.encode_prompt(p.problem) for p in tasks.make_split("test", n, seed)]


def test_greedy_batched_equals_one_by_one_and_naive(tok, model_factory):
    m = model_factory(seed=9, eos_boost=3.0)
    prompts = prompts_of(tok, 5)
    assert len({len(p) for p in prompts}) > 1  # mixed prompt lengths
    batched = sample(m, prompts, 2, 20, temperature=0, tokenizer=tok)
    naive = sample_naive(m, prompts, 2, 20, temperature=0, tokenizer=tok)
    assert batched.finished.any() and not batched.finished.all()  # the test covers both kinds of row
    assert torch.equal(batched.response, naive.response)
    assert torch.equal(batched.mask, naive.mask)
    for i, p in enumerate(prompts):
        alone = sample(m, [p], 1, 20, temperature=0, tokenizer=tok)
        ref = m.generate(p, 20, tok.eos_id, temperature=0, suppressed=suppressed_ids(tok))
        for k in range(2):
            row = batched.response[2 * i + k][batched.mask[2 * i + k]].tolist()
            assert row == alone.response[0][alone.mask[0]].tolist() == ref
    torch.testing.assert_close(batched.logp_zc, naive.logp_zc, atol=1e-4, rtol=0, equal_nan=True)


def test_in_pass_self_reward_equals_full_forward(tok, model_factory):
    m = model_factory(seed=2, eos_boost=30.0)
    ro = sample(m, prompts_of(tok, 6, seed=1), 4, 30, generator=torch.Generator().manual_seed(0),
                tokenizer=tok)
    assert ro.finished.sum() >= 3 and (~ro.finished).any()
    for i in torch.nonzero(ro.finished).flatten().tolist():
        resp = ro.response[i][ro.mask[i]].tolist()
        assert resp[-1] == tok.eos_id and tok.eos_id not in resp[:-1]
        seq = torch.tensor([ro.prompts[i // 4] + resp])  # [prompt, response, EOS]
        with torch.no_grad():
            ref = torch.log_softmax(m(seq)[0, -1].float(), -1)[tok.zc_id]  # read at the EOS position
        assert abs(float(ro.logp_zc[i]) - float(ref)) < 1e-4
    assert torch.isnan(ro.logp_zc[~ro.finished]).all()  # truncated rows are unscored
    with torch.no_grad():
        logp, zc = score_rollouts(m, ro, tok.zc_id, tok.pad_id)
    torch.testing.assert_close(zc, ro.logp_zc, atol=1e-4, rtol=0, equal_nan=True)
    torch.testing.assert_close(logp, ro.logprobs, atol=1e-4, rtol=0)  # same distribution as sampled


def test_samples_in_a_group_differ_and_seed_reproduces(tok, model_factory):
    m = model_factory(seed=3, eos_boost=10.0)
    prompts = prompts_of(tok, 3, seed=2)
    a = sample(m, prompts, 4, 16, generator=torch.Generator().manual_seed(7), tokenizer=tok)
    b = sample(m, prompts, 4, 16, generator=torch.Generator().manual_seed(7), tokenizer=tok)
    c = sample(m, prompts, 4, 16, generator=torch.Generator().manual_seed(8), tokenizer=tok)
    assert torch.equal(a.response, b.response) and a.texts == b.texts
    torch.testing.assert_close(a.logp_zc, b.logp_zc, equal_nan=True)
    assert not torch.equal(a.response, c.response)
    for g in range(3):
        group = {tuple(r.tolist()) for r in a.response[4 * g:4 * g + 4]}
        assert len(group) > 1  # first tokens are sampled per row, not shared


def test_max_new_tokens_truncation_and_masks(tok, model_factory):
    m = model_factory(seed=4)  # no EOS boost: rows run to the limit
    ro = sample(m, prompts_of(tok, 2), 3, 9, generator=torch.Generator().manual_seed(0), tokenizer=tok)
    assert ro.response.shape == (6, 9)
    assert (ro.lengths <= 9).all()
    trunc = ~ro.finished
    assert trunc.any() and (ro.lengths[trunc] == 9).all()
    assert torch.isnan(ro.logp_zc[trunc]).all()
    # mask is exactly a prefix of each row, and log-probs live only on it
    for i in range(6):
        n = int(ro.lengths[i])
        assert ro.mask[i, :n].all() and not ro.mask[i, n:].any()
    assert (ro.logprobs[~ro.mask] == 0).all() and (ro.logprobs[ro.mask] < 0).all()


def test_mask_keeps_eos_when_pad_equals_eos(tok, model_factory):
    """The response mask comes from positions: even a tokenizer whose pad id equals EOS keeps the EOS."""
    class SamePad:
        def __init__(self, t):
            self.__dict__.update(t.__dict__)
            self.pad_id = t.eos_id

        def decode(self, ids):
            return tok.decode(ids)

    m = model_factory(seed=9, eos_boost=3.0)
    ro = sample(m, prompts_of(tok, 5), 2, 24, temperature=0, tokenizer=SamePad(tok))
    i = int(torch.nonzero(ro.finished)[0])
    n = int(ro.lengths[i])
    assert ro.mask[i, n - 1] and ro.response[i, n - 1] == tok.eos_id


def test_no_compaction_gives_same_greedy_result(tok, model_factory):
    m = model_factory(seed=9, eos_boost=3.0)
    p = prompts_of(tok, 4)
    a = sample(m, p, 3, 20, temperature=0, tokenizer=tok)
    b = sample(m, p, 3, 20, temperature=0, tokenizer=tok, compact=False)
    assert torch.equal(a.response, b.response)
    torch.testing.assert_close(a.logp_zc, b.logp_zc, atol=1e-5, rtol=0, equal_nan=True)


def test_filter_logits_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, 1.0, 2, None)
    assert torch.isinf(k2[0, 2:]).all() and torch.isfinite(k2[0, :2]).all()
    p = filter_logits(logits, 1.0, None, 0.7)  # 0.5 + 0.3 reach 0.7: keep two
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    t = filter_logits(logits, 2.0, None, None)
    torch.testing.assert_close(t, logits / 2)
    # the nucleus of the tempered distribution (0.38, 0.29, 0.21, 0.12: three before 0.7), not the raw one's
    tp = filter_logits(logits, 2.0, None, 0.7)
    torch.testing.assert_close(tp[0, :3], logits[0, :3] / 2)
    assert torch.isinf(tp[0, 3])
    # a token goes once the ones before it reach top_p, an exact tie included (0.5 reaches 0.5)
    tie = filter_logits(torch.log(torch.tensor([[0.5, 0.25, 0.25]])), 1.0, None, 0.5)
    assert torch.isfinite(tie[0, 0]) and torch.isinf(tie[0, 1:]).all()


def test_a_call_must_leave_room_for_the_readout_past_its_last_token(tok, model_factory):
    """The contract `prompts_that_fit` keeps: prompt + max_new_tokens + 1 <= block_size."""
    m = model_factory(seed=2, block_size=64)
    p = prompts_of(tok, 1)[0]
    with pytest.raises(ValueError, match="exceeds block_size 64"):
        sample(m, [p], 1, 64 - len(p), tokenizer=tok)
    assert sample(m, [p], 1, 63 - len(p), tokenizer=tok).response.shape[1] <= 63 - len(p)


def test_texts_are_the_responses_without_eos_and_whole_where_cut_off(tok, model_factory):
    """A response's text is its tokens up to its length, less the EOS of a finished one: a row cut off at
    the limit keeps its last token (the verifier reads a truncated row's text as the model wrote it)."""
    m = model_factory(seed=2, eos_offset=2.0)
    ro = sample(m, prompts_of(tok, 4), 4, 12, tokenizer=tok, generator=torch.Generator().manual_seed(0))
    assert ro.finished.any() and not ro.finished.all()
    for row, n, fin, text in zip(ro.response.tolist(), ro.lengths.tolist(), ro.finished.tolist(), ro.texts):
        assert row[n - 1] == tok.eos_id if fin else row[n - 1] != tok.eos_id
        assert text == tok.decode(row[:n - 1] if fin else row[:n])


def test_the_scorer_keeps_the_sampled_tokens_in_its_top_k_and_top_p_sets(tok, model_factory):
    """The trainer's re-scoring rebuilds the top-k / top-p set from its own logits, which differ from the
    sampler's by rounding (bf16 on a GPU): a drawn token just outside that set scored -inf (a PPO ratio of
    0, no gradient, k3's KL NaN). Here a response's first token is swapped for one outside the model's
    top-1 and top-p 0.5 sets: its log-prob stays finite, and the other tokens' are the filter's."""
    import dataclasses
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.497, -1.0]])
    assert torch.isinf(filter_logits(logits, 1.0, 3, None)[0, 3])
    kept = filter_logits(logits, 1.0, 3, None, keep=torch.tensor([3]))
    assert torch.isfinite(kept[0, :4]).all() and torch.isinf(kept[0, 4])  # (only the kept token rejoins)
    m = model_factory(seed=3)
    ro = sample(m, prompts_of(tok, 2), 2, 12, temperature=0, tokenizer=tok)
    for top_k, top_p in ((1, None), (None, 0.5)):
        other = dataclasses.replace(ro, temperature=1.0, top_k=top_k, top_p=top_p, response=ro.response.clone())
        with torch.no_grad():
            first = score_rollouts(m, other, tok.zc_id, tok.pad_id)[0][:, 0].clone()
            top = ro.response[:, 0]
            other.response[:, 0] = torch.where(top == 5, 6, 5)  # a token the greedy draw did not pick
            logp = score_rollouts(m, other, tok.zc_id, tok.pad_id)[0]
        assert torch.isfinite(logp).all() and (logp[:, 0] < first).all(), (top_k, top_p)


def test_bad_inputs(tok, model_factory):
    m = model_factory()
    with pytest.raises(ValueError, match="non-empty"):
        sample(m, [], 2, 5, tokenizer=tok)
    with pytest.raises(ValueError, match="block_size"):
        sample(m, prompts_of(tok, 1), 2, 1000, tokenizer=tok)
    with pytest.raises(ValueError, match="check_every must be at least 1, got 0"):
        sample(m, prompts_of(tok, 1), 2, 5, tokenizer=tok, fixed=True, check_every=0)


def test_special_tokens_other_than_eos_are_never_sampled(tok, model_factory):
    """A head that raises z_c (and BOS, PAD) everywhere: the sampler never emits them, the scorer
    agrees on the distribution, and the z_c readout still comes from the raw logits. (Before: a model
    trained with the MSE term only put 100-118 z_c tokens into 128 rollouts.)"""
    m = model_factory(seed=2, eos_offset=2.0)
    boost = torch.zeros(tok.vocab_size)
    boost[[tok.zc_id, tok.bos_id, tok.pad_id]] = 20.0
    m.lm_head.register_forward_hook(lambda _m, _i, out: out + boost)
    for temperature, top_k in ((1.0, None), (0.7, 5), (0, None)):
        ro = sample(m, prompts_of(tok, 4), 8, 24, temperature=temperature, top_k=top_k, tokenizer=tok,
                    generator=torch.Generator().manual_seed(0))
        assert ro.finished.any()
        for banned in (tok.zc_id, tok.bos_id, tok.pad_id):
            assert not (ro.response[ro.mask] == banned).any()
        assert all("<|" not in t for t in ro.texts)
        assert (ro.logp_zc[ro.finished] > -1.5).all()  # z_c shares the raw distribution with BOS, PAD: ~1/3
        with torch.no_grad():
            logp, zc = score_rollouts(m, ro, tok.zc_id, tok.pad_id)
        if temperature:  # greedy rows carry log-prob 0 (a point mass); the scorer reads the full distribution
            torch.testing.assert_close(logp, ro.logprobs, atol=1e-4, rtol=0)
        torch.testing.assert_close(zc, ro.logp_zc, atol=1e-4, rtol=0, equal_nan=True)
    assert suppressed_ids(tok) == tuple(sorted((tok.zc_id, tok.bos_id, tok.pad_id)))


@pytest.mark.parametrize("temperature,top_k,top_p,eos", [(1.0, None, None, dict(eos_offset=2.5)),
                                                        (0.8, 40, None, dict(eos_offset=1.0)),
                                                        (1.0, None, 0.95, dict(eos_offset=2.5)),
                                                        (0, None, None, dict(eos_boost=3.0))])
def test_fixed_shape_decode_draws_the_tokens_of_the_compacting_loop(tok, model_factory, temperature, top_k, top_p, eos):
    """The CUDA decode loop (fixed shape, decode_step, host check every few steps), run eagerly on CPU:
    the same tokens from the same generator as the compacting loop without compaction (which draws for
    every row too), and log-probs and z_c readouts equal up to the length of attention's sum."""
    m = model_factory(seed=5 if "eos_offset" in eos else 9, **eos)
    p = prompts_of(tok, 5, seed=3)
    kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, tokenizer=tok)
    ref = sample(m, p, 4, 30, generator=torch.Generator().manual_seed(3), compact=False, fixed=False, **kw)
    assert ref.finished.any() and (~ref.finished).any()
    for every in (1, 5):
        fx = sample(m, p, 4, 30, generator=torch.Generator().manual_seed(3), fixed=True, check_every=every, **kw)
        assert torch.equal(fx.response, ref.response) and torch.equal(fx.mask, ref.mask)
        assert torch.equal(fx.finished, ref.finished) and fx.texts == ref.texts
        torch.testing.assert_close(fx.logprobs, ref.logprobs, atol=1e-5, rtol=0)
        torch.testing.assert_close(fx.logp_zc, ref.logp_zc, atol=1e-5, rtol=0, equal_nan=True)


def _count_decoder_steps(monkeypatch) -> list:
    """A list that grows by one at each step of a fixed-loop decoder (clear it before the call to count)."""
    import rollout
    steps, real = [], rollout._FixedDecoder.step
    monkeypatch.setattr(rollout._FixedDecoder, "step", lambda *a: steps.append(1) or real(*a))
    return steps


def _steps_to_the_end(ro, every: int, lagged: bool) -> int:
    """The steps a fixed loop with a check every `every` steps runs for rollouts `ro` whose rows all finished:
    up to the first check at or after the step at which the last row sampled EOS, and (lagged) one check more."""
    last = int(ro.mask.sum(1).max()) - 1
    return (last // every + 1) * every + (every if lagged else 0)


@pytest.mark.parametrize("lagged", [True, False])
def test_the_fixed_loop_stops_within_two_checks_of_its_last_row(tok, model_factory, monkeypatch, lagged):
    """The fixed loop's check "any row still sampling?" read one check late (rollout.LAGGED_CHECK, so that
    the device never waits for the host): the loop ends at the second check after the last row's EOS, where
    a check that waits for its answer ends it at the first; the tokens are the same either way."""
    import rollout
    monkeypatch.setattr(rollout, "LAGGED_CHECK", lagged)
    m = model_factory(seed=9, eos_boost=3.0)
    steps = _count_decoder_steps(monkeypatch)
    p = prompts_of(tok, 4, seed=1)
    ref = sample(m, p, 2, 60, temperature=0, tokenizer=tok, fixed=False, compact=False)
    for every in (3, 4):
        steps.clear()
        fx = sample(m, p, 2, 60, temperature=0, tokenizer=tok, fixed=True, check_every=every)
        assert torch.equal(fx.response, ref.response) and bool(fx.finished.all())
        assert len(steps) == _steps_to_the_end(fx, every, lagged) < 60, (every, fx.mask.sum(1), len(steps))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", id="on_cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="pinned memory and CUDA events need a CUDA device"))])
def test_a_host_flag_reads_the_value_last_posted(device):
    """(The CUDA case's id is on_cuda: scripts/gpu_check.sh runs the tests so named.)"""
    import rollout
    flag = rollout._HostFlag(torch.device(device))
    assert flag.read() is True  # (before any post: "still sampling")
    flag.post(torch.tensor([False, False], device=device).any())
    assert flag.read() is False
    flag.post(torch.tensor([False, True], device=device).any())
    assert flag.read() is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and the compiled decode need a CUDA device")
def test_the_decode_loop_on_cuda_draws_the_compacting_loops_tokens(tok, model_factory, monkeypatch):
    """On a card, the decode loop as RL runs it: compiled blocks replayed from CUDA graphs, keys that hold
    the mask, the check "any row still sampling?" read one check late through pinned memory and an event.
    In float32, greedy (rows finish at different steps) and at temperature 1 from the same generator: the
    tokens of the compacting loop run eagerly on the same card, log-probs and z_c readouts equal up to
    rounding, and (greedy) the loop ends at the second check after the last row's EOS, as on CPU."""
    import model as model_lib
    import rollout
    for name in ("CUDA_GRAPHS", "COMPILE_DECODE", "LAGGED_CHECK"):
        monkeypatch.setattr(rollout, name, True)  # (a fallback turns the first two off: checked below)
    dev, every = torch.device("cuda"), 4
    assert "cuda" in model_lib.KEY_BIAS
    m = model_factory(seed=9, eos_boost=3.0).to(dev)
    steps = _count_decoder_steps(monkeypatch)
    p = prompts_of(tok, 4, seed=1)
    for temperature in (0, 1.0):
        kw = dict(temperature=temperature, tokenizer=tok)
        ref = sample(m, p, 4, 60, generator=torch.Generator(dev).manual_seed(3), fixed=False, compact=False, **kw)
        steps.clear()
        fx = sample(m, p, 4, 60, generator=torch.Generator(dev).manual_seed(3), fixed=True, check_every=every, **kw)
        dec = next(reversed(rollout._DECODERS[m].values()))
        assert rollout.CUDA_GRAPHS and rollout.COMPILE_DECODE and dec.graphs and dec.blocks is not None
        assert torch.equal(fx.response, ref.response) and torch.equal(fx.finished, ref.finished)
        torch.testing.assert_close(fx.logprobs, ref.logprobs, atol=1e-4, rtol=0)
        torch.testing.assert_close(fx.logp_zc, ref.logp_zc, atol=1e-4, rtol=0, equal_nan=True)
        if temperature == 0:
            lengths = fx.mask.sum(1)
            assert bool(fx.finished.all()) and int(lengths.min()) < int(lengths.max())
            assert len(steps) == _steps_to_the_end(fx, every, lagged=True) < 60


@pytest.mark.parametrize("key_bias", [False, True])
def test_decode_step_of_the_llama_layer_matches_the_cached_forward(tok, monkeypatch, key_bias):
    """decode_step (attention case 4) against forward with a cache (case 3) on the Llama layer: grouped
    keys/values, q/k/v biases, SwiGLU, RMSNorm gains; left-padded prompts. `key_bias`: decode_step's
    caches hold the mask folded into the keys (model.KEY_BIAS), and attend without one, and the cached
    forward on such a cache (d: the compacting loop's case 3 on it) reads its keys as the plain cache's."""
    import model as model_lib
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                      mlp="swiglu", mlp_hidden=48, norm_weight=True, qkv_bias=True)).eval()
    prompts = prompts_of(tok, 3, seed=1)
    T = max(map(len, prompts))
    idx = torch.tensor([[tok.pad_id] * (T - len(q)) + q for q in prompts])
    valid = idx != tok.pad_id
    a = m.new_cache(3, T + 8)
    monkeypatch.setattr(model_lib, "KEY_BIAS", {"cpu"} if key_bias else set())
    b, c, d = m.new_cache(3, T + 8), m.new_cache(3, T + 8), m.new_cache(3, T + 8)
    assert b.key_bias == key_bias and b.k[0].shape[-1] == (16 if key_bias else 8)  # head dimension 8 + 1 -> 16
    with torch.no_grad():
        for cache in (a, b, c, d):
            m(idx, cache=cache, valid=valid)
        nxt = torch.tensor([5, 9, 11])
        for t in range(6):
            want = m(nxt[:, None], cache=a)[:, -1]
            torch.testing.assert_close(m(nxt[:, None], cache=d)[:, -1], want, atol=1e-6, rtol=0)
            got = m.decode_step(nxt, b, torch.tensor([T + t]))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            # a window of the slots written so far (the CUDA graphs' windows hold at least these)
            torch.testing.assert_close(m.decode_step(nxt, c, torch.tensor([T + t]), window=T + t + 1), want,
                                       atol=1e-5, rtol=0)
            nxt = want.argmax(-1)
    assert torch.equal(a.next_pos, b.next_pos) and torch.equal(a.valid, b.valid) and torch.equal(b.valid, c.valid)
    for x in (b, c):  # the keys and values as the plain cache's, and a bias column that is the mask
        for mine, plain in ((x.k[1], a.k[1]), (x.v[1], a.v[1])):  # (one token at a time: float rounding)
            torch.testing.assert_close(mine[..., :8], plain, atol=1e-6, rtol=0)
        if key_bias:
            assert torch.equal(x.k[1][..., 8], torch.where(a.valid, 0.0, model_lib.HIDDEN)[:, None].expand(-1, 2, -1))
            assert not x.k[1][..., 9:].any() and not x.v[1][..., 8:].any()


def test_folded_keys_draw_the_same_rollouts(tok, model_factory, monkeypatch):
    """The fixed-shape loop on caches holding the mask in the keys (model.KEY_BIAS, here on CPU): the tokens, log-probs
    and z_c readouts of the loop on plain caches, short prompts' left padding and unwritten slots hidden."""
    import model as model_lib
    m = model_factory(seed=5, eos_offset=1.0)
    p = prompts_of(tok, 5, seed=3)
    run = lambda: sample(m, p, 4, 30, generator=torch.Generator().manual_seed(3), fixed=True, tokenizer=tok)
    want = run()
    monkeypatch.setattr(model_lib, "KEY_BIAS", {"cpu"})
    got = run()
    assert want.finished.any() and (~want.finished).any() and len(set(map(len, p))) > 1
    assert torch.equal(got.response, want.response) and torch.equal(got.finished, want.finished)
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.logp_zc, want.logp_zc, atol=1e-5, rtol=0, equal_nan=True)


def test_autocast_copy_decodes_as_the_model_under_autocast_and_follows_its_updates(tok, model_factory):
    """The CUDA graphs' copy of the model (Linear weights cast once, not at every step) gives the logits
    of the model under autocast, bit for bit, and after an optimizer step and a refresh still does."""
    from rollout import autocast_copy

    m = model_factory(seed=5, eos_offset=2.5)
    net, pairs = autocast_copy(m, torch.bfloat16)
    assert net.blocks[0].attn.qkv.weight.dtype == torch.bfloat16 and net.lm_head.weight.dtype == torch.float32
    idx = torch.tensor([prompts_of(tok, 1)[0]] * 2)
    for update in (False, True):
        if update:
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.01 * torch.randn_like(p))
                for mine, theirs in pairs:
                    mine.copy_(theirs)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            caches = [m.new_cache(2, idx.shape[1] + 4) for _ in range(2)]
            for model, cache in zip((m, net), caches):
                model(idx, cache=cache)
            want, got = (model.decode_step(torch.tensor([5, 9]), cache, torch.tensor([idx.shape[1]]))
                         for model, cache in zip((m, net), caches))
            assert torch.equal(got, want)


def test_kv_cache_takes_the_autocast_dtype(tok, model_factory):
    """Under autocast the keys and values are computed in bf16: the cache holds them in bf16 (not float32
    converted back at each step); outside autocast it has the weights' dtype. Both loops run on it."""
    m = model_factory(seed=5, eos_offset=2.5)
    assert m.new_cache(2, 8).k[0].dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.new_cache(2, 8).k[0].dtype == torch.bfloat16
        for fixed in (False, True):
            ro = sample(m, prompts_of(tok, 2), 2, 12, generator=torch.Generator().manual_seed(0), tokenizer=tok,
                        fixed=fixed)
            assert ro.logprobs.dtype == torch.float32 and ro.finished.any()


def test_decode_step_traces_as_one_graph(tok, model_factory):
    """decode_step has no graph break (nothing read back to the host, no data-dependent Python), which is
    what lets a CUDA graph capture it; checked with torch.compile's aot_eager backend (no compiler)."""
    import torch._dynamo
    m = model_factory(seed=1)
    prompts = prompts_of(tok, 2)
    T = max(map(len, prompts))
    idx = torch.tensor([[tok.pad_id] * (T - len(q)) + q for q in prompts])
    a, b = m.new_cache(2, T + 4), m.new_cache(2, T + 4)
    torch._dynamo.reset()
    step = torch.compile(m.decode_step, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        for c in (a, b):
            m(idx, cache=c, valid=idx != tok.pad_id)
        for t in range(3):
            nxt = torch.tensor([4 + t, 7])
            torch.testing.assert_close(step(nxt, a, torch.tensor([T + t])), m.decode_step(nxt, b, torch.tensor([T + t])),
                                       atol=1e-5, rtol=0)
    torch._dynamo.reset()


def test_sample_next_draws_what_torch_multinomial_draws():
    """The sampler's one-sample draw (no host sync) is torch.multinomial's own: the same tokens from the
    same generator, draw after draw (so CPU results did not move when it replaced multinomial)."""
    from rollout import sample_next
    torch.manual_seed(0)
    logits = torch.randn(9, 60) * 3
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(4):
        tok, lp = sample_next(logits, 0.9, None, None, g1, suppressed=(3, 4))
        probs = torch.softmax(filter_logits(logits.float(), 0.9, None, None, (3, 4)), -1)
        assert torch.equal(tok, torch.multinomial(probs, 1, generator=g2).squeeze(1))
        torch.testing.assert_close(lp, probs.log().gather(1, tok[:, None]).squeeze(1))


def test_a_model_is_freed_with_its_decoders(tok, model_factory):
    """The fixed loop's decoders are kept per model in a weak dictionary: once the model is gone, so are
    they (with their caches), which needs no decoder to hold the model itself."""
    import gc
    import weakref

    import rollout

    m = model_factory(seed=5, eos_offset=2.5)
    sample(m, prompts_of(tok, 2), 2, 8, generator=torch.Generator().manual_seed(0), tokenizer=tok, fixed=True)
    assert m in rollout._DECODERS
    alive = weakref.ref(m)
    del m
    gc.collect()
    assert alive() is None


def _decoders_step_alike(m, tok, decoders, steps=80):
    """Feed the same tokens to each decoder (on the same prefill) and return their logits, step by step:
    the slots run from 15 to 94, across the ends of windows (32 and 64, or 64), so more than one window's
    code runs."""
    import rollout
    p = prompts_of(tok, 3, seed=2)
    idx, valid = rollout._left_pad(p, tok.pad_id, torch.device("cpu"))
    prefill = m.new_cache(len(p), 128 + rollout.SPARE_SLOTS)
    with torch.no_grad():
        m(idx, cache=prefill, valid=valid)
        rows = torch.arange(len(p)).repeat_interleave(2)
        out = [[] for _ in decoders]
        for d in decoders:
            d.cache.load(prefill, rows)
        for t in range(steps):
            nxt = torch.full((len(rows),), 7 + t % 50)
            used = prefill.length + t + 1
            for o, d in zip(out, decoders):
                o.append(d.step(m, nxt, torch.tensor([prefill.length + t]), used)[0].clone())
    return out


@pytest.mark.parametrize("key_bias", [False, True])
def test_compiled_decode_step_matches_the_eager_one(tok, model_factory, monkeypatch, key_bias):
    """The fixed loop's decode step with its blocks compiled by inductor (what CUDA runs, here on CPU):
    the eager step's logits up to float rounding, at every step across attention windows, with the
    compiled code ready for every window before the first step (no compile can happen inside a CUDA
    graph capture) and no fallback to eager blocks. `key_bias`: both on caches holding the mask in the
    keys (model.KEY_BIAS, CUDA's way)."""
    import model as model_lib
    import rollout
    monkeypatch.setattr(rollout, "COMPILE_DECODE", True)  # (a fallback would turn it off)
    monkeypatch.setattr(model_lib, "KEY_BIAS", {"cpu"} if key_bias else set())
    m = model_factory(seed=4)
    compiled = rollout._FixedDecoder(m, 6, 128 + rollout.SPARE_SLOTS, graph=False, compiled=True)
    windows = list(range(rollout.WINDOW, 129, rollout.WINDOW))
    assert rollout.COMPILE_DECODE and compiled.blocks is not None and compiled.windows == windows
    eager = rollout._FixedDecoder(m, 6, 128 + rollout.SPARE_SLOTS, graph=False)
    with torch.compiler.set_stance("fail_on_recompile"):  # as during a capture: every shape compiled already
        got, want = _decoders_step_alike(m, tok, [compiled, eager])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=0)
    torch.testing.assert_close(compiled.cache.k[1], eager.cache.k[1], atol=1e-5, rtol=0)  # the cache writes too


def test_no_window_of_the_fixed_loop_spans_its_whole_cache(tok, model_factory):
    """The fixed loop's caches hold rollout.SPARE_SLOTS slots past their last window (compiled blocks would
    make a graph of their own for a window that is the whole cache): the decoder's windows end that many
    slots short of its cache, they hold the longest row, and a step past them is refused."""
    import rollout
    m = model_factory(seed=4)
    p = prompts_of(tok, 3, seed=2)
    ro = sample(m, p, 2, 70, generator=torch.Generator().manual_seed(0), tokenizer=tok, fixed=True)
    dec = next(reversed(rollout._DECODERS[m].values()))
    need = max(map(len, p)) + 70 + 1
    assert dec.windows == list(range(rollout.WINDOW, dec.windows[-1] + 1, rollout.WINDOW))
    assert dec.cache.max_len == dec.windows[-1] + rollout.SPARE_SLOTS
    assert need <= dec.windows[-1] < need + rollout.WINDOW
    assert ro.response.shape[1] == 70
    with pytest.raises(ValueError, match="more than this decoder's"):
        dec.step(m, torch.zeros(6, dtype=torch.long), torch.tensor([dec.windows[-1]]), dec.windows[-1] + 1)


def test_other_windows_get_a_decoder_of_their_own(tok, model_factory, monkeypatch):
    """rollout.WINDOW and SPARE_SLOTS as they stand when a call samples (bench.py's decode candidates set
    them): a decoder made under other ones is not reused, and a decoder keeps its own windows after they
    change. The same tokens either way (a window only bounds the slots read; unwritten ones weigh 0)."""
    import rollout
    m = model_factory(seed=4)
    p = prompts_of(tok, 3, seed=2)
    T = 119 - max(map(len, p))  # 120 slots: caches of the same length (128 + spare) for windows of 64 and 32
    run = lambda: sample(m, p, 2, T, generator=torch.Generator().manual_seed(0), tokenizer=tok, fixed=True)
    newest = lambda: next(reversed(rollout._DECODERS[m].values()))
    monkeypatch.setattr(rollout, "WINDOW", 64)
    want, first = run(), newest()
    monkeypatch.setattr(rollout, "WINDOW", 32)
    got, dec = run(), newest()
    assert dec.cache.max_len == first.cache.max_len and first.windows == [64, 128]
    assert dec is not first and dec.windows == [32, 64, 96, 128]
    assert torch.equal(got.response, want.response)
    # cache slots past the last window: another decoder for the same prefill, with a window spanning it
    monkeypatch.setattr(rollout, "SPARE_SLOTS", 0)
    spanning = rollout._decoder(m, 6, dec.cache, tok.zc_id)  # (as the run above asks for it)
    assert spanning is not dec and spanning.windows[-1] == dec.cache.max_len
    assert torch.equal(run().response, want.response)
    # the first decoder's steps still read windows of 64 (where it has graphs, only those windows have one)
    seen, step = [], m.decode_step
    monkeypatch.setattr(m, "decode_step", lambda *a: seen.append(a[3]) or step(*a))
    for d in (first, dec):
        d.step(m, torch.zeros(6, dtype=torch.long), torch.tensor([64]), 65)
    assert seen == [128, 96]


def test_decode_compile_failure_falls_back_to_eager_blocks(tok, model_factory, monkeypatch, capsys):
    """Where inductor cannot compile (no compiler, an unsupported op), the decoder says so in one line and
    its blocks run eagerly, with the same logits; later decoders no longer try."""
    import rollout

    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here\nsecond line")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(rollout, "COMPILE_DECODE", True)
    m = model_factory(seed=4)
    dec = rollout._FixedDecoder(m, 6, 128 + rollout.SPARE_SLOTS, graph=False, compiled=True)
    assert dec.blocks is None and rollout.COMPILE_DECODE is False
    assert "torch.compile of the decode step failed (RuntimeError: no compiler here)" in capsys.readouterr().err
    got, want = _decoders_step_alike(m, tok, [dec, rollout._FixedDecoder(m, 6, 128 + rollout.SPARE_SLOTS, graph=False)], steps=5)
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_a_capture_failing_without_a_message_is_reported_by_its_type(tok, model_factory, monkeypatch, capsys):
    """An exception with no message (a bare RuntimeError()) has no first line: the decoder's notice names its
    type, and decoding goes on without graphs, where taking the message's first line raised IndexError in
    the handler (config.first_line, which every such notice uses)."""
    import config
    import rollout

    def capture(self, net, ctx):
        raise RuntimeError()
    monkeypatch.setattr(rollout._FixedDecoder, "_capture", capture)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(rollout, "CUDA_GRAPHS", True)
    dec = rollout._FixedDecoder(model_factory(seed=4), 6, 64 + rollout.SPARE_SLOTS, graph=True)
    assert dec.graphs == {} and rollout.CUDA_GRAPHS is False
    assert "(RuntimeError)" in capsys.readouterr().err
    assert config.first_line(ValueError("one\ntwo"), 2) == "on" and config.first_line(KeyError()) == "KeyError"


def test_a_failed_capture_of_compiled_blocks_retries_with_eager_blocks(tok, model_factory, monkeypatch, capsys):
    """On CUDA a compiled step that a graph cannot hold is captured again with eager blocks (a notice;
    graphs kept); if that capture fails too, graphs are off from then on. Rehearsed on CPU with a stand-in
    capture that fails as many times as told, and the compile's cheap aot_eager backend."""
    import functools

    import rollout
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    calls, fails = [], [1]

    def capture(self, net, ctx):
        calls.append(self.blocks is not None)  # whether this attempt captures compiled blocks
        if len(calls) <= fails[0]:
            raise RuntimeError("operation not permitted when stream is capturing\nsecond line")
    monkeypatch.setattr(rollout._FixedDecoder, "_capture", capture)
    m = model_factory(seed=4)
    for fails[0], graphs_after in ((1, True), (2, False)):
        calls.clear()
        monkeypatch.setattr(rollout, "COMPILE_DECODE", True)
        monkeypatch.setattr(rollout, "CUDA_GRAPHS", True)
        dec = rollout._FixedDecoder(m, 6, 128 + rollout.SPARE_SLOTS, graph=True, compiled=True)
        assert calls == [True, False] and dec.blocks is None and dec.graphs == {}
        assert rollout.COMPILE_DECODE is False and rollout.CUDA_GRAPHS is graphs_after
        err = capsys.readouterr().err
        assert "capture of the compiled decode step failed (operation not permitted when stream is capturing)" in err
        assert ("decoding without graphs from now on" in err) is not graphs_after


@pytest.mark.parametrize("fixed", [False, True])  # the CPU loop and the fixed-shape (CUDA) one
def test_a_long_sampling_call_says_where_it_is(tok, model_factory, monkeypatch, capsys, fixed):
    """A sampling call with a progress label prints where it is once config.PROGRESS_EVERY_S have passed (here at
    every step but the last): token numbers in order and the rows still sampling; none without a label,
    none before the time; sample_chunks numbers its calls."""
    import re

    import config
    import rollout
    m, p = model_factory(seed=0), prompts_of(tok, 2, seed=1)
    run = lambda label, **kw: rollout.sample(m, p, 3, 6, generator=torch.Generator().manual_seed(0), tokenizer=tok,
                                             fixed=fixed, progress=label, **kw)
    run("calibration")  # the default: a line a minute at most
    monkeypatch.setattr(config, "PROGRESS_EVERY_S", 0)
    run("")
    assert capsys.readouterr().out == ""
    ro = run("calibration")
    lines = capsys.readouterr().out.splitlines()
    got = [re.fullmatch(r"calibration: token (\d+)/6, (\d+) of 6 rows still sampling", ln) for ln in lines]
    assert all(got) and len(got) >= 3, lines
    assert [int(g[1]) for g in got] == list(range(1, len(got) + 1))
    left = [int(g[2]) for g in got]
    assert left == sorted(left, reverse=True) and left[-1] >= 6 - int(ro.finished.sum())
    probs = tasks.make_split("test", 2, 0)
    list(rollout.sample_chunks(m, tok, probs, num_samples=2, max_new_tokens=3, prompts_per_call=1,
                               generator=torch.Generator().manual_seed(0), progress="validation", fixed=fixed))
    out = capsys.readouterr().out
    assert "validation, call 1 of 2: token 1/3, " in out and "validation, call 2 of 2: token 1/3, " in out
