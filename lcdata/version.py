"""The lcdata version: `lcdata.__version__`, and the ``lcdata_version`` every artifact records."""

VERSION = "0.1.0"
