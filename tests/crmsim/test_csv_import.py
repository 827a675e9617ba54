"""CSV import of a real data set (X Education) into crmsim people, activity and outcomes."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from crmsim.csv_import import X_EDUCATION_MAPPING, CsvImportError, load_people_from_csv
from crmsim.funnel import World
from tests.crmsim.test_funnel import RecordingSink

LEADS_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "x_education" / "Leads.csv"


@pytest.fixture(scope="module")
def leads_csv() -> Path:
    if not LEADS_CSV.exists():
        pytest.skip(f"real data set absent: {LEADS_CSV} (see /work/shared/data/README.md)")
    return LEADS_CSV


def test_population_from_x_education(leads_csv: Path) -> None:
    population = load_people_from_csv(leads_csv, X_EDUCATION_MAPPING, target_col="Converted", seed=0)
    assert len(population.people) == 9240
    converted = sum(offset is not None for offset in population.converted_offsets)
    assert converted == 3561
    # Values as the CRM holds them: the form's "Select" placeholder is kept for the audit to find.
    assert Counter(p.industry for p in population.people)["Select"] == 1942
    assert Counter(p.country for p in population.people)["India"] == 6492
    assert len(set(population.source_keys)) == 9240
    with open(leads_csv, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = [next(reader), next(reader)]
    assert population.source_keys[0] == rows[0]["Prospect ID"]
    assert population.people[0].lead_source == rows[0]["Lead Source"]
    # Activity derived from TotalVisits x page views, plus one "Last Activity" event.
    per_person = Counter(index for index, *_rest in population.activities)
    for index, expected_type in ((0, "web_visit"), (1, "email_open")):
        row = rows[index]
        visits = int(float(row["TotalVisits"] or 0))
        views = max(1, round(float(row["Page Views Per Visit"] or 0)))
        assert per_person[index] == min(visits * views, 40) + 1
        last = [event for event in population.activities if event[0] == index][-1]
        assert last[1] == expected_type and last[3] == row["Last Activity"]
    assert {row[1] for row in population.activities} >= {"web_visit", "email_open", "email_click", "form_submit"}


def test_deterministic_and_seeded(leads_csv: Path) -> None:
    one = load_people_from_csv(leads_csv, X_EDUCATION_MAPPING, target_col="Converted", seed=1)
    two = load_people_from_csv(leads_csv, X_EDUCATION_MAPPING, target_col="Converted", seed=1)
    other = load_people_from_csv(leads_csv, X_EDUCATION_MAPPING, target_col="Converted", seed=2)
    assert [repr(p) for p in one.people] == [repr(p) for p in two.people]
    assert one.activities == two.activities
    assert [p.created_at for p in one.people] != [p.created_at for p in other.people]


def test_world_from_csv_feeds_sinks_and_reports_unknown_probability(leads_csv: Path) -> None:
    world = World.from_csv(str(leads_csv), seed=0, history_days=400)
    sink = RecordingSink(world.clock)
    world.attach(sink)
    world.generate()
    truth = world.truth()
    assert len(truth) == 9240 == len(sink.people)
    assert all(row["true_probability"] is None for row in truth)
    created = sorted(p.created_at for p in sink.people.values())
    assert created[0] >= world.epoch and created[-1] < world.now
    converted_by_now = sum(row["converted"] for row in truth)
    assert 3000 < converted_by_now < 3561  # conversions of the latest leads lie in the future
    world.advance(120)
    assert sum(row["converted"] for row in world.truth()) == 3561
    stamps = [when for _name, when, _entity in sink.calls]
    assert stamps == sorted(stamps)


def test_bad_mapping_and_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("id,visits,won\na,3,1\nb,x,0\n", encoding="utf-8")
    with pytest.raises(CsvImportError, match="column 'nope'"):
        load_people_from_csv(path, {"key": "nope"}, target_col="won", seed=0)
    with pytest.raises(CsvImportError, match="unknown mapping role"):
        load_people_from_csv(path, {"shoe_size": "id"}, target_col="won", seed=0)
    with pytest.raises(CsvImportError, match="'visits' row 3"):
        load_people_from_csv(path, {"key": "id", "visits": "visits"}, target_col="won", seed=0)
    path.write_text("id,won\na,maybe\n", encoding="utf-8")
    with pytest.raises(CsvImportError, match="not 0/1"):
        load_people_from_csv(path, {"key": "id"}, target_col="won", seed=0)
