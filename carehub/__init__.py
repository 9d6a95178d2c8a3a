"""carehub: an integration hub for integrated health and social care.

Shared code for every service lives in this package; the services themselves are
under ``services/``; generated protobuf code is in ``carehub.v1``.
"""

__version__ = "0.1.0"
