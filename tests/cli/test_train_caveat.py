"""A test AUC measured on a handful of converted leads says so wherever it is shown.

A small org's history (600 leads) trains past the guard of 20 converted leads per class, yet its
time-ordered test part holds only a few conversions: `leadscore train` and `models list` must not
headline that AUC as if it could be judged (the monitor refuses to judge a live AUC below 20 of
each class; the same bar here).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from sqlalchemy.orm import Session

from scoring.monitoring.stats import MIN_PERFORMANCE_POSITIVES
from scoring.registry import auc_caveat
from store.db import make_engine
from store.migrate import upgrade
from tests.cli.support import leadscore
from tests.factories import generate_world, load_world


def test_train_and_models_list_flag_a_test_auc_on_too_few_conversions(tmp_path: Path) -> None:
    url = f"sqlite:///{(tmp_path / 'store.db').as_posix()}"
    upgrade(url)
    engine = make_engine(url)
    world, sink = generate_world(seed=3, leads=600)
    with Session(engine) as session:
        load_world(session, sink)
        session.commit()
    engine.dispose()
    config = tmp_path / "leadscore.yaml"
    config.write_text("training: {min_per_class: 20}\n", encoding="utf-8")
    env = {"LEADSCORE_DATABASE_URL": url, "LEADSCORE_CONFIG_FILE": str(config)}

    trained = leadscore("train", "--json", str(tmp_path / "train.json"), cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads((tmp_path / "train.json").read_text())
    split = summary["split"]
    # Each excluded feature is named once, with why (as the card does), not again as a finding (a
    # trial read "web_visit_90d: strongly predictive alone" for a feature the card lists as excluded).
    dropped = summary["audit"]["dropped"]
    assert dropped, summary["audit"]
    lines = [" ".join(line.split()) for line in trained.stdout.splitlines()]
    excluded = [line for line in lines if line.startswith(f"audit: {len(dropped)} feature")]
    assert len(excluded) == 1 and all(f"{name} ({why})" in " ".join(trained.stdout.split())
                                      for name, why in dropped.items()), trained.stdout
    assert not [line for line in lines if any(line.startswith(f"audit: {name}:") for name in dropped)], lines
    converted = split["test_positives"]
    assert converted < MIN_PERFORMANCE_POSITIVES <= split["train_positives"], split  # the case itself
    said = " ".join(trained.stdout.split())
    leads = "lead" if converted == 1 else "leads"
    assert (f"caution: the test AUC rests on {converted} converted test {leads}: too few to judge "
            f"({MIN_PERFORMANCE_POSITIVES} of each class needed)") in said

    listed = leadscore("models", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith("m"))
    assert row.split()[5].endswith("*"), listed.stdout
    assert "* too few test leads of one class to judge the AUC" in listed.stdout
    # The card's metrics read as judged without it: `models show` and the console's Model page say it.
    caution = (f"Caution: the test AUC rests on {converted} converted test {leads}: too few to judge "
               f"({MIN_PERFORMANCE_POSITIVES} of each class needed).")
    shown = leadscore("models", "show", row.split()[0], cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert caution in " ".join(shown.stdout.split()), shown.stdout[-2000:]
    # Revops reading the tiers this champion's scores fill are told too (a 200-lead trial put 81 %
    # of the open leads in tier A under such a champion, and `tiers show` said nothing of it).
    scored = leadscore("score", "--all", cwd=tmp_path, env=env)
    assert scored.returncode == 0, scored.stderr
    # Piped, the progress bar stays off: it left an empty first line in a trial's output.
    assert scored.stdout.startswith("scored ") and scored.stderr == "", (scored.stdout[:200], scored.stderr[:200])
    tiers = leadscore("tiers", "show", cwd=tmp_path, env=env)
    assert tiers.returncode == 0, tiers.stderr
    told = " ".join(tiers.stdout.split())
    assert f"caution: the scores come from champion {row.split()[0]}, and the test AUC rests on {converted} " \
        f"converted test {leads}" in told, told
    counts = {line.split(":")[0].strip(): int(line.split()[1]) for line in tiers.stdout.splitlines()
              if line.strip()[:2] in ("A:", "B:", "C:", "D:")}
    assert f"{sum(counts.values())} open leads hold a score" in told and sum(counts.values()) > 0, told
    from starlette.testclient import TestClient

    from config.app_config import load_config
    from web.app import create_app
    from web.auth import Authenticator, parse_users

    engine = make_engine(url)
    try:
        app = create_app(Authenticator(parse_users("ann:pw:viewer")), engine_factory=lambda: engine,
                         config=load_config(config), broker_url=None)
        page = TestClient(app).get("/model", auth=("ann", "pw")).text
    finally:
        engine.dispose()
    assert page.count(html.escape(caution, quote=False)) == 2, page  # below the families, in the card


def test_enough_of_each_class_or_no_counts_is_no_caveat() -> None:
    enough = MIN_PERFORMANCE_POSITIVES
    assert auc_caveat({"test_rows": 2 * enough, "test_positives": enough}) is None
    assert auc_caveat(None) is None and auc_caveat({"kind": "time"}) is None
    few_unconverted = auc_caveat({"test_rows": 100, "test_positives": 95})
    assert few_unconverted is not None and "rests on 5 unconverted test leads" in few_unconverted
    one = auc_caveat({"test_rows": 100, "test_positives": 1})
    assert one is not None and "rests on 1 converted test lead: too few" in one
