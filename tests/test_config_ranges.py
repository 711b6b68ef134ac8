"""config.py's checks at the ends of their ranges, the room a sampled row needs for the z_c readout, held-out sets
fixed whatever the training seed, the boolean flags' spellings."""
import dataclasses
import os

import pytest

import config
import tasks
from config import PRESETS, Config, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "outside_sample.jsonl")


def _cfg(**kw):
    return dataclasses.replace(Config(**PRESETS["test"]), **kw)


@pytest.mark.parametrize("kw", [dict(min_lr_frac=0.0), dict(min_lr_frac=1.0), dict(data_mix=0.0), dict(group_size=2),
                                dict(block_size=64, max_new_tokens=64 - config.PROMPT_ROOM)])
def test_the_ends_of_each_allowed_range_are_allowed(kw):
    config.check_config(_cfg(**kw))  # no UserError


@pytest.mark.parametrize("kw,fragment", [(dict(group_size=1), "--group_size must be >= 2"),
                                         (dict(n_embd=34), "--n_embd 34 must be a multiple of 2 \\* n_head = 4")])
def test_values_just_past_a_range_are_refused(kw, fragment):
    with pytest.raises(UserError, match=fragment):
        config.check_config(_cfg(**kw))


def test_lengths_leave_room_for_the_z_c_readout(tok, monkeypatch):
    """A sampled row is the prompt, up to max_new_tokens response tokens and the z_c readout after its EOS:
    prompt + max_new_tokens + 1 positions, which must fit block_size (by hand, on one problem)."""
    p = tasks.train_batch(0, 1, seed=0)[0]
    monkeypatch.setattr(config, "heldout_problems", lambda cfg, split="validation", n=None: [p])
    monkeypatch.setattr(tasks, "train_batch", lambda *a, **k: [p])
    P, R = len(tok.encode_prompt(p.problem)), config.sft_row_length(tok, p)
    M = R  # a response budget longer than the solution row: the prompt's room decides
    cfg = _cfg(max_new_tokens=M)
    config.check_lengths(cfg, tok, P + M + 1)  # fits exactly
    with pytest.raises(UserError, match="too small"):
        config.check_lengths(cfg, tok, P + M)
    assert config.prompts_that_fit([p], tok, P + M + 1, M, "RL", "x") == [p]
    with pytest.raises(UserError, match="none of the 1 problems kept fits RL"):
        config.prompts_that_fit([p], tok, P + M, M, "RL", "x")


def test_held_out_problems_are_one_set_whatever_the_training_seed():
    """Runs of different seeds are compared on the same validation and test problems (split seed 0),
    n_val of them for validation and n_test for test, each of its own split."""
    assert config.heldout_problems(_cfg(seed=0)) == config.heldout_problems(_cfg(seed=7))
    assert config.heldout_problems(_cfg(seed=0), "test") == config.heldout_problems(_cfg(seed=7), "test")
    cfg = _cfg(n_val=3, n_test=5)
    val, test = config.heldout_problems(cfg), config.heldout_problems(cfg, "test")
    assert len(val) == 3 and len(test) == 5
    assert {tasks.split_of(p.key) for p in val} == {"validation"} and {tasks.split_of(p.key) for p in test} == {"test"}


def test_outside_training_problems_keep_their_own_solutions(capsys):
    """--data_jsonl: a problem's own worked solution is what SFT trains on; only one without gets its boxed answer."""
    raw = {p.problem: p for p in tasks.load_jsonl(SAMPLE)}
    got = config.outside_train_data(_cfg(data_jsonl=SAMPLE))
    assert any(raw[p.problem].solution for p in got) and any(not raw[p.problem].solution for p in got)
    for p in got:
        assert p.solution == (raw[p.problem].solution or f"\\boxed{{{p.answer}}}")


def test_boolean_flags_take_every_spelling_the_parser_names():
    for yes in ("1", "true", "yes", "on", "ON"):
        assert config.resolve_config(["--config", "test", "--sft_pack", yes])[0].sft_pack is True
    for no in ("0", "false", "no", "off"):
        assert config.resolve_config(["--config", "test", "--resume", no])[0].resume is False
