"""One definition of the compression ratios, used by the training report and the artifact's
size report alike."""

import pytest

from geta.export.size import LayerSize, SizeReport
from geta.optim.report import CompressionReport
from geta.quant.ratio import FLOAT_BITS, papers_ratio, real_ratio


def test_papers_ratio_is_dense_over_compressed_with_a_one_unit_floor():
    assert papers_ratio(FLOAT_BITS * 1000, 4 * 100) == 80.0
    assert papers_ratio(320.0, 0.0) == 320.0  # nothing left counts as one unit


def test_real_ratio_needs_both_sizes():
    assert real_ratio(4000, 250) == 16.0
    assert real_ratio(4000, None) is None and real_ratio(None, 250) is None


def test_both_reports_use_the_same_definitions():
    size = SizeReport(
        layers=(LayerSize("fc", 1000, 100, 4),), artifact_bytes=250, reference_fp32_bytes=4000
    )
    train = CompressionReport(
        mode="geta",
        budget="80x",
        metric="size",
        target=400.0,
        achieved=400.0,
        dense_cost=32000.0,
        layers=[],
        artifact_bytes=250,
        fp32_bytes=4000,
    )
    assert size.paper_ratio == train.ratio == pytest.approx(80.0)
    assert size.real_ratio == train.real_ratio == 16.0
