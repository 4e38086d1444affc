"""`autointerp sample` streams the corpus (corpus.StreamedContexts) and stores exactly what the in-memory
path gave: the same features (density probe), the same windows and statistics, the same corpus fingerprint,
also when --max-state-gb splits the features into passes (reported as tokens x passes)."""

import argparse
import json
import re

from helpers_sae import write_sae

from autointerp.cli import add_run_flags, build_config, main
from autointerp.corpus import special_token_ids, tokenise_corpus
from autointerp.inputs import corpus_fingerprint
from autointerp.sae import load_sae
from autointerp.sampler import hook_activations, sample_features
from autointerp.sampler_memory import GB, bytes_per_feature
from autointerp.selection import choose_features, probe_log10_density
from autointerp.store import RunStore

CONTEXT = 48
N_FEATURES = 6


def test_sample_streams_the_corpus_and_stores_what_the_in_memory_path_gave(tmp_path, smollm2, capsys):
    sae_path = write_sae(
        tmp_path, "standard", d_in=576, d_sae=48, hook_name="blocks.1.hook_resid_post", model_name="smollm2-135m"
    )
    corpus = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"text": f"Note {i}: the {'red ' * (i % 5)}fox met {i % 7} hens by the barn."}) for i in range(90)
    ]
    corpus.write_text("\n".join(lines))
    argv = ["--sae", str(sae_path), "--corpus", str(corpus), "--context-size", str(CONTEXT), "--n-tokens", "1200"]
    argv += ["--n-features", str(N_FEATURES), "--batch-size", "8", "--window-size", "16"]
    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    state, work = bytes_per_feature(build_config(parser.parse_args(argv)).sampler, CONTEXT)
    # Room for half the features and a bit (the 12 printed decimals must not round it below half): two passes.
    limit = (state + work) * (N_FEATURES // 2 + 0.5) / GB
    argv += ["--max-state-gb", f"{limit:.12f}"]
    cfg = build_config(parser.parse_args(argv))
    run_dir = tmp_path / "run"
    assert main(["sample", *argv, "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr()
    noted = out.out + out.err

    # The in-memory path as it was: the whole corpus tokenised into one tensor.
    sae = load_sae(str(sae_path))
    tokens = tokenise_corpus(cfg.corpus, smollm2.tokenizer, CONTEXT, sae.cfg.prepend_bos, max_tokens=1200)
    specials, first = special_token_ids(smollm2.tokenizer), 1 if sae.cfg.prepend_bos else 0
    n_probe = max(1, cfg.selection.density_probe_tokens // CONTEXT)
    density = probe_log10_density(smollm2, sae, tokens[:n_probe], specials, first, 8, hook_activations)
    features, _ = choose_features(cfg.selection, density, sae.cfg.d_sae)
    # The same passes (encoding a subset of the SAE's columns can move activations by an ulp).
    expected = sample_features(smollm2, sae, tokens, features, cfg.sampler, specials, first)

    with RunStore.open(run_dir, create=False) as store:
        run_id = store.latest_run_id()
        stored = store.load_samples(run_id)
        fingerprint = store.get_run(run_id)["corpus_fingerprint"]
    assert fingerprint == corpus_fingerprint(tokens)
    assert [s.feature for s in stored] == features and len(features) == N_FEATURES
    assert sum(len(s.windows) for s in stored) > 0
    assert [s.model_dump() for s in stored] == [s.model_dump() for s in expected]
    n = tokens.numel()
    assert re.search(rf"over {n:,} tokens x 2 passes = {2 * n:,} in \d+s", noted), noted
    assert not (run_dir / "sampling").exists()  # checkpoints cleared after the passes
