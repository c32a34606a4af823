"""dicom_seg.py: a DICOM-SEG written from a label map decodes (with highdicom) to the same labels."""

from __future__ import annotations

import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

import numpy as np

from globalmask.dicom_rt import read_series_headers
from globalmask.dicom_seg import read_dicom_seg, write_dicom_seg
from globalmask.phantom import phantom_labels

HN = phantom_labels("headneck")


def test_dicom_seg_decoded_by_highdicom_equals_the_labels(phantom_series, tmp_path):
    import highdicom as hd

    volume, labels, files = phantom_series
    headers = read_series_headers(files)
    path = write_dicom_seg(labels, HN, [pydicom.dcmread(f) for f in files], tmp_path / "seg.dcm")
    seg = hd.seg.segread(str(path))
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert [d.SegmentLabel for d in seg.SegmentSequence] == [n for n in HN if n != "background"]
    back = read_dicom_seg(path, HN, like=labels)
    np.testing.assert_array_equal(back.array, labels.array)
    # highdicom's own per-source-instance decoding agrees frame by frame
    uids = [h.SOPInstanceUID for h in headers]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True, relabel=False)
    number = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    k = int(np.argmax((labels.array == HN["brainstem"]).sum(axis=(0, 1))))
    np.testing.assert_array_equal(number["brainstem"] == frames[k].T, labels.array[:, :, k] == HN["brainstem"])
