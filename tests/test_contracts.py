"""Contract tests parametrized over the tables the code is driven by: augmentation presets, report sections,
CLI commands and the notebook generators. A new entry in a table is tested without a new test."""

import argparse
import importlib.util
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import nbformat
import pytest
from conftest import make_image_folder

from easytransfer import ImageData, transfer_learner
from easytransfer.cli import COMMANDS, build_parser, main
from easytransfer.data.augment import AUG_PRESETS
from easytransfer.tasks.classification.report import SECTIONS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

ROOT = Path(__file__).resolve().parent.parent
GENERATORS = sorted((ROOT / "tools").glob("make_*_notebook.py"))


# ------------------------------------------------------------------------------------- augmentation presets


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("aug") / "images", per_class=4, size=40)


@pytest.mark.parametrize("aug", AUG_PRESETS)
def test_every_augmentation_preset_builds_batches_and_shows_them(aug, tiny_folder):
    dls = ImageData.from_folder(tiny_folder, bs=2, size=32, aug=aug, valid_pct=0.25, seed=0)
    for dl in (dls.train, dls.valid):
        xb, yb = dl.one_batch()
        assert xb.shape == (2, 3, 32, 32) and yb.shape == (2,), (aug, dl.split_idx)
    plt.close("all")
    dls.show_batch(max_n=2)
    assert len(plt.gcf().axes) == 2
    plt.close("all")


# ------------------------------------------------------------------------------------------ report sections


class _SectionIds(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids = []

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.ids.append(dict(attrs).get("id"))


@pytest.fixture(scope="module")
def report_section_ids(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    dls = ImageData.from_folder(make_image_folder(tmp / "images", per_class=4), bs=4, size=32, valid_pct=0.25, seed=0)
    learn = transfer_learner(dls, "test_resnet", pretrained=False)
    learn.fit_frozen(1, lr=1e-2)
    parser = _SectionIds()
    parser.feed(learn.save_report(tmp / "report.html").read_text(encoding="utf-8"))
    plt.close("all")
    return parser.ids


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_report_section_is_in_a_saved_report(section, report_section_ids):
    assert section in report_section_ids


# --------------------------------------------------------------------------------------------- CLI commands


def _registered_commands() -> set[str]:
    # argparse has no public accessor for the sub-commands: read the sub-parsers action of the parser
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def test_every_registered_command_has_a_handler_and_every_handler_a_command():
    assert _registered_commands() == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_exits_0_and_prints_its_usage(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and out.startswith(f"usage: easytransfer {command}")


# ------------------------------------------------------------------------------------- notebook generators


def _load_generator(path: Path):
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # the generators import tools/notebook_builder.py, as when run there
    spec = importlib.util.spec_from_file_location(f"generator_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # builds the cells; writes and executes nothing
    return module


def _sources(path: Path) -> list[tuple[str, str]]:
    nb = nbformat.read(path, as_version=4)
    return [(cell.cell_type, cell.source) for cell in nb.cells if cell.cell_type in ("code", "markdown")]


def test_there_are_notebook_generators():
    assert len(GENERATORS) >= 4


@pytest.mark.parametrize("generator", GENERATORS, ids=[p.stem for p in GENERATORS])
def test_each_generator_writes_the_committed_notebook(generator, tmp_path):
    module = _load_generator(generator)
    committed = module.NOTEBOOK
    assert committed.parent == ROOT / "nbs" and committed.exists(), committed
    written = module.write_notebook(tmp_path / committed.name)
    assert _sources(written) == _sources(committed), (
        f"{committed.name} differs from {generator.name}: regenerate it with `python tools/{generator.name}` "
        "and run it with tools/run_notebook.py, or update the generator"
    )
