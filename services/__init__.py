"""carehub's services, one sub-package each; shared code is in the ``carehub`` package."""
