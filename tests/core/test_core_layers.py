"""The layers of the code base: what the core, the server and the client may import.

Each check runs in a fresh interpreter, so modules loaded by other tests (or by
pytest plugins) cannot hide an import.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import davbackup

ROOT = Path(__file__).resolve().parents[2]
#: what the core must never load, directly or through another module
FORBIDDEN_IN_CORE = ("provider", "wsgidav", "cheroot", "requests", "webdav3", "tqdm")
CLIENT_LIBRARIES = ("requests", "webdav3", "tqdm")


def core_modules() -> list[str]:
    names = ["davbackup"]
    for path in sorted((ROOT / "davbackup").glob("*.py")):
        if path.stem not in ("__init__", "__main__"):
            names.append(f"davbackup.{path.stem}")
    for path in sorted((ROOT / "davbackup" / "maintenance").glob("*.py")):
        names.append("davbackup.maintenance" if path.stem == "__init__" else f"davbackup.maintenance.{path.stem}")
    return names


_PROBE = """
import importlib, json, sys
forbidden = tuple(sys.argv[1].split(","))
found = {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    for loaded in sorted(sys.modules):
        if loaded.split(".")[0] in forbidden and loaded.split(".")[0] not in found:
            found[loaded.split(".")[0]] = name
print(json.dumps(found))
"""


def loaded_by(modules: list[str], forbidden: tuple[str, ...]) -> dict[str, str]:
    """Import ``modules`` in order in a fresh interpreter: forbidden top-level package ->
    the first module whose import brought it in."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(forbidden), *modules],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_core_modules_are_found():
    modules = core_modules()
    for expected in ("davbackup.repository", "davbackup.uploads", "davbackup.maintenance.gc"):
        assert expected in modules
    assert not any(m.startswith(("davbackup.cli", "davbackup.client")) for m in modules)


def test_core_imports_no_server_and_no_client_library():
    assert loaded_by(core_modules(), FORBIDDEN_IN_CORE) == {}


def test_server_imports_no_client_library():
    server = ["provider.app", "provider.server", "provider.request_server", "davbackup.cli.serve"]
    assert loaded_by(server, CLIENT_LIBRARIES) == {}


def test_client_does_not_load_the_store():
    found = loaded_by(["davbackup.client"], ("provider", "wsgidav", "cheroot"))
    assert found == {}
    out = subprocess.run(
        [sys.executable, "-c", "import sys, davbackup.client; print(sorted(m for m in sys.modules"
         " if m in ('davbackup.repository', 'davbackup.chunkstore', 'davbackup.catalog')))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_facade_names_resolve():
    assert davbackup.__all__ == sorted(davbackup._FACADE)
    for name in davbackup.__all__:
        value = getattr(davbackup, name)
        assert getattr(value, "__name__", name) == name
    assert issubclass(davbackup.NotFound, davbackup.DavBackupError)
    try:
        davbackup.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


# --- the command line without the client extra ---------------------------------------

_WITHOUT_CLIENT = """
import sys
for name in ("requests", "webdav3", "tqdm"):
    sys.modules[name] = None  # as if davbackup[client] were not installed
from davbackup.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run_without_client(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAVBACKUP_PASSPHRASE": "layers test passphrase"}
    return subprocess.run([sys.executable, "-c", _WITHOUT_CLIENT, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)


def test_client_command_without_the_extra_says_what_to_install(tmp_path):
    for command in ("upload", "download", "ls"):
        args = [command, "http://127.0.0.1:1/x"] + ([str(tmp_path)] if command != "ls" else [])
        out = run_without_client(*args)
        assert out.returncode == 2, (command, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
        assert f"davbackup {command}: error:" in out.stderr
        assert "pip install 'davbackup[client]'" in out.stderr


def test_server_commands_work_without_the_client_extra(tmp_path):
    out = run_without_client("--help")
    assert out.returncode == 0, out.stderr
    assert "upload" in out.stdout and "serve" in out.stdout
    assert "needs davbackup[client]" in out.stdout
    repo = tmp_path / "repo"
    out = run_without_client("init", "--repo", str(repo))
    assert out.returncode == 0, out.stderr
    out = run_without_client("stats", "--repo", str(repo))
    assert out.returncode == 0, out.stderr



def _imports_and_calls(path: Path) -> tuple[set[str], set[str]]:
    """The modules a file imports (``TYPE_CHECKING`` blocks included) and the names it calls."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    called: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
    return imported, called


def test_the_repository_is_the_only_composition_root():
    """Namespaces and the upload manager are built by Repository alone, from narrow
    collaborators (davbackup/file_store.py); they and the modules they hand themselves
    to never see the repository."""
    for module in ("fs", "uploads", "file_store", "history", "tree_bulk", "reader", "writer"):
        imported, _called = _imports_and_calls(ROOT / "davbackup" / f"{module}.py")
        assert "davbackup.repository" not in imported, module
    builders = set()
    for top in ("davbackup", "provider"):
        for path in sorted((ROOT / top).rglob("*.py")):
            _imported, called = _imports_and_calls(path)
            if called & {"Namespace", "UploadManager", "FileStore"}:
                builders.add(path.relative_to(ROOT).as_posix())
    assert builders == {"davbackup/repository.py"}


#: issue 7's size rules: a module of the product does one thing and stays readable
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def product_sources() -> list[Path]:
    return sorted([*(ROOT / "davbackup").rglob("*.py"), *(ROOT / "provider").rglob("*.py")])


def test_no_product_module_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in product_sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}, "split these modules"


def test_no_function_over_60_lines_without_a_reason():
    """A function may be longer only with a comment in its first lines that says why
    ("Longer than 60 lines on purpose: ..." or "Over 60 lines on purpose: ...")."""
    unexplained = []
    for path in product_sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                head = "\n".join(lines[node.lineno - 1:node.body[0].lineno + 2])
                if length > MAX_FUNCTION_LINES and "60 lines on purpose" not in head:
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert unexplained == []
