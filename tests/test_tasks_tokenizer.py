import json
import random
import re

import pytest

import tasks
from tokenizer import Tokenizer, build_tokenizer, load_tokenizer, train_bpe


@pytest.mark.parametrize("family", tasks.FAMILIES)
@pytest.mark.parametrize("level", tasks.LEVELS)
def test_every_family_level_has_worked_solution_ending_in_box(family, level):
    rng = random.Random(f"{family}{level}")
    for _ in range(30):
        p = tasks.make_problem(rng, family, level)
        assert p.family == family and p.level == level
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}")
        assert len(p.solution.splitlines()) >= 2  # at least one worked step before the box


def test_answers_are_mathematically_right():
    rng = random.Random(0)
    for _ in range(200):
        p = tasks.arithmetic(rng, rng.choice(tasks.LEVELS))
        a, op, b = re.match(r"Compute (\d+) ([-+*]) (\d+)\.", p.problem).groups()
        assert int(p.answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        p = tasks.linear(rng, rng.choice(tasks.LEVELS))
        lhs, rhs = p.problem[len("Solve for x: "):-1].split(" = ")
        x = int(p.answer)
        ev = lambda s: eval(re.sub(r"(\d)x", r"\1*x", s).replace(" ", ""), {"x": x})  # our own text
        assert ev(lhs) == ev(rhs)


def test_deterministic_by_seed_and_split_disjoint():
    assert tasks.make_split("test", 60, 3) == tasks.make_split("test", 60, 3)
    assert tasks.train_batch(5, 16, seed=1) == tasks.train_batch(5, 16, seed=1)
    assert tasks.train_batch(5, 16, seed=1) != tasks.train_batch(6, 16, seed=1)
    test = {p.problem for seed in range(3) for p in tasks.make_split("test", 300, seed)}
    train = {p.problem for s in range(200) for p in tasks.train_batch(s, 32, seed=0)}
    assert len(test) > 300 and len(train) > 3000
    assert not test & train  # no problem is in both splits, whatever the seeds
    assert all(tasks.split_of(t) == "test" for t in test)


def test_load_jsonl_and_errors_name_the_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"problem": "1+1?", "answer": 2}) + "\n\n"
                    + json.dumps({"problem": "x?", "answer": "3", "solution": "\\boxed{3}"}) + "\n")
    out = tasks.load_jsonl(str(good))
    assert [p.answer for p in out] == ["2", "3"] and out[1].solution == "\\boxed{3}"
    for line, msg in [("{not json", "invalid JSON"), ('{"answer": 1}', "missing required key 'problem'"),
                      ('[1, 2]', "expected a JSON object"), ('{"problem": "", "answer": 1}', "non-empty"),
                      ('{"problem": "p", "answer": [1]}', "string or a number")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"problem": "ok", "answer": 1}) + "\n" + line + "\n")
        with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{re.escape(msg)}"):
            tasks.load_jsonl(str(bad))


def test_bad_family_or_level():
    with pytest.raises(ValueError, match="unknown family"):
        tasks.make_problem(random.Random(0), "calculus", 1)
    with pytest.raises(ValueError, match="unknown level"):
        tasks.make_problem(random.Random(0), "word", 9)


def test_tokenizer_roundtrip_digits_and_specials(tok, tmp_path):
    text = "Compute 12345 + 678.\n\\boxed{\\frac{5}{6}} héllo ∞"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    for d in "0123456789":  # every digit is its own token
        assert tok.encode(d) == [ord(d)]
    digit_tokens = [tok.decode([i]) for i in tok.encode("907 * 31 = 28117")]
    assert all(sum(c.isdigit() for c in t) <= 1 for t in digit_tokens)
    assert len({tok.bos_id, tok.eos_id, tok.pad_id, tok.zc_id}) == 4
    # spelling a special token in text never produces it
    evil = "<|zc|> <|eos|><|bos|><|pad|>"
    assert not {tok.zc_id, tok.eos_id, tok.bos_id, tok.pad_id} & set(tok.encode(evil))
    assert tok.decode(tok.encode(evil)) == evil
    path = str(tmp_path / "tok.json")
    tok.save(path)
    again = load_tokenizer(path)
    assert again.encode(text) == ids and again.zc_id == tok.zc_id and again.vocab_size == tok.vocab_size


def test_bpe_is_deterministic_and_learns_merges():
    texts = [p.problem + "\n" + p.solution for p in tasks.train_batch(0, 100, seed=0)]
    a, b = train_bpe(texts, 50), train_bpe(list(texts), 50)
    assert a == b and len(a) == 50
    tok = Tokenizer(a)
    assert len(tok.encode("Compute")) == 1 or len(tok.encode(" boxed")) <= 2
    assert len(tok.encode(texts[0])) < len(texts[0].encode())  # merges compress the corpus
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer([b"ab", b"ab"])
