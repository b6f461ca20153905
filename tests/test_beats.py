import json

import numpy as np
import pytest
import torch

from train.beats import CheckpointError, build_beats, load_beats


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return load_beats(tiny_checkpoint)


@pytest.fixture(scope="module")
def tiny_io(beats_fixtures):
    return {k: torch.from_numpy(v) for k, v in np.load(beats_fixtures / "tiny_beats_io.npz").items()}


def test_loads_float32_eval(tiny):
    assert not tiny.training
    assert all(p.dtype == torch.float32 for p in tiny.parameters())


def test_encode_fbank_matches_reference(tiny, tiny_io):
    with torch.no_grad():
        features = tiny.encode_fbank(tiny_io["fbank"])
    assert features.shape == tiny_io["features"].shape
    assert (features - tiny_io["features"]).abs().max() <= 1e-4


def test_extract_features_matches_reference(tiny, tiny_io):
    with torch.no_grad():
        features = tiny.extract_features(tiny_io["waveform"])
    assert (features - tiny_io["features"]).abs().max() <= 1e-3


def test_six_second_window_gives_296_embeddings(tiny):
    with torch.no_grad():
        assert tiny.extract_features(torch.zeros(1, 96_000)).shape == (1, 296, 64)


def test_folded_weight_norm_changes_nothing(tiny_checkpoint, tiny_io):
    model = load_beats(tiny_checkpoint)
    with torch.no_grad():
        before = model.encode_fbank(tiny_io["fbank"])
        after = model.fold_weight_norm().encode_fbank(tiny_io["fbank"])
    assert (before - after).abs().max() <= 1e-5


def _full_size_expectation(beats_fixtures) -> dict[str, tuple[int, ...]]:
    rows = (beats_fixtures / "beats_iter3_plus_as2m_state_dict.txt").read_text().splitlines()
    shapes = {}
    for row in rows:
        if row.startswith("#") or not row.strip():
            continue
        key, shape, _dtype = row.split("\t")
        shapes[key] = tuple(json.loads(shape))
    return shapes


def test_full_size_keys_and_shapes(beats_fixtures):
    cfg = json.loads((beats_fixtures / "beats_iter3_plus_as2m_cfg.json").read_text())
    with torch.device("meta"):
        model = build_beats(cfg)
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    expected = _full_size_expectation(beats_fixtures)
    assert ours == expected
    # the shared relative-position table counts once, as in the checkpoint's 90.3 M parameters
    assert sum(p.numel() for p in model.parameters()) == 90_311_792


def test_full_size_random_checkpoint_round_trips(beats_fixtures, tmp_path):
    cfg = json.loads((beats_fixtures / "beats_iter3_plus_as2m_cfg.json").read_text())
    model = build_beats(cfg)
    path = tmp_path / "random_full.pt"
    torch.save({"cfg": cfg, "model": model.state_dict()}, path)
    loaded = load_beats(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    layer_tables = [layer.self_attn.relative_attention_bias for layer in loaded.encoder.layers]
    assert all(table is layer_tables[0] for table in layer_tables), "the relative position table is shared"


def test_finetuned_predictor_is_loaded_but_unused(tiny_checkpoint, tiny_io, tmp_path):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    cfg = {**checkpoint["cfg"], "finetuned_model": True, "predictor_class": 5}
    state = {**checkpoint["model"], "predictor.weight": torch.randn(5, 64), "predictor.bias": torch.randn(5)}
    path = tmp_path / "finetuned.pt"
    torch.save({"cfg": cfg, "model": state}, path)
    model = load_beats(path)
    assert torch.equal(model.predictor.bias, state["predictor.bias"])
    with torch.no_grad():
        assert (model.encode_fbank(tiny_io["fbank"]) - tiny_io["features"]).abs().max() <= 1e-4


def _write(path, payload):
    torch.save(payload, path)
    return path


def test_error_for_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such BEATs checkpoint"):
        load_beats(tmp_path / "nope.pt")


def test_error_for_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("definitely not a checkpoint")
    with pytest.raises(CheckpointError) as error:
        load_beats(path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a torch checkpoint (torch cannot read this 27-byte file)")
    assert "BEATs_iter3_plus_AS2M.pt" in message and "(101)" not in message and "\n" not in message


def test_error_for_a_torch_file_of_another_format(tmp_path):
    path = _write(tmp_path / "weights_only.pt", {"weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"weights_only\.pt: not a BEATs checkpoint.*'cfg' and 'model'"):
        load_beats(path)


def test_error_for_missing_key(tiny_checkpoint, tmp_path):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    del checkpoint["model"]["encoder.layers.1.fc2.bias"]
    path = _write(tmp_path / "missing.pt", checkpoint)
    with pytest.raises(CheckpointError, match=r"missing\.pt.*missing keys \['encoder\.layers\.1\.fc2\.bias'\]"):
        load_beats(path)


def test_error_for_unexpected_key(tiny_checkpoint, tmp_path):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["model"]["encoder.layers.9.fc2.bias"] = torch.zeros(64)
    path = _write(tmp_path / "extra.pt", checkpoint)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['encoder\.layers\.9\.fc2\.bias'\]"):
        load_beats(path)


def test_error_for_weights_of_another_config_is_one_sentence(tiny_checkpoint, tmp_path):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["cfg"] = {**checkpoint["cfg"], "encoder_ffn_embed_dim": 256}  # the weights stay those of FFN 128
    path = _write(tmp_path / "shape.pt", checkpoint)
    with pytest.raises(CheckpointError) as error:
        load_beats(path)
    message = str(error.value)
    assert message.startswith(f"{path}: 6 weight(s) have another shape than its cfg gives (e.g. encoder.layers.0.fc1.bias")
    assert "download the checkpoint again" in message and "\n" not in message and "size mismatch" not in message


@pytest.mark.parametrize(
    "change, message",
    [
        ({"layer_norm_first": True}, "layer_norm_first=True"),
        ({"input_patch_size": 32}, "input_patch_size=32"),
        ({"activation_fn": "glu"}, "activation_fn='glu'"),
        ({"mystery_option": 1}, "unknown cfg keys \\['mystery_option'\\]"),
    ],
)
def test_error_for_unsupported_config(tiny_checkpoint, tmp_path, change, message):
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["cfg"] = {**checkpoint["cfg"], **change}
    path = _write(tmp_path / "unsupported.pt", checkpoint)
    with pytest.raises(CheckpointError, match=rf"unsupported\.pt: unsupported BEATs config: .*{message}"):
        load_beats(path)
