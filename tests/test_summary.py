import json
import pathlib

import pytest

from trainers import summary
from trainers.core import network_table


def test_summary_reports_measured_numbers_beside_the_papers(capsys):
    rows = summary.main(["--arch", "resnet20", "resnet18", "plain20", "--format", "json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == rows
    by_name = {row["network"]: row for row in rows}
    r20, r18, p20 = by_name["resnet20"], by_name["resnet18"], by_name["plain20"]
    assert (r20["depth"], r20["total_stride"], r20["shortcut"], r20["input"]) == (20, 4, "A", "32x32x3")
    assert round(r20["params"] / 1e6, 2) == r20["paper_params"] / 1e6 == 0.27
    assert 40.5e6 < r20["flops"] < 41.5e6
    assert r18["keras_backbone_params"] == r18["paper_keras_backbone_params"] == 11_186_112
    assert (r18["total_stride"], r18["shortcut"], r18["paper_flops"]) == (32, "B", 1.8e9)
    assert p20["params"] == r20["params"] and p20["shortcut"] == "none" and p20["paper_error"] is None


def test_summary_text_table_has_a_row_per_network(capsys):
    summary.main(["--arch", "resnet20", "resnet32"])
    lines = capsys.readouterr().out.splitlines()
    assert "paper params" in lines[0] and "FLOPs" in lines[0]
    assert lines[1].split()[0] == "resnet20" and lines[2].split()[0] == "resnet32"
    assert "0.270M" in lines[1] and "8.75" in lines[1]


def test_summary_rejects_unknown_networks(capsys):
    with pytest.raises(SystemExit) as info:
        summary.main(["--arch", "resnet99"])
    assert info.value.code == 2
    assert "invalid choice: 'resnet99'" in capsys.readouterr().err


def test_docs_table_is_what_summary_prints():
    """The docs' table of networks is summary.py's output: spot-check rows of
    each kind (CIFAR, basic ImageNet, bottleneck ImageNet, plain, bag-of-tricks)
    so the document cannot drift from the code."""
    root = pathlib.Path(__file__).resolve().parents[1]
    names = ["resnet20", "plain20", "resnet18", "resnet50", "resnet50d"]
    expected = network_table.render([network_table.summarize(name) for name in names], "markdown").splitlines()
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    holding = [page for page in pages if expected[0] in page.read_text().splitlines()]
    assert holding, "no page of README.md or docs/ holds summary.py's table of networks"
    for page in holding:
        table = {line.split("|")[1].strip(): line for line in page.read_text().splitlines() if line.startswith("| ")}
        for name, line in zip(names, expected[2:]):
            assert table[name] == line, page.name
