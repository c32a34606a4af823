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
    rasterise_roi,
    read_rtstruct,
    read_series_headers,
    rtstruct_problems,
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
    names = ("BrainStem", "Brain Stem", "brainstem", "brain_stem", " BRAIN-STEM ")
    assert {normalise_roi_name(n) for n in names} == {"brainstem"}
    lm = parse_label_map(
        {
            "labels": {"brainstem": 1, "parotid_left": 2, "cord": 3},
            "synonyms": {"parotid_left": ["Parotid L", "L_Parotid"]},
        }
    )
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
        "labels: {brainstem: 1, spinal_cord: 2, parotid_left: 3}\nsynonyms: {parotid_left: [Parotid L]}\n",
        encoding="utf-8",
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

    _, rows = convert_dicom_rt(
        src,
        parse_label_map({"labels": {"ptv": 1, "cord": 2}, "priority": ["cord", "ptv"]}),
        tmp_path / "ds",
        progress=False,
    )
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
    assert main(["train", str(tmp_path / "ds"), "--mode", "gbm", "--steps", "4", "--val-every", "2",
                 "--channels", "8", "16", "32", "--res-units", "1", "--out", str(run), "--device", "cpu"]) == 0
    ct_folder = src / "p0" / "CT"
    for fmt, name in (("rtstruct", "CT_rtstruct.dcm"), ("dicom-seg", "CT_seg.dcm")):
        out = tmp_path / f"pred_{fmt}"
        assert main(["predict", str(run / "model.pt"), str(ct_folder), "--format", fmt, "--out", str(out)]) == 0
        pred = read_volume(out / "CT.nii.gz")
        obj = out / name
        ds = pydicom.dcmread(obj)
        headers = read_series_headers(sorted(ct_folder.iterdir()))
        assert (
            ds.FrameOfReferenceUID
            if fmt == "dicom-seg"
            else ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
        )
        if fmt == "rtstruct":
            ss = read_rtstruct(obj)
            for roi in ss.rois:
                mask, _ = rasterise_contours(roi.contours, pred)
                expected = pred.array == {"brainstem": 1, "mandible": 2}[roi.name]
                np.testing.assert_array_equal(mask, expected)
        else:
            assert ds.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
            np.testing.assert_array_equal(
                read_dicom_seg(obj, {"brainstem": 1, "mandible": 2}, like=pred).array, pred.array
            )


# ----------------------------------------------------------------------------------------------
# issue 25: every contour on its own slice, none merged into the nearest one, none lost on a repaired grid


def _square(lo, hi, z):
    return np.array([[lo, lo, z], [hi, lo, z], [hi, hi, z], [lo, hi, z]], float)


def test_contours_beyond_the_ct_are_dropped_and_reported_not_merged_into_the_edge_slice():
    """A structure set drawn on a longer scan: contours below the first CT slice used to be XORed
    into it, cutting a hole (one ROI lost 32% of its volume)."""
    vol = Volume(np.zeros((12, 12, 4)), np.diag([-1.0, -1.0, 1.0, 1.0]))  # LPS z of plane k is k mm
    inside = [_square(1.5, 9.5, z) for z in (0.0, 1.0, 2.0, 3.0)]
    beyond = [_square(3.5, 7.5, z) for z in (-2.0, -1.0, 4.0, 6.0)]  # off the CT at both ends
    between = [_square(3.5, 7.5, 1.5)]  # half-way between two slices
    mask, report = rasterise_roi([*inside, *beyond, *between], vol)
    assert mask.sum() == 4 * 8 * 8  # every plane a full square: no holes cut by foreign contours
    assert report.used == 4 and sorted(report.off_plane_z) == [-2.0, -1.0, 1.5, 4.0, 6.0]
    (line,) = report.problems("Parotid L", vol)
    assert (
        "ROI 'Parotid L': 5 contour(s) at z -2.00..6.00 mm lie on no CT slice" in line
        and "CT spans z 0.00..3.00 mm" in line
    )
    assert rasterise_contours([*inside, *beyond], vol)[1] == 4


def test_contours_outside_the_field_of_view_are_reported():
    vol = Volume(np.zeros((12, 12, 2)), np.diag([-1.0, -1.0, 1.0, 1.0]))
    mask, report = rasterise_roi([_square(20.0, 30.0, 0.0), _square(8.5, 15.0, 1.0)], vol)
    assert report.outside == 1 and report.clipped == 1 and report.used == 1
    assert mask[:, :, 0].sum() == 0 and mask[:, :, 1].sum() == 3 * 3  # voxels 9..11 of the clipped one
    assert any("wholly outside" in p for p in report.problems("x", vol))
    assert any("cut at its edge" in p for p in report.problems("x", vol))


def _faulty_series(folder, fault: str, oblique: bool):
    """A CT series with one fault (gap, uneven, tilt, none) on an axial or oblique (20 deg about x) grid."""
    shape, spacing = (36, 32, 20), np.array([1.2, 1.0, 2.0])
    rot = np.eye(3)
    if oblique:
        a = np.deg2rad(20.0)
        rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = [-20.0, -15.0, 30.0]
    ct = np.full(shape, -1000, np.int16)
    ct[4:32, 4:28, :] = 40
    vol = Volume(ct, aff)
    lps = np.diag([-1.0, -1.0, 1.0]) @ aff[:3, :4]
    normal, col = lps[:, 2] / spacing[2], lps[:, 1] / spacing[1]
    positions = np.array([lps[:, 3] + k * lps[:, 2] for k in range(shape[2])])
    if fault == "uneven":
        positions[10:] += 1.0 * normal
    if fault == "tilt":
        positions += np.arange(shape[2])[:, None] * (spacing[2] * np.tan(np.deg2rad(12.0))) * col
    files = write_ct_series(vol, folder, positions=positions)
    if fault == "gap":
        files[7].unlink()
        files = [f for i, f in enumerate(files) if i != 7]
    return files


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
@pytest.mark.parametrize("fault", ["gap", "uneven", "tilt"])
def test_rtstruct_on_a_repaired_grid_references_the_source_slices_and_reimports(tmp_path, fault, oblique):
    """Issue 25: on a series with a missing slice the RTSTRUCT re-imported with Dice 0.85 (the contour
    of the interpolated plane landed on its neighbour)."""
    files = _faulty_series(tmp_path / "ct", fault, oblique)
    vol = read_volume(tmp_path / "ct")
    assert vol.notes["dicom_geometry"]["resampled"]
    # two structures defined in world space, sampled on the repaired grid (as a prediction would be)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in vol.shape], indexing="ij"), -1).reshape(-1, 3).astype(float)
    world = idx @ vol.affine[:3, :3].T + vol.affine[:3, 3]
    centre = world.mean(axis=0)
    d = (world - centre) / [10.0, 8.0, 14.0]
    lab = np.zeros(len(world), np.uint8)
    lab[(d**2).sum(1) <= 1] = 1
    lab[((world - centre - [0, 0, 6.0]) ** 2).sum(1) <= 4.0**2] = 2
    labels = vol.with_array(lab.reshape(vol.shape))
    headers = read_series_headers(files)
    path = write_rtstruct(labels, {"body": 1, "core": 2}, headers, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    normal = np.cross(
        np.asarray(headers[0].ImageOrientationPatient[:3], float),
        np.asarray(headers[0].ImageOrientationPatient[3:], float),
    )
    along = {h.SOPInstanceUID: float(np.asarray(h.ImagePositionPatient, float) @ normal) for h in headers}
    for rc in ds.ROIContourSequence:
        for c in rc.ContourSequence:  # every contour lies on the source slice it references
            z = np.asarray(c.ContourData, float).reshape(-1, 3) @ normal
            np.testing.assert_allclose(z, along[c.ContourImageSequence[0].ReferencedSOPInstanceUID], atol=1e-3)
    for roi in read_rtstruct(path).rois:
        mask, report = rasterise_roi(roi.contours, vol)
        assert report.dropped == 0 and report.clipped == 0
        score = dice(mask, labels.array == {"body": 1, "core": 2}[roi.name])
        assert score >= 0.98, (roi.name, score)


def test_rtstruct_is_valid_dicom_with_an_empty_structure(phantom_series, tmp_path):
    """Issue 25: a structure the model did not find had an empty Contour Sequence (a Type 1 violation
    per dciodvfy); the top-level Frame of Reference UID, Operators' Name, Position Reference Indicator were missing."""
    volume, labels, files = phantom_series
    names = {**HN, "not_found": 99}
    ds = pydicom.dcmread(write_rtstruct(labels, names, read_series_headers(files), tmp_path / "rs.dcm"))
    assert rtstruct_problems(ds) == []
    assert ds.FrameOfReferenceUID == ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    assert "OperatorsName" in ds and "PositionReferenceIndicator" in ds
    empty = [rc for rc in ds.ROIContourSequence if rc.ReferencedROINumber == len(names) - 1]
    assert len(empty) == 1 and "ContourSequence" not in empty[0]
    assert [r.ROIName for r in ds.StructureSetROISequence][-1] == "not_found"  # still listed
    # the checker itself finds what the landed writer got wrong
    ds.ROIContourSequence[-1].ContourSequence = pydicom.sequence.Sequence([])
    del ds.OperatorsName
    problems = rtstruct_problems(ds)
    assert any("empty ContourSequence" in p for p in problems) and any("OperatorsName" in p for p in problems)


def test_rtstruct_passes_dciodvfy(phantom_series, tmp_path):
    import shutil
    import subprocess

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; the pydicom checks above still run")
    volume, labels, files = phantom_series
    path = write_rtstruct(labels, {**HN, "not_found": 99}, read_series_headers(files), tmp_path / "rs.dcm")
    for obj in (path, files[0]):  # the structure set, and a slice of the CT series globalmask writes
        out = subprocess.run([tool, str(obj)], capture_output=True, text=True, check=False)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], errors


def test_convert_warns_about_every_dropped_contour_and_lists_it(tmp_path, capsys):
    """Issue 25: contours beyond the CT, open and point contours were dropped or merged with only a count."""
    src = tmp_path / "src"
    labels = _patient(src, "p", 0, {"brainstem": "Brainstem", "mandible": "Mandible"})
    ds = pydicom.dcmread(src / "p" / "RS.dcm")
    rc = ds.ROIContourSequence[0]  # Brainstem
    first = rc.ContourSequence[0]
    z_first = float(pydicom.dcmread(sorted((src / "p" / "CT").iterdir())[0]).ImagePositionPatient[2])
    for kind, dz, n in (("CLOSED_PLANAR", -12.0, None), ("OPEN_PLANAR", 0.0, None), ("POINT", 0.0, 1)):
        c = pydicom.Dataset()
        pts = np.asarray(first.ContourData, float).reshape(-1, 3)[: n or None].copy()
        pts[:, 2] = z_first + dz if kind == "CLOSED_PLANAR" else pts[:, 2]
        c.ContourGeometricType, c.NumberOfContourPoints = kind, len(pts)
        c.ContourData = [f"{v:.4f}" for v in pts.ravel()]
        rc.ContourSequence.append(c)
    ds.save_as(str(src / "p" / "RS.dcm"), enforce_file_format=True)
    label_map = tmp_path / "labels.json"
    label_map.write_text('{"labels": {"brainstem": 1, "mandible": 2}}', encoding="utf-8")
    assert main(["convert", "dicom-rt", str(src), "--labels", str(label_map), "--out", str(tmp_path / "ds")]) == 0
    messages = [line for line in capsys.readouterr().err.splitlines() if "globalmask convert: warning: " in line]
    assert any("ROI 'Brainstem': 1 contour(s) at z" in m and "lie on no CT slice" in m for m in messages), messages
    assert any(
        "ROI 'Brainstem': 2 contour(s) are not closed polygons (1 OPEN_PLANAR, 1 POINT)" in m for m in messages
    ), messages
    row = next(csv.DictReader((tmp_path / "ds" / "conversion.csv").open(encoding="utf-8")))
    assert "lie on no CT slice" in row["dropped_contours"] and row["off_plane_contours"] == "1"
    got = read_volume(tmp_path / "ds" / "labelsTr" / "p.nii.gz")
    assert dice(got.array == 1, labels.array == HN["brainstem"]) >= 0.98  # nothing merged into the first slice


def test_convert_is_all_or_nothing_and_skip_bad_lists_the_bad_patients(tmp_path, capsys):
    """Issue 25: a multi-patient conversion failing on one patient left the others' files and no
    dataset.json, and the rerun was refused because the folder was not empty."""
    src = tmp_path / "src"
    for name, i in (("a", 0), ("b", 1)):
        _patient(src, name, i, {"brainstem": "Brainstem"})
    _patient(src, "c", 2, {"brainstem": "Brainstem"})
    files = sorted((src / "c" / "CT").iterdir())
    for f in files[4:9]:  # five slices missing: refused when the CT is read, after a and b converted
        f.unlink()
    label_map = tmp_path / "labels.json"
    label_map.write_text('{"labels": {"brainstem": 1}}', encoding="utf-8")
    out = tmp_path / "ds"
    argv = ["convert", "dicom-rt", str(src), "--labels", str(label_map), "--out", str(out)]
    assert main(argv) == 2
    assert "several slices missing" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    (src / "d").mkdir()  # a patient folder without any RTSTRUCT: found before any CT is read
    (src / "d" / "notes.txt").write_text("x", encoding="utf-8")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "1 of 4 patient folder(s) cannot be converted" in err and "no RT Structure Set" in err and "--skip-bad" in err
    )
    assert not out.exists()
    out.mkdir()  # an empty folder is fine, and the rerun with --skip-bad converts the good ones
    assert main([*argv, "--skip-bad"]) == 0
    assert "skipped 2 (c, d)" in capsys.readouterr().out
    assert sorted(load_dataset(out).cases) == ["a", "b"]
    rows = {r["patient"]: r for r in csv.DictReader((out / "conversion.csv").open(encoding="utf-8"))}
    assert (
        rows["a"]["status"] == "converted"
        and rows["c"]["status"] == "skipped"
        and "several slices missing" in rows["c"]["reason"]
    )
    assert "no RT Structure Set" in rows["d"]["reason"]
    assert __import__("json").loads((out / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 2


# ----------------------------------------------------------------------------------------------
# issue 29: contours on repaired grids, references below the top level, non-axial series, ROI names


def _slice_square(h, lo: float, hi: float) -> np.ndarray:
    """A square contour (LPS mm) drawn on CT slice ``h``: lo..hi mm along its row and column directions."""
    p = np.asarray(h.ImagePositionPatient, float)
    r, c = np.asarray(h.ImageOrientationPatient[:3], float), np.asarray(h.ImageOrientationPatient[3:], float)
    return np.array([p + u * r + v * c for u, v in ((lo, lo), (hi, lo), (hi, hi), (lo, hi))])


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
@pytest.mark.parametrize("fault", ["gap", "uneven"])
def test_contours_drawn_on_a_repaired_series_fill_the_planes_nearest_their_slices(tmp_path, fault, oblique):
    """Issue 29: a structure set drawn by a planning system on a series with a missing slice or an
    uneven spacing is read onto the regular grid the series was repaired onto: every plane holds
    exactly the contour of the CT slice nearest to it (a different size on each slice tells which),
    and every slice's contour is used."""
    files = _faulty_series(tmp_path / "ct", fault, oblique)
    vol = read_volume(tmp_path / "ct")
    assert vol.notes["dicom_geometry"]["resampled"]
    headers = read_series_headers(files)
    lo = 3.3
    his = [lo + 6.0 + 2.0 * (s % 5) for s in range(len(headers))]  # neighbours differ in size
    mask, report = rasterise_roi([_slice_square(h, lo, hi) for h, hi in zip(headers, his)], vol)
    assert report.used == len(headers) and report.dropped == 0 and report.clipped == 0
    normal = np.cross(
        np.asarray(headers[0].ImageOrientationPatient[:3], float),
        np.asarray(headers[0].ImageOrientationPatient[3:], float),
    )
    along = np.array([float(np.asarray(h.ImagePositionPatient, float) @ normal) for h in headers])
    i, j = np.meshgrid(np.arange(vol.shape[0]), np.arange(vol.shape[1]), indexing="ij")
    for k in range(vol.shape[2]):
        idx = np.stack([i, j, np.full_like(i, k)], -1).reshape(-1, 3).astype(float)
        world = (idx @ vol.affine[:3, :3].T + vol.affine[:3, 3]) * [-1, -1, 1]  # LPS voxel centres
        dist = np.abs(along - float(world[0] @ normal))
        options = []
        for s in np.flatnonzero(dist <= dist.min() + 1e-6):  # the nearest slice (either one of a tie)
            h = headers[s]
            p = np.asarray(h.ImagePositionPatient, float)
            u = (world - p) @ np.asarray(h.ImageOrientationPatient[:3], float)
            v = (world - p) @ np.asarray(h.ImageOrientationPatient[3:], float)
            options.append(((u > lo) & (u < his[s]) & (v > lo) & (v < his[s])).reshape(i.shape))
        assert any(np.array_equal(mask[:, :, k], o) for o in options), (
            k, int(mask[:, :, k].sum()), [int(o.sum()) for o in options]
        )


def _sagittal_series(folder, n=10, seed=0):
    """A sagittal CT series (slices stacked along x) whose file names are out of slice order."""
    shape, spacing = (20, 18, n), (1.0, 1.5, 2.5)
    aff = np.eye(4)
    # RAS: rows A->P, columns S->I, slices R->L
    aff[:3, :3] = np.column_stack([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]) * spacing
    aff[:3, 3] = [-12.0, 40.0, 30.0]
    ct = np.full(shape, -1000, np.int16)
    ct[2:18, 2:16, :] = 40
    files = write_ct_series(Volume(ct, aff), folder)
    perm = np.random.default_rng(seed).permutation(len(files))
    for f in files:
        f.rename(f.with_name("tmp_" + f.name))
    for f, p in zip(files, perm):
        f.with_name("tmp_" + f.name).rename(files[p])
    return sorted(folder.iterdir())  # in name order: not the slice order


def test_rtstruct_on_a_shuffled_sagittal_series_references_each_contours_own_slice(tmp_path):
    """Issue 29: every reference below the top level of a written RTSTRUCT checked against the source
    series: each ROI's Referenced Frame of Reference, each contour's image (SOP class and the
    instance it lies on), the series' image list, the observations; on a non-axial series whose
    files are out of order. The contours re-import onto the same voxels."""
    files = _sagittal_series(tmp_path / "ct")
    vol = read_volume(tmp_path / "ct")
    lab = np.zeros(vol.shape, np.uint8)
    lab[4:12, 5:14, 2:8] = 1
    lab[13:17, 3:7, 1:4] = 2
    labels = vol.with_array(lab)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    ds = pydicom.dcmread(
        write_rtstruct(labels, {"box": 1, "cube": 2, "absent": 3}, read_series_headers(files), tmp_path / "rs.dcm")
    )
    for_uid = headers[0].FrameOfReferenceUID
    by_uid = {h.SOPInstanceUID: h for h in headers}
    normal = np.cross(
        np.asarray(headers[0].ImageOrientationPatient[:3], float),
        np.asarray(headers[0].ImageOrientationPatient[3:], float),
    )
    assert [r.ReferencedFrameOfReferenceUID for r in ds.StructureSetROISequence] == [for_uid] * 3
    assert [r.ROINumber for r in ds.StructureSetROISequence] == [1, 2, 3]
    observations = [(o.ObservationNumber, o.ReferencedROINumber) for o in ds.RTROIObservationsSequence]
    assert observations == [(1, 1), (2, 2), (3, 3)]
    assert [rc.ReferencedROINumber for rc in ds.ROIContourSequence] == [1, 2, 3]
    study = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == headers[0].StudyInstanceUID
    listed = [i.ReferencedSOPInstanceUID for i in study.RTReferencedSeriesSequence[0].ContourImageSequence]
    assert sorted(listed) == sorted(by_uid) and len(set(listed)) == len(listed)
    classes = {i.ReferencedSOPClassUID for i in study.RTReferencedSeriesSequence[0].ContourImageSequence}
    assert classes == {headers[0].SOPClassUID}
    slices_used = {1: set(), 2: set()}
    for rc in ds.ROIContourSequence[:2]:
        for c in rc.ContourSequence:
            (image,) = c.ContourImageSequence
            assert image.ReferencedSOPClassUID == headers[0].SOPClassUID
            h = by_uid[image.ReferencedSOPInstanceUID]
            pts = np.asarray(c.ContourData, float).reshape(-1, 3)
            np.testing.assert_allclose(
                pts @ normal, float(np.asarray(h.ImagePositionPatient, float) @ normal), atol=1e-3
            )
            slices_used[rc.ReferencedROINumber].add(image.ReferencedSOPInstanceUID)
    along = {h.SOPInstanceUID: float(np.asarray(h.ImagePositionPatient, float) @ normal) for h in headers}
    order = sorted(along, key=along.get)
    assert slices_used[1] == set(order[2:8]) and slices_used[2] == set(order[1:4])  # the label planes' own slices
    for roi in read_rtstruct(tmp_path / "rs.dcm").rois:
        mask, report = rasterise_roi(roi.contours, vol)
        np.testing.assert_array_equal(mask, lab == {"box": 1, "cube": 2, "absent": 3}[roi.name])


@pytest.mark.parametrize(
    ("spec", "rois", "found", "ignored"),
    [
        # the label's own name still matches when synonyms are given (as a list or as one string)
        ({"labels": {"parotid_left": 1}, "synonyms": {"parotid_left": ["Parotid L"]}}, ["Parotid_Left"],
         {"parotid_left": "Parotid_Left"}, {}),
        ({"labels": {"parotid_left": 1}, "synonyms": {"parotid_left": "Parotid L"}}, ["parotid-left", "PAROTID L"],
         {"parotid_left": "parotid-left"}, {"PAROTID L": "duplicate of 'parotid-left' for parotid_left"}),
        # case, spaces (also tabs and runs of them), underscores and hyphens fold; other characters do not
        ({"brain_stem": 1}, ["Brain\tStem"], {"brain_stem": "Brain\tStem"}, {}),
        ({"brain_stem": 1}, ["BRAIN - STEM"], {"brain_stem": "BRAIN - STEM"}, {}),
        ({"brain_stem": 1}, ["Brain.Stem", "BrainStem1"], {},
         {"Brain.Stem": "not in the label map", "BrainStem1": "not in the label map"}),
        # duplicates: the first ROI in the file wins, whichever name (label or synonym) it used
        ({"labels": {"cord": 1}, "synonyms": {"cord": ["Spinal Cord", "SC"]}}, ["SC", "cord", "Spinal_Cord"],
         {"cord": "SC"}, {"cord": "duplicate of 'SC' for cord", "Spinal_Cord": "duplicate of 'SC' for cord"}),
        # a synonym of one label never captures another label's own name
        ({"labels": {"lung_l": 1, "lung_r": 2}, "synonyms": {"lung_l": ["Lung Left"], "lung_r": ["Lung Right"]}},
         ["LUNG_R", "Lung Left"], {"lung_r": "LUNG_R", "lung_l": "Lung Left"}, {}),
    ],
)
def test_roi_name_matching_table(spec, rois, found, ignored):
    lm = parse_label_map(spec)
    got_found, missing, got_ignored = match_rois(rois, lm)
    assert got_found == found and got_ignored == ignored
    assert missing == [n for n in lm.labels if n not in found]


def test_a_synonym_equal_to_another_labels_name_is_refused():
    with pytest.raises(DatasetError, match="synonym of both 'a' and 'b'"):
        parse_label_map({"labels": {"a": 1, "b": 2}, "synonyms": {"b": ["A"]}})
    with pytest.raises(DatasetError, match="unknown label"):
        parse_label_map({"labels": {"a": 1}, "synonyms": {"c": ["x"]}})


def test_a_slice_stored_twice_gets_one_set_of_contours_on_a_shuffled_sagittal_series(tmp_path):
    """Issue 29: the same slice exported twice (an identical duplicate the reader drops) must not get
    its contours twice: the even-odd rule of every reader would cancel them and empty the plane.
    Duplicates are found along the slice normal, whatever the files' order and orientation."""
    files = _sagittal_series(tmp_path / "ct")
    import shutil

    shutil.copy(files[3], tmp_path / "ct" / "AAA_copy.dcm")  # first in name order, far from its twin
    files = sorted((tmp_path / "ct").iterdir())
    vol = read_volume(tmp_path / "ct")
    assert vol.shape[2] == 10 and not vol.notes["dicom_geometry"]["resampled"]
    lab = np.zeros(vol.shape, np.uint8)
    lab[4:12, 5:14, :] = 1  # on every plane, the duplicated slice's included
    path = write_rtstruct(vol.with_array(lab), {"box": 1}, read_series_headers(files), tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    assert len(ds.ROIContourSequence[0].ContourSequence) == 10  # one contour per position
    (roi,) = read_rtstruct(path).rois
    mask, report = rasterise_roi(roi.contours, vol)
    assert report.dropped == 0
    np.testing.assert_array_equal(mask, lab == 1)


def test_prediction_objects_are_written_per_series_folder_in_both_formats(tmp_path):
    """write_prediction_objects (predict --format rtstruct|dicom-seg) without training a model: one
    object per (series folder, label map), named after the label map, holding its structures."""
    from globalmask.dicom_rt import write_prediction_objects
    from globalmask.io import write_volume

    _sagittal_series(tmp_path / "ct")
    vol = read_volume(tmp_path / "ct")
    lab = np.zeros(vol.shape, np.uint8)
    lab[4:12, 5:14, 2:8] = 1
    label_file = write_volume(vol.with_array(lab), tmp_path / "pred" / "case7.nii.gz")
    names = {"background": 0, "box": 1}
    (rs,) = write_prediction_objects([tmp_path / "ct"], [label_file], names, tmp_path / "pred", "rtstruct")
    (seg,) = write_prediction_objects([tmp_path / "ct"], [label_file], names, tmp_path / "pred", "dicom-seg")
    assert (rs.name, seg.name) == ("case7_rtstruct.dcm", "case7_seg.dcm")
    (roi,) = read_rtstruct(rs).rois
    np.testing.assert_array_equal(rasterise_roi(roi.contours, vol)[0], lab == 1)
    np.testing.assert_array_equal(read_dicom_seg(seg, names, like=vol).array, lab)


def test_label_map_and_structure_set_oddities_are_read_or_refused_clearly(tmp_path):
    from globalmask.dicom_rt import convert_dicom_rt, load_label_map
    from globalmask.errors import OutputError

    bad = tmp_path / "labels.json"
    bad.write_text('{"labels": {"a": 1,}}', encoding="utf-8")
    with pytest.raises(DatasetError, match="cannot parse label map: Expecting property name") as err:
        load_label_map(bad)
    assert str(bad) in str(err.value)
    (tmp_path / "src").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x", encoding="utf-8")
    with pytest.raises(OutputError, match="not empty") as err:
        convert_dicom_rt(tmp_path / "src", parse_label_map({"a": 1}), tmp_path / "out", progress=False)
    assert str(tmp_path / "out") in str(err.value)
    # a structure set without the (Type 3) Referenced Frame of Reference Sequence still reads
    files = _sagittal_series(tmp_path / "ct")
    vol = read_volume(tmp_path / "ct")
    lab = np.zeros(vol.shape, np.uint8)
    lab[4:12, 5:14, 2:8] = 1
    ds = build_rtstruct(vol.with_array(lab), {"box": 1}, read_series_headers(files))
    del ds.ReferencedFrameOfReferenceSequence
    ds.save_as(str(tmp_path / "rs.dcm"), enforce_file_format=True)
    ss = read_rtstruct(tmp_path / "rs.dcm")
    assert ss.frame_of_reference_uid == "" and ss.series_uids == [] and [r.name for r in ss.rois] == ["box"]
