import pytest
import torch

from model import GPT, GPTConfig


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=32, **kw)
    return GPT(cfg).eval()


# our architecture, and the Llama family with grouped-query attention, q/k/v biases, tied embeddings
ARCHS = [{}, dict(mlp="swiglu", mlp_hidden=48, norm_weight=True, n_kv_head=1, qkv_bias=True, tie_embeddings=True,
                  rope_base=500000.0)]


def test_rope_and_norm_are_the_textbook_formulas_exactly():
    """The kernel-saving forms (one roll for q and k, torch's rms_norm) give the very numbers of the
    plain formulas, in float32 and for bf16 inputs against float32 tables (autocast): no run changes."""
    from model import RMSNorm, apply_rope, rope_tables
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 300, (3, 5), generator=g)
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    cos, sin = rope_tables(pos, inv_freq)
    ang = pos[:, :, None, None].float() * inv_freq  # (B, T, 1, D/2)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(3, 5, 4, 16, generator=g).to(dtype)
        x1, x2 = x[..., :8], x[..., 8:]
        want = torch.cat([x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()], -1)
        assert torch.equal(apply_rope(x, cos, sin), want)
    x = torch.randn(4, 7, 32, generator=g) * 3
    assert torch.equal(RMSNorm(32, 1e-6, False)(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))


@pytest.mark.parametrize("arch", ARCHS)
def test_kv_cache_decode_matches_full_forward(arch):
    m = tiny_model(**arch)
    if arch:  # gains and biases away from their initial 1 and 0, so that a dropped one shows
        with torch.no_grad():
            for name, p in m.named_parameters():
                if p.dim() == 1:
                    p.add_(torch.randn_like(p) * 0.3)
    x = torch.randint(0, 50, (3, 20), generator=torch.Generator().manual_seed(1))
    full = m(x)  # (B, T, V)
    cache = m.new_cache(3, 20)
    steps = [m(x[:, :7], cache=cache)]  # a chunk, then one token at a time, then a chunk
    for t in range(7, 15):
        steps.append(m(x[:, t:t + 1], cache=cache))
    steps.append(m(x[:, 15:], cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_mixed_length_batch_matches_single_rows(arch):
    m = tiny_model(1, **arch)
    g = torch.Generator().manual_seed(2)
    lengths = [5, 9, 2, 9]
    seqs = [torch.randint(0, 50, (n,), generator=g) for n in lengths]
    T = max(lengths)
    idx = torch.zeros(len(seqs), T, dtype=torch.long)
    valid = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        idx[i, T - len(s):] = s
        valid[i, T - len(s):] = True
    cont = torch.randint(0, 50, (len(seqs), 4), generator=g)  # 4 decode steps after the prompt
    # no-cache padded forward
    padded = m(idx, valid=valid)
    # prefill + decode with cache
    cache = m.new_cache(len(seqs), T + 4)
    pre = m(idx, cache=cache, valid=valid)
    dec = [m(cont[:, j:j + 1], cache=cache) for j in range(4)]
    for i, s in enumerate(seqs):
        alone = m(torch.cat([s, cont[i]])[None])[0]  # (n + 4, V)
        n = len(s)
        torch.testing.assert_close(padded[i, T - n:], alone[:n], atol=1e-5, rtol=0)
        torch.testing.assert_close(pre[i, T - n:], alone[:n], atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cat([d[i] for d in dec]), alone[n:], atol=1e-5, rtol=0)
    assert not torch.isnan(pre).any()  # padding queries never produce NaN


def test_cache_select_repeats_rows():
    m = tiny_model(2)
    x = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(3))
    cache = m.new_cache(2, 10)
    m(x, cache=cache)
    rep = cache.select(torch.tensor([0, 0, 1, 1, 1]))
    nxt = torch.tensor([[1], [2], [3], [4], [5]])
    out = m(nxt, cache=rep)[:, 0]
    for r, src in enumerate([0, 0, 1, 1, 1]):
        ref = m(torch.cat([x[src], nxt[r]])[None])[0, -1]
        torch.testing.assert_close(out[r], ref, atol=1e-5, rtol=0)


def test_causality():
    m = tiny_model(3)
    x = torch.randint(0, 50, (1, 16), generator=torch.Generator().manual_seed(4))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 7) % 50
    a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :10], b[:, :10], atol=0, rtol=0)
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-3


def test_generate_stops_within_its_budget():
    m = tiny_model(4)
    out = m.generate([1, 2, 3], 5, eos_id=49, temperature=0)
    assert 1 <= len(out) <= 5
    # top-k keeps the k best tokens, the k-th included: with k = 1, sampling at any temperature is greedy
    g = torch.Generator().manual_seed(0)
    assert m.generate([1, 2, 3], 5, eos_id=49, temperature=1.5, top_k=1, generator=g) == out


def test_block_size_and_bad_config_errors():
    m = tiny_model()
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple"):
        GPTConfig(n_embd=30, n_head=4)

