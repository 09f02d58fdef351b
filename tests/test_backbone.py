"""The EfficientNet-Lite0/Lite1/Lite2 port: a safe checkpoint reader and a conversion that keeps ImageNet skill."""

import io
import os
import pickle
import struct

import numpy as np
import pytest
import skimage.data
from PIL import Image

from training.architectures import build_segmenter
from training.efficientnet_lite import ENCODERS, imagenet_classifier
from training.finetune import stem_layers
from training.torch_weights import (MAGIC_NUMBER, PROTOCOL_VERSION, UnsafePickleError, efficientnet_lite_checkpoint,
                                    load_state_dict)

# (tensors, ImageNet parameters) of the published checkpoints (lukemelas-style EfficientNet-Lite, 1000 classes).
CHECKPOINTS = {"lite0": (296, 4_694_024), "lite1": (386, 5_470_344), "lite2": (386, 6_150_168)}


@pytest.mark.parametrize("variant", ENCODERS)
def test_checkpoint_reads_without_torch(variant):
    state = load_state_dict(efficientnet_lite_checkpoint(variant))
    parameters = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert (len(state), parameters) == CHECKPOINTS[variant]
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_conv_stem.weight"].dtype == np.float32


@pytest.mark.parametrize(("variant", "frozen_blocks"), [("lite0", 3), ("lite1", 4), ("lite2", 4)])
def test_stem_is_every_block_up_to_stride_4(variant, frozen_blocks):
    """Lite1's extra block in stage 2 (stride 4) is frozen with the stem, its stride-8 blocks train."""
    frozen = stem_layers(build_segmenter(256, variant))
    blocks = {name.split("_")[0] for name in frozen if name.startswith("block")}
    assert blocks == {f"block{i}" for i in range(frozen_blocks)}
    assert "stem_conv" in frozen and not any(name.startswith("decoder") for name in frozen)


class _Exploit:
    """Pickles to a call of os.system: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _legacy_file(payload) -> bytes:
    buffer = io.BytesIO()
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, buffer, protocol=2)
    pickle.dump(payload, buffer, protocol=2)
    pickle.dump([], buffer, protocol=2)
    return buffer.getvalue()


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_file({"weight": _Exploit(marker)}))
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_malicious_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Exploit(marker), protocol=2))
    with pytest.raises(UnsafePickleError):
        load_state_dict(path)
    assert not marker.exists()


def test_truncated_checkpoint_is_an_error(tmp_path):
    data = efficientnet_lite_checkpoint("lite0").read_bytes()
    path = tmp_path / "short.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((ValueError, struct.error)):
        load_state_dict(path)


@pytest.fixture(scope="module", params=ENCODERS)
def imagenet_model(request):
    return imagenet_classifier(224, request.param)


def _top1(model, photo):
    x = np.asarray(Image.fromarray(photo).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float32)
    return int(np.argmax(model.predict(x[None], verbose=0)[0]))


def test_converted_model_recognises_espresso(imagenet_model):
    assert _top1(imagenet_model, skimage.data.coffee()) == 967


def test_converted_model_recognises_a_cat(imagenet_model):
    assert 281 <= _top1(imagenet_model, skimage.data.chelsea()) <= 285
