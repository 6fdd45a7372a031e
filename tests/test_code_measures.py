"""The code measures CONTRIBUTING.md asks for, checked on the package's own source: no module over 400 lines and
no function over 60 lines, unless a comment on the lines just above its ``def`` says why."""

import ast
from pathlib import Path

import steerlit

PACKAGE = Path(steerlit.__file__).resolve().parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def long_functions(path: Path, root: Path = PACKAGE) -> list[str]:
    """``file:line name (n lines)`` for each function over the limit with no comment just above it."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
        explained = any(line.strip().startswith("#") for line in lines[max(0, first - 3) : first - 1])
        if length > MAX_FUNCTION_LINES and not explained:
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_package_is_found_with_its_modules():
    assert len(sources()) > 50 and (PACKAGE / "study" / "run.py").exists()


def test_no_module_is_over_400_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in sources()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_is_over_60_lines_without_a_comment_saying_why():
    assert [f for p in sources() for f in long_functions(p)] == []


def test_the_function_check_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "long.py").write_text(f"def long():\n{body}\n")
    (tmp_path / "explained.py").write_text(f"# long: one table of constants\ndef long():\n{body}\n")
    assert long_functions(tmp_path / "long.py", tmp_path) == ["long.py:1 long (61 lines)"]
    assert long_functions(tmp_path / "explained.py", tmp_path) == []
