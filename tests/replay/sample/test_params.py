"""`replay.sample.params`: the sampler parameters are defined once; the keyword APIs, the
service's request model and the client's request body all go through them."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from replay.sample.params import SamplerKwargs, SamplerOptions, SamplerParams
from replay.sample.sampler import Sampler


def test_every_keyword_api_takes_exactly_the_parameters() -> None:
    names = [f.name for f in dataclasses.fields(SamplerParams)]
    assert list(SamplerKwargs.__annotations__) == names
    # Store.sampler's keywords are the parameters and Sampler's own keyword options
    own = set(SamplerOptions.__annotations__) - set(names)
    sampler_keywords = {
        n
        for n, p in inspect.signature(Sampler).parameters.items()
        if p.kind is p.KEYWORD_ONLY and n != "read_only"
    }
    assert own == sampler_keywords


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"seq_len": 1.5}, "seq_len must be a positive integer, got 1.5"),
        ({"stride": True}, "stride must be a positive integer, got True"),
        ({"kind": "lifo"}, "kind must be 'uniform', 'prioritized' or 'recent', not 'lifo'"),
        ({"filters": {"colour": "red"}}, r"unknown filter\(s\) \['colour'\]"),
        ({"n_step": 0}, "n_step must be a positive integer, got 0"),
        ({"n_step": 3, "gamma": 1.5}, r"gamma must be in \[0, 1\], got 1.5"),
        ({"next_frames": True}, "next_frames=True needs n_step"),
        ({"min_size": -1}, "min_size must be an integer >= 0, got -1"),
        ({"samples_per_insert": 0}, "samples_per_insert must be > 0, got 0"),
    ],
)
def test_bad_parameters_are_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplerParams(**values)  # type: ignore[arg-type]


def test_the_request_body_sends_only_what_is_set() -> None:
    """The wire is unchanged: n-step and rate-limit fields go only when used."""
    assert SamplerParams(seed=3, filters={"env": "CarRacing-v3"}).request_body() == {
        "kind": "uniform",
        "batch_size": 64,
        "seq_len": 1,
        "stride": 1,
        "seed": 3,
        "filters": {"env": "CarRacing-v3"},
        "skip_corrupt": False,
    }
    body = SamplerParams(n_step=3, min_size=10, samples_per_insert=2.0).request_body()
    assert body["n_step"] == 3
    assert (body["gamma"], body["next_frames"]) == (0.99, False)
    assert (body["min_size"], body["samples_per_insert"]) == (10, 2.0)
    assert "error_margin" not in body


def test_the_service_request_validates_into_the_parameters() -> None:
    pytest.importorskip("fastapi")
    from service.models import SampleRequest

    names = {f.name for f in dataclasses.fields(SamplerParams)}
    assert names <= set(SampleRequest.model_fields)
    for f in dataclasses.fields(SamplerParams):  # the same defaults on both sides
        assert SampleRequest.model_fields[f.name].default == f.default, f.name
    req = SampleRequest.model_validate(
        {"kind": "prioritized", "batch_size": 8, "filters": {"env": "CarRacing-v3"}, "n_step": 2}
    )
    params = req.params()
    assert params == SamplerParams(
        kind="prioritized", batch_size=8, filters={"env": "CarRacing-v3"}, n_step=2
    )
    assert SampleRequest.model_validate(params.request_body()).params() == params
    assert SampleRequest().params().key()["filters"] is None
