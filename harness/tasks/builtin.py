"""A small built-in suite of generated tasks, for offline demos and tests.

Five tasks, each with its own answer format, generated deterministically from a seed:

========================  ===================================  =====================================
task                      answers                              the label is decided by
========================  ===================================  =====================================
``builtin/animals``       yes / no                             an animal word among the words (or not)
``builtin/nli``           true / false / neither               the hypothesis' marker word (certainty,
                                                               negation, hedge)
``builtin/fruit_choice``  A / B / C                            which option is a fruit
``builtin/sentiment``     positive / negative                  the polarity of the opinion words
``builtin/topic``         sports / politics / science / food   the topic of the keywords
========================  ===================================  =====================================

Labels depend only on which word lists the input's words come from, so a tiny model with a trained
soft prompt can learn them. Labels are balanced (class counts differ by at most one) and shuffled.
Each task has a ``train`` and a ``validation`` split (``n_train``, ``n_validation`` rows; default 200
and 64), generated from different seeds derived from ``seed``, the task and the split. Every task has
3-4 hard prompts written as promptsource-style Jinja (``|||`` and ``answer_choices``), rendered by
:class:`rospr_harness.tasks.templates.Template` exactly like promptsource files.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Callable

from rospr_harness.tasks.base import SplitStatus, TaskError
from rospr_harness.tasks.common import content_hash
from rospr_harness.tasks.templates import Template, find_template
from rospr.canonical import derive_seed
from rospr.data import UnitData

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")
DEFAULT_SEED = 0
DEFAULT_N_TRAIN = 200
DEFAULT_N_VALIDATION = 64
SOURCE = "harness/tasks/builtin.py"

# --------------------------------------------------------------------------------------------
# Word lists (disjoint: a word's list alone decides a label)
# --------------------------------------------------------------------------------------------

FILLER = (
    "the", "a", "near", "under", "with", "today", "small", "large", "old", "new", "red", "blue",
    "green", "quiet", "busy", "morning", "evening", "street", "house", "garden", "window", "river",
)
ANIMALS = ("cat", "dog", "horse", "rabbit", "tiger", "mouse", "eagle", "sheep", "camel", "frog")
THINGS = ("chair", "lamp", "table", "spoon", "bottle", "pencil", "basket", "ladder", "mirror", "bucket")
FRUITS = ("apple", "banana", "cherry", "mango", "grape", "lemon", "peach", "plum", "melon", "kiwi")
TOOLS = ("hammer", "wrench", "saw", "drill", "shovel", "chisel", "pliers", "rake", "axe", "trowel")
POSITIVE = ("great", "wonderful", "excellent", "lovely", "delightful", "superb", "pleasant", "brilliant")
NEGATIVE = ("awful", "terrible", "horrible", "dreadful", "boring", "poor", "disappointing", "nasty")
OPINION_NOUNS = ("movie", "meal", "book", "concert", "hotel", "game", "show", "trip")
TOPICS: dict[str, tuple[str, ...]] = {
    "sports": ("football", "tennis", "goal", "team", "match", "coach", "stadium", "player"),
    "politics": ("election", "senate", "minister", "vote", "parliament", "law", "campaign", "party"),
    "science": ("physics", "atom", "laboratory", "experiment", "molecule", "telescope", "theory", "cell"),
    "food": ("bread", "soup", "cheese", "pasta", "salad", "butter", "rice", "pizza"),
}
PEOPLE = ("the teacher", "the farmer", "the doctor", "my neighbour", "the pilot", "the student")
ACTIONS = ("painted", "carried", "cleaned", "opened", "repaired", "moved")
OBJECTS = ("the door", "the boat", "the fence", "the box", "the car", "the gate")
NLI_MARKERS = (  # label 0 true, 1 false, 2 neither
    ("certainly", "definitely", "surely", "clearly"),
    ("never", "scarcely", "hardly", "barely"),
    ("perhaps", "maybe", "possibly", "probably"),
)


# --------------------------------------------------------------------------------------------
# Row generators: (rng, label) -> row (a dict with ``label``)
# --------------------------------------------------------------------------------------------


def _words(rng: random.Random, n: int, extra: list[str]) -> str:
    words = [rng.choice(FILLER) for _ in range(n)] + extra
    rng.shuffle(words)
    return " ".join(words)


def _animals(rng: random.Random, label: int) -> dict:
    key = rng.choice(ANIMALS if label == 0 else THINGS)
    return {"words": _words(rng, rng.randint(4, 7), [key]), "label": label}


def _nli(rng: random.Random, label: int) -> dict:
    person, action, obj = rng.choice(PEOPLE), rng.choice(ACTIONS), rng.choice(OBJECTS)
    place = rng.choice(("garden", "street", "house", "river"))
    marker = rng.choice(NLI_MARKERS[label])
    return {
        "premise": f"{person.capitalize()} {action} {obj} near the {place} this {rng.choice(('morning', 'evening'))}.",
        "hypothesis": f"{person.capitalize()} {marker} {action} {obj}.",
        "label": label,
    }


def _fruit_choice(rng: random.Random, label: int) -> dict:
    options = rng.sample(TOOLS, 2)
    options.insert(label, rng.choice(FRUITS))
    return {"option_a": options[0], "option_b": options[1], "option_c": options[2], "label": label}


def _sentiment(rng: random.Random, label: int) -> dict:
    words = POSITIVE if label == 0 else NEGATIVE
    first, second = rng.sample(words, 2)
    noun = rng.choice(OPINION_NOUNS)
    return {
        "review": f"The {noun} was {first} and the {rng.choice(FILLER)} {rng.choice(FILLER)} part felt {second}.",
        "label": label,
    }


def _topic(rng: random.Random, label: int) -> dict:
    keys = rng.sample(TOPICS[list(TOPICS)[label]], 2)
    return {"text": _words(rng, rng.randint(3, 6), keys), "label": label}


# --------------------------------------------------------------------------------------------
# Task definitions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinSpec:
    """A generated task: its classes, row generator and hard prompts ``(name, jinja)``."""

    name: str
    n_classes: int
    answer_choices: str
    generate: Callable[[random.Random, int], dict]
    prompts: tuple[tuple[str, str], ...]


_TARGET = " ||| {{ answer_choices[label] }}"

BUILTIN: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in (
        BuiltinSpec(
            "animals", 2, "yes ||| no", _animals,
            (
                ("mentions_animal", "Words: {{ words }}\nDo these words mention an animal? yes or no?" + _TARGET),
                ("is_there_animal", "Is there an animal in \"{{ words }}\"? Answer yes or no." + _TARGET),
                ("animal_check", "{{ words }}\nQuestion: does the text above name an animal?" + _TARGET),
            ),
        ),
        BuiltinSpec(
            "nli", 3, "true ||| false ||| neither", _nli,
            (
                ("true_false_neither", "{{ premise }}\nQuestion: {{ hypothesis }} true, false, or neither?" + _TARGET),
                ("given_that", "Given that \"{{ premise }}\" Is it true that \"{{ hypothesis }}\"? "
                 "Answer true, false or neither." + _TARGET),
                ("premise_hypothesis", "Premise: {{ premise }}\nHypothesis: {{ hypothesis }}\n"
                 "Does the premise make the hypothesis true, false, or neither?" + _TARGET),
                ("suppose", "Suppose {{ premise | lower }} Then {{ hypothesis | lower }} "
                 "Is that true, false, or neither?" + _TARGET),
            ),
        ),
        BuiltinSpec(
            "fruit_choice", 3, "A ||| B ||| C", _fruit_choice,
            (
                ("which_is_fruit", "Which option is a fruit?\nA: {{ option_a }}\nB: {{ option_b }}\n"
                 "C: {{ option_c }}\nAnswer:" + _TARGET),
                ("pick_the_fruit", "Pick the fruit. (A) {{ option_a }} (B) {{ option_b }} (C) {{ option_c }}"
                 + _TARGET),
                ("edible_one", "Options: A. {{ option_a }}, B. {{ option_b }}, C. {{ option_c }}. "
                 "Which one can you eat? Reply with A, B or C." + _TARGET),
            ),
        ),
        BuiltinSpec(
            "sentiment", 2, "positive ||| negative", _sentiment,
            (
                ("review_sentiment", "Review: {{ review }}\nIs this review positive or negative?" + _TARGET),
                ("how_did_they_feel", "{{ review }}\nDid the writer feel positive or negative?" + _TARGET),
                ("sentiment_label", "What is the sentiment of \"{{ review }}\"?" + _TARGET),
            ),
        ),
        BuiltinSpec(
            "topic", 4, "sports ||| politics ||| science ||| food", _topic,
            (
                ("what_topic", "{{ text }}\nWhat is this text about: sports, politics, science or food?" + _TARGET),
                ("topic_label", "Text: {{ text }}\nTopic:" + _TARGET),
                ("classify_topic", "Classify the topic of \"{{ text }}\" as sports, politics, science, "
                 "or food." + _TARGET),
                ("section", "Which section of the newspaper is this from? {{ text }}" + _TARGET),
            ),
        ),
    )
}


def _seed(seed: int, task: str, split: str) -> int:
    return derive_seed("rospr-builtin", seed, task, split)


def generate_rows(spec: BuiltinSpec, split: str, n: int, seed: int = DEFAULT_SEED) -> list[dict]:
    """``n`` rows of ``spec`` for ``split``: balanced shuffled labels, deterministic in ``seed``."""
    if split not in SPLITS:
        raise TaskError(f"task 'builtin/{spec.name}': unknown split {split!r}; splits are {list(SPLITS)}")
    if n < 0:
        raise TaskError(f"task 'builtin/{spec.name}': the number of rows must be >= 0, got {n}")
    rng = random.Random(_seed(seed, spec.name, split))
    labels = [i % spec.n_classes for i in range(n)]
    rng.shuffle(labels)
    return [spec.generate(rng, label) for label in labels]


class BuiltinTask:
    """A generated task as a :class:`~rospr_harness.tasks.base.Task` (evaluation split: ``validation``)."""

    folder = None  # no promptsource folder: the rows are generated

    def __init__(
        self, spec: BuiltinSpec, *, seed: int = DEFAULT_SEED, n_train: int = DEFAULT_N_TRAIN,
        n_validation: int = DEFAULT_N_VALIDATION,
    ) -> None:
        self.spec = spec
        self.name = f"builtin/{spec.name}"
        self.seed = seed
        self.sizes = {"train": n_train, "validation": n_validation}
        self._templates = [
            Template(
                id=f"{self.name}/{prompt}",
                name=prompt,
                jinja=jinja,
                answer_choices=spec.answer_choices,
                metadata={"original_task": True, "choices_in_prompt": False, "metrics": ["Accuracy"]},
                source=f"{SOURCE} ({self.name})",
            )
            for prompt, jinja in spec.prompts
        ]
        self._rows: dict[str, list[dict]] = {}

    def templates(self) -> list[Template]:
        return list(self._templates)

    def prompts(self) -> list[str]:
        return [t.name for t in self._templates]

    def training_prompts(self) -> list[str]:
        return self.prompts()

    def prompt_marks(self) -> dict[str, tuple[str, ...]]:
        return {p: () for p in self.prompts()}

    def split_status(self) -> list[SplitStatus]:
        return [SplitStatus(self.name, self.name, "eval", "generated", "", None, None, "builtin",
                            "generated in process", "", True)]

    def rows(self, split: str = "validation") -> list[dict]:
        """The generated rows of ``split`` (cached)."""
        if split not in self._rows:
            if split not in self.sizes:
                raise TaskError(f"task {self.name!r}: unknown split {split!r}; splits are {list(SPLITS)}")
            self._rows[split] = generate_rows(self.spec, split, self.sizes[split], self.seed)
        return self._rows[split]

    def training_identity(self, prompt: str, split: str | None = None, limit: int | None = None) -> dict | None:
        """See ``Task.training_identity``: the template, the split's size and the seed (the rows are
        generated by this module's code)."""
        split = split or "validation"
        template = find_template(self._templates, prompt, f"task {self.name!r}")
        return {"task": self.name, "split": split, "limit": limit, "template": template.text(), "seed": self.seed,
                "n": self.sizes.get(split), "generator": SOURCE}

    def load(self, prompt: str, split: str | None = None, limit: int | None = None, *,
             training: bool = False) -> UnitData:
        """Render ``prompt`` on ``split`` (default ``validation``); see ``Task.load``."""
        template = find_template(self._templates, prompt, f"task {self.name!r}")
        split = split or "validation"
        rows = self.rows(split)
        if limit is not None:
            rows = rows[:limit]
        source = f"builtin:{self.spec.name}:{split} (seed {self.seed}, {SOURCE})"
        examples, skipped = [], 0
        for index, row in enumerate(rows):
            example = template.example(row, task=self.name, index=index, prompt=prompt,
                                       row_name=f"row {index} of {source}")
            if example is None:
                skipped += 1
            else:
                examples.append(example)
        return UnitData(
            task=self.name, prompt=prompt, examples=examples, skipped=skipped, source=source,
            content_hash=content_hash(template.text(), rows),
        )


def builtin_task(
    name: str, *, seed: int = DEFAULT_SEED, n_train: int = DEFAULT_N_TRAIN,
    n_validation: int = DEFAULT_N_VALIDATION,
) -> BuiltinTask:
    """``builtin/<name>`` (or ``<name>``) with the given seed and split sizes."""
    short = name.removeprefix("builtin/")
    if short not in BUILTIN:
        raise TaskError(f"unknown builtin task {name!r}; known: {list_builtin()}")
    return BuiltinTask(BUILTIN[short], seed=seed, n_train=n_train, n_validation=n_validation)


def list_builtin() -> list[str]:
    return [f"builtin/{name}" for name in BUILTIN]


def corpus(
    seed: int = DEFAULT_SEED, n_train: int = DEFAULT_N_TRAIN, n_validation: int = DEFAULT_N_VALIDATION
) -> list[str]:
    """Every rendered input, target and answer choice of every builtin task, prompt and split.

    Duplicates are dropped (first occurrence kept, order stable): the text to train the tiny model's
    sentencepiece tokenizer on.
    """
    seen: dict[str, None] = {}
    for name in BUILTIN:
        task = builtin_task(name, seed=seed, n_train=n_train, n_validation=n_validation)
        for prompt in task.prompts():
            for split in SPLITS:
                for ex in task.load(prompt, split).examples:
                    for text in (ex.input_text, ex.target_text, *ex.choices):
                        if text:
                            seen.setdefault(text, None)
    return list(seen)
