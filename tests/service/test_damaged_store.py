"""The service over a store with damaged metadata and step data (issue 13, items 1, 5):
409 naming the damage, never a 500, and one damaged race never costs the others."""

from __future__ import annotations

from pathlib import Path

import httpx
from service_helpers import ThreadServer, write_race

import replay
from replay.format import spec as fmt
from service.settings import Settings


def test_a_damaged_step_chunk_is_409_and_a_torn_race_is_left_out(
    tmp_path: Path, frames: list[object]
) -> None:
    store = replay.open_store(tmp_path / "s")
    a, b, c = (write_race(store, frames[:n], shard_size=8) for n in (10, 12, 14))
    (tmp_path / "s" / fmt.shard_key(a, "reward", 1, 1)).write_bytes(b"garbage")
    torn_doc = tmp_path / "s" / fmt.race_key(c) / "reward" / fmt.METADATA
    torn_doc.write_text(torn_doc.read_text()[:40])
    key = tmp_path / "s" / fmt.race_key(b) / fmt.METADATA
    key.write_text(key.read_text()[:60])  # torn
    with (
        ThreadServer(Settings(store=tmp_path / "s")) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        r = http.get(f"/v1/races/{a}/steps", params={"names": ["reward"]})
        assert r.status_code == 409, r.text
        body = r.json()
        assert (body["error"], body["race_id"], body["shard"]) == ("CorruptDataError", a, 1)
        assert "step array 'reward' is damaged" in body["detail"]
        ok = http.get(f"/v1/races/{a}/steps", params={"names": ["reward"], "stop": 8})
        assert ok.status_code == 200  # the intact chunk still reads
        torn = http.get(f"/v1/races/{c}/steps", params={"names": ["reward"]})
        assert torn.status_code == 200, torn.text  # step data is read without the document
        assert torn.json()["arrays"]["reward"] == [float(i) for i in range(14)]
        for seed in range(5):  # the torn race never stops sampling from the others
            s = http.post("/v1/sample", json={"batch_size": 4, "seed": seed})
            assert s.status_code == 200, s.text
        stats = http.get("/v1/stats").json()
        assert stats["races"] == 2
        assert list(stats["damaged_races"]) == [b]
        assert stats["samplers"][0]["damaged_races"] == 1
