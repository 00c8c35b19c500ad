"""Make the low-resolution sample volume that ships with mrisr.

The ICBM152 2009a T1 template (1 mm, fetched and checksummed by
``mrisr train --fetch-data``) is block-averaged to 2 mm isotropic (the
``box`` acquisition of ``mrisr degrade``), given light Rician noise (1% of the
robust maximum, seed 0) and stored as int16. Run from the repository root::

    python tools/make_sample.py data/icbm152 mrisr/data/sample_t1_2mm.nii.gz

The template's copyright notice travels with the sample (``mrisr/data/NOTICE``
and the header's description field).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from mrisr.acquisition.degrade import degrade
from mrisr.training import icbm152


def main(data_dir: str, out: str) -> None:
    paths = icbm152.verify(Path(data_dir))
    img = nib.load(str(paths["t1"]))
    lr, affine = degrade(img.get_fdata(dtype=np.float32), img.affine, 2.0, psf="box", noise=0.01, seed=0)
    data = np.clip(np.rint(lr), 0, 32767).astype(np.int16)
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.int16)
    hdr.set_xyzt_units("mm", "sec")
    hdr["descrip"] = b"ICBM152 2009a T1, 2mm box; (C) 1993-2009 L. Collins MNI; see NOTICE"
    out_img = nib.Nifti1Image(data, affine, hdr)
    out_img.set_sform(affine, code=4)   # MNI space
    out_img.set_qform(affine, code=4)
    nib.save(out_img, out)
    Path(out).with_name("NOTICE").write_text(
        "The sample volume sample_t1_2mm.nii.gz is derived from the MNI ICBM152 2009a T1 template\n"
        "(block-averaged to 2 mm, 1% Rician noise; tools/make_sample.py).\n\n" + icbm152.NOTICE + "\n")
    print(f"{out}: shape {data.shape}, affine\n{affine}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
