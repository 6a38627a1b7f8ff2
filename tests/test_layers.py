"""The rooms of mangacolor/ import only rooms below them (docs/architecture.md § Layers).

Every `import` and `from ... import` of mangacolor/ is read with ast (the lazy ones inside functions too);
an import of a room at the same rank or above is an error, unless the pair is in ALLOWED below with its
reason. A new room must be given its rank here.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mangacolor"

# Ground first. A room may import the rooms of lower ranks.
RANK = {
    "io": 0, "config": 0, "device": 0, "tracking": 0,
    "data": 1, "demo": 1, "models": 1, "losses": 1,
    "synthetic": 2, "drafting": 2, "training": 2,
    "eval": 3,
    "stages": 4,
    "inference": 5,
    "cli": 6, "serve": 6,
}
ALLOWED = {
    # The `mangacolor serve` command starts the hint page (serve never imports the CLI back).
    ("cli", "serve"),
    # Evaluation colours pages with the inference engine and a loaded bundle, so its figures are what a
    # user gets (eval/report.py, eval/benchmark.py, eval/candidates.py's registry look-ups).
    ("eval", "inference"),
}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mangacolor" else None


def imports_between_rooms() -> list[tuple[str, str, str]]:
    """(source room, imported room, where) for every import of one room of mangacolor/ by another."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        src = _room(".".join(rel.parts))
        if src in (None, "__init__"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "mangacolor" else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                dst = _room(name)
                if dst is not None and dst != src:
                    found.append((src, dst, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"))
    return found


def test_every_room_has_a_rank():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms <= set(RANK), f"rooms without a rank in tests/test_layers.py RANK: {sorted(rooms - set(RANK))}"


def test_no_room_imports_a_room_at_its_rank_or_above():
    upward = [f"{where}: {src} -> {dst}" for src, dst, where in imports_between_rooms()
              if RANK[dst] >= RANK[src] and (src, dst) not in ALLOWED]
    assert not upward, "imports that run up or sideways (docs/architecture.md § Layers):\n" + "\n".join(upward)


@pytest.mark.parametrize("pair", sorted(ALLOWED))
def test_every_allowed_pair_is_still_needed(pair):
    assert pair in {(src, dst) for src, dst, _ in imports_between_rooms()}, f"{pair} is allowed but no longer imported: remove it"
