"""`oncosynth pretrain`: weights change, resume is exact, the output loads into a classifier and a study."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from oncosynth.classifiers.model import create_classifier
from oncosynth.data.phantom import PhantomConfig, write_phantom
from oncosynth.errors import ConfigError, DataError
from oncosynth.pretrain import PretrainConfig, ViewConfig, initialisation_of, pretrain, random_view
from oncosynth.pretrain import loop as pretrain_loop

SIZE = 32


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ONCOSYNTH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("pt") / "data", PhantomConfig(n=60, size=SIZE, seed=3))


def tiny(method: str = "simclr", **changes) -> PretrainConfig:
    values = dict(method=method, backbone="resnet10t", size=SIZE, steps=4, batch_size=8, checkpoint_every=2,
                  log_every=1, warmup_steps=1, phantom_images=40, lr=1e-2)
    values.update(changes)
    return PretrainConfig(**values)


def backbone_of(run: Path) -> dict[str, torch.Tensor]:
    return {k[len("backbone."):]: v for k, v in load_file(run / "weights.safetensors").items()}


def dying_at_step_3(create_method):
    """``create_method`` whose methods raise KeyboardInterrupt at step 3, as a kill would."""
    def create(*args, **kwargs):
        method = create_method(*args, **kwargs)
        original = method.loss

        def loss(images, labels, generator, step):
            if step == 3:
                raise KeyboardInterrupt("killed")
            return original(images, labels, generator, step)

        method.loss = loss
        return method
    return create


@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "phantom-supervised"])
def test_pretraining_changes_the_weights_and_loads_into_a_classifier(method, phantom, tmp_path):
    run = pretrain(tiny(method), tmp_path / method, data=None if method == "phantom-supervised" else phantom,
                   progress=False)
    learned = backbone_of(run)
    torch.manual_seed(0)  # the run's own seed: the same initial weights, so a change is training
    scratch = create_classifier("resnet10t", in_chans=1, img_size=SIZE).backbone.state_dict()
    assert set(learned) == set(scratch)
    changed = [k for k, v in learned.items() if v.is_floating_point() and not torch.equal(v, scratch[k])]
    assert len(changed) > len(learned) // 2
    loaded = create_classifier("resnet10t", in_chans=1, img_size=SIZE, pretrained=str(run))
    for key, value in loaded.backbone.state_dict().items():
        assert torch.equal(value, learned[key]), key
    assert loaded.config["pretrained"] == str(run)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    cpu = [r["cpu_seconds"] for r in rows]  # the budget a benchmark reports, whatever the machine's load
    assert cpu == sorted(cpu) and cpu[0] > 0
    assert json.loads((run / "config.json").read_text())["cpu_seconds"] >= round(cpu[-1], 1) - 0.1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["kind"] == "pretrained-backbone"
    if method != "phantom-supervised":
        source = manifest["sources"][0]
        assert source["role"] == "train split"
        # Only the training split's patients: never a validation or test patient.
        train_patients = {p.name.split("_")[0] for p in (phantom / "train").glob("*/*.png")}
        assert set(source["patients"]) == train_patients


def test_mae_pretrains_a_vision_transformer(phantom, tmp_path):
    run = pretrain(tiny("mae", backbone="vit_tiny_patch16_224", steps=2), tmp_path / "mae", data=phantom,
                   progress=False)
    model = create_classifier("vit_tiny_patch16_224", in_chans=1, img_size=SIZE, pretrained=str(run))
    assert torch.equal(model.backbone.state_dict()["cls_token"], backbone_of(run)["cls_token"])


def test_a_killed_run_resumes_to_the_same_weights(phantom, tmp_path, monkeypatch):
    straight = pretrain(tiny("byol"), tmp_path / "straight", data=phantom, progress=False)

    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as patch:
        patch.setattr(pretrain_loop, "create_method", dying_at_step_3(pretrain_loop.create_method))
        pretrain(tiny("byol"), tmp_path / "resumed", data=phantom, progress=False)
    assert not (tmp_path / "resumed" / "config.json").exists()
    resumed = pretrain(tiny("byol"), tmp_path / "resumed", data=phantom, progress=False)
    a, b = backbone_of(straight), backbone_of(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # no repeated rows after the resume


def test_a_run_resumes_after_its_data_is_copied_again_with_new_file_times(phantom, tmp_path, monkeypatch):
    """A shared data folder re-synced between sessions has the same images with new times: the run
    must resume, not refuse them as other data."""
    data = shutil.copytree(phantom, tmp_path / "data")
    with pytest.raises(KeyboardInterrupt), monkeypatch.context() as patch:
        patch.setattr(pretrain_loop, "create_method", dying_at_step_3(pretrain_loop.create_method))
        pretrain(tiny(), tmp_path / "run", data=data, progress=False)
    for image in data.rglob("*.png"):
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    resumed = pretrain(tiny(), tmp_path / "run", data=data, progress=False)
    steps = [json.loads(line)["step"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_damaged_resume_state_settings_and_finished_backbone_are_set_aside(phantom, tmp_path, caplog):
    """Each damaged file is named and renamed (never deleted); the run restarts or rewrites what it
    can, ending with the weights of an undamaged run (issue 16 item 4)."""
    import logging

    caplog.set_level(logging.WARNING, logger="oncosynth")
    straight = backbone_of(pretrain(tiny(), tmp_path / "straight", data=phantom, progress=False))
    run = tmp_path / "run"
    pretrain(tiny(steps=2), run, data=phantom, progress=False)  # a resume state at step 2 ...
    (run / "config.json").unlink()  # ... of a run that, with steps=4, is unfinished
    settings = json.loads((run / "settings.json").read_text())
    settings["config"]["steps"] = 4
    (run / "settings.json").write_text(json.dumps(settings))
    (run / "train_state.pt").write_bytes((run / "train_state.pt").read_bytes()[:200])
    (run / "log.jsonl").write_text((run / "log.jsonl").read_text() + '{"step": 3, "lo')  # a row cut by a kill

    def aside(name: str) -> list[Path]:
        return [p for p in run.iterdir() if p.name.startswith("damaged-") and p.name.endswith(name)]

    pretrain(tiny(), run, data=phantom, progress=False)  # restarts from step 0
    assert len(aside("train_state.pt")) == 1 and aside("train_state.pt")[0].stat().st_size == 200
    assert all(torch.equal(straight[k], v) for k, v in backbone_of(run).items())
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

    (run / "config.json").write_text("{trunc")  # the finished marker: rewritten from the final resume state
    pretrain(tiny(), run, data=phantom, progress=False)
    assert len(aside("config.json")) == 1 and len(aside("weights.safetensors")) == 1
    assert all(torch.equal(straight[k], v) for k, v in backbone_of(run).items())
    create_classifier("resnet10t", in_chans=1, img_size=SIZE, pretrained=str(run))  # loads, hash checked

    (run / "settings.json").write_text("{trunc")  # the finished backbone's manifest still names its settings
    assert pretrain(tiny(), run, data=phantom, progress=False) == run
    assert len(aside("settings.json")) == 1 and json.loads((run / "settings.json").read_text()) == settings
    assert "train_state.pt" in caplog.text and "config.json" in caplog.text and "settings.json" in caplog.text


def test_extra_unlabelled_folders_join_the_pool(phantom, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, path in enumerate(sorted(phantom.glob("test/*/*.png"))[:5]):
        (flat / f"img{i}.png").write_bytes(path.read_bytes())
    run = pretrain(tiny(steps=1), tmp_path / "run", data=phantom, extra_unlabelled=[flat], progress=False)
    sources = json.loads((run / "manifest.json").read_text())["sources"]
    assert [s["role"] for s in sources] == ["train split", "unlabelled extra"]
    assert sources[1]["images"] == 5
    assert "unlabelled extra, 5 images" in initialisation_of(str(run))


def test_bad_input_is_refused_by_name(phantom, tmp_path):
    with pytest.raises(ConfigError, match="unknown pretrain method 'moco'"):
        pretrain(tiny("moco"), tmp_path / "a", data=phantom, progress=False)
    with pytest.raises(ConfigError, match="needs a vision transformer"):
        pretrain(tiny("mae"), tmp_path / "b", data=phantom, progress=False)
    with pytest.raises(DataError, match="needs --data"):
        pretrain(tiny("simclr"), tmp_path / "c", data=None, progress=False)
    with pytest.raises(DataError, match="no labels"):
        pretrain(tiny("phantom-supervised"), tmp_path / "d", data=phantom, extra_unlabelled=[phantom],
                 progress=False)
    pretrain(tiny(steps=1), tmp_path / "e", data=phantom, progress=False)
    with pytest.raises(ConfigError, match="changed: config"):
        pretrain(tiny(steps=2), tmp_path / "e", data=phantom, progress=False)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        pretrain(tiny(), afile, data=phantom, progress=False)


def test_grey_views_stay_grey_in_range_and_reproducible():
    images = torch.rand(6, 1, SIZE, SIZE)
    first = random_view(images, ViewConfig(), torch.Generator().manual_seed(1))
    again = random_view(images, ViewConfig(), torch.Generator().manual_seed(1))
    other = random_view(images, ViewConfig(), torch.Generator().manual_seed(2))
    assert first.shape == images.shape and torch.equal(first, again) and not torch.equal(first, other)
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    # A crop covering the whole image with every other change switched off is the identity.
    identity = ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flips=False, rot90=False, gamma=0,
                          contrast=0, brightness=0, blur_prob=0, noise=0, colour=0)
    assert torch.allclose(random_view(images, identity, torch.Generator().manual_seed(0)), images, atol=1e-5)


def test_initialisation_is_described_for_reports(tmp_path):
    assert initialisation_of(None).startswith("scratch")
    assert initialisation_of("timm").startswith("natural-image")
    run = pretrain(tiny("phantom-supervised", steps=1), tmp_path / "ph", progress=False)
    assert initialisation_of(str(run)).startswith("phantom-supervised (supervised on phantom")


def test_cli_pretrain_output_runs_in_a_study(phantom, tmp_path):
    """The CLI writes a run that a study config names as model.pretrained; the report says so."""
    import yaml
    from typer.testing import CliRunner

    from oncosynth.cli import app

    run = tmp_path / "ssl"
    result = CliRunner().invoke(app, ["pretrain", "--data", str(phantom), "--out", str(run), "--method", "simclr",
                                      "--backbone", "resnet10t", "--size", str(SIZE), "--steps", "2",
                                      "--batch-size", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    bad = CliRunner().invoke(app, ["pretrain", "--data", str(phantom), "--out", str(tmp_path / "x"), "--steps", "0"])
    # CliRunner calls the app, not main(): the ConfigError that main() turns into exit 2 surfaces here.
    assert isinstance(bad.exception, ConfigError) and "steps: Input should be greater than" in str(bad.exception)
    config = {"name": "t", "data": {"path": str(phantom), "size": SIZE, "channels": 1},
              "model": {"backbone": "resnet10t", "pretrained": str(run)},
              "train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "warmup_epochs": 0.5},
              "arms": [{"name": "real", "kind": "real"}], "fractions": [1.0], "seeds": [0], "bootstrap": 100,
              "report_samples": 2}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["study", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "study"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "study" / "report.html").read_text()
    assert "initialised from simclr (self-supervised on data (train split" in report
    assert "recipe 'mammo' (input normalisation percentile)" in html.unescape(report)  # the grey default, named


def test_normalise_is_what_the_backbone_learns_on_and_is_recorded(phantom, tmp_path):
    """--normalise is not a label: the same seed learns other weights on per-image-stretched inputs."""
    plain = backbone_of(pretrain(tiny(steps=2), tmp_path / "none", data=phantom, progress=False))
    run = pretrain(tiny(steps=2, normalise="percentile"), tmp_path / "pct", data=phantom, progress=False)
    stretched = backbone_of(run)
    assert any(not torch.equal(plain[k], stretched[k]) for k in plain if plain[k].is_floating_point())
    assert json.loads((run / "config.json").read_text())["input_norm"] == "percentile"
    with pytest.raises(Exception, match="normalise"):
        PretrainConfig(normalise="zscore")


def _study_config(phantom: Path, run: Path):
    from oncosynth.study.config import parse_config

    return parse_config({"name": "t", "data": {"path": str(phantom), "size": SIZE, "channels": 1},
                              "model": {"backbone": "resnet10t", "pretrained": str(run)},
                              "train": {"epochs": 1}, "arms": [{"name": "real", "kind": "real"}],
                              "fractions": [1.0], "seeds": [0]})


def test_a_study_refuses_a_backbone_that_saw_held_out_images(phantom, tmp_path):
    from oncosynth.study.inputs import prepare
    from oncosynth.study.provenance import LeakError

    from oncosynth.data import load_dataset

    own_split = pretrain(tiny(steps=1), tmp_path / "own", data=phantom, progress=False)
    prepare(_study_config(phantom, own_split), progress=False)  # its train split only: accepted
    # The same data set by patient id: a record that names a test patient is refused.
    manifest = json.loads((own_split / "manifest.json").read_text())
    test_patient = load_dataset(phantom).split("test").records[0].patient
    manifest["sources"][0]["patients"].append(test_patient)
    (own_split / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LeakError, match=f"1 patient\\(s\\) of the held-out 'test' set \\(e.g. {test_patient}"):
        prepare(_study_config(phantom, own_split), progress=False)
    # Another folder by file stem.
    extra_test = tmp_path / "extra"
    extra_test.mkdir()
    for path in sorted(phantom.glob("test/*/*.png"))[:3]:
        (extra_test / path.name).write_bytes(path.read_bytes())
    leaky = pretrain(tiny(steps=1), tmp_path / "leaky", data=phantom, extra_unlabelled=[extra_test], progress=False)
    with pytest.raises(LeakError, match="model.pretrained .* 3 image\\(s\\) of the held-out 'test' set"):
        prepare(_study_config(phantom, leaky), progress=False)
    # A run written before sources listed their image names: patient ids are matched with file stems.
    manifest = json.loads((leaky / "manifest.json").read_text())
    for source in manifest["sources"]:
        source.pop("image_names", None)
    (leaky / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(LeakError, match="model.pretrained .* 3 image\\(s\\) named like the held-out 'test' set"):
        prepare(_study_config(phantom, leaky), progress=False)


def test_a_study_refuses_a_backbone_that_saw_its_external_test_set_in_class_folders(phantom, tmp_path):
    """An external set with class folders: its patient ids are not file names, so only the image
    names recorded per source can show that the backbone saw it (the case of pretraining on another
    hospital's unlabelled images and then testing on them)."""
    from oncosynth.study.config import parse_config
    from oncosynth.study.inputs import prepare
    from oncosynth.study.provenance import LeakError

    external, other_half = tmp_path / "hospital-b", tmp_path / "hospital-b-other"
    for index, path in enumerate(sorted(phantom.glob("test/*/*.png"))[:8]):
        half = external if index % 2 == 0 else other_half
        benign = int(path.parent.name == "benign")
        folder = "is_benign_true" if benign else "is_benign_false"  # the CBIS-DDSM layout: patient id inside the name
        target = half / folder / f"patientb__{index // 2}_image{index}_mass{index}_is_benign_{benign}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())

    def config(run: Path, test_folder: Path):
        return parse_config({"name": "t", "data": {"path": str(phantom), "size": SIZE, "channels": 1},
                             "external_tests": [{"name": "b", "path": str(test_folder), "split": None}],
                             "model": {"backbone": "resnet10t", "pretrained": str(run)},
                             "train": {"epochs": 1}, "arms": [{"name": "real", "kind": "real"}],
                             "fractions": [1.0], "seeds": [0]})

    run = pretrain(tiny(steps=1), tmp_path / "run", data=phantom, extra_unlabelled=[external], progress=False)
    sources = json.loads((run / "manifest.json").read_text())["sources"]
    assert sorted(sources[1]["image_names"]) == sorted(p.name for p in external.rglob("*.png"))
    with pytest.raises(LeakError, match="4 image\\(s\\) of the held-out 'b' set"):
        prepare(config(run, external), progress=False)
    prepare(config(run, other_half), progress=False)  # the half it did not see: accepted
