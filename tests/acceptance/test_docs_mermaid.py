"""Every Mermaid diagram in docs/ is checked by the real Mermaid tooling, so a broken one fails the build.

The checker is mermaid-cli (``mmdc``), which renders diagrams in a headless Chromium: exactly what
a Markdown viewer would do, parse errors included. ``.ci/run`` installs it into ``.tools/`` (git
ignores it) and Debian's Chromium; without them these tests are skipped, saying what is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MMDC_TIMEOUT = 240  # seconds for one mmdc run; it starts a browser, which is slow on a busy machine


@dataclass(frozen=True)
class Block:
    """One ```mermaid block: where it is, and what it says."""

    path: Path
    line: int  # of the opening fence, 1-based
    heading: str
    source: str

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}:{self.line} (under {self.heading!r})"


def mermaid_blocks(path: Path) -> list[Block]:
    """The ```mermaid blocks of a Markdown file, with the line and the heading each stands under."""
    blocks: list[Block] = []
    heading = "(top of the file)"
    opened: int | None = None
    body: list[str] = []
    fence = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.strip()
        if opened is None:
            if stripped.startswith("#") and not fence:
                heading = stripped.lstrip("#").strip()
            if stripped.startswith("```"):
                if fence:
                    fence = ""  # the end of some other fenced block
                elif stripped == "```mermaid":
                    opened, body = number, []
                else:
                    fence = stripped  # another language: skip its lines (they may start with #)
        elif stripped == "```":
            blocks.append(Block(path, opened, heading, "\n".join(body) + "\n"))
            opened = None
        else:
            body.append(line)
    if opened is not None:
        raise AssertionError(f"{path}:{opened}: the ```mermaid block is never closed")
    return blocks


def find_tools() -> tuple[Path, Path]:
    """mmdc and a Chromium to run it with; skips the test, saying what is missing, if there are none."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed (mermaid-cli needs Node.js); .ci/run expects it on the machine")
    candidates = [
        os.environ.get("PERDURE_MMDC"),
        ROOT / ".tools" / "node_modules" / ".bin" / "mmdc",
        shutil.which("mmdc"),
    ]
    mmdc = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if mmdc is None:
        pytest.skip(
            "mermaid-cli is not installed: run `PUPPETEER_SKIP_DOWNLOAD=1 npm install --prefix .tools "
            "@mermaid-js/mermaid-cli@12` (as .ci/run does)"
        )
    browsers = [os.environ.get("PUPPETEER_EXECUTABLE_PATH"), "/usr/bin/chromium", shutil.which("chromium")]
    chromium = next((Path(b) for b in browsers if b and Path(b).is_file()), None)
    if chromium is None:
        pytest.skip("Chromium is not installed: run `apt-get install -y chromium` (as .ci/run does)")
    return mmdc, chromium


class Mermaid:
    """Runs mmdc with a puppeteer configuration for the local Chromium."""

    def __init__(self, mmdc: Path, chromium: Path, workdir: Path) -> None:
        self.mmdc = mmdc
        self.workdir = workdir
        self.config = workdir / "puppeteer.json"
        self.config.write_text(json.dumps({"executablePath": str(chromium), "args": ["--no-sandbox", "--disable-gpu"]}))

    def run(self, source: Path, output: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.mmdc), "--quiet", "-p", str(self.config), "-i", str(source), "-o", str(output)],
            capture_output=True,
            text=True,
            timeout=MMDC_TIMEOUT,
        )

    def errors(self, blocks: list[Block]) -> list[str]:
        """One message per block that Mermaid cannot render, naming the block."""
        if not blocks:
            return []
        # Fast path: all blocks in one Markdown file, rendered in one browser session.
        combined = self.workdir / "all.md"
        combined.write_text("\n".join(f"```mermaid\n{b.source}```\n" for b in blocks), encoding="utf-8")
        if self.run(combined, self.workdir / "all-out.md").returncode == 0:
            return []
        # Something is broken: check each block on its own to say which (mmdc stops at the first error).
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(self._check_one, enumerate(blocks)))
        return [message for message in results if message is not None] or [
            "mmdc failed on the combined diagrams, but on none alone"
        ]

    def _check_one(self, numbered: tuple[int, Block]) -> str | None:
        index, block = numbered
        source = self.workdir / f"block-{index}.mmd"
        source.write_text(block.source, encoding="utf-8")
        run = self.run(source, self.workdir / f"block-{index}.svg")
        if run.returncode == 0:
            return None
        return f"{block.name}: mmdc exit code {run.returncode}\n{_first_lines(run.stderr + run.stdout)}"


def _first_lines(text: str, count: int = 6) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("at ")]
    return "\n".join(lines[:count])


def doc_blocks() -> list[Block]:
    return [block for path in sorted(DOCS.rglob("*.md")) for block in mermaid_blocks(path)]


def test_every_mermaid_diagram_in_the_docs_renders(tmp_path: Path) -> None:
    blocks = doc_blocks()
    # The architecture page alone has the component, state and eight sequence diagrams.
    assert len([b for b in blocks if b.path.name == "architecture.md"]) >= 10
    mmdc, chromium = find_tools()
    errors = Mermaid(mmdc, chromium, tmp_path).errors(blocks)
    assert not errors, "broken Mermaid diagrams:\n\n" + "\n\n".join(errors)


def test_a_broken_diagram_fails_the_check_and_is_named(tmp_path: Path) -> None:
    mmdc, chromium = find_tools()
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "page.md"
    page.write_text(
        "# Page\n\n## Fine\n\n```mermaid\nsequenceDiagram\n    A->>B: hello\n```\n\n"
        "```python\n# not a heading\n```\n\n"
        "## Broken\n\n```mermaid\nsequenceDiagram\n    A->>>B hello\n```\n",
        encoding="utf-8",
    )
    blocks = mermaid_blocks(page)
    assert [(b.line, b.heading) for b in blocks] == [(5, "Fine"), (16, "Broken")]
    workdir = tmp_path / "work"
    workdir.mkdir()
    errors = Mermaid(mmdc, chromium, workdir).errors(blocks)
    assert len(errors) == 1, errors
    assert errors[0].startswith("docs/page.md:16 (under 'Broken'): mmdc exit code 1")
    assert re.search(r"Parse error on line 2", errors[0]), errors[0]


def test_block_extraction_finds_unclosed_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n```mermaid\nflowchart LR\n    a --> b\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"page.md:3: the ```mermaid block is never closed"):
        mermaid_blocks(page)
