"""Feature networks: weight files (state dicts we save ourselves), encoders, names."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from oncosynth.errors import CheckpointError, ConfigError
from oncosynth.features import (SmallCNN, create_feature_net, extract_features, save_small_encoder)


def test_inception_weight_file_loads_with_weights_only(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    reference = inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)
    path = tmp_path / "inception.pth"
    torch.save(reference.state_dict(), path)  # a plain state dict, read back with weights_only=True
    net = create_feature_net(f"inception:{path}", input_size=75)
    assert net.name == "inception-v3[inception.pth]@75px"
    x = torch.rand(2, 1, 40, 40)
    out = net(x)
    assert out.shape == (2, 2048)
    # same numbers as torchvision's own forward on the prepared input
    reference.fc = torch.nn.Identity()
    reference.eval()
    with torch.no_grad():
        expected = reference(net.prepare(x))
    assert torch.allclose(out, expected, atol=1e-5)
    assert net.spatial(x).shape[:2] == (2, 64)


def test_vgg19_feature_weights_from_safetensors(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])  # VGG-19's conv part
    path = tmp_path / "vgg19-features.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.state_dict().items()}, str(path))
    net = create_feature_net(f"vgg19:{path}", input_size=32)
    assert net.name.startswith("vgg19[vgg19-features.safetensors]")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = features.eval()(net.prepare(x)).mean(dim=(2, 3))
    assert torch.allclose(net(x), expected, atol=1e-5)
    assert net.spatial(torch.rand(1, 1, 64, 64)).shape == (1, 512, 4, 4)  # relu4_4 at 1/8 of 32 px


def test_bad_weight_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="do not fit"):
        create_feature_net(f"inception:{bad}", input_size=75)
    with pytest.raises(CheckpointError, match="not found"):
        create_feature_net(f"vgg19:{tmp_path / 'missing.pth'}")
    with pytest.raises(ConfigError, match="unknown feature net"):
        create_feature_net("resnet:foo")
    with pytest.raises(ConfigError, match="needs a weights file"):
        create_feature_net("inception:")


def test_small_encoder_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(in_chans=1, width=4, dim=8).eval()
    save_small_encoder(model, tmp_path / "enc")
    net = create_feature_net(f"encoder:{tmp_path / 'enc'}")
    assert net.name == "encoder[enc]"
    x = torch.rand(3, 3, 32, 32)  # RGB input is converted to the encoder's one channel
    with torch.no_grad():
        expected = model.features(net.prepare(x))
    assert torch.allclose(net(x), expected)
    assert extract_features(net, x, batch_size=2).shape == (3, 8)


def test_classifier_encoder_uses_features(tmp_path):
    from oncosynth.classifiers import create_classifier, save_classifier

    torch.manual_seed(0)
    model = create_classifier("resnet18", in_chans=1, num_classes=2, img_size=32, classes=["benign", "malignant"])
    save_classifier(model, tmp_path / "clf")
    net = create_feature_net(f"encoder:{tmp_path / 'clf'}")
    assert net.name == "encoder[clf]" and net.input_size == 32
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        expected = model.eval().features(net.prepare(x))
    assert torch.allclose(net(x), expected, atol=1e-5)
    assert net.spatial(x).ndim == 4


def test_features_imports_no_encoder_owner_and_names_the_missing_import(tmp_path):
    # features imports neither the classifiers nor the anomaly detector: they register their
    # loaders when imported. Without the import, an encoder checkpoint of theirs gets one clear line.
    import subprocess
    import sys

    from oncosynth.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "clf", {"w": torch.zeros(1)}, {"kind": "classifier"})
    script = ("import sys; import oncosynth.features as f\n"
              "assert not any(m.startswith(('oncosynth.classifiers', 'oncosynth.quality')) for m in sys.modules)\n"
              "try:\n    f.create_feature_net(sys.argv[1])\nexcept Exception as exc:\n"
              "    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", script, f"encoder:{tmp_path / 'clf'}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ConfigError") and "import oncosynth.classifiers" in done.stdout


def test_random_cnn_is_deterministic_and_named():
    a, b = create_feature_net("random-cnn:3"), create_feature_net("random-cnn:3")
    x = torch.rand(2, 1, 32, 32)
    assert a.name == "random-cnn[seed=3]"
    assert torch.equal(a(x), b(x))
