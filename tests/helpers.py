"""Builders shared by several test modules (SimpleITK images, DICOM slices, NIfTI headers)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def sitk_image(data: np.ndarray, affine_ras: np.ndarray):
    """A SimpleITK image of ``data`` (x, y, z) with the given RAS geometry (rigid + scaling)."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def write_dicom_slice(path: Path, image, uid: str, number: int, description: str = "T2 test",
                      image_type: str = "ORIGINAL\\PRIMARY\\M") -> None:
    """One single-slice MR DICOM file; GDCM writes IPP/IOP from the image's geometry."""
    import SimpleITK as sitk

    tags = {"0008|0060": "MR", "0008|0016": "1.2.840.10008.5.1.4.1.1.4", "0020|000d": "1.2.3.4",
            "0020|000e": uid, "0008|0018": f"{uid}.{number}", "0020|0013": str(number),
            "0008|103e": description, "0008|0008": image_type}
    for key, value in tags.items():
        image.SetMetaData(key, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)


def nifti_header(shape, dtype, affine: np.ndarray, sform_code: int = 1, qform_code: int = 1) -> nib.Nifti1Header:
    """A NIfTI-1 header with the given shape, dtype, and sform/qform (qform None when its code is 0)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform(affine if qform_code else None, code=qform_code)
    return hdr


def tiny_recnn_model(normalisation: str = "foreground_median", bias: float = 0.3, name: str = "tiny"):
    """A small factor-conditioned ReCNN (3 layers x 6 filters, seeded, biases uniform in +-``bias``) as a
    loaded model whose card names ``normalisation``."""
    import torch
    from torch import nn

    from mrisr.archs.recnn import ReCNN
    from mrisr.inference.model_card import LoadedModel, example_card

    torch.manual_seed(0)
    net = ReCNN(3, 6, cond_dim=3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.bias.uniform_(-bias, bias)
    card = example_card(name=name, architecture={"name": "recnn", "params": net.config()},
                        normalisation={"method": normalisation})
    return LoadedModel(name, card, net.eval(), "0" * 64, None)
