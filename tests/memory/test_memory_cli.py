"""The ``holdfast memory`` command group, run through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from holdfast.cli.main import cli


def run(*args: str, input: str | None = None, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["memory", "--embedder", "none", *args], input=input)
    assert result.exit_code == code, result.output + repr(result.exception)
    return result.stdout


def test_add_search_show_edit_forget(holdfast_home: Path) -> None:
    added = json.loads(
        run("add", "The VPN gateway is vpn2.internal.", "-n", "ops", "--entity", "VPN", "--json")
    )
    item_id = added["id"]
    assert added["item"]["trust"] == "owner"
    hits = json.loads(run("search", "vpn gateway", "-n", "ops", "--json"))
    assert hits[0]["id"] == item_id and hits[0]["citation"].startswith("ops/MEMORY.md#")
    assert "vpn2.internal" in run("show", item_id, "-n", "ops")
    run("edit", item_id, "-n", "ops", "--text", "The VPN gateway is vpn3.internal.")
    assert json.loads(run("show", item_id, "-n", "ops", "--json"))["text"].endswith(
        "vpn3.internal."
    )
    sup = json.loads(
        run(
            "edit",
            item_id,
            "-n",
            "ops",
            "--text",
            "-",
            "--supersede",
            "--json",
            input="The VPN gateway is vpn4.",
        )
    )
    assert sup["old_id"] == item_id
    run("forget", sup["id"], "-n", "ops")
    assert run("search", "vpn gateway", "-n", "ops") == "no results\n"
    run("forget", item_id, "-n", "ops", "--purge", "--yes")
    assert "vpn2" not in (holdfast_home / "memory" / "ops" / "MEMORY.md").read_text()


def test_stdin_entities_stats_export_import_reindex(holdfast_home: Path, tmp_path: Path) -> None:
    run("add", "-", "-n", "a", input="Alice Chen owns the billing service.")
    run("add", "Alice C. is on leave in May.", "-n", "a")
    ents = json.loads(run("entities", "-n", "a", "--json"))
    assert ents["Alice Chen"] == ["Alice C."]
    stats = json.loads(run("stats", "-n", "a", "--json"))
    # two facts about Alice Chen, and the observation that consolidates them
    assert stats["items"] == 3 and stats["issue_list"] == []
    out = tmp_path / "a.jsonl"
    run("export", "-n", "a", "-o", str(out))
    assert len(out.read_text().splitlines()) == 3
    imported = json.loads(run("import", str(out), "-n", "b", "--json"))
    assert imported["imported"] == 3 and imported["skipped"] == [] and imported["errors"] == []
    assert json.loads(run("reindex", "-n", "b", "--json"))["items_indexed"] == 3
    assert len(json.loads(run("search", "billing", "-n", "b", "--json"))) == 1
    found = json.loads(run("search", "billing", "-n", "b", "--observations-first", "--json"))
    assert [h["kind"] for h in found] == ["observation", "fact"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    result = CliRunner().invoke(cli, ["memory", "--embedder", "none", "import", str(bad)])
    assert result.exit_code != 0


@pytest.mark.parametrize("args", [["show", "m-nope"], ["add", "x", "-n", "Bad/NS"]])
def test_bad_input_is_a_user_error(args: list[str]) -> None:
    from holdfast.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["memory", "--embedder", "none", *args])
    assert exc.value.code == 2
