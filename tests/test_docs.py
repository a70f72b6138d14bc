"""The fenced Python blocks of README.md and docs/*.md run as written.

The convention (docs/development.md, "The docs' code blocks"):

- every `````python`` block runs, unless the line right before its opening
  fence is ``<!-- not-run: <reason> -->``: the block is then a skipped test
  that reports the reason;
- ``<!-- backend: tensorflow -->`` on that line (one name or several,
  comma-separated) runs the block in that backend's session only; blocks
  without it are backend-independent and run in one session, DEFAULT_BACKEND;
- a page is one test: its blocks for this session run in order, in one
  namespace (a block may use an earlier block's names), in a temporary working
  directory; a failure names the page and the block's line;
- what a reader brings (their data) is made here, tiny, in GIVEN.
"""

from __future__ import annotations

import contextlib
import re
import socket
import textwrap
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ssr.models import registry

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "torch", "jax")

#: The session that runs the backend-independent blocks: torch, the quickest
#: to build and call the docs' small models eagerly.
DEFAULT_BACKEND = "torch"

_FENCE = re.compile(r"^\s*(`{3,})\s*([^`\s]*)")
_COMMENT = re.compile(r"^\s*<!--(.*)-->\s*$")
_MARKER = re.compile(r"^\s*(not-run|backend):(.*)$", re.DOTALL)
# Info strings that look like Python but would be skipped silently.
_NOT_PYTHON_ENOUGH = {"py", "py3", "python3"}


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root
    line: int  # the opening fence's line, 1-based
    code: str
    not_run: str | None = None  # the reason
    backends: tuple[str, ...] | None = None  # None: backend-independent

    def runs_in(self, backend: str) -> bool:
        if self.not_run is not None:
            return False
        if self.backends is None:
            return backend == DEFAULT_BACKEND
        return backend in self.backends


def _marker(text: str, where: str) -> tuple[str | None, tuple[str, ...] | None]:
    """``(not-run reason, backends)`` from the comment before a fence."""
    match = _MARKER.match(text)
    if match is None:
        raise ValueError(
            f"{where}: the comment right before a ```python fence must be "
            "'<!-- not-run: <reason> -->' or '<!-- backend: <names> -->'. "
            f"Received: <!--{text}-->"
        )
    kind, value = match.group(1), match.group(2).strip()
    if kind == "not-run":
        if not value:
            raise ValueError(f"{where}: '<!-- not-run: <reason> -->' needs a reason")
        return value, None
    names = tuple(name.strip() for name in value.split(","))
    if not set(names) <= set(BACKENDS):
        raise ValueError(
            f"{where}: '<!-- backend: <names> -->' takes names of {BACKENDS}, "
            f"comma-separated. Received: {value!r}"
        )
    return None, names


def parse_blocks(text: str, page: str) -> list[Block]:
    """The `````python`` blocks of a Markdown text, with their markers."""
    lines = text.splitlines()
    blocks = []
    fence = None  # (backticks, info string, opening line) of the open fence
    for number, line in enumerate(lines, start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match is None:
                continue
            ticks, info = match.group(1), match.group(2)
            if info.lower() in _NOT_PYTHON_ENOUGH or (
                info.lower() == "python" and info != "python"
            ):
                raise ValueError(
                    f"{page}:{number}: write ```python, the fence the docs test "
                    f"runs. Received: {line.strip()!r}"
                )
            fence = (ticks, info, number)
        elif line.strip() == fence[0]:
            ticks, info, start = fence
            fence = None
            if info != "python":
                continue
            before = lines[start - 2] if start >= 2 else ""
            comment = _COMMENT.match(before)
            not_run = backends = None
            if comment is not None:
                not_run, backends = _marker(comment.group(1), f"{page}:{start}")
            code = textwrap.dedent("\n".join(lines[start : number - 1]))
            blocks.append(Block(page, start, code, not_run, backends))
    if fence is not None:
        raise ValueError(f"{page}:{fence[2]}: the code fence is never closed")
    return blocks


def _pages() -> dict[str, list[Block]]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages = {}
    for path in paths:
        page = path.relative_to(ROOT).as_posix()
        blocks = parse_blocks(path.read_text(encoding="utf-8"), page)
        if blocks:
            pages[page] = blocks
    return pages


PAGES = _pages()
NOT_RUN = [block for blocks in PAGES.values() for block in blocks if block.not_run]


# What the pages' readers bring, made tiny: files in the working directory
# (their data sets) and names their blocks use without defining them (their
# data loader). Each is a context manager that yields those names.


def _write_image(path: Path, array) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _image_and_mask(rng, size=8):
    image = rng.integers(0, 256, (size, size, 3))
    mask = np.zeros((size, size))
    left = rng.integers(0, size - 3)
    mask[2:6, left : left + 3] = 255
    return image, mask


@contextlib.contextmanager
def _data_sets(tmp_path: Path, monkeypatch):
    """docs/data.md: Kvasir-SEG, ISIC 2018's arrays and BUSI, a few 8x8 images."""
    rng = np.random.default_rng(0)
    for i in range(3):
        image, mask = _image_and_mask(rng)
        _write_image(tmp_path / "Kvasir-SEG" / "images" / f"case{i}.jpg", image)
        _write_image(tmp_path / "Kvasir-SEG" / "masks" / f"case{i}.jpg", mask)
    # The ISIC preparation script's layout: channels first, 0..255.
    np.save(tmp_path / "X_tr_224x224.npy", rng.integers(0, 256, (2, 3, 8, 8), np.uint8))
    np.save(tmp_path / "Y_tr_224x224.npy", np.full((2, 1, 8, 8), 255, np.uint8))
    # BUSI's official release: enough of each class for five stratified folds.
    busi = tmp_path / "Dataset_BUSI_with_GT"
    for name in ("benign", "malignant", "normal"):
        for i in range(1, 11):
            image, mask = _image_and_mask(rng)
            _write_image(busi / name / f"{name} ({i}).png", image)
            _write_image(
                busi / name / f"{name} ({i})_mask.png", mask * (name != "normal")
            )
    yield {}


@contextlib.contextmanager
def _torchrun(tmp_path: Path, monkeypatch):
    """docs/distributed.md's train.py as torchrun starts it, one process, and
    a loader of one 224x224 sample."""
    import torch
    import torch.distributed as dist

    with socket.socket() as probe:  # a free port for the process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in dict(
        RANK=0, LOCAL_RANK=0, WORLD_SIZE=1, MASTER_ADDR="127.0.0.1", MASTER_PORT=port
    ).items():
        monkeypatch.setenv(name, str(value))
    rng = np.random.default_rng(0)
    x = rng.random((1, 224, 224, 3), dtype=np.float32)
    y = (rng.random((1, 224, 224, 1)) > 0.5).astype(np.float32)
    data = torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    try:
        yield {"loader": torch.utils.data.DataLoader(data, batch_size=1)}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _nothing(tmp_path: Path, monkeypatch):
    yield {}


GIVEN = {
    "docs/data.md": _data_sets,
    "docs/distributed.md": _torchrun,
}


def _run_page(page: str, blocks: list[Block], namespace: dict) -> None:
    path = str(ROOT / page)
    for block in blocks:
        # Padded so that tracebacks give the page's own line numbers.
        code = compile("\n" * block.line + block.code, path, "exec")
        try:
            exec(code, namespace)
        except Exception as error:
            raise AssertionError(
                f"{page}: the block at line {block.line} failed: "
                f"{type(error).__name__}: {error}"
            ) from error


#: The pages with blocks for this session: each is one test.
PAGES_HERE = [
    page for page, blocks in PAGES.items() if any(b.runs_in(BACKEND) for b in blocks)
]


@pytest.mark.parametrize("page", PAGES_HERE)
def test_page_runs_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Pages may register attention names: keep them out of later tests.
    monkeypatch.setattr(registry, "_ATTENTION", dict(registry._ATTENTION))
    blocks = [block for block in PAGES[page] if block.runs_in(BACKEND)]
    with GIVEN.get(page, _nothing)(tmp_path, monkeypatch) as names:
        _run_page(page, blocks, {"__name__": "__main__", **names})


@pytest.mark.parametrize("block", NOT_RUN, ids=[f"{b.page}:{b.line}" for b in NOT_RUN])
def test_block_marked_not_run(block):
    pytest.skip(f"{block.page}:{block.line} is not run: {block.not_run}")


def test_the_pages_have_blocks_and_given_names_pages():
    assert PAGES, "no ```python block found in README.md or docs/*.md"
    assert set(GIVEN) <= set(PAGES), "GIVEN names a page without blocks"


MARKED = """\
# A page

```python
a = 1
```

<!-- backend: tensorflow, jax -->
```python
b = a + 1
```

<!-- not-run: needs the reader's data -->
```python
c = d
```

- a list item:

  ```python
  if True:
      e = b
  ```

```bash
python -c "print(1)"
```
"""


def test_parse_blocks_markers_lines_and_indented_fences():
    blocks = parse_blocks(MARKED, "page.md")
    assert [(b.line, b.not_run, b.backends) for b in blocks] == [
        (3, None, None),
        (8, None, ("tensorflow", "jax")),
        (13, "needs the reader's data", None),
        (19, None, None),
    ]
    assert blocks[3].code == "if True:\n    e = b"


@pytest.mark.parametrize(
    "text, match",
    [
        ("<!-- not run: typo -->\n```python\nx\n```\n", "must be"),
        ("<!-- not-run: -->\n```python\nx\n```\n", "needs a reason"),
        ("<!-- backend: pytorch -->\n```python\nx\n```\n", "'pytorch'"),
        ("```py\nx\n```\n", "write ```python"),
        ("text\n```python\nx\n", "never closed"),
    ],
)
def test_parse_blocks_refuses_what_it_would_skip_silently(text, match):
    with pytest.raises(ValueError, match=match):
        parse_blocks(text, "page.md")


def test_a_failing_block_names_its_page_and_line():
    blocks = parse_blocks(MARKED, "page.md")
    with pytest.raises(
        AssertionError,
        match="page.md: the block at line 13 failed: "
        "NameError: name 'd' is not defined",
    ):
        _run_page("page.md", blocks[:1] + blocks[2:3], {})


def test_examples_readme_lists_every_example():
    readme = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "examples").iterdir()):
        if path.name != "README.md":
            assert f"`{path.name}`" in readme, path.name


def _headings(text: str) -> set[str]:
    """GitHub's anchors for a page's headings (outside code fences)."""
    anchors, fenced = set(), False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#{1,6}\s+(.*?)\s*$", line)):
            words = re.sub(r"[^\w\- ]", "", match.group(1).lower())
            anchors.add(words.replace(" ", "-"))
    return anchors


def test_relative_links_resolve():
    """Every relative link of README.md, docs/ and examples/ names a file
    that exists, and a heading of it where it names one."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages.append(ROOT / "examples" / "README.md")
    broken = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path) if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                if anchor not in _headings(linked.read_text(encoding="utf-8")):
                    broken.append(
                        f"{page.relative_to(ROOT)}: {target} (no such heading)"
                    )
    assert not broken, "\n".join(broken)
