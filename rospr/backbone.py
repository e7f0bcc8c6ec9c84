"""The frozen encoder-decoder (T5 v1.1 / T0) with a soft prompt, in PyTorch.

``PromptedT5`` is the one definition of the scoring computation: the PyTorch backend runs it, the
ONNX export traces it, prompt tuning trains through it. The encoder runs once per input; every
choice is scored from that encoding, and each decoder layer's cross-attention keys and values are
projected from it once per input too (export version 3); the decoder's position-wise work and the LM
head run on real choice tokens only (version 4); nothing vocabulary-sized is returned.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch
from torch import nn

from rospr.checkpoint import CheckpointError, check_checkpoint, check_safetensors, is_path_like  # noqa: F401
from rospr.errors import SettingError
from rospr.identity import backbone_identity

log = logging.getLogger(__name__)


def load_backbone(name_or_path: str | Path, dtype: torch.dtype = torch.float32, revision: str | None = None):
    """Load a seq2seq checkpoint and its tokenizer by hub name or local path; ``revision`` (a hub
    commit, branch or tag: ``model.revision``) pins a hub checkpoint, a local directory ignores it.

    Returns ``(model, tokenizer, identity)``; the model is in eval mode with gradients disabled.
    Refuses (``ValueError``; ``CheckpointError`` naming the file) a damaged or missing checkpoint
    (``check_checkpoint``), one that fails to load, and one that is not an encoder-decoder.
    """
    from transformers import AutoModelForSeq2SeqLM

    from rospr.tokenizer import load_tokenizer

    name = str(name_or_path)
    check_checkpoint(name)
    try:
        tokenizer = load_tokenizer(name, revision=revision)  # sentencepiece's ids for T5: one thing on transformers 4 and 5
        # eager attention: transformers 5 defaults T5 to sdpa, whose padded rows differ from unpadded ones by
        # ~1e-6, which breaks batch-size invariance; 4.x and the exported graph are eager
        model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=dtype, revision=revision, attn_implementation="eager")
    except OSError as exc:
        raise SettingError(
            f"model.name_or_path={name!r}: cannot load a checkpoint ({exc}). Give a local "
            "checkpoint directory (make one with `rospr tiny --out DIR`) or a hub name with network."
        ) from exc
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
        # what transformers, safetensors, sentencepiece and torch raise on damaged or mismatched files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"model.name_or_path={name!r}: the checkpoint does not load ({type(exc).__name__}: "
                              f"{first[:300]}); restore or re-download it") from exc
    if not model.config.is_encoder_decoder:
        raise SettingError(f"model.name_or_path={name!r}: {model.config.model_type} is not an encoder-decoder")
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer, backbone_identity(model, name)


def _is_t5_decoder(decoder) -> bool:
    """Whether ``decoder`` is a T5-style stack (T5, T5 v1.1, T0, mT5): blocks of self-attention,
    cross-attention, feed-forward, a relative position bias in the first block."""
    blocks = getattr(decoder, "block", None)
    if blocks is None or len(blocks) == 0 or not hasattr(decoder, "final_layer_norm"):
        return False
    first = blocks[0].layer
    return (len(first) == 3 and hasattr(first[0], "SelfAttention") and hasattr(first[1], "EncDecAttention")
            and getattr(first[0].SelfAttention, "has_relative_attention_bias", False))


def _clamp_half(h):
    """``T5Block``'s float16 clamp (keeps inf out of the residual stream); other dtypes pass through."""
    if h.dtype != torch.float16:
        return h
    big = torch.where(torch.isinf(h).any(), torch.finfo(h.dtype).max - 1000, torch.finfo(h.dtype).max)
    return torch.clamp(h, min=-big, max=big)


def _spread(rows, grid_map):
    """The packed ``rows`` [K, F] laid out in a zero grid [G, F]: ``grid_map`` [G] holds 0 for a
    padding position and i + 1 for packed row i (a row gather; onnxruntime's Gather is far cheaper
    than the ScatterElements an ``index_copy`` exports to)."""
    return torch.cat([rows.new_zeros(1, rows.shape[-1]), rows], dim=0).index_select(0, grid_map)


def _checkpoint(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` keeping only its inputs for backward (recomputed there)."""
    from torch.utils.checkpoint import checkpoint

    return checkpoint(fn, *args, use_reentrant=False, **kwargs)


@contextlib.contextmanager
def _checkpointed(blocks, on: bool):
    """Within the ``with`` block, each module of ``blocks`` runs checkpointed (``_checkpoint``) when
    ``on``; their own ``forward`` is restored after."""
    if not on:
        yield
        return
    wrapped = []
    try:
        for block in blocks:
            block.forward = functools.partial(_checkpoint, type(block).forward.__get__(block))
            wrapped.append(block)
        yield
    finally:
        for block in wrapped:
            del block.forward  # back to the class's method


class PromptedT5(nn.Module):
    """T5 encoder with a soft prompt prepended, decoder scoring of every answer choice.

    Inputs (the tensor contract, ``rospr.scoring.ScoreBatch``): ``input_ids``/``attention_mask`` [B, S],
    ``prompt_embeds`` [B, P, D], ``prompt_mask`` [B, P] (all zero: no soft prompt), ``choice_ids``/
    ``choice_mask`` [B, C, T]. Output: ``scores`` [B, C], the summed log-probability of each choice's
    unmasked tokens under teacher forcing.
    """

    def __init__(self, model, checkpoint_blocks: bool = False) -> None:
        super().__init__()
        self.model = model
        # Gradient checkpointing of the frozen backbone (prompt tuning): each encoder and decoder block
        # keeps only its input for backward and recomputes the rest. Hugging Face's own switch
        # (gradient_checkpointing_enable) acts only in training mode and our decoder loop bypasses
        # T5Block, so the blocks are wrapped here, non-reentrant (the prompt, not a block input, is the
        # leaf that needs the gradient). Only while gradients are recorded; scoring and export are unchanged.
        self.checkpoint_blocks = checkpoint_blocks
        cfg = model.config
        self.decoder_start_token_id = int(cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else cfg.pad_token_id)
        # T5 v1.1 / T0 have untied embeddings: the decoder output is NOT rescaled by d_model**-0.5.
        # Tied checkpoints (original T5) are; read it from the config as HF's own forward does.
        # transformers 5 says it in scale_decoder_outputs (its T5 config forces tie_word_embeddings to True,
        # T0's False read into that flag); transformers 4 in tie_word_embeddings
        scale = getattr(cfg, "scale_decoder_outputs", None)
        self.rescale = bool(getattr(cfg, "tie_word_embeddings", True) if scale is None else scale)
        self.model_dim = int(cfg.d_model)

    def encode(self, input_ids, attention_mask, prompt_embeds, prompt_mask):
        """Encoder hidden states [B, P+S, D] and the matching mask [B, P+S]."""
        embeds = self.model.get_input_embeddings()(input_ids)
        if prompt_embeds is not None and prompt_embeds.shape[1] > 0:
            embeds = torch.cat([prompt_embeds.to(embeds.dtype), embeds], dim=1)
            attention_mask = torch.cat([prompt_mask.to(attention_mask.dtype), attention_mask], dim=1)
        encoder = self.model.get_encoder()
        with _checkpointed(getattr(encoder, "block", ()), self._checkpointing()):
            hidden = encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        return hidden, attention_mask

    def _checkpointing(self) -> bool:
        return self.checkpoint_blocks and torch.is_grad_enabled()

    def token_logprobs(self, hidden, enc_mask, choice_ids, choice_mask):
        """Log-probability of every choice token [B, C, T] (masked positions are 0).

        Takes the encoding ``hidden`` [B, S', D] and ``enc_mask`` [B, S'] of ``encode`` and the
        choices [B, C, T]; returns float32 (float16/bfloat16 models: their dtype) log-probabilities.

        Work is packed to real tokens: a padded choice slot (all-zero mask) and a choice's padding
        after its last token go through nothing position-wise (the decoder's projections, feed-forward
        and LM head, the d_model x vocab matmul, run on the K real tokens only; ``_decode``). Only the
        attention scores see a [choice, T] grid. Cross-attention keys and values are projected from
        the encoder output once per input and shared by all of its choices.
        """
        b, c, t = choice_ids.shape
        flat_ids = choice_ids.reshape(b * c, t)
        flat_mask = choice_mask.reshape(b * c, t)
        rows = torch.nonzero(flat_mask.sum(-1) > 0).squeeze(-1)  # [N] real choices, in (input, choice) order
        ids = flat_ids.index_select(0, rows)
        mask = flat_mask.index_select(0, rows)
        start = torch.full_like(ids[:, :1], self.decoder_start_token_id)
        dec_in = torch.cat([start, ids[:, :-1]], dim=1)
        tokens = torch.nonzero(mask.reshape(-1) > 0).squeeze(-1)  # [K] real tokens of those choices in [N*T]
        if _is_t5_decoder(self.model.get_decoder()):
            out = self._decode(dec_in, mask, tokens, hidden, enc_mask, rows, b * c)  # [K, D]
        else:  # another encoder-decoder: its own decoder, the encoding gathered per choice
            owner = torch.div(rows, c, rounding_mode="floor")
            out = self.model.get_decoder()(
                input_ids=dec_in, attention_mask=mask, encoder_hidden_states=hidden.index_select(0, owner),
                encoder_attention_mask=enc_mask.index_select(0, owner), use_cache=False,
            ).last_hidden_state
            out = out.reshape(-1, out.shape[-1]).index_select(0, tokens)
        if self.rescale:
            out = out * (self.model_dim**-0.5)
        logits = self.model.lm_head(out).float()
        target = ids.reshape(-1).index_select(0, tokens)
        # LogSoftmax then one gather: onnxruntime's LogSoftmax kernel is ~5x its ReduceLogSumExp on
        # [K, 32128], and the [K, V] logits exist anyway
        lp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        # back to [B, C, T]: position of each real token in the flat grid
        where = (rows.unsqueeze(1) * t + torch.arange(t, device=rows.device).unsqueeze(0)).reshape(-1)
        grid = torch.zeros(b * c * t, dtype=lp.dtype, device=lp.device).scatter(0, where.index_select(0, tokens), lp)
        return grid.reshape(b, c, t)

    def _decode(self, dec_in, mask, tokens, hidden, enc_mask, rows, slots):
        """The T5 decoder stack over the packed choices ``dec_in``/``mask`` [N, T]; ``tokens`` [K] are
        the real tokens' positions in the flat [N*T] grid, ``rows`` [N] each choice's slot in the flat
        [B*C] grid (``slots`` = B*C). Returns the final hidden states of the real tokens [K, D].

        The same computation as Hugging Face's ``T5Stack`` (the float16 clamps of ``T5Block`` included),
        rearranged so that no work is spent on padding: the residual stream is [K, D] (real tokens
        only), so the layer norms, projections and feed-forward (position-wise, hence unchanged by the
        packing) run on real tokens; each attention scatters its queries/keys/values into a zero grid
        for the score matmuls and gathers the real tokens' outputs back. Self-attention: [N, T] per
        choice, causal and padding mask and T5's relative position bias. Cross-attention: each layer
        projects ``hidden`` [B, S', D] once per input, and the queries of an input's choices, laid side
        by side as one [C*T] query sequence, attend to them together; cross-attention has no position
        bias and no causal mask, so every query is independent of the others and the grouping changes
        no number. No [N, S', D] tensor is made.
        """
        dec = self.model.get_decoder()
        n, t = dec_in.shape
        b = enc_mask.shape[0]
        h = dec.dropout(dec.embed_tokens(dec_in.reshape(-1).index_select(0, tokens)))  # [K, D]
        neg = torch.finfo(h.dtype).min
        # self-attention: causal and padding mask plus T5's relative position bias, shared by all layers
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        allowed = causal.unsqueeze(0) & (mask > 0).unsqueeze(1)  # [N, T(query), T(key)]
        sa0 = dec.block[0].layer[0].SelfAttention
        self_bias = sa0.compute_bias(t, t, device=h.device).to(h.dtype) + \
            torch.where(allowed, 0.0, neg).to(h.dtype).unsqueeze(1)
        cross_bias = torch.where(enc_mask > 0, 0.0, neg).to(h.dtype)[:, None, None, :]  # [B, 1, 1, S']
        # each real token's place in the [B, C*T] cross-attention query grid
        slot_of = (rows.unsqueeze(1) * t + torch.arange(t, device=rows.device).unsqueeze(0)).reshape(-1)
        cross_slot = slot_of.index_select(0, tokens)
        # grid -> token maps (0: padding, i + 1: real token i), built once: each attention then spreads
        # its packed rows into a grid with one row gather (``_spread``), not a scatter per layer
        pick = torch.arange(1, tokens.shape[0] + 1, device=tokens.device)
        self_map = torch.zeros(n * t, dtype=tokens.dtype, device=tokens.device).index_put((tokens,), pick)
        cross_map = torch.zeros(slots * t, dtype=tokens.dtype, device=tokens.device).index_put((cross_slot,), pick)
        def step(block, h):
            h = _clamp_half(self._self_attention(block.layer[0], h, self_bias, self_map, tokens, n, t))
            h = _clamp_half(self._cross_attention(block.layer[1], h, hidden, cross_bias, cross_map, cross_slot, b))
            return _clamp_half(block.layer[-1](h))

        for block in dec.block:
            h = _checkpoint(step, block, h) if self._checkpointing() else step(block, h)
        return dec.dropout(dec.final_layer_norm(h))

    @staticmethod
    def _self_attention(layer, h, bias, grid_map, tokens, n, t):
        """``T5LayerSelfAttention`` on packed tokens: ``h`` [K, D], ``bias`` [N, H, T, T] (position bias
        plus causal and padding mask), ``tokens`` [K] their places in the [N*T] grid, ``grid_map`` its
        inverse (``_spread``)."""
        att = layer.SelfAttention
        heads, dk = att.n_heads, att.key_value_proj_dim
        x = layer.layer_norm(h)
        qkv = torch.cat([att.q(x), att.k(x), att.v(x)], dim=-1)  # [K, 3*H*dk]: one spread for all three
        q, k, v = _spread(qkv, grid_map).reshape(n, t, 3, heads, dk).permute(2, 0, 3, 1, 4).unbind(0)  # each [N, H, T, dk]
        scores = torch.matmul(q, k.transpose(2, 3)) + bias  # T5 does not scale by dk**-0.5
        w = nn.functional.softmax(scores.float(), dim=-1).type_as(scores)
        w = nn.functional.dropout(w, p=att.dropout, training=att.training)
        ctx = torch.matmul(w, v).transpose(1, 2).reshape(n * t, heads * dk).index_select(0, tokens)
        return h + layer.dropout(att.o(ctx))

    @staticmethod
    def _cross_attention(layer, h, hidden, bias, grid_map, slot, b):
        """``T5LayerCrossAttention`` with keys/values per input: ``h`` [K, D] the packed tokens' states,
        ``slot`` [K] their places in the [B*C*T] query grid, ``grid_map`` its inverse (``_spread``),
        ``hidden`` [B, S', D] the encoding, ``bias`` [B, 1, 1, S'] its additive mask."""
        att = layer.EncDecAttention
        heads, dk = att.n_heads, att.key_value_proj_dim
        q = att.q(layer.layer_norm(h))  # [K, H*dk]
        grid_rows = grid_map.shape[0]
        q = _spread(q, grid_map).reshape(b, -1, heads, dk).transpose(1, 2)  # [B, H, C*T, dk]: one query sequence per input
        k = att.k(hidden).reshape(b, -1, heads, dk).transpose(1, 2)  # [B, H, S', dk]: once per input
        v = att.v(hidden).reshape(b, -1, heads, dk).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) + bias  # T5 does not scale by dk**-0.5
        w = nn.functional.softmax(scores.float(), dim=-1).type_as(scores)
        w = nn.functional.dropout(w, p=att.dropout, training=att.training)
        ctx = torch.matmul(w, v).transpose(1, 2).reshape(grid_rows, heads * dk).index_select(0, slot)
        return h + layer.dropout(att.o(ctx))

    def forward(self, input_ids, attention_mask, prompt_embeds, prompt_mask, choice_ids, choice_mask):
        hidden, enc_mask = self.encode(input_ids, attention_mask, prompt_embeds, prompt_mask)
        # Sum in float64: a choice's score is ~T x log(V) in size, and float32 summation order alone
        # would move it by an ulp or two (1e-5 at |score| ~ 100) between batch sizes.
        return self.token_logprobs(hidden, enc_mask, choice_ids, choice_mask).double().sum(-1).float()
