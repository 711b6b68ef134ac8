"""The tokenizer's documented formats: BPE's merge rule by hand and independent of corpus order, the prompt and SFT
row layout, the id layout checkpoints depend on, a tokenizer file with other special tokens refused."""
import tasks
import train
from tokenizer import train_bpe


def test_bpe_merges_by_hand():
    """Pieces 'ab' x1, ' ab' x2, ' cd' x1: (a, b) occurs 3 times and is merged first, then (' ', ab)
    twice; every pair left occurs once, so learning stops there (the docstring's rule), below n_merges."""
    assert train_bpe(["ab ab ab cd"], 10) == [b"ab", b" ab"]


def test_bpe_merges_do_not_depend_on_the_corpus_order():
    """Ties are broken by the pair's bytes, not by which text came first: the same corpus, the same merges."""
    texts = [p.problem + "\n" + p.solution for p in tasks.train_batch(0, 60, seed=0)]
    assert train_bpe(texts, 40) == train_bpe(texts[::-1], 40)


def test_prompt_and_sft_row_are_bos_problem_newline_solution_eos(tok):
    """The documented formats: a prompt is [BOS, problem, newline]; an SFT row is the prompt, the
    solution and EOS; z_c and padding never appear in a row."""
    for p in tasks.train_batch(0, 5, seed=0):
        assert tok.encode_prompt(p.problem) == [tok.bos_id] + tok.encode(p.problem + "\n")
        (row, n_prompt), = train.sft_rows(tok, [p])
        assert row[0] == tok.bos_id and row[-1] == tok.eos_id and n_prompt == len(tok.encode_prompt(p.problem))
        assert tok.decode(row[1:-1]) == p.problem + "\n" + p.solution
        assert tok.zc_id not in row and tok.pad_id not in row and row.count(tok.bos_id) == 1


def test_a_tokenizer_file_with_other_special_tokens_is_refused(tmp_path):
    import json
    import pytest
    from tokenizer import Tokenizer, load_tokenizer
    data = json.loads(Tokenizer([b"ab"]).to_json())
    data["specials"] = data["specials"][:3]  # a tokenizer from before z_c: its ids would be read wrongly
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="special tokens"):
        load_tokenizer(str(path))


def test_ids_are_the_bytes_then_the_merges_then_bos_eos_pad_zc(tok):
    """The documented id layout, which saved checkpoints depend on: 0..255 the bytes, then the merges, then
    <|bos|>, <|eos|>, <|pad|>, <|zc|> and nothing else (an id with no token could be sampled and not decoded)."""
    assert [tok.encode(chr(i)) for i in range(128)] == [[i] for i in range(128)]
    assert tok.enc.decode_single_token_bytes(255) == b"\xff" and tok.enc.decode_single_token_bytes(256) == tok.merges[0]
    n = 256 + len(tok.merges)
    assert [tok.bos_id, tok.eos_id, tok.pad_id, tok.zc_id] == list(range(n, n + 4)) and tok.vocab_size == n + 4
    assert [tok.decode([i]) for i in range(n, n + 4)] == ["<|bos|>", "<|eos|>", "<|pad|>", "<|zc|>"]
