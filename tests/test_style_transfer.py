"""Style transfer, the anomaly detector, the classifier gate and the retry pipeline, on tiny inputs (CPU).

Tolerance of "batched equals one pair at a time": 1e-4 in pixel values (images in [0, 1]) after the full
optimisation; the losses agree to 1e-4 relative. Differences come only from float reduction order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from oncosynth.errors import ConfigError, OncosynthError
from oncosynth.features import create_layer_features
from oncosynth.generators.style_transfer import StyleSettings, StyleTransfer, transfer_one_at_a_time
from oncosynth.quality.anomaly import AnomalyDetector, fit_anomaly_detector
from oncosynth.quality.gates import ClassifierGate
from oncosynth.quality.campaign import RetrySchedule, run_style_campaign
from oncosynth.quality.sweep import run_style_sweep

SIZE = 32
LAYERS = ("conv_1", "conv_2", "conv_3")
FAST = StyleSettings(content_layer="conv_2", style_layers=LAYERS, steps=4, lr=0.05)
SCHEDULE = RetrySchedule(content_layers=("conv_1", "conv_2"), steps=(2, 3), content_weights=(1.0, 10.0),
                         max_trials=3, baseline=FAST)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from oncosynth.data.phantom import PhantomConfig, write_phantom

    root = tmp_path_factory.mktemp("st-phantom")
    return write_phantom(root / "data", PhantomConfig(n=40, size=SIZE, difficulty="easy", seed=3))


@pytest.fixture(scope="module")
def anomaly_run(phantom, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ae") / "ae"
    fit_anomaly_detector(phantom, out, widths=(2, 4, 4), epochs=1, batch_size=8, progress=False)
    return out


def _biased_classifier(folder: Path, bias=(1.0, 0.0), classes=("benign", "malignant")) -> Path:
    """A classifier whose output ignores the image: p = softmax(bias) for every input."""
    from oncosynth.classifiers import create_classifier, save_classifier

    model = create_classifier("resnet10t", in_chans=1, num_classes=len(classes), img_size=SIZE, classes=list(classes))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(bias))
    save_classifier(model, folder)
    return folder


# ----------------------------------------------------------------- core ----
def test_batched_equals_one_pair_at_a_time_with_per_pair_settings():
    torch.manual_seed(0)
    content, style = torch.rand(4, 1, SIZE, SIZE), torch.rand(4, 1, SIZE, SIZE)
    settings = [FAST.with_(steps=6), FAST.with_(steps=2, content_layer="conv_1"),
                FAST.with_(steps=9, content_weight=10.0), FAST.with_(steps=1, lr=0.1)]
    transfer = StyleTransfer("random-cnn:0")
    batched = transfer.run(content, style, settings)
    single = transfer_one_at_a_time(transfer, content, style, settings)
    assert batched.steps.tolist() == [6, 2, 9, 1]  # each pair stopped at its own step count
    assert torch.allclose(batched.images, single.images, atol=1e-4)
    assert torch.allclose(batched.total_loss, single.total_loss, rtol=1e-4)
    # optimisation does something: the loss falls below the starting point's
    start = transfer.run(content, style, [s.with_(steps=1, lr=1e-12) for s in settings])
    assert (batched.total_loss[[0, 2]] < start.total_loss[[0, 2]]).all()


def _gatys_losses(net, x, content, style, content_layer, style_layers):
    """Gatys et al. (2016) written out in float64 numpy from the feature maps alone:
    L_content = 1/2 sum (F - P)^2 and E_l = 1/(4 N^2 M^2) sum (G - A)^2 with G = F F^T (unnormalised),
    N channels and M positions; style = mean of E_l over the layers."""
    layers = [content_layer, *style_layers]
    with torch.no_grad():
        fx, fc, fs = (net(t, layers) for t in (x, content, style))
    content_loss = 0.5 * ((fx[content_layer].double().numpy() - fc[content_layer].double().numpy()) ** 2).sum()
    style_terms = []
    for layer in style_layers:
        a, b = fx[layer][0].double().numpy(), fs[layer][0].double().numpy()
        n, m = a.shape[0], a.shape[1] * a.shape[2]
        g, target = a.reshape(n, m) @ a.reshape(n, m).T, b.reshape(n, m) @ b.reshape(n, m).T
        style_terms.append((((g - target) ** 2).sum() / (4 * n**2 * m**2), n, m))
    return content_loss, fx[content_layer].shape, style_terms


def test_losses_follow_the_gatys_formulas():
    """The reported losses against the paper's, at the optimised images of a batched run with per-pair
    layers: content = 2 L_content / (N M) (a mean, not half a sum); style per layer = (4 / N^2) E_l
    (the tutorial's Gram normalisation, see the module docstring), averaged over the pair's layers."""
    torch.manual_seed(2)
    content, style = torch.rand(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    settings = [FAST.with_(steps=3), FAST.with_(steps=2, content_layer="conv_1", style_layers=("conv_2", "conv_3"))]
    transfer = StyleTransfer("random-cnn:0")
    result = transfer.run(content, style, settings)
    for i, s in enumerate(settings):
        paper_content, shape, terms = _gatys_losses(transfer.features, result.images[i : i + 1], content[i : i + 1],
                                                    style[i : i + 1], s.content_layer, s.style_layers)
        n_m = shape[1] * shape[2] * shape[3]
        assert float(result.content_loss[i]) == pytest.approx(2 * paper_content / n_m, rel=1e-4)
        expected_style = np.mean([4 / n**2 * e for e, n, _ in terms])
        assert float(result.style_loss[i]) == pytest.approx(expected_style, rel=1e-4)
        assert float(result.total_loss[i]) == pytest.approx(
            s.content_weight * 2 * paper_content / n_m + s.style_weight * expected_style, rel=1e-4)
    assert (result.content_loss > 0).all()  # the images moved away from the content images


def test_vgg19_weight_file_layers_and_lbfgs(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    path = tmp_path / "vgg19.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}, str(path))
    net = create_layer_features(f"vgg19:{path}")
    assert net.layer_names == [f"conv_{i}" for i in range(1, 17)]
    x = torch.rand(2, 1, SIZE, SIZE)  # grey input is repeated to RGB and ImageNet-normalised
    maps = net(x, ["conv_1", "conv_5"])
    with torch.no_grad():
        expected = features[:11](net.prepare(x))  # conv_5 = conv3_1 = features[10]
    assert torch.allclose(maps["conv_5"], expected, atol=1e-5)
    settings = StyleSettings(steps=3)  # the paper's baseline layers on VGG-19
    adam = StyleTransfer(net).run(x, torch.rand(2, 1, SIZE, SIZE), settings)
    lbfgs = StyleTransfer(net, optimizer="lbfgs").run(x, torch.rand(2, 1, SIZE, SIZE), settings)
    assert adam.images.shape == lbfgs.images.shape == x.shape
    assert (lbfgs.steps >= 1).all()  # L-BFGS counts loss evaluations (its line search may take one more)


def test_rgb_and_resampled_style_and_bad_inputs():
    transfer = StyleTransfer("random-cnn:1")
    rgb = transfer.run(torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 3, 48, 48), FAST.with_(steps=2))
    assert rgb.images.shape == (1, 3, SIZE, SIZE)
    with pytest.raises(ConfigError, match="resample"):
        StyleTransfer("random-cnn:1", resample=False).run(torch.rand(1, 1, SIZE, SIZE), torch.rand(1, 3, 40, 40), FAST)
    with pytest.raises(ConfigError, match="no layer"):
        transfer.run(torch.rand(1, 1, SIZE, SIZE), torch.rand(1, 1, SIZE, SIZE), FAST.with_(content_layer="conv_9"))


# ----------------------------------------------------------------- gates ----
def test_anomaly_detector_threshold_save_load(anomaly_run, phantom):
    from oncosynth.data import load_dataset
    from oncosynth.data.decode import load_images

    detector = AnomalyDetector.load(anomaly_run)
    val = load_images(load_dataset(phantom).split("val"))
    scores = detector.score(val)
    assert detector.threshold == pytest.approx(float(np.percentile(scores, 95)), rel=1e-5)
    assert detector.accepts(scores).sum() >= len(scores) - 1  # 95th percentile of 7 scores
    assert scores.min() > 0
    # the encoder doubles as a style-transfer feature net
    net = create_layer_features(f"encoder:{anomaly_run}")
    assert net.layer_names[:6] == [f"conv_{i}" for i in range(1, 7)]


def test_classifier_gate_needs_the_classes(tmp_path):
    folder = _biased_classifier(tmp_path / "c", classes=("healthy", "malignant"))
    with pytest.raises(ConfigError, match="do not include"):
        ClassifierGate(folder, "benign", "malignant")


def test_each_gate_alone_rejects_and_both_can_accept(phantom, anomaly_run, tmp_path):
    classifier = _biased_classifier(tmp_path / "clf")  # p(benign)=0.73, p(malignant)=0.27 for any image
    common = dict(content_class="benign", style_class="malignant", feature_net="random-cnn:0",
                  schedule=SCHEDULE, max_pairs=3, pairs_per_unit=3, progress=False, accept=3)
    # anomaly gate alone rejects (threshold 0), classifier lets everything through (cut-off 0.2)
    a = run_style_campaign(phantom, tmp_path / "a", anomaly=anomaly_run, anomaly_threshold=0.0,
                           classifier=classifier, cutoff=0.2, **common)
    assert a["accepted"] == 0 and a["trials"] == 9
    assert a["rejected_by"] == {"anomaly_only": 9, "classifier_only": 0, "both": 0}
    # classifier gate alone rejects (cut-off 0.7 > 0.27), the anomaly gate lets everything through
    c = run_style_campaign(phantom, tmp_path / "c", anomaly=anomaly_run, anomaly_threshold=1e9,
                           classifier=classifier, cutoff=0.7, **common)
    assert c["accepted"] == 0 and c["rejected_by"]["classifier_only"] == 9
    # both permissive: every pair accepted on its first trial
    ok = run_style_campaign(phantom, tmp_path / "ok", anomaly=anomaly_run, anomaly_threshold=1e9,
                            classifier=classifier, cutoff=0.2, **common)
    assert ok["accepted"] == 3 and ok["trials"] == 3
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    trial = manifest["trials"][0]
    assert trial["classifier_prob"] == pytest.approx(0.269, abs=1e-3) and trial["anomaly_score"] > 0
    assert (tmp_path / "ok" / trial["file"]).is_file() and trial["file"].endswith("_malignant.png")
    # a rejected pair went through its retries with the schedule's settings
    retries = [r for r in json.loads((tmp_path / "a" / "manifest.json").read_text())["trials"] if r["pair"] == 0]
    assert [r["trial"] for r in retries] == [1, 2, 3]
    assert [(r["content_layer"], r["steps"], r["content_weight"]) for r in retries] == \
        [(SCHEDULE.settings(0, t).content_layer, SCHEDULE.settings(0, t).steps,
          SCHEDULE.settings(0, t).content_weight) for t in (1, 2, 3)]


def test_resume_skips_finished_pairs_and_continues_unfinished(phantom, anomaly_run, tmp_path, monkeypatch):
    import oncosynth.quality.campaign as campaign

    out = tmp_path / "run"
    args = dict(content_class="benign", style_class="malignant", feature_net="random-cnn:0", schedule=SCHEDULE,
                max_pairs=4, pairs_per_unit=2, progress=False, accept=10, anomaly=anomaly_run)
    first = run_style_campaign(phantom, out, **args)
    images = sorted(p.name for p in out.glob("*.png"))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    # pretend a kill hit pair 1 before its last round was recorded
    state_path = out / ".trials" / "pairs-00000.json"
    state = json.loads(state_path.read_text())
    entry = state["pairs"]["1"]
    lost = entry["records"].pop()
    if lost["accepted"]:
        (out / lost["file"]).unlink()
    entry["done"] = False
    state_path.write_text(json.dumps(state))
    calls = []
    real_run = campaign.StyleTransfer.run
    monkeypatch.setattr(campaign.StyleTransfer, "run",
                        lambda self, c, s, settings, **k: calls.append(len(settings)) or real_run(self, c, s, settings, **k))
    second = run_style_campaign(phantom, out, **args)
    assert calls == [1]  # only pair 1's lost trial was redone
    assert second["trials"] == first["trials"] and second["accepted"] == first["accepted"]
    assert sorted(p.name for p in out.glob("*.png")) == images
    assert all(stamps[n] == (out / n).stat().st_mtime_ns for n in images if n != lost["file"])


def test_a_campaign_rerun_with_other_settings_is_refused_and_more_accepts_resume(phantom, tmp_path):
    """Issue 16 (noticed): new trials made with other settings must not mix into a campaign's records."""
    out = tmp_path / "run"
    args = dict(content_class="benign", style_class="malignant", feature_net="random-cnn:0", schedule=SCHEDULE,
                max_pairs=2, pairs_per_unit=2, progress=False, accept=1)
    run_style_campaign(phantom, out, **args)
    trials = {p.name: p.read_bytes() for p in (out / ".trials").iterdir()}
    other = RetrySchedule(SCHEDULE.content_layers, SCHEDULE.steps, (5.0,), SCHEDULE.max_trials, SCHEDULE.baseline)
    with pytest.raises(ConfigError, match=r"manifest.json: .*other settings \(schedule\)"):
        run_style_campaign(phantom, out, **{**args, "schedule": other})
    with pytest.raises(ConfigError, match=r"other settings \(seed\)"):
        run_style_campaign(phantom, out, **{**args, "seed": 1})
    assert {p.name: p.read_bytes() for p in (out / ".trials").iterdir()} == trials
    more = run_style_campaign(phantom, out, **{**args, "accept": 10, "max_pairs": 3})  # asking for more resumes
    assert more["pairs"] == 3


@pytest.mark.parametrize("damage", ["{\"pairs\": {\"0\": {\"recor", "[]"])
def test_damaged_trial_records_are_set_aside_and_their_pairs_run_again(phantom, tmp_path, caplog, damage):
    """Issue 16 item 4: a truncated or foreign trial file is named and renamed (never deleted, never
    silently overwritten); its pairs run again to the same records and images."""
    import logging

    out = tmp_path / "run"
    args = dict(content_class="benign", style_class="malignant", feature_net="random-cnn:0", schedule=SCHEDULE,
                max_pairs=2, pairs_per_unit=2, progress=False, accept=10)
    run_style_campaign(phantom, out, **args)
    first = json.loads((out / "manifest.json").read_text())
    images = {p.name: p.read_bytes() for p in out.glob("*.png")}
    (out / ".trials" / "pairs-00000.json").write_text(damage)
    with caplog.at_level(logging.WARNING, logger="oncosynth"):
        run_style_campaign(phantom, out, **args)
    again = json.loads((out / "manifest.json").read_text())
    assert again["images"] == first["images"] and {p.name: p.read_bytes() for p in out.glob("*.png")} == images
    keep = ("pair", "trial", "accepted", "file", "total_loss")
    assert [{k: r[k] for k in keep} for r in again["trials"]] == [{k: r[k] for k in keep} for r in first["trials"]]
    (aside,) = [p for p in (out / ".trials").iterdir() if p.name.startswith("damaged-")]
    assert aside.read_text() == damage and "pairs-00000.json" in caplog.text


def test_campaign_bad_input_fails_before_work(phantom, tmp_path):
    classifier = _biased_classifier(tmp_path / "clf", bias=(0.0, 1.0))  # calls every image malignant
    with pytest.raises(ConfigError, match="calls none"):
        run_style_campaign(phantom, tmp_path / "x", classifier=classifier, feature_net="random-cnn:0",
                           schedule=SCHEDULE, progress=False)
    with pytest.raises(ConfigError, match="no layer"):
        run_style_campaign(phantom, tmp_path / "y", feature_net="random-cnn:0", progress=False)  # conv_5 missing
    with pytest.raises(ConfigError, match="unknown class"):
        run_style_campaign(phantom, tmp_path / "z", content_class="normal", feature_net="random-cnn:0",
                           schedule=SCHEDULE, progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_sweep_writes_three_grids(phantom, tmp_path):
    values = {"content_layer": ("conv_1", "conv_2"), "steps": (1, 3), "content_weight": (1.0, 100.0)}
    summary = run_style_sweep(phantom, tmp_path / "sweep", feature_net="random-cnn:0", n_pairs=1, baseline=FAST,
                              values=values)
    for factor in ("content-layer", "steps", "content-weight"):
        assert (tmp_path / "sweep" / f"sweep-{factor}.png").is_file()
    assert len(summary["final_loss"]) == 6


def test_cli_fit_anomaly_and_style_transfer(phantom, tmp_path):
    from oncosynth.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["fit-anomaly", "--data", str(phantom), "--out", str(tmp_path / "ae"),
                                 "--widths", "2,4", "--epochs", "1", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["style-transfer", "--data", str(phantom), "--content-class", "benign",
                                 "--style-class", "malignant", "--accept", "2", "--out", str(tmp_path / "st"),
                                 "--anomaly", str(tmp_path / "ae"), "--feature-net", "random-cnn:0",
                                 "--content-layers", "conv_1,conv_2", "--steps", "2,3", "--content-weights", "1,10",
                                 "--baseline-layer", "conv_2", "--baseline-steps", "3", "--style-layers",
                                 "conv_1,conv_2,conv_3", "--max-trials", "2", "--max-pairs", "2"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "st" / "manifest.json").read_text())
    assert manifest["summary"]["pairs"] == 2 and manifest["config"]["gates"] == ["anomaly"]
    result = runner.invoke(app, ["style-transfer", "--data", str(phantom), "--out", str(tmp_path / "bad"),
                                 "--feature-net", "random-cnn:0", "--classifier", str(tmp_path / "missing"),
                                 "--baseline-layer", "conv_2", "--style-layers", "conv_1", "--content-layers",
                                 "conv_1"])
    assert isinstance(result.exception, OncosynthError) and "missing" in str(result.exception)
    assert not (tmp_path / "bad").exists()


def test_style_transfer_behind_the_generator_protocol(phantom, tmp_path):
    from oncosynth.generators import create_generator, load_generator

    gen = create_generator("style-transfer", feature_net="random-cnn:0", content_layer="conv_2",
                           style_layers=list(LAYERS), steps=3)
    gen.fit(phantom, tmp_path / "run")
    again = load_generator(tmp_path / "run")
    assert again.name == "style-transfer" and again.classes == ["benign", "malignant"]
    images = again.sample(2, "malignant", seed=5)
    assert images.shape == (2, 1, SIZE, SIZE)
    assert torch.allclose(images[1:], again.sample(1, "malignant", seed=6), atol=1e-5)
    with pytest.raises(ConfigError, match="no layer"):
        create_generator("style-transfer", feature_net="random-cnn:0").fit(phantom, tmp_path / "bad")
