"""Every number in the README's results comes from a committed result file (`experiments/readme.py`).

No training: these tests read the JSON files under theory/results and
experiments/results and the README's markers.
"""

import json
import pathlib
import re

import pytest

from attent_experiments import readme, readme_values

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_is_what_the_result_files_give():
    """Catches a retyped or stale number in a marker: any value or table that differs from its file."""
    text = README.read_text()
    new, changes = readme.render(text, str(ROOT))
    assert not changes, readme.summarize(changes)
    assert new == text


def test_readme_uses_every_block():
    """Catches a table dropped from the README while its generator stays (it would silently go unchecked)."""
    keys = set(re.findall(r"<!-- generated: (\S+) -->", README.read_text()))
    assert keys == set(readme.BLOCKS)


def test_planted_wrong_number_is_caught():
    """Catches a renderer that keeps the README's text instead of recomputing it (inline and block)."""
    text = README.read_text()
    first = re.search(r"(<!-- v: [^\n]*? -->)([^\n]*?)(<!-- /v -->)", text)
    planted = text[:first.start(2)] + "999.99" + text[first.end(2):]
    line = text.count("\n", 0, first.start()) + 1
    _, changes = readme.render(planted, str(ROOT))
    assert [(c[0], c[2]) for c in changes] == [(line, "999.99")]
    summary = readme.summarize(changes)
    assert "\n" not in summary and f"line {line}" in summary and "999.99" in summary

    # One digit changed inside a generated table.
    block = re.search(r"<!-- generated: from_scratch -->\n(.*?)<!-- /generated -->", text, re.S)
    cell = re.search(r"\| (\d+\.\d\d) ±", block.group(1))   # the first accuracy-like cell of the table
    at = block.start(1) + cell.start(1)
    digits = cell.group(1)
    wrong = digits[:-2] + digits[-1] + digits[-2] if digits[-1] != digits[-2] else digits[:-1] + str((int(digits[-1]) + 1) % 10)
    _, changes = readme.render(text[:at] + wrong + text[at + len(digits):], str(ROOT))
    assert [c[1] for c in changes] == ["generated: from_scratch"]


# Phrases in the README's results prose that carry a digit but are no measurement of ours: the
# paper's references and figures, definitions, the machine. Anything else with a digit outside a
# marker is a number typed by hand.
NOT_MEASUREMENTS = [
    r"\d-core", r"1-minute", r"float32", r"MNIST-1D", r"\d-digit",             # the machine, the data
    r"Figs?\. [\d–]+", r"Figures? [\d–]+", r"95% interval", r"eq\. \d+", r"Theorem \d", r"Proposition \d", r"App(endix|\.) B\.\d",
    r"within 50–200 of 800\s+epochs", r"within 50 of 800 epochs", r"\(800 epochs\)",  # the paper's
    r"about 80%",                                                                     # the paper's
    r"O\([^)]*\)", r"K_[0T]", r"1/\(2?ξτ\)", r"1/\(ξ max", r"\(η/2\)", r"T/[48]", r"ρ = 1/8", r"ρ = 1\b",
    r"\(1/2, 1\]", r"promised 1/2", r"0 = never", r"→ 0", r"from 0", r"exits 1",  # maths, definitions
    r"seed 0", r"epoch 1\b", r"above 80%", r"below\s+0\.25", r"below 0\.1", r"1 device", r"8 simulated",
]


def _prose_numbers(text: str) -> list[str]:
    parts = [text[text.index("<!-- source: experiments/results/bench_ntk"):text.index("## AtteNT training")],
             text[text.index("## Results"):]]
    found = []
    for part in parts:
        part = re.sub(r"<!-- generated: .*?<!-- /generated -->", "", part, flags=re.S)
        part = re.sub(r"<!-- v: [^\n]*? -->[^\n]*?<!-- /v -->", "", part)
        part = re.sub(r"<!--.*?-->", "", part, flags=re.S)
        part = re.sub(r"`[^`]*`", "", part)                       # commands and names
        part = re.sub(r"\]\([^)]*\)", "]", part)                  # link targets
        part = "\n".join(line for line in part.splitlines() if not line.startswith("#"))  # headings
        for phrase in NOT_MEASUREMENTS:
            part = re.sub(phrase, "", part)
        found += [part[max(0, m.start() - 30):m.end() + 10].replace("\n", " ") for m in re.finditer(r"\d", part)]
    return found


def test_no_number_typed_by_hand_in_the_results_prose():
    """Catches a measured number retyped into the prose outside a marker (it would go stale unseen)."""
    assert _prose_numbers(README.read_text()) == []


def test_prose_scan_sees_a_typed_number():
    """Catches a prose scan that strips too much (the test above would then pass on anything)."""
    text = README.read_text().replace("## Results\n", "## Results\n\nAtteNT reaches 93.18% here.\n", 1)
    assert any("93.18" in hit for hit in _prose_numbers(text))


# --------------------------------------------------------------------------- the CLI on a small README

def _write(tmp_path, body: str, data: dict) -> pathlib.Path:
    (tmp_path / "r.json").write_text(json.dumps(data))
    path = tmp_path / "README.md"
    path.write_text(body)
    return path


DATA = {"summary": {"a": [1.0, 2.0, 4.0], "b": [1.0, 1.0, 1.0]},
        "rows": [{"devices": 1, "method": "x", "t": [3.0]}, {"devices": 8, "method": "x", "t": [5.0]}]}


def test_check_then_rewrite(tmp_path, capsys):
    """Catches --check passing a wrong value, writing the file, or a rewrite that leaves it stale."""
    path = _write(tmp_path, "<!-- source: r.json -->\nmean <!-- v: mean(summary.a):.2f -->2.33<!-- /v -->, ratio "
                            "<!-- v: mean(summary.a / summary.b - 1):.1% -->0%<!-- /v -->, t on 8: "
                            "<!-- v: one(rows, devices=8).t[0]:.0f -->5<!-- /v -->\n", DATA)
    before = path.read_text()
    assert readme.main(["--readme", str(path), "--check"]) == 1
    out = capsys.readouterr().out.strip()
    assert "\n" not in out and "line 2" in out and "'0%'" in out and "'133.3%'" in out
    assert path.read_text() == before
    assert readme.main(["--readme", str(path)]) == 0
    assert "133.3%" in path.read_text() and "2.33" in path.read_text()
    assert readme.main(["--readme", str(path), "--check"]) == 0


@pytest.mark.parametrize("marker, named", [
    ("<!-- source: r.json -->\n\nx <!-- v: summary.c:.2f -->1<!-- /v -->", "'summary.c'"),
    ("<!-- v: missing.json#summary.a:.2f -->1<!-- /v -->", "'missing.json'"),
    ("<!-- source: r.json --> <!-- v: one(rows, method='x'):.2f -->1<!-- /v -->", "method='x'"),
    ("<!-- generated: no_such_block -->\nx\n<!-- /generated -->", "'no_such_block'"),
])
def test_missing_key_is_a_one_line_error_naming_it(tmp_path, capsys, marker, named):
    """Catches a traceback, or an error that does not say which key/file/marker is wrong."""
    path = _write(tmp_path, marker + "\n", DATA)
    with pytest.raises(ValueError) as err:
        readme.render(path.read_text(), str(tmp_path))
    assert "\n" not in str(err.value) and named in str(err.value)
    assert readme.main(["--readme", str(path), "--check"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and named in message


def test_values_are_computed_not_parsed():
    """Catches an evaluator that mishandles what the README relies on: NaN for None, ± formatting, the minus sign."""
    results = readme_values.Results(".")
    assert readme_values.format_value(readme_values.evaluate("mean(x)", {"x": [1.0, None, 3.0]}, results, "t"), ".1f") == "2.0"
    assert readme_values.format_value(readme_values.evaluate("ms(x)", {"x": [1.0, 3.0]}, results, "t"), ".2f") == "2.00 ± 1.41"
    assert readme_values.format_value(readme_values.evaluate("-x", {"x": 1.5}, results, "t"), ".1f") == "−1.5"
    assert readme_values.format_value(readme_values.evaluate("x + 1", {"x": [16, None]}, results, "t"), "d") == "17, —"
    for agrees, word in ((True, "agrees"), (False, "disagrees"), (None, "not resolved")):
        assert readme_values.evaluate("claim(c)", {"c": agrees}, results, "t") == word
    with pytest.raises(ValueError, match="claim"):   # a NaN or a list is no verdict (bool() of either is truthy)
        readme_values.evaluate("claim(c)", {"c": float("nan")}, results, "t")
    # Paired differences: the t interval of a - b over seeds (catches the difference's sign or pairing lost).
    mean, lo, hi = readme_values.evaluate("paired(a - b)", {"a": [3.0, 5.0, 4.0], "b": [1.0, 2.0, 2.0]}, results, "t")
    assert mean == pytest.approx(7.0 / 3.0) and lo < mean < hi and hi - mean == pytest.approx(mean - lo)
    assert readme_values.evaluate("direction(a - b)", {"a": [3.0, 5.0, 4.0], "b": [1.0, 2.0, 2.0]}, results, "t") == "better"
    assert readme_values.evaluate("direction(b - a)", {"a": [3.0, 5.0, 4.0], "b": [1.0, 2.0, 2.0]}, results, "t") == "worse"
    assert readme_values.evaluate("direction(a - b)", {"a": [3.0, -5.0], "b": [1.0, 2.0]}, results, "t") == "not resolved"
    with pytest.raises(ValueError, match="unknown function '__import__'"):  # never eval
        readme_values.evaluate("__import__('os')", {}, results, "t")
    with pytest.raises(ValueError, match="not part of the expression language"):
        readme_values.evaluate("(lambda: 1)()", {}, results, "t")


def test_malformed_marker_is_an_error_not_skipped():
    """Catches a marker the pattern silently skips (``:.1%-->`` without its space): its hand-typed value would
    stay in the README, unchecked, while --check says every value matches."""
    text = README.read_text() + "\nbroken <!-- v: summary.x:.1%-->12%<!-- /v --> here\n"
    with pytest.raises(ValueError, match=r"README line \d+: malformed marker"):
        readme.render(text, str(ROOT))
