"""The MNI ICBM152 2009a template: mrisr's real high-resolution training brain.

The T1 template and its grey/white-matter probability maps ship inside the
``nilearn`` wheel on PyPI. :func:`fetch` downloads that wheel with pip (no
other network access), extracts the three NIfTI files and checks their
sha256, so a training run always sees the same bytes. mrisr does not depend on
nilearn at run time.

Copyright notice of the template (it must travel with any derived data):

    Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre,
    Montreal Neurological Institute, McGill University. Permission to use,
    copy, modify, and distribute this software and its documentation for any
    purpose and without fee is hereby granted, provided that the above
    copyright notice appear in all copies. The authors and McGill University
    make no representations about the suitability of this software for any
    purpose. It is provided "as is" without express or implied warranty. The
    authors are not responsible for any data loss, equipment damage, property
    loss, or injury to subjects or patients resulting from the use or misuse
    of this software package.

References: Fonov et al., NeuroImage 54 (2011) 313-327; Fonov et al.,
NeuroImage 47 (2009) S102; Collins et al., NeuroImage (1999).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mrisr.errors import MrisrError
from mrisr.inference.model_card import file_sha256

NILEARN_VERSION = "0.14.1"
NOTICE = " ".join(__doc__.split("(it must travel with any derived data):")[1].split("References:")[0].split())
LICENCE = "ICBM152 2009a copyright notice (redistribution permitted with the notice); see NOTICE"
FILES = {
    "t1": ("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
           "421a10e872fd6cadae7f61d358dffbcc1795a497d61ee76c5dda2503e1a1e9e6"),
    "gm": ("mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
           "97a5ca69bd24db37a9cb7b32525e1733a209af904129bf1cd36da06d24243bed"),
    "wm": ("mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
           "382d92812de4744f9c86c7a0e4f680dc317a0a50e4da1f0153618a6798c7b7db"),
}


def verify(folder: Path) -> dict[str, Path]:
    """Paths of the three files in ``folder``, checksummed.

    Raises:
        MrisrError: naming a missing file or a checksum mismatch.
    """
    out = {}
    for key, (name, digest) in FILES.items():
        p = Path(folder) / name
        if not p.is_file():
            raise MrisrError(f"{p}: missing; run `mrisr train --fetch-data {folder}` first")
        got = file_sha256(p)
        if got != digest:
            raise MrisrError(f"{p}: checksum mismatch: expected {digest}, got {got}")
        out[key] = p
    return out


def fetch(folder: Path) -> dict[str, Path]:
    """Download the nilearn wheel with pip and extract the template into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return verify(folder)
    except MrisrError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"nilearn=={NILEARN_VERSION}", "-d", tmp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise MrisrError(f"pip download of nilearn {NILEARN_VERSION} failed: {res.stderr.strip()[-500:]}")
        wheel = next(Path(tmp).glob("nilearn-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for name, _ in FILES.values():
                (folder / name).write_bytes(z.read(f"nilearn/datasets/data/{name}"))
    (folder / "NOTICE.txt").write_text(NOTICE + "\n")
    return verify(folder)
