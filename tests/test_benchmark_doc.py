"""``python -m benchmarks --only …`` rewrites the sections it ran and keeps the others' earlier results."""
import sys

import benchmarks.__main__ as bench


def test_a_run_of_one_section_keeps_the_other_sections(tmp_path, monkeypatch):
    doc = tmp_path / "benchmarks.md"
    titles = bench.TITLES
    earlier = "\n".join(f"## {titles[name]}\n\nold {name} table\n\n_(1 s)_\n" for name in bench.SECTIONS)
    doc.write_text(f"# Benchmarks\n\nhand-written summary\n\n{bench.GENERATED}\n\nRun: earlier.\n\n{earlier}\nTotal: 9 s.\n")
    monkeypatch.setattr(bench.windows, "run", lambda *args, **kwargs: "new windows table")
    monkeypatch.setattr(bench.common, "machine", lambda device: "test machine")
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--only", "windows", "--output", str(doc)])
    bench.main()
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written summary\n\n" + bench.GENERATED)
    assert "new windows table" in text and "old windows table" not in text
    for name in set(bench.SECTIONS) - {"windows"}:
        assert text.count(f"## {titles[name]}") == 1 and f"old {name} table" in text
    # Sections stay in their fixed order, whichever ran.
    positions = [text.index(f"## {titles[name]}") for name in bench.SECTIONS]
    assert positions == sorted(positions) and text.count("Total: ") == 1
