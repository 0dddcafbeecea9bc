"""The layer's shape (issue 22): concerns import downwards only, no cycle, no prfleet import inside a function,
and the size limits, measured by prfleet_local.bench.shape on this tree and shown to fail on a tree that breaks
them."""

from __future__ import annotations

from pathlib import Path

from prfleet_local.bench import shape


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for pkg in ("layers/prfleet/prfleet", "local/prfleet_local"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").touch()
    return tmp_path


def test_the_layer_and_local_are_within_the_limits():
    found = shape.measure()
    assert found.modules > 50  # it read the tree
    assert found.problems() == []


def test_an_import_against_the_direction_is_reported(tmp_path):
    root = _tree(
        tmp_path,
        {
            "layers/prfleet/prfleet/cost/__init__.py": "",
            "layers/prfleet/prfleet/cost/ledger.py": "from prfleet.pipeline import runner\n",
            "layers/prfleet/prfleet/pipeline/__init__.py": "",
            "layers/prfleet/prfleet/pipeline/runner.py": "from prfleet.cost import ledger\n",
        },
    )
    found = shape.measure(root)
    assert found.against_direction == [
        "prfleet.cost.ledger (cost) imports prfleet.pipeline.runner (pipeline)"
    ]
    assert found.cycles == [["prfleet.cost.ledger", "prfleet.pipeline.runner"]]


def test_an_import_inside_a_function_and_sizes_are_reported(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(shape.MAX_FUNCTION_LINES))
    root = _tree(
        tmp_path,
        {
            "layers/prfleet/prfleet/config/__init__.py": "",
            "layers/prfleet/prfleet/config/aws.py": "",
            "layers/prfleet/prfleet/config/env.py": f"def f():\n    from prfleet.config import aws\n{body}\n",
        },
    )
    found = shape.measure(root)
    assert found.inner_imports == ["prfleet.config.env:2 imports prfleet.config.aws"]
    assert found.long_functions == [("prfleet.config.env.f", shape.MAX_FUNCTION_LINES + 2)]
    assert found.against_direction == [] and found.cycles == []


def test_a_package_init_importing_its_modules_is_not_a_cycle(tmp_path):
    root = _tree(
        tmp_path,
        {
            "layers/prfleet/prfleet/jobs/__init__.py": "from prfleet.jobs.messages import X\n",
            "layers/prfleet/prfleet/jobs/messages.py": "X = 1\n",
            "layers/prfleet/prfleet/jobs/sqs.py": "from prfleet.jobs import X\n",
        },
    )
    assert shape.measure(root).cycles == []
