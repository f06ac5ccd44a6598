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


def _readme_make_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [ln.split(" #")[0].strip() for b in blocks for ln in b.splitlines()]
    return [ln for ln in lines if ln.startswith("make ")]


def test_every_command_in_the_readme_is_a_target_taking_its_variables():
    """Each `make ...` line of the README dry-runs (make -n), and every VAR=value it sets changes the
    commands it would run (a variable the Makefile ignores is a README that lies)."""
    import shlex

    def dry(args: list[str]) -> str:
        res = subprocess.run(["make", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, f"make -n {shlex.join(args)}: {res.stderr[-500:]}"
        return res.stdout

    lines = _readme_make_lines()
    assert len(lines) >= 10, lines
    for line in lines:
        args = shlex.split(line)[1:]
        full = dry(args)
        for arg in (a for a in args if "=" in a):
            without = [a for a in args if a != arg]
            probed = [*without, f"{arg.split('=', 1)[0]}=probe_value"]
            assert dry(without) != full or dry(probed) != full, f"{line}: {arg} reaches no command"
