"""The benchmark harness (benchmarks/): report structure, never speed.

One tiny run of ``python -m benchmarks --in-process`` on the current
``KERAS_BACKEND`` (shape 1x16x16x4, one repeat, a two-level U-Net on 16x16
inputs) feeds the structure checks; the report's arithmetic (speed-ups,
SSR-U-Net ratios, targets) and the error measure are checked on hand-made
records with hand-computed results.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import config, measure, report  # noqa: E402
from benchmarks import run as bench_run  # noqa: E402

BACKEND = __import__("keras").backend.backend()
SHAPE = [1, 16, 16, 4]
LAYERS = ["SqueezeExcite", "SingularityStrengthRecalibration"]
MODE = {"tensorflow": "tf.function", "torch": "eager", "jax": "jax.jit"}[BACKEND]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("bench")
    monkeypatch_module.setenv("KERAS_SSR_BENCH_QUIET", "1")
    code = bench_run.main(
        [
            "--in-process",
            "--shapes",
            "x".join(map(str, SHAPE)),
            "--layers",
            ",".join(LAYERS),
            "--fixture-layers",
            "SqueezeExcite",
            "--count-layers",
            ",".join(LAYERS),
            "--modes",
            MODE,
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--model-levels",
            "2,4",
            "--model-input",
            "16x16x3",
            "--batch-size",
            "1",
            "--model-warmup",
            "1",
            "--model-repeats",
            "1",
            "--output-dir",
            str(out),
            "--name",
            "tiny",
        ]
    )
    assert code == 0
    document = json.loads((out / "tiny.json").read_text())
    return out, document


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


def test_json_top_level_keys(tiny_run):
    _, document = tiny_run
    for key in (
        "schema_version",
        "settings",
        "host",
        "environments",
        "reference",
        "results",
        "speedups",
        "model_overhead",
        "targets",
        "agreement",
        "errors",
        "notes",
    ):
        assert key in document, key
    assert document["errors"] == []
    assert document["reference"] == {"requested": False, "status": "not requested"}
    assert document["speedups"] == []  # nothing to compare with
    environment = document["environments"][BACKEND]
    assert environment["device"]["type"] in ("cpu", "gpu")
    assert "keras" in environment["versions"]


def test_every_layer_and_model_pass_is_timed(tiny_run):
    _, document = tiny_run
    records = document["results"]
    expected = {("layer", n, p) for n in LAYERS for p in config.PASSES} | {
        ("model", n, p) for n in config.MODELS for p in config.MODEL_PASSES
    }
    assert {(r["suite"], r["name"], r["pass"]) for r in records} == expected
    for record in records:
        assert record["status"] == "ok", record
        assert record["backend"] == BACKEND and record["mode"] == MODE
        assert len(record["times_ms"]) == 1
        assert record["median_ms"] == record["times_ms"][0] > 0
        assert record["first_call_ms"] > 0
        if record["suite"] == "layer":
            assert record["shape"] == SHAPE
        else:
            assert record["shape"] == [1, 16, 16, 3]
            assert record["parameters"] > 0
        for key in ("peak_rss_mb", "peak_rss_delta_mb", "gpu_peak_mb"):
            assert key in record


def test_model_overhead_pairs_the_two_models(tiny_run):
    _, document = tiny_run
    rows = document["model_overhead"]
    assert {r["pass"] for r in rows} == set(config.MODEL_PASSES)
    times = {
        (r["name"], r["pass"]): r["median_ms"]
        for r in document["results"]
        if r["suite"] == "model"
    }
    for row in rows:
        ratio = times[("ssr_unet", row["pass"])] / times[("unet", row["pass"])]
        # The report rounds the ratio to 3 decimals (report.py).
        assert row["time_ratio"] == pytest.approx(ratio, rel=0, abs=5e-4 + 1e-9)


def test_fixture_agreement_is_reported(tiny_run):
    _, document = tiny_run
    fixtures = document["agreement"]["fixtures"]
    assert [(a["backend"], a["mode"], a["layer"]) for a in fixtures] == [
        (BACKEND, MODE, "SqueezeExcite")
    ]
    (entry,) = fixtures
    assert entry["cases"] == 3
    assert math.isfinite(entry["max_abs"]) and math.isfinite(entry["max_rel"])
    assert isinstance(entry["ok"], bool)
    assert document["agreement"]["live"] == []


def test_markdown_tables(tiny_run):
    out, _ = tiny_run
    text = (out / "tiny.md").read_text()
    assert "**No reference run**" in text
    for heading in (
        "## Layers: median ms",
        "## Models: median ms",
        "## SSR-U-Net cost over U-Net",
        "## Targets",
        "## Agreement",
    ):
        assert heading in text, heading
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    shape = "x".join(map(str, SHAPE))
    for short in ("SE", "SSR"):
        for pass_name in config.PASSES:
            prefix = f"| {short} | {shape} | {pass_name} | "
            # One timing row and one memory row per layer and pass.
            assert sum(r.startswith(prefix) for r in rows) == 2, prefix
    for short in ("U-Net", "SSR-U-Net"):
        for pass_name in config.MODEL_PASSES:
            prefix = f"| {short} | 1x16x16x3 | {pass_name} | "
            assert sum(r.startswith(prefix) for r in rows) == 2, prefix
    header = f"| layer | shape | pass | {BACKEND} ({MODE}) |"
    assert header in rows


def test_counts_are_reported(tiny_run):
    """Every counted layer and model, in each of the backend's count modes,
    at the launch shape or the run's layer shape."""
    out, document = tiny_run
    counts = document["counts"]
    modes = config.COUNT_MODES[BACKEND]
    names = set(LAYERS) | set(config.MODELS)
    assert {(c["name"], c["mode"], c["pass"]) for c in counts} == {
        (n, m, p) for n in names for m in modes for p in config.PASSES
    }
    for record in counts:
        assert record["backend"] == BACKEND
        if "launches" in record:
            assert record["launches"] == sum(record["ops"].values()) > 0
        else:
            assert record["bytes"] >= record["input_bytes"] > 0
            assert record["kernels"] == sum(record["kinds"].values()) > 0
    text = (out / "tiny.md").read_text()
    assert "## Kernel launches (where nothing fuses)" in text
    assert "## Memory traffic across XLA kernels, peaks" in text


def test_png_written(tiny_run):
    pytest.importorskip("matplotlib")
    out, document = tiny_run
    assert document["chart"] == "tiny.png"
    data = (out / "tiny.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


# --------------------------------------------------------------------------
# Arithmetic of the report, on hand-made records


def _record(backend, mode, name, pass_name, ms, suite="layer", shape=None, **extra):
    return {
        "suite": suite,
        "name": name,
        "shape": shape or [4, 224, 224, 32],
        "pass": pass_name,
        "backend": backend,
        "mode": mode,
        "status": "ok",
        "median_ms": ms,
        **extra,
    }


def test_speedup_is_original_over_ours():
    ssr = "SingularityStrengthRecalibration"
    records = [
        _record("original", "tf.function", ssr, "forward+backward", 360.0),
        _record("jax", "jax.jit", ssr, "forward+backward", 90.0),
        _record("torch", "eager", ssr, "forward+backward", 240.0),
        _record("original", "tf.function", ssr, "forward", 170.0),
        _record("tensorflow", "tf.function", ssr, "forward", 34.0),
    ]
    ratios = {(r["backend"], r["pass"]): r["speedup"] for r in report.speedups(records)}
    assert ratios == {
        ("jax", "forward+backward"): 4.0,
        ("torch", "forward+backward"): 1.5,
        ("tensorflow", "forward"): 5.0,
    }
    settings = {"shapes": [[4, 224, 224, 32]]}
    targets = {
        t["target"]: t for t in report.targets(settings, report.speedups(records), [])
    }
    met = {key.split(" on ")[1].split(" at")[0]: t["met"] for key, t in targets.items()}
    # jax: 4x >= 3x; torch: 1.5x < 2x; tensorflow fwd+bwd: not measured;
    # fastest forward: tensorflow 5x >= 4x.
    assert met == {
        "tensorflow": None,
        "jax": True,
        "torch": False,
        "the fastest backend": True,
    }


def test_model_overhead_ratios_and_targets():
    records = []
    for name, train_ms, memory in (("unet", 100.0, 200.0), ("ssr_unet", 130.0, 240.0)):
        records.append(
            _record(
                "jax",
                "jax.jit",
                name,
                "train_step",
                train_ms,
                suite="model",
                shape=[4, 224, 224, 3],
                peak_rss_delta_mb=memory,
                gpu_peak_mb=None,
            )
        )
    (row,) = report.model_overhead(records)
    assert row["time_ratio"] == 1.3 and row["memory_ratio"] == 1.2
    targets = report.targets({"shapes": []}, [], [row])
    by_kind = {t["threshold"]: t["met"] for t in targets if t["value"] is not None}
    time_goal = config.TARGETS["train_step_time_ratio"]
    memory_goal = config.TARGETS["train_step_memory_ratio"]
    assert 1.2 < memory_goal and time_goal < 1.3  # the records straddle them
    assert by_kind == {time_goal: False, memory_goal: True}


def test_gpu_peak_preferred_over_rss():
    record = {"gpu_peak_mb": 10.0, "peak_rss_delta_mb": 99.0}
    assert report.memory_mb(record) == 10.0
    assert report.memory_mb({"gpu_peak_mb": None, "peak_rss_delta_mb": 99.0}) == 99.0


def test_error_stats_rule():
    expected = np.array([[0.5, -3.0], [2.0, 4.0]])
    actual = expected + np.array([[0.1, 0.0], [0.0, -0.2]])
    stats = measure.error_stats(actual, expected)
    assert stats["max_abs"] == pytest.approx(0.2)
    assert stats["max_rel"] == pytest.approx(0.2 / 4.0)
    # Per channel (last axis): channel 0 scale max(1, 2) = 2 -> 0.1 / 2;
    # channel 1 scale 4 -> 0.2 / 4.
    per_channel = measure.error_stats(actual, expected, channel_axis=-1)
    assert per_channel["max_rel"] == pytest.approx(0.05)
    broken = measure.error_stats(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert broken["max_rel"] == float("inf")
    with pytest.raises(ValueError, match="shape"):
        measure.error_stats(np.zeros(3), np.zeros(4))


def test_time_calls_counts_calls():
    calls = []
    timing = measure.time_calls(lambda: calls.append(1), lambda out: None, 2, 3)
    assert len(calls) == 2 + 3
    assert len(timing["times_ms"]) == 3
    assert timing["min_ms"] <= timing["median_ms"]


def test_memory_window_sees_an_allocation():
    if not measure.reset_peak_rss():
        pytest.skip("the RSS high-water mark cannot be reset here")
    with measure.MemoryWindow() as memory:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, written
        block.sum()
    del block
    assert memory.result()["peak_rss_delta_mb"] >= 48


# --------------------------------------------------------------------------
# Command-line errors


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backends", "mxnet"], "--backends must name some of"),
        (["--layers", "Conv2D"], "--layers must name some of"),
        (["--shapes", "4x0x3"], "Received: shape='4x0x3'"),
        (["--batch-size", "0"], "Received: batch_size=0"),
        (["--modes", "xla"], "--modes must name some of"),
        (["--fixture-layers", "Dense"], "--fixture-layers must name some of"),
        (["--count-layers", "Dense"], "--count-layers must name some of"),
        (["--followup-repo", "."], "Received: --followup-repo alone"),
        (
            ["--in-process", "--reference-repo", "."],
            "Received: --reference-repo with --in-process",
        ),
        (["--reference-repo", "/no/such/dir"], "--reference-repo must be a directory"),
    ],
)
def test_bad_arguments_are_rejected(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        bench_run.main([*argv, "--output-dir", str(tmp_path)])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_shape_parsing():
    assert config.parse_shape("4x224x224x32") == (4, 224, 224, 32)
    assert config.shape_key((1, 2, 3)) == "1x2x3"
    with pytest.raises(ValueError, match="Received: shape='a'"):
        config.parse_shape("a")


def test_gpu_check_plan(capsys):
    """`python -m benchmarks.gpu --dry-run`: every backend probed and tested on
    the GPU with TF32 off, then the quick benchmark, within 5 minutes."""
    from benchmarks import gpu

    assert gpu.main(["--dry-run", "--output-dir", "out"]) == 0
    printed = capsys.readouterr().out
    for backend in config.BACKENDS:
        assert f"probe {backend}: KERAS_BACKEND={backend}" in printed
        assert f"parity {backend}: KERAS_BACKEND={backend}" in printed
    assert "NVIDIA_TF32_OVERRIDE=0" in printed and "KERAS_SSR_REQUIRE_GPU=1" in printed
    assert "--quick" in printed and "--name gpu" in printed
    for suffix in ("json", "md", "png"):
        assert f"gpu.{suffix}" in printed
    steps = gpu.plan(list(config.BACKENDS), pathlib.Path("out"))
    assert sum(step.timeout_s for step in steps) <= gpu.TOTAL_LIMIT_S
    parity = [s for s in steps if s.name.startswith("parity")]
    assert all("tests/test_parity.py" in s.argv for s in parity)
    # plan() skips a missing file: a renamed test module must be renamed here too.
    assert all((gpu.REPO / path).is_file() for path in gpu.PARITY_TESTS)


def test_gpu_check_refuses_bad_backends_and_a_machine_without_gpu(capsys, monkeypatch):
    from benchmarks import gpu

    assert gpu.main(["--dry-run", "--backends", "tensorflow,mxnet"]) == 2
    assert "Received: backends='tensorflow,mxnet'" in capsys.readouterr().err
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)
    assert gpu.main(["--backends", "jax"]) == 2
    assert "nvidia-smi not found" in capsys.readouterr().err
