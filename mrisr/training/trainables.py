"""The ``model.arch`` table: how each trainable architecture trains, and its paper."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trainable:
    """How one ``model.arch`` trains.

    Attributes:
        architecture: Registry name of the network that is trained and exported.
        mode: ``interpolated``, ``upsampling`` or ``gan``.
        loss: Loss name of ``train.loss = "auto"`` (None: the GAN mode's own).
        paper: The paper it comes from (``mrisr models --archs``, ``mrisr train --list-archs``).
        paper_weight: Weight of that loss's second term (gradient difference), when it has one.
    """

    architecture: str
    mode: str
    loss: str | None
    paper: str = ""
    paper_weight: float = 0.0

    @property
    def sees(self) -> str:
        """The input the network sees: ``interpolated`` (the spline's output) or ``low-resolution``."""
        return "low-resolution" if self.mode == "upsampling" else "interpolated"


#: ``model.arch`` -> how it trains. ``recnn`` keeps mrisr's L1 (Pham et al. use MSE); ``srcnn3d``
#: has Pham/Dong's MSE; Chen's mDCSRN L1; Song's Charbonnier + GDL (weight 1, Eq. 6); Georgescu's
#: L1 on the output plus ``train.intermediate_weight`` x L1 on the sub-pixel output (Eq. 3);
#: Lyu's generators trained alone get L1 (the content term of their GAN losses).
TRAINABLES: dict[str, Trainable] = {
    "recnn": Trainable("recnn", "interpolated", "l1",
            "Pham et al., Multiscale brain MRI super-resolution using deep 3D convolutional networks "
            "(ReCNN; mrisr's default)"),
    "recnn-s2d": Trainable("recnn-s2d", "interpolated", "l1",
            "Pham et al.'s ReCNN on 2x2x2 blocks of voxels (space to depth, Shi et al.'s sub-pixel layer "
            "back): mrisr's fast residual network"),
    "srcnn3d": Trainable("srcnn3d", "interpolated", "l2",
            "Pham et al., the same paper's 3-layer SRCNN3D baseline"),
    "mdcsrn": Trainable("mdcsrn", "interpolated", "l1",
            "Chen et al., MRI Super-Resolution with GAN and 3D Multi-Level DenseNet (mDCSRN)"),
    "gan-cpce": Trainable("gan-cpce", "interpolated", "l1",
            "Lyu et al., Super-resolution MRI through Deep Learning (GAN-CPCE generator)"),
    "gan-circle-generator": Trainable("gan-circle-generator", "interpolated", "l1",
            "Lyu et al., the same paper's GAN-CIRCLE generator, trained alone"),
    "rrlsrn": Trainable("rrlsrn", "upsampling", "charbonnier+gdl",
            "Song et al., Deep Robust Residual Network for Brain MRI Super-Resolution (RRLSRN, in 3D)",
            paper_weight=1.0),
    "georgescu": Trainable("georgescu", "upsampling", "l1",
            "Georgescu et al., Convolutional Neural Networks with Intermediate Loss for 3D "
            "Super-Resolution of CT and MRI Scans"),
    "mdcsrn-gan": Trainable("mdcsrn", "gan", None,
            "Chen et al.: the mdcsrn generator against an SRGAN critic (adversarial training)"),
    "gan-cpce-wgan": Trainable("gan-cpce", "gan", None,
            "Lyu et al.: the gan-cpce generator against the GAN-CPCE critic (WGAN training)"),
    "gan-circle": Trainable("gan-circle-generator", "gan", None,
            "Lyu et al., after You et al.: GAN-CIRCLE, two generators and two critics (cycle "
            "training; the generator is exported)"),
}


#: Values of ``model.arch`` (the keys of :data:`TRAINABLES`): the registered architectures that train on their
#: own, and the adversarial training modes (``mdcsrn-gan``: an mdcsrn generator against an SRGAN critic;
#: ``gan-cpce-wgan``: the gan-cpce generator against Lyu's GAN-CPCE critic;
#: ``gan-circle``: the GAN-CIRCLE generator pair against two critics; only the generator is exported).
TRAINABLE = tuple(TRAINABLES)
