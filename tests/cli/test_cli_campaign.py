"""`care campaign list|dagfiles` and `care validate` with campaigns."""

from __future__ import annotations

import shutil
from pathlib import Path

from caretouch.rules.campaigns import dag_file_text
from conftest import RULES_DIR, Care


def rules_copy(tmp_path: Path) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES_DIR / "campaigns", rules / "campaigns")
    shutil.copy(RULES_DIR / "policy.yaml", rules / "policy.yaml")
    shutil.copy(RULES_DIR / "birthday.yaml", rules / "birthday.yaml")
    return rules


def test_validate_and_list_show_the_campaigns(care: Care, tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    care.rules = rules
    result = care("validate")
    assert result.exit_code == 0, result.output
    assert "1 rule(s) valid: birthday" in result.output
    assert (
        "2 campaign(s) valid: spring-festival-vip (2027-02-06), "
        "year-end-service-notice (2026-12-15)"
    ) in result.output
    care("store", "init")
    listed = care("campaign", "list")
    assert listed.exit_code == 0, listed.output
    assert "care_campaign_year-end-service-notice" in listed.output
    assert "30 9 15 12 *" in listed.output


def test_dagfiles_writes_one_file_per_campaign_and_prunes(care: Care, tmp_path: Path) -> None:
    rules = rules_copy(tmp_path)
    care.rules = rules
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "care_campaign_gone.py").write_text(dag_file_text("gone"), encoding="utf-8")
    first = care("campaign", "dagfiles", "--dags", str(dags))
    assert first.exit_code == 0, first.output
    assert "2 written, 0 unchanged, 0 removed" in first.output
    assert "orphan:" in first.output
    again = care("campaign", "dagfiles", "--dags", str(dags), "--prune")
    assert "0 written, 2 unchanged, 1 removed" in again.output
    assert sorted(p.name for p in dags.iterdir()) == [
        "care_campaign_spring-festival-vip.py",
        "care_campaign_year-end-service-notice.py",
    ]
    # A broken campaign file still gets its DAG file: Airflow must show its import error.
    (rules / "campaigns" / "broken.yaml").write_text("description: x\n", encoding="utf-8")
    care("campaign", "dagfiles", "--dags", str(dags))
    assert (dags / "care_campaign_broken.py").read_text(encoding="utf-8") == dag_file_text("broken")
    invalid = care("validate")
    assert invalid.exit_code == 1
    assert f"{rules / 'campaigns' / 'broken.yaml'}:1:1: missing required field" in invalid.output
