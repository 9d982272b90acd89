"""Built-in plugin: dataset layouts `nnunet` (v2 raw), `msd` (Decathlon v1) and `brats` (2018 folders)."""
from __future__ import annotations

from bayesprior import hookimpl

from . import brats, msd, nnunet


@hookimpl
def register_dataset_layouts(register):
    register("nnunet", nnunet.read, detect=nnunet.detect, files=nnunet.files, label_files=nnunet.label_files,
             description="nnU-Net v2 raw: dataset.json, imagesTr/CASE_0000.nii.gz, labelsTr/, imagesTs/")
    register("msd", msd.read, detect=msd.detect, files=msd.files, label_files=msd.label_files,
             description="Medical Segmentation Decathlon: dataset.json 'training' list, 4D images, channel by name")
    register("brats", brats.read, detect=brats.detect, files=brats.files, label_files=brats.label_files,
             description="BRATS 2018: HGG/LGG/<patient>/<patient>_{t1,t1ce,t2,flair,seg}.nii.gz")
