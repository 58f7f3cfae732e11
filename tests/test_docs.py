"""Run the code of README.md and of every docs/**/*.md page, so that what users copy works.

The conventions (docs authors write to these):

* Each page is one test case. Its runnable blocks run in order, in one shared Python
  namespace, with the working directory a fresh temporary folder in which ``examples``
  links to the repository's ``examples/``: docs use the relative paths a user types at
  the repository root, and what they write (``saves/...``) lands in the temporary folder.
  ``HF_HUB_OFFLINE=1``.
* A fenced ``python`` block is executed (tracebacks name the page and its line), except one
  whose first line is ``# <file>.py``: that one is a file the reader saves (a plugin module),
  written to that file and not executed.
* A fenced ``bash`` block runs with ``bash -euo pipefail`` in the same folder and
  environment, and must exit 0.
* A fenced ``yaml`` block whose first line is ``# <file>.yaml`` is written to that file
  before later blocks run. Every other language (``text``, ``json``...) is not code.
* ``<!-- no-run: <reason> -->`` on the line(s) right before a fence skips that block. The
  reason is required; a bare ``<!-- no-run -->`` is an error.

Results the reader should see are ``assert`` lines inside the blocks themselves.
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataflex.registry import PROJECTORS, SELECTORS, TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(
    r"(?P<comments>(?:^[ \t]*<!--[^\n]*-->[ \t]*\n)*)"  # HTML comments right before the fence
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n"
    r"(?P<body>.*?)"
    r"^(?P=indent)```[ \t]*$",
    re.M | re.S,
)
NO_RUN = re.compile(r"<!--\s*no-run\b\s*(?::\s*(?P<reason>.*?))?\s*-->")
YAML_FILE = re.compile(r"# ([\w.\-/]+\.ya?ml)")
PY_FILE = re.compile(r"# ([\w.\-/]+\.py)")
CODE_LANGS = {"python", "bash"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str
    line: int  # 1-based line of the first body line
    lang: str
    body: str
    no_run: bool
    reason: str | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def parse_blocks(page: str, text: str) -> list[Block]:
    """The fenced blocks of ``text``, with their ``no-run`` markers."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("body")) + 1
        marker = NO_RUN.search(match["comments"])
        body = textwrap.dedent(match["body"]) if match["indent"] else match["body"]
        reason = marker["reason"] if marker else None
        blocks.append(
            Block(
                page,
                line,
                match["lang"].lower(),
                body,
                marker is not None,
                reason.strip() if reason else None,
            )
        )
    return blocks


def marker_errors(blocks: list[Block]) -> list[str]:
    """Bare ``no-run`` markers: every skipped block must say why."""
    return [
        f"{b.where}: `<!-- no-run -->` needs a reason: write `<!-- no-run: <why this block "
        f"cannot run in the tests> -->` (e.g. needs a GPU, downloads an 8B model)"
        for b in blocks
        if b.no_run and not b.reason
    ]


@pytest.fixture
def restore_registries():
    """Selectors, projectors and templates a page registers are removed afterwards."""
    registries = (SELECTORS, PROJECTORS, TEMPLATES)
    for registry in registries:
        registry.names()  # load the built-ins before the snapshot
    saved = [(r._entries, dict(r._entries)) for r in registries]
    yield
    for live, copy in saved:
        live.clear()
        live.update(copy)


def run_bash(block: Block, cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.body],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{block.where}: bash block exited {proc.returncode}\n--- block\n{block.body}"
            f"--- stdout (tail)\n{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}",
            pytrace=False,
        )


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page, tmp_path, monkeypatch, restore_registries):
    blocks = parse_blocks(page, (ROOT / page).read_text())
    assert not marker_errors(blocks), "\n".join(marker_errors(blocks))
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    namespace: dict = {"__name__": f"docs_{Path(page).stem.replace('-', '_')}"}
    for block in blocks:
        if block.no_run:
            continue
        first_line = block.body.split("\n", 1)[0]
        if (block.lang == "yaml" and (name := YAML_FILE.fullmatch(first_line))) or (
            block.lang == "python" and (name := PY_FILE.fullmatch(first_line))
        ):
            target = tmp_path / name[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.body)
        elif block.lang == "python":
            # Leading newlines make traceback line numbers the page's own.
            exec(compile("\n" * (block.line - 1) + block.body, page, "exec"), namespace)
        elif block.lang == "bash":
            run_bash(block, tmp_path, env)


# --- the runner's own rules ------------------------------------------------------------

SAMPLE = """\
Intro.

<!-- no-run: needs a GPU -->
```python
raise SystemExit
```

<!-- main-command -->
<!-- no-run -->
```bash
exit 1
```

- a list item:

  ```python
  x = 1
  ```

```text
not code
```
"""


def test_parse_blocks_reads_markers_languages_and_lines():
    blocks = parse_blocks("sample.md", SAMPLE)
    assert [(b.lang, b.line, b.no_run, b.reason) for b in blocks] == [
        ("python", 5, True, "needs a GPU"),
        ("bash", 11, True, None),
        ("python", 17, False, None),
        ("text", 21, False, None),
    ]
    assert blocks[2].body == "x = 1\n"
    assert SAMPLE.splitlines()[blocks[1].line - 1] == "exit 1"


def test_bare_no_run_marker_is_rejected_with_the_fix():
    (error,) = marker_errors(parse_blocks("sample.md", SAMPLE))
    assert error.startswith("sample.md:11: `<!-- no-run -->` needs a reason")
    assert "<!-- no-run: <why" in error


def test_every_page_is_covered():
    assert "README.md" in PAGES
    assert {"docs/quickstart.md", "docs/troubleshooting.md", "docs/selectors/less.md"} <= set(PAGES)


def test_readme_test_command_installs_cpu_torch_and_runs_pytest():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- test-command -->\s*```bash\n(.*?)```", readme, re.S)
    assert block, "README.md lost its <!-- test-command --> block, which .ci/run executes"
    command = block.group(1)
    assert "pip install torch==2.13.0" in command
    assert "pytest" in command
    assert "<!-- test-command -->" in (ROOT / ".ci/run").read_text()
