"""The tests mirror the package: each module has a test module that imports it, named after it (tests/README.md).

The naming rule (`test_name`): ``easytransfer/<...>/<stem>.py`` is tested in ``tests/test_<stem>.py``; a module of a
task folder in ``tests/test_<task>_<stem>.py`` and a module of ``cli/`` in ``tests/test_cli_<stem>.py`` (their
stems, ``data``, ``model``, ``learner``, ``training`` ..., repeat); a package's ``__init__.py`` in
``tests/test_<package>.py``. "Imports it" counts ``import easytransfer.x.y``, ``from easytransfer.x import y``
and public names (``from easytransfer import ImageData`` counts for ``data/loaders.py``, through `PUBLIC_NAMES`
and the packages' re-exports), anywhere in a test module.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

import pytest

import easytransfer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "easytransfer"
TESTS = ROOT / "tests"

# Modules no test imports yet: each one should get a tests/test_<name>.py. The list may only shrink: a module
# that gains a test must leave it (the test below says so). Counted by `untested_modules` on 2026-12-07: 25 on main at
# 76e2561, 12 after the task contract and the tests of choices, paths, arrays, log, report, spec, matchers, datasets,
# progress, version, cli.arguments, cli.outputs and the classification config and heads.
NOT_YET_TESTED = {
    "easytransfer.cli.__main__",  # `python -m easytransfer.cli`; test_wheel runs the installed command
    "easytransfer.cli.catalog",  # run through cli.main(['models' | 'describe', ...]) in test_cli, never imported
    "easytransfer.cli.demo",  # run through cli.main(['demo']) in test_recipe, never imported
    "easytransfer.cli.deployment",  # run through cli.main(['evaluate' | 'predict' | 'export', ...]), never imported
    "easytransfer.cli.training",  # run through cli.main(['train', ...]) in test_cli_training, never imported
    "easytransfer.models.backends.torchvision",  # reached through create_model('tv:...') in test_backends
    "easytransfer.quiet_fastai",  # imported first by every stage package; nothing of its own to test
    "easytransfer.tasks.classification.uncertainty",  # reached through learn.calibrate / conformal in test_uncertainty
    "easytransfer.train.head_loop",  # reached through fit_frozen(cache=True) in test_features
    "easytransfer.train.rank_trainer",  # reached through learn.distributed() in test_distributed
}

# Test modules that test something other than one module of the package, and why.
CROSS_CUTTING = {
    "test_task_contract": "every registered task, through the registry (tests/task_data.py gives their data)",
    "test_layout": "this file: the tests' own layout",
    "test_architecture_doc": "docs/architecture.md equals what tools/architecture.py writes",
    "test_docs_site": "the mkdocs site under docs/",
    "test_notebooks": "the notebooks in nbs/ and the tools/make_*_notebook.py generators",
    "test_course": "the course in nbs/course/ (tools/make_course.py)",
    "test_tiny_clip": "the tests/assets/tiny_clip asset and tools/train_tiny_clip.py that makes it",
    "test_wheel": "the built wheel in a fresh environment",
    "test_import_graph": "the package's import graph: no shared module imports a task, none branches on one",
    "test_task_cli": "every registered task's command-line module (tasks/<task>/cli.py) and tasks/command_line.py",
    "test_encoder_families": "the encoder-family contract every dense backbone family passes (backends' features)",
    "test_instance": "instance segmentation (Mask R-CNN) across the detection task's data, masks, model, "
                     "interpretation and predictor, and evaluate/instance_masks.py (issue 27)",
    "test_detection_deploy": "deploying detectors across tasks/detection/tta.py, export.py, the predictor and "
                             "the command line's export: flip TTA, ONNX / TorchScript parity, ONNX Runtime passes",
}

# Test modules other branches are changing now (the learner split, the predictor / CLI rewrite, the dense-task
# backends); rename or split them onto the rule once those land.
CHANGED_ELSEWHERE = {
    "test_training": "train/learner.py and train/callbacks.py (fit_gradual, early stopping, lr_find ...)",
    "test_recipe": "end to end on real weights: the README's recipe and the demo",
    "test_inference": "tasks/loading.py, deploy/predictor.py, deploy/convert.py",
    "test_interpret": "tasks/classification/interpretation.py and evaluate/html_report.py",
    "test_families": "models/factory.py over every architecture family",
    "test_uncertainty": "tasks/classification/uncertainty.py (test_classification_uncertainty by the rule)",
}

# Tests moved out of history-named files whose home is a test module other branches are changing; append each
# to its home once those land: test_<home>_to_merge.py -> test_<home>.py.
TO_MERGE: dict[str, str] = {}  # test modules waiting to be appended to their home (none now)


@cache
def package_modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def test_name(module: str) -> str:
    """The test module's name for a package module, by the rule of tests/README.md.

    >>> test_name("easytransfer.data.checks"), test_name("easytransfer.tasks.segmentation.data")
    ('test_checks', 'test_segmentation_data')
    >>> test_name("easytransfer.cli.training"), test_name("easytransfer.models.backends"), test_name("easytransfer")
    ('test_cli_training', 'test_backends', 'test_easytransfer')
    """
    parts = module.split(".")[1:]
    if not parts:
        return "test_easytransfer"
    if parts[0] == "tasks" and len(parts) == 3 or parts[0] == "cli" and len(parts) == 2:
        return "test_" + "_".join(parts[-2:])
    return "test_" + parts[-1]


test_name.__test__ = False  # a helper, not a test


def is_module(dotted: str) -> bool:
    return dotted in package_modules()


@cache
def reexports(package: str) -> dict[str, str]:
    """The names a package's ``__init__.py`` imports from its modules: name -> module."""
    if package == "easytransfer":  # imported on first use (PEP 562)
        return {name: "easytransfer" + module for name, module in easytransfer.PUBLIC_NAMES.items()}
    path = package_modules().get(package)
    if path is None or path.name != "__init__.py":
        return {}
    names = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            source = f"{package}.{node.module}" if node.module else package
            for alias in node.names:
                names[alias.asname or alias.name] = source
    return names


def resolve(package: str, name: str) -> str | None:
    """The module `name` imported from `package` stands for (a submodule, or where a re-exported name lives)."""
    if is_module(f"{package}.{name}"):
        return f"{package}.{name}"
    source = reexports(package).get(name)
    if source is None:
        return None
    return resolve(*source.rsplit(".", 1)) or source if not is_module(source) else source


def imported_modules(path: Path) -> set[str]:
    """The package modules a test file imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "easytransfer" or node.module.startswith("easytransfer."):
                parts = node.module.split(".")
                found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
                found |= {m for alias in node.names if (m := resolve(node.module, alias.name))}
    return {m for m in found if is_module(m)}


def untested_modules(tests: Path = TESTS) -> set[str]:
    """Package modules no test module under `tests` imports."""
    covered = set().union(*(imported_modules(p) for p in tests.glob("test_*.py")))
    return set(package_modules()) - covered


def test_every_module_has_a_test_module_importing_it():
    untested = untested_modules()
    new = sorted(untested - NOT_YET_TESTED)
    assert not new, (f"No test imports {new}: add tests/test_<name>.py for each (the name rule is in "
                     "tests/README.md), or, if it truly has nothing to test, add it to NOT_YET_TESTED with why.")
    tested_now = sorted(NOT_YET_TESTED - untested)
    assert not tested_now, f"{tested_now} have a test now: remove them from NOT_YET_TESTED in tests/test_layout.py."


def test_each_test_module_is_named_after_what_it_tests():
    expected = {test_name(m) for m in package_modules()}
    stems = {p.stem for p in TESTS.glob("test_*.py")}
    exempt = set(CROSS_CUTTING) | set(CHANGED_ELSEWHERE) | set(TO_MERGE)
    stray = sorted(stems - expected - exempt)
    assert not stray, (f"{stray} are not named after a package module: name a test module test_<module> by the "
                       "rule in tests/README.md, or list it in CROSS_CUTTING with what it tests.")
    assert all(home in expected for home in TO_MERGE.values())
    gone = sorted(exempt - stems)
    assert not gone, f"{gone} no longer exist: remove them from the lists in tests/test_layout.py."


@pytest.mark.parametrize(("module", "expected"), [
    ("easytransfer.tasks.detection.learner", {"easytransfer.tasks.detection.learner", "easytransfer.tasks.detection",
                                              "easytransfer.tasks", "easytransfer"}),
    ("easytransfer.data", {"easytransfer.data", "easytransfer"}),
])
def test_imports_are_resolved_to_modules(module, expected, tmp_path):
    test = tmp_path / "test_x.py"
    test.write_text(f"import {module}\n")
    assert imported_modules(test) == expected
    test.write_text("def test():\n    from easytransfer import ImageData, load_model\n"
                    "    from easytransfer.models import HeadConfig, weights\n")
    assert imported_modules(test) == {"easytransfer", "easytransfer.data.loaders", "easytransfer.tasks.loading",
                                      "easytransfer.models", "easytransfer.models.heads", "easytransfer.models.weights"}
    assert "easytransfer.data.paths" not in imported_modules(test)
    assert importlib.util.find_spec("easytransfer.data.paths") is not None
