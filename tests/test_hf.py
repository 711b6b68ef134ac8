"""Pretrained Llama-family checkpoints in and out (hf.py, export.py, sample.py), checked against
transformers and tokenizers offline: tiny random Llama and Qwen2 models with a byte-level BPE tokenizer
trained here, loaded with --init_hf; runs exported and loaded back in transformers with the same logits."""
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
import torch

import transformers  # test requirements (requirements-dev.txt); the runtime never imports them
from tokenizers import Tokenizer as HFTokenizer

import config
import export
import hf
import runs
import tasks
import train
from rollout import score_rollouts, sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_tiny_hf  # noqa: E402

ODD = ["héllo wörld  ", "x\n\n\ny", "Ünïcödé ÅÉ 日本語 😀 e\u0301", "tab\there", "  leading", "trailing   ",
       "don't we'll THEY'RE", "1234567 + 89 = ?", "\\frac{3}{4}", ""]


def _texts(n_batches=40):
    return [p.problem + "\n" + (p.solution or "") for s in range(n_batches) for p in tasks.train_batch(s, 50, "hf")]


def _save(path, kind, pad_vocab=0, tie=False):
    return make_tiny_hf.save_tiny(str(path), kind, pad_vocab, tie)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("llama"), "llama")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):  # a vocabulary padded to a round size, tied embeddings
    return _save(tmp_path_factory.mktemp("qwen2"), "qwen2", pad_vocab=8, tie=True)


def _hf_logits(path, ids):
    ref = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return ref(ids).logits


@pytest.mark.parametrize("which", ["llama_dir", "qwen_dir"])
def test_init_hf_gives_transformers_logits_and_tokens(which, request):
    path = request.getfixturevalue(which)
    model, tok = hf.load_pretrained(path, 256, "cpu")
    ht = HFTokenizer.from_file(os.path.join(path, "tokenizer.json"))
    texts = _texts() + ODD
    assert len(texts) > 2000
    mismatched = [t for t in texts if tok.encode(t) != ht.encode(t, add_special_tokens=False).ids]
    assert mismatched == []
    # what transformers sees for a prompt (with the tokenizer's BOS where it adds one) is what we feed
    problem = tasks.train_batch(0, 1, 0)[0].problem
    assert tok.encode_prompt(problem) == ht.encode(hf.BASE_TEMPLATE.format(problem=problem)).ids
    ids = torch.tensor([tok.encode_prompt(p.problem) for p in tasks.train_batch(1, 3, 0)][0:1] * 2)
    ids[1, :3] = torch.tensor([5, 6, 7])
    with torch.no_grad():
        ours = model(ids)
    theirs = _hf_logits(path, ids)
    assert (ours[..., :theirs.shape[-1]] - theirs).abs().max() <= 1e-4


def test_zc_is_a_token_no_text_produces(llama_dir, qwen_dir, tmp_path):
    _, tok = hf.load_pretrained(llama_dir, 256, "cpu")  # a reserved special token
    assert tok.zc_id == HFTokenizer.from_file(os.path.join(llama_dir, "tokenizer.json")).token_to_id(
        "<|reserved_special_token_0|>")
    model, tok = hf.load_pretrained(qwen_dir, 256, "cpu")  # an embedding row the tokenizer never uses
    assert tok.zc_id == 400 and tok.vocab_size == model.cfg.vocab_size == 408
    assert set(range(400, 408)) - {tok.zc_id} <= set(tok.never_sampled)
    for t in ["<|endoftext|>", "<|im_start|>", f"<|zc:{tok.zc_id}|>", "<|zc|>"]:
        assert not set(tok.encode(t)) & set(tok.specials.values())
    # no spare row and no reserved token: z_c gets a new row (mean of the others); the old logits stay
    full = _save(tmp_path / "full", "qwen2", tie=True)
    model, tok = hf.load_pretrained(full, 256, "cpu")
    assert tok.zc_id == model.cfg.vocab_size - 1 == 400
    ids = torch.tensor([tok.encode_prompt("1 + 2")])
    with torch.no_grad():
        assert (model(ids)[..., :400] - _hf_logits(full, ids)).abs().max() <= 1e-4
    assert torch.allclose(model.wte.weight[400], model.wte.weight[:400].mean(0))


def _export_and_compare(run_dir, out, command_line=False):
    """export.py on a run (as a command, or its main() in this process), then the export read back by
    transformers: the same tokens, logits, and z_c log-prob at EOS as ours."""
    if command_line:
        r = subprocess.run([sys.executable, "export.py", run_dir, out], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    else:
        assert export.main([run_dir, out]) == 0
    model, tok, ck = runs.load_run(run_dir)
    laser = json.load(open(os.path.join(out, "config.json")))["laser"]
    assert laser["zc_id"] == tok.zc_id and laser["beta_v"] == ck["beta_v"] and laser["c_ref"] == ck["c_ref"]
    ht = HFTokenizer.from_file(os.path.join(out, "tokenizer.json"))
    texts = _texts(10) + ODD
    assert [tok.encode(t) for t in texts] == [ht.encode(t, add_special_tokens=False).ids for t in texts]
    # a sampled solution with its EOS: same logits, and the z_c log-prob at EOS read there is ours
    ro = sample(model, [tok.encode_prompt(p.problem) for p in tasks.train_batch(0, 2, 0)], 2, 24,
                generator=torch.Generator().manual_seed(0), tokenizer=tok)
    _, logp_zc = score_rollouts(model, ro, tok.zc_id, tok.pad_id)
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    for i in range(len(ro)):
        n = int(ro.lengths[i])
        seq = torch.tensor([ro.prompts[i // ro.group_size] + ro.response[i, :n].tolist()])
        with torch.no_grad():
            ours, theirs = model(seq), ref(seq).logits
        assert (ours - theirs).abs().max() <= 1e-4
        if ro.finished[i]:
            assert abs(torch.log_softmax(theirs[0, -1], -1)[laser["zc_id"]] - logp_zc[i]) <= 1e-4
    return ref


def test_export_of_an_init_hf_run_loads_back_in_transformers(qwen_dir, tmp_path):
    run = str(tmp_path / "run")
    train.main(["--config", "test", "--init_hf", qwen_dir, "--out_dir", run, "--sft_steps", "4"])
    hf_cfg = json.load(open(os.path.join(qwen_dir, "config.json")))
    for stage in ("sft", "laser"):  # config.json describes the pretrained model, not the preset's (1 layer, 32 wide)
        saved = json.load(open(os.path.join(run, stage, "config.json")))
        assert (saved["n_layer"], saved["n_head"], saved["n_embd"], saved["arch"], saved["bpe_merges"]) == (
            hf_cfg["num_hidden_layers"], hf_cfg["num_attention_heads"], hf_cfg["hidden_size"], "llama", 0), stage
    assert hf_cfg["num_hidden_layers"] != config.PRESETS["test"]["n_layer"]  # (else the check above proves nothing)
    ref = _export_and_compare(os.path.join(run, "laser"), str(tmp_path / "hf"), command_line=True)
    assert type(ref).__name__ == "Qwen2ForCausalLM" and ref.config.tie_word_embeddings


def test_export_of_an_arch_llama_run_and_refusal_of_ours(sft_dir, tmp_path, capsys):
    run = str(tmp_path / "run")
    train.main(["--config", "test", "--arch", "llama", "--out_dir", run, "--sft_steps", "8"])
    ref = _export_and_compare(os.path.join(run, "laser"), str(tmp_path / "hf"))
    assert type(ref).__name__ == "LlamaForCausalLM"
    capsys.readouterr()
    assert export.main([sft_dir, str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    assert "--arch llama" in err and len(err.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "no")


def test_older_config_files_and_unsupported_layers():
    base = dict(model_type="llama", vocab_size=10, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4)
    c = hf.model_config({**base, "rope_theta": 500000.0, "num_key_value_heads": 2}, 64)  # rope_theta at top level
    assert (c.rope_base, c.n_kv_head, c.head_dim, c.qkv_bias, c.tie_embeddings) == (500000.0, 2, 8, False, False)
    assert hf.model_config({**base, "model_type": "qwen2", "tie_word_embeddings": True}, 64).qkv_bias
    for bad in ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, {"hidden_act": "gelu"}, {"mlp_bias": True},
                {"model_type": "mistral"}):
        with pytest.raises(hf.UserError):
            hf.model_config({**base, **bad}, 64)


def test_safetensors_round_trip(tmp_path):
    t = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(6).reshape(2, 3),
         "empty": torch.zeros(0, 4)}
    path = str(tmp_path / "x.safetensors")
    hf.write_safetensors(path, t, {"format": "pt"})
    back = hf.read_safetensors(path)
    assert set(back) == set(t) and all(torch.equal(back[k], t[k]) and back[k].dtype == t[k].dtype for k in t)
    from safetensors.torch import load_file  # the reference reader agrees
    assert all(torch.equal(load_file(path)[k], t[k]) for k in t)


def test_sample_py_prints_each_sample_with_r_s_and_the_votes(sft_dir, capsys):
    import sample as sample_py  # (its main() in this process: a process of its own would import torch again)
    assert sample_py.main([sft_dir, "--prompt", "Compute 17 + 25.", "-n", "3", "--gold", "42",
                           "--max_new_tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 3 and "r_s-weighted vote" in out and "majority vote" in out
    assert all(("right" in ln or "wrong" in ln) for ln in out.splitlines() if ln.startswith("--- sample"))
    assert sample_py.main([sft_dir, "--prompt", " ", "-n", "3"]) == 2
    assert "--prompt is empty" in capsys.readouterr().err


def test_bad_pretrained_directories_end_in_one_line(tmp_path, llama_dir, capsys):
    def run(*args):  # train.py's main in this process (tests/test_train.py runs it as a command)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            train.main(["--config", "test", "--out_dir", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("train.py: error: "), err
        return err
    assert "no config.json" in run("--init_hf", str(tmp_path))
    spm = tmp_path / "spm"
    spm.mkdir()
    for f in os.listdir(llama_dir):
        (spm / f).write_bytes(open(os.path.join(llama_dir, f), "rb").read())
    spec = json.load(open(spm / "tokenizer.json"))
    spec["model"]["byte_fallback"] = True
    (spm / "tokenizer.json").write_text(json.dumps(spec))
    assert "only byte-level BPE" in run("--init_hf", str(spm))
    conf = json.load(open(spm / "config.json"))
    conf["model_type"] = "gpt_neox"
    (spm / "config.json").write_text(json.dumps(conf))
    assert "not supported" in run("--init_hf", str(spm))


def test_corrupt_pretrained_files_are_one_line_errors_naming_the_file(tmp_path, llama_dir):
    d = str(tmp_path / "d")
    shutil.copytree(llama_dir, d)
    st, conf_path = os.path.join(d, "model.safetensors"), os.path.join(d, "config.json")
    good = open(st, "rb").read()

    def refused(fragment, name):
        with pytest.raises(hf.UserError, match=fragment) as e:
            hf.load_pretrained(d, 64, "cpu")
        assert os.path.join(d, name) in str(e.value) and "\n" not in str(e.value)

    for blob, fragment in ((b"\xff" * 8 + good[8:], "not a safetensors file"),  # a header length past 2**63
                           (struct.pack("<Q", 10 ** 12) + good[8:], "not a safetensors file"),  # past the file's end
                           (good[:-100], "truncated"),  # the last tensor's bytes are missing
                           (good[:len(good) // 2], "truncated")):
        open(st, "wb").write(blob)
        refused(fragment, "model.safetensors")
    open(st, "wb").write(good)
    conf = json.load(open(conf_path))
    for key in ("hidden_size", "num_attention_heads", "vocab_size"):
        json.dump({k: v for k, v in conf.items() if k != key}, open(conf_path, "w"))
        refused(f"no '{key}'", "config.json")
    json.dump({**conf, "hidden_size": "64"}, open(conf_path, "w"))
    refused("hidden_size should be a positive integer", "config.json")
    json.dump([conf], open(conf_path, "w"))
    refused("expected a JSON object", "config.json")
    json.dump(conf, open(conf_path, "w"))
    # a tokenizer.json with a field missing or of another type: one line, not a KeyError's traceback
    tok_path = os.path.join(d, "tokenizer.json")
    spec = json.load(open(tok_path))
    last = spec["model"]["merges"][-1]
    made = last.replace(" ", "", 1) if isinstance(last, str) else "".join(last)
    short_vocab = {s: i for s, i in spec["model"]["vocab"].items() if s != made}
    broken = {"a merge gives .*, not a byte-level token of the vocabulary":
              {**spec, "model": {**spec["model"], "vocab": short_vocab}},
              r"KeyError: 'vocab'": {**spec, "model": {k: v for k, v in spec["model"].items() if k != "vocab"}},
              r"KeyError: 'type'": {**spec, "pre_tokenizer": {"pretokenizers": []}},
              r"KeyError: 'id'": {**spec, "added_tokens": [{"content": "<x>", "special": True}]},
              r"AttributeError: 'str' object": {**spec, "normalizer": "NFC"},
              r"TypeError: 'int' object": {**spec, "added_tokens": 5}}
    for fragment, bad in broken.items():
        json.dump(bad, open(tok_path, "w"))
        refused("tokenizer.json: " + ("" if fragment.startswith("a merge") else
                                      "not a tokenizer.json as the tokenizers library writes it .*") + fragment,
                "tokenizer.json")
    json.dump(spec, open(tok_path, "w"))
    assert hf.load_pretrained(d, 64, "cpu")[0].cfg.n_embd == 64  # the copies themselves were fine


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory):
    """An exportable run: two SFT steps of the test preset with the Llama layer."""
    run = str(tmp_path_factory.mktemp("llama_run"))
    train.main(["--config", "test", "--arch", "llama", "--stage", "sft", "--sft_steps", "2", "--out_dir", run])
    return run


def _export(capsys, *argv):
    capsys.readouterr()
    code = export.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 0 or (code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("export.py: error: ")), err
    return code, err


def test_export_writes_atomically_and_only_where_it_may(llama_run, tmp_path, capsys, monkeypatch):
    before = {n: open(os.path.join(llama_run, n), "rb").read() for n in os.listdir(llama_run) if n != "ckpt.pt"}
    for argv in ([llama_run, llama_run], [llama_run, llama_run, "--force"],
                 [os.path.join(llama_run, "ckpt.pt"), llama_run + os.sep, "--force"]):
        code, err = _export(capsys, *argv)
        assert code == 2 and "a training run's directory (it holds ckpt.pt)" in err
    assert {n: open(os.path.join(llama_run, n), "rb").read() for n in before} == before  # the run is untouched
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (afile, afile / "hf"):
        code, err = _export(capsys, llama_run, out)
        assert code == 2 and "is a file, not a directory" in err
    written = []
    real = runs.atomic_write

    def recorded(path, write):
        written.append(os.path.basename(path))
        real(path, write)
    monkeypatch.setattr(runs, "atomic_write", recorded)  # runs.write_json / write_text
    monkeypatch.setattr(hf, "atomic_write", recorded)  # write_safetensors
    out = tmp_path / "hf"
    assert _export(capsys, llama_run, out)[0] == 0
    assert sorted(written) == sorted(hf.EXPORT_FILES) and sorted(os.listdir(out)) == sorted(hf.EXPORT_FILES)
    (out / ".tmp_x.safetensors").write_bytes(b"")  # what an interrupted export leaves behind does not count
    assert _export(capsys, llama_run, out)[0] == 0  # a second export into the first replaces it
    (out / "README.md").write_text("mine")
    code, err = _export(capsys, llama_run, out)  # a directory holding something else: only with --force
    assert code == 2 and "not empty" in err and "--force" in err
    stamp = (out / "config.json").stat().st_mtime_ns
    assert _export(capsys, llama_run, out, "--force")[0] == 0
    assert (out / "README.md").read_text() == "mine" and (out / "config.json").stat().st_mtime_ns > stamp
    assert json.load(open(out / "config.json"))["laser"]["stage"] == "sft"
    (out / "model-00001-of-00002.safetensors").write_bytes(b"")  # an HF directory's own shards: never mixed with ours
    code, err = _export(capsys, llama_run, out, "--force")
    assert code == 2 and "other weights (model-00001-of-00002.safetensors)" in err


def test_config_fields_a_real_checkpoint_sets_are_read():
    """rms_norm_eps, an explicit head_dim (not hidden_size / heads) and zero sizes, as Llama 3 or Qwen3-style
    configs write them; Llama attention biases and Qwen2 sliding windows are refused, not dropped."""
    base = dict(model_type="llama", vocab_size=10, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=4)
    c = hf.model_config({**base, "rms_norm_eps": 1e-5, "head_dim": 16}, 64)
    assert (c.norm_eps, c.head_dim) == (1e-5, 16)
    for bad in ({"attention_bias": True}, {"model_type": "qwen2", "use_sliding_window": True},
                {"num_attention_heads": 0}, {"num_key_value_heads": 0}):
        with pytest.raises(hf.UserError):
            hf.model_config({**base, **bad}, 64)


def test_a_sharded_checkpoint_loads_every_shard(tmp_path, llama_dir):
    """model.safetensors.index.json and its shards (how transformers saves any model over 5 GB)."""
    d = tmp_path / "sharded"
    shutil.copytree(llama_dir, d)
    w = hf.read_safetensors(str(d / "model.safetensors"))
    os.remove(d / "model.safetensors")
    names = sorted(w)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for f, ns in shards.items():
        hf.write_safetensors(str(d / f), {n: w[n] for n in ns}, {"format": "pt"})
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: f for f, ns in shards.items() for n in ns}}))
    a, b = (hf.load_pretrained(path, 64, "cpu")[0].state_dict() for path in (llama_dir, str(d)))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("which", ["llama_dir", "qwen_dir"])
def test_an_init_hf_model_exported_unchanged_is_the_same_model(which, request, tmp_path):
    """--init_hf then export with no training in between gives back the original: the same architecture
    (config.json read as model_config reads it), the same BOS/EOS ids, a tokenizer that adds the same BOS
    and names the same EOS, and the same logits in transformers."""
    src = request.getfixturevalue(which)
    model, tok = hf.load_pretrained(src, 256, "cpu")
    out = str(tmp_path / "hf")
    hf.export(model, tok, out, {"zc_id": tok.zc_id})
    mine, theirs = (json.load(open(os.path.join(d, "config.json"))) for d in (out, src))
    assert hf.model_config(mine, 256) == hf.model_config(theirs, 256) and mine["max_position_embeddings"] == 256
    assert (mine["bos_token_id"], mine["eos_token_id"]) == (tok.bos_id, tok.eos_id) == (
        theirs.get("bos_token_id") if tok.bos_id is not None else None, theirs["eos_token_id"])
    tcfg = json.load(open(os.path.join(out, "tokenizer_config.json")))
    assert tok.specials[tcfg["eos_token"]] == tok.eos_id
    problem = tasks.train_batch(0, 1, 0)[0].problem
    ht = HFTokenizer.from_file(os.path.join(out, "tokenizer.json"))
    assert ht.encode(hf.BASE_TEMPLATE.format(problem=problem)).ids == tok.encode_prompt(problem)
    ids = torch.tensor([tok.encode_prompt(problem)])
    assert (_hf_logits(out, ids) - _hf_logits(src, ids)).abs().max() <= 1e-5


def test_tokenizers_tiktoken_cannot_reproduce_are_refused(tmp_path, llama_dir):
    """A prefix space, a second regex split after Split (ByteLevel use_regex), merges out of id order and
    another normalizer would each tokenize otherwise than transformers: refused, not loaded."""
    d = tmp_path / "t"
    shutil.copytree(llama_dir, d)
    good = json.load(open(d / "tokenizer.json"))
    split, byte_level = good["pre_tokenizer"]["pretokenizers"]
    merges = good["model"]["merges"]
    two_regexes = [split, {**byte_level, "use_regex": True}]
    cases = [({**good, "pre_tokenizer": {**good["pre_tokenizer"], "pretokenizers": two_regexes}}, "pre-tokenizer"),
             ({**good, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                         "use_regex": True}}, "add_prefix_space"),
             ({**good, "model": {**good["model"], "merges": [merges[-1], *merges[1:-1], merges[0]]}}, "merge order"),
             ({**good, "normalizer": {"type": "Lowercase"}}, "normalizer")]
    for spec, fragment in cases:
        (d / "tokenizer.json").write_text(json.dumps(spec))
        with pytest.raises(hf.UserError, match=fragment):
            hf.load_hf_tokenizer(str(d), 1000)
    (d / "tokenizer.json").write_text(json.dumps(good))
    assert hf.load_hf_tokenizer(str(d), 1000)[0].eos_id is not None  # the copy itself was fine


def test_init_hf_token_roles_and_tied_weights(tmp_path, llama_dir, qwen_dir):
    """EOS can be sampled and no other special token can; a tied model stays tied (one parameter, as
    training and export assume); an EOS list (Llama 3.1 instruct) gives its first id; a pad id is kept."""
    for path in (llama_dir, qwen_dir):
        model, tok = hf.load_pretrained(path, 256, "cpu")
        assert tok.eos_id not in tok.never_sampled
        assert set(tok.specials.values()) - {tok.eos_id} <= set(tok.never_sampled)
        assert (model.lm_head.weight is model.wte.weight) == model.cfg.tie_embeddings
    assert hf.load_pretrained(qwen_dir, 256, "cpu")[0].cfg.tie_embeddings  # (else the check above proves nothing)
    d = tmp_path / "d"
    shutil.copytree(llama_dir, d)
    conf = json.load(open(d / "config.json"))
    eos, other = conf["eos_token_id"], conf["bos_token_id"]
    json.dump({**conf, "eos_token_id": [eos, other], "pad_token_id": other}, open(d / "config.json", "w"))
    tok = hf.load_hf_tokenizer(str(d), conf["vocab_size"])[0]
    assert (tok.eos_id, tok.pad_id) == (eos, other)
    # an added token that is not special (Qwen2.5's <tool_call>) on the first spare row: text makes it, so not z_c
    q = tmp_path / "q"
    shutil.copytree(qwen_dir, q)
    spec = json.load(open(q / "tokenizer.json"))
    spec["added_tokens"].append({"id": 400, "content": "<tool_call>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": False})
    (q / "tokenizer.json").write_text(json.dumps(spec))
    tok = hf.load_hf_tokenizer(str(q), 408)[0]
    assert tok.specials["<tool_call>"] == 400 and tok.zc_id not in (400, tok.eos_id)


def test_export_refuses_a_directory_with_pytorch_bin_weights(llama_run, tmp_path, capsys):
    """Weights in transformers' older format count as another model's weights too: refused, not mixed in."""
    out = tmp_path / "hf"
    out.mkdir()
    (out / "pytorch_model.bin").write_bytes(b"")  # transformers would read it beside model.safetensors
    code, err = _export(capsys, llama_run, out, "--force")
    assert code == 2 and "other weights (pytorch_model.bin)" in err
