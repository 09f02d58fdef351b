"""Property-based: whatever bytes or small arrays arrive, the decoder and the full analysis end in a
result or a clear ScanError — never any other exception."""

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from inference.decode import ScanError, decode_scan

PNG_HEADER = b"\x89PNG\r\n\x1a\n"


def _png(width, height, mode):
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


raw_bytes = st.one_of(
    st.binary(max_size=4096),
    st.binary(max_size=512).map(lambda b: PNG_HEADER + b),                      # looks like a PNG
    st.builds(_png, st.integers(1, 80), st.integers(1, 80), st.sampled_from(["L", "RGB", "RGBA", "1", "I;16"]))
    .flatmap(lambda data: st.integers(0, len(data)).map(lambda cut: data[:cut])),  # truncated PNGs
)

small_arrays = arrays(
    dtype=st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_]),
    shape=array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=70),
)


@settings(max_examples=300, deadline=None)
@given(raw_bytes)
def test_decoder_on_arbitrary_bytes(data):
    try:
        gray, warnings = decode_scan(data)
    except ScanError as error:
        assert str(error)
    else:
        assert gray.dtype == np.uint8 and gray.ndim == 2 and min(gray.shape) >= 32
        assert isinstance(warnings, list)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(small_arrays)
def test_analysis_on_arbitrary_arrays(analyzer, array):
    try:
        analysis = analyzer.analyze(array)
    except ScanError as error:
        assert str(error)
    else:
        assert np.isclose(analysis.probabilities.sum(), 1, atol=1e-5)
        assert analysis.mask().shape == analysis.gray.shape
