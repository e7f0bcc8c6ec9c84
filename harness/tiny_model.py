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


def train_tokenizer(texts: Iterable[str], pieces: int, out_dir: Path, seed: int = 0) -> int:
    """Train a unigram sentencepiece model (T5 ids: pad 0, eos 1, unk 2) and write a T5 tokenizer that
    ``AutoTokenizer.from_pretrained(out_dir)`` loads: ``spiece.model``, a ``tokenizer.json`` that encodes
    as it does (``tokenizer_json``), and the special-token configs. Written from the model file alone, so
    the files are the same bytes whatever the transformers version (its converters disagree: transformers
    4's drops the ``▁`` of the first word for this model, 5's saves no ``spiece.model``). Returns
    the number of pieces."""
    import sentencepiece as spm

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
    model = buf.getvalue()
    (out_dir / "spiece.model").write_bytes(model)
    (out_dir / "tokenizer.json").write_text(tokenizer_json(model), encoding="utf-8")
    specials = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    config = {"tokenizer_class": "T5Tokenizer", **specials, "extra_ids": 0, "additional_special_tokens": [],
              "model_max_length": 512, "legacy": True}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return spm.SentencePieceProcessor(model_proto=model).get_piece_size()


def tokenizer_json(spm_model: bytes) -> str:
    """The ``tokenizers`` form of a sentencepiece unigram model, encoding as sentencepiece does: its pieces
    and scores, its normalisation (the model's own precompiled charsmap, trailing spaces stripped, runs
    of spaces as one ``▁``), ``▁`` prepended to every text as a real T5 tokenizer does, and ``</s>``
    appended where special tokens are asked for (tests/unit/rospr/test_tokenizer.py checks the two files agree)."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(spm_model)
    vocab = [(p.piece, p.score) for p in proto.pieces]
    tok = Tokenizer(models.Unigram(vocab, unk_id=proto.trainer_spec.unk_id, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
        normalizers.Strip(left=False, right=True),
        normalizers.Replace(Regex(" {2,}"), "\u2581"),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    eos = proto.trainer_spec.eos_id
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", eos)])
    tok.add_special_tokens([AddedToken(vocab[i][0], special=True, normalized=False)
                            for i in (proto.trainer_spec.pad_id, eos, proto.trainer_spec.unk_id)])
    return tok.to_str(pretty=True)


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
    tokenizer_size = train_tokenizer(corpus, spec["pieces"], out, seed)
    vocab = max(spec["vocab_size"], tokenizer_size)
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
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        # transformers 5 ties T5's head to the embeddings whatever the config says (it keeps a checkpoint's
        # own untied head when loading one): untie it as T5 v1.1 / T0 are, drawn as transformers 4 draws it
        head = torch.empty_like(model.shared.weight).normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed + 1))
        model.lm_head.weight = torch.nn.Parameter(head)
        model.config.tie_word_embeddings = False
    # HF initialises an untied lm_head with std 1, so logits have std ~sqrt(d_model) and a random
    # model puts ~-30 nats on every token; scaled by d_model**-0.5 the logits are O(1), as in a
    # trained T0, and scores stay in the range where float32 comparisons at 1e-5 are meaningful.
    with torch.no_grad():
        model.lm_head.weight.mul_(spec["d_model"] ** -0.5)
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    (out / "rospr_tiny.json").write_text(json.dumps({"size": size, "seed": seed, "tokenizer_size": tokenizer_size}, indent=2))
    log.info("wrote %s T5 (%d parameters) to %s", size, sum(p.numel() for p in model.parameters()), out)
    return out
