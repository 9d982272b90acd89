"""Dataset layouts (nnU-Net v2, MSD, BRATS): detection, channel choice, label policy, bad datasets."""
import json

import nibabel
import numpy as np
import pytest

from bayesprior.data import detect_layout, read_dataset, write_like
from bayesprior.data.datasets import label_files, prediction_files
from bayesprior.errors import ConfigError, DataError

LPS = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 20], [0, 0, 2.0, -5], [0, 0, 0, 1]])
SHAPE = (6, 7, 5)


def _image(seed, channels=None):
    rng = np.random.default_rng(seed)
    shape = SHAPE if channels is None else SHAPE + (channels,)
    return rng.uniform(1, 100, shape).astype(np.float32)


def _label(seed, values=(0, 1, 2, 4)):
    return np.random.default_rng(seed + 100).choice(values, SHAPE).astype(np.uint8)


def make_nnunet(root, n=3, channels=("T2", "FLAIR"), labels=None, ending=".nii.gz"):
    labels = labels or {"background": 0, "core": 1, "edema": 2, "enhancing": 4}
    for i in range(n):
        for c in range(len(channels)):
            write_like(_image(10 * i + c), LPS, None, root / "imagesTr" / f"case{i}_{c:04d}{ending}")
        write_like(_label(i), LPS, None, root / "labelsTr" / f"case{i}{ending}", dtype="uint8")
    write_like(_image(99), LPS, None, root / "imagesTs" / f"test0_0000{ending}")
    write_like(_image(98), LPS, None, root / "imagesTs" / f"test0_0001{ending}")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): c for i, c in enumerate(channels)}, "labels": labels,
        "numTraining": n, "file_ending": ending}))
    return root


def make_msd(root, n=2):
    modality = {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    training = []
    for i in range(n):
        write_like(_image(i, channels=4), LPS, None, root / "imagesTr" / f"BRATS_{i:03d}.nii.gz")
        write_like(_label(i, (0, 1, 2, 3)), LPS, None, root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", dtype="uint8")
        training.append({"image": f"./imagesTr/BRATS_{i:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i:03d}.nii.gz"})
    write_like(_image(50, channels=4), LPS, None, root / "imagesTs" / "BRATS_900.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "tensorImageSize": "4D", "modality": modality,
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": n, "numTest": 1, "training": training, "test": ["./imagesTs/BRATS_900.nii.gz"]}))
    return root


def make_brats(root, n=2, with_seg=True):
    for i in range(n):
        grade = "HGG" if i % 2 == 0 else "LGG"
        patient = root / grade / f"Brats18_X_{i}_1"
        for j, sequence in enumerate(("t1", "t1ce", "t2", "flair")):
            write_like(_image(10 * i + j), LPS, None, patient / f"{patient.name}_{sequence}.nii.gz")
        if with_seg:
            write_like(_label(i), LPS, None, patient / f"{patient.name}_seg.nii.gz", dtype="uint8")
    return root


def test_each_layout_is_detected(tmp_path):
    assert detect_layout(make_nnunet(tmp_path / "nn")) == "nnunet"
    assert detect_layout(make_msd(tmp_path / "msd")) == "msd"
    assert detect_layout(make_brats(tmp_path / "brats")) == "brats"


def test_nnunet_reads_channel_by_name_with_whole_tumour_labels(tmp_path):
    root = make_nnunet(tmp_path)
    cases = read_dataset(root, channel="flair")
    assert [c.case_id for c in cases] == ["case0", "case1", "case2"]
    np.testing.assert_allclose(cases[1].image, _image(11))
    np.testing.assert_array_equal(cases[1].label, (_label(1) > 0).astype(np.uint8))
    assert cases[0].label.dtype == np.uint8 and cases[0].image.dtype == np.float32
    np.testing.assert_allclose(cases[0].affine, LPS)
    assert nibabel.aff2axcodes(cases[0].affine) == ("L", "P", "S")
    assert cases[0].image_path.name == "case0_0001.nii.gz"


def test_nnunet_channel_by_index_and_label_subset(tmp_path):
    cases = read_dataset(make_nnunet(tmp_path), "nnunet", channel=0, labels=[1, 4])
    np.testing.assert_allclose(cases[0].image, _image(0))
    np.testing.assert_array_equal(cases[0].label, np.isin(_label(0), [1, 4]).astype(np.uint8))


def test_nnunet_test_subset_has_no_labels(tmp_path):
    cases = read_dataset(make_nnunet(tmp_path), channel="T2", subset="test")
    assert [c.case_id for c in cases] == ["test0"] and cases[0].label is None and cases[0].label_path is None


def test_nnunet_several_channels_need_a_choice(tmp_path):
    with pytest.raises(ConfigError, match="several channels"):
        read_dataset(make_nnunet(tmp_path))


def test_unknown_channel_name_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no channel named 'DWI'"):
        read_dataset(make_nnunet(tmp_path), channel="DWI")


def test_msd_reads_one_channel_of_4d_images_by_name(tmp_path):
    root = make_msd(tmp_path)
    cases = read_dataset(root, channel="T2w")
    assert [c.case_id for c in cases] == ["BRATS_000", "BRATS_001"]
    np.testing.assert_allclose(cases[1].image, _image(1, channels=4)[..., 3])
    np.testing.assert_array_equal(cases[1].label, (_label(1, (0, 1, 2, 3)) > 0).astype(np.uint8))
    test = read_dataset(root, channel="FLAIR", subset="test")
    np.testing.assert_allclose(test[0].image, _image(50, channels=4)[..., 0])


def test_brats_reads_sequence_by_name_from_both_grades(tmp_path):
    cases = read_dataset(make_brats(tmp_path), channel="T2")
    assert [c.case_id for c in cases] == ["Brats18_X_0_1", "Brats18_X_1_1"]
    np.testing.assert_allclose(cases[1].image, _image(12))
    np.testing.assert_array_equal(cases[0].label, (_label(0) > 0).astype(np.uint8))


def test_brats_unknown_sequence_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown BRATS sequence"):
        read_dataset(make_brats(tmp_path), channel="dwi")


def test_brats_missing_segmentation_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="segmentation of patient"):
        read_dataset(make_brats(tmp_path, with_seg=False), channel="t2")


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "absent")


def test_empty_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="is empty"):
        read_dataset(tmp_path)


def test_unrecognised_folder_is_a_data_error(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no known dataset layout"):
        read_dataset(tmp_path)


def test_dataset_json_missing_keys_is_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    del meta["file_ending"], meta["labels"]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"dataset.json: missing keys \['labels', 'file_ending'\]"):
        read_dataset(root, "nnunet", channel=0)


def test_listed_case_absent_is_a_data_error(tmp_path):
    root = make_msd(tmp_path)
    (root / "imagesTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(DataError, match="BRATS_001.nii.gz: listed in dataset.json but missing"):
        read_dataset(root, channel="T2w")


def test_missing_label_file_is_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    (root / "labelsTr" / "case1.nii.gz").unlink()
    with pytest.raises(DataError, match="case1.nii.gz: label of case 'case1' is missing"):
        read_dataset(root, channel=0)


def test_image_label_shape_mismatch_is_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    write_like(np.zeros((6, 7, 4), np.uint8), LPS, None, root / "labelsTr" / "case2.nii.gz")
    with pytest.raises(DataError, match="case2.nii.gz: label shape"):
        read_dataset(root, channel=0)


def test_image_label_affine_mismatch_is_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    write_like(_label(2), np.eye(4), None, root / "labelsTr" / "case2.nii.gz", dtype="uint8")
    with pytest.raises(DataError, match="case2.nii.gz: label affine differs"):
        read_dataset(root, channel=0)


def test_unexpected_label_values_are_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    write_like(np.full(SHAPE, 7, np.uint8), LPS, None, root / "labelsTr" / "case0.nii.gz")
    with pytest.raises(DataError, match=r"unexpected label values \[7\]"):
        read_dataset(root, channel=0)


def test_four_d_image_in_nnunet_is_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    write_like(_image(0, channels=2), LPS, None, root / "imagesTr" / "case0_0000.nii.gz")
    with pytest.raises(DataError, match="case0_0000.nii.gz: expected a 3D volume"):
        read_dataset(root, channel=0)


def test_corrupt_image_in_dataset_is_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    path = root / "imagesTr" / "case1_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="case1_0000.nii.gz"):
        read_dataset(root, channel=0)


def test_num_training_mismatch_is_a_data_error(tmp_path):
    root = make_nnunet(tmp_path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="numTraining is 5"):
        read_dataset(root, channel=0)


def test_layouts_are_registered_by_the_builtin_plugin():
    from bayesprior.plugins import dataset_layout_registry

    registry = dataset_layout_registry()
    for name in ("nnunet", "msd", "brats"):
        assert registry.get(name).plugin == "layouts" and callable(registry.get(name).extras["detect"])


@pytest.mark.parametrize("make, channel, to_predict", [
    (make_nnunet, "FLAIR", [("test0", "test0_0001.nii.gz", None)]),
    (make_msd, "T2w", [("BRATS_900", "BRATS_900.nii.gz", 3)]),
    (make_brats, "flair", [("Brats18_X_0_1", "Brats18_X_0_1_flair.nii.gz", None),
                           ("Brats18_X_1_1", "Brats18_X_1_1_flair.nii.gz", None)]),
])
def test_every_layout_gives_its_images_to_predict_and_its_labels_by_case_id(tmp_path, make, channel, to_predict):
    root = make(tmp_path)
    listed = prediction_files(root, channel=channel)
    assert [(f.case_id, f.image_path.name, f.channel_index) for f in listed] == to_predict
    assert all(f.label_path is None for f in listed)
    labels = label_files(root)
    assert sorted(labels) == [c.case_id for c in read_dataset(root, channel=channel)]
    assert all(path.is_file() for path in labels.values())


def test_read_dataset_reads_only_the_cases_asked_for(tmp_path):
    root = make_nnunet(tmp_path, n=3)
    assert [c.case_id for c in read_dataset(root, channel="T2", cases=["case2", "case0"])] == ["case0", "case2"]
    with pytest.raises(DataError, match="has no case 'case7'"):
        read_dataset(root, channel="T2", cases=["case0", "case7"])
