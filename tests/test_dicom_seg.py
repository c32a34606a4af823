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


# ----------------------------------------------------------------------------------------------
# issue 29: SEG frames on a repaired series and on a non-axial one, every reference checked


def _series(folder, fault: str):
    """An axial CT series with a missing slice or an uneven spacing (repaired on reading), or a
    sagittal one (slices stacked along x) written under file names out of slice order."""
    from globalmask.dicom_rt import write_ct_series
    from globalmask.io import Volume

    shape, spacing = (18, 16, 12), np.array([1.2, 1.0, 2.0])
    aff = np.eye(4)
    if fault == "sagittal":
        aff[:3, :3] = np.column_stack([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]) * spacing
    else:
        aff[:3, :3] = np.diag(spacing)
    aff[:3, 3] = [-10.0, 12.0, 30.0]
    ct = np.full(shape, -1000, np.int16)
    ct[2:16, 2:14, :] = 40
    lps = np.diag([-1.0, -1.0, 1.0]) @ aff[:3, :4]
    positions = np.array([lps[:, 3] + k * lps[:, 2] for k in range(shape[2])])
    if fault == "uneven":
        positions[4:] += 0.8 * lps[:, 2] / spacing[2]
    files = write_ct_series(Volume(ct, aff), folder, positions=positions)
    if fault == "gap":
        files[6].unlink()
    if fault == "sagittal":
        perm = np.random.default_rng(1).permutation(len(files))
        for f in files:
            f.rename(f.with_name("tmp_" + f.name))
        for f, p in zip(files, perm):
            f.with_name("tmp_" + f.name).rename(files[p])
    return sorted(folder.iterdir())


@pytest.mark.parametrize("fault", ["gap", "uneven", "sagittal"])
def test_seg_frames_lie_on_the_label_planes_and_reference_the_source_series(tmp_path, fault):
    """Issue 29: a prediction on a series repaired on reading (missing slice, uneven spacing), or on
    a sagittal series given out of order, becomes a SEG whose every frame lies on its label plane,
    decodes to the same labels, and references the CT's Frame of Reference, study, series and
    every one of its instances."""
    import highdicom as hd

    from globalmask.io import read_volume

    files = _series(tmp_path / "ct", fault)
    vol = read_volume(tmp_path / "ct")
    assert ("dicom_geometry" in vol.notes) == (fault != "sagittal")
    lab = np.zeros(vol.shape, np.uint8)
    lab[3:10, 4:12, 1:vol.shape[2] - 2] = 1
    lab[11:15, 3:7, 4:8] = 2
    lab[5, 5, vol.shape[2] // 2] = 2  # one voxel of another structure on an interpolated plane
    labels = vol.with_array(lab)
    names = {"background": 0, "body": 1, "core": 2}
    headers = read_series_headers(files)
    path = write_dicom_seg(labels, names, headers, tmp_path / "seg.dcm")
    seg = hd.seg.segread(str(path))
    assert seg.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == headers[0].StudyInstanceUID and seg.PatientID == headers[0].PatientID
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert sorted(i.ReferencedSOPInstanceUID for i in series.ReferencedInstanceSequence) == sorted(
        h.SOPInstanceUID for h in headers
    )
    # each frame at the position of its plane of the label map, in patient coordinates (LPS)
    lps = np.diag([-1.0, -1.0, 1.0]) @ vol.affine[:3, :4]
    planes = {tuple(np.round(lps[:, 3] + k * lps[:, 2], 3)) for k in range(vol.shape[2])}
    frames = {
        tuple(np.round(np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float), 3))
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert frames == planes
    assert len(seg.PerFrameFunctionalGroupsSequence) == 2 * vol.shape[2]
    # a frame that names its source image names the CT slice at its own position (on the series' own
    # grid every frame does; on a repaired grid an interpolated plane has none to name)
    at = {h.SOPInstanceUID: np.asarray(h.ImagePositionPatient, float) for h in headers}
    named = 0
    for f in seg.PerFrameFunctionalGroupsSequence:
        for d in f.get("DerivationImageSequence", []):
            for src in d.SourceImageSequence:
                assert src.ReferencedSOPClassUID == headers[0].SOPClassUID
                np.testing.assert_allclose(
                    at[src.ReferencedSOPInstanceUID],
                    np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, float),
                    atol=1e-3,
                )
                named += 1
    if fault == "sagittal":
        assert named == len(seg.PerFrameFunctionalGroupsSequence)
    np.testing.assert_array_equal(read_dicom_seg(path, names, like=labels).array, lab)


def test_seg_decoded_onto_another_grid_is_zero_outside_and_refused_off_the_voxel_centres(tmp_path):
    """read_dicom_seg(..., like=): a grid larger than the SEG's gets 0 where the SEG has no frame; a
    grid whose voxel centres are elsewhere is refused naming the SEG file. The writer's coded
    identity (private scheme, model name) is what a PACS shows."""
    import highdicom as hd

    from globalmask.errors import GeometryError
    from globalmask.io import Volume, read_volume

    files = _series(tmp_path / "ct", "sagittal")
    vol = read_volume(tmp_path / "ct")
    lab = np.zeros(vol.shape, np.uint8)
    lab[3:10, 4:12, 2:9] = 1
    names = {"body": 1}
    path = write_dicom_seg(vol.with_array(lab), names, read_series_headers(files), tmp_path / "seg.dcm")
    seg = hd.seg.segread(str(path))
    assert seg.ManufacturerModelName == "globalmask" and seg.Manufacturer == "globalmask"
    code = seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("body", "99GLOBALMASK", "body")
    larger = Volume(np.zeros((vol.shape[0], vol.shape[1], vol.shape[2] + 3), np.uint8), vol.affine)
    back = read_dicom_seg(path, names, like=larger).array
    np.testing.assert_array_equal(back[:, :, : vol.shape[2]], lab)
    assert not back[:, :, vol.shape[2] :].any()  # beyond the SEG's frames: background, not a structure
    shifted = vol.affine.copy()
    shifted[:3, 3] += 0.5 * vol.affine[:3, 0]  # half a voxel along the first axis
    with pytest.raises(GeometryError, match="does not share voxel centres") as err:
        read_dicom_seg(path, names, like=Volume(np.zeros(vol.shape, np.uint8), shifted))
    assert str(path) in str(err.value)
