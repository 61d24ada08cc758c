"""Which modules the project's import check imports, and how (execute/imports.py)."""

from __future__ import annotations

import ast
import textwrap

import pytest

from fgirewrite.execute.imports import Importer, Job, script_line

SCRIPTS = {
    "a loop": (
        """
        import lib
        for epoch in range(3):
            lib.train()
        """,
        (3, "a `for` loop at the top level"),
    ),
    "a bare call": (
        """
        def main():
            pass

        main()
        """,
        (5, "a call of `main` at the top level"),
    ),
    "training in an assignment": (
        """
        import torch
        loss = torch.ones(1, requires_grad=True).sum()
        grads = loss.backward()
        """,
        (4, "a call of `backward` at the top level"),
    ),
    "a loop in a with block": (
        """
        with open("x") as f:
            while True:
                break
        """,
        (3, "a `while` loop at the top level"),
    ),
}
MODULES = {
    "definitions": """
        import torch

        ALPHA = torch.tensor(2.0)

        def f(x):
            for i in x:
                pass
        """,
    "set-up calls": """
        import sys, warnings, torch
        sys.path.append("..")
        warnings.filterwarnings("ignore")
        torch.manual_seed(0)
        print("loaded")
        """,
    "a main guard": """
        def main():
            pass

        if __name__ == "__main__":
            for i in range(3):
                main()
        """,
    "an argument parser": """
        import argparse
        parser = argparse.ArgumentParser()
        parser.add_argument("--x")
        args = parser.parse_args()
        """,
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_is_recognised_by_its_top_level(name):
    source, expected = SCRIPTS[name]
    assert script_line(ast.parse(textwrap.dedent(source))) == expected


@pytest.mark.parametrize("name", MODULES)
def test_a_module_that_only_defines_and_sets_up_is_imported(name):
    assert script_line(ast.parse(textwrap.dedent(MODULES[name]))) is None


def test_each_module_is_imported_in_a_fresh_process_with_a_time_limit(tmp_path):
    """One module's import cannot affect another's; one that hangs is stopped; one that
    exits is reported; an argument parser sees no arguments; what it prints goes nowhere."""
    sources = {
        "sets.py": "import os\nos.environ['FGI_SEEN'] = '1'\n",
        "reads.py": "import os\nassert 'FGI_SEEN' not in os.environ\nprint('noise')\n",
        "hangs.py": "import time\ntime.sleep(60)\n",
        "exits.py": "import sys\nsys.exit(3)\n",
        "parses.py": "import argparse\nargs = argparse.ArgumentParser().parse_args()\n",
    }
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    jobs = [
        Job(name[:-3], str(tmp_path / name), (str(tmp_path),), str(tmp_path), 3.0)
        for name in sources
    ]
    with Importer(workers=2) as importer:
        results = importer.results(importer.submit(jobs))
    assert [(r.ok, r.error, r.timed_out) for r in results] == [
        (True, None, False),
        (True, None, False),
        (False, "TimeoutError: took more than 3 s", True),
        (False, "SystemExit: 3", False),
        (True, None, False),
    ]


def test_the_modules_of_a_package_start_from_the_package_imported_once(tmp_path):
    """Each still in a process of its own: what one module does is not seen by another."""
    files = {
        "good/__init__.py": "",
        "good/a.py": "import good\ngood.FLAG = 1\n",
        "good/b.py": "import good\nassert not hasattr(good, 'FLAG')\n",
        "good/c.py": "raise ValueError('c fails')\n",
        "bad/__init__.py": "import no_such_module_here\n",
        "bad/d.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    names = ["good", "good.a", "good.b", "good.c", "bad.d"]
    paths = ["good/__init__.py", "good/a.py", "good/b.py", "good/c.py", "bad/d.py"]
    jobs = [
        Job(name, str(tmp_path / path), (str(tmp_path),), str(tmp_path), 10.0)
        for name, path in zip(names, paths, strict=True)
    ]
    with Importer(workers=2) as importer:
        results = importer.results(importer.submit(jobs))
    assert [(r.ok, r.error) for r in results] == [
        (True, None),
        (True, None),
        (True, None),
        (False, "ValueError: c fails"),
        (False, "ModuleNotFoundError: No module named 'no_such_module_here'"),
    ]
