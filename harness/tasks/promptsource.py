"""promptsource datasets as tasks: every ``<dataset>[/<subset>]`` folder of the templates, and the 11
held-out evaluation settings of T0.

A task named by its promptsource folder (``ag_news``, ``adversarial_qa/dbidaf``, ``super_glue/rte``)
has every template of that folder as a prompt; as an evaluation target only the templates with
``answer_choices`` can be scored (rank classification), so :meth:`PromptsourceTask.prompts` lists
those, while :meth:`PromptsourceTask.training_prompts` lists them all (a soft prompt trains on the
target text of any template). Its evaluation split is the catalog's ``eval`` split (``validation``
for a dataset the catalog lacks).

A held-out setting (``rte``, ``anli_r1``, ...; ``harness/data/datasets.yaml`` ``heldout:``) is the
same dataset restricted to T0's evaluation prompts, exactly the templates whose metadata says
``original_task: true``, in file order (Sanh et al. 2022; t-zero's ``evaluation/template_list.py``),
on one split (ANLI: ``dev_r1`` ...).

Rows: :mod:`rospr_harness.tasks.rows` (local rows, a manual download, or ``datasets.load_dataset``). Each
row is checked against the catalog's hub schema, or, for a dataset the catalog lacks, against the
variables its templates read. Rows a template does not apply to (it renders an empty input) are
skipped and counted. Templates t-zero's ``TASK_BLACKLIST`` drops are not training prompts.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import jinja2
from jinja2 import meta

from rospr_harness.tasks import rows as row_sources
from rospr_harness.tasks.base import DataSettings, SplitStatus, TaskError
from rospr_harness.tasks.catalog import DatasetSpec, dataset_spec, heldout_settings
from rospr_harness.tasks.common import content_hash
from rospr_harness.tasks.templates import ENV, Template, find_template, load_templates, templates_path
from rospr.data import Example, UnitData

log = logging.getLogger(__name__)

# t-zero's t0/seqio_tasks/tasks.py TASK_BLACKLIST, the task names it leaves out of every mixture ("tokenize
# to > 1024 tokens" or "broken cached files"); a task name is t-zero's get_task_name(dataset, subset,
# template). In promptsource 0.2.3 none of them names a template of the 38 training datasets (gigaword
# has no 'summarize_' template there); the list stays so that another templates folder is treated alike.
T0_TASK_BLACKLIST = frozenset({
    "hotpot_qa_distractor_Generate_Explanations", "hotpot_qa_fullwiki_Generate_Explanations",
    "hotpot_qa_distractor_Generate_Answer_and_Explanations", "hotpot_qa_fullwiki_Generate_Answer_and_Explanations",
    "hotpot_qa_fullwiki_Generate_Answer", "hotpot_qa_distractor_Generate_Answer",
    "hotpot_qa_distractor_Generate_Title_2", "hotpot_qa_fullwiki_Generate_Title_2",
    "hotpot_qa_fullwiki_Generate_Title_1", "hotpot_qa_distractor_Generate_Title_1",
    "hotpot_qa_distractor_Generate_Question", "hotpot_qa_fullwiki_Generate_Question",
    "tab_fact_tab_fact_tab_fact_3", "tab_fact_tab_fact_tab_fact_2", "tab_fact_tab_fact_tab_fact_1",
    "tab_fact_tab_fact_tab_fact_7", "tab_fact_tab_fact_tab_fact_4", "tab_fact_tab_fact_tab_fact_5",
    "tab_fact_tab_fact_tab_fact_6", "wiki_hop_masked_Choose_Best_Object_Candidate",
    "wiki_hop_masked_Indirect_Question_about_Birthplace_Citizenship_Place_of_Death", "narrativeqa_Template_05",
    "ecthr_cases_alleged_violation_prediction_silver_rationales", "gigaword_summarize_",
})


def t0_task_name(folder: str, template_name: str) -> str:
    """t-zero's task name of (dataset[/subset], template): ``dataset_[subset_]template``, every run of
    characters other than word characters, digits, '.' and '_' replaced by '_'."""
    dataset, _, subset = folder.partition("/")
    return re.sub(r"[^\w\d\._]+", "_", dataset + (f"_{subset}_" if subset else "_") + template_name)


_JINJA_GLOBALS = {"answer_choices", "zip", "enumerate", "range", "loop", "namespace", "dict", "lipsum", "cycler", "joiner"}


def template_fields(templates: list[Template]) -> set[str]:
    """The row fields the templates read (top-level Jinja variables, less promptsource's globals)."""
    fields: set[str] = set()
    for t in templates:
        for source in (t.jinja, t.answer_choices or ""):
            try:
                fields |= meta.find_undeclared_variables(ENV.parse(source))
            except jinja2.TemplateSyntaxError as e:
                raise TaskError(f"template {t.name!r} of {t.source}: not valid Jinja: {e}") from e
    return fields - _JINJA_GLOBALS


class PromptsourceTask:
    """A promptsource dataset folder as a :class:`~rospr_harness.tasks.base.Task`; prompts are template names.

    ``name``: the task's name (the folder, or a held-out setting's name); ``original_only``: only the
    ``original_task: true`` templates (T0's evaluation prompts); ``split``: the default split of
    :meth:`load` (the catalog's eval split when None).
    """

    def __init__(self, folder: str, settings: DataSettings, *, name: str | None = None,
                 original_only: bool = False, split: str | None = None, expected_prompts: int | None = None,
                 truncate: bool = True) -> None:
        self.folder = folder
        self.name = name or folder
        self.settings = settings
        self.original_only = original_only
        self.spec: DatasetSpec | None = dataset_spec(folder)
        self._split = split
        self.expected_prompts = expected_prompts
        self.truncate = truncate
        self._templates: list[Template] | None = None

    @property
    def dataset(self) -> str:
        return self.folder.partition("/")[0]

    @property
    def subset(self) -> str | None:
        return self.folder.partition("/")[2] or None

    # ---- templates -------------------------------------------------------------------------

    def all_templates(self) -> list[Template]:
        """Every template of the folder, in file order (loaded once)."""
        if self._templates is None:
            self._templates = load_templates(self.settings.templates_dir, self.dataset, self.subset)
        return self._templates

    def templates(self) -> list[Template]:
        """The task's prompts as templates: the ``original_task`` ones for a held-out setting, else all."""
        templates = self.all_templates()
        if self.original_only:
            templates = [t for t in templates if t.original_task]
            if self.expected_prompts is not None and len(templates) != self.expected_prompts:
                log.warning("%s: %d evaluation prompts (original_task: true) in %s, T0 used %d", self.name,
                            len(templates), templates_path(self.settings.templates_dir or "<templates>",
                                                           self.dataset, self.subset), self.expected_prompts)
        return templates

    def prompts(self) -> list[str]:
        """The prompts that can be scored as a target: templates with ``answer_choices``."""
        return [t.name for t in self.templates() if t.answer_choices is not None]

    def training_prompts(self) -> list[str]:
        """Every prompt a soft prompt can be trained on (all templates, less t-zero's blacklist)."""
        return [t.name for t in self.templates() if t0_task_name(self.folder, t.name) not in T0_TASK_BLACKLIST]

    def prompt_marks(self) -> dict[str, tuple[str, ...]]:
        """Every template of the task, in file order, marked ``original`` and ``training only``."""
        return {t.name: tuple(mark for mark, on in (("original", t.original_task),
                                                    ("training only", t.answer_choices is None)) if on)
                for t in self.templates()}

    def template(self, prompt: str) -> Template:
        templates = self.all_templates()
        where = templates[0].source if templates else self.folder
        return find_template(self.templates(), prompt, f"task {self.name!r} (prompts of {where})")

    def default_split(self, role: str = "eval") -> str:
        """The split :meth:`load` reads by default: the setting's, else the catalog's ``role`` split."""
        if role == "eval" and self._split:
            return self._split
        if self.spec is not None:
            return self.spec.split(role)
        return {"eval": "validation", "train": "train"}[role]

    # ---- rows ------------------------------------------------------------------------------

    def split_status(self) -> list[SplitStatus]:
        """Per split a run reads (the evaluation split of a held-out setting; else ``train`` and
        ``eval``, those the catalog has): its catalog entry and the row source in force
        (:func:`rospr_harness.tasks.rows.locate`)."""
        spec = self.spec
        roles = ("eval",) if self.original_only else tuple(
            r for r in ("train", "eval") if spec is None or r in spec.splits)
        out = []
        for role in roles:
            split = self.default_split(role)
            src = row_sources.locate(spec, self.folder, split, self.settings)
            out.append(SplitStatus(
                self.name, self.folder, role, split,
                spec.hub_id if spec else self.dataset,
                spec.config if spec else self.subset,
                spec.revision if spec else None,
                src.kind, src.where, src.note, src.kind != "missing",
            ))
        return out

    def rows(self, split: str | None = None, limit: int | None = None) -> tuple[list[dict], str]:
        """The rows of ``split`` (the default split when None), first ``limit``, schema-checked; and
        where they came from."""
        split = split or self.default_split()
        rows, source = row_sources.read(self.spec, self.folder, split, self.settings, limit)
        fields = None if self.spec is not None else template_fields(self.all_templates())
        for i, row in enumerate(rows):
            where = f"{source}: row {i}"
            if self.spec is not None:
                self.spec.check_row(row, where)
            else:
                missing = sorted(f for f in fields if f not in row)
                if missing:
                    raise TaskError(
                        f"{where} lacks field(s) {missing} that the templates of {self.folder} read; "
                        f"rows have {sorted(row)}"
                    )
        return rows, source

    # ---- units -----------------------------------------------------------------------------

    def training_identity(self, prompt: str, split: str | None = None, limit: int | None = None) -> dict | None:
        """See ``Task.training_identity``: the template's text and the rows file (local rows or a manual
        download; the catalog's mapping of their columns is code and data of this package); None for
        rows from the hub."""
        split = split or self.default_split()
        source = row_sources.locate(self.spec, self.folder, split, self.settings)
        if source.kind not in ("local", "synthetic", "manual"):  # rows_kind keeps synthetic rows apart
            return None
        return {"task": self.name, "folder": self.folder, "split": split, "limit": limit, "truncate": self.truncate,
                "template": self.template(prompt).text(), "rows_kind": source.kind, "rows_file": source.where}

    def load(self, prompt: str, split: str | None = None, limit: int | None = None, *,
             training: bool = False) -> UnitData:
        """Render ``prompt`` on ``split``; see ``Task.load``.

        For evaluation, rows the template does not apply to (empty input) are skipped, and so are rows
        whose target is not among the answer choices (a template fault seen in promptsource on real
        rows; counted and logged). For training (``training``), a template without ``answer_choices``
        gives input and target text with no choices, and a target outside the choices is kept as the
        text to learn; rows whose target renders empty are skipped.
        """
        template = self.template(prompt)
        template.check()
        if not training and template.answer_choices is None:
            raise TaskError(
                f"template {prompt!r} of {template.source} has no answer_choices, so it cannot be scored by "
                f"rank classification; the scorable prompts of {self.name}: {self.prompts()}"
            )
        rows, source = self.rows(split, limit)
        examples: list[Example] = []
        skipped = outside = 0
        for index, row in enumerate(rows):
            example = self._example(template, row, index, prompt, f"row {index} of {source}", training)
            if example is None:
                skipped += 1
            elif example is _OUTSIDE:
                skipped += 1
                outside += 1
            else:
                examples.append(example)
        if outside:
            log.warning("%s / %s: %d of %d rows skipped: their target is not among the template's answer "
                        "choices (%s)", self.name, prompt, outside, len(rows), template.source)
        if skipped > outside:
            log.info("%s / %s: %d of %d rows skipped (template does not apply)", self.name, prompt,
                     skipped - outside, len(rows))
        return UnitData(
            task=self.name,
            prompt=prompt,
            examples=examples,
            skipped=skipped,
            source=f"{source} + {template.source}",
            content_hash=content_hash(f"{template.text()}\ntruncate={self.truncate}", rows),
        )

    def _example(self, template: Template, row: dict, index: int, prompt: str, row_name: str,
                 training: bool) -> Example | object | None:
        rendered = template.render(row, truncate=self.truncate, row_name=row_name, target_outside="keep")
        if rendered is None:
            return None
        meta = {"template_id": template.id}
        if rendered.choices is None:  # a generation template: training text only
            if not rendered.target:
                return None
            return Example(task=self.name, prompt=prompt, index=index, input_text=rendered.input_text,
                           choices=(), target_text=rendered.target, meta=meta)
        if not rendered.choices or all(not c for c in rendered.choices):
            raise TaskError(
                f"template {template.name!r} of {template.source}: field 'answer_choices' rendered no choices "
                f"on {row_name}; check the row's fields"
            )
        if rendered.target is not None and rendered.label is None and not training:
            return _OUTSIDE
        return Example(task=self.name, prompt=prompt, index=index, input_text=rendered.input_text,
                       choices=rendered.choices, label=rendered.label, target_text=rendered.target, meta=meta)


_OUTSIDE = object()  # a row whose target is not among its choices (skipped when evaluating)


def promptsource_folders(settings: DataSettings) -> list[str]:
    """Every ``<dataset>[/<subset>]`` folder with a ``templates.yaml`` under the templates folder."""
    from rospr_harness.tasks.templates import default_templates_dir

    root = Path(settings.templates_dir) if settings.templates_dir is not None else default_templates_dir()
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/templates.yaml"))


def heldout_task(name: str, settings: DataSettings) -> PromptsourceTask:
    """The held-out evaluation setting ``name`` (``rte``, ``anli_r1``, ...)."""
    setting = heldout_settings().get(name)
    if setting is None:
        raise TaskError(f"unknown held-out task {name!r}; known: {sorted(heldout_settings())}")
    return PromptsourceTask(setting.folder, settings, name=name, original_only=True, split=setting.split,
                            expected_prompts=setting.n_prompts)
