"""RTSTRUCT and DICOM-SEG in and out: name mapping, rasterisation, round trips, UIDs, conversion."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")


from globalmask.cli import main
from globalmask.dataset import load_dataset
from globalmask.dicom_rt import (
    build_rtstruct,
    mask_to_contours,
    match_rois,
    normalise_roi_name,
    parse_label_map,
    rasterise_contours,
    read_rtstruct,
    read_series_headers,
    write_ct_series,
    write_rtstruct,
)
from globalmask.dicom_seg import read_dicom_seg
from globalmask.errors import DatasetError
from globalmask.io import Volume, read_volume
from globalmask.metrics import dice
from globalmask.phantom import make_phantom_case, phantom_labels

HN = phantom_labels("headneck")


def test_roi_names_match_ignoring_case_spaces_and_underscores():
    assert {normalise_roi_name(n) for n in ("BrainStem", "Brain Stem", "brainstem", "brain_stem", " BRAIN-STEM ")} == {"brainstem"}
    lm = parse_label_map({"labels": {"brainstem": 1, "parotid_left": 2, "cord": 3}, "synonyms": {"parotid_left": ["Parotid L", "L_Parotid"]}})
    found, missing, ignored = match_rois(["Brain Stem", "PAROTID_L", "External", "BrainStem"], lm)
    assert found == {"brainstem": "Brain Stem", "parotid_left": "PAROTID_L"}
    assert missing == ["cord"]
    assert ignored == {"External": "not in the label map", "BrainStem": "duplicate of 'Brain Stem' for brainstem"}
    assert lm.priority == ["brainstem", "parotid_left", "cord"]


def test_label_map_errors_are_clear():
    with pytest.raises(DatasetError, match="synonym of both"):
        parse_label_map({"labels": {"a": 1, "b": 2}, "synonyms": {"a": ["X"], "b": ["x"]}})
    with pytest.raises(DatasetError, match="distinct"):
        parse_label_map({"a": 1, "b": 1})
    with pytest.raises(DatasetError, match="priority"):
        parse_label_map({"labels": {"a": 1}, "priority": ["z"]})


def test_mask_rtstruct_mask_round_trip_per_structure(phantom_series, tmp_path):
    volume, labels, files = phantom_series
    path = write_rtstruct(labels, HN, read_series_headers(files), tmp_path / "rs.dcm")
    ss = read_rtstruct(path)
    scores = {}
    for roi in ss.rois:
        mask, off = rasterise_contours(roi.contours, volume)
        ref = labels.array == HN[roi.name]
        assert ref.sum() > 20 and off == 0
        scores[roi.name] = dice(mask, ref)
    print("round-trip Dice", {k: round(v, 4) for k, v in scores.items()})
    assert set(scores) == {n for n in HN if n != "background"}
    assert min(scores.values()) >= 0.98


def test_holes_and_several_contours_per_slice_round_trip():
    aff = np.diag([0.8, 0.8, 2.5, 1.0])
    mask = np.zeros((24, 24, 3), bool)
    yy, xx = np.meshgrid(np.arange(24), np.arange(24), indexing="ij")
    r = np.hypot(xx - 8, yy - 8)
    mask[:, :, 1] = (r <= 6) & (r > 3)  # a ring: outer contour + hole
    mask[18:22, 18:22, 1] = True  # a second island
    mask[10:12, 10:12, 1] = False
    mask[7:10, 7:10, 1] = True  # an island inside the hole
    contours = mask_to_contours(mask, aff)
    assert len(contours) == 4
    back, _ = rasterise_contours([c for _, c in contours], Volume(np.zeros(mask.shape), aff))
    np.testing.assert_array_equal(back, mask)


def test_hand_drawn_square_with_a_hole_rasterises_to_known_voxels():
    """Contours as a planning system writes them (LPS mm); 1 mm voxels, identity-like LPS grid."""
    aff = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS affine whose LPS axes are the array axes
    vol = Volume(np.zeros((12, 12, 4)), aff)

    def square(lo, hi, z):
        return np.array([[lo, lo, z], [hi, lo, z], [hi, hi, z], [lo, hi, z]], float)

    mask, off = rasterise_contours([square(1.5, 9.5, 2.0), square(3.5, 7.5, 2.0)], vol)
    assert off == 0
    assert mask[:, :, 2].sum() == 8 * 8 - 4 * 4 and mask[:, :, [0, 1, 3]].sum() == 0
    assert mask[2, 2, 2] and not mask[5, 5, 2] and mask[9, 9, 2] and not mask[10, 10, 2]


def test_written_rtstruct_is_valid_and_references_the_series(phantom_series, tmp_path):
    volume, labels, files = phantom_series
    headers = read_series_headers(files)
    path = write_rtstruct(labels, HN, headers, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)  # reads back as a standard DICOM file
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and ds.Modality == "RTSTRUCT"
    assert ds.StudyInstanceUID == headers[0].StudyInstanceUID and ds.PatientID == headers[0].PatientID
    ref = ds.ReferencedFrameOfReferenceSequence[0]
    assert ref.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    series = ref.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == {h.SOPInstanceUID for h in headers}
    z_of = {h.SOPInstanceUID: float(h.ImagePositionPatient[2]) for h in headers}
    names = [r.ROIName for r in ds.StructureSetROISequence]
    assert names == [n for n in HN if n != "background"]
    colours = {tuple(rc.ROIDisplayColor) for rc in ds.ROIContourSequence}
    assert len(colours) == len(names)
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence:
            z = float(c.ContourData[2])
            assert z_of[c.ContourImageSequence[0].ReferencedSOPInstanceUID] == pytest.approx(z, abs=1e-3)


def _patient(root, name, case_index, roi_names, seed=0):
    """A patient folder: phantom CT series + RTSTRUCT with the given {phantom label: ROI name}."""
    ct, lab = make_phantom_case("headneck", case_index, seed, shape=(40, 40, 24))
    files = write_ct_series(ct, root / name / "CT", patient_id=name)
    vol = read_volume(root / name / "CT")
    names = {roi: HN[label] for label, roi in roi_names.items()}
    labels = vol.with_array(lab.array)
    ds = build_rtstruct(labels, names, read_series_headers(files))
    ds.save_as(str(root / name / "RS.dcm"), enforce_file_format=True)
    return labels


def test_convert_dicom_rt_to_nnunet_dataset(tmp_path, capsys):
    src = tmp_path / "src"
    a = _patient(src, "pat A", 0, {"brainstem": "Brain Stem", "spinal_cord": "SPINAL_CORD", "mandible": "Mandible"})
    b = _patient(src, "patB", 1, {"brainstem": "BrainStem", "parotid_left": "Parotid L", "mandible": "External"})
    label_map = tmp_path / "labels.yaml"
    label_map.write_text(
        "labels: {brainstem: 1, spinal_cord: 2, parotid_left: 3}\nsynonyms: {parotid_left: [Parotid L]}\n", encoding="utf-8"
    )
    assert main(["convert", "dicom-rt", str(src), "--labels", str(label_map), "--out", str(tmp_path / "ds")]) == 0
    ds = load_dataset(tmp_path / "ds")
    assert ds.labels == {"background": 0, "brainstem": 1, "spinal_cord": 2, "parotid_left": 3}
    assert sorted(ds.cases) == sorted(["pat_A", "patB"])
    got = read_volume(ds.cases["pat_A"].label)
    np.testing.assert_allclose(got.affine, a.affine, atol=1e-3)
    assert dice(got.array == 1, a.array == HN["brainstem"]) >= 0.98
    assert dice(got.array == 2, a.array == HN["spinal_cord"]) >= 0.98
    got_b = read_volume(ds.cases["patB"].label)
    assert dice(got_b.array == 3, b.array == HN["parotid_left"]) >= 0.98
    rows = {r["patient"]: r for r in csv.DictReader((tmp_path / "ds" / "conversion.csv").open(encoding="utf-8"))}
    assert rows["pat A"]["found"] == "brainstem=Brain Stem; spinal_cord=SPINAL_CORD"
    assert rows["pat A"]["missing"] == "parotid_left" and "Mandible (not in the label map)" in rows["pat A"]["ignored"]
    assert rows["patB"]["missing"] == "spinal_cord" and "External" in rows["patB"]["ignored"]
    assert rows["patB"]["geometry"] == "regular"


def test_overlaps_are_resolved_by_the_stated_priority(tmp_path):
    src = tmp_path / "src"
    ct, _ = make_phantom_case("headneck", 0, 0, shape=(32, 32, 16))
    files = write_ct_series(ct, src / "p" / "CT")
    vol = read_volume(src / "p" / "CT")
    lab = np.zeros(vol.shape, np.uint8)
    lab[8:20, 8:20, 4:10] = 1
    second = np.zeros(vol.shape, np.uint8)
    second[14:26, 14:26, 4:10] = 1  # overlaps the first on 6x6x6 voxels
    headers = read_series_headers(files)
    ds = build_rtstruct(vol.with_array(lab), {"PTV": 1}, headers)
    other = build_rtstruct(vol.with_array(second), {"Cord": 1}, headers)
    roi, rc, obs = other.StructureSetROISequence[0], other.ROIContourSequence[0], other.RTROIObservationsSequence[0]
    roi.ROINumber = rc.ReferencedROINumber = obs.ReferencedROINumber = obs.ObservationNumber = 2
    ds.StructureSetROISequence.append(roi)
    ds.ROIContourSequence.append(rc)
    ds.RTROIObservationsSequence.append(obs)
    ds.save_as(str(src / "p" / "RS.dcm"), enforce_file_format=True)
    from globalmask.dicom_rt import convert_dicom_rt

    _, rows = convert_dicom_rt(src, parse_label_map({"labels": {"ptv": 1, "cord": 2}, "priority": ["cord", "ptv"]}), tmp_path / "ds", progress=False)
    out = read_volume(tmp_path / "ds" / "labelsTr" / "p.nii.gz").array
    assert (out == 2).sum() == 12 * 12 * 6  # cord wins the overlap
    assert (out == 1).sum() == 12 * 12 * 6 - 6 * 6 * 6
    assert rows[0]["overlap_voxels_lost"] == "ptv:216"


@pytest.mark.slow
def test_planning_cts_to_model_to_rtstruct_and_seg_predictions(tmp_path):
    """convert dicom-rt -> train (a few steps) -> predict --format rtstruct / dicom-seg on a DICOM series."""
    src = tmp_path / "src"
    for i in range(3):
        _patient(src, f"p{i}", i, {"brainstem": "Brainstem", "mandible": "Mandible"})
    label_map = tmp_path / "labels.json"
    label_map.write_text('{"labels": {"brainstem": 1, "mandible": 2}}', encoding="utf-8")
    assert main(["convert", "dicom-rt", str(src), "--labels", str(label_map), "--out", str(tmp_path / "ds")]) == 0
    run = tmp_path / "run"
    assert main(["train", str(tmp_path / "ds"), "--mode", "gbm", "--steps", "4", "--val-every", "2", "--channels", "8", "16", "32", "--res-units", "1", "--out", str(run), "--device", "cpu"]) == 0
    ct_folder = src / "p0" / "CT"
    for fmt, name in (("rtstruct", "CT_rtstruct.dcm"), ("dicom-seg", "CT_seg.dcm")):
        out = tmp_path / f"pred_{fmt}"
        assert main(["predict", str(run / "model.pt"), str(ct_folder), "--format", fmt, "--out", str(out)]) == 0
        pred = read_volume(out / "CT.nii.gz")
        obj = out / name
        ds = pydicom.dcmread(obj)
        headers = read_series_headers(sorted(ct_folder.iterdir()))
        assert ds.FrameOfReferenceUID if fmt == "dicom-seg" else ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
        if fmt == "rtstruct":
            ss = read_rtstruct(obj)
            for roi in ss.rois:
                mask, _ = rasterise_contours(roi.contours, pred)
                expected = pred.array == {"brainstem": 1, "mandible": 2}[roi.name]
                np.testing.assert_array_equal(mask, expected)
        else:
            assert ds.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
            np.testing.assert_array_equal(read_dicom_seg(obj, {"brainstem": 1, "mandible": 2}, like=pred).array, pred.array)
