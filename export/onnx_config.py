"""Optimum ``OnnxConfig``s and dummy input generators for the two graphs of the tensor contract.

The graphs trace the one PyTorch definition of each computation (the contract: ``rospr.scoring.ScoreBatch``):

- ``t0_scorer`` traces ``rospr.backbone.PromptedT5`` (soft prompt + encoder once per input + decoder
  scoring of every choice; output ``scores`` FP32 [B, C]);
- ``retriever`` traces ``rospr.retriever.MeanPoolEncoder`` (output ``sentence_embedding`` FP32 [B, D_r]).

Optimum's exporter wants a module with a ``config`` and a ``forward`` whose argument names are the
graph's input names: the two small wrappers below provide exactly that and nothing else.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from optimum.exporters.onnx import OnnxConfig
from optimum.utils import DummyInputGenerator, NormalizedConfig
from torch import nn

from rospr.backbone import PromptedT5
from rospr.retriever import MeanPoolEncoder

SCORER_INPUTS = ("input_ids", "attention_mask", "prompt_embeds", "prompt_mask", "choice_ids", "choice_mask")
SCORER_OUTPUT = "scores"
RETRIEVER_INPUTS = ("input_ids", "attention_mask")
RETRIEVER_OUTPUT = "sentence_embedding"

# Dummy shapes used for tracing: all different from each other so that no two dynamic axes can be
# confused by the tracer (a batch of 2 and 2 choices would let it tie the axes together).
DUMMY_SHAPES = {"batch_size": 3, "sequence_length": 11, "prompt_length": 5, "num_choices": 4, "choice_length": 6}


class NormalizedT5Config(NormalizedConfig):
    """What the dummy generators read from a T5 config (T5 names ``d_model``, not ``hidden_size``)."""

    VOCAB_SIZE = "vocab_size"
    HIDDEN_SIZE = "d_model"


class ScorerForExport(nn.Module):
    """``PromptedT5`` as Optimum expects a model: ``.config`` plus a forward named like the graph."""

    def __init__(self, model) -> None:
        super().__init__()
        self.config = model.config
        self.scorer = PromptedT5(model)

    def forward(self, input_ids, attention_mask, prompt_embeds, prompt_mask, choice_ids, choice_mask):
        return self.scorer(input_ids, attention_mask, prompt_embeds, prompt_mask, choice_ids, choice_mask)


class RetrieverForExport(nn.Module):
    """``MeanPoolEncoder`` with the encoder's config, for Optimum."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.config = encoder.config
        self.pool = MeanPoolEncoder(encoder)

    def forward(self, input_ids, attention_mask):
        return self.pool(input_ids, attention_mask)


def _mask(shape: tuple[int, ...], framework: str, int_dtype: str, generator: torch.Generator):
    """A right-padded mask whose rows have different lengths, each at least 1."""
    lengths = torch.randint(1, shape[-1] + 1, shape[:-1], generator=generator)
    lengths.view(-1)[0] = shape[-1]  # one full row, so the padded width is really used
    mask = (torch.arange(shape[-1]) < lengths.unsqueeze(-1)).to(torch.int64 if int_dtype == "int64" else torch.int32)
    return mask if framework == "pt" else mask.numpy()


class ScorerDummyInputGenerator(DummyInputGenerator):
    """Inputs of ``t0_scorer``: token ids and masks, a soft prompt, choices (with real padding)."""

    SUPPORTED_INPUT_NAMES = SCORER_INPUTS

    def __init__(self, task: str, normalized_config, batch_size: int = DUMMY_SHAPES["batch_size"],
                 sequence_length: int = DUMMY_SHAPES["sequence_length"],
                 prompt_length: int = DUMMY_SHAPES["prompt_length"], num_choices: int = DUMMY_SHAPES["num_choices"],
                 choice_length: int = DUMMY_SHAPES["choice_length"], seed: int = 0, **kwargs) -> None:
        self.vocab_size = int(normalized_config.vocab_size)
        self.d_model = int(normalized_config.hidden_size)
        self.shapes = {
            "input_ids": (batch_size, sequence_length),
            "attention_mask": (batch_size, sequence_length),
            "prompt_embeds": (batch_size, prompt_length, self.d_model),
            "prompt_mask": (batch_size, prompt_length),
            "choice_ids": (batch_size, num_choices, choice_length),
            "choice_mask": (batch_size, num_choices, choice_length),
        }
        self.seed = seed

    def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
        g = torch.Generator().manual_seed(self.seed + SCORER_INPUTS.index(input_name))
        shape = self.shapes[input_name]
        if input_name.endswith("_mask"):
            return _mask(shape, framework, int_dtype, g)
        if input_name == "prompt_embeds":
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[float_dtype]
            x = (torch.randn(shape, generator=g) * 0.5).to(dtype)
            return x if framework == "pt" else x.float().numpy().astype({"fp32": "float32", "fp16": "float16"}.get(float_dtype, "float32"))
        ids = torch.randint(3, self.vocab_size, shape, generator=g)
        return ids if framework == "pt" else ids.numpy()


class RetrieverDummyInputGenerator(DummyInputGenerator):
    SUPPORTED_INPUT_NAMES = RETRIEVER_INPUTS

    def __init__(self, task: str, normalized_config, batch_size: int = DUMMY_SHAPES["batch_size"],
                 sequence_length: int = DUMMY_SHAPES["sequence_length"], seed: int = 0, **kwargs) -> None:
        self.vocab_size = int(normalized_config.vocab_size)
        self.shape = (batch_size, sequence_length)
        self.seed = seed

    def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
        g = torch.Generator().manual_seed(self.seed + RETRIEVER_INPUTS.index(input_name))
        if input_name == "attention_mask":
            return _mask(self.shape, framework, int_dtype, g)
        ids = torch.randint(3, self.vocab_size, self.shape, generator=g)
        return ids if framework == "pt" else ids.numpy()


class ScorerOnnxConfig(OnnxConfig):
    """``t0_scorer``: dynamic batch, sequence, prompt length, choices and choice length."""

    NORMALIZED_CONFIG_CLASS = NormalizedT5Config
    DUMMY_INPUT_GENERATOR_CLASSES = (ScorerDummyInputGenerator,)
    DEFAULT_ONNX_OPSET = 17
    ATOL_FOR_VALIDATION = 1e-4

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict(
            input_ids={0: "batch", 1: "sequence"},
            attention_mask={0: "batch", 1: "sequence"},
            prompt_embeds={0: "batch", 1: "prompt_length"},
            prompt_mask={0: "batch", 1: "prompt_length"},
            choice_ids={0: "batch", 1: "choices", 2: "choice_length"},
            choice_mask={0: "batch", 1: "choices", 2: "choice_length"},
        )

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict({SCORER_OUTPUT: {0: "batch", 1: "choices"}})


class RetrieverOnnxConfig(OnnxConfig):
    """``retriever``: dynamic batch and sequence."""

    NORMALIZED_CONFIG_CLASS = NormalizedT5Config
    DUMMY_INPUT_GENERATOR_CLASSES = (RetrieverDummyInputGenerator,)
    DEFAULT_ONNX_OPSET = 17
    ATOL_FOR_VALIDATION = 1e-5

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict(input_ids={0: "batch", 1: "sequence"}, attention_mask={0: "batch", 1: "sequence"})

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        return OrderedDict({RETRIEVER_OUTPUT: {0: "batch"}})
