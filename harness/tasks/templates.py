"""promptsource templates, read and rendered without the ``promptsource`` package.

A promptsource ``templates.yaml`` holds one ``!Template`` per hard prompt, each with a Jinja body
(``|||`` separates the input from the target), an optional ``answer_choices`` Jinja expression
(``|||`` separates the choices) and ``!TemplateMetadata`` (``original_task``, ``choices_in_prompt``,
``metrics``, ...). This module reads those files with a YAML *safe* loader (the two tags get their
own constructors; nothing else is constructed) and renders them the way promptsource 0.2.3 does:

- every ``}}`` of the body becomes ``| string | truncate(2048) }}`` (promptsource's default
  ``truncate=True``; ``answer_choices`` is not truncated);
- ``|||`` inside string fields of the row is protected while rendering, so a row cannot add a
  separator;
- ``answer_choices`` is rendered first, split on ``|||`` and each choice stripped; it is visible to
  the body as the list ``answer_choices``;
- the body is split on ``|||`` and each part stripped: part 0 is the input, part 1 the target.

Differences from promptsource, on purpose:

- rendering uses :class:`jinja2.sandbox.SandboxedEnvironment` (template files are data, not code)
  with :class:`jinja2.StrictUndefined`: a field the row lacks is an error naming the file and
  template, not a silent empty string;
- the ``choice`` filter (``random.choice`` in promptsource, used by e.g. HellaSwag's "Randomized
  prompts template") draws from a :class:`random.Random` seeded with the template id and the row's
  content, so a row always renders the same way; ``most_frequent`` behaves as in promptsource;
  ``zip`` is a global as in promptsource (0.2.3 has no ``enumerate``; a template calling it is
  refused by both); promptsource's ``highlight`` filter (for its UI) is not offered.

tests/unit/harness/tasks/test_templates_parity.py checks all of this against promptsource 0.2.3's own code.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import yaml
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import SandboxedEnvironment

from rospr_harness.tasks.base import TaskError
from rospr.canonical import derive_seed, row_text
from rospr.parsing import BudgetLoader, load_yaml, read_text
from rospr.data import Example

log = logging.getLogger(__name__)

SEPARATOR = "|||"
TEXT_VAR_LENGTH = 2048  # promptsource's truncation of every rendered variable
_PIPE_PROTECTOR = "3ed2dface8203c4c9dfb1a5dc58e41e0"  # promptsource's placeholder for "|||" in rows
_RNG_KEY = "__rospr_choice_rng__"  # render-context variable holding the ``choice`` filter's RNG


# --------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------

class TemplateLoader(BudgetLoader):
    """The budgeted safe loader (``rospr.parsing``: each key once, so neither a template id nor a
    ``jinja:`` given twice is dropped silently; bounded depth and alias expansion) that also reads
    promptsource's ``!Template`` / ``!TemplateMetadata``.

    Both tags are read as plain mappings; no Python object is constructed from the file.
    """


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, f"expected a mapping after tag {node.tag}", node.start_mark
        )
    return loader.construct_mapping(node, deep=True)


TemplateLoader.add_constructor("!Template", _construct_mapping)
TemplateLoader.add_constructor("!TemplateMetadata", _construct_mapping)


# --------------------------------------------------------------------------------------------
# Jinja environment
# --------------------------------------------------------------------------------------------


@jinja2.pass_context
def _choice(context: jinja2.runtime.Context, seq: Any) -> Any:
    """promptsource's ``choice`` filter, made deterministic (see the module docstring)."""
    items = list(seq)
    if not items:
        raise jinja2.exceptions.UndefinedError("choice of an empty sequence")
    rng = context.get(_RNG_KEY)
    if not isinstance(rng, random.Random):  # rendered outside Template.render: a fixed seed
        rng = random.Random(0)
    return items[rng.randrange(len(items))]


def _most_frequent(items: Any) -> list | None:
    """promptsource's ``most_frequent``: the items that occur most often, in first-seen order."""
    if not items:
        return None
    counts = Counter(items).most_common()
    top = counts[0][1]
    return [item for item, count in counts if count == top]


# The work one rendering of one field on one row may do. Template files are data: without a bound,
# two nested `range(100000)` loops (the sandbox caps a range, not the work) render for hours.
RENDER_STEPS = 1_000_000  # loop iterations, calls, attribute / item lookups and operators
RENDER_SIZE = 1_000_000  # characters (or items) of any one value built, and of the output
_MAX_INT_BITS = 100_000  # bits of an integer a template computes
_WIDTH_FILTERS = ("center", "indent", "wordwrap", "truncate")
_WIDTH_METHODS = ("center", "ljust", "rjust", "zfill", "expandtabs")
_FORMAT_WIDTHS = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d+))?|\{[^{}]*?:[^{}\d]*(\d+)(?:\.(\d+))?[^{}]*\}")


class _OverBudget(Exception):
    """A rendering went past ``RENDER_STEPS`` or ``RENDER_SIZE`` (turned into a ``TaskError``)."""


class _Budget:
    def __init__(self, steps: int, size: int) -> None:
        self.left, self.steps, self.size = steps, steps, size

    def step(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise _OverBudget(f"took more than {self.steps:,} steps (loop iterations, calls, lookups)")

    def sized(self, value: Any) -> Any:
        if isinstance(value, (str, bytes, list, tuple, dict, set)) and len(value) > self.size:
            raise _OverBudget(f"built a value of {len(value):,} characters or items (the most is {self.size:,})")
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _MAX_INT_BITS:
            raise _OverBudget(f"computed an integer of {value.bit_length():,} bits (the most is {_MAX_INT_BITS:,})")
        return value

    def charge(self, *values: Any) -> None:
        """One step, and the work of going over ``values``: an item of a collection or 64
        characters of a string is a step (a filter or method walks what it is given)."""
        n = 1
        for v in values:
            if isinstance(v, (str, bytes)):
                n += len(v) // 64
            elif isinstance(v, (list, tuple, dict, set, range)):
                n += len(v)
        self.step(n)

    def width(self, n: Any) -> None:
        if isinstance(n, int) and n > self.size:
            raise _OverBudget(f"asked for a width of {n:,} characters (the most is {self.size:,})")

    def format_widths(self, text: Any) -> None:
        if isinstance(text, str):
            for m in _FORMAT_WIDTHS.finditer(text):
                for digits in m.groups():
                    if digits:
                        self.width(int(digits))


# No budget outside Template._render (ENV used directly, e.g. by tests): a fresh one per call then.
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("rospr_render_budget", default=None)


def _budget() -> _Budget:
    return _BUDGET.get() or _Budget(RENDER_STEPS, RENDER_SIZE)


def _each(iterable: Any):
    """What a ``{% for %}`` loop iterates: ``iterable``, one budget step per item."""
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


class _BudgetedCode(CodeGenerator):
    """Compiles every ``{% for %}`` over ``_each`` and every ``~`` concatenation through a size check."""

    def visit_Template(self, node, frame=None):
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_rospr_each", [], [], None, None, lineno=loop.iter.lineno)
        return super().visit_Template(node, frame)

    def visit_Concat(self, node, frame):
        self.write("environment.rospr_sized(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BudgetedSandbox(SandboxedEnvironment):
    """The sandbox, with a budget of work per rendering (``RENDER_STEPS``, ``RENDER_SIZE``): each
    loop item, call, lookup and arithmetic operator is a step; a value or width larger than the size
    is refused before it is built where its size is known in advance (``*``, ``**``, widths), right
    after otherwise."""

    code_generator_class = _BudgetedCode
    intercepted_binops = frozenset({"*", "**", "+", "%", "//", "/", "-"})

    @staticmethod
    def rospr_sized(value: Any) -> Any:
        return _budget().sized(value)

    def call_binop(self, context, operator, left, right):
        budget = _budget()
        budget.charge(left, right)
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > budget.size:
                    raise _OverBudget(f"would build a value of {len(seq) * n:,} items (the most is {budget.size:,})")
            if ints and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                raise _OverBudget(f"would compute an integer of over {_MAX_INT_BITS:,} bits")
        elif operator == "**" and ints and right > 0 and max(left.bit_length() - 1, 0) * right > _MAX_INT_BITS:
            raise _OverBudget(f"would compute an integer of over {_MAX_INT_BITS:,} bits ({left} ** {right})")
        elif operator == "%":
            budget.format_widths(left)
        return budget.sized(super().call_binop(context, operator, left, right))

    def getattr(self, obj, attribute):
        _budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        _budget().step()
        return super().getitem(obj, argument)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - the sandbox's own signature
        budget = _budget()
        owner = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)  # str.format comes wrapped
        budget.charge(owner if isinstance(owner, (str, list, tuple, dict)) else None, *args, *kwargs.values())
        if isinstance(owner, str):
            name = getattr(__obj, "__name__", "")
            if name in _WIDTH_METHODS:
                for a in (*args, *kwargs.values()):
                    budget.width(a)
            elif name in ("format", "format_map"):
                budget.format_widths(owner)
        return budget.sized(SandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs))


def _budgeted_filter(name: str, func):
    """A filter whose result (and, for width filters, whose width) counts against the budget."""

    @functools.wraps(func)
    def filtered(*args, **kwargs):
        budget = _budget()
        budget.charge(*args, *kwargs.values())
        if name in _WIDTH_FILTERS:
            for a in (*args[1:], *kwargs.values()):
                budget.width(a)
        elif name == "format":
            for a in args[:2]:
                budget.format_widths(a)
        return budget.sized(func(*args, **kwargs))

    return filtered


def _make_env() -> SandboxedEnvironment:
    env = _BudgetedSandbox(loader=jinja2.BaseLoader(), undefined=jinja2.StrictUndefined)
    env.globals.update(zip=zip)  # promptsource 0.2.3's only global
    env.filters["choice"] = _choice
    env.filters["most_frequent"] = _most_frequent
    env.filters.update({name: _budgeted_filter(name, f) for name, f in env.filters.items()})
    env.filters["_rospr_each"] = _each
    return env


ENV = _make_env()


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    """One row rendered by a template.

    ``target`` is ``None`` when the template has no target part or it rendered empty (unlabelled
    rows, e.g. ``label == -1``). ``choices`` is ``None`` for templates without ``answer_choices``.
    ``label`` is the index of ``target`` among ``choices`` when both are set.
    """

    input_text: str
    target: str | None
    choices: tuple[str, ...] | None
    label: int | None


@dataclass(frozen=True)
class Template:
    """A promptsource template.

    ``jinja`` is the body (input ``|||`` target); ``answer_choices`` the choices expression or
    ``None``; ``metadata`` the ``!TemplateMetadata`` mapping (``original_task``,
    ``choices_in_prompt``, ``metrics``, ...); ``source`` the file it came from (for errors).
    """

    id: str
    name: str
    jinja: str
    answer_choices: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    reference: str = ""
    source: str = ""

    # ---- metadata --------------------------------------------------------------------------

    @property
    def original_task(self) -> bool:
        return bool(self.metadata.get("original_task"))

    @property
    def choices_in_prompt(self) -> bool:
        return bool(self.metadata.get("choices_in_prompt"))

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("metrics") or ())

    def text(self) -> str:
        """The template's full text (body and choices), e.g. for content hashes."""
        return f"{self.jinja}\n{SEPARATOR * 2}\n{self.answer_choices or ''}"

    # ---- compilation -----------------------------------------------------------------------

    def _where(self) -> str:
        return f"template {self.name!r} (id {self.id}) of {self.source or '<memory>'}"

    def _compiled(self, truncate: bool) -> tuple[jinja2.Template, jinja2.Template | None]:
        key = (self.jinja, self.answer_choices, truncate)
        cached = _COMPILED.get(key)
        if cached is not None:
            return cached
        body = self.jinja
        if truncate:
            body = body.replace("}}", f" | string | truncate({TEXT_VAR_LENGTH}) }}}}")
        try:
            compiled_body = ENV.from_string(body)
        except jinja2.TemplateError as e:
            raise TaskError(
                f"{self._where()}: field 'jinja' is not valid Jinja: {e}; fix the template text"
            ) from e
        compiled_choices = None
        if self.answer_choices is not None:
            try:
                compiled_choices = ENV.from_string(self.answer_choices)
            except jinja2.TemplateError as e:
                raise TaskError(
                    f"{self._where()}: field 'answer_choices' is not valid Jinja: {e}; fix the "
                    "choices expression"
                ) from e
        _COMPILED[key] = (compiled_body, compiled_choices)
        return compiled_body, compiled_choices

    def check(self) -> None:
        """Compile the body and the choices; raise :class:`TaskError` on a Jinja syntax error."""
        self._compiled(True)

    # ---- rendering -------------------------------------------------------------------------

    def _context(self, row: Mapping[str, Any], row_name: str) -> dict[str, Any]:
        if "answer_choices" in row:
            raise TaskError(
                f"{self._where()}: {row_name} has a field named 'answer_choices', which templates "
                "reserve; rename the field"
            )
        context = {
            key: value.replace(SEPARATOR, _PIPE_PROTECTOR) if isinstance(value, str) else value
            for key, value in row.items()
        }
        context[_RNG_KEY] = random.Random(_row_seed(self.id, row))
        return context

    def _render(self, compiled: jinja2.Template, context: dict, what: str, row_name: str) -> str:
        budget = _Budget(RENDER_STEPS, RENDER_SIZE)
        token = _BUDGET.set(budget)
        try:
            parts, size = [], 0
            for piece in compiled.generate(context):
                size += len(piece)
                if size > budget.size:
                    raise _OverBudget(f"rendered more than {budget.size:,} characters")
                parts.append(piece)
            return "".join(parts)
        except _OverBudget as e:
            raise TaskError(
                f"{self._where()}: field {what!r} {e} on {row_name}, past the work one row may take "
                f"(rospr_harness.tasks.templates.RENDER_STEPS / RENDER_SIZE); simplify the template's loops"
            ) from None
        except jinja2.UndefinedError as e:
            raise TaskError(
                f"{self._where()}: field {what!r} uses something {row_name} does not have: {e}; "
                f"row fields are {sorted(k for k in context if k != _RNG_KEY)}; check that the "
                "rows follow the dataset's schema"
            ) from e
        except jinja2.TemplateError as e:
            raise TaskError(f"{self._where()}: field {what!r} failed on {row_name}: {e}") from e
        except TaskError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever a template's code raises on a row becomes one clear error
            raise TaskError(
                f"{self._where()}: field {what!r} failed on {row_name}: {type(e).__name__}: {e}; "
                "check that the rows follow the dataset's schema"
            ) from e
        finally:
            _BUDGET.reset(token)

    def get_answer_choices(self, row: Mapping[str, Any], row_name: str = "the row") -> list[str] | None:
        """The rendered answer choices of ``row`` (split on ``|||``, stripped), or ``None``."""
        _, compiled = self._compiled(True)
        if compiled is None:
            return None
        text = self._render(compiled, self._context(row, row_name), "answer_choices", row_name)
        return [_unprotect(part.strip()) for part in text.split(SEPARATOR)]

    def apply(
        self, row: Mapping[str, Any], *, truncate: bool = True, row_name: str = "the row"
    ) -> list[str]:
        """promptsource's ``Template.apply``: the rendered parts (input, target, ...), stripped."""
        body, _ = self._compiled(truncate)
        context = self._context(row, row_name)
        context["answer_choices"] = self.get_answer_choices(row, row_name)
        text = self._render(body, context, "jinja", row_name)
        return [_unprotect(part).strip() for part in text.split(SEPARATOR)]

    def render(
        self, row: Mapping[str, Any], *, truncate: bool = True, row_name: str = "the row",
        target_outside: str = "error",
    ) -> Rendered | None:
        """Render ``row``: input, target, choices and the target's index among the choices.

        Returns ``None`` when the input renders empty (the template does not apply to the row).
        Refuses (``TaskError``, naming the file, template and ``row_name``): Jinja syntax errors,
        fields the row lacks, more than one ``|||`` in the output, and a non-empty target that is
        not one of the choices (with ``target_outside="keep"``: returned with ``label`` None; some
        promptsource templates do this on real rows, e.g. wiqa's
        'which_of_the_following_is_the_supposed_perturbation' lacks the choice its INPARA_EFFECT
        rows target).
        """
        parts = self.apply(row, truncate=truncate, row_name=row_name)
        if len(parts) > 2:
            raise TaskError(
                f"{self._where()}: field 'jinja' rendered {len(parts)} parts on {row_name}; a "
                "template must have exactly one '|||' (input ||| target)"
            )
        input_text = parts[0]
        if not input_text:
            return None
        target = parts[1] if len(parts) == 2 and parts[1] else None
        choices_list = self.get_answer_choices(row, row_name)
        choices = tuple(choices_list) if choices_list is not None else None
        if target is None and len(parts) == 2 and choices is not None and "" in choices:
            # an empty target that is one of the choices is a label, not the absence of one
            raise TaskError(
                f"{self._where()}: the target of {row_name} is answer choice {choices.index('')}, which rendered "
                f"empty (choices {list(choices)}); an empty choice cannot be scored: check the row's fields "
                "that the template's 'answer_choices' reads")
        label = None
        if target is not None and choices is not None:
            if target not in choices and target_outside == "keep":  # the caller decides (label None)
                return Rendered(input_text=input_text, target=target, choices=choices, label=None)
            if target not in choices:
                raise TaskError(
                    f"{self._where()}: the target {target!r} of {row_name} is not among its answer "
                    f"choices {list(choices)}; check the row's label field and the template's "
                    "'answer_choices'"
                )
            label = choices.index(target)
        return Rendered(input_text=input_text, target=target, choices=choices, label=label)

    def example(
        self,
        row: Mapping[str, Any],
        *,
        task: str,
        index: int,
        prompt: str | None = None,
        truncate: bool = True,
        meta: Mapping[str, Any] | None = None,
        row_name: str | None = None,
    ) -> Example | None:
        """Render ``row`` as a rank-classification :class:`Example` (``None``: does not apply).

        Refuses (``TaskError``) a template without ``answer_choices`` or a row whose choices render
        empty, as well as everything :meth:`render` refuses.
        """
        row_name = row_name or f"row {index}"
        if self.answer_choices is None:
            raise TaskError(
                f"{self._where()}: field 'answer_choices' is missing, so it cannot be scored by "
                "rank classification; use a template with answer choices"
            )
        rendered = self.render(row, truncate=truncate, row_name=row_name)
        if rendered is None:
            return None
        if not rendered.choices or all(not c for c in rendered.choices):
            raise TaskError(
                f"{self._where()}: field 'answer_choices' rendered no choices on {row_name}; check "
                "the row's fields"
            )
        return Example(
            task=task,
            prompt=prompt or self.name,
            index=index,
            input_text=rendered.input_text,
            choices=rendered.choices,
            label=rendered.label,
            target_text=rendered.target,
            meta={"template_id": self.id, **(meta or {})},
        )


_COMPILED: dict[tuple, tuple[jinja2.Template, jinja2.Template | None]] = {}


def _unprotect(text: str) -> str:
    return text.replace(_PIPE_PROTECTOR, SEPARATOR)


def _row_seed(template_id: str, row: Mapping[str, Any]) -> int:
    return derive_seed(template_id, row_text(dict(row)), sep="\n")


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def default_templates_dir() -> Path:
    """promptsource 0.2.3's ``templates/`` folder from the data cache, fetched on first use.

    The folder comes from the first source that has promptsource 0.2.3's templates (the registry's
    sdist, then the repository at v0.2.3; :mod:`rospr_harness.tasks.fetch`), each file checked
    against its committed sha256; the first call without a cached copy downloads it (about 230 kB).
    Refuses (``TaskError``) when it is not cached and cannot be fetched, saying how to provide
    templates instead.
    """
    from rospr_harness.tasks import fetch as fetching

    found = fetching.cached("templates")
    if found is not None:
        return found
    log.info(
        "no templates_dir configured and no cached promptsource templates: fetching promptsource "
        "0.2.3 into %s", fetching.data_cache_dir()
    )
    try:
        return fetching.fetch("templates")
    except TaskError as e:
        raise TaskError(
            f"no promptsource templates folder: none configured, and fetching the default failed: {e}\n"
            "fix: run `rospr data fetch templates` where the package registry is reachable (or "
            "`rospr data fetch templates --from PATH` with a copy you have), or set "
            "data.templates_dir to a folder of <dataset>[/<subset>]/templates.yaml, or data.data_dir "
            "(or $ROSPR_DATA_DIR) to a root with promptsource/templates/ inside"
        ) from e


def templates_path(templates_dir: str | Path, dataset: str, subset: str | None = None) -> Path:
    """``<templates_dir>/<dataset>[/<subset>]/templates.yaml``."""
    path = Path(templates_dir) / dataset
    if subset:
        path = path / subset
    return path / "templates.yaml"


def load_templates_file(path: str | Path) -> list[Template]:
    """All templates of one ``templates.yaml``, in file order.

    Refuses (``TaskError`` naming the file and field): a missing or unreadable file, YAML errors,
    no ``templates`` mapping, templates without a string ``name`` / ``jinja``, and two templates
    of the same ``name`` (a prompt is chosen by name: the second could never be scored).
    """
    path = Path(path)
    fix = "fix or re-fetch the file (rospr data fetch templates)"
    try:
        text = read_text(path, TaskError, fix)
    except FileNotFoundError as e:
        raise TaskError(f"{path}: templates file not found") from e
    except OSError as e:
        raise TaskError(f"{path}: cannot read templates file: {e}") from e
    data = load_yaml(text, str(path), TaskError, fix, loader=TemplateLoader)
    if not isinstance(data, dict) or not isinstance(data.get("templates"), dict):
        raise TaskError(
            f"{path}: field 'templates' is missing or not a mapping of id -> !Template; check the file"
        )
    out: list[Template] = []
    named: dict[str, str] = {}  # name -> the key of the template that has it
    for key, raw in data["templates"].items():
        if not isinstance(raw, dict):
            raise TaskError(f"{path}: field 'templates.{key}' is not a !Template mapping")
        for name in ("name", "jinja"):
            if not isinstance(raw.get(name), str):
                raise TaskError(f"{path}: field 'templates.{key}.{name}' is missing or not a string")
        choices = raw.get("answer_choices")
        if choices is not None and not isinstance(choices, str):
            raise TaskError(
                f"{path}: field 'templates.{key}.answer_choices' must be a string or null, "
                f"got {type(choices).__name__}"
            )
        # A prompt is chosen by name: a second template of the same name could never be scored.
        if raw["name"] in named:
            raise TaskError(
                f"{path}: field 'templates.{key}.name' is {raw['name']!r}, the name of 'templates.{named[raw['name']]}' "
                "too; prompts are chosen by name, so rename one of the two"
            )
        named[raw["name"]] = str(key)
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise TaskError(f"{path}: field 'templates.{key}.metadata' is not a !TemplateMetadata mapping")
        out.append(
            Template(
                id=str(raw.get("id") or key),
                name=raw["name"],
                jinja=raw["jinja"],
                answer_choices=choices,
                metadata=dict(metadata),
                reference=str(raw.get("reference") or ""),
                source=str(path),
            )
        )
    log.debug("read %d templates from %s", len(out), path)
    return out


def load_templates(
    templates_dir: str | Path | None, dataset: str, subset: str | None = None
) -> list[Template]:
    """The templates of ``dataset`` (``subset``), in file order.

    ``templates_dir`` is a promptsource ``templates/`` folder (``None``: :func:`default_templates_dir`).
    Refuses (``TaskError``) a missing file, naming the path it expected.
    """
    root = Path(templates_dir) if templates_dir is not None else default_templates_dir()
    path = templates_path(root, dataset, subset)
    if not path.is_file():
        raise TaskError(
            f"no templates for dataset {dataset!r}"
            + (f" subset {subset!r}" if subset else "")
            + f": expected {path} (layout <templates_dir>/<dataset>[/<subset>]/templates.yaml); "
            "check the dataset/subset names and the templates_dir setting"
        )
    return load_templates_file(path)


def find_template(templates: Sequence[Template], name: str, where: str) -> Template:
    """The template called ``name``; ``TaskError`` listing the available names otherwise."""
    for template in templates:
        if template.name == name:
            return template
    raise TaskError(
        f"{where}: unknown prompt {name!r}; available prompts: {[t.name for t in templates]}"
    )
