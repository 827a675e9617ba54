"""A walk through the CLI as a user meets it: every bad input ends in one line and exit 1 or 2.

Each case runs ``leadscore`` as a subprocess (as a user would) in its own directory, with no
LEADSCORE_* variable unless the case sets one. The inspection commands after a real demo are
walked by ``tests/e2e/test_demo.py`` (reusing its run; a demo takes minutes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.support import INSPECTION_COMMANDS, assert_one_line_failure, leadscore, leadscore_here


@pytest.fixture()
def migrated(tmp_path: Path) -> Path:
    """A directory whose embedded database (./var/leadscore.db) is migrated and empty."""
    result = leadscore("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "leadscore.db").exists()
    return tmp_path


def test_inspection_in_an_empty_directory_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    for args in INSPECTION_COMMANDS + [["explain", "00Q1"]]:
        assert_one_line_failure(leadscore_here(*args, cwd=tmp_path), 1, "no leadscore database at var/leadscore.db")
    # Malformed thresholds are bad usage even with no database: found while parsing the arguments.
    assert_one_line_failure(leadscore_here("tiers", "preview", "A=x", cwd=tmp_path), 2, "'x' is not a number")
    # And once as a user runs it: the console script's process.
    assert_one_line_failure(leadscore("tiers", "show", cwd=tmp_path), 1, "no leadscore database")
    assert not (tmp_path / "var" / "leadscore.db").exists()


def test_inspection_reads_the_demo_database_when_there_is_no_other(tmp_path: Path) -> None:
    demo_url = f"sqlite:///{(tmp_path / 'var' / 'demo' / 'leadscore.db').as_posix()}"
    (tmp_path / "var" / "demo").mkdir(parents=True)  # as the demo makes it: an explicit URL's folder must exist
    assert leadscore("db", "upgrade", cwd=tmp_path, env={"LEADSCORE_DATABASE_URL": demo_url}).returncode == 0
    result = leadscore("models", "list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no model versions yet" in result.stdout
    assert "reading the demo's data in var/demo/leadscore.db" in result.stderr
    assert not (tmp_path / "var" / "leadscore.db").exists()


def test_the_demo_data_is_read_with_the_demos_configuration_unless_another_is_named(tmp_path: Path) -> None:
    # After a demo its data was scored and routed under var/demo/leadscore.yaml: read with the
    # built-in defaults (no connections, no routing rules) a tier preview planned no routing.
    demo = tmp_path / "var" / "demo"
    demo.mkdir(parents=True)
    demo_url = f"sqlite:///{(demo / 'leadscore.db').as_posix()}"
    assert leadscore("db", "upgrade", cwd=tmp_path, env={"LEADSCORE_DATABASE_URL": demo_url}).returncode == 0
    # A configuration that cannot load shows which file a command read.
    (demo / "leadscore.yaml").write_text("tiers: {mode: score}\ntiers: {mode: score}\n")
    result = leadscore_here("tiers", "preview", "A=80", "B=60", "C=30", cwd=tmp_path)
    assert_one_line_failure(result, 1, "var/demo/leadscore.yaml")
    assert "reading the demo's data in var/demo/leadscore.db with its configuration var/demo/leadscore.yaml" \
        in result.stderr
    own = tmp_path / "own.yaml"
    own.write_text("tiers: {mode: score, thresholds: {A: 80, B: 60, C: 30}}\n")
    result = leadscore_here("tiers", "preview", "A=80", "B=60", "C=30", cwd=tmp_path,
                            env={"LEADSCORE_CONFIG_FILE": str(own)})
    assert result.returncode == 0, result.stderr
    assert "with its configuration" not in result.stderr and "reading the demo's data" in result.stderr


def test_crm_commands_after_a_demo_say_its_crm_stopped_with_it(tmp_path: Path) -> None:
    # `route` after `make demo` said only "no CRM connection configured": the demo's CRM was the
    # simulator it ran, and its data in var/demo was routed there.
    for args in (["route"], ["sync"], ["writeback"]):
        plain = leadscore_here(*args, cwd=tmp_path)
        assert_one_line_failure(plain, 1,
                                "no CRM connection in the built-in defaults (LEADSCORE_CONFIG_FILE is not set)")
        assert "demo" not in plain.stderr
    (tmp_path / "var" / "demo").mkdir(parents=True)
    (tmp_path / "var" / "demo" / "leadscore.db").write_bytes(b"")
    for args in (["route"], ["sync"], ["writeback"]):
        result = leadscore_here(*args, cwd=tmp_path)
        # The demo's YAML has connections: the line must not say the demo had none.
        assert_one_line_failure(result, 1, "the demo's connections (var/demo/leadscore.yaml) named the CRM simulator")
        assert "leadscore crmsim serve" in result.stderr and "docs/crmsim.md" in result.stderr


WRITERS_ON_STORED_DATA: list[list[str]] = [
    ["score"], ["train"], ["retrain", "--dry-run"], ["tiers", "set", "A=90", "B=70", "C=40"], ["models", "rollback"],
]


def test_commands_that_change_stored_data_never_create_an_empty_database(tmp_path: Path) -> None:
    # An empty var/leadscore.db would hide the demo's data from every later command.
    for args in WRITERS_ON_STORED_DATA:
        assert_one_line_failure(leadscore_here(*args, cwd=tmp_path), 1, "no leadscore database at var/leadscore.db")
    assert not (tmp_path / "var" / "leadscore.db").exists()


def test_a_named_sqlite_file_that_does_not_exist_is_refused_and_not_created(tmp_path: Path) -> None:
    # A typo in LEADSCORE_DATABASE_URL left an empty file behind on every command, each then
    # saying "no schema yet" about a database the user never meant to make.
    missing = tmp_path / "ls.db"
    config = tmp_path / "leadscore.yaml"  # a connection: without one, sync says that first
    config.write_text("connections: [{name: hs, kind: hubspot, access_token_env: HS_TOKEN}]\n", encoding="utf-8")
    env = {"LEADSCORE_DATABASE_URL": f"sqlite:///{missing}", "LEADSCORE_CONFIG_FILE": str(config)}
    for args in [*INSPECTION_COMMANDS, ["explain", "00Q1"], *WRITERS_ON_STORED_DATA, ["sync"], ["writeback"],
                 ["route"]]:
        assert_one_line_failure(leadscore_here(*args, cwd=tmp_path, env=env), 1,
                                f"no database at {missing} (LEADSCORE_DATABASE_URL names it): run `leadscore db "
                                "upgrade` to create it")
        assert not missing.exists(), args
    # The embedded default says so too, for the commands that do not read a demo's data instead.
    assert_one_line_failure(leadscore_here("sync", cwd=tmp_path, env={"LEADSCORE_CONFIG_FILE": str(config)}), 1,
                            "no database at var/leadscore.db (the embedded default)")
    assert not (tmp_path / "var" / "leadscore.db").exists()


def test_commands_that_change_stored_data_use_the_demo_database_when_there_is_no_other(tmp_path: Path) -> None:
    demo_url = f"sqlite:///{(tmp_path / 'var' / 'demo' / 'leadscore.db').as_posix()}"
    (tmp_path / "var" / "demo").mkdir(parents=True)
    assert leadscore("db", "upgrade", cwd=tmp_path, env={"LEADSCORE_DATABASE_URL": demo_url}).returncode == 0
    for args in WRITERS_ON_STORED_DATA:
        result = leadscore_here(*args, cwd=tmp_path)
        assert "reading the demo's data in var/demo/leadscore.db" in result.stderr, (args, result.stderr)
        assert "no leadscore database" not in result.stderr and "no leadscore schema" not in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "leadscore.db").exists()
    assert "reading the demo's data" in leadscore("models", "list", cwd=tmp_path).stderr


BAD_USAGE: list[tuple[list[str], str]] = [
    (["frobnicate"], "No such command 'frobnicate'"),
    (["score", "--batch-size", "0"], "--batch-size"),
    (["score", "--no-such-option"], "--no-such-option"),
    (["explain"], "Missing argument"),
    (["tiers", "set", "A=eighty", "B=60", "C=30"], "'eighty' is not a number"),
    (["tiers", "set", "A80"], "expected TIER=VALUE"),
    (["tiers", "preview", "A=80%", "B=60", "C=30"], "percentages are for --capacity"),
    (["tiers", "set"], "give thresholds"),
    (["evaluate", "--target", "y"], "--csv"),
]


@pytest.mark.parametrize(("args", "fragment"), BAD_USAGE, ids=[" ".join(a) for a, _ in BAD_USAGE])
def test_bad_usage_exits_2_in_one_line(migrated: Path, args: list[str], fragment: str) -> None:
    assert_one_line_failure(leadscore_here(*args, cwd=migrated), 2, fragment)


def _csv(path: Path, times: list[str]) -> Path:
    rows = ["when,converted,size"] + [f"{t},{i % 2},{(i * 7) % 13 + i % 2}" for i, t in enumerate(times)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_bad_input_exits_1_in_one_line(migrated: Path) -> None:
    d = migrated
    good_times = [f"2024-01-{i % 28 + 1:02d}" for i in range(60)]
    csv = _csv(d / "leads.csv", good_times)
    bad_time_csv = _csv(d / "bad_time.csv", [*good_times[:5], "not a date", *good_times[6:]])
    (d / "bad.yaml").write_text("connections: [{name: x, kind: hubspot\n", encoding="utf-8")
    (d / "markup.yaml").write_text("connections: [{name: '[red]', kind: hubspot}]\n", encoding="utf-8")
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["explain", "00QNOPE"], {}, "no lead with CRM id or internal id '00QNOPE'"),
        # Typed on the command line: no YAML path in the words (a trial read "tiers.thresholds: ...").
        (["tiers", "set", "A=30", "B=60", "C=80"], {}, "error: thresholds must be ordered A > B > C"),
        (["tiers", "set", "--capacity", "A=50%", "B=40%", "C=30%"], {}, "error: capacity shares of A, B and C"),
        (["tiers", "preview", "A=120", "B=60", "C=30"], {}, "error: scores run from 1 to 99: A=120"),
        # Scores stop at 99: A=100 is an empty tier A, not a strict one.
        (["tiers", "set", "A=100", "B=90", "C=50"], {}, "scores run from 1 to 99: A=100 would leave tier A empty"),
        (["models", "promote", "v999"], {}, "v999"),
        (["models", "rollback"], {}, "no champion"),
        (["score"], {}, "no champion model yet"),
        (["train"], {}, "no labelled leads"),
        (["sync", "--connection", "[/]"], {}, "unknown connection '[/]'"),
        (["sync", "--connection", "[red]"], {}, "unknown connection '[red]'"),
        (["writeback", "--connection", "[/]"], {}, "no CRM connection in"),
        (["route"], {}, "no CRM connection in"),
        # The message quotes a pattern with brackets: printed as it is, not parsed as markup.
        (["sync"], {"LEADSCORE_CONFIG_FILE": str(d / "markup.yaml")}, "'^[a-z][a-z0-9_-]{0,63}$'"),
        (["evaluate", "--csv", str(d / "missing.csv"), "--target", "converted"], {}, "CSV file not found"),
        (["evaluate", "--csv", str(csv), "--target", "nope"], {}, "nope"),
        (["evaluate", "--csv", str(csv), "--target", "converted", "--time-column", "nope"], {}, "'nope'"),
        (["evaluate", "--csv", str(bad_time_csv), "--target", "converted", "--time-column", "when",
          "--min-per-class", "5"], {}, "'not a date' (data row 6) is not a date"),
        (["config", "check"], {"LEADSCORE_CONFIG_FILE": str(d / "bad.yaml")}, "bad.yaml"),
        (["config", "check"], {"LEADSCORE_CONFIG_FILE": str(d)}, str(d)),
        (["config", "check"], {"LEADSCORE_CONFIG_FILE": str(d / "missing.yaml")}, "config file not found"),
        (["models", "list"], {"LEADSCORE_DATABASE_URL": "oracle://x"}, "LEADSCORE_DATABASE_URL"),
        (["report", "--html", str(d / "leads.csv" / "report.html")], {}, "cannot write"),
    ]
    for args, env, fragment in cases:
        assert_one_line_failure(leadscore_here(*args, cwd=d, env=env), 1, fragment)


def test_unexpected_error_is_one_line_plus_log_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    # A database file that is not a database: nothing leadscore expects, so "unexpected".
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "leadscore.db").write_text("not a database", encoding="utf-8")
    line = assert_one_line_failure(leadscore("models", "list", cwd=tmp_path), 1, "unexpected")
    log = tmp_path / "var" / "log" / "leadscore-cli.log"
    assert f"details in {Path('var') / 'log' / 'leadscore-cli.log'}" in line
    assert "Traceback" in log.read_text(encoding="utf-8")
    debug = leadscore("models", "list", "--debug", cwd=tmp_path)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error: unexpected")


# Every command with --json PATH, with what else it needs to get as far as its work.
JSON_COMMANDS = [
    ["train"], ["score"], ["explain", "00Q1"], ["tiers", "preview", "A=80", "B=60", "C=40"],
    ["tiers", "set", "A=80", "B=60", "C=40"], ["evaluate", "--csv", "x.csv", "--target", "y"], ["monitor"],
    ["retrain"], ["status"], ["sync"], ["writeback"], ["route"], ["demo"],
]


@pytest.mark.parametrize("args", JSON_COMMANDS, ids=lambda a: "-".join(a[:2]))
def test_a_json_path_that_cannot_be_written_is_refused_before_any_work(migrated: Path, args: list[str]) -> None:
    """A trial's `train --json /proc/nope/t.json` trained and registered a model, then failed with
    "unexpected FileNotFoundError"; `train --json DIR` the same with IsADirectoryError; a rerun
    registered another model. The path is checked while the arguments are read: one usage line,
    exit 2, before the database is even opened."""
    folder = migrated / "out"
    folder.mkdir()
    said = assert_one_line_failure(leadscore(*args, "--json", str(folder), cwd=migrated), 2, "is a directory")
    assert "--json" in said
    blocked = migrated / "blocked"
    blocked.write_text("a file, not a folder", encoding="utf-8")
    assert_one_line_failure(leadscore(*args, "--json", str(blocked / "x.json"), cwd=migrated), 2,
                            f"cannot write {blocked / 'x.json'}")


def test_a_json_path_in_a_new_folder_is_made_and_left_only_when_written(migrated: Path) -> None:
    target = migrated / "new" / "deeper" / "status.json"
    done = leadscore("status", "--json", str(target), cwd=migrated)
    assert target.is_file() and done.returncode in (0, 1), done.stderr  # written before a failing exit too
    checked_only = migrated / "unused.json"
    failed = leadscore("explain", "00QNOPE", "--json", str(checked_only), cwd=migrated)
    assert failed.returncode == 1 and not checked_only.exists()  # the check leaves no empty file behind
