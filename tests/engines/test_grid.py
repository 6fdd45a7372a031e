import json
import subprocess
import sys

import pytest
import torch

from steerlit.engines.grid import GridRow, SteerTerm, build_grid, reference_of, row_steering
from steerlit.intervene.injection import gram_schmidt

from .grid_helpers import random_directions


def test_counts_and_reference_dedup():
    rows = build_grid(
        ["a", "b"],
        [0, 1, 2],
        concepts=["tempo", "timbre"],
        methods=["diffmean", "probe"],
        layers=[4, 8],
        alphas=[0.0, 1.0, -1.0],
        strategies=["one_to_all", "one_to_one"],
    )
    per_pair = 2 * 2 * 2 * 2 * 2  # concepts × methods × layers × strategies × non-zero alphas
    assert len(rows) == 2 * 3 * (1 + per_pair)
    refs = [r for r in rows if r.is_reference]
    assert len(refs) == 6 and len({r.key for r in rows}) == len(rows)
    assert all(r.flat()["alpha"] == 0.0 and r.flat()["concept"] is None for r in refs)
    steered = [r for r in rows if not r.is_reference]
    assert all(reference_of(r) in refs for r in steered) and all(r.terms[0].alpha != 0 for r in steered)
    # without alpha 0 and without include_reference there is no reference row
    no_ref = build_grid(
        "a", 2, concepts="tempo", methods="diffmean", layers=4, alphas=[1.0], include_reference=False
    )
    assert len(no_ref) == 2 and not any(r.is_reference for r in no_ref)
    # alpha 0 requested maps to the reference even when include_reference is False
    with_zero = build_grid(
        "a", 1, concepts="tempo", methods="diffmean", layers=4, alphas=[0, 1], include_reference=False
    )
    assert [r.is_reference for r in with_zero] == [True, False]


def test_flat_columns_and_multi_terms():
    t1 = SteerTerm("tempo", "diffmean", 3, 1.25, schedule={"kind": "exp_decay", "rate": 0.1})
    t2 = SteerTerm("timbre", "probe", 2, -0.5, "one_to_one")
    single, multi = GridRow("p", 7, (t1,)), GridRow("p", 7, (t1, t2))
    f = single.flat()
    assert (f["concept"], f["method"], f["layer"], f["alpha"], f["strategy"]) == (
        "tempo",
        "diffmean",
        3,
        1.25,
        "one_to_all",
    )
    assert json.loads(f["schedule"]) == {"kind": "exp_decay", "rate": 0.1}
    m = multi.flat()
    assert m["concept"] == "tempo+timbre" and m["alpha"] == "1.25+-0.5" and m["n_terms"] == 2
    json.dumps(f), json.dumps(m)
    assert hash(single) == hash(GridRow("p", 7, (t1,))) and single.key != multi.key
    assert GridRow.from_dict(multi.to_dict()) == multi


def test_keys_stable_across_processes():
    code = (
        "from steerlit.engines.grid import build_grid;"
        "rows = build_grid(['a', 'b'], [0, 1], concepts=['tempo'], methods=['diffmean'], layers=[1, 2], alphas=[0, 1.5]);"
        "print(','.join(r.key for r in rows))"
    )
    rows = build_grid(
        ["a", "b"], [0, 1], concepts=["tempo"], methods=["diffmean"], layers=[1, 2], alphas=[0, 1.5]
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
    ).stdout.strip()
    assert out == ",".join(r.key for r in rows)
    assert all(len(r.key) == 16 for r in rows)


def test_row_steering_maps_and_orthogonalizes():
    dirs = random_directions(32, 4)
    t1 = SteerTerm("tempo", "diffmean", 1, 2.0, "one_to_all")
    t2 = SteerTerm("timbre", "probe", 2, -1.0, "one_to_one", half="cond")
    ivs = row_steering(GridRow("p", 0, (t1, t2)), dirs, 4)
    assert sorted(ivs[0].vectors) == [f"resid_post.{i}" for i in range(4)]
    assert list(ivs[1].vectors) == ["resid_post.2"] and ivs[1].half == "cond" and ivs[1].alpha == -1.0
    v1, v2 = dirs["tempo"].get("diffmean", "resid_post.1"), dirs["timbre"].get("probe", "resid_post.2")
    assert torch.equal(ivs[0].vectors["resid_post.3"], v1) and torch.equal(ivs[1].vectors["resid_post.2"], v2)
    ortho = row_steering(GridRow("p", 0, (t1, t2)), dirs, 4, orthogonalize=True)
    w2 = ortho[1].vectors["resid_post.2"]
    torch.testing.assert_close(w2, gram_schmidt([v1, v2])[1])
    assert abs(float(w2 @ v1)) < 1e-4
    assert row_steering(GridRow("p", 0), dirs, 4) == []
    with pytest.raises(KeyError):
        row_steering(GridRow("p", 0, (SteerTerm("nope", "diffmean", 1, 1.0),)), dirs, 4)
    with pytest.raises(ValueError):
        SteerTerm("tempo", "diffmean", 1, 1.0, strategy="one_to_some")
