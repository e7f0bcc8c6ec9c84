"""The tiny offline T0: a T5 v1.1-style checkpoint built from a config, with a local tokenizer.

No weights can be downloaded on the machines this project runs on, so tests, the demo and the
benchmarks use a randomly initialised (fixed seed) T5 with the same architecture family as T0
(gated-gelu feed-forward, untied input/output embeddings, relative attention) and a sentencepiece
tokenizer trained on the built-in tasks' text. It is written as an ordinary Hugging Face checkpoint
directory, loaded by the same ``from_pretrained`` code path as ``bigscience/T0_3B``.
"""

from __future__ import annotations

import io
import json
import logging
import string
import tempfile
from pathlib import Path
from typing import Iterable

from rospr.errors import SettingError

log = logging.getLogger(__name__)

# Lines holding every printable ASCII character a few times, so each becomes a piece.
ALPHABET = [" ".join(string.ascii_letters + string.digits + string.punctuation)] * 20

# d_model, d_ff, layers (enc = dec), heads, d_kv, tokenizer pieces, model vocab (padded like T5's 32128)
SIZES = {
    "tiny": dict(d_model=128, d_ff=256, num_layers=2, num_heads=4, d_kv=32, pieces=2000, vocab_size=4096),
    "small": dict(d_model=512, d_ff=1024, num_layers=6, num_heads=8, d_kv=64, pieces=8000, vocab_size=32128),
    # T5 v1.1-large's shape (google/t5-v1_1-large config): ~783M parameters, 3.1 GB of float32 weights,
    # over protobuf's 2 GB limit, so its ONNX graph goes out with external data
    "large": dict(d_model=1024, d_ff=2816, num_layers=24, num_heads=16, d_kv=64, pieces=8000, vocab_size=32128),
}


def train_tokenizer(texts: Iterable[str], pieces: int, out_dir: Path, seed: int = 0):
    """Train a unigram sentencepiece model (T5 ids: pad 0, eos 1, unk 2; byte fallback) and save a
    T5 tokenizer loadable with ``AutoTokenizer.from_pretrained(out_dir)``."""
    import sentencepiece as spm
    from transformers import T5TokenizerFast

    buf = io.BytesIO()
    texts = [t for t in texts if t.strip()] + ALPHABET
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        model_type="unigram",
        vocab_size=pieces,
        hard_vocab_limit=False,  # small corpora yield fewer pieces; never fail on that
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        # Fast (Rust) tokenizers do not implement byte fallback, so instead every printable ASCII
        # character is made a piece (see ALPHABET): English text never tokenises to <unk>.
        byte_fallback=False,
        character_coverage=1.0,
        num_threads=1,  # deterministic
        minloglevel=2,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        spm_path = Path(tmp) / "spiece.model"
        spm_path.write_bytes(buf.getvalue())
        tok = T5TokenizerFast(vocab_file=str(spm_path), extra_ids=0, legacy=False)
        tok.save_pretrained(str(out_dir))
    return tok


def build_tiny(out: str | Path, size: str = "tiny", seed: int = 0, corpus: Iterable[str] | None = None) -> Path:
    """Write a checkpoint directory for a ``size`` ("tiny", "small" or "large") T5 v1.1-style model.

    Returns the directory. Deterministic for a given ``seed`` and corpus. Refuses unknown sizes.
    """
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    if size not in SIZES:
        raise SettingError(f"--size {size!r}: choose one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    if corpus is None:
        from rospr_harness.tasks.builtin import corpus as builtin_corpus

        corpus = builtin_corpus()
    tok = train_tokenizer(corpus, spec["pieces"], out, seed)
    vocab = max(spec["vocab_size"], len(tok))
    config = T5Config(
        vocab_size=vocab,
        d_model=spec["d_model"],
        d_ff=spec["d_ff"],
        d_kv=spec["d_kv"],
        num_layers=spec["num_layers"],
        num_decoder_layers=spec["num_layers"],
        num_heads=spec["num_heads"],
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    # HF initialises an untied lm_head with std 1, so logits have std ~sqrt(d_model) and a random
    # model puts ~-30 nats on every token; scaled by d_model**-0.5 the logits are O(1), as in a
    # trained T0, and scores stay in the range where float32 comparisons at 1e-5 are meaningful.
    with torch.no_grad():
        model.lm_head.weight.mul_(spec["d_model"] ** -0.5)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "rospr_tiny.json").write_text(json.dumps({"size": size, "seed": seed, "tokenizer_size": len(tok)}, indent=2))
    log.info("wrote %s T5 (%d parameters) to %s", size, sum(p.numel() for p in model.parameters()), out)
    return out
