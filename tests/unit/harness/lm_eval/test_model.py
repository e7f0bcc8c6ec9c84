"""rospr as an lm-evaluation-harness model (rospr_harness.lm_eval.model), against lm-eval's own ``hf``
model with ``backend=seq2seq`` on the same tiny checkpoint and the same requests: equal
log-likelihoods (1e-4) under lm-eval's convention and identical predictions on small multiple-choice
tasks read from local files; T0's convention against a hand computation with transformers; one
scorer row per distinct context; the refusals, from Python and from ``rospr lm-eval``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from lm_eval.api.instance import Instance  # lm-eval and accelerate are in the test extra

from rospr.errors import RosprError, SettingError
from helpers import cli, error_line, served_repo

WORDS = ("the a cat dog sat on mat is was happy sad yes no true false movie film great terrible sports politics "
         "science food answer question premise hypothesis because so good bad ball vote atom pizza team red blue").split()
TASKS = ("rospr_mc", "rospr_mc_nodelim", "rospr_mc_mutual")
TOL = 1e-4


def _docs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    docs = []
    for i in range(n):
        choices = [words(rng.randint(1, 4)) for _ in range(rng.randint(2, 5))]
        docs.append({"i": i, "q": words(rng.randint(3, 25)), "choices": choices, "gold": rng.randrange(len(choices))})
    return docs


def _task(name: str, data, **extra) -> dict:
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "Question: {{q}}\nAnswer:",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}], **extra}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """Three multiple-choice tasks on local JSON rows: lm-eval's default delimiter (a space before each
    choice); no delimiter after a context that ends in a space (lm-eval moves it to the choice); and
    acc_mutual_info, which adds an empty-context request per choice. Plus a generation task and a
    loglikelihood task (one continuation per document) for the refusals."""
    import yaml

    root = tmp_path_factory.mktemp("lm-eval-tasks")
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in _docs(14, seed=3)))
    tasks = [
        _task("rospr_mc", data),
        _task("rospr_mc_nodelim", data, doc_to_text="Question: {{q}} Answer: ", target_delimiter=""),
        _task("rospr_mc_mutual", data, doc_to_text="{{q}}?", metric_list=[{"metric": "acc"}, {"metric": "acc_mutual_info"}]),
        _task("rospr_gen", data, output_type="generate_until", doc_to_target="{{choices[gold]}}",
              metric_list=[{"metric": "exact_match"}]),
        _task("rospr_ll", data, output_type="loglikelihood", doc_to_target=" {{choices[gold]}}",
              metric_list=[{"metric": "perplexity"}, {"metric": "acc"}]),
    ]
    for t in tasks:
        if t["output_type"] != "multiple_choice":
            del t["doc_to_choice"]
        (root / f"{t['task']}.yaml").write_text(yaml.safe_dump(t))
    return root


@pytest.fixture(scope="module", autouse=True)
def offline(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets")))
        yield


@pytest.fixture(scope="module", autouse=True)
def task_index_of_our_folder():
    """lm-eval's task index holds only this module's task folder. Every task these tests evaluate
    lives there; lm-eval's own ~15,000 built-in tasks (4-5 s of YAML each time a ``TaskManager`` is
    made, as each of the two ``simple_evaluate`` and three ``rospr lm-eval`` calls here does) are
    never loaded, so their folder is left out of the paths ``TaskManager`` asks the index to scan."""
    import lm_eval.tasks
    from lm_eval.tasks._index import TaskIndex

    build, builtin = TaskIndex.build, Path(lm_eval.tasks.__file__).parent.resolve()

    def build_ours(paths, **kw):
        return build([p for p in paths if Path(p).resolve() != builtin], **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TaskIndex, "build", staticmethod(build_ours))
        yield


def hf_reference(tiny_model_dir, **kwargs):
    """lm-eval's own hf model of the checkpoint, as it scores under transformers 4. lm-eval 0.4.13 calls
    ``model.tie_weights()`` after loading; transformers 5's T5 config forces ``tie_word_embeddings`` to
    True, so under 5 that call replaces T0's own head with its embeddings (a T5 v1.1 scored with the wrong
    head: lm-eval's bug on 5, not ours). The checkpoint's head is put back, as 4 keeps it."""
    import torch
    from lm_eval.models.huggingface import HFLM
    from safetensors.torch import load_file

    lm = HFLM(pretrained=str(tiny_model_dir), backend="seq2seq", device="cpu", **kwargs)
    model = lm.model
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        head = load_file(str(tiny_model_dir / "model.safetensors"))["lm_head.weight"]
        model.lm_head.weight = torch.nn.Parameter(head, requires_grad=False)
    return lm


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    return hf_reference(tiny_model_dir, batch_size=3)


@pytest.fixture(scope="module")
def rospr(tiny_model_dir):
    from rospr_harness.lm_eval.model import RosprLM

    return RosprLM(pretrained=str(tiny_model_dir), batch_size=3, device="cpu")


def _evaluate(model, task_dir, model_args=None):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(model=model, model_args=model_args, tasks=list(TASKS), log_samples=True,
                           task_manager=TaskManager(include_path=str(task_dir)), verbosity="ERROR")


@pytest.fixture(scope="module")
def evaluated(hf, task_dir, tiny_model_dir):
    """(hf's results, rospr's results): rospr through lm-eval's registry (``model="rospr"``)."""
    import rospr_harness.lm_eval.model  # noqa: F401  registers "rospr"

    ours = _evaluate("rospr", task_dir, f"pretrained={tiny_model_dir},batch_size=4,device=cpu")
    return _evaluate(hf, task_dir), ours


def _lls(results, task: str) -> dict[int, list[float]]:
    return {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in results["samples"][task]}


# first: its server stops while the module's evaluations run
@pytest.mark.slow
def test_triton_backend_when_a_server_is_named(tiny_model_dir, tmp_path_factory, rospr, stop_soon):
    """``url=`` scores through a real `rospr serve` (the tiny model's repository): the same answers as
    the in-process onnxruntime backend."""
    from rospr_harness.lm_eval.model import RosprLM
    from rospr_harness.serve import TritonServer

    reqs = _instances(EDGE_PAIRS[:6], docs=[0, 0, 1, 1, 2, 2])
    server = TritonServer(served_repo(tiny_model_dir, tmp_path_factory)).start()
    try:
        served = RosprLM(pretrained=str(tiny_model_dir), url=server.grpc_url, batch_size=2)
        assert served.backend.name == "triton"
        got = served.loglikelihood(reqs)
    finally:
        stop_soon(server)  # its ~3 s stop runs while the next tests of this module do
    np.testing.assert_allclose([g for g, _ in got], [w for w, _ in rospr.loglikelihood(reqs)], atol=TOL, rtol=0)


@pytest.mark.parametrize("task", TASKS)
def test_simple_evaluate_matches_hf_seq2seq(evaluated, task):
    """Through simple_evaluate and the registry: every request's log-likelihood within 1e-4 of hf's,
    the same argmax on every document, the same accuracies."""
    theirs, ours = evaluated
    lt, lo = _lls(theirs, task), _lls(ours, task)
    assert sorted(lt) == sorted(lo) and len(lt) == 14
    for doc in lt:
        np.testing.assert_allclose(lo[doc], lt[doc], atol=TOL, rtol=0)
        n = len(lt[doc]) // (2 if task == "rospr_mc_mutual" else 1)  # mutual info: conditional lls first
        assert int(np.argmax(lo[doc][:n])) == int(np.argmax(lt[doc][:n])), doc
    for metric, value in theirs["results"][task].items():
        if metric.split(",")[0] in ("acc", "acc_norm", "acc_mutual_info"):
            assert ours["results"][task][metric] == pytest.approx(value, abs=1e-12), metric


def _instances(pairs, docs=None):
    docs = docs or list(range(len(pairs)))
    return [Instance("loglikelihood", {}, pair, i, ("t", d, 1)) for i, (pair, d) in enumerate(zip(pairs, docs))]


EDGE_PAIRS = [
    ("Question: is the cat happy? Answer:", " yes"),
    ("Question: is the cat happy? Answer:", " no"),
    ("The dog sat on the  ", "mat"),           # trailing spaces move to the continuation
    ("", "the cat sat"),                        # empty context: the prefix token (EOS for T5)
    ("</s> starts with the prefix text", " so"),  # no special tokens added to such a context
    ("   ", "blue"),                            # only spaces: all of them move
    ("a " * 30 + "long context", " team"),     # longer than max_length: left-truncated
]


def test_loglikelihood_edge_cases_match_hf(tiny_model_dir):
    """Direct loglikelihood calls on lm-eval's edge cases, with a short max_length on both sides."""
    from lm_eval.models.huggingface import HFLM

    from rospr_harness.lm_eval.model import RosprLM

    reqs = _instances(EDGE_PAIRS, docs=[0, 0, 1, 1, 2, 2, 2])
    theirs = hf_reference(tiny_model_dir, batch_size=2, max_length=12)
    ours = RosprLM(pretrained=str(tiny_model_dir), batch_size=2, max_length=12)
    got, want = ours.loglikelihood(reqs), theirs.loglikelihood(reqs)
    np.testing.assert_allclose([g for g, _ in got], [w for w, _ in want], atol=TOL, rtol=0)
    assert all(greedy is False for _, greedy in got)


class CountingScorer:
    """The real scorer, counting the encoder rows (contexts) and decoder rows (choices) it is sent."""

    def __init__(self, scorer) -> None:
        self.scorer, self.prompt_dim, self.rows, self.choice_rows = scorer, scorer.prompt_dim, 0, 0

    def score(self, batch):
        self.rows += batch.size
        self.choice_rows += int(batch.n_choices.sum())
        return self.scorer.score(batch)


def test_one_encoder_row_per_context(rospr, hf):
    """Requests sharing a context are one scorer row; a repeated continuation is scored once."""
    pairs = [("Which is red?", f" {c}") for c in ("the ball", "the mat", "a dog", "the ball")]
    pairs += [("Is the cat happy?", " yes"), ("Is the cat happy?", " no")]
    reqs = _instances(pairs, docs=[0, 0, 0, 0, 1, 1])
    counting = CountingScorer(rospr.backend.scorer)
    rospr.backend.scorer = counting
    try:
        got = rospr.loglikelihood(reqs)
    finally:
        rospr.backend.scorer = counting.scorer
    assert (counting.rows, counting.choice_rows) == (2, 5)
    assert got[0] == got[3]
    np.testing.assert_allclose([g for g, _ in got], [w for w, _ in hf.loglikelihood(reqs)], atol=TOL, rtol=0)


def test_t0_convention_is_t0_rank_classification(tiny_model_dir):
    """convention=t0: the context without EOS, the continuation without its delimiter and with EOS,
    summed; against transformers' model directly."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from rospr_harness.lm_eval.model import RosprLM

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).eval()
    pairs = EDGE_PAIRS[:3] + [("Premise: the team was good. Hypothesis: the vote was bad.", " false")]
    want = []
    with torch.inference_mode():
        for context, continuation in pairs:
            ids = torch.tensor([tok(context.rstrip(), add_special_tokens=False).input_ids])
            labels = torch.tensor([tok(continuation.lstrip(), add_special_tokens=False).input_ids + [tok.eos_token_id]])
            logp = model(input_ids=ids, labels=labels).logits.log_softmax(-1)
            want.append(float(logp.gather(-1, labels[..., None]).sum()))
    ours = RosprLM(pretrained=str(tiny_model_dir), convention="t0", batch_size=2)
    got = ours.loglikelihood(_instances(pairs, docs=[0, 0, 1, 1]))
    np.testing.assert_allclose([g for g, _ in got], want, atol=TOL, rtol=0)


def test_refusals(rospr, tiny_model_dir):
    from rospr_harness.lm_eval.model import LmEvalUnsupported, RosprLM

    for method, args in (("generate_until", ("Q:", {"until": ["\n"]})), ("loglikelihood_rolling", ("some text",))):
        with pytest.raises(LmEvalUnsupported, match=f"{method}.*--model hf") as info:
            getattr(rospr, method)([Instance(method, {}, args, 0, ("t", 0, 1))])
        assert isinstance(info.value, RosprError) and "\n" not in str(info.value)
    with pytest.raises(LmEvalUnsupported, match="task lam, document 0: one continuation to score"):
        rospr.loglikelihood([Instance("loglikelihood", {}, ("ctx", " end"), 0, ("lam", 0, 1))])
    for kwargs, needle in (({"temperature": 1}, "unknown model_args"), ({"convention": "t5"}, "convention='t5'"),
                           ({"backend": "tensorrt"}, "backend='tensorrt'"), ({"batch_size": "0"}, "batch_size"),
                           ({"url": "127.0.0.1:1", "backend": "onnxruntime"}, "names a Triton server"),
                           ({"max_tokens": "many"}, "max_tokens='many'"), ({"threads": -1}, "threads=-1")):
        with pytest.raises(SettingError, match=needle):
            RosprLM(pretrained=str(tiny_model_dir), **kwargs)


def test_cli_runs_lm_eval_with_the_rospr_model(evaluated, task_dir, tiny_model_dir, tmp_path):
    """``rospr lm-eval`` takes lm-eval's own flags (--model rospr added) and writes lm-eval's results:
    the same accuracy as simple_evaluate; a generation task is one error line."""
    result = cli("lm-eval", "--model_args", f"pretrained={tiny_model_dir}", "--batch_size", 2, "--tasks", "rospr_mc",
                 "--include_path", task_dir, "--device", "cpu", "--limit", "6", "--output_path", tmp_path / "out")
    assert result.exit_code == 0, (result.output, result.exception)
    [written] = list((tmp_path / "out").rglob("results_*.json"))
    out = json.loads(written.read_text())
    assert out["config"]["model"] == "rospr"
    lls = _lls(evaluated[1], "rospr_mc")
    acc = np.mean([int(np.argmax(lls[d])) == g["gold"] for d, g in enumerate(_docs(14, seed=3)[:6])])
    assert out["results"]["rospr_mc"]["acc,none"] == pytest.approx(acc)
    error_line(cli("lm-eval", "--model_args", f"pretrained={tiny_model_dir}", "--tasks", "rospr_gen",
                   "--include_path", task_dir, "--device", "cpu", "--limit", "2"), "generate_until")
    error_line(cli("lm-eval", "--model_args", f"pretrained={tiny_model_dir}", "--tasks", "rospr_ll",
                   "--include_path", task_dir, "--device", "cpu", "--limit", "2"), "one continuation to score")


# -- class 7 (issue 32): messages blame what the user wrote -------------------------------------------------

def test_class7_a_single_continuation_is_described_for_either_output_type(rospr):
    """A multiple_choice document with one answer choice sends one continuation, as a loglikelihood task
    does: the message says what was seen and the fix of each, not one output type for both."""
    from rospr_harness.lm_eval.model import LmEvalUnsupported

    requests = [Instance("loglikelihood", {}, ("ctx", " only"), 0, ("mc", 7, 1)),
                Instance("loglikelihood", {}, ("ctx2", " a"), 0, ("mc", 8, 1)),
                Instance("loglikelihood", {}, ("ctx2", " b"), 1, ("mc", 8, 1))]
    with pytest.raises(LmEvalUnsupported, match="task mc, document 7: one continuation") as info:
        rospr.loglikelihood(requests)
    assert "multiple_choice document with a single answer choice" in str(info.value)
    assert "output_type: loglikelihood task" in str(info.value)


@pytest.mark.parametrize("args, named", [({"dtype": "float13"}, "dtype:"), ({"protocol": "carrier-pigeon",
                                          "url": "127.0.0.1:1"}, "protocol:")])
def test_class7_model_args_are_blamed_as_written_not_on_a_config(tiny_model_dir, args, named):
    from rospr_harness.lm_eval.model import RosprLM

    with pytest.raises(RosprError) as info:
        RosprLM(pretrained=str(tiny_model_dir), **args)
    said = str(info.value)
    assert said.startswith("rospr model_args: invalid setting") and f"\n  {named}" in said, said
    assert "<config>" not in said and "invalid config" not in said


def test_class7_lm_evals_own_usage_errors_are_its_message_not_our_bug(monkeypatch):
    """A ValueError raised in lm-eval's code (its "No tasks specified") is lm-eval's message, a refusal;
    one raised in ours is still a bug."""
    import lm_eval.__main__

    from rospr_harness.cli.errors import describe_error
    from rospr_harness.cli.lm_eval import raised_in, run_lm_eval

    theirs: dict = {"__name__": "lm_eval.evaluator"}
    exec("def cli_evaluate():\n    raise ValueError('No tasks specified, or no tasks found.')", theirs)
    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", theirs["cli_evaluate"])
    with pytest.raises(SettingError, match=r"^lm-eval: No tasks specified, or no tasks found\. \(lm-eval's own") as info:
        run_lm_eval(["--tasks", ""])
    assert "unexpected" not in describe_error(info.value) and raised_in(info.value.__cause__, "lm_eval")

    def ours():
        raise ValueError("a bug of ours")

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", ours)
    with pytest.raises(ValueError, match="a bug of ours") as info:
        run_lm_eval(["--tasks", "x"])
    assert "an unexpected error" in describe_error(info.value)
