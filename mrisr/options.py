"""The option sets of mrisr, each defined once: what every setting with a fixed set of values accepts.

The stage modules validate against these tables (through :func:`mrisr.errors.look_up_option`, which suggests the
nearest value), the command line offers them (``click.Choice`` of the table, or the table in the help text) and the
docs describe them. They are plain tuples with no imports, so that ``mrisr --help`` reads them without loading numpy,
SciPy or torch.

Example:
    >>> from mrisr.errors import look_up_option
    >>> look_up_option("median", COMBINES, "ensemble")
    'median'
"""

#: Processing methods: the bundled network on top of a spline, the spline alone, or a reference's detail
#: transferred into the input (``--reference``; :mod:`mrisr.inference.transfer`).
METHODS = ("cnn", "spline", "transfer")
#: The methods that run a network (when one is available: ``transfer`` also runs without).
NETWORK_METHODS = ("cnn", "transfer")
#: How a reference is aligned to the input: trust the headers, or rigid registration.
REGISTRATIONS = ("none", "rigid")
#: Devices the network runs on (``cuda:N`` picks one GPU; :func:`mrisr.inference.device.resolve_device`).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Arithmetic precisions of the network (:func:`mrisr.inference.device.resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Point-spread functions of simulated acquisitions (:mod:`mrisr.acquisition.psf`).
PSFS = ("box", "gaussian", "kspace", "slice")
#: Values of ``--consistency-psf``: ``auto`` (:func:`mrisr.trust.consistency.select_psf`) or one of :data:`PSFS`.
PSF_CHOICES = ("auto", *PSFS)
#: How the 8 passes of the flip ensemble are combined.
COMBINES = ("mean", "median")
#: Values of ``dtype`` :func:`mrisr.io.writer.save_volume` accepts.
DTYPES = ("float32", "float64", "input", "uint8", "int8", "int16", "uint16", "int32", "uint32")
#: The output types ``mrisr upscale --dtype`` offers (a subset of :data:`DTYPES`).
CLI_DTYPES = ("float32", "input")
#: Output suffixes the writer accepts.
OUTPUT_SUFFIXES = (".nii.gz", ".nii")
#: Training losses (``train.loss``; ``auto``: the architecture's paper's, :mod:`mrisr.training.trainables`).
LOSSES = ("l1", "l2", "charbonnier", "l1+gdl", "charbonnier+gdl")
#: Arithmetic precisions of training (``train.precision``; a subset of :data:`PRECISIONS`).
TRAIN_PRECISIONS = ("bf16", "fp32")
