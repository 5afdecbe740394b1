"""docs/walkthrough.md follows one training step of the copy task; its examples run here
as doctests, so the page cannot drift from the code, and its model is the demo's."""
import doctest
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
WALKTHROUGH = ROOT / "docs" / "walkthrough.md"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.fixture
def numpy_only(backend):
    if backend != "numpy":
        pytest.skip("the walkthrough runs on NumPy; once is enough")


def test_every_example_in_the_walkthrough_passes(numpy_only):
    failed, attempted = doctest.testfile(str(WALKTHROUGH), module_relative=False,
                                         optionflags=FLAGS, verbose=False)
    assert attempted > 0
    assert failed == 0, f"{failed} of {attempted} examples in {WALKTHROUGH} failed (see above)"


def test_the_walkthrough_builds_the_copy_task_model(numpy_only):
    """The page states its model by hand; it must be the one the demo builds."""
    sys.path.insert(0, str(ROOT / "demos"))
    import copy_task
    test = doctest.DocTestParser().get_doctest(WALKTHROUGH.read_text(), {}, "walkthrough",
                                               str(WALKTHROUGH), 0)
    examples = []
    for example in test.examples:  # up to the line that builds the model
        examples.append(example)
        if example.source.startswith("model = "):
            break
    test.examples = examples
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, clear_globs=False)
    demo_model = copy_task.build_model(copy_task.make_parser().parse_args([]))
    assert test.globs["config"] == demo_model.config
