"""The OpenAPI contract: typed parameters, response models, documented errors and a bearer
scheme; and Schemathesis (a real client, generating requests from the schema) against a real
`metrics-etl serve` over a generated warehouse, in positive and negative modes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from conftest import build
from metrics_etl.generator.generate import generate
from metrics_etl.serve.keys import KeyStore
from metrics_etl.serve.reader import ANALYTICS, READ_FIELDS, WIDTHS, open_snapshot
from served import serving, wait_ready

AS_OF = dt.datetime(2018, 1, 1, tzinfo=dt.UTC)
TESTS = Path(__file__).parent
REPORT_STATS = "/batch/{organization}/report_stats"
OPERATIONS = [*(f"/api/v4/analytics/{e}" for e in ANALYTICS), REPORT_STATS, "/healthz", "/readyz", "/metrics"]  # fmt: skip
RUN_S = 300  # a generous bound: 15-25 s on a quiet machine


def chosen(warehouse: Path) -> dict:
    """Data for the schema's examples: the account with the most reports, its busiest channel
    with selections, a selectable field selected there, its organization and the date range."""
    with open_snapshot(warehouse) as snap:
        row = snap.conn.execute(
            """
            select
                c.account_id,
                s.channel_id,
                s.field_id,
                a.username,
                min(r.created_at) as first_at,
                max(r.created_at) as last_at
            from fct_report_selections as s
            join dim_channels as c using (channel_id)
            join dim_fields as f using (field_id)
            join dim_accounts as a on a.account_id = c.account_id
            join fct_reports as r on r.channel_id = s.channel_id
            where not c.is_deleted
                and f.field_type in ('Category', 'DropDown', 'Radio')
                and f.account_id = c.account_id
            group by all
            order by count(*) desc, c.account_id, s.channel_id, s.field_id
            limit 1
            """
        ).fetchone()
    assert row is not None, "the generated warehouse has no selections to test with"
    account, channel, field, org, first_at, last_at = row
    return {
        "account": account,
        "channel_id": channel,
        "field_id": field,
        "organization": org,
        "start_date": first_at.date().isoformat(),
        "end_date": (last_at.date() + dt.timedelta(days=1)).isoformat(),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A generated warehouse, a key of its busiest account, and a real server over it."""
    root = tmp_path_factory.mktemp("openapi")
    raw, wh = root / "raw", root / "wh"
    generate(raw, events=1000)
    assert build(raw, wh, AS_OF).status == "published"
    data = chosen(wh)
    _, key = KeyStore(wh).create(data["account"])
    with serving(wh, root / "server.log") as served:
        wait_ready(served)
        yield served, key, data, root


def test_the_schema_is_typed(server) -> None:
    served, _, _, _ = server
    spec = served.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "description": "An API key: `metrics-etl keys create`",
        "scheme": "bearer",
    }
    assert "422" not in json.dumps(spec)
    assert sorted(spec["paths"]) == sorted(OPERATIONS)
    for endpoint in ANALYTICS:
        operation = spec["paths"][f"/api/v4/analytics/{endpoint}"]["get"]
        assert operation["security"] == [{"HTTPBearer": []}]
        assert set(operation["responses"]) == {"200", "304", "400", "401", "404", "503"}
        for status in ("400", "401", "404"):
            schema = operation["responses"][status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}
        ok = operation["responses"]["200"]
        assert {"X-Snapshot-Id", "ETag"} <= set(ok["headers"])
        assert ok["content"]["application/json"]["schema"] != {}
        found = {p["name"]: p for p in operation["parameters"]}
        for name in ("channel_id", "start_date", "end_date"):
            assert found[name]["required"] and found[name]["description"]
        assert found["channel_id"]["schema"]["type"] == "integer"
        assert found["start_date"]["schema"]["pattern"]
    params = {
        e: {p["name"]: p for p in spec["paths"][f"/api/v4/analytics/{e}"]["get"]["parameters"]}
        for e in ANALYTICS
    }
    assert params["reports_over_time"]["datetime_range_width"]["schema"]["enum"] == list(WIDTHS)
    fields = params["reports_read"]["fields"]
    assert fields["schema"]["items"]["enum"] == list(READ_FIELDS)
    assert (fields["style"], fields["explode"]) == ("form", False)
    assert params["reports_per_field_selection"]["field_id"]["required"]
    stats = {p["name"]: p for p in spec["paths"][REPORT_STATS]["get"]["parameters"]}
    assert stats["include_spaces"]["schema"]["enum"] == ["all"]
    assert stats["per_page"]["schema"]["maximum"] == 1000
    assert "_links" in spec["components"]["schemas"]["ReportStats"]["properties"]


def with_examples(spec: dict, data: dict) -> dict:
    """The schema with the test warehouse's ids and range as parameter examples."""
    for item in spec["paths"].values():
        for parameter in item["get"].get("parameters", []):
            if parameter["name"] in data:
                parameter["example"] = data[parameter["name"]]
    return spec


def test_schemathesis_finds_nothing_and_reaches_every_endpoint(server) -> None:
    """Every phase (examples, coverage, fuzzing, stateful), positive and negative data, every
    check: no failure, no 5xx, and valid data reaches a 200 on every operation."""
    served, key, data, root = server
    schema = root / "schema.json"
    schema.write_text(json.dumps(with_examples(served.get("/openapi.json").json(), data)))
    cassette = root / "cassette.yaml"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "openapi_hooks",
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        str(schema),
        f"--url={served.url}",
        f"--header=Authorization: Bearer {key}",
        "--mode=all",
        "--checks=all",
        "--max-examples=10",
        "--seed=1",
        "--workers=1",
        "--report=vcr",
        f"--report-vcr-path={cassette}",
    ]
    run = subprocess.run(
        command, env=env, cwd=root, capture_output=True, text=True, timeout=RUN_S, check=False
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "No issues found" in run.stdout, run.stdout[-3000:]
    interactions = yaml.safe_load(cassette.read_text())["http_interactions"]
    statuses = Counter()
    for interaction in interactions:
        path = urlsplit(interaction["request"]["uri"]).path
        operation = REPORT_STATS if path.startswith("/batch/") else path
        mode = (interaction.get("generation") or {}).get("mode")
        statuses[operation, mode, int(interaction["response"]["status"]["code"])] += 1
        failed = [c["name"] for c in interaction["checks"] if c["status"] == "FAILURE"]
        assert not failed, (interaction["request"]["uri"], failed)
    assert not [k for k in statuses if k[2] >= 500], statuses
    assert {k[1] for k in statuses} >= {"positive", "negative"}
    for operation in OPERATIONS:
        assert statuses[operation, "positive", 200] >= 1, (operation, statuses)
    for endpoint in ANALYTICS:  # schema-invalid data is rejected on every endpoint
        assert statuses[f"/api/v4/analytics/{endpoint}", "negative", 400] >= 5, statuses
    assert "Traceback" not in served.log_text()
