"""Synthetic rows in a dataset's hub schema, so the whole pipeline runs without the hub.

:func:`synth_rows` builds rows in two steps:

1. every field gets a value of its schema type (:mod:`rospr_harness.tasks.catalog` notation): short
   plausible English for strings, class labels spread over the classes (row ``i`` gets class
   ``i mod k``, so a handful of rows covers every class), lists of 2-4 items, dicts of equal-length
   lists for sequences of dicts, structs field by field;
2. the dataset's cross-field constraints, the ones real rows obey and the promptsource templates rely
   on, are applied by its entry in :data:`CONSTRAINTS` (keyed by folder, else by dataset name).
   That table is the one place where they are declared; each entry's docstring says what it
   enforces. Examples: an extractive answer occurs in its context at ``answer_start``; a
   multiple-choice answer is one of the candidates; WSC's ``span2_index`` points at the pronoun;
   HellaSwag's label is a string digit; TREC's fine label belongs to its coarse class.

Rows are deterministic per (folder, split, seed): :class:`random.Random` seeded with a string, which
Python hashes with SHA-512, independent of ``PYTHONHASHSEED``. :func:`synth_rows` gives them in the
schema the templates read; :func:`write_rows` writes them as the hub serves them
(:meth:`DatasetSpec.to_hub`: trec's export column names and class order) to
``<root>/<folder>/<split>.jsonl`` (the local rows layout of ``data.rows_dir``), so that reading them
back goes through the same mapping step as rows from the hub.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from rospr_harness.tasks.base import TaskError
from rospr_harness.tasks.catalog import SCALARS, DatasetSpec, dataset_spec, heldout_settings

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Plausible short English
# --------------------------------------------------------------------------------------------

_NAMES = ["Anna", "Ben", "Carla", "David", "Elena", "Frank", "Grace", "Hugo", "Iris", "James", "Kate", "Leo"]
_SUBJECTS = [
    "the teacher", "the farmer", "a young girl", "the old man", "my neighbour", "the team", "the doctor",
    "a small dog", "the students", "the city council", "the pilot", "the baker",
]
_VERBS = [
    "carried", "painted", "found", "repaired", "sold", "cleaned", "opened", "visited", "watched",
    "described", "built", "moved",
]
_OBJECTS = [
    "a wooden box", "the old bridge", "a red bicycle", "the village library", "a letter", "the garden",
    "a heavy table", "the new school", "a map of the river", "the kitchen window", "a blue boat",
    "the football field",
]
_PLACES = ["in the morning", "near the station", "after lunch", "during the storm", "at the market",
           "before the holiday", "on the hill", "by the lake"]
_NOUNS = ["river", "mountain", "garden", "engine", "forest", "music", "bread", "winter", "island", "camera",
          "rain", "window", "energy", "planet", "market", "teacher"]
_TOPICS = ["Alpine Lakes", "The Northern Railway", "Harbor Festival", "Glass Making", "Spring Harvest",
           "The Silver Bridge", "City Orchestra", "Desert Plants"]


class _Text:
    """Short English text drawn from small word banks (deterministic through ``rng``)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, items: list[str]) -> str:
        return items[self.rng.randrange(len(items))]

    def name(self) -> str:
        return self.pick(_NAMES)

    def noun(self) -> str:
        return self.pick(_NOUNS)

    def words(self, k: int) -> list[str]:
        return self.rng.sample(_NOUNS, k)

    def phrase(self) -> str:
        return self.pick(_OBJECTS)

    def sentence(self) -> str:
        subject = self.pick(_SUBJECTS)
        return f"{subject[0].upper()}{subject[1:]} {self.pick(_VERBS)} {self.pick(_OBJECTS)} {self.pick(_PLACES)}."

    def paragraph(self, k: int = 3) -> str:
        return " ".join(self.sentence() for _ in range(k))

    def question(self) -> str:
        return f"What did {self.pick(_SUBJECTS)} {self.pick(['carry', 'find', 'see', 'build'])} {self.pick(_PLACES)}?"

    def title(self) -> str:
        return self.pick(_TOPICS)


# --------------------------------------------------------------------------------------------
# Step 1: a value of each schema type
# --------------------------------------------------------------------------------------------


def _string(name: str, text: _Text, i: int) -> str:
    """A string that fits a field called ``name`` (ids look like ids, titles like titles)."""
    if name in ("id", "uid") or name.endswith("_id"):
        return f"{text.rng.getrandbits(32):08x}"
    if name == "url":
        return f"https://example.org/{text.noun()}/{i}"
    if "title" in name:
        return text.title()
    if "question" in name:
        return text.question()
    return text.sentence()


def _value(feature: Any, text: _Text, i: int, name: str = "") -> Any:
    """A value of ``feature`` for row ``i`` (``name``: the field's name, for strings)."""
    rng = text.rng
    if isinstance(feature, str):
        if feature == "string":
            return _string(name, text, i)
        if feature == "bool":
            return i % 2 == 0
        if SCALARS[feature] is int:
            return rng.randrange(0, 100)
        return round(rng.random(), 3)
    if len(feature) == 1:
        kind, inner = next(iter(feature.items()))
        if kind == "class_label":
            return i % len(inner)  # spread over the classes
        if kind == "list":
            return [_value(inner, text, i, name) for _ in range(rng.randint(2, 4))]
        if kind == "sequence":
            k = rng.randint(1, 3)
            return {key: [_value(sub, text, i, key) for _ in range(k)] for key, sub in inner.items()}
    return {key: _value(sub, text, i, key) for key, sub in feature.items()}


# --------------------------------------------------------------------------------------------
# Step 2: cross-field constraints, per dataset
# --------------------------------------------------------------------------------------------

Constraint = Callable[[dict, _Text, int, str, DatasetSpec], None]
CONSTRAINTS: dict[str, Constraint] = {}


def _constraint(*keys: str) -> Callable[[Constraint], Constraint]:
    def register(fn: Constraint) -> Constraint:
        for key in keys:
            CONSTRAINTS[key] = fn
        return fn

    return register


def _span(text: _Text, context_sentences: int = 3) -> tuple[str, str, int]:
    """A context and an answer phrase it contains: (context, answer, answer_start)."""
    answer = text.pick(_OBJECTS)
    subject = text.pick(_SUBJECTS)
    host = f"{subject[0].upper()}{subject[1:]} {text.pick(_VERBS)} {answer} {text.pick(_PLACES)}."
    sentences = [text.sentence() for _ in range(context_sentences - 1)]
    sentences.insert(text.rng.randrange(context_sentences), host)
    context = " ".join(sentences)
    return context, answer, context.index(answer)


@_constraint("kilt_tasks")
def _kilt(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """KILT: ``input`` is a question; ``output`` holds at least one answer (templates skip empty)."""
    row["input"] = text.question()
    for item in row["output"]:
        item["answer"] = text.phrase()


@_constraint("wiki_qa")
def _wiki_qa(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """WikiQA: questions carry no '?' (templates add one); the answer is a sentence about the title."""
    row["question"] = text.question().rstrip("?")
    row["document_title"] = text.title()
    row["question_id"] = f"Q{i}"


@_constraint("adversarial_qa", "quoref")
def _squad_like(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """SQuAD-style: each ``answers.text`` occurs in ``context`` at ``answers.answer_start``;
    adversarial_qa's ``metadata.split`` is the split (templates skip the test split) and its model
    in the loop the subset's."""
    context, answer, start = _span(text)
    row["context"] = context
    row["question"] = text.question()
    row["title"] = text.title()
    row["answers"] = {"text": [answer], "answer_start": [start]}
    if "metadata" in row:
        row["metadata"] = {
            "split": split,
            "model_in_the_loop": {"dbidaf": "BiDAF", "dbert": "BERT", "droberta": "RoBERTa"}.get(
                spec.subset or "", "Combined"
            ),
        }


@_constraint("duorc")
def _duorc(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """DuoRC: answerable rows (``no_answer`` false) have answers taken from the plot; unanswerable
    rows have none. Rows alternate, starting answerable."""
    plot, answer, _ = _span(text, 4)
    row["plot"] = plot
    row["title"] = text.title()
    row["question"] = text.question()
    row["no_answer"] = i % 2 == 1
    row["answers"] = [] if row["no_answer"] else [answer]


@_constraint("ropes")
def _ropes(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """ROPES: the answer is one of two groups the situation names."""
    a, b = text.rng.sample(_NAMES, 2)
    row["background"] = text.paragraph(2)
    row["situation"] = f"{a} lives near the {text.noun()} and {b} lives near the {text.noun()}."
    row["question"] = f"Who sees more {text.noun()}, {a} or {b}?"
    row["answers"] = {"text": [text.pick([a, b])]}


@_constraint("cos_e")
def _cos_e(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """CoS-E: five distinct choices; ``answer`` is one of them; the explanation mentions it."""
    row["choices"] = text.words(5)
    row["answer"] = row["choices"][i % 5]
    row["question"] = f"Where would you most likely find a {text.noun()}?"
    row["abstractive_explanation"] = f"A {row['answer']} is where it is usually kept."


@_constraint("cosmos_qa")
def _cosmos(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """Cosmos QA: ``label`` (a plain int32) indexes one of answer0..answer3."""
    row["label"] = i % 4
    row["question"] = "Why might this have happened?"


@_constraint("dream")
def _dream(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """DREAM: a dialogue of 3-4 alternating 'M:'/'W:' turns; three choices; ``answer`` is one of them."""
    turns = text.rng.randint(3, 4)
    row["dialogue"] = [f"{'MW'[t % 2]}: {text.sentence()}" for t in range(turns)]
    row["choice"] = [text.phrase() for _ in range(3)]
    while len(set(row["choice"])) < 3:
        row["choice"] = [text.phrase() for _ in range(3)]
    row["answer"] = row["choice"][i % 3]
    row["question"] = "What does the man want to do?"
    row["id"] = i
    row["dialogue_id"] = f"{i}-{i % 7}"


_LETTERS = "ABCDEFGH"


@_constraint("qasc")
def _qasc(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """QASC: eight choices labelled A-H; ``answerKey`` is one of the labels; the combined fact
    joins the two facts; ``formatted_question`` lists the choices."""
    options = text.words(8)
    row["choices"] = {"text": options, "label": list(_LETTERS)}
    row["answerKey"] = _LETTERS[i % 8]
    answer = options[i % 8]
    row["fact1"] = f"a {answer} needs {text.noun()}."
    row["fact2"] = f"{text.noun()} comes from the {text.noun()}."
    row["combinedfact"] = f"a {answer} needs what comes from the {text.noun()}."
    row["question"] = f"What needs {text.noun()}?"
    row["formatted_question"] = row["question"] + " " + " ".join(f"({l}) {t}" for l, t in zip(_LETTERS, options))


@_constraint("quail")
def _quail(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """QuAIL: four answers; ``correct_answer_id`` indexes one of them."""
    row["answers"] = [text.phrase() for _ in range(4)]
    while len(set(row["answers"])) < 4:
        row["answers"] = [text.phrase() for _ in range(4)]
    row["correct_answer_id"] = i % 4
    row["domain"] = text.pick(["fiction", "news", "blogs", "user_stories"])
    row["question_type"] = text.pick(["Causality", "Factual", "Temporal_order", "Entity_properties"])
    row["metadata"]["author"] = f"{text.name()} {text.pick(['Reed', 'Moss', 'Hale'])}"
    row["context"] = text.paragraph(4)
    row["question"] = text.question()


@_constraint("quarel")
def _quarel(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """QuaRel: two worlds (one literal each); the question offers both as (A)/(B);
    ``answer_index`` picks one."""
    w1, w2 = text.rng.sample(["carpet", "ice", "gravel", "grass", "mud", "sand"], 2)
    row["world_literals"] = {"world1": [w1], "world2": [w2]}
    row["answer_index"] = i % 2
    row["question"] = f"A ball rolls further on {w1} than on {w2}. Which surface is smoother? (A) {w1} (B) {w2}"
    row["logical_forms"] = [f"(infer (smoothness higher world{1 + i % 2}))"]
    row["logical_form_pretty"] = f"qrel(smoothness, higher, world{1 + i % 2})"


@_constraint("quartz")
def _quartz(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """QuaRTz: two choices labelled A/B; ``answerKey`` is one of them; every other question has a
    '_____' blank (templates branch on it)."""
    options = text.rng.sample(["more", "less", "higher", "lower", "faster", "slower"], 2)
    row["choices"] = {"text": options, "label": ["A", "B"]}
    row["answerKey"] = "AB"[i % 2]
    row["para"] = "Warmer water holds less oxygen than colder water."
    row["question"] = (
        "If the lake gets warmer, its water holds _____ oxygen." if i % 2 == 0
        else "If the lake gets warmer, does its water hold more or less oxygen?"
    )


@_constraint("sciq")
def _sciq(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """SciQ: the correct answer and three distractors are distinct words; the support mentions the answer."""
    correct, d1, d2, d3 = text.words(4)
    row.update(correct_answer=correct, distractor1=d1, distractor2=d2, distractor3=d3)
    row["question"] = f"What is made mostly of {text.noun()}?"
    row["support"] = f"The {correct} is made mostly of {text.noun()}. {text.sentence()}"


@_constraint("social_i_qa")
def _siqa(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """Social IQa: ``label`` is the answer number as a string, "1".."3"."""
    row["label"] = str(1 + i % 3)
    row["question"] = f"What will {text.name()} want to do next?"


@_constraint("wiki_hop")
def _wiki_hop(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """WikiHop: ``question`` is '<relation> <subject words>'; ``answer`` is one of ``candidates``."""
    row["candidates"] = text.words(4)
    row["answer"] = row["candidates"][i % 4]
    row["question"] = f"located_in_the_administrative_territorial_entity {text.title().lower()}"
    row["supports"] = [text.sentence() for _ in range(3)]
    row["annotations"] = [["follows"], ["likely"]]


_WIQA_ANSWERS = ["more", "less", "no_effect"]
_WIQA_TYPES = ["EXOGENOUS_EFFECT", "INPARA_EFFECT", "OUTOFPARA_DISTRACTOR"]


@_constraint("wiqa")
def _wiqa(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """WIQA: ``answer_label`` in more/less/no_effect with the matching A/B/C; the choices are
    'more', 'less', 'no effect'; the question type is one of the three hub values; some processes
    end with an empty step, as hub rows do (templates drop it)."""
    k = i % 3
    row["answer_label"] = _WIQA_ANSWERS[k]
    row["answer_label_as_choice"] = "ABC"[k]
    row["choices"] = {"text": ["more", "less", "no effect"], "label": ["A", "B", "C"]}
    row["metadata_question_type"] = _WIQA_TYPES[i % 3]
    row["question_para_step"] = [text.sentence() for _ in range(4)] + ([""] if i % 2 else [])
    row["question_stem"] = f"suppose more {text.noun()} happens, how will it affect less {text.noun()}?"


@_constraint("app_reviews")
def _app_reviews(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """App reviews: ``star`` is a rating 1..5; the package name looks like a Java package."""
    row["star"] = 1 + i % 5
    row["package_name"] = f"com.example.{text.noun()}"
    row["date"] = f"October {1 + i % 28} 2016"


@_constraint("common_gen")
def _common_gen(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """CommonGen: 3-4 concepts, and a target sentence that uses them all."""
    row["concepts"] = text.words(text.rng.randint(3, 4))
    row["target"] = "The " + ", the ".join(row["concepts"][:-1]) + f" and the {row['concepts'][-1]} were together."
    row["concept_set_idx"] = i


@_constraint("wiki_bio")
def _wiki_bio(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """WikiBio: the infobox table has name, article_title and a few more headers with aligned
    row numbers and contents; ``context`` is the person's name; the target describes them."""
    name = f"{text.name()} {text.pick(['Smith', 'Novak', 'Garcia', 'Okafor', 'Larsen'])}"
    headers = ["name", "birth_date", "occupation", "nationality", "article_title"]
    contents = [name, f"{1 + i % 28} May 19{50 + i % 40}", text.pick(["painter", "engineer", "singer"]),
                text.pick(["Danish", "Polish", "Chilean"]), name]
    row["input_text"] = {
        "table": {"column_header": headers, "row_number": list(range(1, len(headers) + 1)), "content": contents},
        "context": name.lower(),
    }
    row["target_text"] = f"{name} (born {contents[1]}) is a {contents[3]} {contents[2]}."


@_constraint("multi_news")
def _multi_news(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """Multi-News: source articles joined by '|||||' (templates split on it); the summary starts
    with '– ' as hub summaries do (templates drop the first two characters)."""
    row["document"] = " ||||| ".join(text.paragraph(2) for _ in range(2)) + " |||||"
    row["summary"] = "– " + text.sentence()


@_constraint("samsum")
def _samsum(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """SAMSum: a chat of 'Name: text' lines separated by CRLF, as on the hub."""
    a, b = text.rng.sample(_NAMES, 2)
    row["dialogue"] = "\r\n".join(f"{[a, b][t % 2]}: {text.sentence()}" for t in range(3))
    row["summary"] = f"{a} and {b} talk about {text.phrase()}."
    row["id"] = f"1373{i:04d}"


# TREC (promptsource schema): the fine labels of each coarse class, from the templates' own
# label_mapping tables (fine index -> position in that class's answer choices).
TREC_FINE_BY_COARSE: Mapping[int, tuple[int, ...]] = {
    0: (0, 7, 12, 9),  # DESC: manner, def, desc, reason
    1: (2, 22, 19, 1, 46, 23, 10, 17, 33, 37, 15, 30, 26, 16, 28, 42, 31, 20, 44, 36, 14),  # ENTY
    2: (34, 3),  # ABBR: abb, exp
    3: (5, 4, 6, 12),  # HUM: gr, ind, title, desc
    4: (39, 13, 8, 40, 25, 43, 27, 38, 35, 41, 32, 45, 14),  # NUM
    5: (21, 18, 24, 11, 14),  # LOC: city, country, mount, state, other
}


@_constraint("trec")
def _trec(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """TREC: the fine label belongs to the coarse class (templates map fine labels per class)."""
    coarse = i % 6
    row["label_coarse"] = coarse
    fines = TREC_FINE_BY_COARSE[coarse]
    row["label_fine"] = fines[(i // 6) % len(fines)]
    row["text"] = text.question()


@_constraint("super_glue/wsc.fixed")
def _wsc(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """WSC: ``span1`` is a noun phrase and ``span2`` a later pronoun; ``span*_index`` are their word
    positions in ``text`` split on spaces; every other row uses 'they'/'them' (templates branch)."""
    a, b = text.rng.sample(["the trophy", "the suitcase", "the dog", "the cat", "the city council", "the students"], 2)
    plural = i % 2 == 1
    pronoun = "they" if plural else "it"
    verb = "were" if plural else "was"
    words = f"{a.capitalize()} did not fit next to {b} because {pronoun} {verb} too large.".split(" ")
    row["text"] = " ".join(words)
    row["span1_index"] = 0
    row["span1_text"] = a.capitalize()
    row["span2_index"] = words.index(pronoun)
    row["span2_text"] = pronoun


@_constraint("super_glue/wic")
def _wic(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """WiC: ``word`` occurs in both sentences at [start, end) character offsets."""
    word = text.noun()
    s1 = f"We talked about the {word} for an hour."
    s2 = f"The {word} was larger than we expected."
    row.update(word=word, sentence1=s1, sentence2=s2)
    row["start1"], row["end1"] = s1.index(word), s1.index(word) + len(word)
    row["start2"], row["end2"] = s2.index(word), s2.index(word) + len(word)


@_constraint("super_glue/copa")
def _copa(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """COPA: ``question`` alternates 'cause'/'effect'; premise and choices are capitalised
    sentences ending with '.', as on the hub."""
    row["question"] = "cause" if i % 2 == 0 else "effect"
    row["premise"] = text.sentence()
    row["choice1"], row["choice2"] = text.sentence(), text.sentence()


@_constraint("winogrande")
def _winogrande(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """WinoGrande: the sentence has one '_' blank; ``answer`` is "1" or "2" (a string)."""
    a, b = text.rng.sample(_NAMES, 2)
    row["option1"], row["option2"] = a, b
    row["sentence"] = f"{a} gave {b} a {text.noun()} because _ was leaving for the {text.noun()}."
    row["answer"] = "12"[i % 2]


@_constraint("story_cloze")
def _story_cloze(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """StoryCloze: four story sentences, two endings; ``answer_right_ending`` is 1 or 2."""
    name = text.name()
    for k in range(1, 5):
        row[f"input_sentence_{k}"] = f"{name} {text.pick(_VERBS)} {text.pick(_OBJECTS)} {text.pick(_PLACES)}."
    row["sentence_quiz1"] = f"{name} was happy."
    row["sentence_quiz2"] = f"{name} was angry."
    row["answer_right_ending"] = 1 + i % 2
    row["story_id"] = f"{i:08x}-story"


@_constraint("hellaswag")
def _hellaswag(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """HellaSwag: ``ctx`` is ``ctx_a`` + ' ' + ``ctx_b``; four endings; ``label`` is a string digit
    "0".."3"; ``split`` is the split's name."""
    who = text.pick(_SUBJECTS)
    row["activity_label"] = text.pick(["Washing dishes", "Making a sandwich", "Playing the piano", "Surfing"])
    row["ctx_a"] = f"{who.capitalize()} stands {text.pick(_PLACES)}."
    row["ctx_b"] = f"{who} then"
    row["ctx"] = f"{row['ctx_a']} {row['ctx_b']}"
    row["endings"] = [f"{text.pick(_VERBS)} {text.pick(_OBJECTS)}." for _ in range(4)]
    row["label"] = str(i % 4)
    row["split"] = split
    row["split_type"] = "indomain"
    row["source_id"] = f"activitynet~v_{i:05d}"
    row["ind"] = i


@_constraint("cnn_dailymail", "xsum", "gigaword")
def _summaries(row: dict, text: _Text, i: int, split: str, spec: DatasetSpec) -> None:
    """News summarisation: a multi-sentence document and a one-sentence summary."""
    doc_field = "article" if "article" in row else "document"
    sum_field = "highlights" if "highlights" in row else "summary"
    row[doc_field] = text.paragraph(4)
    row[sum_field] = text.sentence()


# --------------------------------------------------------------------------------------------
# Rows and files
# --------------------------------------------------------------------------------------------


def synth_rows(spec: DatasetSpec, split: str, n: int, seed: int) -> list[dict]:
    """``n`` rows of ``spec``'s hub schema for ``split``, deterministic per (folder, split, seed).

    Labels are spread over the classes (row ``i`` gets class ``i mod k``) and the dataset's
    constraints (:data:`CONSTRAINTS`) hold. Refuses (``TaskError``) a negative ``n``.
    """
    if n < 0:
        raise TaskError(f"synth rows for {spec.folder}: n must be >= 0, got {n}")
    rng = random.Random(f"rospr-synth/{spec.folder}/{split}/{seed}")
    text = _Text(rng)
    constraint = CONSTRAINTS.get(spec.folder) or CONSTRAINTS.get(spec.dataset)
    rows = []
    for i in range(n):
        row = {name: _value(feature, text, i, name) for name, feature in spec.features.items()}
        if constraint is not None:
            constraint(row, text, i, split, spec)
        rows.append(row)
    return rows


def splits_to_write(spec: DatasetSpec) -> list[str]:
    """The hub splits synthesised for ``spec``: its train and eval splits, and the splits that
    held-out settings of the same folder evaluate on (ANLI's dev_r1..dev_r3)."""
    names = [spec.splits[role] for role in ("train", "eval") if role in spec.splits]
    names += [s.split for s in heldout_settings().values() if s.folder == spec.folder]
    return list(dict.fromkeys(names))


def write_rows(root: Path, folders: Iterable[str], n: int, seed: int) -> list[Path]:
    """Write ``n`` synthetic rows per split as ``<root>/<folder>/<split>.jsonl``, in the hub's
    column names and class order (:meth:`DatasetSpec.to_hub`); return the paths.

    Splits: see :func:`splits_to_write`. Each file is written to a temporary name, then renamed.
    Refuses (``TaskError``) a folder the catalog does not know.
    """
    root = Path(root)
    written: list[Path] = []
    for folder in folders:
        spec = dataset_spec(folder)
        if spec is None:
            raise TaskError(
                f"cannot synthesise rows for {folder!r}: it is not in the dataset catalog "
                "(harness/data/datasets.yaml); add its hub schema there"
            )
        for split in splits_to_write(spec):
            path = root / folder / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            with tmp.open("w", encoding="utf-8") as f:
                for row in synth_rows(spec, split, n, seed):
                    f.write(json.dumps(spec.to_hub(row), ensure_ascii=False) + "\n")
            os.replace(tmp, path)
            written.append(path)
    log.info("wrote %d synthetic rows files under %s", len(written), root)
    return written
