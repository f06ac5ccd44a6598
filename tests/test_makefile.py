import re
import subprocess

from tests.conftest import REPO


def test_make_help_lists_every_target_with_one_line():
    text = (REPO / "Makefile").read_text()
    targets = re.findall(r"^([a-z][a-z-]*):", text, flags=re.M)
    documented = re.findall(r"^([a-z][a-z-]*):.*## ", text, flags=re.M)
    assert targets == documented  # every target has a ## help line
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for t in ["setup", "data", "folds", "check-data", "oof", "stack", "submit", "lb", "demo", "test"]:
        assert re.search(rf"make {t}\s", out), t


def test_readme_starts_with_the_three_commands():
    head = (REPO / "README.md").read_text().split("\n", 8)[:8]
    text = "\n".join(head)
    assert "make setup" in text and "make demo" in text and "make test" in text
