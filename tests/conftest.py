"""Shared fixtures: a hermetic in-process tokenizer and tiny random models (seconds on CPU)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(min(2, torch.get_num_threads()))

import tasks  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import build_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    probs = [p for s in range(4) for p in tasks.train_batch(s, 50, seed=0)]
    return build_tokenizer([p.problem + "\n" + p.solution for p in probs], n_merges=64)


def make_model(tok, seed=0, eos_boost=0.0, eos_offset=0.0, n_layer=2, n_embd=32, block_size=160):
    """A tiny random GPT. A random model almost never samples EOS; so that rows finish at different
    steps, eos_boost > 0 scales the EOS row of the head (EOS likely at some positions only; useful for
    greedy decoding) and eos_offset adds a constant to the EOS logit (a steady chance per step when
    sampling)."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2,
                      n_embd=n_embd)).eval()
    if eos_boost:
        with torch.no_grad():
            m.lm_head.weight[tok.eos_id] *= eos_boost
    if eos_offset:
        def hook(_mod, _inp, out):
            return out + eos_offset * (torch.arange(out.shape[-1]) == tok.eos_id)
        m.lm_head.register_forward_hook(hook)
    return m


@pytest.fixture
def model_factory(tok):
    return lambda **kw: make_model(tok, **kw)


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory):
    """A finished SFT run of the test preset (seconds), shared by the tests that need a run directory."""
    import train
    out = str(tmp_path_factory.mktemp("sft"))
    train.main(["--config", "test", "--stage", "sft", "--out_dir", out])
    return out
