"""Export where the running environment cannot: in an environment rospr makes for Optimum once.

optimum-onnx (0.1.0, the newest) needs transformers < 4.58, while the core installs beside transformers
5. Rather than stop a run that needs an export, ``export_models`` (``rospr_export.export``) hands the job
to this module when :func:`unable_here` says why it cannot export in process:

- :func:`environment` makes, once, under the cache root (``export-env/<key>``, ``$ROSPR_EXPORT_ENV``), a
  virtual environment over the running one: a ``.pth`` file puts the running environment's
  site-packages after its own, and pip installs into it only ``requirements-isolated.txt`` (transformers
  4.57.6, tokenizers, huggingface-hub, optimum, optimum-onnx; ``--no-deps --require-hashes
  --only-binary :all:``, every file's sha256 pinned). torch, numpy, onnx, rospr itself are the running
  environment's, so the graph is traced from the same code and weights. The key covers the
  requirements, the interpreter and the running environment's paths; the entry is staged and published
  by ``rospr.store`` and reused by every later export. It needs the package registry the first time.
- :func:`export_elsewhere` runs ``python -m rospr_export.isolated ARGS.json`` there: the same
  ``export_models`` (trace, validation against PyTorch at the export tolerance, the sealed manifest), and
  returns what it wrote.

Why this rather than stopping with a command to run: a user on transformers 5 then goes from
``pip install`` to a finished run with the README's commands alone, and the graph is the same export.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import sysconfig
import time
from importlib import metadata, util
from pathlib import Path

from rospr.cachedirs import cache_path
from rospr.canonical import sha256_file, sha256_text
from rospr.errors import RosprError
from rospr.store import ContentStore, StoreError

log = logging.getLogger(__name__)

REQUIREMENTS = Path(__file__).with_name("requirements-isolated.txt")
CHILD = "ROSPR_EXPORT_CHILD"  # set in the child: it exports in process whatever it finds
NO_INSTALL = "ROSPR_EXPORT_ENV_OFFLINE"  # set: an export environment not made yet is refused, not installed
ENV_FORMAT, ENV_VERSION = "rospr-export-env", 1
OPTIMUM_MAX = (4, 58)


class ExportEnvironmentError(RosprError, RuntimeError):
    """The export environment could not be made or the export in it failed; the message says why and the fix."""


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def unable_here() -> str | None:
    """Why this environment cannot run Optimum's export (``None``: it can): transformers too new for
    optimum-onnx, or optimum-onnx missing. Imports nothing heavy."""
    if os.environ.get(CHILD):
        return None
    try:
        version = metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return "transformers is not installed"
    if _version_tuple(version) >= OPTIMUM_MAX:
        return f"transformers {version} is installed and optimum-onnx needs < 4.58"
    if util.find_spec("optimum") is None or util.find_spec("optimum.exporters.onnx") is None:
        return "optimum-onnx is not installed (pip install 'rospr[export]')"
    return None


def _parent_paths() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def env_key() -> str:
    """What the environment is a function of: the pinned requirements, this interpreter, the environment
    it overlays."""
    text = json.dumps({"requirements": sha256_file(REQUIREMENTS),
                       "python": sys.version, "base": sys.base_prefix, "over": _parent_paths()}, sort_keys=True)
    return sha256_text(text)[:16]


def _store() -> ContentStore:
    return ContentStore(cache_path("export-env"), ENV_FORMAT, ENV_VERSION, fix="it is made again")


def _python(folder: Path) -> Path:
    return folder / "venv" / "bin" / "python"


def _check(folder: Path) -> Path:
    _store().verify_sealed(folder)
    if not _python(folder).exists():
        raise StoreError(f"{_python(folder)}: missing; the environment is made again")
    return folder


def environment() -> Path:
    """The export environment's interpreter, made on first use (see the module docstring). Refuses
    (``ExportEnvironmentError``) when pip cannot install the pinned requirements (no registry, a file
    with another sha256), naming pip's reason and the ways out."""
    store, key = _store(), env_key()
    found = store.open(key, verify=_check)
    if found is not None:
        return _python(found)
    if os.environ.get(NO_INSTALL):
        raise ExportEnvironmentError(
            f"this environment cannot export and {store.path(key)} does not exist yet; ${NO_INSTALL} is set, so "
            "nothing is installed: run `rospr export-env` first (it needs the package registry once)")
    stage = store.stage(key)
    try:
        venv = stage.path / "venv"
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "create a virtual environment")
        purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in _parent_paths())
        Path(purelib, "zz_rospr_running_environment.pth").write_text(lines, encoding="utf-8")
        log.info("making the export environment %s (transformers 4.57 + optimum-onnx over this one; once)", stage.dest)
        _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
              "--require-hashes", "--only-binary", ":all:", "--disable-pip-version-check", "--no-input",
              "-r", str(REQUIREMENTS)], "install the pinned export requirements")
        probe = "import optimum.exporters.onnx, transformers; print(transformers.__version__)"
        version = _run([str(venv / "bin" / "python"), "-c", probe], "import Optimum in the export environment").strip()
        stage.write_json("env.json", {"transformers": version, "over": _parent_paths(), "python": sys.version})
        entry = store.publish(stage, {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    finally:
        store.drop(stage)
    return _python(entry)


def _run(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportEnvironmentError(f"cannot {what}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise ExportEnvironmentError(
            f"cannot {what} (exit {proc.returncode}):\n{tail}\nfix: run once where the package registry is "
            f"reachable (rospr makes {cache_path('export-env')} then reuses it), or export in an environment with "
            "transformers < 4.58: pip install 'rospr[export]' there, then `rospr export --model M --out DIR` with the "
            "same $ROSPR_HOME")
    return proc.stdout


def export_elsewhere(why: str, kwargs: dict):
    """Run ``export_models(**kwargs)`` in the export environment; returns its ``ExportResult``. Refuses
    (``ExportEnvironmentError``) what the environment or the child refused, with the child's message."""
    from rospr_export.export import ExportResult
    from rospr_export.validate import Validation

    python = environment()
    log.info("exporting in rospr's export environment (%s)", why)
    args = {k: (str(v) if isinstance(v, Path) else v) for k, v in kwargs.items()}
    env = {**os.environ, CHILD: "1"}
    proc = subprocess.run([str(python), "-m", "rospr_export.isolated", json.dumps(args)], env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        refused = _refusal(proc.stderr)
        if refused is not None:  # one of ours (a validation that failed, a bad checkpoint): the same error here
            raise refused
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise ExportEnvironmentError(f"the export in {python.parent.parent} failed (exit {proc.returncode}):\n{tail}")
    out = Path(kwargs["out_dir"])
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    validations = [Validation(**g["validation"]) for g in manifest["graphs"].values()]
    return ExportResult(out, manifest, validations)


REFUSAL = "rospr-export-refusal: "


def _refusal(stderr: str) -> Exception | None:
    """The error the child refused with, as the same class (one of rospr's), from its last stderr line."""
    import importlib

    lines = [line for line in stderr.splitlines() if line.startswith(REFUSAL)]
    if not lines:
        return None
    try:
        info = json.loads(lines[-1][len(REFUSAL):])
        cls = getattr(importlib.import_module(info["module"]), info["class"])
        if isinstance(cls, type) and issubclass(cls, RosprError):
            return cls(info["message"])
    except (ValueError, KeyError, ImportError, AttributeError, TypeError):
        pass
    return None


def main(argv: list[str]) -> int:
    """The child: ``export_models(**json.loads(argv[0]))`` in process; a refusal of ours is written as the
    last stderr line (``REFUSAL``) for the parent to raise as the same error."""
    from rospr_export.export import export_models

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        export_models(**json.loads(argv[0]))
    except RosprError as exc:
        info = {"module": type(exc).__module__, "class": type(exc).__name__, "message": str(exc)}
        print(REFUSAL + json.dumps(info), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
