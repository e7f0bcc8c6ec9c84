"""Our template rendering (harness/tasks/templates.py) equals promptsource 0.2.3's own.

The reference is promptsource's ``promptsource/templates.py``, which `rospr data fetch templates` keeps
beside the templates (from the registry's sdist or the repository at v0.2.3, checked against its
committed sha256) and which is imported by path; the tests skip where it is not there (a copy of the
templates alone, such as ../shared/data, does not hold it); its templates are read by its own
``DatasetTemplates`` (PyYAML ``FullLoader`` and its ``!Template`` YAMLObject) from the same
``templates/`` folder we read. For every template of the 38 T0 training folders and the 9 held-out
folders, on hand-made rows with edge cases and on rows synthesised in each dataset's hub schema, the
input and target of ``Template.apply`` and the list of ``get_answer_choices_list`` must be equal.
Where promptsource raises (a template that cannot render a row), ours must refuse the row too.

What the import of promptsource's templates.py needs: jinja2, PyYAML and pandas are installed and
used as they are; ``pkg_resources`` (gone from setuptools >= 81) is only read at import time for the
package's templates folder, so a one-function module stands in for it during the import. (The
import registers promptsource's ``!Template`` tags on PyYAML's ``Loader``/``FullLoader``, as
importing promptsource does; our reader uses its own safe loader.)

The ``choice`` filter is ``random.choice`` in promptsource and a seeded draw in ours: Python's
global ``random`` is seeded, right before promptsource renders a row, with the seed ours uses for that
(template, row), so both make the same draws (``random.choice(seq)`` and ``Random.randrange(len(seq))``
both take ``_randbelow(len(seq))``). promptsource renders ``answer_choices`` first from the same global
stream; a template whose ``answer_choices`` itself used ``choice`` would be compared on structure only
(none of these folders has one; the test counts them).

Run with ``-rA`` (or ``-s``) to see the number of (template, row) pairs compared.
"""

from __future__ import annotations

import csv
import importlib.util
import random
import re
import sys
import types
from pathlib import Path

import pytest

from rospr_harness.tasks import fetch as fetching
from rospr_harness.tasks.base import TaskError
from rospr_harness.tasks.templates import _row_seed, load_templates
from helpers import REPO

TESTS = REPO / "tests"

HELDOUT_FOLDERS = (
    "anli", "super_glue/cb", "super_glue/rte", "super_glue/wsc.fixed", "super_glue/copa", "super_glue/wic",
    "winogrande/winogrande_xl", "story_cloze/2016", "hellaswag",
)


def t0_train_folders() -> list[str]:
    """The 38 folders of T0's training mixture: the catalog's group, else t-zero's BASE rows."""
    try:
        from rospr_harness.tasks.catalog import group
    except ImportError:
        with open(TESTS / "data" / "t0_datasets_base.csv", newline="", encoding="utf-8") as f:
            return [r["HF_name"] + (f"/{r['subset']}" if r["subset"] else "") for r in csv.DictReader(f)
                    if r["do_train"] == "BASE"]
    return list(group("t0_train"))


FOLDERS = [*t0_train_folders(), *HELDOUT_FOLDERS]


def split_folder(folder: str) -> tuple[str, str | None]:
    dataset, _, subset = folder.partition("/")
    return dataset, subset or None


@pytest.fixture(scope="module")
def templates_root(templates_dir) -> Path:
    """promptsource 0.2.3's templates (the session's checked copy; skips without one)."""
    return templates_dir.resolve()


@pytest.fixture(scope="module")
def ps(templates_root, tmp_path_factory):
    """promptsource 0.2.3's own templates.py, kept beside the fetched templates (skips without it)."""
    kept = fetching.extra_path("templates", "templates.py")
    if kept is None:
        pytest.skip("needs promptsource 0.2.3's own templates.py, which `rospr data fetch templates` keeps "
                    "(from the registry or GitHub; a copy of the templates alone lacks it)")
    path = tmp_path_factory.mktemp("promptsource") / "templates.py"
    path.write_bytes(kept.read_bytes())
    stand_in = types.ModuleType("pkg_resources")
    stand_in.resource_filename = lambda package, name: str(templates_root)  # its templates folder
    spec = importlib.util.spec_from_file_location("promptsource_0_2_3_templates", path)
    module = importlib.util.module_from_spec(spec)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "pkg_resources", stand_in)
        spec.loader.exec_module(module)
    assert module.TEMPLATES_FOLDER_PATH == str(templates_root)
    # Its Template.apply compiles the template's source anew on each call (env.from_string; about 2 ms,
    # 15,000 calls here): the same environment compiles a source once, as jinja's own template cache
    # does for get_template. Not a source that draws at random: jinja folds constants when it
    # compiles, so `[...] | choice` draws from the global stream (seeded by compare) then, not later.
    compile_source, compiled = module.env.from_string, {}

    def from_string_once(source, *args, **kwargs):
        if args or kwargs or not isinstance(source, str) or _DRAWS.search(source):
            return compile_source(source, *args, **kwargs)
        if source not in compiled:
            compiled[source] = compile_source(source)
        return compiled[source]

    module.env.from_string = from_string_once
    return module


@pytest.fixture(autouse=True)
def _keep_global_random():
    """compare() seeds Python's global ``random``; give other tests their stream back."""
    state = random.getstate()
    yield
    random.setstate(state)


# --------------------------------------------------------------------------------------------
# Hand-made rows: edge cases in each dataset's hub schema
# --------------------------------------------------------------------------------------------

LONG = "".join(f"w{i} " for i in range(700)) + "tail ends here"  # 3,900 chars: over 2048
UNI = "Zoë's naïve café — 東京, Ελλάδα, emoji 🚀; \"quotes\" & <tags>"
PIPES = "left ||| right"


def variants(base: dict, *changes: dict) -> list[dict]:
    return [base, *({**base, **c} for c in changes)]


def nli(label_values, extra):
    base = {"premise": "A dog runs in the park.", "hypothesis": "An animal is outside.", "label": label_values[0], **extra}
    return variants(
        base,
        {"premise": PIPES, "hypothesis": "a ||| b ||| c", "label": label_values[-1]},
        {"premise": "", "hypothesis": "", "label": label_values[1 % len(label_values)]},
        {"premise": UNI, "hypothesis": UNI[::-1]},
        {"premise": LONG, "hypothesis": LONG, "label": -1},
    )


HAND_ROWS: dict[str, list[dict]] = {
    "super_glue/rte": nli([0, 1], {"idx": 3}),
    "super_glue/cb": nli([0, 1, 2], {"idx": 7}),
    "anli": nli([0, 1, 2], {"uid": "u1", "reason": ""}),
    "glue/mrpc": [
        {"sentence1": s1, "sentence2": s2, "label": lab, "idx": i}
        for i, (s1, s2, lab) in enumerate([("He said hi.", "He greeted.", 1), (PIPES, UNI, 0), ("", "", 1),
                                            (LONG, LONG, -1)])
    ],
    "ag_news": [{"text": t, "label": lab} for t, lab in [("Stocks rose.", 2), (PIPES, 0), ("", 3), (UNI, 1),
                                                          (LONG, -1)]],
    "super_glue/copa": variants(
        {"premise": "The man broke his toe.", "choice1": "He dropped a hammer on his foot.",
         "choice2": "He got a hole in his sock.", "question": "cause", "idx": 0, "label": 0},
        {"question": "effect", "label": 1, "premise": "I tipped the bottle."},
        {"choice1": PIPES, "choice2": UNI, "premise": "It rained.", "label": 1},
        {"choice1": "", "choice2": "", "premise": "", "question": "effect"},
        {"premise": LONG + ".", "choice1": LONG, "label": -1},
    ),
    "super_glue/wic": variants(
        {"word": "bank", "sentence1": "He sat on the river bank.", "sentence2": "She went to the bank.",
         "start1": 19, "end1": 23, "start2": 15, "end2": 19, "idx": 0, "label": 0},
        {"word": "café", "sentence1": UNI, "sentence2": PIPES, "label": 1},
        {"word": "", "sentence1": "", "sentence2": "", "label": 1},
        {"sentence1": LONG, "label": -1},
    ),
    "super_glue/wsc.fixed": variants(
        {"text": "Mark told Pete many lies about himself, which Pete included in his book.",
         "span1_index": 0, "span2_index": 13, "span1_text": "Mark", "span2_text": "He", "idx": 0, "label": 0},
        {"text": UNI + " " + PIPES, "span1_text": "café", "span2_text": "|||", "label": 1},
        {"text": "", "span1_text": "", "span2_text": ""},
        {"text": LONG, "label": -1},
    ),
    "winogrande/winogrande_xl": variants(
        {"sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
         "option1": "Sarah", "option2": "Maria", "answer": "1"},
        {"sentence": "The café _ ||| was closed.", "option1": UNI, "option2": PIPES, "answer": "2"},
        {"sentence": "_", "option1": "", "option2": "", "answer": ""},
        {"sentence": LONG + " _ " + LONG, "answer": "2"},
    ),
    "story_cloze/2016": variants(
        {"story_id": "s1", "input_sentence_1": "Tom woke up.", "input_sentence_2": "He was late.",
         "input_sentence_3": "He ran.", "input_sentence_4": "He missed the bus.",
         "sentence_quiz1": "He walked to work.", "sentence_quiz2": "He flew to the moon.", "answer_right_ending": 1},
        {"input_sentence_1": PIPES, "sentence_quiz1": UNI, "sentence_quiz2": PIPES, "answer_right_ending": 2},
        {"input_sentence_2": "", "sentence_quiz1": "", "sentence_quiz2": ""},
        {"input_sentence_4": LONG, "sentence_quiz2": LONG},
    ),
    "hellaswag": variants(
        {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
         "ctx_b": "then", "ctx": "Then, the man writes over the snow. then", "endings":
             [", the man adds wax.", ", the man puts on a christmas coat.", ", the man continues.", ", he stops."],
         "source_id": "activitynet~v_-1IBHYS3L-Y", "split": "train", "split_type": "indomain", "label": "3"},
        {"ctx": PIPES, "ctx_a": PIPES, "endings": [UNI, PIPES, "", "x"], "label": "0"},
        {"activity_label": "", "ctx_a": "", "ctx_b": "", "ctx": "", "endings": ["", "", "", ""], "label": "1"},
        {"ctx": LONG, "ctx_a": LONG, "endings": [LONG, "b", "c", "d"], "label": ""},
    ),
    "adversarial_qa/dbidaf": variants(
        {"id": "q1", "title": "Brain", "context": "The brain has two hemispheres.",
         "question": "How many hemispheres?", "answers": {"text": ["two", "2"], "answer_start": [14, 14]},
         "metadata": {"split": "train", "model_in_the_loop": "BiDAF"}},
        {"context": PIPES + " " + UNI, "question": "What ||| here?", "answers": {"text": [PIPES], "answer_start": [0]}},
        {"title": "", "context": "", "question": "", "answers": {"text": [""], "answer_start": [0]}},
        {"context": LONG, "answers": {"text": [LONG, "w1", "tail"], "answer_start": [0, 3, 10]}},
    ),
    "cos_e/v1.11": variants(
        {"id": "c1", "question": "Where do you keep milk?", "choices": ["fridge", "car", "bed", "shoe", "sky"],
         "answer": "fridge", "abstractive_explanation": "Milk is kept cold.", "extractive_explanation": "cold"},
        {"question": PIPES, "choices": [PIPES, UNI, "a", "b", "c"], "answer": UNI},
        {"question": "", "choices": ["", "", "", "", ""], "answer": "", "abstractive_explanation": ""},
        {"question": LONG, "choices": [LONG, "x", "y", "z", "w"], "answer": LONG},
    ),
    "duorc/SelfRC": variants(
        {"plot_id": "p1", "plot": "A hero saves the city.", "title": "Hero", "question_id": "q1",
         "question": "Who saves the city?", "answers": ["A hero", "the hero"], "no_answer": False},
        {"plot": PIPES, "title": UNI, "answers": [PIPES]},
        {"plot": "", "question": "", "answers": [], "no_answer": True},
        {"plot": LONG, "answers": [LONG]},
    ),
}


# --------------------------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------------------------

_USES_CHOICE = re.compile(r"\|\s*choice\b")
_DRAWS = re.compile(r"\|\s*(choice|random|shuffle)\b|\brandom\b")  # a source whose compiling may draw


class Tally:
    def __init__(self) -> None:
        self.pairs = 0  # (template, row) pairs compared
        self.both_refused = 0  # promptsource raised and ours refused
        self.structure_only = 0
        self.templates: set[str] = set()
        self.differences: list[str] = []

    def summary(self, what: str) -> str:
        return (f"{what}: {self.pairs} (template, row) pairs over {len(self.templates)} templates compared "
                f"with promptsource 0.2.3 ({self.both_refused} refused by both, {self.structure_only} on "
                f"structure only), {len(self.differences)} differences")


def load_pair(ps, root: Path, folder: str):
    """Our templates and promptsource's (by id) of one folder; their ids and names must agree."""
    dataset, subset = split_folder(folder)
    ours = load_templates(root, dataset, subset)
    theirs = ps.DatasetTemplates(dataset, subset).templates
    assert {t.id for t in ours} == set(theirs), folder
    assert all(t.name == theirs[t.id].name for t in ours), folder
    return [(t, theirs[t.id]) for t in ours]


def compare(ours, theirs, row: dict, where: str, tally: Tally) -> None:
    tally.pairs += 1
    tally.templates.add(ours.id)
    random.seed(_row_seed(ours.id, row))  # promptsource's `choice` draws from the global stream
    try:
        ps_parts = theirs.apply(row)
        ps_choices = theirs.get_answer_choices_list(row)
        ps_error = None
    except Exception as e:  # noqa: BLE001 - any failure of the reference is compared below
        ps_error = e
    try:
        our_parts = ours.apply(row)
        our_choices = ours.get_answer_choices(row)
        our_error = None
    except TaskError as e:
        our_error = e
    label = f"{where} template {ours.name!r}"
    if ps_error is not None or our_error is not None:
        if ps_error is not None and our_error is not None:
            tally.both_refused += 1
        else:
            tally.differences.append(f"{label}: promptsource {'raised ' + repr(ps_error) if ps_error else 'rendered'}"
                                     f", ours {'refused: ' + str(our_error)[:300] if our_error else 'rendered'}")
        return
    if theirs.answer_choices and _USES_CHOICE.search(theirs.answer_choices):
        tally.structure_only += 1
        if len(our_parts) != len(ps_parts) or (our_choices is None) != (ps_choices is None):
            tally.differences.append(f"{label}: structure differs: {our_parts!r} vs {ps_parts!r}")
        return
    if our_parts != ps_parts:
        tally.differences.append(f"{label}: apply differs:\n  ours {our_parts!r}\n  ps   {ps_parts!r}")
    if our_choices != ps_choices:
        tally.differences.append(f"{label}: answer choices differ:\n  ours {our_choices!r}\n  ps   {ps_choices!r}")


def report(tally: Tally, what: str) -> None:
    summary = tally.summary(what)
    print(summary)
    assert not tally.differences, summary + ":\n" + "\n".join(tally.differences[:20])
    assert tally.pairs > 0


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_folders_are_the_t0_mixture_and_heldout(templates_root):
    assert len(FOLDERS) == 47 and len(set(FOLDERS)) == 47
    for folder in FOLDERS:
        assert (templates_root / folder / "templates.yaml").is_file(), folder


def test_every_template_loads_the_same(ps, templates_root):
    """Same ids, names, bodies, choices and metadata as promptsource reads them."""
    count = 0
    for folder in FOLDERS:
        for ours, theirs in load_pair(ps, templates_root, folder):
            count += 1
            assert ours.jinja == theirs.jinja, (folder, ours.name)
            assert ours.answer_choices == theirs.answer_choices, (folder, ours.name)
            meta = theirs.metadata
            assert ours.original_task == bool(meta.original_task), (folder, ours.name)
            assert ours.choices_in_prompt == bool(meta.choices_in_prompt), (folder, ours.name)
            assert list(ours.metrics) == list(meta.metrics or []), (folder, ours.name)
    print(f"{count} templates of {len(FOLDERS)} folders read the same as promptsource 0.2.3 reads them")
    assert count > 0


def test_hand_made_rows_render_as_promptsource(ps, templates_root):
    tally = Tally()
    for folder, rows in HAND_ROWS.items():
        assert folder in FOLDERS, folder
        for ours, theirs in load_pair(ps, templates_root, folder):
            for i, row in enumerate(rows):
                compare(ours, theirs, row, f"{folder} hand row {i}", tally)
    report(tally, f"hand-made rows ({len(HAND_ROWS)} datasets)")


@pytest.mark.slow  # every template over every synthesised row, through both renderers: 4-5 s (the fast tier stays under 90 s; make test runs it)
def test_synthesised_rows_render_as_promptsource(ps, templates_root):
    try:
        from rospr_harness.tasks.catalog import dataset_spec
        from rospr_harness.tasks.synth import synth_rows
    except ImportError as e:
        pytest.skip(f"rospr_harness.tasks.synth / catalog not importable yet ({e})")
    tally = Tally()
    for folder in FOLDERS:
        spec = dataset_spec(folder)
        assert spec is not None, folder
        pairs = load_pair(ps, templates_root, folder)
        for split in dict.fromkeys(spec.splits.values()):
            for i, row in enumerate(synth_rows(spec, split, 8, seed=0)):
                for ours, theirs in pairs:
                    compare(ours, theirs, row, f"{folder} {split} synth row {i}", tally)
    report(tally, f"synthesised rows ({len(FOLDERS)} folders)")


# Templates written here to reach what the 408 real ones may not: Jinja globals and filters, label -1
# indexing, non-string values under truncation, "|||" inside list items (not protected by either).
EDGE_TEMPLATES = [
    ("zip", "{% for x, y in zip(a, b) %}{{ x }}={{ y }};{% endfor %} ||| {{ b[0] }}", None),
    ("enumerate", "{% for i, x in enumerate(a) %}{{ i }}{% endfor %} ||| t", None),
    ("most_frequent", "{{ a | most_frequent | join(',') }} ||| {{ (a | most_frequent)[0] }}", None),
    ("most_frequent empty", "{{ e | most_frequent }} ||| x", None),
    ("label -1", "{{ s }} ||| {{ answer_choices[label] }}", "yes ||| no ||| maybe"),
    ("numbers", "{{ n }} and {{ f }} and {{ flag }} ||| {{ (n + 1) }}", None),
    # truncation appends "| string | truncate(2048)" inside the braces, which binds to the last
    # operand: n + "1" fails in promptsource, and must fail in ours
    ("arithmetic", "{{ n }} ||| {{ n + 1 }}", None),
    ("list with pipes", "{{ a | join(' ') }} ||| {{ s }}", "{{ a | join(' ||| ') }}"),
    ("choice", "{{ a | choice }} {{ b | choice }} ||| {{ a | choice }}", "{{ b | join(' ||| ') }}"),
    ("long in choices", "{{ s }} ||| {{ answer_choices[0] }}", "{{ s }} ||| short"),
    ("three parts", "{{ s }} ||| {{ s }} ||| {{ s }}", None),
    ("strip", "  \n{{ s }}\n  |||  {{ s }}  ", None),
]

EDGE_ROWS = [
    {"a": ["x", "y", "x"], "b": ["1", "2", "3"], "e": [], "s": "plain", "label": -1, "n": 5, "f": 0.5, "flag": True},
    {"a": ["p|||q", "r"], "b": [UNI, ""], "e": [], "s": PIPES, "label": 0, "n": -1, "f": 1e-9, "flag": False},
    {"a": [LONG], "b": [LONG, LONG], "e": [], "s": LONG, "label": 2, "n": 10**20, "f": float("inf"), "flag": None},
]


def test_edge_templates_render_as_promptsource(ps):
    from rospr_harness.tasks.templates import Template

    tally = Tally()
    for name, jinja, choices in EDGE_TEMPLATES:
        ours = Template(id=f"edge-{name}", name=name, jinja=jinja, answer_choices=choices)
        theirs = ps.Template(name, jinja, "", answer_choices=choices)
        for i, row in enumerate(EDGE_ROWS):
            compare(ours, theirs, row, f"edge row {i}", tally)
    report(tally, f"edge templates ({len(EDGE_TEMPLATES)})")
    assert tally.both_refused == 2 * len(EDGE_ROWS)  # "enumerate" (no such global) and "arithmetic"
